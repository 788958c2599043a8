//! Unit tests of the v2 writer against the in-memory store.

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

#[tokio::test]
async fn a_writer_stopped_between_marker_and_pointer_resumes_the_epoch_from_its_start() {
    let store = Arc::new(MemoryStore::new());
    let kafka = FakeKafka::new("k1", 0, 50);
    first_epoch(&store, &kafka).await;
    // Epoch 2's marker is written, then the writer dies before the pointer.
    let marker = EpochMarker::new(
        TOPIC,
        P,
        2,
        Some("k1".into()),
        0,
        "offsets went back",
        Some(crate::v2::epoch::PreviousEpoch {
            epoch: 1,
            durable_offset: 50,
        }),
    );
    marker.write(store.as_ref()).await.unwrap();
    kafka.set("k1", 0, 60);
    let log = open(&store, &kafka).await;
    assert_eq!(
        (log.epoch(), log.opened().began),
        (2, None),
        "the same epoch 2"
    );
    assert_eq!(
        log.resume_from(),
        Some(0),
        "from its start, not the group's offset"
    );
    let p = pointer(&store).await;
    assert_eq!((p.epoch, p.durable_offset), (2, 0));
}

#[tokio::test]
async fn a_stale_writer_refuses_to_write_once_the_partition_was_taken_over() {
    let store = Arc::new(MemoryStore::new());
    let kafka = FakeKafka::new("k1", 0, 100);
    let mut a = open(&store, &kafka).await;
    a.write(&range(0, 1), &posts(0..=1, 2), "sha1".into(), None)
        .await
        .unwrap();
    // The partition moves to B, which flushes 2..=5; A, not told yet, flushes 2..=3.
    let mut b = open(&store, &kafka).await;
    assert_eq!((b.epoch(), b.durable_offset()), (1, 2));
    b.write(&range(2, 5), &posts(2..=5, 2), "sha5".into(), None)
        .await
        .unwrap();
    let before = objects(&store, "log/v2/").await;
    let refused = a
        .write(&range(2, 3), &posts(2..=3, 2), "sha3".into(), None)
        .await;
    assert!(
        refused.as_ref().is_err_and(LogError::is_taken_over),
        "a stale writer wrote: {refused:?}"
    );
    // Nothing written: no segment 2..=3, and the pointer did not go back.
    assert_eq!(objects(&store, "log/v2/").await, before);
    assert_eq!(pointer(&store).await.durable_offset, 6);
    // An idle stale writer does not move the pointer back either.
    assert!(
        a.advance(Some(probe(10, 2)))
            .await
            .is_err_and(|e| e.is_taken_over())
    );
    assert_eq!(objects(&store, "log/v2/").await, before);
    // Had a stale writer got between B's check and its PUTs and moved the pointer back, B's
    // next flush (here a replay of what it wrote) writes it forward again.
    let mut back = pointer(&store).await;
    back.durable_offset = 4;
    back.write(store.as_ref()).await.unwrap();
    let stats = b
        .write(&range(2, 5), &posts(2..=5, 2), "sha5".into(), None)
        .await
        .unwrap();
    assert_eq!((stats.segments, stats.watermarks), (0, 1));
    assert_eq!(pointer(&store).await.durable_offset, 6);
}

#[tokio::test]
async fn records_expired_before_they_were_logged_begin_a_new_epoch_that_shows_the_gap() {
    // Kafka still holds the offset after the durable one: no gap, same epoch.
    let store = Arc::new(MemoryStore::new());
    let kafka = FakeKafka::new("k1", 0, 50);
    first_epoch(&store, &kafka).await;
    kafka.set("k1", 50, 200);
    let log = open(&store, &kafka).await;
    assert_eq!((log.epoch(), log.opened().began), (1, None));

    // Retention removed offsets 50..79 before they were logged.
    let store = Arc::new(MemoryStore::new());
    let kafka = FakeKafka::new("k1", 0, 50);
    first_epoch(&store, &kafka).await;
    kafka.set("k1", 80, 200);
    let log = open(&store, &kafka).await;
    assert_eq!(log.epoch(), 2);
    assert_eq!(
        log.opened().began.map(EpochReason::as_str),
        Some("records expired")
    );
    assert_eq!(log.resume_from(), Some(80));
    let marker = EpochMarker::latest(store.as_ref(), TOPIC, P)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(marker.reason, "records expired");
    // The marker says where the log ended and where the new epoch starts: the gap.
    assert_eq!(
        (
            marker.previous.map(|p| p.durable_offset),
            marker.start_offset
        ),
        (Some(50), 80)
    );
}
