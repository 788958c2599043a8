//! The v2 writer of one partition (`docs/log-format.md`): on assignment it decides the epoch
//! ([`crate::epoch`]); then each flush writes exactly one segment (create-only) and then the
//! partition's watermark pointer, the one mutable object of the log.
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
use storage::{ObjectStore, PutNew, put_new};

use crate::format::SourceRange;
use crate::lineage::{
    Decision, EpochReason, KafkaSide, Lineage, LineageError, LogSide, PointerSide,
};
use crate::v2::epoch::EpochMarker;
use crate::v2::keys;
use crate::v2::pointer::{LastRecord, Watermark};
use crate::v2::segment;
use crate::writer::PendingRecord;
use crate::{LogError, Result};

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
    /// Objects written while opening: `(kind, count)` with kinds `epoch` and `watermark`.
    pub epoch_markers_written: u64,
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
                }
            }
            Decision::Begin(new, reason) => {
                let written = put_new(self.store.as_ref(), &new.key(), new.encode()?).await?;
                tracing::info!(
                    topic,
                    partition,
                    epoch = new.epoch,
                    reason = reason.as_str(),
                    start_offset = new.start_offset,
                    "a new log epoch begins"
                );
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
    /// stop (nothing was replaced).
    pub async fn write(
        &mut self,
        source: &SourceRange,
        records: &[PendingRecord],
        last_payload_sha256: String,
        probe: Option<Probe>,
    ) -> Result<FlushStats> {
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
    /// pointer. Returns the PUTs made (0 or 1).
    pub async fn advance(&mut self, probe: Option<Probe>) -> Result<u64> {
        self.observe(probe);
        self.publish().await
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use event_model::{Limits, parse_event};
    use serde_json::json;
    use storage::{ErrorKind, MemoryStore, list_all};

    use super::*;

    const TOPIC: &str = "chat-events";
    const P: i32 = 3;

    /// Kafka as a test wants it: a cluster id, a partition's watermarks and its payloads.
    #[derive(Debug)]
    struct FakeKafka {
        state: Mutex<(String, i64, i64, BTreeMap<i64, String>)>,
    }

    impl FakeKafka {
        fn new(cluster: &str, low: i64, high: i64) -> Self {
            Self {
                state: Mutex::new((cluster.into(), low, high, BTreeMap::new())),
            }
        }
        fn set(&self, cluster: &str, low: i64, high: i64) {
            let mut state = self.state.lock().unwrap();
            (state.0, state.1, state.2) = (cluster.into(), low, high);
        }
        fn payload(&self, offset: i64, sha: &str) {
            self.state.lock().unwrap().3.insert(offset, sha.into());
        }
    }

    #[async_trait]
    impl Lineage for FakeKafka {
        async fn cluster_id(&self) -> Result<String, LineageError> {
            Ok(self.state.lock().unwrap().0.clone())
        }
        async fn watermarks(&self, _partition: i32) -> Result<(i64, i64), LineageError> {
            let state = self.state.lock().unwrap();
            Ok((state.1, state.2))
        }
        async fn payload_sha256(
            &self,
            _partition: i32,
            offset: i64,
        ) -> Result<Option<String>, LineageError> {
            Ok(self.state.lock().unwrap().3.get(&offset).cloned())
        }
    }

    fn post(id: &str, owner: &str, offset: i64) -> PendingRecord {
        let value = json!({"event_id": id, "type": "post.created",
            "occurred_at": "2026-11-25T10:00:00Z",
            "conversation": {"id": format!("c-{owner}"), "kind": "team", "owner_company_id": owner},
            "post_id": id, "author_id": "u", "text": format!("text of {id}")});
        let (event, raw) = parse_event(
            &serde_json::to_vec(&value).unwrap(),
            &Limits::default(),
            "2026-12-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        PendingRecord { offset, event, raw }
    }

    /// Records at `offsets`, spread over `companies` companies.
    fn posts(offsets: std::ops::RangeInclusive<i64>, companies: i64) -> Vec<PendingRecord> {
        offsets
            .map(|o| post(&format!("e{o}"), &format!("co{}", o % companies), o))
            .collect()
    }

    fn range(first: i64, last: i64) -> SourceRange {
        SourceRange {
            topic: TOPIC.into(),
            partition: P,
            first_offset: first,
            last_offset: last,
        }
    }

    fn probe(secs: i64, high_watermark: i64) -> Probe {
        Probe {
            at: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            high_watermark,
        }
    }

    async fn objects(store: &MemoryStore, prefix: &str) -> BTreeMap<String, bytes::Bytes> {
        let mut all = BTreeMap::new();
        for object in list_all(store, prefix).await.unwrap() {
            all.insert(object.key.clone(), store.get(&object.key).await.unwrap());
        }
        all
    }

    async fn pointer(store: &MemoryStore) -> Watermark {
        Watermark::read(store, TOPIC, P).await.unwrap().unwrap()
    }

    async fn open(store: &Arc<MemoryStore>, kafka: &FakeKafka) -> PartitionLog {
        let store: Arc<dyn ObjectStore> = Arc::<MemoryStore>::clone(store);
        LogWriter::new(store)
            .open_partition(TOPIC, P, 12, kafka)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_first_open_begins_epoch_one_at_the_low_watermark() {
        let store = Arc::new(MemoryStore::new());
        let kafka = FakeKafka::new("k1", 40, 100);
        let log = open(&store, &kafka).await;
        assert_eq!(log.epoch(), 1);
        assert_eq!(log.resume_from(), Some(40));
        assert_eq!(log.opened().began, Some(EpochReason::First));
        assert_eq!(log.opened().epoch_markers_written, 1);
        let marker = EpochMarker::latest(store.as_ref(), TOPIC, P)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (marker.epoch, marker.start_offset, marker.reason.as_str()),
            (1, 40, "first")
        );
        assert_eq!(marker.cluster_id.as_deref(), Some("k1"));
        let pointer = pointer(&store).await;
        assert_eq!((pointer.epoch, pointer.durable_offset), (1, 40));
        assert_eq!((pointer.partitions, pointer.time_watermark), (12, None));
    }

    #[tokio::test]
    async fn a_flush_writes_one_segment_and_one_pointer_however_many_companies() {
        for companies in [1, 10, 500] {
            let store = Arc::new(MemoryStore::new());
            let kafka = FakeKafka::new("k1", 0, 1000);
            let mut log = open(&store, &kafka).await;
            let before = objects(&store, "log/v2/").await.len();
            let stats = log
                .write(
                    &range(0, 999),
                    &posts(0..=999, companies),
                    "sha999".into(),
                    None,
                )
                .await
                .unwrap();
            assert_eq!((stats.segments, stats.watermarks, stats.puts()), (1, 1, 2));
            let after = objects(&store, "log/v2/").await;
            assert_eq!(
                after.len(),
                before + 1,
                "{companies} companies: one new object"
            );
            let segments = objects(&store, &keys::segments_prefix(TOPIC, P, 1)).await;
            assert_eq!(
                segments.keys().collect::<Vec<_>>(),
                [&keys::segment_key(1, &range(0, 999))]
            );
            let pointer = pointer(&store).await;
            assert_eq!(pointer.durable_offset, 1000);
            assert_eq!(
                pointer.last_record,
                Some(LastRecord {
                    offset: 999,
                    payload_sha256: "sha999".into()
                })
            );
        }
    }

    #[tokio::test]
    async fn records_below_the_durable_offset_are_dropped_and_a_replay_writes_nothing() {
        let store = Arc::new(MemoryStore::new());
        let kafka = FakeKafka::new("k1", 0, 100);
        let mut log = open(&store, &kafka).await;
        log.write(&range(0, 49), &posts(0..=49, 3), "sha49".into(), None)
            .await
            .unwrap();
        kafka.payload(49, "sha49");

        // Reassigned: the same epoch, from the durable offset; the consumer replays from an
        // older committed offset.
        let mut log = open(&store, &kafka).await;
        assert_eq!((log.epoch(), log.resume_from()), (1, None));
        assert_eq!(log.durable_offset(), 50);
        let before = objects(&store, "log/v2/").await;
        let stats = log
            .write(&range(10, 49), &posts(10..=49, 3), "sha49".into(), None)
            .await
            .unwrap();
        assert_eq!(
            (stats.skipped, stats.puts()),
            (40, 0),
            "all of it is durable"
        );
        assert_eq!(objects(&store, "log/v2/").await, before);

        // Overlapping the durable offset: the segment starts at it.
        let stats = log
            .write(&range(40, 59), &posts(40..=59, 3), "sha59".into(), None)
            .await
            .unwrap();
        assert_eq!((stats.skipped, stats.segments), (10, 1));
        let segments = objects(&store, &keys::segments_prefix(TOPIC, P, 1)).await;
        assert!(segments.contains_key(&keys::segment_key(1, &range(50, 59))));
        let (header, by_company) = segment::decode(
            &keys::segment_key(1, &range(50, 59)),
            &segments[&keys::segment_key(1, &range(50, 59))],
        )
        .unwrap();
        assert_eq!(header.records, 10);
        let min = by_company
            .iter()
            .flat_map(|(_, records)| records.iter().map(|r| r.offset))
            .min();
        assert_eq!(min, Some(50));
    }

    #[tokio::test]
    async fn a_crash_before_the_pointer_replays_into_the_same_bytes() {
        let store = Arc::new(MemoryStore::new());
        let kafka = FakeKafka::new("k1", 0, 100);
        let log = open(&store, &kafka).await;
        drop(log);
        let pointer_before = store.get(&keys::watermark_key(TOPIC, P)).await.unwrap();
        let mut log = open(&store, &kafka).await;
        log.write(&range(0, 29), &posts(0..=29, 4), "sha29".into(), None)
            .await
            .unwrap();
        let written = objects(&store, &keys::segments_prefix(TOPIC, P, 1)).await;
        // The pointer PUT never happened: put the old one back.
        store
            .put(&keys::watermark_key(TOPIC, P), pointer_before)
            .await
            .unwrap();
        let mut log = open(&store, &kafka).await;
        assert_eq!(log.durable_offset(), 0);
        let stats = log
            .write(&range(0, 29), &posts(0..=29, 4), "sha29".into(), None)
            .await
            .unwrap();
        assert_eq!((stats.segments, stats.segments_already_there), (0, 1));
        assert_eq!(
            objects(&store, &keys::segments_prefix(TOPIC, P, 1)).await,
            written
        );
        assert_eq!(pointer(&store).await.durable_offset, 30);
    }

    #[tokio::test]
    async fn a_segment_name_holding_other_bytes_is_refused_and_left_alone() {
        let store = Arc::new(MemoryStore::new());
        let kafka = FakeKafka::new("k1", 0, 100);
        let mut log = open(&store, &kafka).await;
        let key = keys::segment_key(1, &range(0, 9));
        let squatter = bytes::Bytes::from_static(b"another history");
        store.put(&key, squatter.clone()).await.unwrap();
        let error = log
            .write(&range(0, 9), &posts(0..=9, 2), "sha9".into(), None)
            .await
            .unwrap_err();
        assert!(error.is_conflict(), "{error}");
        assert!(matches!(&error, LogError::Storage(e) if e.kind == ErrorKind::Conflict));
        assert_eq!(store.get(&key).await.unwrap(), squatter);
        assert_eq!(log.durable_offset(), 0, "the partition did not move");
        assert_eq!(pointer(&store).await.durable_offset, 0);
    }

    /// Writes offsets 0..50 in epoch 1 and returns every object of it, bytes included.
    async fn first_epoch(
        store: &Arc<MemoryStore>,
        kafka: &FakeKafka,
    ) -> BTreeMap<String, bytes::Bytes> {
        let mut log = open(store, kafka).await;
        log.write(&range(0, 49), &posts(0..=49, 5), "sha49".into(), None)
            .await
            .unwrap();
        kafka.payload(49, "sha49");
        let mut all = objects(store, &keys::segments_prefix(TOPIC, P, 1)).await;
        all.extend(objects(store, &keys::epochs_prefix(TOPIC, P)).await);
        all
    }

    #[tokio::test]
    async fn each_epoch_rule_begins_a_new_epoch_and_leaves_the_old_one_alone() {
        type Change = fn(&FakeKafka);
        let cases: [(&str, Change, EpochReason); 3] = [
            (
                "cluster",
                |k| k.set("k2", 0, 500),
                EpochReason::ClusterChanged,
            ),
            (
                "re-created topic, fewer records",
                |k| k.set("k1", 0, 20),
                EpochReason::OffsetsWentBack,
            ),
            (
                "re-created topic, more records",
                |k| {
                    k.set("k1", 0, 500);
                    k.payload(49, "another payload");
                },
                EpochReason::RecordDiffers,
            ),
        ];
        for (name, change, reason) in cases {
            let store = Arc::new(MemoryStore::new());
            let kafka = FakeKafka::new("k1", 0, 50);
            let first = first_epoch(&store, &kafka).await;
            change(&kafka);
            let mut log = open(&store, &kafka).await;
            assert_eq!(log.epoch(), 2, "{name}");
            assert_eq!(log.opened().began, Some(reason), "{name}");
            assert_eq!(log.resume_from(), Some(0), "{name}: from the low watermark");
            let marker = EpochMarker::latest(store.as_ref(), TOPIC, P)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(marker.reason, reason.as_str());
            assert_eq!(
                marker.previous,
                Some(crate::v2::epoch::PreviousEpoch {
                    epoch: 1,
                    durable_offset: 50
                })
            );
            let p = pointer(&store).await;
            assert_eq!(
                (p.epoch, p.durable_offset, p.last_record),
                (2, 0, None),
                "{name}"
            );
            // The new history's offsets 0..49 again: new names, the old objects untouched.
            log.write(&range(0, 49), &posts(0..=49, 7), "new49".into(), None)
                .await
                .unwrap();
            let mut after = objects(&store, &keys::segments_prefix(TOPIC, P, 1)).await;
            after.extend(
                objects(&store, &keys::epochs_prefix(TOPIC, P))
                    .await
                    .into_iter()
                    .filter(|(k, _)| first.contains_key(k)),
            );
            assert_eq!(after, first, "{name}: epoch 1 byte for byte");
            assert_eq!(
                objects(&store, &keys::segments_prefix(TOPIC, P, 2))
                    .await
                    .len(),
                1,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn the_same_lineage_keeps_the_epoch_and_two_openers_agree() {
        let store = Arc::new(MemoryStore::new());
        let kafka = FakeKafka::new("k1", 0, 50);
        first_epoch(&store, &kafka).await;
        kafka.set("k1", 0, 80);
        let log = open(&store, &kafka).await;
        assert_eq!(
            (log.epoch(), log.opened().began, log.resume_from()),
            (1, None, None)
        );

        // Two replicas begin epoch 2 at once: the same marker bytes, no conflict.
        kafka.set("k1", 0, 10);
        let (a, b) = tokio::join!(open(&store, &kafka), open(&store, &kafka));
        assert_eq!((a.epoch(), b.epoch()), (2, 2));
        assert_eq!(
            objects(&store, &keys::epochs_prefix(TOPIC, P)).await.len(),
            2
        );
    }

    #[tokio::test]
    async fn the_time_watermark_follows_probes_the_durable_offset_reached() {
        let store = Arc::new(MemoryStore::new());
        let kafka = FakeKafka::new("k1", 0, 0);
        let mut log = open(&store, &kafka).await;
        // At t=10 the partition ended at 20; the flush reaches 10 only.
        log.write(
            &range(0, 9),
            &posts(0..=9, 2),
            "s9".into(),
            Some(probe(10, 20)),
        )
        .await
        .unwrap();
        assert_eq!(log.time_watermark(), None);
        assert_eq!(pointer(&store).await.time_watermark, None);
        // A later probe (t=15, end 30) arrives before the flush that reaches 20.
        log.write(
            &range(10, 19),
            &posts(10..=19, 2),
            "s19".into(),
            Some(probe(15, 30)),
        )
        .await
        .unwrap();
        assert_eq!(
            log.time_watermark(),
            Some(probe(10, 0).at),
            "the t=10 probe holds"
        );
        // Idle: nothing new at t=20 (end still 20)... the t=15 probe is not reached yet.
        assert_eq!(
            log.advance(Some(probe(12, 20))).await.unwrap(),
            0,
            "older than the last probe"
        );
        log.write(&range(20, 29), &posts(20..=29, 2), "s29".into(), None)
            .await
            .unwrap();
        assert_eq!(log.time_watermark(), Some(probe(15, 0).at));
        // Idle partition: each newer probe at the end moves it; the same one writes nothing.
        assert_eq!(log.advance(Some(probe(25, 30))).await.unwrap(), 1);
        assert_eq!(pointer(&store).await.time_watermark, Some(probe(25, 0).at));
        assert_eq!(log.advance(Some(probe(25, 30))).await.unwrap(), 0);
        assert_eq!(log.advance(None).await.unwrap(), 0);
        // Reopened, the time watermark carries on.
        kafka.payload(29, "s29");
        kafka.set("k1", 0, 30);
        let log = open(&store, &kafka).await;
        assert_eq!(log.time_watermark(), Some(probe(25, 0).at));
    }
}
