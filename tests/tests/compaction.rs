//! Compaction against the real object store: two `cce-log compact --once` processes at once,
//! and one killed (SIGKILL) in the middle of a pass, never change what a reader at a log
//! position gets — before, during or after — and a pass that finishes afterwards merges
//! everything.
//!
//! The log is written with the library's segment encoder (as ingestion's flushes write it), so
//! the test controls exactly which days are closed; the compactor runs as the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use compliance_log::v2::{keys, pass::PassRecord, segment};
use compliance_log::{LogPosition, LogReader, LogRecord, PendingRecord, SourceRange, Watermark};
use storage::{ObjectStore, put_new};
use tests::{Stack, binary, unique};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn post(company: &str, id: &str, when: &str, offset: i64) -> PendingRecord {
    let value = serde_json::json!({"event_id": id, "type": "post.created", "occurred_at": when,
        "conversation": {"id": format!("c-{company}"), "kind": "team", "owner_company_id": company},
        "post_id": id, "author_id": "u", "text": format!("text of {id} ✓")});
    let bytes = serde_json::to_vec(&value).unwrap();
    let (event, raw) =
        event_model::parse_event(&bytes, &event_model::Limits::default(), Utc::now()).unwrap();
    PendingRecord { offset, event, raw }
}

/// Writes one segment per call to `partition` and moves its pointer.
struct Writer {
    store: Arc<dyn ObjectStore>,
    topic: String,
    next: [i64; 2],
}

impl Writer {
    async fn flush(
        &mut self,
        partition: i32,
        events: Vec<(String, String, String)>,
        watermark: &str,
    ) {
        let first = self.next[partition as usize];
        let records: Vec<PendingRecord> = events
            .iter()
            .enumerate()
            .map(|(i, (company, id, when))| post(company, id, when, first + i as i64))
            .collect();
        let source = SourceRange {
            topic: self.topic.clone(),
            partition,
            first_offset: first,
            last_offset: first + records.len() as i64 - 1,
        };
        let (bytes, _) = segment::encode(1, &source, &records).unwrap();
        put_new(self.store.as_ref(), &keys::segment_key(1, &source), bytes)
            .await
            .unwrap();
        self.next[partition as usize] = source.last_offset + 1;
        let mut pointer = Watermark::new(&self.topic, partition, 2, 1, source.last_offset + 1);
        pointer.time_watermark = Some(at(watermark));
        pointer.write(self.store.as_ref()).await.unwrap();
    }
}

async fn read_all(reader: &LogReader, companies: &[String]) -> Vec<Vec<LogRecord>> {
    let mut out = Vec::new();
    for company in companies {
        let mut cursor = reader.events(
            company,
            at("2026-01-01T00:00:00Z"),
            at("2026-12-31T00:00:00Z"),
        );
        let mut records = Vec::new();
        while let Some(hour) = cursor.next_hour().await.unwrap() {
            records.extend(hour);
        }
        out.push(records);
    }
    out
}

/// The archive the export engine makes of `company`'s November at `position`, checked by the
/// verifier.
async fn archive_at(
    store: &Arc<dyn ObjectStore>,
    position: &LogPosition,
    company: &str,
) -> Vec<u8> {
    let request = archive::ExportRequest {
        company_id: company.to_owned(),
        from: Some(at("2026-11-01T00:00:00Z")),
        to: at("2026-12-01T00:00:00Z"),
        person_ids: Default::default(),
        conversation_ids: Default::default(),
        time_zone: "Europe/Zurich".into(),
        position: Some(position.clone()),
        limits: archive::ExportLimits::default(),
        format: archive::DataFormat::Json,
        schedule: None,
        signer: None,
    };
    let reader = LogReader::new(store.clone()).at(position.clone());
    let (bytes, _, _) = archive::export_to_sink(&request, &reader, Vec::new(), |_| {})
        .await
        .unwrap();
    archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    bytes
}

fn compact(stack: &Stack, topic: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary("cce-log"));
    command
        .args(stack.s3_args())
        .args([
            "compact",
            "--once",
            "--topic",
            topic,
            "--grace-secs",
            "3600",
        ])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

#[tokio::test]
async fn concurrent_and_killed_compactors_never_change_a_read() {
    let stack = Stack::from_env();
    let store: Arc<dyn ObjectStore> = Arc::new(stack.s3_store().await);
    let topic = unique("compact");
    let tag = unique("co");
    // Many companies, so a pass writes many objects and a kill lands in the middle.
    let companies: Vec<String> = (0..120).map(|i| format!("{tag}-{i:03}")).collect();
    let mut writer = Writer {
        store: store.clone(),
        topic: topic.clone(),
        next: [0, 0],
    };
    for day in 20..=24 {
        for partition in 0..2 {
            let events = companies
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        c.clone(),
                        format!("{c}-{day}-{partition}-{i}"),
                        format!("2026-11-{day:02}T{:02}:00:00Z", i % 24),
                    )
                })
                .collect();
            writer
                .flush(partition, events, "2026-11-25T05:00:00Z")
                .await;
        }
    }
    let position = LogPosition::read(store.as_ref(), &topic).await.unwrap();
    let reader = LogReader::new(store.clone()).at(position);
    let sample: Vec<String> = companies.iter().step_by(17).cloned().collect();
    let expected = read_all(&reader, &sample).await;
    assert!(expected.iter().all(|records| records.len() == 10));
    let position = reader.position().unwrap().clone();
    let archive_before = archive_at(&store, &position, &companies[0]).await;

    // Two compactors at once: both succeed (same inputs, same names and bytes).
    let (a, b) = tokio::join!(
        compact(&stack, &topic).output(),
        compact(&stack, &topic).output()
    );
    for output in [a.unwrap(), b.unwrap()] {
        assert!(
            output.status.success(),
            "compactor failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let head = PassRecord::head(store.as_ref(), &topic)
        .await
        .unwrap()
        .expect("a pass");
    assert_eq!((head.seq, head.horizon), (1, at("2026-11-25T00:00:00Z")));
    assert_eq!(head.read.records, 120 * 10);
    assert_eq!(read_all(&reader, &sample).await, expected);

    // Late events for every company's compacted days, then a compactor killed mid-pass.
    for partition in 0..2 {
        let events = companies
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    format!("{c}-late-{partition}"),
                    "2026-11-21T12:30:00Z".to_owned(),
                )
            })
            .collect();
        writer
            .flush(partition, events, "2026-11-25T06:00:00Z")
            .await;
    }
    let later_position = LogPosition::read(store.as_ref(), &topic).await.unwrap();
    let later = LogReader::new(store.clone()).at(later_position.clone());
    let with_late = read_all(&later, &sample).await;
    assert!(with_late.iter().all(|records| records.len() == 12));
    let late_archive_before = archive_at(&store, &later_position, &companies[0]).await;
    assert_ne!(
        late_archive_before, archive_before,
        "the late events are in the newer archive"
    );
    assert_eq!(
        archive_at(&store, &position, &companies[0]).await,
        archive_before,
        "at the first position, the late events are not"
    );
    let mut killed = compact(&stack, &topic).spawn().unwrap();
    // Kill it once the first company's part of pass 2 is there (companies go in id order).
    let first = keys::day_prefix(&companies[0], "2026-11-21".parse().unwrap());
    let pass2 = keys::inverted(2);
    // Polled tightly (not with `wait_for`'s 200 ms): the pass has ~120 more objects to write.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = store.list_page(&first, None, 10).await.unwrap();
        if page.objects.iter().any(|o| o.key.contains(&pass2)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the compactor wrote no part of pass 2 within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killed.start_kill().unwrap();
    let status = killed.wait().await.unwrap();
    // Reads at both positions are unchanged, whether or not the kill beat the pass record.
    assert_eq!(read_all(&reader, &sample).await, expected);
    assert_eq!(read_all(&later, &sample).await, with_late);
    let recorded = PassRecord::head(store.as_ref(), &topic)
        .await
        .unwrap()
        .unwrap()
        .seq;
    eprintln!("killed compactor: {status}; head pass after the kill: {recorded}");

    // A compactor that finishes merges everything; the reads still do not change.
    let output = compact(&stack, &topic).output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let head = PassRecord::head(store.as_ref(), &topic)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.seq, 2);
    assert_eq!(read_all(&reader, &sample).await, expected);
    assert_eq!(read_all(&later, &sample).await, with_late);
    // The same request at the same position gives the same archive bytes before and after
    // compaction (the test), at both positions.
    assert_eq!(
        archive_at(&store, &position, &companies[0]).await,
        archive_before
    );
    assert_eq!(
        archive_at(&store, &later_position, &companies[0]).await,
        late_archive_before
    );
    // Each day of a company is one part now: a late day has the old and the new, the new
    // covering the old.
    let parts = storage::list_all(store.as_ref(), &first).await.unwrap();
    assert!(parts.iter().any(|o| o.key.contains(&pass2)), "{parts:?}");
}
