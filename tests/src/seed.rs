//! Seeding format-2 logs for the benchmarks, as ingestion would have written them: generated
//! messages are parsed with the ingestion contract, spread over the topic's partitions by key
//! (a stand-in for Kafka's partitioner), and written through the v2 log writer
//! ([`compliance_log::LogWriter`]: per partition its epoch marker, one segment per flush and the
//! watermark pointer); then [`compact`] runs a compaction pass, so closed days are read from
//! compacted parts as in production.
//!
//! Streaming: the messages are consumed as they come and each partition's writer runs on its own
//! task, so memory is a few segments per partition whatever the log's size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use compliance_log::lineage::{Lineage, LineageError};
use compliance_log::{
    CompactionConfig, Compactor, LogWriter, PassSummary, PendingRecord, Probe, SourceRange,
};
use sha2::{Digest, Sha256};
use storage::ObjectStore;

/// How the log's segments are cut.
#[derive(Debug, Clone, Copy)]
pub struct LogShape {
    /// Partitions of the topic.
    pub partitions: i32,
    /// A partition's segment holds the events of one window of event time (one flush of live
    /// traffic); a window with no events of the partition has no segment.
    pub flush: chrono::Duration,
    /// ... and at most this many records (a flush by size, as in a backfill).
    pub max_records: usize,
}

impl Default for LogShape {
    fn default() -> Self {
        Self {
            partitions: 4,
            flush: chrono::Duration::hours(1),
            max_records: 10_000,
        }
    }
}

/// What [`write_v2_log`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Records written (one per valid message).
    pub records: u64,
    /// Records per company (an event routed to two companies counts for both).
    pub by_company: BTreeMap<String, u64>,
    pub segments: u64,
    /// Bytes of the segments.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// A Kafka stand-in for opening partitions: a fresh topic on one cluster, each partition
/// starting at offset 0.
#[derive(Debug)]
struct FreshTopic;

#[async_trait::async_trait]
impl Lineage for FreshTopic {
    async fn cluster_id(&self) -> Result<String, LineageError> {
        Ok("bench-cluster".to_owned())
    }

    async fn watermarks(&self, _partition: i32) -> Result<(i64, i64), LineageError> {
        Ok((0, 0))
    }

    async fn payload_sha256(
        &self,
        _partition: i32,
        _offset: i64,
    ) -> Result<Option<String>, LineageError> {
        Ok(None)
    }
}

/// A stable hash of a message key (FNV-1a), standing in for Kafka's partitioner.
pub fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One segment's worth of a partition, ready to write.
struct Flush {
    records: Vec<PendingRecord>,
    last_payload_sha256: String,
}

/// A partition's records not written yet, and the flush window they belong to.
struct Open {
    slot: i64,
    records: Vec<PendingRecord>,
    last_payload_sha256: String,
    next_offset: i64,
}

/// Writes `messages` (in time order, as a generator makes them) into `topic`'s v2 log, shaped
/// by `shape`, then moves every partition's time watermark to `now` (nothing more is coming),
/// so a compaction pass may close every day before today. `now` is also the clock the messages
/// are validated against (they must not be in its future).
pub async fn write_v2_log(
    store: Arc<dyn ObjectStore>,
    topic: &str,
    messages: impl IntoIterator<Item = loadgen::Message>,
    shape: LogShape,
    now: DateTime<Utc>,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let writer = LogWriter::new(Arc::clone(&store));
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for partition in 0..shape.partitions {
        let mut log = writer
            .open_partition(topic, partition, shape.partitions, &FreshTopic)
            .await
            .with_context(|| format!("opening partition {partition} of {topic}"))?;
        anyhow::ensure!(
            log.durable_offset() == 0,
            "{topic} partition {partition} has a log already: seed a new topic"
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Flush>(2);
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let (mut segments, mut bytes) = (0u64, 0u64);
            while let Some(flush) = rx.recv().await {
                let source = SourceRange {
                    topic: topic.clone(),
                    partition,
                    first_offset: flush.records[0].offset,
                    last_offset: flush.records[flush.records.len() - 1].offset,
                };
                let stats = log
                    .write(&source, &flush.records, flush.last_payload_sha256, None)
                    .await
                    .with_context(|| format!("writing {topic} partition {partition}"))?;
                segments += stats.segments;
                bytes += stats.bytes;
            }
            let probe = Probe {
                at: now,
                high_watermark: log.durable_offset(),
            };
            log.advance(Some(probe))
                .await
                .with_context(|| format!("advancing {topic} partition {partition}"))?;
            anyhow::Ok((segments, bytes))
        }));
        senders.push(tx);
    }

    let window = shape.flush.num_seconds().max(1);
    let max_records = shape.max_records.max(1);
    let mut open: Vec<Open> = (0..shape.partitions)
        .map(|_| Open {
            slot: i64::MIN,
            records: Vec::new(),
            last_payload_sha256: String::new(),
            next_offset: 0,
        })
        .collect();
    let mut written = Written::default();
    let limits = event_model::Limits::default();
    for message in messages {
        let (event, raw) = event_model::parse_event(&message.payload, &limits, now)
            .map_err(|r| anyhow::anyhow!("a generated event is invalid: {r}"))?;
        for company in event_model::route(&event) {
            *written.by_company.entry(company).or_default() += 1;
        }
        written.records += 1;
        let partition = (fnv1a(&message.key) % shape.partitions as u64) as usize;
        let slot = event.occurred_at.timestamp().div_euclid(window);
        let part = &mut open[partition];
        if !part.records.is_empty() && (part.slot != slot || part.records.len() >= max_records) {
            let flush = Flush {
                records: std::mem::take(&mut part.records),
                last_payload_sha256: std::mem::take(&mut part.last_payload_sha256),
            };
            senders[partition]
                .send(flush)
                .await
                .context("a partition writer stopped")?;
        }
        part.slot = slot;
        part.records.push(PendingRecord {
            offset: part.next_offset,
            event,
            raw,
        });
        part.next_offset += 1;
        part.last_payload_sha256 = hex::encode(Sha256::digest(&message.payload));
    }
    for (partition, part) in open.into_iter().enumerate() {
        if !part.records.is_empty() {
            let flush = Flush {
                records: part.records,
                last_payload_sha256: part.last_payload_sha256,
            };
            senders[partition]
                .send(flush)
                .await
                .context("a partition writer stopped")?;
        }
    }
    drop(senders);
    for task in tasks {
        let (segments, bytes) = task.await.context("a partition writer panicked")??;
        written.segments += segments;
        written.bytes += bytes;
    }
    written.elapsed = started.elapsed();
    Ok(written)
}

/// Runs one compaction pass over `topic` at `now` (default configuration): every day closed by
/// then (the partitions' time watermarks less the grace) becomes compacted parts. Returns what
/// it did and how long it took.
pub async fn compact(
    store: Arc<dyn ObjectStore>,
    topic: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<(PassSummary, Duration)> {
    let started = Instant::now();
    let summary = Compactor::new(store, CompactionConfig::new(topic))
        .run_pass(now)
        .await
        .with_context(|| format!("compacting {topic}"))?
        .with_context(|| format!("the compaction pass of {topic} had nothing to do"))?;
    Ok((summary, started.elapsed()))
}
