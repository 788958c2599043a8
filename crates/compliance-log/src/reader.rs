//! Reads a company's log: events in a range in bounded batches, deduplicated and ordered by
//! (time, `event_id`), in bounded memory ([`EventCursor`], `merge`, `parts`, `v1`, `v2`); and
//! its metadata.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use event_model::directory::Directory;
use futures::{StreamExt, TryStreamExt};
use storage::{ObjectStore, list_all};

use crate::Result;
use crate::format::{self, LogRecord, floor_hour};
use crate::v2::isolation;

#[cfg(test)]
mod batch_tests;
mod merge;
mod parts;
mod v1;
mod v2;
use crate::v2::pointer::LogPosition;
pub use merge::BATCH_RECORDS;

/// Reads company logs. Cheap to clone; safe to share.
#[derive(Debug, Clone)]
pub struct LogReader {
    store: Arc<dyn ObjectStore>,
    concurrency: usize,
    /// Bytes a cursor may hold fetched and decoded, not yet returned.
    memory_budget: usize,
    /// When set, every read returns only the records inside it.
    position: Option<LogPosition>,
}

impl LogReader {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            concurrency: 16,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            position: None,
        }
    }

    /// The same reader, its cursors holding at most about `bytes` of fetched and decoded
    /// records (default 32 MiB) whatever a day holds.
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes.max(1 << 20);
        self
    }

    /// The same reader, restricted to the records inside `position`: the same request at the
    /// same position returns the same records, whenever it runs.
    pub fn at(mut self, position: LogPosition) -> Self {
        self.position = Some(position);
        self
    }

    /// The position reads are restricted to, if any.
    pub fn position(&self) -> Option<&LogPosition> {
        self.position.as_ref()
    }

    /// The company's content events with `from <= occurred_at < to`. The range is half-open,
    /// so consecutive ranges neither skip nor double an event with an equal timestamp.
    pub fn events(&self, company_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> EventCursor {
        EventCursor {
            start: Some((self.clone(), company_id.to_owned())),
            from,
            to,
            shared: Arc::new(merge::Shared::new(self.memory_budget)),
            batches: None,
            peeked: None,
            returned: None,
            done: from >= to,
            _task: None,
        }
    }

    /// The company's metadata events (people, conversations, membership) with
    /// `occurred_at <= until`, deduplicated and ordered: the whole history (for tools; an
    /// export uses [`metadata`](Self::metadata), which starts from a snapshot).
    pub async fn meta_events(
        &self,
        company_id: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<LogRecord>> {
        let mut records = self.v1_meta_events(company_id).await?;
        let snapshots = v2::Snapshot::open_all(self.store.as_ref(), self.position.as_ref()).await?;
        let (_, changes) = v2::metadata_all(
            &snapshots,
            self.store.as_ref(),
            company_id,
            until,
            until,
            self.position.as_ref(),
            false,
            self.concurrency,
        )
        .await?;
        records.extend(changes);
        Ok(settle(records, |r| {
            self.admits(r) && r.event.occurred_at.with_timezone(&Utc) <= until
        }))
    }

    /// The company's people and conversations as they stood at `as_of` (inclusive). Reads the
    /// latest usable directory snapshot before `as_of`'s day and the changes after it, never
    /// the whole history (unless the company also has a format-1 log, whose metadata has no
    /// snapshots).
    pub async fn metadata(&self, company_id: &str, as_of: DateTime<Utc>) -> Result<Directory> {
        let (mut directory, changes) = self.metadata_changes(company_id, as_of, as_of).await?;
        for record in changes {
            directory.apply(&record.event);
        }
        Ok(directory)
    }

    /// The company's people and conversations as they stood just before `from`, and its
    /// metadata changes with `from <= occurred_at < to`, deduplicated and in log order — what
    /// an export needs for membership over its range. Reads as [`metadata`](Self::metadata)
    /// does, from the newest usable snapshot of a day before `from`'s: never the history
    /// before it. The range's changes are held in memory (metadata: small beside content).
    pub async fn metadata_range(
        &self,
        company_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(Directory, Vec<LogRecord>)> {
        let until = to - chrono::Duration::nanoseconds(1);
        let (mut directory, changes) = self.metadata_changes(company_id, until, from).await?;
        let mut in_range = Vec::new();
        for record in changes {
            if record.event.occurred_at.with_timezone(&Utc) < from {
                directory.apply(&record.event);
            } else {
                in_range.push(record);
            }
        }
        Ok((directory, in_range))
    }

    /// The newest usable directory snapshot of a day before `snapshot_before`'s (none: empty),
    /// and the metadata changes after it up to `until` (inclusive), deduplicated, in log order.
    async fn metadata_changes(
        &self,
        company_id: &str,
        until: DateTime<Utc>,
        snapshot_before: DateTime<Utc>,
    ) -> Result<(Directory, Vec<LogRecord>)> {
        let v1 = self.v1_meta_events(company_id).await?;
        let snapshots = v2::Snapshot::open_all(self.store.as_ref(), self.position.as_ref()).await?;
        let (base, mut changes) = v2::metadata_all(
            &snapshots,
            self.store.as_ref(),
            company_id,
            until,
            snapshot_before,
            self.position.as_ref(),
            v1.is_empty(),
            self.concurrency,
        )
        .await?;
        changes.extend(v1);
        let changes = settle(changes, |r| {
            self.admits(r) && r.event.occurred_at.with_timezone(&Utc) <= until
        });
        Ok((base.unwrap_or_default(), changes))
    }

    /// Whether the reader's position (if any) holds the record.
    fn admits(&self, record: &LogRecord) -> bool {
        self.position.as_ref().is_none_or(|p| p.admits(record))
    }

    /// Every format-1 metadata event of the company (none when it has no format-1 log).
    async fn v1_meta_events(&self, company_id: &str) -> Result<Vec<LogRecord>> {
        let keys: Vec<String> = list_all(self.store.as_ref(), &format::meta_prefix(company_id))
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        self.fetch(company_id, keys).await
    }

    /// Whether the company has any format-1 object (one LIST of one key).
    async fn has_v1(&self, company_id: &str) -> Result<bool> {
        Ok(!self
            .store
            .list_page(&format::company_prefix(company_id), None, 1)
            .await?
            .objects
            .is_empty())
    }

    /// Fetches and decodes objects, `concurrency` at a time, in the order of `keys`.
    async fn fetch(&self, company_id: &str, keys: Vec<String>) -> Result<Vec<LogRecord>> {
        let objects: Vec<Vec<LogRecord>> = futures::stream::iter(keys)
            .map(|key| read_object(Arc::clone(&self.store), key, company_id.to_owned()))
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        Ok(objects.into_iter().flatten().collect())
    }
}

/// One format-1 object of `company_id`, fetched, decoded and admitted.
async fn read_object(
    store: Arc<dyn ObjectStore>,
    key: String,
    company_id: String,
) -> Result<Vec<LogRecord>> {
    let bytes = store.get(&key).await?;
    let (header, records) = format::decode(&key, &bytes)?;
    isolation::admit(&key, &company_id, &header.company_id, records)
}

/// Keeps the records `keep` accepts, collapses duplicates of one `event_id` (keeping the copy
/// with the smallest (epoch, partition, offset), so the choice is deterministic) and sorts by
/// (time, `event_id`).
fn settle(records: Vec<LogRecord>, keep: impl Fn(&LogRecord) -> bool) -> Vec<LogRecord> {
    let mut by_id: HashMap<String, LogRecord> = HashMap::new();
    for record in records.into_iter().filter(|r| keep(r)) {
        match by_id.get(&record.event.event_id) {
            Some(seen) if seen.source_position() <= record.source_position() => {}
            _ => {
                by_id.insert(record.event.event_id.clone(), record);
            }
        }
    }
    let mut settled: Vec<LogRecord> = by_id.into_values().collect();
    settled.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    settled
}

/// Bytes a cursor may hold by default ([`LogReader::with_memory_budget`]).
pub const DEFAULT_MEMORY_BUDGET: usize = 32 << 20;

/// How much of a cursor's data it has read: bytes of the log objects (or the slices of them)
/// its range needs. Known once the cursor has listed what it will read; zero before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadProgress {
    pub bytes_read: u64,
    pub bytes_total: u64,
}

/// A range's events in log order, in bounded batches (`docs/log-format.md`, "Reading").
///
/// A background task (started by the first read, stopped when the cursor is dropped) lists the
/// range once, then merges its sources — compacted parts read in pieces with ranged GETs,
/// uncompacted segment slices fetched as the merge reaches them, format-1 hours — and feeds a
/// bounded channel, so S3 round trips and decoding overlap with the caller's work. What it has
/// fetched and decoded and the caller has not been given yet stays within about the reader's
/// memory budget ([`LogReader::with_memory_budget`]), whatever one day holds.
#[derive(Debug)]
pub struct EventCursor {
    /// What the background task needs; taken when it starts.
    start: Option<(LogReader, String)>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    shared: Arc<merge::Shared>,
    batches: Option<tokio::sync::mpsc::Receiver<Result<merge::Batch>>>,
    /// A batch received by [`next_hour`](Self::next_hour) that starts the next hour.
    peeked: Option<merge::Batch>,
    /// The time of the last record returned.
    returned: Option<DateTime<Utc>>,
    done: bool,
    _task: Option<merge::Task<()>>,
}

impl EventCursor {
    /// The next records of the range in log order (time, then `event_id`), deduplicated: at
    /// most [`BATCH_RECORDS`] records and an eighth of the memory budget, never two UTC hours
    /// in one batch. `None` when the range is done.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<LogRecord>>> {
        let Some(batch) = self.receive().await? else {
            return Ok(None);
        };
        Ok(Some(self.hand_out(batch)))
    }

    /// How much of the range's data has been read: `bytes_total` is every byte the range reads
    /// (compacted part chunks as listed, segment slices as their headers give them, format-1
    /// objects as listed), known once the cursor has listed (format-1 days add theirs as they
    /// are listed); `bytes_read` reaches it when the range is read to its end.
    pub fn read_progress(&self) -> ReadProgress {
        let (bytes_read, bytes_total) = self.shared.progress();
        ReadProgress {
            bytes_read,
            bytes_total,
        }
    }

    /// The most bytes the cursor has held at once, fetched or decoded and not yet returned
    /// (decoded records at an estimate of their memory), for tests and benchmarks.
    pub fn peak_held_bytes(&self) -> usize {
        self.shared.peak()
    }

    /// Bytes held now (all returned at the end of a range read whole).
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.shared.held()
    }

    /// The next hour that has events in the range, ordered; `None` when the range is done.
    /// (Kept for tools and tests; an hour is not bounded, prefer [`next_batch`](Self::next_batch).)
    pub async fn next_hour(&mut self) -> Result<Option<Vec<LogRecord>>> {
        let Some(first) = self.receive().await? else {
            return Ok(None);
        };
        let hour = first.records.first().map(|r| floor_hour(r.sort_key().0));
        let mut records = self.hand_out(first);
        while let Some(batch) = self.receive().await? {
            if batch.records.first().map(|r| floor_hour(r.sort_key().0)) != hour {
                self.peeked = Some(batch);
                break;
            }
            records.extend(self.hand_out(batch));
        }
        Ok(Some(records))
    }

    /// The time of the last record returned: the range's start before any, its end once done
    /// (for progress by time).
    pub fn position(&self) -> DateTime<Utc> {
        if self.done && self.peeked.is_none() {
            return self.to;
        }
        self.returned.unwrap_or(self.from).clamp(self.from, self.to)
    }

    /// The next batch from the background task (started on the first call).
    async fn receive(&mut self) -> Result<Option<merge::Batch>> {
        if let Some(batch) = self.peeked.take() {
            return Ok(Some(batch));
        }
        if self.done {
            return Ok(None);
        }
        if self.batches.is_none() {
            self.start();
        }
        let Some(batches) = self.batches.as_mut() else {
            self.done = true;
            return Ok(None);
        };
        match batches.recv().await {
            Some(Ok(batch)) => {
                self.shared.received(batch.bytes);
                Ok(Some(batch))
            }
            Some(Err(error)) => {
                self.done = true;
                Err(error)
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }

    /// Returns a batch to the caller (its memory left the cursor's account when it was
    /// received, [`merge::Shared::received`]).
    fn hand_out(&mut self, batch: merge::Batch) -> Vec<LogRecord> {
        if let Some(last) = batch.records.last() {
            self.returned = Some(last.sort_key().0);
        }
        batch.records
    }

    fn start(&mut self) {
        let Some((reader, company_id)) = self.start.take() else {
            return;
        };
        let (tx, rx) = merge::channel();
        let shared = Arc::clone(&self.shared);
        let (from, to) = (self.from, self.to);
        let task = merge::Task::spawn(async move {
            let ctx = Arc::new(merge::Ctx {
                store: Arc::clone(&reader.store),
                company_id,
                from,
                to,
                position: reader.position.clone(),
                piece: shared.piece(),
                shared,
                concurrency: reader.concurrency,
            });
            let result = async {
                // Format 1 runs its own pipeline when the company has a format-1 log (one
                // LIST tells).
                let v1 = if reader.has_v1(&ctx.company_id).await? {
                    Some(v1::V1Source::start(Arc::clone(&ctx)))
                } else {
                    None
                };
                merge::produce(ctx, v1, &tx).await
            }
            .await;
            if let Err(error) = result {
                // The cursor may be gone (a cancelled export): nothing more to do then.
                let _ = tx.send(Err(error)).await;
            }
        });
        self.batches = Some(rx);
        self._task = Some(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SourceRange;
    use crate::writer::{PendingRecord, V1Writer as LogWriter};
    use bytes::Bytes;
    use event_model::{Event, Limits, parse_event};
    use serde_json::json;
    use storage::MemoryStore;

    fn post(id: &str, at: &str, owner: &str) -> (Event, serde_json::Value) {
        let value = json!({"event_id": id, "type": "post.created", "occurred_at": at,
            "conversation": {"id": "c", "kind": "team", "owner_company_id": owner},
            "post_id": id, "author_id": "u", "text": format!("text of {id}")});
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        parse_event(
            &serde_json::to_vec(&value).unwrap(),
            &Limits::default(),
            now,
        )
        .unwrap()
    }

    fn source(first: i64, last: i64) -> SourceRange {
        SourceRange {
            topic: "t".into(),
            partition: 0,
            first_offset: first,
            last_offset: last,
        }
    }

    fn batch(events: &[(&str, &str)], first_offset: i64) -> Vec<PendingRecord> {
        events
            .iter()
            .enumerate()
            .map(|(i, (id, at))| {
                let (event, raw) = post(id, at, "acme");
                PendingRecord {
                    offset: first_offset + i as i64,
                    event,
                    raw,
                }
            })
            .collect()
    }

    async fn read_all(reader: &LogReader, from: &str, to: &str) -> Vec<String> {
        let mut cursor = reader.events("acme", from.parse().unwrap(), to.parse().unwrap());
        let mut ids = Vec::new();
        while let Some(hour) = cursor.next_hour().await.unwrap() {
            ids.extend(hour.into_iter().map(|r| r.event.event_id));
        }
        ids
    }

    #[tokio::test]
    async fn a_replayed_overlapping_range_shows_each_event_once_in_order() {
        let store = Arc::new(MemoryStore::new());
        let writer = LogWriter::new(store.clone());
        let events = [
            ("e3", "2026-11-25T10:30:00Z"),
            ("e1", "2026-11-25T09:59:59Z"),
            ("e2", "2026-11-25T10:00:00+00:00"),
            ("e0", "2026-11-25T11:00:00+01:00"), // = 10:00Z, equal to e2
            ("e4", "2026-11-26T00:00:00Z"),
        ];
        let all = batch(&events, 100);
        writer.write(&source(100, 104), &all).await.unwrap();
        // A crash before the commit replays; the replay flushes smaller ranges.
        writer.write(&source(100, 102), &all[..3]).await.unwrap();
        writer.write(&source(103, 104), &all[3..]).await.unwrap();
        // Writing the same range again changes nothing.
        let before = store.list_page("", None, 1000).await.unwrap().objects;
        writer.write(&source(100, 104), &all).await.unwrap();
        assert_eq!(
            store.list_page("", None, 1000).await.unwrap().objects,
            before
        );

        let reader = LogReader::new(store);
        let ids = read_all(&reader, "2026-11-25T00:00:00Z", "2026-11-27T00:00:00Z").await;
        assert_eq!(ids, ["e1", "e0", "e2", "e3", "e4"]);
    }

    #[tokio::test]
    async fn consecutive_ranges_neither_skip_nor_double_equal_timestamps() {
        let store = Arc::new(MemoryStore::new());
        let events = [
            ("a", "2026-11-25T10:00:00Z"),
            ("b", "2026-11-25T10:00:00Z"),
            ("c", "2026-11-25T23:59:59.999999999Z"),
            ("d", "2026-11-26T00:00:00Z"),
            ("e", "2026-11-26T00:00:00Z"),
        ];
        LogWriter::new(store.clone())
            .write(&source(0, 4), &batch(&events, 0))
            .await
            .unwrap();
        let reader = LogReader::new(store);
        let cuts = [
            "2026-11-25T00:00:00Z",
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00:00.000000001Z",
            "2026-11-26T00:00:00Z",
            "2026-11-26T00:30:00Z",
        ];
        let mut seen = Vec::new();
        for pair in cuts.windows(2) {
            seen.extend(read_all(&reader, pair[0], pair[1]).await);
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        assert_eq!(
            read_all(
                &reader,
                "2026-11-25T10:00:00Z",
                "2026-11-25T10:00:00.000000001Z"
            )
            .await,
            ["a", "b"]
        );
        assert!(
            read_all(&reader, "2026-11-25T11:00:00Z", "2026-11-25T11:00:00Z")
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_corrupt_object_is_an_error_not_a_gap() {
        let store = Arc::new(MemoryStore::new());
        LogWriter::new(store.clone())
            .write(&source(0, 0), &batch(&[("a", "2026-11-25T10:00:00Z")], 0))
            .await
            .unwrap();
        let key = store.list_page("", None, 10).await.unwrap().objects[0]
            .key
            .clone();
        let mut bytes = store.get(&key).await.unwrap().to_vec();
        let at = bytes.len() - 5;
        bytes[at] = b'X';
        store.put(&key, Bytes::from(bytes)).await.unwrap();
        let reader = LogReader::new(store);
        let mut cursor = reader.events(
            "acme",
            "2026-11-25T00:00:00Z".parse().unwrap(),
            "2026-11-26T00:00:00Z".parse().unwrap(),
        );
        let error = cursor.next_hour().await.unwrap_err();
        assert!(error.to_string().contains("corrupt"), "{error}");
    }

    #[tokio::test]
    async fn metadata_as_of_an_instant() {
        let store = Arc::new(MemoryStore::new());
        let mk = |id: &str, at: &str, name: &str| {
            let v = json!({"event_id": id, "type": "person.updated", "occurred_at": at,
                "person": {"id": "u1", "company_id": "acme", "name": name, "email": "u1@acme"}});
            let (event, raw) = parse_event(
                &serde_json::to_vec(&v).unwrap(),
                &Limits::default(),
                "2026-12-01T00:00:00Z".parse().unwrap(),
            )
            .unwrap();
            (event, raw)
        };
        let records: Vec<PendingRecord> = [
            mk("m1", "2026-01-01T00:00:00Z", "Old Name"),
            mk("m2", "2026-06-01T00:00:00Z", "New Name"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (event, raw))| PendingRecord {
            offset: i as i64,
            event,
            raw,
        })
        .collect();
        LogWriter::new(store.clone())
            .write(&source(0, 1), &records)
            .await
            .unwrap();
        let reader = LogReader::new(store);
        let before = reader
            .metadata("acme", "2026-05-31T23:59:59Z".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(before.people["u1"].name.as_deref(), Some("Old Name"));
        let after = reader
            .metadata("acme", "2026-06-01T00:00:00Z".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(after.people["u1"].name.as_deref(), Some("New Name"));
        assert!(
            reader
                .metadata("other", after_all())
                .await
                .unwrap()
                .people
                .is_empty()
        );
    }

    fn after_all() -> DateTime<Utc> {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    #[tokio::test]
    async fn a_format_1_object_naming_another_company_is_refused() {
        // Bank's post and person, in bank's objects, copied under acme's prefix (a forged or
        // misplaced object): acme's reads fail naming the object, never return bank's events.
        let store = Arc::new(MemoryStore::new());
        let person = json!({"event_id": "m1", "type": "person.created",
            "occurred_at": "2026-11-25T09:00:00Z",
            "person": {"id": "u1", "company_id": "bank", "name": "Bo", "email": "bo@bank"}});
        let (person, person_raw) = parse_event(
            &serde_json::to_vec(&person).unwrap(),
            &Limits::default(),
            "2026-12-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let (event, raw) = post("b1", "2026-11-25T10:00:00Z", "bank");
        let records = vec![
            PendingRecord {
                offset: 0,
                event: person,
                raw: person_raw,
            },
            PendingRecord {
                offset: 1,
                event,
                raw,
            },
        ];
        LogWriter::new(store.clone())
            .write(&source(0, 1), &records)
            .await
            .unwrap();
        let objects = store.list_page("log/v1/bank/", None, 100).await.unwrap();
        assert_eq!(objects.objects.len(), 2, "{objects:?}");
        for object in objects.objects {
            let bytes = store.get(&object.key).await.unwrap();
            let key = object.key.replacen("log/v1/bank/", "log/v1/acme/", 1);
            store.put(&key, bytes).await.unwrap();
        }
        let reader = LogReader::new(store);
        let mut cursor = reader.events(
            "acme",
            "2026-11-25T00:00:00Z".parse().unwrap(),
            "2026-11-26T00:00:00Z".parse().unwrap(),
        );
        let error = cursor.next_hour().await.unwrap_err().to_string();
        assert!(
            error.contains("log/v1/acme/events/") && error.contains("holds company \"bank\""),
            "{error}"
        );
        let error = reader
            .metadata("acme", after_all())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("log/v1/acme/meta/") && error.contains("holds company \"bank\""),
            "{error}"
        );
    }
}
