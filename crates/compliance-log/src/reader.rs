//! Reads a company's log: events in a range, one UTC hour at a time, deduplicated by `event_id`
//! and ordered by (time, `event_id`); and its metadata.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use event_model::directory::Directory;
use futures::{StreamExt, TryFutureExt, TryStreamExt};
use storage::{ObjectStore, list_all};

use crate::format::{self, LogRecord, floor_hour, hour_of_events_key};
use crate::v2::isolation;
use crate::{LogError, Result};

mod v2;
use crate::v2::pointer::LogPosition;

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
            loader: Some(DayLoader {
                reader: self.clone(),
                company_id: company_id.to_owned(),
                from,
                to,
                next_day: from.date_naive(),
                last_day: (to - Duration::nanoseconds(1)).date_naive(),
            }),
            from,
            to,
            next_day: from.date_naive(),
            pending: VecDeque::new(),
            days: None,
            _prefetch: None,
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
        let v1 = self.v1_meta_events(company_id).await?;
        let snapshots = v2::Snapshot::open_all(self.store.as_ref(), self.position.as_ref()).await?;
        let (base, mut changes) = v2::metadata_all(
            &snapshots,
            self.store.as_ref(),
            company_id,
            as_of,
            self.position.as_ref(),
            v1.is_empty(),
            self.concurrency,
        )
        .await?;
        let mut directory = base.unwrap_or_default();
        changes.extend(v1);
        for record in settle(changes, |r| {
            self.admits(r) && r.event.occurred_at.with_timezone(&Utc) <= as_of
        }) {
            directory.apply(&record.event);
        }
        Ok(directory)
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

/// How many days the cursor reads ahead of the one being returned.
const DAYS_AHEAD: usize = 1;

/// One day's records, by hour: (hour start, records).
type Day = (NaiveDate, Vec<(DateTime<Utc>, Vec<LogRecord>)>);

/// Walks a range one UTC hour at a time, so memory is bounded by a few of the busiest days of
/// one company, not by the range. A background task lists, fetches and decodes the next days
/// (up to [`DAYS_AHEAD`]) while the caller works through the current one, so S3 round trips and
/// decoding overlap with the caller's work; it stops when the cursor is dropped.
#[derive(Debug)]
pub struct EventCursor {
    /// Moved into the prefetch task on the first read.
    loader: Option<DayLoader>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The day after the last one received.
    next_day: NaiveDate,
    /// Hours received, not yet returned.
    pending: VecDeque<(DateTime<Utc>, Vec<LogRecord>)>,
    days: Option<tokio::sync::mpsc::Receiver<Result<Day>>>,
    _prefetch: Option<AbortOnDrop>,
}

/// Aborts the prefetch task when the cursor goes away (a cancelled export).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EventCursor {
    /// The next records of the range in log order (time, then `event_id`), deduplicated; a
    /// batch is bounded (TODO(step 7): today it is an hour), so a caller's memory does not
    /// follow a day's size. `None` when the range is done.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<LogRecord>>> {
        self.next_hour().await
    }

    /// How much of the range's data has been read (TODO(step 7): zero until the reader counts).
    pub fn read_progress(&self) -> ReadProgress {
        ReadProgress::default()
    }

    /// The next hour that has events in the range, ordered; `None` when the range is done.
    pub async fn next_hour(&mut self) -> Result<Option<Vec<LogRecord>>> {
        loop {
            if let Some((_, records)) = self.pending.pop_front() {
                let (from, to) = (self.from, self.to);
                let settled = settle(records, |r| {
                    let at = r.event.occurred_at.with_timezone(&Utc);
                    from <= at && at < to
                });
                if !settled.is_empty() {
                    return Ok(Some(settled));
                }
                continue;
            }
            if self.from >= self.to {
                return Ok(None);
            }
            if self.days.is_none() {
                self.start_prefetch();
            }
            let Some(days) = self.days.as_mut() else {
                return Ok(None);
            };
            match days.recv().await {
                Some(Ok((day, hours))) => {
                    self.next_day = day.succ_opt().unwrap_or(NaiveDate::MAX);
                    self.pending.extend(hours);
                }
                Some(Err(error)) => return Err(error),
                None => {
                    self.next_day = NaiveDate::MAX;
                    return Ok(None);
                }
            }
        }
    }

    fn start_prefetch(&mut self) {
        let Some(loader) = self.loader.take() else {
            return;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(DAYS_AHEAD);
        let task = tokio::spawn(async move {
            if let Err(error) = prefetch(loader, &tx).await {
                // The receiver may be gone (a cancelled export): nothing more to do then.
                let _ = tx.send(Err(error)).await;
            }
        });
        self.days = Some(rx);
        self._prefetch = Some(AbortOnDrop(task));
    }

    /// The start of the hour the cursor will return next, for progress reports.
    pub fn position(&self) -> DateTime<Utc> {
        self.pending
            .front()
            .map(|(hour, _)| *hour)
            .or_else(|| self.next_day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
            .unwrap_or(self.to)
            .clamp(self.from, self.to)
    }
}

/// Lists and fetches a range's days in order.
#[derive(Debug)]
struct DayLoader {
    reader: LogReader,
    company_id: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    next_day: NaiveDate,
    last_day: NaiveDate,
}

/// Reads a range's days from both formats and sends them in order, each day's records inside
/// the reader's position, deduplicated and ordered, by hour. Format 1 runs its own pipeline
/// (below) when the company has a format-1 log (one LIST tells); format 2 reads the headers of
/// the segments not compacted yet once, then day by day the compacted parts (a few days in
/// flight) and the segment slices that may hold the day, so memory stays about a day.
async fn prefetch(loader: DayLoader, tx: &tokio::sync::mpsc::Sender<Result<Day>>) -> Result<()> {
    let reader = loader.reader.clone();
    let store = Arc::clone(&reader.store);
    let (company_id, from, to) = (loader.company_id.clone(), loader.from, loader.to);
    let (first_day, last_day) = (loader.next_day, loader.last_day);

    let (v1_tx, mut v1_rx) = tokio::sync::mpsc::channel(DAYS_AHEAD);
    let _v1_task = if reader.has_v1(&company_id).await? {
        Some(AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = prefetch_v1(loader, &v1_tx).await {
                let _ = v1_tx.send(Err(error)).await;
            }
        })))
    } else {
        drop(v1_tx);
        None
    };

    let snapshots = v2::Snapshot::open_all(store.as_ref(), reader.position.as_ref()).await?;
    let mut slices = Vec::new();
    // Per day, the part keys of each topic (by index in `snapshots`).
    let mut part_days: BTreeMap<NaiveDate, Vec<(usize, Vec<String>)>> = BTreeMap::new();
    for (index, snapshot) in snapshots.iter().enumerate() {
        slices.extend(
            snapshot
                .slices(
                    store.as_ref(),
                    &company_id,
                    from,
                    to,
                    v2::Kind::Content,
                    reader.concurrency,
                )
                .await?,
        );
        for (day, keys) in snapshot
            .part_keys(store.as_ref(), &company_id, first_day, last_day)
            .await?
        {
            part_days.entry(day).or_default().push((index, keys));
        }
    }
    let mut segments = v2::SegmentDays::new(&company_id, v2::Kind::Content, from, to, slices);
    let snapshots = Arc::new(snapshots);
    let mut days = segments.days(first_day, last_day);
    days.extend(part_days.keys().copied());
    // The compacted parts of a few days in flight; the segments' records are taken day by day
    // as each comes up.
    let v2_days = futures::stream::iter(days)
        .map(|day| {
            let keys = part_days.remove(&day).unwrap_or_default();
            let (store, company_id, snapshots) = (
                Arc::clone(&store),
                company_id.clone(),
                Arc::clone(&snapshots),
            );
            async move {
                let mut records = Vec::new();
                for (index, keys) in keys {
                    records.extend(
                        snapshots[index]
                            .day_content(store.as_ref(), &company_id, &keys)
                            .await?,
                    );
                }
                Ok::<_, LogError>((day, records))
            }
        })
        .buffered(V2_DAYS_IN_FLIGHT);
    let mut v2_days = std::pin::pin!(v2_days);
    let mut v1_next: Option<Day> = next_v1(&mut v1_rx).await?;
    let mut v2_next: Option<(NaiveDate, Vec<LogRecord>)> = v2_days.try_next().await?;
    loop {
        let day = match (&v1_next, &v2_next) {
            (None, None) => return Ok(()),
            (Some((a, _)), Some((b, _))) => *a.min(b),
            (Some((a, _)), None) => *a,
            (None, Some((b, _))) => *b,
        };
        let mut records = Vec::new();
        if v1_next.as_ref().is_some_and(|(d, _)| *d == day)
            && let Some((_, hours)) = v1_next.take()
        {
            records.extend(hours.into_iter().flat_map(|(_, r)| r));
            v1_next = next_v1(&mut v1_rx).await?;
        }
        if v2_next.as_ref().is_some_and(|(d, _)| *d == day)
            && let Some((_, more)) = v2_next.take()
        {
            records.extend(more);
            records.extend(
                segments
                    .take(store.as_ref(), day, reader.concurrency)
                    .await?,
            );
            v2_next = v2_days.try_next().await?;
        }
        let settled = settle(records, |r| {
            let at = r.event.occurred_at.with_timezone(&Utc);
            reader.admits(r) && from <= at && at < to
        });
        let mut hours: Vec<(DateTime<Utc>, Vec<LogRecord>)> = Vec::new();
        for record in settled {
            let hour = floor_hour(record.event.occurred_at.with_timezone(&Utc));
            match hours.last_mut() {
                Some((last, pending)) if *last == hour => pending.push(record),
                _ => hours.push((hour, vec![record])),
            }
        }
        if tx.send(Ok((day, hours))).await.is_err() {
            return Ok(());
        }
    }
}

/// How many format-2 days are fetched at once.
const V2_DAYS_IN_FLIGHT: usize = 4;

async fn next_v1(rx: &mut tokio::sync::mpsc::Receiver<Result<Day>>) -> Result<Option<Day>> {
    rx.recv().await.transpose()
}

/// Format 1: lists the range's days in order and fetches their objects through one window of
/// `concurrency` GETs that runs across day boundaries, sending each day when its last object
/// is in. A sparse log (a few small objects per day, as a long all-history export reads) then
/// keeps the window full instead of waiting on each day's LIST and its last GET in turn; the
/// next day's LIST runs while the current day's GETs are in flight. Memory: the day being
/// assembled, up to `concurrency` objects past it, and [`DAYS_AHEAD`] days in the channel.
async fn prefetch_v1(loader: DayLoader, tx: &tokio::sync::mpsc::Sender<Result<Day>>) -> Result<()> {
    let reader = loader.reader.clone();
    let company_id = loader.company_id.clone();
    let keys = futures::stream::try_unfold(loader, |mut loader| async move {
        Ok::<_, crate::LogError>(loader.next_day_keys().await?.map(|day| (day, loader)))
    })
    .map_ok(|(day, wanted)| {
        futures::stream::iter(
            wanted
                .into_iter()
                .map(move |(hour, key)| Ok::<_, crate::LogError>((day, hour, key))),
        )
    })
    .try_flatten();
    let fetched = keys
        .map_ok(|(day, hour, key)| {
            read_object(Arc::clone(&reader.store), key, company_id.clone())
                .map_ok(move |records| (day, hour, records))
        })
        .try_buffered(reader.concurrency);
    let mut fetched = std::pin::pin!(fetched);
    let mut assembling: Option<Day> = None;
    while let Some((day, hour, records)) = fetched.try_next().await? {
        match &mut assembling {
            Some((current, hours)) if *current == day => match hours.last_mut() {
                Some((last, pending)) if *last == hour => pending.extend(records),
                _ => hours.push((hour, records)),
            },
            _ => {
                if let Some(done) = assembling.replace((day, vec![(hour, records)]))
                    && tx.send(Ok(done)).await.is_err()
                {
                    return Ok(());
                }
            }
        }
    }
    if let Some(done) = assembling {
        let _ = tx.send(Ok(done)).await;
    }
    Ok(())
}

impl DayLoader {
    /// The next day with objects in the range and the keys to read from it, by hour; `None`
    /// when there is none.
    async fn next_day_keys(&mut self) -> Result<Option<(NaiveDate, Vec<(DateTime<Utc>, String)>)>> {
        if self.from >= self.to || self.next_day > self.last_day {
            return Ok(None);
        }
        // Skip days with nothing logged at one LIST each, so an all-history read costs in
        // proportion to the days that have events, not to the calendar.
        let Some(day) = self.next_logged_day().await? else {
            return Ok(None);
        };
        if day > self.last_day {
            return Ok(None);
        }
        self.next_day = day.succ_opt().unwrap_or(NaiveDate::MAX);
        Ok(Some((day, self.day_keys(day).await?)))
    }

    /// The first day on or after `next_day` that has any object.
    async fn next_logged_day(&self) -> Result<Option<NaiveDate>> {
        let prefix = format::events_prefix(&self.company_id);
        // Keys of day D start with "<prefix>D/", which sorts right after "<prefix>D".
        let start_after = format!("{prefix}{}", self.next_day.format("%Y-%m-%d"));
        let page = self
            .reader
            .store
            .list_page(&prefix, Some(&start_after), 1)
            .await?;
        Ok(page.objects.first().and_then(|o| {
            let day = o.key.strip_prefix(&prefix)?.split('/').next()?;
            NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
        }))
    }

    /// Lists one day: the keys of its objects in the range's hours, in key (so hour) order.
    async fn day_keys(&self, day: NaiveDate) -> Result<Vec<(DateTime<Utc>, String)>> {
        let prefix = format::events_day_prefix(&self.company_id, day);
        let objects = list_all(self.reader.store.as_ref(), &prefix).await?;
        let Some(midnight) = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) else {
            return Ok(Vec::new());
        };
        let (first_hour, to) = (floor_hour(self.from), self.to);
        let mut wanted: Vec<(DateTime<Utc>, String)> = Vec::new();
        for object in objects {
            let Some(hour) = hour_of_events_key(&object.key) else {
                tracing::warn!(key = %object.key, "ignoring an object outside the log layout");
                continue;
            };
            let start = midnight + Duration::hours(i64::from(hour));
            if start >= first_hour && start < to {
                wanted.push((start, object.key));
            }
        }
        Ok(wanted)
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
}
