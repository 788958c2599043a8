//! Compaction and the reader together, on an in-memory store: what a reader returns must not
//! depend on whether, how often, or how interrupted compaction ran.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use event_model::{Limits, parse_event};
use serde_json::{Value, json};
use storage::{CompletedPart, CountingStore, ListPage, MemoryStore, ObjectMeta, StorageError};

use super::*;
use crate::format::SourceRange;
use crate::reader::LogReader;
use crate::v2::pointer::PartitionPosition;
use crate::writer::{PendingRecord, V1Writer};

const TOPIC: &str = "t";

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn pending(value: Value, offset: i64) -> PendingRecord {
    let bytes = serde_json::to_vec(&value).unwrap();
    let (event, raw) = parse_event(&bytes, &Limits::default(), at("2027-01-01T00:00:00Z")).unwrap();
    PendingRecord { offset, event, raw }
}

fn post(company: &str, id: &str, when: &str) -> Value {
    json!({"event_id": id, "type": "post.created", "occurred_at": when,
        "conversation": {"id": format!("c-{company}"), "kind": "team", "owner_company_id": company},
        "post_id": id, "author_id": "u", "text": format!("text of {id} ✓"), "extra": {"b": 1, "a": 2}})
}

fn direct(a: &str, b: &str, id: &str, when: &str) -> Value {
    json!({"event_id": id, "type": "post.created", "occurred_at": when,
        "conversation": {"id": format!("d-{a}-{b}"), "kind": "direct", "owner_company_id": a,
                         "member_company_ids": [a, b]},
        "post_id": id, "author_id": "u", "text": "hi"})
}

fn person(company: &str, id: &str, when: &str, name: &str) -> Value {
    person_of(company, "u1", id, when, name)
}

fn person_of(company: &str, person: &str, id: &str, when: &str, name: &str) -> Value {
    json!({"event_id": id, "type": "person.updated", "occurred_at": when,
        "person": {"id": person, "company_id": company, "name": name, "email": "u@x"}})
}

/// A log under construction: segments per partition, pointers that follow them.
struct Log {
    store: Arc<MemoryStore>,
    next: BTreeMap<i32, i64>,
}

impl Log {
    fn new() -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            next: BTreeMap::new(),
        }
    }

    /// Writes one segment of `events` to `partition` (next offsets) and moves its pointer.
    async fn flush(&mut self, partition: i32, events: Vec<Value>, watermark: &str) {
        let first = *self.next.get(&partition).unwrap_or(&0);
        let records: Vec<PendingRecord> = events
            .into_iter()
            .enumerate()
            .map(|(i, v)| pending(v, first + i as i64))
            .collect();
        let last = first + records.len() as i64 - 1;
        let source = SourceRange {
            topic: TOPIC.into(),
            partition,
            first_offset: first,
            last_offset: last,
        };
        let (bytes, _) = crate::v2::segment::encode(1, &source, &records).unwrap();
        put_new(self.store.as_ref(), &keys::segment_key(1, &source), bytes)
            .await
            .unwrap();
        self.next.insert(partition, last + 1);
        self.watermark(partition, watermark).await;
    }

    /// Moves `partition`'s pointer to its next offset and time watermark `when`.
    async fn watermark(&mut self, partition: i32, when: &str) {
        let durable = *self.next.get(&partition).unwrap_or(&0);
        let mut pointer = Watermark::new(TOPIC, partition, 2, 1, durable);
        pointer.time_watermark = Some(at(when));
        pointer.write(self.store.as_ref()).await.unwrap();
    }

    fn compactor(&self) -> Compactor {
        self.compactor_on(self.store.clone())
    }

    fn compactor_on(&self, store: Arc<dyn ObjectStore>) -> Compactor {
        let mut config = CompactionConfig::new(TOPIC);
        config.grace = Duration::from_secs(3600);
        Compactor::new(store, config)
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        futures::executor::block_on(list_all(self.store.as_ref(), prefix))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }
}

type Hours = Vec<Vec<LogRecord>>;

async fn read(reader: &LogReader, company: &str, from: &str, to: &str) -> Hours {
    let mut cursor = reader.events(company, at(from), at(to));
    let mut hours = Vec::new();
    while let Some(hour) = cursor.next_hour().await.unwrap() {
        hours.push(hour);
    }
    hours
}

fn ids(hours: &Hours) -> Vec<String> {
    hours
        .iter()
        .flatten()
        .map(|r| r.event.event_id.clone())
        .collect()
}

const FROM: &str = "2026-11-01T00:00:00Z";
const TO: &str = "2026-12-01T00:00:00Z";

/// Three days over two partitions and three companies, with a replayed copy, a direct chat
/// across companies, and the third day still open.
async fn three_days() -> Log {
    let mut log = Log::new();
    log.flush(
        0,
        vec![
            post("acme", "a1", "2026-11-24T10:00:00Z"),
            post("bravo", "b1", "2026-11-24T10:00:00Z"),
            direct("acme", "bravo", "d1", "2026-11-24T11:00:00Z"),
            post("acme", "a2", "2026-11-25T09:00:00Z"),
        ],
        "2026-11-26T05:00:00Z",
    )
    .await;
    log.flush(
        1,
        vec![
            post("acme", "a3", "2026-11-24T10:00:00Z"),
            post("acme", "a1", "2026-11-24T10:00:00Z"), // a copy in another partition
            post("carol", "c1", "2026-11-25T00:00:00Z"),
            post("acme", "a4", "2026-11-26T01:00:00Z"),
        ],
        "2026-11-26T05:00:00Z",
    )
    .await;
    log.flush(
        0,
        vec![post("acme", "a2", "2026-11-25T09:00:00Z")],
        "2026-11-26T05:00:00Z",
    )
    .await; // a replay
    log
}

#[tokio::test]
async fn a_read_is_the_same_before_and_after_compaction() {
    let log = three_days().await;
    let reader = LogReader::new(log.store.clone());
    let before = read(&reader, "acme", FROM, TO).await;
    assert_eq!(ids(&before), ["a1", "a3", "d1", "a2", "a4"]);
    assert_eq!(ids(&read(&reader, "bravo", FROM, TO).await), ["b1", "d1"]);

    let summary = log
        .compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.horizon, at("2026-11-26T00:00:00Z"));
    // acme 24th (a1 ×2 partitions, a3, d1), acme 25th (a2 ×2 in one partition), bravo 24th
    // (b1, d1), carol 25th.
    assert_eq!(summary.read.records, 9);
    assert_eq!(summary.wrote.duplicates, 1);
    assert_eq!(summary.wrote.parts, 4);
    assert!(
        log.keys(&keys::day_prefix("acme", "2026-11-24".parse().unwrap()))
            .len()
            == 1
    );
    assert!(
        log.keys(&keys::day_prefix("acme", "2026-11-26".parse().unwrap()))
            .is_empty()
    );

    let after = read(&reader, "acme", FROM, TO).await;
    assert_eq!(after, before, "same records, same order, same bytes");
    assert_eq!(ids(&read(&reader, "bravo", FROM, TO).await), ["b1", "d1"]);
    // Nothing moved: no second pass.
    assert!(
        log.compactor()
            .run_pass(at("2026-11-26T06:00:00Z"))
            .await
            .unwrap()
            .is_none()
    );
    // Sub-ranges too.
    assert_eq!(
        ids(&read(
            &reader,
            "acme",
            "2026-11-24T10:30:00Z",
            "2026-11-26T00:00:00Z"
        )
        .await),
        ["d1", "a2"]
    );
}

#[tokio::test]
async fn a_read_at_a_position_is_the_same_before_and_after_compaction() {
    let mut log = three_days().await;
    let position = LogPosition::read(log.store.as_ref(), TOPIC).await.unwrap();
    // Later records: a new one for a compacted day, and one for an open day.
    log.flush(
        0,
        vec![post("acme", "late", "2026-11-24T12:00:00Z")],
        "2026-11-27T05:00:00Z",
    )
    .await;
    log.flush(
        1,
        vec![post("acme", "a5", "2026-11-26T02:00:00Z")],
        "2026-11-27T05:00:00Z",
    )
    .await;
    let reader = LogReader::new(log.store.clone()).at(position.clone());
    let before = read(&reader, "acme", FROM, TO).await;
    assert_eq!(ids(&before), ["a1", "a3", "d1", "a2", "a4"]);
    log.compactor()
        .run_pass(at("2026-11-27T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read(&reader, "acme", FROM, TO).await, before);
    // Without the position the later records are there.
    let all = read(&LogReader::new(log.store.clone()), "acme", FROM, TO).await;
    assert_eq!(ids(&all), ["a1", "a3", "d1", "late", "a2", "a4", "a5"]);

    // A position that admits one copy of an event and not the other gets the one it admits.
    let mut narrow = position.clone();
    narrow.partitions = vec![PartitionPosition {
        partition: 1,
        epoch: 1,
        durable_offset: 2,
        time_watermark: None,
    }];
    let hours = read(
        &LogReader::new(log.store.clone()).at(narrow),
        "acme",
        FROM,
        TO,
    )
    .await;
    let a1: Vec<(i32, i64)> = hours
        .iter()
        .flatten()
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(ids(&hours), ["a1", "a3"]);
    assert_eq!(a1, [(1, 1), (1, 0)]);
}

#[tokio::test]
async fn late_events_are_read_before_and_after_the_pass_that_merges_them() {
    let mut log = three_days().await;
    log.compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    log.flush(
        1,
        vec![post("acme", "late", "2026-11-24T09:00:00Z")],
        "2026-11-26T06:00:00Z",
    )
    .await;
    let reader = LogReader::new(log.store.clone());
    let before = read(&reader, "acme", FROM, TO).await;
    assert_eq!(ids(&before), ["late", "a1", "a3", "d1", "a2", "a4"]);
    let summary = log
        .compactor()
        .run_pass(at("2026-11-26T07:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.pass.seq, 2);
    assert_eq!((summary.read.records, summary.wrote.carried), (1, 4));
    assert_eq!(read(&reader, "acme", FROM, TO).await, before);
    // The day now has two parts; the newer covers the older, so a read fetches one.
    let day = keys::day_prefix("acme", "2026-11-24".parse().unwrap());
    assert_eq!(log.keys(&day).len(), 2);
    let counting = Arc::new(CountingStore::new(log.store.clone()));
    let reader = LogReader::new(counting.clone());
    read(
        &reader,
        "acme",
        "2026-11-24T00:00:00Z",
        "2026-11-25T00:00:00Z",
    )
    .await;
    // The pass record whole; the part (small: one piece) with a ranged GET.
    let counts = counting.counts();
    assert_eq!(
        (counts.gets, counts.range_gets),
        (1, 1),
        "the pass record and one part: {counts:?}"
    );

    // Past retention, the superseded part and the compacted segments go; reads do not change.
    // (The time watermark moved on meanwhile: GC judges passes' ages only while it does.)
    let everything = read(&LogReader::new(log.store.clone()), "acme", FROM, TO).await;
    log.watermark(0, "2026-12-19T05:00:00Z").await;
    log.watermark(1, "2026-12-19T05:00:00Z").await;
    log.compactor()
        .run_pass(at("2026-12-19T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    let deleted = log
        .compactor()
        .collect_garbage(at("2026-12-20T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(log.keys(&day).len(), 1);
    // Partition 1's first segment holds a record of the open 26th (its scan_from), so it and
    // the one after it stay; partition 0's two go.
    assert_eq!(deleted, 2 + 1, "two segments and one part");
    assert_eq!(
        read(&LogReader::new(log.store.clone()), "acme", FROM, TO).await,
        everything
    );
}

#[tokio::test]
async fn format_1_and_format_2_are_read_together() {
    let log = three_days().await;
    let v1 = [
        pending(post("acme", "old", "2026-11-23T10:00:00Z"), 0),
        pending(post("acme", "a3", "2026-11-24T10:00:00Z"), 1), // also in v2
    ];
    let source = SourceRange {
        topic: "old-topic".into(),
        partition: 0,
        first_offset: 0,
        last_offset: 1,
    };
    V1Writer::new(log.store.clone())
        .write(&source, &v1)
        .await
        .unwrap();
    let reader = LogReader::new(log.store.clone());
    let before = read(&reader, "acme", FROM, TO).await;
    assert_eq!(ids(&before), ["old", "a1", "a3", "d1", "a2", "a4"]);
    let a3 = before
        .iter()
        .flatten()
        .find(|r| r.event.event_id == "a3")
        .unwrap();
    assert_eq!(a3.epoch, 0, "the format-1 copy has the smallest position");
    log.compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read(&reader, "acme", FROM, TO).await, before);
}

/// A store with faults: create-only writes fail after the first `kill_after` (a process
/// killed there), pass records hidden from listings (a compactor that read the head before
/// another recorded its pass), and a yield before every request (so concurrent compactors
/// interleave).
#[derive(Debug, Default)]
struct Faulty {
    inner: Arc<MemoryStore>,
    kill_after: Option<u64>,
    hide_passes: bool,
    puts: AtomicU64,
}

impl Faulty {
    fn on(inner: &Arc<MemoryStore>) -> Self {
        Self {
            inner: inner.clone(),
            ..Self::default()
        }
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put(&self, key: &str, body: Bytes) -> storage::Result<()> {
        tokio::task::yield_now().await;
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> storage::Result<Bytes> {
        tokio::task::yield_now().await;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, end: u64) -> storage::Result<Bytes> {
        tokio::task::yield_now().await;
        self.inner.get_range(key, start, end).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> storage::Result<()> {
        tokio::task::yield_now().await;
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        if self.kill_after.is_some_and(|allowed| n >= allowed) {
            return Err(StorageError::new(
                storage::ErrorKind::Unavailable,
                "put",
                key,
                "killed",
            ));
        }
        self.inner.put_if_absent(key, body).await
    }
    async fn head(&self, key: &str) -> storage::Result<Option<ObjectMeta>> {
        tokio::task::yield_now().await;
        self.inner.head(key).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> storage::Result<ListPage> {
        tokio::task::yield_now().await;
        if self.hide_passes && prefix.starts_with(&keys::passes_prefix(TOPIC)) {
            return Ok(ListPage::default());
        }
        self.inner.list_page(prefix, start_after, max_keys).await
    }
    async fn delete(&self, key: &str) -> storage::Result<()> {
        self.inner.delete(key).await
    }
    async fn create_multipart(&self, key: &str) -> storage::Result<String> {
        self.inner.create_multipart(key).await
    }
    async fn upload_part(&self, k: &str, u: &str, n: i32, b: Bytes) -> storage::Result<String> {
        self.inner.upload_part(k, u, n, b).await
    }
    async fn complete_multipart(
        &self,
        k: &str,
        u: &str,
        p: Vec<CompletedPart>,
    ) -> storage::Result<()> {
        self.inner.complete_multipart(k, u, p).await
    }
    async fn abort_multipart(&self, k: &str, u: &str) -> storage::Result<()> {
        self.inner.abort_multipart(k, u).await
    }
    async fn presign_get(&self, k: &str, t: Duration) -> storage::Result<String> {
        self.inner.presign_get(k, t).await
    }
}

#[tokio::test]
async fn a_pass_killed_at_any_write_then_rerun_or_overtaken_reads_the_same() {
    let expected = {
        let log = three_days().await;
        read(&LogReader::new(log.store.clone()), "acme", FROM, TO).await
    };
    // Small chunks so that a part has several and a kill can leave half of one.
    let mut killed_runs = 0;
    for allowed in 0..12 {
        let mut log = three_days().await;
        let dies = Arc::new(Faulty {
            kill_after: Some(allowed),
            ..Faulty::on(&log.store)
        });
        let mut killed = log.compactor_on(dies);
        killed.config.max_chunk_bytes = 300;
        let outcome = killed.run_pass(at("2026-11-26T06:00:00Z")).await;
        let reader = LogReader::new(log.store.clone());
        assert_eq!(
            read(&reader, "acme", FROM, TO).await,
            expected,
            "killed after {allowed}"
        );
        if outcome.is_ok() {
            continue;
        }
        killed_runs += 1;
        if allowed % 2 == 0 {
            // Rerun with the same inputs: same names, same bytes.
            let mut rerun = log.compactor();
            rerun.config.max_chunk_bytes = 300;
            rerun
                .run_pass(at("2026-11-26T06:00:00Z"))
                .await
                .unwrap()
                .unwrap();
        } else {
            // Ingestion moved on meanwhile: the next pass has other cuts, so other names; the
            // killed pass's objects stay behind.
            log.flush(
                1,
                vec![post("acme", "a6", "2026-11-26T03:00:00Z")],
                "2026-11-26T05:00:00Z",
            )
            .await;
            let mut next = log.compactor();
            next.config.max_chunk_bytes = 300;
            next.run_pass(at("2026-11-26T06:00:00Z"))
                .await
                .unwrap()
                .unwrap();
        }
        let mut want = ids(&expected);
        if allowed % 2 == 1 {
            want.push("a6".into());
        }
        assert_eq!(
            ids(&read(&reader, "acme", FROM, TO).await),
            want,
            "after {allowed}"
        );
    }
    // Every write of the pass was a kill point once: its parts' chunks, then its record.
    assert!(killed_runs >= 8, "only {killed_runs} runs were killed");
}

#[tokio::test]
async fn two_compactors_at_once_never_hide_a_record() {
    let mut log = three_days().await;
    let reader = LogReader::new(log.store.clone());
    // Same inputs at once: the same names and bytes, both succeed.
    let (one, two) = (
        log.compactor_on(Arc::new(Faulty::on(&log.store))),
        log.compactor_on(Arc::new(Faulty::on(&log.store))),
    );
    let (a, b) = tokio::join!(
        one.run_pass(at("2026-11-26T06:00:00Z")),
        two.run_pass(at("2026-11-26T06:00:00Z")),
    );
    assert_eq!(a.unwrap().unwrap().pass, b.unwrap().unwrap().pass);
    // Different inputs: a late event and a new day; one compactor saw the pointers move, the
    // other read the head before the first recorded its pass, so both write pass 2.
    log.flush(
        0,
        vec![post("acme", "late1", "2026-11-24T08:00:00Z")],
        "2026-11-27T05:00:00Z",
    )
    .await;
    let first = log
        .compactor()
        .run_pass(at("2026-11-27T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    log.flush(
        1,
        vec![post("acme", "late2", "2026-11-25T08:00:00Z")],
        "2026-11-27T05:00:00Z",
    )
    .await;
    let stale_store: Arc<dyn ObjectStore> = Arc::new(Faulty {
        hide_passes: true,
        ..Faulty::on(&log.store)
    });
    let second = log
        .compactor_on(stale_store)
        .run_pass(at("2026-11-27T06:00:00Z"))
        .await;
    // It believed there was no head: it wrote a pass 1 of other cuts. Every record is read.
    let second = second.unwrap().unwrap();
    assert_ne!(second.pass, first.pass);
    let want = ["late1", "a1", "a3", "d1", "late2", "a2", "a4"];
    assert_eq!(ids(&read(&reader, "acme", FROM, TO).await), want);
    // And the next pass merges the lot.
    log.flush(
        0,
        vec![post("acme", "late3", "2026-11-24T07:00:00Z")],
        "2026-11-27T05:00:00Z",
    )
    .await;
    log.compactor()
        .run_pass(at("2026-11-27T07:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    let mut want = want.to_vec();
    want.insert(0, "late3");
    assert_eq!(ids(&read(&reader, "acme", FROM, TO).await), want);
}

#[tokio::test]
async fn a_record_of_another_company_in_a_part_is_an_error() {
    let log = three_days().await;
    log.compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    // Forge a part of acme's holding a record of bravo, as a newer object of the head pass.
    let head = PassRecord::head(log.store.as_ref(), TOPIC)
        .await
        .unwrap()
        .unwrap();
    let day: NaiveDate = "2026-11-24".parse().unwrap();
    let stray = pending(post("bravo", "x", "2026-11-24T10:00:00Z"), 0);
    let record = LogRecord {
        epoch: 1,
        partition: 0,
        offset: 0,
        raw: serde_json::value::RawValue::from_string(stray.raw.to_string()).unwrap(),
        event: stray.event,
    };
    for key in log.keys(&keys::day_prefix("acme", day)) {
        log.store.delete(&key).await.unwrap();
    }
    let spec = PartSpec {
        company_id: "acme",
        day,
        pass: &head.reference(),
        cuts: &[],
        merged: &BTreeSet::new(),
    };
    for (key, bytes) in part::encode_part(&spec, &[record], 1 << 20).unwrap() {
        log.store.put(&key, bytes).await.unwrap();
    }
    let reader = LogReader::new(log.store.clone());
    let mut cursor = reader.events("acme", at(FROM), at(TO));
    let error = cursor.next_hour().await.unwrap_err();
    assert!(error.to_string().contains("does not belong"), "{error}");
}

#[tokio::test]
async fn metadata_comes_from_a_snapshot_and_late_changes_are_folded_in_order() {
    let mut log = Log::new();
    log.flush(
        0,
        vec![
            person("acme", "m1", "2026-11-20T10:00:00Z", "Ann"),
            person("acme", "m2", "2026-11-22T10:00:00Z", "Bea"),
            person("acme", "m3", "2026-11-24T10:00:00Z", "Cy"),
            post("acme", "p1", "2026-11-24T11:00:00Z"),
        ],
        "2026-11-26T05:00:00Z",
    )
    .await;
    log.watermark(1, "2026-11-26T05:00:00Z").await;
    let instants = [
        "2026-11-20T09:00:00Z",
        "2026-11-21T00:00:00Z",
        "2026-11-22T23:59:59Z",
        "2026-11-23T12:00:00Z",
        "2026-11-25T00:00:00Z",
        "2026-11-27T00:00:00Z",
    ];
    async fn names(log: &Log, instants: &[&str]) -> Vec<Option<String>> {
        let reader = LogReader::new(log.store.clone());
        let mut out = Vec::new();
        for instant in instants {
            let directory = reader.metadata("acme", at(instant)).await.unwrap();
            // The snapshot path must agree with folding every change.
            let mut folded = Directory::default();
            for record in reader.meta_events("acme", at(instant)).await.unwrap() {
                folded.apply(&record.event);
            }
            assert_eq!(directory, folded, "at {instant}");
            out.push(directory.people.get("u1").and_then(|p| p.name.clone()));
        }
        out
    }
    let want = |v: &[Option<&str>]| v.iter().map(|n| n.map(str::to_owned)).collect::<Vec<_>>();
    let before = names(&log, &instants).await;
    assert_eq!(
        before,
        want(&[
            None,
            Some("Ann"),
            Some("Bea"),
            Some("Bea"),
            Some("Cy"),
            Some("Cy")
        ])
    );
    log.compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(names(&log, &instants).await, before);
    // Reading as of the end of the range fetches one snapshot and the changes after it.
    let counting = Arc::new(CountingStore::new(log.store.clone()));
    LogReader::new(counting.clone())
        .metadata("acme", at("2026-11-25T12:00:00Z"))
        .await
        .unwrap();
    assert!(counting.counts().gets <= 3, "{:?}", counting.counts());

    // A late change on the 21st, older than the snapshots of the 22nd and the 24th: a rename
    // the 22nd overrides, and a new person the later snapshots must now hold.
    log.flush(
        0,
        vec![
            person("acme", "m0", "2026-11-21T10:00:00Z", "Late"),
            person_of("acme", "u2", "m9", "2026-11-21T11:00:00Z", "Dee"),
        ],
        "2026-11-26T06:00:00Z",
    )
    .await;
    let late = want(&[
        None,
        Some("Ann"),
        Some("Bea"),
        Some("Late"),
        Some("Cy"),
        Some("Cy"),
    ]);
    let mut instants_late = instants.to_vec();
    instants_late[3] = "2026-11-21T12:00:00Z";
    assert_eq!(names(&log, &instants_late).await, late);
    let summary = log
        .compactor()
        .run_pass(at("2026-11-26T07:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    // The 21st gets a meta day; the snapshots of the 22nd and the 24th are rewritten.
    assert_eq!(summary.wrote.meta_days, 3);
    assert_eq!(names(&log, &instants_late).await, late);
    let directory = LogReader::new(log.store.clone())
        .metadata("acme", at("2026-11-25T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(directory.people["u2"].name.as_deref(), Some("Dee"));
    // A third pass with a late change that leaves the later snapshots as they were rewrites
    // only its own day.
    log.flush(
        0,
        vec![person("acme", "m00", "2026-11-21T10:30:00Z", "Later")],
        "2026-11-26T07:00:00Z",
    )
    .await;
    let summary = log
        .compactor()
        .run_pass(at("2026-11-26T08:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.wrote.meta_days, 1);
    instants_late[3] = "2026-11-21T10:45:00Z";
    let later = want(&[
        None,
        Some("Ann"),
        Some("Bea"),
        Some("Later"),
        Some("Cy"),
        Some("Cy"),
    ]);
    assert_eq!(names(&log, &instants_late).await, later);
}

#[tokio::test]
async fn a_month_after_compaction_costs_a_few_requests_per_day() {
    let mut log = Log::new();
    for day in 1..=30 {
        let events: Vec<Value> = (0..20)
            .flat_map(|i| {
                let when = format!("2026-11-{day:02}T{:02}:00:00Z", i % 24);
                [
                    post("acme", &format!("a-{day}-{i}"), &when),
                    post(&format!("other{}", i % 5), &format!("o-{day}-{i}"), &when),
                ]
            })
            .collect();
        log.flush(day % 2, events, "2026-12-01T05:00:00Z").await;
    }
    log.watermark(0, "2026-12-02T05:00:00Z").await;
    log.watermark(1, "2026-12-02T05:00:00Z").await;
    let expected = read(&LogReader::new(log.store.clone()), "acme", FROM, TO).await;
    assert_eq!(ids(&expected).len(), 600);
    // Before compaction a read takes the segments' slices day by day, not all up front: after
    // the first hour, every header (one ranged GET each) and the slices of a few days only.
    let counting = Arc::new(CountingStore::new(log.store.clone()));
    let reader = LogReader::new(counting.clone());
    let mut cursor = reader.events("acme", at(FROM), at(TO));
    assert!(cursor.next_hour().await.unwrap().is_some());
    let early = counting.counts().range_gets;
    assert!((30..30 + 6).contains(&early), "{:?}", counting.counts());
    drop(cursor);
    let mut compactor = log.compactor().with_shard_budget(4096);
    compactor.config.max_chunk_bytes = 1 << 20;
    let summary = compactor
        .run_pass(at("2026-12-02T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.read.records, 1200);

    let counting = Arc::new(CountingStore::new(log.store.clone()));
    let reader = LogReader::new(counting.clone());
    assert_eq!(read(&reader, "acme", FROM, TO).await, expected);
    let counts = counting.counts();
    // 30 days: a GET per day, a few LISTs for the whole range, the pass, the spans.
    assert!(counts.all_gets() <= 30 + 5, "{counts:?}");
    assert!(counts.lists <= 8, "{counts:?}");

    // Garbage collection after retention (the time watermark moved on meanwhile) deletes the
    // compacted segments; reads are unchanged.
    log.watermark(0, "2026-12-19T05:00:00Z").await;
    log.watermark(1, "2026-12-19T05:00:00Z").await;
    log.compactor()
        .run_pass(at("2026-12-19T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    let deleted = log
        .compactor()
        .collect_garbage(at("2026-12-20T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(deleted, 30);
    assert_eq!(
        read(&LogReader::new(log.store.clone()), "acme", FROM, TO).await,
        expected
    );
    // Before retention, nothing goes.
    let mut fresh = Log::new();
    fresh
        .flush(
            0,
            vec![post("acme", "x", "2026-11-01T00:00:00Z")],
            "2026-11-03T00:00:00Z",
        )
        .await;
    fresh.watermark(1, "2026-11-03T00:00:00Z").await;
    fresh
        .compactor()
        .run_pass(at("2026-11-03T00:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fresh
            .compactor()
            .collect_garbage(at("2026-11-05T00:00:00Z"))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn without_a_position_every_topic_in_the_bucket_is_read() {
    let log = three_days().await;
    log.compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    // A second topic writing into the same bucket (tests share one).
    let source = SourceRange {
        topic: "u".into(),
        partition: 0,
        first_offset: 0,
        last_offset: 0,
    };
    let records = [pending(post("acme", "u1", "2026-11-24T12:00:00Z"), 0)];
    let (bytes, _) = crate::v2::segment::encode(1, &source, &records).unwrap();
    put_new(log.store.as_ref(), &keys::segment_key(1, &source), bytes)
        .await
        .unwrap();
    let mut pointer = Watermark::new("u", 0, 1, 1, 1);
    pointer.time_watermark = Some(at("2026-11-26T05:00:00Z"));
    pointer.write(log.store.as_ref()).await.unwrap();
    let reader = LogReader::new(log.store.clone());
    assert_eq!(
        ids(&read(&reader, "acme", FROM, TO).await),
        ["a1", "a3", "d1", "u1", "a2", "a4"]
    );
    // At a position, only its topic.
    let position = LogPosition::read(log.store.as_ref(), TOPIC).await.unwrap();
    let at_position = read(&reader.clone().at(position), "acme", FROM, TO).await;
    assert_eq!(ids(&at_position), ["a1", "a3", "d1", "a2", "a4"]);
}

/// Writes a segment of `events` at offsets `first..` to partition 0, epoch 1, as a writer would.
async fn put_segment(store: &MemoryStore, first: i64, events: &[Value]) {
    let records: Vec<PendingRecord> = events
        .iter()
        .enumerate()
        .map(|(i, v)| pending(v.clone(), first + i as i64))
        .collect();
    let source = SourceRange {
        topic: TOPIC.into(),
        partition: 0,
        first_offset: first,
        last_offset: first + records.len() as i64 - 1,
    };
    let (bytes, _) = crate::v2::segment::encode(1, &source, &records).unwrap();
    put_new(store, &keys::segment_key(1, &source), bytes)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cut_never_splits_a_segment_so_a_stale_writers_pointer_loses_nothing() {
    let log = Log::new();
    let store = log.store.as_ref();
    let events: Vec<Value> = (0..6)
        .map(|i| post("acme", &format!("e{i}"), "2026-11-24T10:00:00Z"))
        .collect();
    let pointer = |durable: i64| async move {
        let mut pointer = Watermark::new(TOPIC, 0, 1, 1, durable);
        pointer.time_watermark = Some(at("2026-11-26T05:00:00Z"));
        pointer.write(store).await.unwrap();
    };
    put_segment(store, 0, &events[0..2]).await;
    // The partition moved to writer B: 2..=5 and its pointer; then the stale writer A wrote
    // 2..=3 and moved the pointer back to 4.
    put_segment(store, 2, &events[2..6]).await;
    pointer(6).await;
    put_segment(store, 2, &events[2..4]).await;
    pointer(4).await;
    let reader = LogReader::new(log.store.clone());
    let all: Vec<String> = (0..6).map(|i| format!("e{i}")).collect();

    let first = log
        .compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    let head = PassRecord::head(store, TOPIC).await.unwrap().unwrap();
    // Cut 4 would split segment 2..=5; the cut goes down to its start.
    assert_eq!(head.partition(0, 1).unwrap().cut, 2);
    assert_eq!(first.read.records, 2);
    assert_eq!(ids(&read(&reader, "acme", FROM, TO).await), all);

    // B goes on: the pointer moves past the segment; the next pass takes the rest.
    pointer(6).await;
    let second = log
        .compactor()
        .run_pass(at("2026-11-26T07:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.read.records, 6); // e2, e3 twice (both segments), e4, e5
    assert_eq!(ids(&read(&reader, "acme", FROM, TO).await), all);
}

#[tokio::test]
async fn a_stuck_horizon_stops_garbage_collection_so_older_heads_stay_readable() {
    let mut log = three_days().await;
    log.compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    let day = keys::day_prefix("acme", "2026-11-24".parse().unwrap());
    let first_parts = log.keys(&day);
    assert_eq!(first_parts.len(), 1);
    // The time watermark stays where it was (one partition frozen) while late events keep
    // coming: passes go on with the old horizon, long after retention.
    log.flush(
        1,
        vec![post("acme", "late", "2026-11-24T09:00:00Z")],
        "2026-11-26T05:00:00Z",
    )
    .await;
    let second = log
        .compactor()
        .run_pass(at("2026-12-10T00:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.pass.seq, second.horizon),
        (2, at("2026-11-26T00:00:00Z"))
    );
    // A reader that opened at pass 1 a moment ago still needs pass 1's part; the pass ages
    // cannot be told from the horizons, so nothing is collected.
    let segments = log.keys(&format!("{}segments/", keys::ROOT));
    let deleted = log
        .compactor()
        .collect_garbage(at("2026-12-10T00:01:00Z"))
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    let parts = log.keys(&day);
    assert_eq!(parts.len(), 2);
    assert!(parts.contains(&first_parts[0]));
    assert_eq!(log.keys(&format!("{}segments/", keys::ROOT)), segments);
}

#[tokio::test]
async fn passes_of_one_seq_never_merge_each_others_parts() {
    // Two compactors that both saw no head write pass 1 from different cuts (hashes). Each one's
    // parts must be what its inputs make them, whether or not the other's parts exist.
    async fn peers(with_other: bool) -> (Log, PassSummary) {
        let mut log = three_days().await;
        let hidden = |log: &Log| {
            let store: Arc<dyn ObjectStore> = Arc::new(Faulty {
                hide_passes: true,
                ..Faulty::on(&log.store)
            });
            log.compactor_on(store)
        };
        if with_other {
            hidden(&log)
                .run_pass(at("2026-11-26T06:00:00Z"))
                .await
                .unwrap()
                .unwrap();
        }
        log.flush(
            0,
            vec![post("acme", "late1", "2026-11-24T08:00:00Z")],
            "2026-11-26T05:00:00Z",
        )
        .await;
        let summary = hidden(&log)
            .run_pass(at("2026-11-26T06:00:00Z"))
            .await
            .unwrap()
            .unwrap();
        (log, summary)
    }
    let (alone, expected) = peers(false).await;
    let (raced, summary) = peers(true).await;
    assert_eq!((summary.pass.seq, &summary.pass), (1, &expected.pass));
    assert_eq!(
        summary.wrote, expected.wrote,
        "nothing carried from the peer"
    );
    let own = |log: &Log| -> BTreeMap<String, Bytes> {
        log.keys(&format!("{}companies/", keys::ROOT))
            .into_iter()
            .filter(|k| k.contains(&summary.pass.hash))
            .map(|k| {
                let bytes = futures::executor::block_on(log.store.get(&k)).unwrap();
                (k, bytes)
            })
            .collect()
    };
    assert!(!own(&alone).is_empty());
    assert_eq!(own(&raced), own(&alone), "same name, same bytes");
    // Readers still take the union of both passes' parts.
    let reader = LogReader::new(raced.store.clone());
    assert_eq!(
        ids(&read(&reader, "acme", FROM, TO).await),
        ["late1", "a1", "a3", "d1", "a2", "a4"]
    );
}

/// `metadata_range`: the directory just before the range (from the newest snapshot of a day
/// before it, not the whole history) and the range's changes, the same before and after
/// compaction and the same as folding every change.
#[tokio::test]
async fn metadata_over_a_range_starts_from_a_snapshot_before_it() {
    let team = json!({"id": "c-acme", "kind": "team", "owner_company_id": "acme"});
    let mut events = vec![json!({"event_id": "m00", "type": "conversation.created",
        "occurred_at": "2026-11-01T09:00:00Z", "conversation": team, "created_by": "u0",
        "name": "Desk", "members": [{"person_id": "u0", "company_id": "acme"}]})];
    for day in 2..=20 {
        events.push(
            json!({"event_id": format!("m{day:02}"), "type": "conversation.members_added",
            "occurred_at": format!("2026-11-{day:02}T10:00:00Z"), "conversation": team,
            "added_by": "u0", "members": [{"person_id": format!("u{day}"), "company_id": "acme"}]}),
        );
        events.push(json!({"event_id": format!("r{day:02}"), "type": "conversation.members_removed",
            "occurred_at": format!("2026-11-{day:02}T11:00:00Z"), "conversation": team,
            "removed_by": "u0", "members": [{"person_id": format!("u{}", day - 1), "company_id": "acme"}]}));
    }
    let mut log = Log::new();
    log.flush(0, events, "2026-11-26T05:00:00Z").await;
    log.watermark(1, "2026-11-26T05:00:00Z").await;
    let (from, to) = (at("2026-11-18T10:30:00Z"), at("2026-11-20T00:00:00Z"));
    async fn check(log: &Log, from: DateTime<Utc>, to: DateTime<Utc>) {
        let reader = LogReader::new(log.store.clone());
        let (start, changes) = reader.metadata_range("acme", from, to).await.unwrap();
        let before = reader
            .metadata("acme", from - chrono::Duration::nanoseconds(1))
            .await
            .unwrap();
        assert_eq!(start, before);
        let members = &start.conversations["c-acme"].members;
        // u17 was removed on the 18th at 11:00, after the range's start; u16 before it.
        assert_eq!(members.keys().collect::<Vec<_>>(), ["u0", "u17", "u18"]);
        let ids: Vec<&str> = changes.iter().map(|r| r.event.event_id.as_str()).collect();
        assert_eq!(ids, ["r18", "m19", "r19"]);
        let mut folded = Directory::default();
        for record in reader.meta_events("acme", to).await.unwrap() {
            if record.event.occurred_at.with_timezone(&Utc) < from {
                folded.apply(&record.event);
            }
        }
        assert_eq!(start, folded);
    }
    check(&log, from, to).await;
    log.compactor()
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    check(&log, from, to).await;
    // After compaction the read takes the snapshot of the 17th and the meta days of the range,
    // never the nineteen days of history.
    let counting = Arc::new(CountingStore::new(log.store.clone()));
    LogReader::new(counting.clone())
        .metadata_range("acme", from, to)
        .await
        .unwrap();
    assert!(counting.counts().gets <= 6, "{:?}", counting.counts());
}
