//! The event cursor's producer: a background task that lists a range once, then k-way merges
//! its sources in log order — the compacted parts of each closed day (streamed in pieces,
//! `parts`), the slices of segments not compacted yet (fetched when the merge reaches their
//! earliest time), and format-1 hours — drops duplicates and hands bounded batches to the
//! cursor through a bounded channel.
//!
//! Memory: every fetched or decoded byte not yet returned to the cursor's caller is counted in
//! [`Shared`] against the reader's budget, and the producer waits for the caller before it
//! fetches or decodes more than the budget allows (reading ahead stops at three quarters of it,
//! so that what the merge needs next still fits). What it needs at least to make progress is
//! held even past the budget, when no batch is waiting for the caller (nothing the caller could
//! free): per open part a piece being decoded, a group of decoded records and a piece fetched
//! ahead, the batch being built, and the segment slices that meet the merge's current
//! time (each is small for live traffic — a flush of seconds — but a backfill's slices that
//! span a whole day are held whole).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Days, NaiveDate, Utc};
use storage::{ErrorKind, ObjectStore, StorageError};
use tokio::sync::{Notify, mpsc};

use super::parts::{DayParts, PartStream, open_day};
use super::v1::V1Source;
use super::v2::{self, SliceRef};
use crate::format::floor_hour;
use crate::v2::pointer::LogPosition;
use crate::{LogError, LogRecord, Result};

/// At most this many records in a batch.
pub const BATCH_RECORDS: usize = 4096;
/// Batches waiting in the channel at most (the budget usually binds first).
const QUEUED_BATCHES: usize = 8;
/// Days whose parts are opened ahead of the merge (their first piece fetched), so a sparse
/// log's one-GET days overlap.
const DAYS_AHEAD: usize = 4;

/// The estimated memory of a decoded record: its raw text, about as much again for the typed
/// event's fields, and the struct itself.
pub(super) fn weight(record: &LogRecord) -> usize {
    2 * record.raw.get().len() + std::mem::size_of::<LogRecord>()
}

/// The merge order: (time, `event_id`), then source position, so that of the copies of one
/// event the first is the one to keep.
pub(super) fn merge_key(record: &LogRecord) -> (DateTime<Utc>, &str, (u32, i32, i64)) {
    (
        record.event.occurred_at.with_timezone(&Utc),
        record.event.event_id.as_str(),
        record.source_position(),
    )
}

/// What the producer and the cursor share: the budget's account and the read progress.
#[derive(Debug)]
pub(super) struct Shared {
    budget: usize,
    /// Bytes fetched or decoded, not yet returned to the caller.
    held: AtomicUsize,
    /// The most `held` has been.
    peak: AtomicUsize,
    /// Batches sent, not yet received by the cursor.
    queued: AtomicUsize,
    /// Signalled when the cursor frees memory or takes a batch.
    room: Notify,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
}

impl Shared {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            room: Notify::new(),
            bytes_read: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
        }
    }

    /// Piece size for ranged reads of compacted parts.
    pub fn piece(&self) -> u64 {
        (self.budget as u64 / 8).clamp(64 << 10, 16 << 20)
    }

    /// Most estimated bytes in a batch.
    pub fn batch_bytes(&self) -> usize {
        self.budget / 8
    }

    pub fn hold(&self, bytes: usize) {
        let now = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Holds `bytes` if `held` stays at most `limit` (checked and added at once, so tasks
    /// holding concurrently never pass the limit together).
    fn try_hold(&self, bytes: usize, limit: usize) -> bool {
        let fits = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held + bytes <= limit).then_some(held + bytes)
            });
        match fits {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Holds `bytes` fetched ahead of the merge if they fit in three quarters of the budget:
    /// the last quarter stays for what the merge needs next (decoding, the piece it waits for),
    /// so reading ahead never makes it wait.
    pub fn try_hold_ahead(&self, bytes: usize) -> bool {
        self.try_hold(bytes, self.budget - self.budget / 4)
    }

    /// Holds `bytes` the merge needs to go on (a piece it waits for, a group of records to
    /// decode) once they fit in the budget — or at once when no batch is waiting for the
    /// caller: then everything held is the merge's own work in progress, nothing the caller
    /// could free, and waiting would never end.
    pub async fn hold_needed(&self, bytes: usize) {
        self.wait_room(bytes, true).await;
    }

    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            let before = self.held.fetch_sub(bytes, Ordering::Relaxed);
            debug_assert!(before >= bytes, "released {bytes} of {before} held bytes");
            self.room.notify_waiters();
        }
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more fit for reading ahead (see [`try_hold_ahead`](Self::try_hold_ahead)).
    pub fn has_room(&self, bytes: usize) -> bool {
        self.held() + bytes <= self.budget - self.budget / 4
    }

    /// Waits until `bytes` more fit in the budget, or until no batch is waiting for the caller
    /// (as [`hold_needed`](Self::hold_needed), without holding them).
    pub async fn room_for(&self, bytes: usize) {
        self.wait_room(bytes, false).await;
    }

    async fn wait_room(&self, bytes: usize, hold: bool) {
        loop {
            // Several tasks may wait at once (the merge and the days it opens ahead): every
            // release wakes them all, and each registers before it checks, so a release
            // between the check and the wait is never lost.
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let fits = if hold {
                self.try_hold(bytes, self.budget)
            } else {
                self.held() + bytes <= self.budget
            };
            if fits {
                return;
            }
            if self.queued.load(Ordering::Acquire) == 0 {
                if hold {
                    self.hold(bytes);
                }
                return;
            }
            notified.await;
        }
    }

    fn sent(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// The cursor took a batch of `bytes` off the channel to hand it out: its memory leaves
    /// the account *before* the queue counts one less. A producer waiting for room wakes on
    /// this and goes on past the budget when nothing is queued; releasing afterwards let it
    /// see an empty queue while the batch was still counted, and overshoot the budget by up to
    /// a batch (seen as an intermittent failure of the busy-day budget test on two cores).
    pub fn received(&self, bytes: usize) {
        if bytes > 0 {
            let before = self.held.fetch_sub(bytes, Ordering::Relaxed);
            debug_assert!(before >= bytes, "released {bytes} of {before} held bytes");
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    pub fn add_read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_total(&self, bytes: u64) {
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Replaces an expected share of the total by what was really read.
    pub fn correct_total(&self, expected: u64, actual: u64) {
        if actual >= expected {
            self.add_total(actual - expected);
        } else {
            self.bytes_total
                .fetch_sub(expected - actual, Ordering::Relaxed);
        }
    }

    pub fn progress(&self) -> (u64, u64) {
        (
            self.bytes_read.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
        )
    }
}

/// A spawned task, aborted when dropped (a cancelled read).
#[derive(Debug)]
pub(super) struct Task<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    pub fn spawn(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(future))
    }
}

impl<T> Task<Result<T>> {
    /// Its result; a panic in the task resumes here.
    pub async fn join(mut self) -> Result<T> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(LogError::Storage(StorageError::new(
                ErrorKind::Other,
                "read",
                "",
                format!("a read task stopped: {error}"),
            ))),
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What every source of one read shares.
#[derive(Debug)]
pub(super) struct Ctx {
    pub store: Arc<dyn ObjectStore>,
    pub company_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub position: Option<LogPosition>,
    pub shared: Arc<Shared>,
    pub piece: u64,
    pub concurrency: usize,
}

impl Ctx {
    /// Whether a record is inside the range and the reader's position.
    pub fn keeps(&self, record: &LogRecord) -> bool {
        let at = record.event.occurred_at.with_timezone(&Utc);
        self.from <= at && at < self.to && self.position.as_ref().is_none_or(|p| p.admits(record))
    }
}

/// A batch for the cursor and its estimated bytes, held until the cursor returns it.
#[derive(Debug)]
pub(super) struct Batch {
    pub records: Vec<LogRecord>,
    pub bytes: usize,
}

/// The channel the producer feeds.
pub(super) fn channel() -> (mpsc::Sender<Result<Batch>>, mpsc::Receiver<Result<Batch>>) {
    mpsc::channel(QUEUED_BATCHES)
}

/// Lists the range and merges it into batches for `tx`, until the range is done or the cursor
/// is gone.
pub(super) async fn produce(
    ctx: Arc<Ctx>,
    v1: Option<V1Source>,
    tx: &mpsc::Sender<Result<Batch>>,
) -> Result<()> {
    let (days, slices) = list_v2(&ctx).await?;
    let mut merge = Merge {
        ctx: Arc::clone(&ctx),
        days,
        opening: VecDeque::new(),
        slices,
        fetching: VecDeque::new(),
        parts: Vec::new(),
        pool: VecDeque::new(),
        v1,
        batch: Vec::new(),
        batch_bytes: 0,
        last: None,
        frontier: ctx.from,
    };
    merge.run(tx).await
}

/// The range's format-2 sources: the compacted parts by day and the uncompacted slices by
/// earliest time, their bytes added to the total.
async fn list_v2(ctx: &Ctx) -> Result<(VecDeque<DayParts>, VecDeque<SliceRef>)> {
    let store = ctx.store.as_ref();
    let first_day = ctx.from.date_naive();
    let last_day = (ctx.to - chrono::Duration::nanoseconds(1)).date_naive();
    let snapshots = v2::Snapshot::open_all(store, ctx.position.as_ref()).await?;
    let mut slices = Vec::new();
    let mut days: Vec<DayParts> = Vec::new();
    for snapshot in &snapshots {
        slices.extend(
            snapshot
                .slices(
                    store,
                    &ctx.company_id,
                    ctx.from,
                    ctx.to,
                    v2::Kind::Content,
                    ctx.concurrency,
                )
                .await?,
        );
        let Some(head) = snapshot.head_ref() else {
            continue;
        };
        for (day, objects) in snapshot
            .part_keys(store, &ctx.company_id, first_day, last_day)
            .await?
        {
            days.push(DayParts::new(day, &head, &objects));
        }
    }
    days.sort_by_key(|d| d.day);
    slices.sort_by_key(SliceRef::min_time);
    let total = days.iter().map(DayParts::expected_bytes).sum::<u64>()
        + slices.iter().map(SliceRef::len).sum::<u64>();
    ctx.shared.add_total(total);
    Ok((days.into(), slices.into()))
}

/// The merge's state: sources not reached yet, sources being read, the batch being built.
struct Merge {
    ctx: Arc<Ctx>,
    /// Days whose parts are not opened yet.
    days: VecDeque<DayParts>,
    /// Days being opened ahead, in order.
    opening: VecDeque<(NaiveDate, Task<Result<Vec<PartStream>>>)>,
    /// Slices not fetched yet, by earliest time.
    slices: VecDeque<SliceRef>,
    /// Slices being fetched ahead, in order.
    fetching: VecDeque<SliceFetch>,
    /// Parts being read.
    parts: Vec<PartStream>,
    /// The records of the slices reached, in merge order.
    pool: VecDeque<LogRecord>,
    v1: Option<V1Source>,
    batch: Vec<LogRecord>,
    batch_bytes: usize,
    /// The (time, `event_id`) of the last record sent, to drop its later copies (while the
    /// batch is not empty, its last record tells).
    last: Option<(DateTime<Utc>, String)>,
    /// The time the merge has reached.
    frontier: DateTime<Utc>,
}

/// A slice being fetched: its earliest time and the bytes it holds until decoded.
struct SliceFetch {
    at: DateTime<Utc>,
    held: usize,
    task: Task<Result<Vec<LogRecord>>>,
}

/// Which source holds the next record.
#[derive(Clone, Copy)]
enum Source {
    Part(usize),
    Pool,
    V1,
}

impl Merge {
    async fn run(&mut self, tx: &mpsc::Sender<Result<Batch>>) -> Result<()> {
        self.look_ahead();
        loop {
            for part in &mut self.parts {
                part.fill().await?;
            }
            self.parts.retain(|p| !p.is_finished());
            if let Some(v1) = &mut self.v1 {
                v1.fill(&self.ctx).await?;
            }
            let next = self.next_source();
            let head_time = next
                .and_then(|from| self.head(from))
                .map(|r| merge_key(r).0);
            // Sources that may hold a record at or before the head must be read first.
            if let Some(start) = self.next_start()
                && head_time.is_none_or(|at| start <= at)
            {
                self.reach(head_time.unwrap_or(start)).await?;
                self.look_ahead();
                continue;
            }
            let Some(from) = next else {
                break;
            };
            let record = match from {
                Source::Part(i) => self.parts[i].pop(),
                Source::Pool => self.pool.pop_front(),
                Source::V1 => self.v1.as_mut().and_then(V1Source::pop),
            };
            if let Some(record) = record
                && !self.emit(record, tx).await
            {
                return Ok(());
            }
        }
        if !self.batch.is_empty() {
            self.send(tx).await;
        }
        Ok(())
    }

    fn head(&self, from: Source) -> Option<&LogRecord> {
        match from {
            Source::Part(i) => self.parts[i].head(),
            Source::Pool => self.pool.front(),
            Source::V1 => self.v1.as_ref().and_then(V1Source::head),
        }
    }

    /// The source whose head comes first in merge order.
    fn next_source(&self) -> Option<Source> {
        let mut best: Option<(Source, &LogRecord)> = None;
        let sources = (0..self.parts.len())
            .map(Source::Part)
            .chain([Source::Pool, Source::V1]);
        for from in sources {
            if let Some(head) = self.head(from)
                && best.is_none_or(|(_, b)| merge_key(head) < merge_key(b))
            {
                best = Some((from, head));
            }
        }
        best.map(|(from, _)| from)
    }

    /// The earliest time a source not reached yet may hold.
    fn next_start(&self) -> Option<DateTime<Utc>> {
        let day = self
            .opening
            .front()
            .map(|(day, _)| day_start(*day))
            .or_else(|| self.days.front().map(DayParts::start));
        let slice = self
            .fetching
            .front()
            .map(|f| f.at)
            .or_else(|| self.slices.front().map(SliceRef::min_time));
        match (day, slice) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Opens every source that may hold a record at or before `until`.
    async fn reach(&mut self, until: DateTime<Utc>) -> Result<()> {
        loop {
            let streams = if let Some((day, _)) = self.opening.front()
                && day_start(*day) <= until
            {
                match self.opening.pop_front() {
                    Some((_, task)) => task.join().await?,
                    None => continue,
                }
            } else if let Some(day) = self.days.front()
                && day.start() <= until
            {
                match self.days.pop_front() {
                    Some(day) => open_day(Arc::clone(&self.ctx), day).await?,
                    None => continue,
                }
            } else {
                break;
            };
            for mut stream in streams {
                stream.activate();
                self.parts.push(stream);
            }
        }
        let mut reached = Vec::new();
        loop {
            if self.fetching.front().is_some_and(|f| f.at <= until) {
                if let Some(fetch) = self.fetching.pop_front() {
                    let records = fetch.task.join().await;
                    self.ctx.shared.release(fetch.held);
                    reached.extend(self.admit_slice(records?));
                }
                while self.fetching.len() < self.ctx.concurrency
                    && self.slices.front().is_some_and(|s| s.min_time() <= until)
                {
                    self.fetch_slice();
                }
            } else if self.slices.front().is_some_and(|s| s.min_time() <= until) {
                if let Some(slice) = self.slices.front() {
                    self.ctx.shared.room_for(slice.len() as usize).await;
                }
                // Fetch it (and what else is due, in parallel) through the window.
                self.fetch_slice();
                while self.fetching.len() < self.ctx.concurrency
                    && self.slices.front().is_some_and(|s| s.min_time() <= until)
                {
                    self.fetch_slice();
                }
            } else {
                break;
            }
        }
        if !reached.is_empty() {
            // Both runs are sorted: the sort merges them in linear time.
            let mut pool: Vec<LogRecord> = self.pool.drain(..).collect();
            reached.sort_by(|a, b| merge_key(a).cmp(&merge_key(b)));
            pool.extend(reached);
            pool.sort_by(|a, b| merge_key(a).cmp(&merge_key(b)));
            self.pool = pool.into();
        }
        Ok(())
    }

    /// A fetched slice's records inside the reader's position, their weights held.
    fn admit_slice(&self, records: Vec<LogRecord>) -> Vec<LogRecord> {
        let kept: Vec<LogRecord> = records.into_iter().filter(|r| self.ctx.keeps(r)).collect();
        self.ctx.shared.hold(kept.iter().map(weight).sum());
        kept
    }

    /// Starts fetching the next slice, holding its bytes until it is decoded.
    fn fetch_slice(&mut self) {
        let Some(slice) = self.slices.pop_front() else {
            return;
        };
        let held = slice.len() as usize;
        self.ctx.shared.hold(held);
        let ctx = Arc::clone(&self.ctx);
        let at = slice.min_time();
        let task = Task::spawn(async move {
            let records = slice
                .read(ctx.store.as_ref(), v2::Kind::Content, ctx.from, ctx.to)
                .await?;
            ctx.shared.add_read(slice.len());
            Ok(records)
        });
        self.fetching.push_back(SliceFetch { at, held, task });
    }

    /// Starts reads the merge will soon need, while the budget has room: the slices of the
    /// day it is in (a window of `concurrency`), and the next days' parts.
    fn look_ahead(&mut self) {
        let day_end = self
            .frontier
            .date_naive()
            .checked_add_days(Days::new(1))
            .map_or(DateTime::<Utc>::MAX_UTC, day_start);
        while self.fetching.len() < self.ctx.concurrency
            && self.slices.front().is_some_and(|s| {
                s.min_time() < day_end && self.ctx.shared.has_room(s.len() as usize)
            })
        {
            self.fetch_slice();
        }
        while self.opening.len() < DAYS_AHEAD
            && !self.days.is_empty()
            && self.ctx.shared.has_room(self.ctx.piece as usize)
        {
            if let Some(day) = self.days.pop_front() {
                let date = day.day;
                let task = Task::spawn(open_day(Arc::clone(&self.ctx), day));
                self.opening.push_back((date, task));
            }
        }
    }

    /// Adds a record to the batch unless it is a later copy of the last one (equal time and
    /// `event_id`: the merge order puts the copy with the smallest source position first; one
    /// `event_id` at two times is two events, both kept — `docs/log-format.md`, "Reading");
    /// sends the batch first when it is full or the record starts another hour. `false` when
    /// the cursor is gone.
    async fn emit(&mut self, record: LogRecord, tx: &mpsc::Sender<Result<Batch>>) -> bool {
        let at = record.event.occurred_at.with_timezone(&Utc);
        let bytes = weight(&record);
        let copy = match self.batch.last() {
            Some(last) => last.sort_key() == record.sort_key(),
            None => self
                .last
                .as_ref()
                .is_some_and(|(t, id)| *t == at && *id == record.event.event_id),
        };
        if copy {
            self.ctx.shared.release(bytes);
            return true;
        }
        self.frontier = at;
        if let Some(first) = self.batch.first()
            && (self.batch.len() >= BATCH_RECORDS
                || self.batch_bytes + bytes > self.ctx.shared.batch_bytes()
                || floor_hour(first.sort_key().0) != floor_hour(at))
            && !self.send(tx).await
        {
            return false;
        }
        self.batch.push(record);
        self.batch_bytes += bytes;
        true
    }

    /// Sends the batch; `false` when the cursor is gone.
    async fn send(&mut self, tx: &mpsc::Sender<Result<Batch>>) -> bool {
        self.last = self
            .batch
            .last()
            .map(|r| (r.sort_key().0, r.event.event_id.clone()));
        let batch = Batch {
            records: std::mem::take(&mut self.batch),
            bytes: std::mem::take(&mut self.batch_bytes),
        };
        self.ctx.shared.sent();
        let sent = tx.send(Ok(batch)).await.is_ok();
        self.look_ahead();
        sent
    }
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0)
        .map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// The merge and the days it opens ahead may all wait for room at once: one batch taken
    /// and its memory freed must let every one of them go on (a single wake-up left the merge
    /// waiting for good while the cursor waited for its next batch).
    #[tokio::test]
    async fn every_task_waiting_for_room_goes_on_when_memory_is_freed() {
        let shared = Arc::new(Shared::new(1 << 20));
        shared.hold(1 << 20);
        shared.sent();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { shared.room_for(64 << 10).await })
            })
            .collect();
        // Let every waiter register before the cursor takes the batch and frees its memory.
        tokio::task::yield_now().await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        shared.received(1 << 20);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("a task waiting for room was never woken")
                .unwrap();
        }
    }

    /// A producer woken because the cursor took the last queued batch must find that batch's
    /// memory already released, or it goes on past the budget with the batch still counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producer_woken_by_an_empty_queue_never_sees_the_taken_batch_counted() {
        for _ in 0..200 {
            let shared = Arc::new(Shared::new(1 << 20));
            shared.hold(1 << 20);
            shared.sent();
            let waiter = {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    shared.room_for(64 << 10).await;
                    shared.held()
                })
            };
            tokio::task::yield_now().await;
            shared.received(1 << 20);
            let held = tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("the producer was never woken")
                .unwrap();
            assert_eq!(
                held, 0,
                "the taken batch was still counted when the producer went on"
            );
        }
    }
}
