//! An export of the same range at the same log position gives the same archive bytes before
//! and after compaction — also when events arrived late (after the position) for the range.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use archive::export_to_sink;
use chrono::{DateTime, Utc};
use compliance_log::v2::{keys, segment};
use compliance_log::{
    CompactionConfig, Compactor, LogPosition, LogReader, PendingRecord, SourceRange, Watermark,
};
use event_model::{Limits, parse_event};
use serde_json::{Value, json};
use storage::{MemoryStore, put_new};
use support::{ev, request};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// Writes `events` as one segment of partition 0 from `first`, and moves the pointer.
async fn flush(store: &Arc<MemoryStore>, first: i64, events: &[Value], watermark: &str) -> i64 {
    let records: Vec<PendingRecord> = events
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (event, raw) = parse_event(
                &serde_json::to_vec(v).unwrap(),
                &Limits::default(),
                at("2026-12-01T00:00:00Z"),
            )
            .unwrap();
            PendingRecord {
                offset: first + i as i64,
                event,
                raw,
            }
        })
        .collect();
    let source = SourceRange {
        topic: "t".into(),
        partition: 0,
        first_offset: first,
        last_offset: first + records.len() as i64 - 1,
    };
    let (bytes, _) = segment::encode(1, &source, &records).unwrap();
    put_new(store.as_ref(), &keys::segment_key(1, &source), bytes)
        .await
        .unwrap();
    let mut pointer = Watermark::new("t", 0, 1, 1, source.last_offset + 1);
    pointer.time_watermark = Some(at(watermark));
    pointer.write(store.as_ref()).await.unwrap();
    source.last_offset + 1
}

fn post(id: &str, when: &str, text: &str) -> Value {
    ev(
        id,
        when,
        "post.created",
        json!({"post_id": id, "author_id": "ann", "text": text}),
    )
}

async fn export_at(store: &Arc<MemoryStore>, position: &LogPosition) -> Vec<u8> {
    let reader = LogReader::new(store.clone()).at(position.clone());
    let (bytes, _, _) = export_to_sink(&request(""), &reader, Vec::new(), |_| {})
        .await
        .unwrap();
    bytes
}

#[tokio::test]
async fn the_same_position_gives_the_same_archive_before_and_after_compaction() {
    let store = Arc::new(MemoryStore::new());
    let events = [
        ev(
            "c1",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            json!({"created_by": "ann", "members": [{"person_id": "ann", "company_id": "acme"}]}),
        ),
        json!({"event_id": "p0", "type": "person.created", "occurred_at": "2026-01-02T00:00:00Z",
               "person": {"id": "ann", "company_id": "acme", "name": "Ann", "email": "ann@acme"}}),
        post("e1", "2026-02-01T10:00:00Z", "first"),
        post("e2", "2026-02-02T09:00:00Z", "second"),
        post("e3", "2026-02-02T23:59:59Z", "third"),
    ];
    let next = flush(&store, 0, &events, "2026-02-04T00:00:00Z").await;
    let position = LogPosition::read(store.as_ref(), "t").await.unwrap();
    let before = export_at(&store, &position).await;
    let report = archive::verify::verify(&mut std::io::Cursor::new(&before)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // Later: a late post and a late rename inside the exported range, past the position.
    let late = [
        post("late", "2026-02-01T12:00:00Z", "late"),
        json!({"event_id": "p1", "type": "person.updated", "occurred_at": "2026-02-01T13:00:00Z",
               "person": {"id": "ann", "company_id": "acme", "name": "Ann B", "email": "ann@acme"}}),
    ];
    flush(&store, next, &late, "2026-02-05T00:00:00Z").await;
    let now = LogPosition::read(store.as_ref(), "t").await.unwrap();
    let with_late = export_at(&store, &now).await;
    assert_ne!(with_late, before);
    let bodies: Vec<u8> = archive::verify::read_entries(&with_late)
        .unwrap()
        .into_iter()
        .flat_map(|(_, body)| body)
        .collect();
    let text = String::from_utf8_lossy(&bodies);
    assert!(
        text.contains("\"late\"") && text.contains("Ann B"),
        "{text}"
    );

    let mut config = CompactionConfig::new("t");
    config.grace = Duration::from_secs(3600);
    let summary = Compactor::new(store.clone(), config)
        .run_pass(at("2026-02-05T00:00:00Z"))
        .await
        .unwrap()
        .expect("a pass");
    assert_eq!(summary.horizon, at("2026-02-04T00:00:00Z"));
    assert_eq!(export_at(&store, &position).await, before);
    assert_eq!(export_at(&store, &now).await, with_late);
}
