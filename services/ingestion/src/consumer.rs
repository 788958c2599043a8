//! The consumer loop: Kafka → validation → per-partition buffers → log objects → offsets.
//!
//! Offsets are stored (and then committed by librdkafka's auto-commit) only after everything
//! before them is durable in the log, in order: `enable.auto.offset.store=false`, and a
//! partition's offset is stored only after its flushed range is written. A crash at any point
//! replays from the last committed offset; the log's deterministic keys and the reader's dedup
//! by `event_id` keep a replay from showing twice.
//!
//! On revoke, the revoked partitions' buffers are flushed and committed inside the rebalance
//! callback, within the drain deadline (shorter than the session timeout), and then forgotten:
//! a revoked partition's writer never writes again. If the assignment was lost (the group
//! already moved on), the buffers are dropped unwritten for the new owner to replay.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use compliance_log::{LogWriter, PendingRecord, SourceRange};
use futures::future::join_all;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use telemetry::{CancellationToken, Health};

use crate::Config;
use crate::dead_letter::DeadLetters;
use crate::metrics::Metrics;

/// What one partition has consumed and not yet made durable.
#[derive(Debug)]
struct PartitionBuffer {
    first_offset: i64,
    last_offset: i64,
    records: Vec<PendingRecord>,
    bytes: usize,
    since: Instant,
}

/// State the consumer loop and the rebalance callback share. They never run at the same time
/// (callbacks run inside `recv`), so the locks are only ever taken briefly and uncontended.
#[derive(Debug, Default)]
struct Shared {
    buffers: Mutex<BTreeMap<i32, PartitionBuffer>>,
    assigned: Mutex<HashSet<i32>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes a partition's buffer to the log, retrying store errors with backoff.
#[derive(Debug, Clone)]
struct Flusher {
    writer: LogWriter,
    topic: String,
    metrics: Metrics,
    health: Health,
}

impl Flusher {
    /// Makes `buffer` durable and returns the offset to store (the next one to consume).
    /// Gives up only when `stop` fires.
    async fn flush(
        &self,
        partition: i32,
        buffer: PartitionBuffer,
        stop: &CancellationToken,
    ) -> Option<i64> {
        let source = SourceRange {
            topic: self.topic.clone(),
            partition,
            first_offset: buffer.first_offset,
            last_offset: buffer.last_offset,
        };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = tokio::select! {
                written = self.writer.write(&source, &buffer.records) => written,
                _ = stop.cancelled() => return None,
            };
            match attempt {
                Ok(stats) => {
                    self.metrics.objects_written.inc_by(stats.objects);
                    self.metrics.bytes_written.inc_by(stats.bytes);
                    for (kind, count) in stats.appended {
                        self.metrics
                            .appended
                            .with_label_values(&[kind])
                            .inc_by(count);
                    }
                    self.metrics
                        .flush_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .buffered_events
                        .sub(buffer.records.len() as i64);
                    self.health.set_ready(true);
                    return Some(buffer.last_offset + 1);
                }
                Err(error) => {
                    self.health.set_ready(false);
                    self.metrics.write_retries.inc();
                    tracing::warn!(
                        partition, first_offset = source.first_offset,
                        last_offset = source.last_offset, %error,
                        "failed to write to the compliance log; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return None,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Flushes several partitions concurrently; returns the offsets to store for those that
    /// became durable before `stop` fired.
    async fn flush_all(
        &self,
        buffers: BTreeMap<i32, PartitionBuffer>,
        stop: &CancellationToken,
    ) -> Vec<(i32, i64)> {
        let flushes = buffers.into_iter().map(|(partition, buffer)| async move {
            self.flush(partition, buffer, stop)
                .await
                .map(|next| (partition, next))
        });
        join_all(flushes).await.into_iter().flatten().collect()
    }
}

/// The consumer's context: rebalance handling and statistics.
struct IngestContext {
    shared: Arc<Shared>,
    flusher: Flusher,
    runtime: tokio::runtime::Handle,
    drain_deadline: Duration,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        let assigned = lock(&self.shared.assigned).clone();
        if let Some(topic) = statistics.topics.get(&self.flusher.topic) {
            for (partition, stats) in &topic.partitions {
                if assigned.contains(partition) && stats.consumer_lag >= 0 {
                    self.flusher
                        .metrics
                        .consumer_lag
                        .with_label_values(&[&partition.to_string()])
                        .set(stats.consumer_lag);
                }
            }
        }
    }
}

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
        let taken: BTreeMap<i32, PartitionBuffer> = {
            let mut assigned = lock(&self.shared.assigned);
            let mut buffers = lock(&self.shared.buffers);
            partitions
                .iter()
                .filter_map(|p| {
                    assigned.remove(p);
                    buffers.remove(p).map(|b| (*p, b))
                })
                .collect()
        };
        for partition in &partitions {
            let _ = self
                .flusher
                .metrics
                .consumer_lag
                .remove_label_values(&[&partition.to_string()]);
        }
        if consumer.assignment_lost() {
            let dropped: usize = taken.values().map(|b| b.records.len()).sum();
            self.flusher.metrics.buffered_events.sub(dropped as i64);
            tracing::warn!(
                ?partitions,
                dropped,
                "assignment lost; the new owner replays what was buffered"
            );
            return;
        }
        if taken.is_empty() {
            return;
        }
        let deadline = CancellationToken::new();
        let flusher = self.flusher.clone();
        let drain_deadline = self.drain_deadline;
        // The callback runs inside `recv` on a runtime worker; `block_in_place` lets the other
        // workers drive the S3 requests while this one waits (needs the multi-thread runtime).
        let stored = tokio::task::block_in_place(|| {
            self.runtime.block_on(async {
                let timer = deadline.clone();
                let guard = tokio::spawn(async move {
                    tokio::time::sleep(drain_deadline).await;
                    timer.cancel();
                });
                let stored = flusher.flush_all(taken, &deadline).await;
                guard.abort();
                stored
            })
        });
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

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let partitions: Vec<i32> = assigned
                .elements_for_topic(&self.flusher.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            lock(&self.shared.assigned).extend(partitions.iter().copied());
            tracing::info!(?partitions, "partitions assigned");
        }
    }
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

/// Consumes until `shutdown` fires, then drains and commits within the drain deadline.
pub async fn run(
    config: &Config,
    writer: LogWriter,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    let flusher = Flusher {
        writer,
        topic: config.events_topic.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
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
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)?;
    consumer.subscribe(&[&config.events_topic])?;
    let dead_letters = DeadLetters::new(&config.kafka_brokers, &config.dead_letter_topic)?;
    health.set_ready(true);
    tracing::info!(topic = %config.events_topic, group = %config.group_id, "consuming");

    let limits = config.limits();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let never = CancellationToken::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            received = consumer.recv() => match received {
                Ok(message) => {
                    let accepted = accept(&message, &shared, &dead_letters, &limits, &metrics, &shutdown).await;
                    if accepted.is_err() {
                        break; // shutting down mid dead-letter: that offset stays unstored
                    }
                }
                Err(error) => tracing::warn!(%error, "kafka consumer error"),
            },
            _ = ticker.tick() => {}
        }
        let due = {
            let buffers = lock(&shared.buffers);
            let bytes: usize = buffers.values().map(|b| b.bytes).sum();
            bytes >= config.flush_max_bytes
                || buffers
                    .values()
                    .any(|b| b.since.elapsed() >= config.flush_interval())
        };
        if due {
            let taken = std::mem::take(&mut *lock(&shared.buffers));
            // Normal flushes retry until they succeed: skipping would lose data.
            let stored = flusher.flush_all(taken, &never).await;
            store_offsets(&consumer, &config.events_topic, &stored);
        }
    }

    // Shutdown: drain what is buffered within the deadline, commit, leave the group.
    let taken = std::mem::take(&mut *lock(&shared.buffers));
    let deadline = CancellationToken::new();
    let timer = deadline.clone();
    let drain = config.drain_deadline();
    let guard = tokio::spawn(async move {
        tokio::time::sleep(drain).await;
        timer.cancel();
    });
    let pending = taken.len();
    let stored = flusher.flush_all(taken, &deadline).await;
    guard.abort();
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
    let closing = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(config.drain_deadline(), closing)
        .await
        .is_err()
    {
        tracing::warn!("the Kafka consumer did not close within the drain deadline; leaving it");
    }
    Ok(())
}

/// Validates one message and buffers it, or dead-letters it. Either way its offset joins the
/// partition's range, to be stored once everything before it is durable.
async fn accept(
    message: &BorrowedMessage<'_>,
    shared: &Shared,
    dead_letters: &DeadLetters,
    limits: &event_model::Limits,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    metrics.consumed.inc();
    let partition = message.partition();
    let offset = message.offset();
    if !lock(&shared.assigned).contains(&partition) {
        // A message fetched before its partition was revoked: the new owner consumes it.
        return Ok(());
    }
    let payload = message.payload().unwrap_or_default();
    let record = match event_model::parse_event(payload, limits, Utc::now()) {
        Ok((event, raw)) => Some(PendingRecord { offset, event, raw }),
        Err(rejection) => {
            tracing::info!(
                partition, offset, reason = rejection.reason.as_str(), detail = %rejection.detail,
                "dead-lettering a message"
            );
            dead_letters.send(message, &rejection, shutdown).await?;
            metrics
                .dead_lettered
                .with_label_values(&[rejection.reason.as_str()])
                .inc();
            None
        }
    };
    let mut buffers = lock(&shared.buffers);
    let buffer = buffers.entry(partition).or_insert_with(|| PartitionBuffer {
        first_offset: offset,
        last_offset: offset,
        records: Vec::new(),
        bytes: 0,
        since: Instant::now(),
    });
    buffer.last_offset = offset;
    buffer.bytes += payload.len();
    if let Some(record) = record {
        buffer.records.push(record);
        metrics.buffered_events.inc();
    }
    Ok(())
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
