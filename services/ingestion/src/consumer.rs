//! The consumer loop: Kafka → validation → per-partition buffers → log segments → offsets.
//!
//! Offsets are stored (and then committed by librdkafka's auto-commit) only after everything
//! before them is durable, in order: `enable.auto.offset.store=false`, and a partition's offset
//! is stored only after its flushed range's dead letters are delivered and its segment and
//! watermark pointer are written (`flusher.rs`). A crash at any point replays from the last
//! committed offset; the writer drops what is below the published durable offset (dead letters
//! too), and a segment written again under its name has the same bytes.
//!
//! **Each assigned partition's log is opened before its first flush**: its epoch is decided
//! from the log and Kafka (`compliance_log::lineage`). Messages are buffered meanwhile but not
//! flushed; when a new epoch begins (a re-created topic, another cluster), the buffer is dropped
//! and the partition is sought to the epoch's start, whatever offset the group had committed.
//! Idle partitions get their time watermark moved from the lag reader's probes.
//!
//! **Offsets going back while a partition stays assigned** (librdkafka resetting the offset
//! after a truncation by an unclean leader election) are not taken for re-fetches: the buffer
//! is dropped, the log is opened again once the running flush is through (the epoch decided
//! again: "offsets went back", "record differs"), and the partition is sought to the new
//! epoch's start or to the durable offset (`Assigned::admit`).
//!
//! **One partition never holds up another.** Each partition's flush runs on a task of its own
//! (at most one at a time per partition, so its ranges become durable in order) while the loop
//! keeps polling: a partition whose store writes or dead letters keep failing retries on its own,
//! is paused once it has buffered [`Config::flush_max_bytes`](crate::Config) behind its flush,
//! and shows as stalled (metric and `/readyz`) after [`Config::stall_after`](crate::Config);
//! every other partition goes on, and the consumer stays in its group.
//!
//! On revoke, the revoked partitions' flushes are awaited and their buffers flushed and
//! committed inside the rebalance callback, within the drain deadline (shorter than the session
//! timeout), and then forgotten: a revoked partition's writer never writes again. If the
//! assignment was lost (the group already moved on), flushes are cancelled and buffers dropped
//! unwritten for the new owner to replay.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use compliance_log::{LogWriter, PendingRecord};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message, Timestamp};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use telemetry::{CancellationToken, Health};
use tokio::task::JoinHandle;

use crate::Config;
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::flusher::{
    Done, Draining, Flusher, InFlight, Opening, PartitionBuffer, Retrying, SharedLog, lock,
};
use crate::lag::Probes;
use crate::lineage::KafkaLineage;
use crate::metrics::Metrics;

/// How often the loop looks at every partition (finished flushes, due flushes, pauses, stalls).
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(20);

/// An assigned partition.
#[derive(Debug, Default)]
struct Assigned {
    /// The next offset to accept. An earlier one is either a re-fetch (see `refetch_from`) or
    /// a sign that the partition's offsets went back under us ([`Admit::WentBack`]).
    next: Option<i64>,
    paused: bool,
    /// While set, a message in `[refetch_from, next)` is a re-fetch of one already handed to
    /// us: `next` when the partition was last paused (librdkafka resumes a paused partition at
    /// the application's position, never below it). Cleared once a new message arrives after
    /// the resume, so a stale pause cannot hide a later offset reset.
    refetch_from: Option<i64>,
    /// The partition's log must be opened again (its offsets went back) once its running task
    /// and any opening have finished.
    reopen_due: bool,
    /// Messages are dropped until the log is opened again and the seek it asks for is done.
    reopening: bool,
    /// The partition's log, once opened; no flush before.
    log: Option<SharedLog>,
    /// A seek to the start of a new epoch not yet done: messages are dropped until it is.
    seek_to: Option<i64>,
    /// The time of the last probe handed to the idle partition's log.
    last_probe: Option<DateTime<Utc>>,
}

/// What to do with a message, by its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Buffer it (or dead-letter it).
    Take,
    /// Drop it: consumed again from elsewhere, or already buffered.
    Skip,
    /// The partition's offsets went back under us: below `next`, and not a re-fetch.
    WentBack { next: i64 },
}

impl Assigned {
    /// Decides what to do with the message at `offset` and moves `next`.
    ///
    /// Below `next`, only a re-fetch after a pause is expected, and it cannot start below the
    /// position the partition was paused at. Anything else below `next` means the partition's
    /// offsets went back while it stayed assigned (librdkafka reset the offset after a
    /// truncation — an unclean leader election — or the topic was re-created): those are other
    /// messages than the ones we consumed at those offsets, so they must not be dropped as
    /// duplicates, and later offsets must not be written into the same epoch unchecked.
    fn admit(&mut self, offset: i64) -> Admit {
        if self.seek_to.is_some() || self.reopening {
            // Consumed again from where the (re-)opened log says, once the seek is done.
            return Admit::Skip;
        }
        if let Some(next) = self.next.filter(|next| offset < *next) {
            if self.refetch_from.is_some_and(|from| offset >= from) {
                return Admit::Skip; // handed to us before the pause: already buffered
            }
            return Admit::WentBack { next };
        }
        if !self.paused {
            self.refetch_from = None;
        }
        self.next = Some(offset + 1);
        Admit::Take
    }

    /// Marks it paused: a re-fetch may start at `next` once it is resumed.
    fn pause(&mut self) {
        self.paused = true;
        self.refetch_from = self.next;
    }

    /// Forgets the open log and where consumption stood: the log is opened again (its epoch
    /// decided again) once its running task is through, and the partition sought to where
    /// that says.
    fn went_back(&mut self) {
        self.log = None;
        self.next = None;
        self.refetch_from = None;
        self.reopen_due = true;
        self.reopening = true;
    }

    /// Whether its buffer may be flushed now.
    fn writable(&self) -> Option<&SharedLog> {
        self.log.as_ref().filter(|_| self.seek_to.is_none())
    }
}

/// State the consumer loop and the rebalance callback share. They never run at the same time
/// (callbacks run inside `recv`), so the locks are only ever taken briefly and uncontended.
#[derive(Debug, Default)]
struct Shared {
    buffers: Mutex<BTreeMap<i32, PartitionBuffer>>,
    inflight: Mutex<BTreeMap<i32, InFlight>>,
    opening: Mutex<BTreeMap<i32, Opening>>,
    assigned: Mutex<BTreeMap<i32, Assigned>>,
    /// Set once the consumer is being dropped without a drain (the loop's task was cancelled or
    /// panicked, or the runtime is going away): a revoke then must not block on the runtime.
    abandoned: AtomicBool,
}

/// Marks the consumer abandoned when dropped. Declared after the consumer in [`run`], so it is
/// dropped first when the loop's future is dropped midway.
struct AbandonGuard(Arc<Shared>);

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        self.0.abandoned.store(true, Ordering::Release);
    }
}

/// Cancels the returned token after `after`.
fn deadline_in(after: Duration) -> (CancellationToken, JoinHandle<()>) {
    let deadline = CancellationToken::new();
    let timer = deadline.clone();
    let guard = tokio::spawn(async move {
        tokio::time::sleep(after).await;
        timer.cancel();
    });
    (deadline, guard)
}

/// The consumer's context: rebalance handling.
struct IngestContext {
    shared: Arc<Shared>,
    flusher: Flusher,
    runtime: tokio::runtime::Handle,
    drain_deadline: Duration,
}

impl ClientContext for IngestContext {}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = revoked
            .elements_for_topic(&self.flusher.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let mut draining = take_partitions(&self.shared, &partitions);
        let abandoned = self.shared.abandoned.load(Ordering::Acquire);
        if consumer.assignment_lost() || abandoned {
            // Lost: the group moved on. Abandoned: nobody can drive a drain any more. Either
            // way, what is not committed is replayed by the next owner.
            let dropped = give_up(&mut draining, &self.flusher.metrics);
            let mut retrying = lock(&self.flusher.retrying);
            for p in &partitions {
                retrying.remove(p);
            }
            if abandoned && draining.values().all(|d| d.is_idle()) {
                return; // the normal close, after the drain
            }
            tracing::warn!(
                ?partitions,
                dropped,
                abandoned,
                "revoked without a drain (assignment lost, or the consumer abandoned); the next \
                 owner replays what was not committed"
            );
            return;
        }
        if draining.values().all(|d| d.is_idle()) {
            return;
        }
        let flusher = self.flusher.clone();
        let drain_deadline = self.drain_deadline;
        // The callback runs inside `recv` on a runtime worker; `block_in_place` lets the other
        // workers drive the S3 requests while this one waits (needs the multi-thread runtime).
        let stored = tokio::task::block_in_place(|| {
            self.runtime.block_on(async {
                let (deadline, guard) = deadline_in(drain_deadline);
                let stored = flusher.drain_all(draining, &deadline).await;
                guard.abort();
                stored
            })
        });
        {
            let mut retrying = lock(&self.flusher.retrying);
            for p in &partitions {
                retrying.remove(p);
            }
        }
        store_offsets(consumer, &self.flusher.topic, &stored);
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::warn!(%error, "commit on revoke failed; the next owner may replay (safely)");
        }
        tracing::info!(
            ?partitions,
            flushed = stored.len(),
            "partitions revoked after draining"
        );
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let partitions: Vec<i32> = assigned
                .elements_for_topic(&self.flusher.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            {
                let mut state = lock(&self.shared.assigned);
                let mut opening = lock(&self.shared.opening);
                for p in &partitions {
                    state.entry(*p).or_default();
                    // Its log is opened (the epoch decided) before anything is flushed.
                    let stop = CancellationToken::new();
                    let task = self.runtime.spawn({
                        let (flusher, stop, partition) = (self.flusher.clone(), stop.clone(), *p);
                        async move { flusher.open(partition, &stop).await }
                    });
                    if let Some(stale) = opening.insert(*p, Opening { stop, task }) {
                        stale.stop.cancel();
                        stale.task.abort();
                    }
                }
            }
            // librdkafka keeps an application's pause across a revoke and a new assignment of
            // the same partition; our state starts unpaused, so make the consumer agree.
            let mut list = TopicPartitionList::new();
            for p in &partitions {
                list.add_partition(&self.flusher.topic, *p);
            }
            if !partitions.is_empty()
                && let Err(error) = consumer.resume(&list)
            {
                tracing::warn!(?partitions, %error, "cannot resume newly assigned partitions");
            }
            tracing::info!(?partitions, "partitions assigned");
        }
    }
}

/// Takes everything in progress for `partitions` out of the shared state: they are no longer
/// assigned, and their writers must never write again once drained.
fn take_partitions(shared: &Shared, partitions: &[i32]) -> BTreeMap<i32, Draining> {
    let mut assigned = lock(&shared.assigned);
    let mut buffers = lock(&shared.buffers);
    let mut inflight = lock(&shared.inflight);
    let mut opening = lock(&shared.opening);
    partitions
        .iter()
        .map(|p| {
            let draining = Draining {
                opening: opening.remove(p),
                inflight: inflight.remove(p),
                log: assigned.remove(p).and_then(|a| a.log),
                buffer: buffers.remove(p),
            };
            (*p, draining)
        })
        .collect()
}

/// Gives up partitions without a drain: cancels their tasks and drops their buffers. Returns
/// how many buffered events were dropped.
fn give_up(draining: &mut BTreeMap<i32, Draining>, metrics: &Metrics) -> usize {
    let mut dropped = 0;
    for part in draining.values_mut() {
        if let Some(flight) = &part.inflight {
            flight.stop.cancel();
            flight.task.abort();
        }
        if let Some(opening) = &part.opening {
            opening.stop.cancel();
            opening.task.abort();
        }
        if let Some(buffer) = part.buffer.take() {
            dropped += buffer.records.len();
        }
    }
    metrics.buffered_events.sub(dropped as i64);
    dropped
}

fn store_offsets<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    topic: &str,
    offsets: &[(i32, i64)],
) {
    // `rd_kafka_offsets_store` takes the offset to commit (the next to consume) as given.
    // Beware `Consumer::store_offset`: it wraps the legacy `rd_kafka_offset_store`, which adds
    // one itself, so passing it the next offset would skip a message on restart.
    let mut list = TopicPartitionList::new();
    for (partition, next) in offsets {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::warn!(partition, offset = next, %error, "cannot list offset to store");
        }
    }
    if list.count() == 0 {
        return;
    }
    if let Err(error) = consumer.store_offsets(&list) {
        // Happens when a partition was taken away meanwhile; its new owner replays.
        tracing::warn!(?offsets, %error, "cannot store offsets");
    }
}

/// The services a consumer loop needs, built by the caller.
#[derive(Debug)]
pub struct Parts {
    pub writer: LogWriter,
    pub lineage: KafkaLineage,
    pub dead_letters: DeadLetters,
    pub metrics: Metrics,
    pub health: Health,
    /// The lag reader's time-watermark probes.
    pub probes: Probes,
}

/// Consumes until `shutdown` fires, then drains and commits within the drain deadline.
pub async fn run(config: &Config, parts: Parts, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Parts {
        writer,
        lineage,
        dead_letters,
        metrics,
        health,
        probes,
    } = parts;
    let shared = Arc::new(Shared::default());
    let retrying: Retrying = Arc::default();
    let flusher = Flusher {
        writer,
        lineage,
        dead_letters,
        topic: config.events_topic.clone(),
        metrics: metrics.clone(),
        retrying: Arc::clone(&retrying),
        probes,
    };
    let context = IngestContext {
        shared: Arc::clone(&shared),
        flusher: flusher.clone(),
        runtime: tokio::runtime::Handle::current(),
        drain_deadline: config.drain_deadline(),
    };
    let consumer: StreamConsumer<IngestContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka_brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // We store offsets ourselves, only once the log write is durable.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .create_with_context(context)?;
    consumer.subscribe(&[&config.events_topic])?;
    let abandon = AbandonGuard(Arc::clone(&shared));
    health.set_ready(true);
    tracing::info!(topic = %config.events_topic, group = %config.group_id, "consuming");

    let limits = config.limits();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled_before: HashSet<i32> = HashSet::new();
    let mut last_housekeeping = Instant::now();
    let outcome = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            received = consumer.recv() => match received {
                Ok(message) => accept(&message, &shared, &limits, &metrics),
                Err(error) => tracing::warn!(%error, "kafka consumer error"),
            },
            _ = ticker.tick() => {}
        }
        // Housekeeping walks every partition: at most every few milliseconds, not per message.
        if last_housekeeping.elapsed() < HOUSEKEEPING_EVERY {
            continue;
        }
        last_housekeeping = Instant::now();
        if let Err(error) = collect_finished(&consumer, &shared, &config.events_topic).await {
            break Err(error);
        }
        collect_opened(&consumer, &shared, &config.events_topic, &metrics).await;
        start_reopens(&shared, &flusher);
        start_due_flushes(config, &shared, &flusher);
        start_advances(&shared, &flusher);
        apply_backpressure(&consumer, &shared, config);
        stalled_before = report_stalls(&retrying, config, &metrics, &health, &stalled_before);
    };

    // Shutdown: finish running flushes and drain what is buffered within the deadline, commit,
    // leave the group. After a failed flush task nothing more is stored: a newer range of its
    // partition would commit past the one that was never written.
    let partitions: Vec<i32> = {
        let mut all: HashSet<i32> = lock(&shared.assigned).keys().copied().collect();
        all.extend(lock(&shared.buffers).keys());
        all.extend(lock(&shared.inflight).keys());
        all.extend(lock(&shared.opening).keys());
        all.into_iter().collect()
    };
    let mut draining = take_partitions(&shared, &partitions);
    let pending = draining.values().filter(|d| !d.is_idle()).count();
    let stored = if outcome.is_ok() {
        let (deadline, guard) = deadline_in(config.drain_deadline());
        let stored = flusher.drain_all(draining, &deadline).await;
        guard.abort();
        stored
    } else {
        give_up(&mut draining, &metrics);
        Vec::new()
    };
    store_offsets(&consumer, &config.events_topic, &stored);
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit also gives this error.
        tracing::debug!(%error, "final commit");
    }
    tracing::info!(
        partitions = pending,
        flushed = stored.len(),
        "drained on shutdown"
    );
    // Closing the consumer leaves the group. librdkafka's close was seen to block for good once
    // against tansu (rd_kafka_assign(NULL) waiting on the group thread), so close on a blocking
    // thread and stop waiting after the drain deadline: everything durable is committed by now.
    drop(abandon);
    let closing = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(config.drain_deadline(), closing)
        .await
        .is_err()
    {
        tracing::warn!("the Kafka consumer did not close within the drain deadline; leaving it");
    }
    outcome
}

/// Stores the offsets of flushes that finished. A flush task that panicked leaves a range that
/// is not durable and cannot be skipped: stop, so that a restart replays it.
async fn collect_finished<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    shared: &Shared,
    topic: &str,
) -> anyhow::Result<()> {
    let finished: Vec<(i32, InFlight)> = {
        let mut inflight = lock(&shared.inflight);
        let done: Vec<i32> = inflight
            .iter()
            .filter(|(_, f)| f.task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        done.into_iter()
            .filter_map(|p| inflight.remove(&p).map(|f| (p, f)))
            .collect()
    };
    for (partition, flight) in finished {
        match flight.task.await {
            Ok(Done::Store(next)) => store_offsets(consumer, topic, &[(partition, next)]),
            Ok(Done::Nothing | Done::Stopped) => {}
            Err(error) => {
                anyhow::bail!(
                    "the flush task of partition {partition} failed ({error}); stopping so that \
                     a restart replays the partition from its last committed offset"
                )
            }
        }
    }
    Ok(())
}

/// Takes the partition logs that finished opening. A new epoch drops what was buffered and
/// seeks the partition to the epoch's start; until that seek is done, messages are dropped.
/// Also retries seeks that librdkafka refused (a partition not fetching yet).
async fn collect_opened<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    shared: &Shared,
    topic: &str,
    metrics: &Metrics,
) {
    let finished: Vec<(i32, Opening)> = {
        let mut opening = lock(&shared.opening);
        let done: Vec<i32> = opening
            .iter()
            .filter(|(_, o)| o.task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        done.into_iter()
            .filter_map(|p| opening.remove(&p).map(|o| (p, o)))
            .collect()
    };
    for (partition, opening) in finished {
        let log = match opening.task.await {
            Ok(Some(log)) => log,
            // Stopped (revoked meanwhile) or failed: a panic leaves the partition unopened, so
            // nothing is flushed and nothing stored; a restart or the next owner opens it.
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(partition, %error, "opening the partition's log failed; it stays unflushed");
                continue;
            }
        };
        let resume_from = log.resume_from();
        let mut assigned = lock(&shared.assigned);
        let Some(state) = assigned.get_mut(&partition) else {
            continue; // revoked meanwhile
        };
        if state.reopen_due {
            // Opened from facts older than the offsets going back: opened again shortly.
            continue;
        }
        if state.reopening {
            // Nothing is buffered (dropped when the offsets went back): consume again from
            // the new epoch's start, or from the durable offset of the same epoch.
            let start = resume_from.unwrap_or_else(|| log.durable_offset());
            state.log = Some(Arc::new(tokio::sync::Mutex::new(log)));
            state.reopening = false;
            state.seek_to = Some(start);
            state.next = None;
            continue;
        }
        state.log = Some(Arc::new(tokio::sync::Mutex::new(log)));
        if let Some(start) = resume_from {
            let mut buffers = lock(&shared.buffers);
            // Already consuming from the epoch's start (a first epoch, usually): keep it.
            if buffers
                .get(&partition)
                .is_some_and(|b| b.first_offset == start)
            {
                continue;
            }
            if let Some(buffer) = buffers.remove(&partition) {
                metrics.buffered_events.sub(buffer.records.len() as i64);
            }
            state.seek_to = Some(start);
            state.next = None;
        }
    }
    let mut assigned = lock(&shared.assigned);
    for (partition, state) in assigned.iter_mut() {
        let Some(start) = state.seek_to else {
            continue;
        };
        // librdkafka purges what it prefetched for the partition, so the next message is at
        // `start`. It refuses a seek before the partition fetches: retried at the next pass.
        match consumer.seek(
            topic,
            *partition,
            Offset::Offset(start),
            Duration::from_secs(1),
        ) {
            Ok(()) => {
                tracing::info!(
                    partition,
                    offset = start,
                    "consuming from where the opened log says (a new epoch's start, or the \
                     durable offset after the offsets went back)"
                );
                state.seek_to = None;
                state.next = None;
            }
            Err(error) => {
                tracing::debug!(partition, %error, "seek to the new epoch's start not possible yet")
            }
        }
    }
}

/// Opens again the log of each partition whose offsets went back, once its running task (a
/// flush of what it consumed before, which still becomes durable and is stored) and any
/// earlier opening are through, so the epoch is decided from the log as it ends up.
fn start_reopens(shared: &Shared, flusher: &Flusher) {
    let inflight = lock(&shared.inflight);
    let mut opening = lock(&shared.opening);
    let mut assigned = lock(&shared.assigned);
    for (partition, state) in assigned.iter_mut() {
        if !state.reopen_due || inflight.contains_key(partition) || opening.contains_key(partition)
        {
            continue;
        }
        state.reopen_due = false;
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (flusher, stop, partition) = (flusher.clone(), stop.clone(), *partition);
            async move { flusher.open(partition, &stop).await }
        });
        opening.insert(*partition, Opening { stop, task });
    }
}

/// Moves the time watermark of each idle assigned partition (open, nothing buffered, nothing
/// running) when the lag reader has probed it again.
fn start_advances(shared: &Shared, flusher: &Flusher) {
    let buffers = lock(&shared.buffers);
    let mut inflight = lock(&shared.inflight);
    let mut assigned = lock(&shared.assigned);
    for (partition, state) in assigned.iter_mut() {
        if buffers.contains_key(partition) || inflight.contains_key(partition) {
            continue;
        }
        let Some(log) = state.writable().cloned() else {
            continue;
        };
        let Some(probe) = flusher.probe(*partition) else {
            continue;
        };
        if state.last_probe.is_some_and(|at| at >= probe.at) {
            continue;
        }
        state.last_probe = Some(probe.at);
        let partition = *partition;
        let task = tokio::spawn({
            let flusher = flusher.clone();
            async move { flusher.advance(partition, &log, probe).await }
        });
        inflight.insert(
            partition,
            InFlight {
                stop: CancellationToken::new(),
                task,
            },
        );
    }
}

/// Hands each due buffer whose partition is open and has no flush running to a flush task of
/// its own.
fn start_due_flushes(config: &Config, shared: &Shared, flusher: &Flusher) {
    let mut buffers = lock(&shared.buffers);
    let mut inflight = lock(&shared.inflight);
    let assigned = lock(&shared.assigned);
    let logs: BTreeMap<i32, SharedLog> = assigned
        .iter()
        .filter_map(|(p, a)| a.writable().map(|log| (*p, Arc::clone(log))))
        .collect();
    drop(assigned);
    // Buffers waiting behind a running flush do not count: one stuck partition must not make
    // every other one flush tiny objects at every pass.
    let total: usize = buffers
        .iter()
        .filter(|(p, _)| !inflight.contains_key(p) && logs.contains_key(p))
        .map(|(_, b)| b.bytes)
        .sum();
    let due: Vec<i32> = buffers
        .iter()
        .filter(|(p, b)| {
            !inflight.contains_key(p)
                && logs.contains_key(p)
                && (total >= config.flush_max_bytes
                    || b.bytes >= config.flush_max_bytes
                    || b.since.elapsed() >= config.flush_interval())
        })
        .map(|(p, _)| *p)
        .collect();
    for partition in due {
        let (Some(buffer), Some(log)) = (buffers.remove(&partition), logs.get(&partition)) else {
            continue;
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (flusher, stop, log) = (flusher.clone(), stop.clone(), Arc::clone(log));
            async move { flusher.flush(partition, &log, buffer, &stop).await }
        });
        inflight.insert(partition, InFlight { stop, task });
    }
}

/// Pauses a partition that has a full buffer waiting behind a running flush (its store or dead
/// letters are failing) or an unopened log, and resumes it once the flush is through. Polling goes on meanwhile,
/// so the other partitions keep flowing and the consumer keeps its place in the group.
fn apply_backpressure<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    shared: &Shared,
    config: &Config,
) {
    let buffers = lock(&shared.buffers);
    let inflight = lock(&shared.inflight);
    let mut assigned = lock(&shared.assigned);
    for (partition, state) in assigned.iter_mut() {
        let full = (inflight.contains_key(partition) || state.writable().is_none())
            && buffers
                .get(partition)
                .is_some_and(|b| b.bytes >= config.flush_max_bytes);
        if full == state.paused {
            continue;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition(&config.events_topic, *partition);
        let done = if full {
            consumer.pause(&list)
        } else {
            consumer.resume(&list)
        };
        match done {
            Ok(()) => {
                if full {
                    state.pause();
                } else {
                    state.paused = false;
                }
                tracing::info!(
                    partition,
                    paused = full,
                    "partition {}",
                    if full {
                        "paused behind its flush"
                    } else {
                        "resumed"
                    }
                );
            }
            Err(error) => tracing::warn!(partition, %error, "cannot pause or resume"),
        }
    }
}

/// Publishes which partitions cannot make progress, and readiness: not ready while any
/// partition has failed to flush for longer than the stall threshold.
fn report_stalls(
    retrying: &Retrying,
    config: &Config,
    metrics: &Metrics,
    health: &Health,
    before: &HashSet<i32>,
) -> HashSet<i32> {
    let stalled: BTreeMap<i32, (Duration, String)> = lock(retrying)
        .iter()
        .filter(|(_, (since, _))| since.elapsed() >= config.stall_after())
        .map(|(p, (since, why))| (*p, (since.elapsed(), why.clone())))
        .collect();
    for (partition, (for_how_long, why)) in &stalled {
        if !before.contains(partition) {
            tracing::error!(
                partition, stalled_secs = for_how_long.as_secs(), reason = %why,
                "partition cannot make progress; other partitions continue"
            );
        }
        metrics
            .partition_stalled
            .with_label_values(&[&partition.to_string()])
            .set(1);
    }
    for partition in before {
        if !stalled.contains_key(partition) {
            tracing::info!(partition, "partition making progress again");
            metrics
                .partition_stalled
                .with_label_values(&[&partition.to_string()])
                .set(0);
        }
    }
    metrics.stalled_partitions.set(stalled.len() as i64);
    health.set_ready(stalled.is_empty());
    stalled.into_keys().collect()
}

/// Validates one message and buffers it, or keeps it as a dead letter. Either way its offset
/// joins the partition's range, to be stored once everything before it is durable.
fn accept(
    message: &BorrowedMessage<'_>,
    shared: &Shared,
    limits: &event_model::Limits,
    metrics: &Metrics,
) {
    let partition = message.partition();
    let offset = message.offset();
    {
        let mut assigned = lock(&shared.assigned);
        let Some(state) = assigned.get_mut(&partition) else {
            // A message fetched before its partition was revoked: the new owner consumes it.
            return;
        };
        match state.admit(offset) {
            Admit::Take => {}
            Admit::Skip => return,
            Admit::WentBack { next } => {
                state.went_back();
                drop(assigned);
                let dropped = lock(&shared.buffers)
                    .remove(&partition)
                    .map_or(0, |b| b.records.len());
                metrics.buffered_events.sub(dropped as i64);
                tracing::warn!(
                    partition,
                    offset,
                    expected = next,
                    dropped,
                    "the partition's offsets went back while assigned (an offset reset after a \
                     truncation?); dropping what is buffered and opening its log again"
                );
                return;
            }
        }
    }
    metrics.consumed.inc();
    let payload = message.payload().unwrap_or_default();
    let (record, letter) = match validate(payload, message.timestamp(), limits, Utc::now()) {
        Ok((event, raw)) => (Some(PendingRecord { offset, event, raw }), None),
        Err(rejection) => {
            tracing::info!(
                partition, offset, reason = rejection.reason.as_str(), detail = %rejection.detail,
                "dead-lettering a message"
            );
            (None, Some(DeadLetter::new(message, &rejection)))
        }
    };
    let mut buffers = lock(&shared.buffers);
    let buffer = buffers.entry(partition).or_insert_with(|| PartitionBuffer {
        first_offset: offset,
        last_offset: offset,
        records: Vec::new(),
        dead_letters: Vec::new(),
        bytes: 0,
        since: Instant::now(),
        last_payload: Vec::new(),
    });
    buffer.last_offset = offset;
    buffer.bytes += payload.len();
    // Only the last message's payload is fingerprinted (into the watermark pointer).
    buffer.last_payload.clear();
    buffer.last_payload.extend_from_slice(payload);
    if let Some(record) = record {
        buffer.records.push(record);
        metrics.buffered_events.inc();
    }
    if let Some(letter) = letter {
        buffer.dead_letters.push(letter);
    }
}

/// Validates a message's payload. The future-skew rule is measured from the message's Kafka
/// timestamp (CreateTime or LogAppendTime, whichever the topic keeps), not from the wall clock:
/// a range replayed after a crash must get the same verdicts as when it was first written, or
/// its segment would differ from the one already written under the same name (a `Conflict`
/// that stops the partition). `now` is used only for a message without a timestamp.
fn validate(
    payload: &[u8],
    timestamp: Timestamp,
    limits: &event_model::Limits,
    now: DateTime<Utc>,
) -> Result<(event_model::Event, serde_json::Value), event_model::Rejection> {
    let reference = timestamp
        .to_millis()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(now);
    event_model::parse_event(payload, limits, reference)
}

/// Where a group's committed offsets stand, for tests and tools: `Offset::Invalid` when none.
pub fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<Offset>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    Ok(committed.elements().iter().map(|e| e.offset()).collect())
}

#[cfg(test)]
mod tests {
    use chrono::{Duration as Span, TimeZone};

    use super::*;

    fn post_at(at: DateTime<Utc>) -> Vec<u8> {
        serde_json::json!({
            "event_id": "e-1", "type": "post.created", "occurred_at": at.to_rfc3339(),
            "conversation": {"id": "c-dm-1", "kind": "direct", "owner_company_id": "acme",
                             "member_company_ids": ["acme", "globex"]},
            "post_id": "p-1", "author_id": "u-1", "text": "hello"
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_future_skew_verdict_does_not_change_when_a_range_is_replayed() {
        let limits = event_model::Limits::default();
        let sent = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let ts = Timestamp::CreateTime(sent.timestamp_millis());
        // 24 h and a minute past the message's Kafka timestamp: rejected when first consumed...
        let payload = post_at(sent + limits.max_future_skew + Span::minutes(1));
        let first = validate(&payload, ts, &limits, sent);
        assert_eq!(
            first.err().map(|r| r.reason),
            Some(event_model::RejectReason::TimestampOutOfRange)
        );
        // ...and again when the range is replayed ten minutes later (same bytes in the log).
        let replay = validate(&payload, ts, &limits, sent + Span::minutes(10));
        assert_eq!(
            replay.err().map(|r| r.reason),
            Some(event_model::RejectReason::TimestampOutOfRange)
        );
        // An event within the skew of the message's timestamp is accepted even when the
        // wall clock has moved on by days (a backlog consumed late).
        let ok = post_at(sent + Span::hours(1));
        assert!(validate(&ok, ts, &limits, sent + Span::days(3)).is_ok());
        let logged = Timestamp::LogAppendTime(sent.timestamp_millis());
        assert!(validate(&payload, logged, &limits, sent + Span::minutes(10)).is_err());
    }

    fn took(state: &mut Assigned, offsets: std::ops::RangeInclusive<i64>) {
        for offset in offsets {
            assert_eq!(state.admit(offset), Admit::Take, "offset {offset}");
        }
    }

    #[test]
    fn offsets_going_back_while_assigned_are_not_dropped_as_refetches() {
        // An unclean leader election truncated the partition to 4990 while we were at 5001:
        // librdkafka resets and delivers other messages at 4990..5000.
        let mut state = Assigned::default();
        took(&mut state, 4000..=5000);
        assert_eq!(state.admit(4990), Admit::WentBack { next: 5001 });
        // Nothing durable at all yet, one message consumed: still not a re-fetch.
        let mut fresh = Assigned::default();
        took(&mut fresh, 7..=7);
        assert_eq!(fresh.admit(0), Admit::WentBack { next: 8 });
    }

    #[test]
    fn refetches_after_a_pause_are_dropped_and_nothing_below_the_pause_is() {
        let mut state = Assigned::default();
        took(&mut state, 100..=101);
        // librdkafka resumes a paused partition at the application's position (102 here), or
        // later if it handed us more before the pause took effect.
        state.pause();
        took(&mut state, 102..=103);
        assert_eq!(state.admit(102), Admit::Skip);
        assert_eq!(state.admit(103), Admit::Skip);
        assert_eq!(state.admit(101), Admit::WentBack { next: 104 });
        // Resumed and past what it had: a message below `next` is no longer a re-fetch.
        let mut state = Assigned::default();
        took(&mut state, 100..=101);
        state.pause();
        took(&mut state, 102..=103);
        state.paused = false;
        assert_eq!(state.admit(102), Admit::Skip);
        took(&mut state, 104..=104);
        assert_eq!(state.admit(103), Admit::WentBack { next: 105 });
        // Went back: everything is dropped until the log is opened again and sought.
        state.went_back();
        assert_eq!(state.admit(90), Admit::Skip);
        assert_eq!(state.admit(200), Admit::Skip);
        assert!(state.reopen_due && state.log.is_none() && state.next.is_none());
    }

    #[test]
    fn without_a_kafka_timestamp_the_wall_clock_is_the_reference() {
        let limits = event_model::Limits::default();
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let payload = post_at(now + Span::hours(23));
        assert!(validate(&payload, Timestamp::NotAvailable, &limits, now).is_ok());
        assert!(validate(&payload, Timestamp::CreateTime(-1), &limits, now).is_ok());
        let late = post_at(now + Span::hours(25));
        assert!(validate(&late, Timestamp::NotAvailable, &limits, now).is_err());
    }
}
