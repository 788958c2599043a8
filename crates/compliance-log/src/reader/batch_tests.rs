//! The cursor's batches against what the log holds: the same records as a whole-range read
//! (every copy collected, duplicates collapsed, sorted), in bounded memory, with its progress.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use event_model::{Limits, parse_event, route};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use storage::{CompletedPart, ListPage, MemoryStore, ObjectMeta, put_new};

use super::*;
use crate::compact::{CompactionConfig, Compactor};
use crate::format::SourceRange;
use crate::v2::epoch::EpochMarker;
use crate::v2::keys;
use crate::v2::part::{PartHeader, PartSpec, encode_part};
use crate::v2::pass::{PassPartition, PassRecord, PassRef};
use crate::v2::pointer::Watermark;
use crate::writer::{PendingRecord, V1Writer};

const TOPIC: &str = "t";
const BUDGET: usize = 1 << 20;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn post(company: &str, id: &str, when: DateTime<Utc>) -> Value {
    json!({"event_id": id, "type": "post.created", "occurred_at": when.to_rfc3339(),
        "conversation": {"id": format!("c-{company}"), "kind": "team", "owner_company_id": company},
        "post_id": id, "author_id": "u", "text": format!("text of {id}")})
}

fn pending(value: &Value, offset: i64) -> PendingRecord {
    let bytes = serde_json::to_vec(value).unwrap();
    let (event, raw) = parse_event(&bytes, &Limits::default(), at("2027-01-01T00:00:00Z")).unwrap();
    PendingRecord { offset, event, raw }
}

/// A log being written, and every record written to it as a reader of `acme` would get it.
struct Log {
    store: Arc<MemoryStore>,
    next: BTreeMap<(i32, u32), i64>,
    written: Vec<LogRecord>,
}

impl Log {
    fn new() -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            next: BTreeMap::new(),
            written: Vec::new(),
        }
    }

    /// One segment of `events` in `partition` and `epoch` at its next offsets; moves the
    /// partition's pointer.
    async fn flush(&mut self, partition: i32, epoch: u32, events: &[Value]) {
        let first = *self.next.get(&(partition, epoch)).unwrap_or(&0);
        let records: Vec<PendingRecord> = events
            .iter()
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
        let (bytes, _) = crate::v2::segment::encode(epoch, &source, &records).unwrap();
        put_new(
            self.store.as_ref(),
            &keys::segment_key(epoch, &source),
            bytes,
        )
        .await
        .unwrap();
        self.next.insert((partition, epoch), last + 1);
        let mut pointer = Watermark::new(TOPIC, partition, 2, epoch, last + 1);
        pointer.time_watermark = Some(at("2026-11-26T05:00:00Z"));
        pointer.write(self.store.as_ref()).await.unwrap();
        for record in records {
            self.note(epoch, partition, record);
        }
    }

    fn note(&mut self, epoch: u32, partition: i32, record: PendingRecord) {
        if route(&record.event).contains("acme") {
            self.written.push(LogRecord {
                epoch,
                partition,
                offset: record.offset,
                raw: serde_json::value::RawValue::from_string(record.raw.to_string()).unwrap(),
                event: record.event,
            });
        }
    }
}

/// What a whole-range read returns: every copy inside the range and position, one per (time,
/// `event_id`) — the smallest (epoch, partition, offset) — in log order.
fn whole_range(
    written: &[LogRecord],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    position: Option<&LogPosition>,
) -> Vec<LogRecord> {
    let mut records: Vec<LogRecord> = written
        .iter()
        .filter(|r| {
            let t = r.event.occurred_at.with_timezone(&Utc);
            from <= t && t < to && position.is_none_or(|p| p.admits(r))
        })
        .cloned()
        .collect();
    records.sort_by(|a, b| merge::merge_key(a).cmp(&merge::merge_key(b)));
    records.dedup_by(|later, first| later.sort_key() == first.sort_key());
    records
}

type Key = (String, DateTime<Utc>, u32, i32, i64, String);

fn keys_of(records: &[LogRecord]) -> Vec<Key> {
    records
        .iter()
        .map(|r| {
            (
                r.event.event_id.clone(),
                r.sort_key().0,
                r.epoch,
                r.partition,
                r.offset,
                r.raw.get().to_owned(),
            )
        })
        .collect()
}

/// Reads a range with `next_batch`, checking each batch's bounds; returns the records and the
/// final progress.
async fn batches(
    reader: &LogReader,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (Vec<LogRecord>, ReadProgress, usize) {
    let mut cursor = reader.events("acme", from, to);
    let mut records = Vec::new();
    let mut count = 0;
    while let Some(batch) = cursor.next_batch().await.unwrap() {
        assert!(!batch.is_empty() && batch.len() <= BATCH_RECORDS);
        let hour = floor_hour(batch[0].sort_key().0);
        assert!(batch.iter().all(|r| floor_hour(r.sort_key().0) == hour));
        let progress = cursor.read_progress();
        assert!(progress.bytes_read <= progress.bytes_total, "{progress:?}");
        records.extend(batch);
        count += 1;
    }
    assert_eq!(cursor.held_bytes(), 0, "everything returned");
    (records, cursor.read_progress(), count)
}

async fn hours(reader: &LogReader, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<LogRecord> {
    let mut cursor = reader.events("acme", from, to);
    let mut records: Vec<LogRecord> = Vec::new();
    while let Some(hour) = cursor.next_hour().await.unwrap() {
        let start = floor_hour(hour[0].sort_key().0);
        assert!(
            records
                .last()
                .is_none_or(|r| floor_hour(r.sort_key().0) < start)
        );
        assert!(hour.iter().all(|r| floor_hour(r.sort_key().0) == start));
        records.extend(hour);
    }
    records
}

/// Two compacted days (the first in several chunks larger than a piece), an open day, copies
/// across partitions, within a partition and in a later epoch, a part left by a compactor that
/// lost a race, one left incomplete, late events, format-1 objects, and one `event_id` at two
/// times. Returns the log and the position taken after the pass.
async fn eventful_log() -> (Log, LogPosition) {
    let mut log = Log::new();
    let d1 = at("2026-11-24T00:00:00Z");
    let a = |i: i64| {
        post(
            "acme",
            &format!("a{i:05}"),
            d1 + chrono::Duration::seconds(i * 37),
        )
    };
    let mut p0: Vec<Value> = Vec::new();
    for i in 0..1500 {
        p0.push(a(i));
        if i % 3 == 0 {
            p0.push(post(
                "bravo",
                &format!("b{i}"),
                d1 + chrono::Duration::seconds(i),
            ));
        }
    }
    p0.push(post("acme", "twin", at("2026-11-25T10:00:00Z")));
    log.flush(0, 1, &p0).await;
    let mut p1: Vec<Value> = (1500..2200).map(a).collect();
    p1.extend((0..100).map(a)); // copies in another partition
    p1.push(post("acme", "twin", at("2026-11-25T10:30:00Z"))); // the same id, later
    p1.extend((0..50).map(|i| {
        post(
            "acme",
            &format!("d2-{i}"),
            at("2026-11-25T00:00:00Z") + chrono::Duration::minutes(i * 29),
        )
    }));
    p1.push(post("acme", "open", at("2026-11-26T01:00:00Z")));
    log.flush(1, 1, &p1).await;
    log.flush(0, 1, &(100..200).map(a).collect::<Vec<_>>())
        .await; // a replay
    let mut config = CompactionConfig::new(TOPIC);
    config.grace = Duration::from_secs(3600);
    config.max_chunk_bytes = 200 << 10;
    let summary = Compactor::new(log.store.clone(), config)
        .run_pass(at("2026-11-26T06:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.horizon, at("2026-11-26T00:00:00Z"));
    let day1 = d1.date_naive();
    assert!(
        storage::list_all(log.store.as_ref(), &keys::day_prefix("acme", day1))
            .await
            .unwrap()
            .len()
            >= 3,
        "the first day has several chunks"
    );
    let position = LogPosition::read(log.store.as_ref(), TOPIC).await.unwrap();

    // Late: a new event of a closed day, and a copy of one.
    log.flush(
        1,
        1,
        &[post("acme", "late", at("2026-11-24T12:00:30Z")), a(42)],
    )
    .await;
    // A later epoch of partition 0 with a copy and a new event.
    EpochMarker::new(TOPIC, 0, 2, None, 0, "offsets went back", None)
        .write(log.store.as_ref())
        .await
        .unwrap();
    log.flush(
        0,
        2,
        &[a(7), post("acme", "epoch2", at("2026-11-26T02:00:00Z"))],
    )
    .await;
    // A compactor that lost the race to the same pass wrote a part holding copies (one of a
    // late record); another was killed after the first chunk of its part.
    let head = summary.pass;
    let mut copies: Vec<LogRecord> = log
        .written
        .iter()
        .filter(|r| {
            r.sort_key().0.date_naive() == day1 && (r.offset % 5 == 0 || r.event.event_id == "late")
        })
        .cloned()
        .collect();
    copies.sort_by(|a, b| merge::merge_key(a).cmp(&merge::merge_key(b)));
    let none = BTreeSet::new();
    for (hash, keep) in [("ffffffffffffffff", usize::MAX), ("0000000000000000", 1)] {
        let pass = PassRef {
            seq: head.seq,
            hash: hash.into(),
        };
        let spec = PartSpec {
            company_id: "acme",
            day: day1,
            pass: &pass,
            cuts: &[],
            merged: &none,
        };
        let chunks = encode_part(&spec, &copies, 16 << 10).unwrap();
        assert!(chunks.len() > 1);
        for (key, bytes) in chunks.into_iter().take(keep) {
            log.store.put(&key, bytes).await.unwrap();
        }
    }
    // Format 1: an old event and a copy (format-1 copies have the smallest position).
    let v1 = [
        pending(&post("acme", "old", at("2026-11-23T23:00:00Z")), 0),
        pending(&a(10), 1),
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
    for record in v1 {
        log.note(0, 0, record);
    }
    (log, position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_the_whole_range_read_in_log_order() {
    let (log, position) = eventful_log().await;
    let reader = LogReader::new(log.store.clone()).with_memory_budget(BUDGET);
    let ranges = [
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        ("2026-11-24T05:17:00Z", "2026-11-26T01:00:00Z"),
        ("2026-11-25T10:00:00Z", "2026-11-25T10:30:00Z"),
    ];
    for (from, to) in ranges {
        let (from, to) = (at(from), at(to));
        let expected = whole_range(&log.written, from, to, None);
        let (got, progress, count) = batches(&reader, from, to).await;
        assert_eq!(keys_of(&got), keys_of(&expected), "{from}..{to}");
        assert_eq!(keys_of(&hours(&reader, from, to).await), keys_of(&expected));
        assert!(progress.bytes_total > 0 && progress.bytes_read == progress.bytes_total);
        assert!(count >= 1);
    }
    let all = whole_range(
        &log.written,
        at("2026-11-01T00:00:00Z"),
        at("2026-12-01T00:00:00Z"),
        None,
    );
    let ids: Vec<&str> = all.iter().map(|r| r.event.event_id.as_str()).collect();
    for id in ["old", "late", "epoch2", "open", "d2-49", "a02199"] {
        assert!(ids.contains(&id), "{id}");
    }
    let a10 = all.iter().find(|r| r.event.event_id == "a00010").unwrap();
    assert_eq!(a10.epoch, 0, "the format-1 copy has the smallest position");
    // One `event_id` at two times is two events in log order; a whole-range settle by
    // `event_id` alone (the reader before batches) kept one of them.
    assert_eq!(ids.iter().filter(|id| **id == "twin").count(), 2);
    let settled = settle(all.clone(), |_| true);
    assert_eq!(settled.len() + 1, all.len());

    // At the position taken after the pass: neither the late records nor the later epoch.
    let at_position = reader.clone().at(position.clone());
    let (from, to) = (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"));
    let expected = whole_range(&log.written, from, to, Some(&position));
    let (got, progress, _) = batches(&at_position, from, to).await;
    assert_eq!(keys_of(&got), keys_of(&expected));
    assert!(
        !got.iter()
            .any(|r| r.event.event_id == "late" || r.event.event_id == "epoch2")
    );
    assert_eq!(progress.bytes_read, progress.bytes_total);
}

/// A store that remembers the largest ranged GET and counts whole GETs of parts.
#[derive(Debug)]
struct Probe {
    inner: Arc<MemoryStore>,
    largest_range: AtomicU64,
    whole_part_gets: AtomicU64,
}

#[async_trait]
impl ObjectStore for Probe {
    async fn put(&self, key: &str, body: Bytes) -> storage::Result<()> {
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> storage::Result<Bytes> {
        if keys::parse_part_key(key).is_some() {
            self.whole_part_gets.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, end: u64) -> storage::Result<Bytes> {
        self.largest_range.fetch_max(end - start, Ordering::Relaxed);
        self.inner.get_range(key, start, end).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> storage::Result<()> {
        self.inner.put_if_absent(key, body).await
    }
    async fn head(&self, key: &str) -> storage::Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: i32,
    ) -> storage::Result<ListPage> {
        self.inner.list_page(prefix, after, max).await
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

/// Writes one compacted company-day of `records` small posts straight into chunks of about
/// `chunk_bytes` (as a compactor would, without holding the day), with the pass and pointer
/// that make it readable. Returns the chunks' keys and sizes.
async fn big_day(store: &MemoryStore, records: i64, chunk_bytes: usize) -> Vec<ObjectMeta> {
    let day = at("2026-11-25T00:00:00Z");
    let pass = PassRecord::new(
        TOPIC,
        None,
        at("2026-11-26T00:00:00Z"),
        vec![PassPartition {
            partition: 0,
            epoch: 1,
            cut: records,
            scan_from: records,
        }],
    );
    let mut bodies: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0)];
    for i in 0..records {
        let when = day + chrono::Duration::milliseconds(i * 86_400_000 / records);
        let event = post("acme", &format!("e{i:07}"), when);
        let line = format!(
            "{{\"epoch\":1,\"partition\":0,\"offset\":{i},\"event\":{}}}\n",
            serde_json::to_string(&event).unwrap()
        );
        let (body, count) = bodies.last_mut().unwrap();
        body.extend_from_slice(line.as_bytes());
        *count += 1;
        if body.len() >= chunk_bytes {
            bodies.push((Vec::new(), 0));
        }
    }
    bodies.retain(|(_, count)| *count > 0);
    let chunks = bodies.len() as u32;
    let mut out = Vec::new();
    for (chunk, (body, count)) in bodies.into_iter().enumerate() {
        let header = PartHeader {
            format: crate::format::FORMAT_NAME.into(),
            version: crate::v2::segment::FORMAT_VERSION,
            kind: crate::v2::part::KIND_DAY.into(),
            company_id: "acme".into(),
            day: day.date_naive(),
            pass: pass.reference(),
            chunk: chunk as u32,
            chunks,
            records: count,
            cuts: pass.cuts(),
            merged: Vec::new(),
            body_sha256: hex::encode(Sha256::digest(&body)),
        };
        let mut object = serde_json::to_vec(&header).unwrap();
        object.push(b'\n');
        object.extend_from_slice(&body);
        let key = keys::day_part_key("acme", day.date_naive(), pass.seq, &pass.hash, chunk as u32);
        out.push(ObjectMeta {
            key: key.clone(),
            size: object.len() as u64,
        });
        store.put(&key, Bytes::from(object)).await.unwrap();
    }
    store
        .put(&pass.key(), pass.encode().unwrap())
        .await
        .unwrap();
    Watermark::new(TOPIC, 0, 1, 1, records)
        .write(store)
        .await
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_day_is_read_in_pieces_within_the_budget() {
    let store = Arc::new(MemoryStore::new());
    let records = 200_000;
    let chunks = big_day(&store, records, 3 << 20).await;
    let total: u64 = chunks.iter().map(|c| c.size).sum();
    assert!(chunks.len() > 5, "{} chunks", chunks.len());
    let probe = Arc::new(Probe {
        inner: store,
        largest_range: AtomicU64::new(0),
        whole_part_gets: AtomicU64::new(0),
    });
    let reader = LogReader::new(probe.clone()).with_memory_budget(BUDGET);
    let mut cursor = reader.events(
        "acme",
        at("2026-11-25T00:00:00Z"),
        at("2026-11-26T00:00:00Z"),
    );
    let (mut count, mut last): (i64, Option<String>) = (0, None);
    let mut midway = None;
    while let Some(batch) = cursor.next_batch().await.unwrap() {
        for record in &batch {
            assert_eq!(record.event.event_id, format!("e{count:07}"));
            count += 1;
        }
        last = batch.last().map(|r| r.event.event_id.clone());
        if midway.is_none() && count >= records / 2 {
            midway = Some(cursor.read_progress());
        }
        // A caller slower than the reader, so the reader fills its budget.
        tokio::task::yield_now().await;
    }
    assert_eq!((count, last.as_deref()), (records, Some("e0199999")));
    let progress = cursor.read_progress();
    assert_eq!((progress.bytes_read, progress.bytes_total), (total, total));
    let midway = midway.unwrap();
    assert_eq!(midway.bytes_total, total);
    assert!(
        midway.bytes_read > total / 4 && midway.bytes_read < total,
        "{midway:?}"
    );
    assert_eq!(cursor.held_bytes(), 0, "everything returned");
    let peak = cursor.peak_held_bytes();
    let piece = (BUDGET / 8) as u64;
    eprintln!(
        "budget {BUDGET} bytes: peak held {peak} bytes; data {total} bytes in {} chunks; largest GET {} bytes",
        chunks.len(),
        probe.largest_range.load(Ordering::Relaxed)
    );
    assert!(peak <= BUDGET, "peak {peak} over the budget {BUDGET}");
    assert!(
        peak > BUDGET / 4,
        "peak {peak}: the reader did not read ahead"
    );
    assert!(probe.largest_range.load(Ordering::Relaxed) <= piece);
    assert_eq!(probe.whole_part_gets.load(Ordering::Relaxed), 0);
}

/// A caller that takes its next batch only once the reader can do nothing more (on one thread,
/// every other task has run until it waits), so the reader always fills its budget: what it
/// decodes must wait for room like what it fetches. (Decoding was not counted before it was
/// done: the pieces fetched within the budget decoded into about twice their bytes of records,
/// and batches the caller had not taken went past the budget by a quarter — seen on two
/// threads only when the machine was loaded.)
#[tokio::test(flavor = "current_thread")]
async fn a_reader_ahead_of_its_caller_decodes_within_the_budget() {
    let store = Arc::new(MemoryStore::new());
    let records = 20_000;
    big_day(&store, records, 1 << 20).await;
    let reader = LogReader::new(store).with_memory_budget(BUDGET);
    let mut cursor = reader.events(
        "acme",
        at("2026-11-25T00:00:00Z"),
        at("2026-11-26T00:00:00Z"),
    );
    let mut count = 0;
    while let Some(batch) = cursor.next_batch().await.unwrap() {
        for record in &batch {
            assert_eq!(record.event.event_id, format!("e{count:07}"));
            count += 1;
        }
        for _ in 0..64 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(count, records);
    assert_eq!(cursor.held_bytes(), 0, "everything returned");
    let peak = cursor.peak_held_bytes();
    assert!(peak <= BUDGET, "peak {peak} over the budget {BUDGET}");
    assert!(
        peak > BUDGET / 2,
        "peak {peak}: the reader did not fill its budget"
    );
}

#[tokio::test]
async fn a_corrupt_chunk_fails_the_read_with_its_name() {
    let store = Arc::new(MemoryStore::new());
    let chunks = big_day(&store, 3000, 200 << 10).await;
    assert!(chunks.len() > 2);
    // Flip one digit of a text in the middle of the second chunk: still valid JSON, so only
    // the checksum can tell.
    let victim = &chunks[1];
    let mut bytes = store.get(&victim.key).await.unwrap().to_vec();
    let middle = bytes.len() / 2;
    let digit = middle
        + bytes[middle..]
            .windows(9)
            .position(|w| w.starts_with(b"text of e"))
            .unwrap()
        + 9;
    bytes[digit] = if bytes[digit] == b'9' { b'8' } else { b'9' };
    store.put(&victim.key, Bytes::from(bytes)).await.unwrap();
    let reader = LogReader::new(store).with_memory_budget(BUDGET);
    let mut cursor = reader.events(
        "acme",
        at("2026-11-25T00:00:00Z"),
        at("2026-11-26T00:00:00Z"),
    );
    let error = loop {
        match cursor.next_batch().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a corrupt chunk was read to the end"),
            Err(error) => break error,
        }
    };
    let text = error.to_string();
    assert!(
        text.contains("corrupt") && text.contains("checksum") && text.contains(&victim.key),
        "{text}"
    );
    assert!(
        cursor.next_batch().await.unwrap().is_none(),
        "nothing after the error"
    );
}

#[tokio::test]
async fn a_part_out_of_log_order_fails_the_read() {
    let store = Arc::new(MemoryStore::new());
    let chunks = big_day(&store, 10, 1 << 20).await;
    let name = keys::parse_part_key(&chunks[0].key).unwrap();
    let pass = PassRef {
        seq: name.seq,
        hash: name.hash,
    };
    // The same chunk, its records in reverse: every line checks but the order.
    let day = at("2026-11-25T00:00:00Z");
    let mut records: Vec<LogRecord> = (0..10)
        .map(|i| {
            let value = post(
                "acme",
                &format!("e{i:07}"),
                day + chrono::Duration::hours(i),
            );
            let mut noted = Log::new();
            noted.note(1, 0, pending(&value, i));
            noted.written.remove(0)
        })
        .collect();
    records.reverse();
    let none = BTreeSet::new();
    let spec = PartSpec {
        company_id: "acme",
        day: day.date_naive(),
        pass: &pass,
        cuts: &[],
        merged: &none,
    };
    let (key, bytes) = encode_part(&spec, &records, 1 << 20).unwrap().remove(0);
    assert_eq!(key, chunks[0].key);
    store.put(&key, bytes).await.unwrap();
    let reader = LogReader::new(store);
    let mut cursor = reader.events("acme", day, at("2026-11-26T00:00:00Z"));
    let error = cursor.next_batch().await.unwrap_err().to_string();
    assert!(
        error.contains("out of log order") && error.contains(&key),
        "{error}"
    );
}
