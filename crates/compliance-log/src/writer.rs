//! Turns a flushed range of one Kafka partition into immutable log objects.
//!
//! Format version 2 (`docs/log-format.md`): [`LogWriter::open_partition`] decides an assigned
//! partition's epoch ([`crate::lineage`]); then each flush of its [`PartitionLog`] writes exactly
//! one segment (create-only) and then the partition's watermark pointer, the one mutable object
//! of the log. [`V1Writer`] (format version 1) is kept for tests of old logs.
//!
//! Invariants kept here:
//! - a writer never writes a record below the published durable offset (they are in the log
//!   already), so a segment starts at or after every durable offset published before it;
//! - a log object is never replaced: a name that holds other bytes stops the partition with a
//!   `Conflict` error (`storage::put_new`);
//! - the pointer moves only after what it covers is durable, and its time watermark only from a
//!   probe whose high watermark the durable offset has reached.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use event_model::Event;
use serde_json::Value;
use storage::{ObjectStore, PutNew, put_new};

use crate::format::SourceRange;
use crate::lineage::{
    Decision, EpochReason, KafkaSide, Lineage, LineageError, LogSide, PointerSide,
};
use crate::v2::epoch::EpochMarker;
use crate::v2::keys;
use crate::v2::pointer::{LastRecord, Watermark};
use crate::v2::segment;
use crate::{LogError, Result};

#[cfg(test)]
mod tests;
mod v1;

pub use v1::{V1Writer, WriteStats};

/// A validated event waiting to be written, with its source position.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    pub offset: i64,
    pub event: Event,
    pub raw: Value,
}

/// One reading of a partition's end: at `at` (taken before asking), Kafka's high watermark was
/// `high_watermark`. Once the log is durable up to it, every record published before `at` is
/// durable, so `at` can become the partition's time watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub at: DateTime<Utc>,
    pub high_watermark: i64,
}

/// Unsatisfied probes kept per partition; older ones are dropped first (which only delays the
/// time watermark, never moves it too far).
const MAX_PROBES: usize = 32;

/// Opens partitions of the v2 log. Cheap to clone; safe to share.
#[derive(Debug, Clone)]
pub struct LogWriter {
    store: Arc<dyn ObjectStore>,
}

/// What opening a partition decided and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub epoch: u32,
    /// Why a new epoch began; `None` when the partition goes on in its epoch.
    pub began: Option<EpochReason>,
    /// Epoch markers written while opening (0 or 1; 0 also when another writer wrote the
    /// same marker first).
    pub epoch_markers_written: u64,
    /// Watermark pointer PUTs while opening (1 when an epoch began).
    pub watermarks_written: u64,
}

/// What one call of [`PartitionLog::write`] or [`PartitionLog::advance`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Segments written: 0 or 1 (0 when every record was below the durable offset).
    pub segments: u64,
    /// Segment already present with the same bytes (a replay): counted, not rewritten.
    pub segments_already_there: u64,
    /// Watermark pointer PUTs: 0 or 1.
    pub watermarks: u64,
    pub bytes: u64,
    /// Records dropped because they were below the durable offset.
    pub skipped: u64,
    /// Appends per event type (an event routed to two companies counts twice).
    pub appended: BTreeMap<&'static str, u64>,
}

impl FlushStats {
    /// Object-store PUTs this call made.
    pub fn puts(&self) -> u64 {
        self.segments + self.watermarks
    }
}

impl LogWriter {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// Opens `topic`'s `partition` (of `partitions`) for writing: reads its watermark pointer and
    /// latest epoch marker, asks `lineage` whether Kafka's offsets still continue the log, and
    /// begins a new epoch (marker, then pointer) when they do not. A marker name that holds
    /// other bytes (another writer decided differently meanwhile) is decided again, twice at
    /// most, then reported.
    pub async fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        partitions: i32,
        lineage: &dyn Lineage,
    ) -> Result<PartitionLog> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_open(topic, partition, partitions, lineage).await {
                Err(error) if error.is_conflict() && attempts < 3 => {
                    tracing::info!(topic, partition, %error, "epoch marker written meanwhile; deciding again");
                }
                other => return other,
            }
        }
    }

    async fn try_open(
        &self,
        topic: &str,
        partition: i32,
        partitions: i32,
        lineage: &dyn Lineage,
    ) -> Result<PartitionLog> {
        let lineage_error = |e: LineageError| LogError::Lineage {
            topic: topic.to_owned(),
            partition,
            reason: e.0,
        };
        let pointer = Watermark::read(self.store.as_ref(), topic, partition).await?;
        let marker = EpochMarker::latest(self.store.as_ref(), topic, partition).await?;
        let cluster_id = lineage.cluster_id().await.map_err(lineage_error)?;
        let (low, high) = lineage.watermarks(partition).await.map_err(lineage_error)?;
        // Only the pointer of the marker's epoch is compared with Kafka's record.
        let last_record_sha256 = match (&pointer, &marker) {
            (Some(p), Some(m)) if p.epoch == m.epoch => match &p.last_record {
                Some(last) if low <= last.offset && last.offset < high => lineage
                    .payload_sha256(partition, last.offset)
                    .await
                    .map_err(lineage_error)?,
                _ => None,
            },
            _ => None,
        };
        let log_side = LogSide {
            marker: marker.clone(),
            pointer: pointer.as_ref().map(|p| PointerSide {
                epoch: p.epoch,
                durable_offset: p.durable_offset,
                last_record: p
                    .last_record
                    .as_ref()
                    .map(|l| (l.offset, l.payload_sha256.clone())),
            }),
        };
        let kafka_side = KafkaSide {
            cluster_id,
            low,
            high,
            last_record_sha256,
        };
        let decision =
            crate::lineage::decide(topic, partition, &log_side, &kafka_side).map_err(|reason| {
                LogError::Corrupt {
                    key: keys::watermark_key(topic, partition),
                    reason,
                }
            })?;
        let mut log = PartitionLog {
            store: Arc::clone(&self.store),
            topic: topic.to_owned(),
            partition,
            partitions,
            epoch: 0,
            durable_offset: 0,
            time_watermark: None,
            last_record: None,
            resume_from: None,
            probes: VecDeque::new(),
            published: pointer.clone(),
            opened: Opened {
                epoch: 0,
                began: None,
                epoch_markers_written: 0,
                watermarks_written: 0,
            },
        };
        match decision {
            Decision::Continue {
                epoch,
                durable_offset,
            } => {
                log.epoch = epoch;
                log.durable_offset = durable_offset;
                if let Some(p) = pointer.filter(|p| p.epoch == epoch) {
                    log.time_watermark = p.time_watermark;
                    log.last_record = p.last_record;
                } else {
                    // The epoch's marker is there but not its pointer (a writer stopped between
                    // the two): nothing of the epoch is written, and the group's offset belongs
                    // to the previous history, so consume from the epoch's start.
                    log.resume_from = Some(durable_offset);
                    log.opened.watermarks_written = log.publish().await?;
                }
            }
            Decision::Begin(new, reason) => {
                let written = put_new(self.store.as_ref(), &new.key(), new.encode()?).await?;
                if reason == EpochReason::RecordsExpired {
                    // Records the log never got: an operator must know (the marker keeps it).
                    tracing::error!(
                        topic,
                        partition,
                        epoch = new.epoch,
                        reason = reason.as_str(),
                        durable_offset = new.previous.as_ref().map(|p| p.durable_offset),
                        start_offset = new.start_offset,
                        "records expired from kafka before they were logged; a new log epoch begins after the gap"
                    );
                } else {
                    tracing::info!(
                        topic,
                        partition,
                        epoch = new.epoch,
                        reason = reason.as_str(),
                        start_offset = new.start_offset,
                        "a new log epoch begins"
                    );
                }
                log.opened.epoch_markers_written = u64::from(written == PutNew::Created);
                log.epoch = new.epoch;
                log.durable_offset = new.start_offset;
                log.resume_from = Some(new.start_offset);
                log.opened.began = Some(reason);
                // Readers learn of the new epoch (and stop waiting on the old one's pointer).
                log.opened.watermarks_written = log.publish().await?;
            }
        }
        log.opened.epoch = log.epoch;
        Ok(log)
    }
}

/// The writer of one assigned partition. Not shared: a partition's flushes run one at a time.
#[derive(Debug)]
pub struct PartitionLog {
    store: Arc<dyn ObjectStore>,
    topic: String,
    partition: i32,
    partitions: i32,
    epoch: u32,
    durable_offset: i64,
    time_watermark: Option<DateTime<Utc>>,
    last_record: Option<LastRecord>,
    resume_from: Option<i64>,
    /// Probes not yet reached by the durable offset, oldest first.
    probes: VecDeque<Probe>,
    /// The pointer as the store holds it, so an unchanged one is not written again.
    published: Option<Watermark>,
    opened: Opened,
}

impl PartitionLog {
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Every offset below it is durable in this epoch (in the log or dead-lettered).
    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }

    pub fn time_watermark(&self) -> Option<DateTime<Utc>> {
        self.time_watermark
    }

    /// What opening decided and wrote.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Where the consumer must seek before consuming: the new epoch's start (the partition's
    /// low watermark) when opening began an epoch, else `None` (go on from the committed
    /// offset; records below the durable offset are dropped by [`write`](Self::write)).
    pub fn resume_from(&self) -> Option<i64> {
        self.resume_from
    }

    /// Writes one flushed range of the partition: `records` (the valid ones, in offset order)
    /// from `source` (the whole range, dead letters included, which the caller has made
    /// durable already), as one segment; then the pointer: `durable_offset = last + 1`, the
    /// fingerprint `last_payload_sha256` of the payload at `source.last_offset`, and the time
    /// watermark from the probes. Records below the durable offset are dropped. Idempotent.
    ///
    /// A `Conflict` error means a segment of that name holds other bytes: the partition must
    /// stop (nothing was replaced). A `TakenOver` error (one pointer GET before any PUT) means
    /// another writer moved the pointer past this one: it must stop writing the partition
    /// (nothing was written), so that it never moves the pointer back nor writes a segment
    /// overlapping the new owner's.
    pub async fn write(
        &mut self,
        source: &SourceRange,
        records: &[PendingRecord],
        last_payload_sha256: String,
        probe: Option<Probe>,
    ) -> Result<FlushStats> {
        self.check_owner().await?;
        self.observe(probe);
        let mut stats = FlushStats::default();
        if source.last_offset < self.durable_offset {
            // All of it is in the log already (a replay); still let the time watermark move.
            stats.skipped = records.len() as u64;
            stats.watermarks = self.publish().await?;
            return Ok(stats);
        }
        let first_kept = records.partition_point(|r| r.offset < self.durable_offset);
        stats.skipped = first_kept as u64;
        let kept = &records[first_kept..];
        if !kept.is_empty() {
            let range = SourceRange {
                topic: source.topic.clone(),
                partition: source.partition,
                first_offset: source.first_offset.max(self.durable_offset),
                last_offset: source.last_offset,
            };
            let (encoded, _) = segment::encode(self.epoch, &range, kept)?;
            let key = keys::segment_key(self.epoch, &range);
            stats.bytes = encoded.len() as u64;
            match put_new(self.store.as_ref(), &key, encoded).await? {
                PutNew::Created => stats.segments = 1,
                PutNew::AlreadyIdentical => stats.segments_already_there = 1,
            }
            for record in kept {
                let companies = event_model::route(&record.event).len() as u64;
                *stats.appended.entry(record.event.type_name()).or_default() += companies;
            }
        }
        self.durable_offset = source.last_offset + 1;
        self.last_record = Some(LastRecord {
            offset: source.last_offset,
            payload_sha256: last_payload_sha256,
        });
        self.settle_probes();
        stats.watermarks = self.publish().await?;
        Ok(stats)
    }

    /// For an idle partition: takes `probe` and, when the time watermark moved, PUTs the
    /// pointer (after checking, with one GET, that the partition was not taken over, as
    /// [`write`](Self::write) does). Returns the PUTs made (0 or 1).
    pub async fn advance(&mut self, probe: Option<Probe>) -> Result<u64> {
        self.observe(probe);
        if self.published.as_ref() == Some(&self.pointer()) {
            return Ok(0);
        }
        self.check_owner().await?;
        self.publish().await
    }

    /// Reads the partition's pointer and refuses with `TakenOver` when it is past this
    /// writer's: a later epoch, or a higher durable offset in this epoch. This narrows, but
    /// cannot close, the window in which a stale writer writes after the partition moved
    /// (compaction never cuts inside a segment, so what it still writes hides nothing).
    ///
    /// A pointer behind this writer's (a stale writer got through that window) is no longer
    /// taken as published, so this flush writes the pointer forward again.
    async fn check_owner(&mut self) -> Result<()> {
        let Some(found) = Watermark::read(self.store.as_ref(), &self.topic, self.partition).await?
        else {
            return Ok(());
        };
        let ahead = found.epoch > self.epoch
            || (found.epoch == self.epoch && found.durable_offset > self.durable_offset);
        if ahead {
            return Err(LogError::TakenOver {
                topic: self.topic.clone(),
                partition: self.partition,
                epoch: self.epoch,
                durable_offset: self.durable_offset,
                found_epoch: found.epoch,
                found_durable_offset: found.durable_offset,
            });
        }
        if self.published.as_ref() != Some(&found) {
            self.published = Some(found);
        }
        Ok(())
    }

    fn observe(&mut self, probe: Option<Probe>) {
        let Some(probe) = probe else {
            return;
        };
        if self.probes.back().is_some_and(|last| last.at >= probe.at)
            || self.time_watermark.is_some_and(|tw| tw >= probe.at)
        {
            return; // seen already, or says nothing new
        }
        if self.probes.len() == MAX_PROBES {
            self.probes.pop_front();
        }
        self.probes.push_back(probe);
        self.settle_probes();
    }

    /// Moves the time watermark to the latest probe the durable offset has reached.
    fn settle_probes(&mut self) {
        let durable = self.durable_offset;
        let reached = self
            .probes
            .iter()
            .filter(|p| p.high_watermark <= durable)
            .map(|p| p.at)
            .max();
        if let Some(at) = reached {
            self.time_watermark = Some(self.time_watermark.map_or(at, |tw| tw.max(at)));
            self.probes.retain(|p| p.at > at);
        }
    }

    fn pointer(&self) -> Watermark {
        let mut pointer = Watermark::new(
            &self.topic,
            self.partition,
            self.partitions,
            self.epoch,
            self.durable_offset,
        );
        pointer.time_watermark = self.time_watermark;
        pointer.last_record.clone_from(&self.last_record);
        pointer
    }

    /// PUTs the pointer when it differs from the published one; returns the PUTs made.
    async fn publish(&mut self) -> Result<u64> {
        let pointer = self.pointer();
        if self.published.as_ref() == Some(&pointer) {
            return Ok(0);
        }
        pointer.write(self.store.as_ref()).await?;
        self.published = Some(pointer);
        Ok(1)
    }
}
