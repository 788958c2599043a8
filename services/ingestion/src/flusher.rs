//! Makes a partition's consumed range durable in the log (format v2): dead letters, then one
//! segment, then the partition's watermark pointer ([`compliance_log::PartitionLog`]); opens a
//! partition's log on assignment; moves an idle partition's time watermark.
//!
//! Dead letters go first so that the pointer, which says "every offset below is durable in the
//! log or dead-lettered", is written only once both are; and neither is repeated below the
//! durable offset a previous owner published.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use compliance_log::{LogError, LogWriter, PartitionLog, PendingRecord, Probe, SourceRange};
use futures::future::join_all;
use sha2::{Digest, Sha256};
use telemetry::CancellationToken;
use tokio::task::JoinHandle;

use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::lag::Probes;
use crate::lineage::KafkaLineage;
use crate::metrics::Metrics;
use retry::{Backoff, Next, retry, retry_whole_attempts};

/// A partition's open log, shared by its flush tasks (which run one at a time).
pub type SharedLog = Arc<tokio::sync::Mutex<PartitionLog>>;

/// What one partition has consumed and not yet made durable.
#[derive(Debug)]
pub struct PartitionBuffer {
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: Vec<PendingRecord>,
    pub dead_letters: Vec<DeadLetter>,
    pub bytes: usize,
    pub since: Instant,
    /// The Kafka payload of the message at `last_offset`, fingerprinted into the pointer.
    pub last_payload: Vec<u8>,
}

/// How a partition's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Durable: store this offset (the next one to consume).
    Store(i64),
    /// Nothing to store (an idle partition's watermark was moved).
    Nothing,
    /// Stopped before it was durable: nothing after it may be stored either.
    Stopped,
}

/// A partition's running task (flush or advance). At most one per partition, so its ranges
/// become durable in order.
#[derive(Debug)]
pub struct InFlight {
    pub stop: CancellationToken,
    pub task: JoinHandle<Done>,
}

/// A partition's log being opened (its epoch decided) on assignment.
#[derive(Debug)]
pub struct Opening {
    pub stop: CancellationToken,
    pub task: JoinHandle<Option<PartitionLog>>,
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Since when, and why, each partition's flush has been failing (absent: not failing).
pub type Retrying = Arc<Mutex<BTreeMap<i32, (Instant, String)>>>;

/// Makes partitions' buffers durable, retrying failures.
#[derive(Debug, Clone)]
pub struct Flusher {
    pub writer: LogWriter,
    pub lineage: KafkaLineage,
    pub dead_letters: DeadLetters,
    pub topic: String,
    pub metrics: Metrics,
    pub retrying: Retrying,
    pub probes: Probes,
}

impl Flusher {
    pub fn report(&self, partition: i32, failing: Option<String>) {
        let mut retrying = lock(&self.retrying);
        match failing {
            Some(reason) => {
                retrying
                    .entry(partition)
                    .and_modify(|(_, why)| why.clone_from(&reason))
                    .or_insert_with(|| (Instant::now(), reason));
            }
            None => {
                retrying.remove(&partition);
            }
        }
    }

    /// The partition's latest time-watermark probe.
    pub fn probe(&self, partition: i32) -> Option<Probe> {
        lock(&self.probes).get(&partition).copied()
    }

    fn count_objects(&self, kind: &str, count: u64) {
        if count > 0 {
            self.metrics
                .log_objects
                .with_label_values(&[kind])
                .inc_by(count);
            self.metrics.objects_written.inc_by(count);
        }
    }

    /// Opens the partition's log: decides its epoch (and writes the marker of a new one).
    /// Retries until it succeeds or `stop` fires.
    pub async fn open(&self, partition: i32, stop: &CancellationToken) -> Option<PartitionLog> {
        const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        // Not cancelled midway: a marker or pointer PUT cut short could land after the
        // partition's next owner wrote; each step is bounded by its client's timeout.
        let open = || self.try_open(partition);
        let log = retry_whole_attempts(&BACKOFF, stop, open, |error, _| {
            self.report(
                partition,
                Some(format!("opening the partition's log: {error:#}")),
            );
            if is_conflict(error) {
                tracing::error!(
                    partition,
                    error = format!("{error:#}"),
                    "a log object of this partition holds other bytes; the partition stops (nothing is replaced)"
                );
            } else {
                tracing::warn!(
                    partition,
                    error = format!("{error:#}"),
                    "cannot open the partition's log; retrying"
                );
            }
            Next::Retry
        })
        .await
        .ok()?;
        self.report(partition, None);
        let opened = log.opened();
        self.count_objects("epoch", opened.epoch_markers_written);
        self.count_objects("watermark", opened.watermarks_written);
        tracing::info!(
            partition,
            epoch = log.epoch(),
            durable_offset = log.durable_offset(),
            new_epoch = ?opened.began.map(|r| r.as_str()),
            "partition log opened"
        );
        Some(log)
    }

    async fn try_open(&self, partition: i32) -> anyhow::Result<PartitionLog> {
        let partitions = self.lineage.partition_count().await?;
        Ok(self
            .writer
            .open_partition(&self.topic, partition, partitions, &self.lineage)
            .await?)
    }

    /// Makes `buffer` durable in `log` and returns the offset to store. Gives up only when
    /// `stop` fires or another writer took the partition over (`Done::Stopped`); the buffer is
    /// gone either way.
    pub async fn flush(
        &self,
        partition: i32,
        log: &SharedLog,
        buffer: PartitionBuffer,
        stop: &CancellationToken,
    ) -> Done {
        let done = self.flush_inner(partition, log, &buffer, stop).await;
        self.metrics
            .buffered_events
            .sub(buffer.records.len() as i64);
        if done.is_some() {
            self.report(partition, None);
        }
        done.map_or(Done::Stopped, Done::Store)
    }

    async fn flush_inner(
        &self,
        partition: i32,
        log: &SharedLog,
        buffer: &PartitionBuffer,
        stop: &CancellationToken,
    ) -> Option<i64> {
        let started = Instant::now();
        let mut log = tokio::select! {
            log = log.lock() => log,
            _ = stop.cancelled() => return None,
        };
        // A previous owner made everything below the durable offset durable, dead letters too.
        let durable = log.durable_offset();
        for letter in buffer.dead_letters.iter().filter(|l| l.offset >= durable) {
            let report = |failing: Option<String>| self.report(partition, failing);
            let delivery = self
                .dead_letters
                .deliver(letter, &report, stop)
                .await
                .ok()?;
            self.metrics
                .dead_lettered
                .with_label_values(&[letter.reason])
                .inc();
            self.metrics
                .dead_letter_deliveries
                .with_label_values(&[delivery.as_str()])
                .inc();
        }
        self.write_log(partition, &mut log, buffer, stop).await?;
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        Some(buffer.last_offset + 1)
    }

    async fn write_log(
        &self,
        partition: i32,
        log: &mut PartitionLog,
        buffer: &PartitionBuffer,
        stop: &CancellationToken,
    ) -> Option<()> {
        let source = SourceRange {
            topic: self.topic.clone(),
            partition,
            first_offset: buffer.first_offset,
            last_offset: buffer.last_offset,
        };
        let fingerprint = hex::encode(Sha256::digest(&buffer.last_payload));
        const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        /// After a conflict: retried only in case an operator removes the stranger.
        const AFTER_CONFLICT: Duration = Duration::from_secs(30);
        let mut conflicted = false;
        // Cut short only when the partition is given up (drain deadline, lost assignment):
        // at worst a segment is written without its pointer, and the partition's next
        // owner writes the same range again, dropping what the pointer covers.
        // Each attempt borrows the log afresh (an attempt's future cannot keep a `&mut` of the
        // closure's): the lock is never contended.
        let log = tokio::sync::Mutex::new(log);
        let write = || async {
            let probe = self.probe(partition);
            let mut log = log.lock().await;
            log.write(&source, &buffer.records, fingerprint.clone(), probe)
                .await
        };
        let stats = retry(&BACKOFF, stop, write, |error, _| {
            if error.is_taken_over() {
                // Another replica owns the partition now (its pointer is past ours): stop
                // like a lost assignment, without retrying. Nothing was written, and no
                // offset is stored for this range; the rebalance revokes the partition.
                self.report(
                    partition,
                    Some(format!("writing to the compliance log: {error}")),
                );
                tracing::warn!(
                    partition, first_offset = source.first_offset,
                    last_offset = source.last_offset, %error,
                    "the partition was taken over by another writer; this one stops writing it"
                );
                return Next::GiveUp;
            }
            self.metrics.write_retries.inc();
            self.report(
                partition,
                Some(format!("writing to the compliance log: {error}")),
            );
            if error.is_conflict() {
                // Never replaced; from now on retried at the slow pace only.
                tracing::error!(
                    partition, first_offset = source.first_offset,
                    last_offset = source.last_offset, %error,
                    "a log object name holds other bytes; the partition stops (nothing is replaced)"
                );
                conflicted = true;
            } else {
                tracing::warn!(
                    partition, first_offset = source.first_offset,
                    last_offset = source.last_offset, %error,
                    "failed to write to the compliance log; retrying"
                );
            }
            if conflicted {
                Next::RetryAfter(AFTER_CONFLICT)
            } else {
                Next::Retry
            }
        })
        .await
        .ok()?;
        self.count_objects("segment", stats.segments);
        self.count_objects("watermark", stats.watermarks);
        self.metrics.puts_per_flush.observe(stats.puts() as f64);
        self.metrics.bytes_written.inc_by(stats.bytes);
        for (kind, count) in stats.appended {
            self.metrics
                .appended
                .with_label_values(&[kind])
                .inc_by(count);
        }
        Some(())
    }

    /// Moves an idle partition's time watermark with `probe` (a pointer PUT when it moved).
    pub async fn advance(&self, partition: i32, log: &SharedLog, probe: Probe) -> Done {
        let mut log = log.lock().await;
        match log.advance(Some(probe)).await {
            Ok(puts) => self.count_objects("watermark", puts),
            Err(error) if error.is_taken_over() => {
                tracing::warn!(partition, %error, "the partition was taken over; its time watermark is not moved");
            }
            // The next probe tries again.
            Err(error) => tracing::warn!(partition, %error, "cannot move the time watermark"),
        }
        Done::Nothing
    }

    /// Finishes a partition being given up (revoke, shutdown): awaits its opening and running
    /// task, then flushes what is buffered, until `deadline`. Returns the offset to store.
    pub async fn drain(
        &self,
        partition: i32,
        opening: Option<Opening>,
        inflight: Option<InFlight>,
        log: Option<SharedLog>,
        buffer: Option<PartitionBuffer>,
        deadline: &CancellationToken,
    ) -> Option<i64> {
        if let Some(Opening { stop, mut task }) = opening {
            // Not opened yet: nothing was flushed, nothing can be; let it finish its step.
            stop.cancel();
            tokio::select! {
                _ = &mut task => {}
                _ = deadline.cancelled() => task.abort(),
            }
        }
        let mut durable = None;
        let drop_buffer = |buffer: Option<PartitionBuffer>| {
            if let Some(buffer) = buffer {
                self.metrics
                    .buffered_events
                    .sub(buffer.records.len() as i64);
            }
        };
        if let Some(InFlight { stop, mut task }) = inflight {
            let done = tokio::select! {
                done = &mut task => done,
                _ = deadline.cancelled() => {
                    stop.cancel();
                    task.await
                }
            };
            match done {
                Ok(Done::Store(next)) => durable = Some(next),
                Ok(Done::Nothing) => {}
                // Not durable: nothing after it may be stored either.
                Ok(Done::Stopped) | Err(_) => {
                    drop_buffer(buffer);
                    return None;
                }
            }
        }
        match (buffer, log) {
            (Some(buffer), Some(log)) => {
                if let Done::Store(next) = self.flush(partition, &log, buffer, deadline).await {
                    durable = Some(next);
                }
            }
            (buffer, _) => drop_buffer(buffer),
        }
        durable
    }

    /// Drains several partitions concurrently; returns the offsets to store.
    pub async fn drain_all(
        &self,
        mut parts: BTreeMap<i32, Draining>,
        deadline: &CancellationToken,
    ) -> Vec<(i32, i64)> {
        let partitions: HashSet<i32> = parts.keys().copied().collect();
        let drains = partitions.into_iter().map(|partition| {
            let part = parts.remove(&partition).unwrap_or_default();
            async move {
                self.drain(
                    partition,
                    part.opening,
                    part.inflight,
                    part.log,
                    part.buffer,
                    deadline,
                )
                .await
                .map(|next| (partition, next))
            }
        });
        join_all(drains).await.into_iter().flatten().collect()
    }
}

/// Everything a partition being given up has in progress.
#[derive(Debug, Default)]
pub struct Draining {
    pub opening: Option<Opening>,
    pub inflight: Option<InFlight>,
    pub log: Option<SharedLog>,
    pub buffer: Option<PartitionBuffer>,
}

impl Draining {
    /// Nothing running and nothing buffered.
    pub fn is_idle(&self) -> bool {
        self.opening.is_none() && self.inflight.is_none() && self.buffer.is_none()
    }
}

fn is_conflict(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<LogError>()
        .is_some_and(LogError::is_conflict)
}
