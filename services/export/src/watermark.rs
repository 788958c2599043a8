//! The first watermark: an export covers every event the events topic had accepted when the
//! export was requested.
//!
//! When a job is accepted, the end offsets of every partition of the events topic are recorded
//! in its spec ([`SourceOffsets`]). Before the engine reads the log, the runner waits until the
//! ingestion group's committed offsets have reached them. Ingestion commits an offset only after
//! everything below it is durable in the log (or in the dead-letter topic), so from then on the
//! log holds every event accepted before the request. While it waits, the job's progress says
//! how far behind ingestion is ([`IngestLag`]); past the deadline, counted from acceptance, the
//! job fails with a message saying what to check ([`too_late_message`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use telemetry::CancellationToken;

use crate::clock::Clock;

/// Where the events topic ended when an export was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOffsets {
    pub topic: String,
    /// Every partition of the topic then, in partition order.
    pub partitions: Vec<PartitionEnd>,
}

impl SourceOffsets {
    /// Partitions that end at `ends` (partition, end offset), each holding all it ever had.
    pub fn from_ends(topic: &str, ends: &[(i32, i64)]) -> Self {
        Self {
            topic: topic.to_owned(),
            partitions: ends
                .iter()
                .map(|&(partition, end_offset)| PartitionEnd {
                    partition,
                    end_offset,
                    start_offset: 0,
                })
                .collect(),
        }
    }
}

/// One partition's end: the offset after the last event it had accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEnd {
    pub partition: i32,
    pub end_offset: i64,
    /// The oldest offset the partition still held (its low watermark): below it retention has
    /// removed everything, so a group that never committed there is not behind by it.
    #[serde(default)]
    pub start_offset: i64,
}

/// How far ingestion is behind a job's source offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestLag {
    /// Offsets not yet committed by the ingestion group, summed over the partitions (events,
    /// counting those bound for the dead-letter topic).
    pub events: u64,
    /// Partitions where the group has not reached the recorded end.
    pub partitions: u32,
}

impl IngestLag {
    pub fn caught_up(self) -> bool {
        self.partitions == 0
    }
}

/// How far the group's `committed` offsets (only partitions that have one) are behind `source`.
/// A partition without a committed offset is behind by all it held (end minus start), so an
/// empty one, or one whose events retention has all removed, counts as caught up: ingestion
/// never sees a message there and so never commits.
pub fn lag(source: &SourceOffsets, committed: &BTreeMap<i32, i64>) -> IngestLag {
    let mut lag = IngestLag::default();
    for end in &source.partitions {
        let start = end.start_offset.max(0);
        let at = committed
            .get(&end.partition)
            .copied()
            .unwrap_or(start)
            .max(start);
        let behind = u64::try_from(end.end_offset - at).unwrap_or(0);
        if behind > 0 {
            lag.events += behind;
            lag.partitions += 1;
        }
    }
    lag
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The progress text while a job waits for ingestion.
pub fn waiting_message(lag: IngestLag) -> String {
    format!(
        "waiting for ingestion: {} behind on {}",
        plural(lag.events, "event", "events"),
        plural(u64::from(lag.partitions), "partition", "partitions")
    )
}

/// Why a job failed at its deadline, for the person who requested it and the operator.
/// `lag` is the last one measured (`None`: the offsets could never be read, see `error`).
pub fn too_late_message(
    lag: Option<IngestLag>,
    topic: &str,
    group: &str,
    waited: Duration,
    error: Option<&str>,
) -> String {
    let what = match lag {
        Some(lag) => format!(
            "ingestion had not yet written {} accepted before this export was requested \
             (consumer group {group:?} is behind on {} of topic {topic:?})",
            plural(lag.events, "event", "events"),
            plural(u64::from(lag.partitions), "partition", "partitions"),
        ),
        None => format!(
            "the committed offsets of the ingestion group {group:?} on topic {topic:?} could \
             not be read"
        ),
    };
    let error = error.map_or_else(String::new, |e| format!(" (last error: {e})"));
    format!(
        "gave up waiting for ingestion {}s after the export was accepted: {what}{error}; the \
         archive would have missed them, so none was made. Check the ingestion service (its /readyz and /metrics, e.g. \
         cce_ingest_consumer_lag, cce_ingest_partition_stalled and cce_ingest_write_retries_total, and its logs), then \
         request the export again",
        waited.as_secs()
    )
}

/// Reading the events topic cannot be done now.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(
        "the events topic {topic:?} does not exist: set CCE_EVENTS_TOPIC to the ingestion \
         service's topic"
    )]
    NoTopic { topic: String },
    #[error("reading the offsets of the events topic {topic:?}: {reason}")]
    Kafka { topic: String, reason: String },
}

/// Reads the events topic's end offsets and the ingestion group's committed offsets.
///
/// One consumer client carrying the ingestion group's id, never subscribed: it only asks the
/// group coordinator for committed offsets (OffsetFetch), so it never joins the group or
/// commits anything. Its calls block, so they run on the blocking pool.
#[derive(Clone)]
pub struct KafkaPositions {
    consumer: Arc<BaseConsumer>,
    topic: String,
    group: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaPositions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPositions")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KafkaPositions {
    pub fn new(brokers: &str, topic: &str, group: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            group: group.to_owned(),
            timeout: Duration::from_secs(10),
        })
    }

    fn kafka_error(&self, reason: impl std::fmt::Display) -> OffsetsError {
        OffsetsError::Kafka {
            topic: self.topic.clone(),
            reason: reason.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Positions for KafkaPositions {
    async fn end_offsets(&self) -> Result<SourceOffsets, OffsetsError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = this
                .consumer
                .fetch_metadata(Some(&this.topic), this.timeout)
                .map_err(|e| this.kafka_error(e))?;
            let mut partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == this.topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(OffsetsError::NoTopic {
                    topic: this.topic.clone(),
                });
            }
            partitions.sort_unstable();
            let partitions = partitions
                .into_iter()
                .map(|partition| {
                    this.consumer
                        .fetch_watermarks(&this.topic, partition, this.timeout)
                        .map(|(low, high)| PartitionEnd {
                            partition,
                            end_offset: high,
                            start_offset: low,
                        })
                        .map_err(|e| this.kafka_error(e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SourceOffsets {
                topic: this.topic.clone(),
                partitions,
            })
        })
        .await
        .map_err(|e| self.kafka_error(e))?
    }

    async fn committed(&self, source: &SourceOffsets) -> Result<BTreeMap<i32, i64>, OffsetsError> {
        let this = self.clone();
        let mut list = TopicPartitionList::new();
        for end in &source.partitions {
            list.add_partition(&source.topic, end.partition);
        }
        tokio::task::spawn_blocking(move || {
            let committed = this
                .consumer
                .committed_offsets(list, this.timeout)
                .map_err(|e| this.kafka_error(e))?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(at) => Some((e.partition(), at)),
                    _ => None,
                })
                .collect())
        })
        .await
        .map_err(|e| self.kafka_error(e))?
    }
}

/// Where the events topic ends and where the ingestion group stands: Kafka in production
/// ([`KafkaPositions`]), fixed values in unit tests ([`FixedPositions`]).
#[async_trait::async_trait]
pub trait Positions: Send + Sync + std::fmt::Debug + 'static {
    /// The end offset (high watermark) of every partition of the events topic now.
    async fn end_offsets(&self) -> Result<SourceOffsets, OffsetsError>;
    /// The ingestion group's committed offsets on `source`'s partitions (those with one).
    async fn committed(&self, source: &SourceOffsets) -> Result<BTreeMap<i32, i64>, OffsetsError>;
}

/// Positions set by hand, for unit tests of the API and the runner.
#[derive(Debug, Clone)]
pub struct FixedPositions {
    inner: Arc<std::sync::Mutex<(SourceOffsets, BTreeMap<i32, i64>)>>,
}

impl FixedPositions {
    /// A topic whose partitions end at `ends`, with the group's committed offsets `committed`.
    pub fn new(topic: &str, ends: &[(i32, i64)], committed: &[(i32, i64)]) -> Self {
        let source = SourceOffsets::from_ends(topic, ends);
        Self {
            inner: Arc::new(std::sync::Mutex::new((
                source,
                committed.iter().copied().collect(),
            ))),
        }
    }

    /// Moves the group's committed offset of `partition` to `offset`.
    pub fn commit(&self, partition: i32, offset: i64) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .insert(partition, offset);
    }
}

#[async_trait::async_trait]
impl Positions for FixedPositions {
    async fn end_offsets(&self) -> Result<SourceOffsets, OffsetsError> {
        Ok(self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone())
    }

    async fn committed(&self, source: &SourceOffsets) -> Result<BTreeMap<i32, i64>, OffsetsError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(source
            .partitions
            .iter()
            .filter_map(|end| inner.1.get(&end.partition).map(|c| (end.partition, *c)))
            .collect())
    }
}

/// Where ingestion stands, for exports to record and wait for.
#[derive(Debug, Clone)]
pub struct IngestOffsets {
    positions: Arc<dyn Positions>,
    group: String,
}

impl IngestOffsets {
    /// Reads the events topic and the ingestion group from Kafka.
    pub fn new(brokers: &str, topic: &str, group: &str) -> anyhow::Result<Self> {
        Ok(Self::with(
            Arc::new(KafkaPositions::new(brokers, topic, group)?),
            group,
        ))
    }

    /// An empty events topic, so nothing ever waits: for unit tests of the API and the runner.
    pub fn caught_up() -> Self {
        Self::with(
            Arc::new(FixedPositions::new("events", &[(0, 0)], &[])),
            "ingest",
        )
    }

    pub fn with(positions: Arc<dyn Positions>, group: &str) -> Self {
        Self {
            positions,
            group: group.to_owned(),
        }
    }

    /// The end offset (high watermark) of every partition of the events topic now.
    pub async fn end_offsets(&self) -> Result<SourceOffsets, OffsetsError> {
        self.positions.end_offsets().await
    }

    /// The ingestion group's committed offsets on `source`'s partitions (those with one).
    pub async fn committed(
        &self,
        source: &SourceOffsets,
    ) -> Result<BTreeMap<i32, i64>, OffsetsError> {
        self.positions.committed(source).await
    }

    /// Waits until the ingestion group has committed `source`'s offsets, reporting each lag
    /// measured to `report`; fails once `wait` has passed since `accepted` (by `clock`) with
    /// ingestion still behind. The deadline is checked after the offsets: a job that waited in
    /// the queue past it still runs when ingestion has caught up.
    pub async fn wait_for(
        &self,
        source: &SourceOffsets,
        accepted: DateTime<Utc>,
        wait: Duration,
        clock: &dyn Clock,
        cancel: &CancellationToken,
        mut report: impl FnMut(IngestLag),
    ) -> Result<(), WaitError> {
        let deadline = accepted
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::days(1));
        let mut last: Option<IngestLag> = None;
        loop {
            let measured = tokio::select! {
                measured = self.committed(source) => measured,
                () = cancel.cancelled() => return Err(WaitError::Cancelled),
            };
            let error = match measured {
                Ok(committed) => {
                    let lag = lag(source, &committed);
                    if lag.caught_up() {
                        return Ok(());
                    }
                    if last != Some(lag) {
                        tracing::info!(
                            topic = %source.topic, group = %self.group, events = lag.events,
                            partitions = lag.partitions, "export waiting for ingestion"
                        );
                    }
                    report(lag);
                    last = Some(lag);
                    None
                }
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "reading the ingestion group's offsets");
                    Some(e.to_string())
                }
            };
            let now = clock.now();
            if now >= deadline {
                return Err(WaitError::TooLate(too_late_message(
                    last,
                    &source.topic,
                    &self.group,
                    wait,
                    error.as_deref(),
                )));
            }
            // Ingestion commits about every second after a flush: poll at that pace, and never
            // sleep past the deadline.
            let pause = (deadline - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_millis(500));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return Err(WaitError::Cancelled),
            }
        }
    }
}

/// Why a wait for ingestion ended without it catching up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed; the message says what was behind and what to do.
    #[error("{0}")]
    TooLate(String),
    #[error("export cancelled")]
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_reports_the_lag_until_ingestion_commits_then_ends() {
        let positions = FixedPositions::new("events", &[(0, 10), (1, 4)], &[(0, 3)]);
        let ingest = IngestOffsets::with(Arc::new(positions.clone()), "ingest");
        let source = ingest.end_offsets().await.unwrap();
        let clock = crate::clock::SystemClock;
        let cancel = CancellationToken::new();
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&reports);
        let waiting = tokio::spawn({
            let (ingest, source, cancel) = (ingest.clone(), source.clone(), cancel.clone());
            async move {
                ingest
                    .wait_for(
                        &source,
                        Utc::now(),
                        Duration::from_secs(60),
                        &clock,
                        &cancel,
                        |lag| {
                            seen.lock().unwrap().push(lag);
                        },
                    )
                    .await
            }
        });
        while reports.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            reports.lock().unwrap()[0],
            IngestLag {
                events: 7 + 4,
                partitions: 2
            },
            "partition 1 has no committed offset: behind by all of it"
        );
        assert!(!waiting.is_finished());
        positions.commit(0, 10);
        positions.commit(1, 4);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends once ingestion has committed the recorded offsets")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_wait_past_its_deadline_fails_saying_what_is_behind() {
        let positions = FixedPositions::new("events", &[(0, 10)], &[(0, 9)]);
        let ingest = IngestOffsets::with(Arc::new(positions), "ingest");
        let source = ingest.end_offsets().await.unwrap();
        let accepted = Utc::now() - chrono::Duration::seconds(120);
        let failed = ingest
            .wait_for(
                &source,
                accepted,
                Duration::from_secs(60),
                &crate::clock::SystemClock,
                &CancellationToken::new(),
                |_| {},
            )
            .await;
        let Err(WaitError::TooLate(message)) = failed else {
            panic!("expected a failure, got {failed:?}");
        };
        assert!(message.contains("1 event"), "{message}");
        assert!(message.contains("request the export again"), "{message}");
    }

    fn source(ends: &[(i32, i64)]) -> SourceOffsets {
        SourceOffsets::from_ends("chat-events", ends)
    }

    #[test]
    fn lag_counts_what_the_group_has_not_committed() {
        /// (partition, offset) pairs.
        type Offsets = &'static [(i32, i64)];
        let cases: &[(Offsets, Offsets, (u64, u32), &str)] = &[
            (&[], &[], (0, 0), "a topic with no partitions recorded"),
            (
                &[(0, 0), (1, 0)],
                &[],
                (0, 0),
                "empty partitions, no commits yet",
            ),
            (&[(0, 5)], &[], (5, 1), "events but no commit yet"),
            (
                &[(0, 5), (1, 3)],
                &[(0, 5), (1, 3)],
                (0, 0),
                "exactly caught up",
            ),
            (
                &[(0, 5), (1, 3)],
                &[(0, 9), (1, 4)],
                (0, 0),
                "past the recorded ends",
            ),
            (
                &[(0, 5), (1, 3)],
                &[(0, 2), (1, 3)],
                (3, 1),
                "one partition behind",
            ),
            (
                &[(0, 5), (1, 3), (2, 0)],
                &[(0, 1)],
                (7, 2),
                "one partial, one uncommitted",
            ),
            (
                &[(0, 5)],
                &[(1, 100)],
                (5, 1),
                "a commit on another partition does not count",
            ),
        ];
        for (ends, committed, (events, partitions), what) in cases {
            let committed: BTreeMap<i32, i64> = committed.iter().copied().collect();
            assert_eq!(
                lag(&source(ends), &committed),
                IngestLag {
                    events: *events,
                    partitions: *partitions
                },
                "{what}"
            );
        }
    }

    #[test]
    fn what_retention_removed_is_not_waited_for() {
        let source = SourceOffsets {
            topic: "chat-events".into(),
            partitions: vec![
                // Retention removed all 500: ingestion never sees a message there.
                PartitionEnd {
                    partition: 0,
                    end_offset: 500,
                    start_offset: 500,
                },
                // 20 left, none committed: behind by those 20.
                PartitionEnd {
                    partition: 1,
                    end_offset: 500,
                    start_offset: 480,
                },
                // Committed before what retention kept: behind by what is kept.
                PartitionEnd {
                    partition: 2,
                    end_offset: 100,
                    start_offset: 90,
                },
            ],
        };
        let committed: BTreeMap<i32, i64> = [(2, 10)].into_iter().collect();
        assert_eq!(
            lag(&source, &committed),
            IngestLag {
                events: 20 + 10,
                partitions: 2
            }
        );
        // Records written before the start offset was kept still fold (and count from 0).
        let old: PartitionEnd =
            serde_json::from_str(r#"{"partition": 0, "end_offset": 5}"#).unwrap();
        assert_eq!(old.start_offset, 0);
    }

    #[test]
    fn the_waiting_text_says_how_far_behind() {
        let cases = [
            (
                (1, 1),
                "waiting for ingestion: 1 event behind on 1 partition",
            ),
            (
                (120, 2),
                "waiting for ingestion: 120 events behind on 2 partitions",
            ),
        ];
        for ((events, partitions), text) in cases {
            assert_eq!(waiting_message(IngestLag { events, partitions }), text);
        }
    }

    #[test]
    fn the_deadline_message_says_what_is_behind_and_what_to_do() {
        let lag = IngestLag {
            events: 5,
            partitions: 1,
        };
        let text = too_late_message(
            Some(lag),
            "chat-events",
            "cce-ingestion",
            Duration::from_secs(900),
            None,
        );
        for part in [
            "900s after the export was accepted",
            "5 events",
            "1 partition of topic \"chat-events\"",
            "\"cce-ingestion\"",
            "ingestion service",
            "/readyz",
            "/metrics",
            "request the export again",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }
        let unread = too_late_message(
            None,
            "chat-events",
            "cce-ingestion",
            Duration::from_secs(3),
            Some("broker down"),
        );
        assert!(
            unread.contains("could not be read") && unread.contains("broker down"),
            "{unread}"
        );
        assert!(unread.contains("request the export again"), "{unread}");
    }

    #[test]
    fn job_specs_recorded_before_source_offsets_still_fold() {
        use crate::state::{JobProgress, JobSpec};
        let old = r#"{"from":null,"to":"2026-01-08T00:00:00Z","format":"json"}"#;
        let spec: JobSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.source, None);
        let new = JobSpec {
            source: Some(source(&[(0, 7), (1, 0)])),
            ..spec
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""partition":0,"end_offset":7"#), "{json}");
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), new);
        let progress: JobProgress = serde_json::from_str(
            r#"{"events_read":1,"files_written":0,"bytes_written":0,"percent":3}"#,
        )
        .unwrap();
        assert_eq!(progress.waiting_for_ingestion, None);
    }
}
