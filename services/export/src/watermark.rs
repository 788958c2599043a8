//! The log's durable watermark: an export reads the log only once the log itself says it holds
//! every event of the range, and then reads it at exactly that position.
//!
//! Ingestion publishes, per partition of the events topic, a watermark pointer
//! (`log/v2/watermarks/<topic>/<partition>.json`): the offset below which everything is durable
//! in the log, and a time watermark — every event published to the partition before it is
//! durable. Before the engine reads the log, the runner re-reads these pointers every few
//! seconds ([`LogWatermark::wait_for`]) until every partition has one and the smallest time
//! watermark has reached [`Needed::at`]: the export's acceptance — everything published before
//! the request, whatever its `occurred_at` (a backfill, a backlog behind a stalled partition) —
//! or, for a range that ends less than a lateness grace before the request (or later), the
//! range's end plus the grace. It then returns the [`LogPosition`] it saw, and the engine
//! reads the log at it (`LogReader::at`): events that become durable afterwards are not half
//! included, and the same position gives the same archive. While it waits, the job's progress
//! says how far the log has got ([`LogLag`]); past the deadline, counted from acceptance, the job
//! fails with a message saying what to check ([`too_late_message`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use storage::ObjectStore;
use telemetry::CancellationToken;

use crate::clock::Clock;
pub use compliance_log::{LogPosition, PartitionPosition};

/// Until when the log must be durable before a job may read it, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needed {
    /// Every event published before this instant must be durable in the log.
    pub at: DateTime<Utc>,
    /// The lateness grace added to the range's end, in seconds; `None` when `at` is the
    /// export's acceptance (which came later, or at the same instant).
    pub grace_secs: Option<u64>,
}

impl Needed {
    /// `max(to + grace, accepted)`: an export holds every event of its range published before
    /// it was requested, however long after its `occurred_at` that was (a backfill, a backlog
    /// behind a stalled partition), so it waits until everything published before the request
    /// is durable. An event is published a little after it occurred, so a range that ends less
    /// than `grace` before the request (or later) waits until its end plus the grace. A tie is
    /// the request.
    pub fn new(to: DateTime<Utc>, accepted: DateTime<Utc>, grace: Duration) -> Self {
        let grace_secs = grace.as_secs();
        // A grace too large to add is past any request: the end is "later" (the latest instant).
        let end = chrono::Duration::try_seconds(i64::try_from(grace_secs).unwrap_or(i64::MAX))
            .and_then(|g| to.checked_add_signed(g))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if end > accepted {
            Self {
                at: end,
                grace_secs: Some(grace_secs),
            }
        } else {
            Self {
                at: accepted,
                grace_secs: None,
            }
        }
    }

    fn why(self) -> String {
        match self.grace_secs {
            Some(grace) => format!("the range's end plus {grace}s of grace"),
            None => "when the export was requested".to_owned(),
        }
    }
}

/// How far the log is from what a waiting job needs: its progress while it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLag {
    /// The smallest time watermark of the topic's partitions: every event published before it
    /// is durable. `None` while some partition has none yet.
    pub durable_until: Option<DateTime<Utc>>,
    pub needed: Needed,
    /// Partitions the topic has, as ingestion saw it (0: no watermark pointer at all yet).
    pub partitions: u32,
    /// Partitions with no time watermark yet, or one before `needed`.
    pub partitions_behind: u32,
    /// Of those, the partitions with no time watermark yet (no pointer, or `null` in it).
    #[serde(default)]
    pub partitions_missing: u32,
}

/// Partitions the log's pointers say the topic has (each pointer carries the count ingestion
/// saw; the largest wins).
fn partition_count(position: &LogPosition) -> usize {
    usize::try_from(position.expected_partitions).unwrap_or(0)
}

/// Whether `position` is durable far enough for `needed` (`None`), or how far it is short.
pub fn lag(position: &LogPosition, needed: Needed) -> Option<LogLag> {
    let count = partition_count(position);
    let ready = |p: &&PartitionPosition| p.time_watermark.is_some_and(|t| t >= needed.at);
    let durable_until = position.min_time_watermark();
    if position.is_complete() && durable_until.is_some_and(|t| t >= needed.at) {
        return None;
    }
    // Only the partitions the topic has count (a pointer left by a partition beyond the count
    // would not make up for a missing one).
    let expected = i32::try_from(count).unwrap_or(i32::MAX);
    let partitions = || {
        position
            .partitions
            .iter()
            .filter(move |p| (0..expected).contains(&p.partition))
    };
    let ready_count = partitions().filter(|p| ready(p)).count();
    let present = partitions().filter(|p| p.time_watermark.is_some()).count();
    Some(LogLag {
        durable_until,
        needed,
        partitions: u32::try_from(count).unwrap_or(u32::MAX),
        partitions_behind: u32::try_from(count.saturating_sub(ready_count)).unwrap_or(u32::MAX),
        partitions_missing: u32::try_from(count.saturating_sub(present)).unwrap_or(u32::MAX),
    })
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How far the log has got, for a person: the body of the progress text and of the deadline
/// message.
fn how_far(lag: &LogLag) -> String {
    let needed = format!("{} ({})", instant(lag.needed.at), lag.needed.why());
    match lag.durable_until {
        _ if lag.partitions == 0 => {
            format!("the log has no watermark yet; it must be durable until {needed}")
        }
        None => format!(
            "{} of {} {} no watermark yet; the log must be durable until {needed}",
            lag.partitions_missing,
            plural(u64::from(lag.partitions), "partition", "partitions"),
            if lag.partitions_missing == 1 {
                "has"
            } else {
                "have"
            },
        ),
        Some(until) => format!(
            "the log is durable until {}, {}s short of {needed}; {} of {} behind",
            instant(until),
            (lag.needed.at - until).num_seconds().max(1),
            lag.partitions_behind,
            plural(u64::from(lag.partitions), "partition", "partitions"),
        ),
    }
}

/// The progress text while a job waits for ingestion.
pub fn waiting_message(lag: &LogLag) -> String {
    format!("waiting for ingestion: {}", how_far(lag))
}

/// Partitions of `position` whose time watermark is missing or before `needed`, for the
/// deadline message (at most 10 named).
fn behind_partitions(position: &LogPosition, needed: Needed) -> String {
    let count = i32::try_from(partition_count(position)).unwrap_or(i32::MAX);
    let behind: Vec<String> = (0..count)
        .filter(|p| {
            !position
                .partitions
                .iter()
                .any(|q| q.partition == *p && q.time_watermark.is_some_and(|t| t >= needed.at))
        })
        .map(|p| p.to_string())
        .collect();
    let shown = behind
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if behind.len() > 10 {
        format!("{shown}, …")
    } else {
        shown
    }
}

/// Why a job failed at its deadline, for the person who requested it and the operator.
/// `last` is the position last read and how far it was short (`None`: the pointers could never
/// be read, see `error`).
pub fn too_late_message(
    last: Option<(&LogPosition, &LogLag)>,
    topic: &str,
    waited: Duration,
    error: Option<&str>,
) -> String {
    let what = match last {
        Some((_, lag)) if lag.partitions == 0 => format!(
            "the log of topic {topic:?} has no watermark at all: ingestion has never written \
             one for this topic — is the ingestion service running, and does CCE_EVENTS_TOPIC \
             name its topic?"
        ),
        Some((position, lag)) => format!(
            "{}; topic {topic:?}, partitions behind: {}. Is the ingestion service running, and \
             is one of these partitions stalled?",
            how_far(lag),
            behind_partitions(position, lag.needed),
        ),
        None => format!("the log's watermarks for topic {topic:?} could not be read"),
    };
    let error = error.map_or_else(String::new, |e| format!(" (last error: {e})"));
    format!(
        "gave up waiting for ingestion {}s after the export was accepted: {what}{error}; the \
         archive could have missed events of its range, so none was made. Check the ingestion \
         service (its /readyz and /metrics, e.g. cce_ingest_consumer_lag, \
         cce_ingest_partition_stalled and cce_ingest_write_retries_total, and its logs), then \
         request the export again",
        waited.as_secs()
    )
}

/// The log's watermark pointers could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the log's watermarks for topic {topic:?}: {reason}")]
pub struct PositionError {
    pub topic: String,
    pub reason: String,
}

/// Where the log stands: the watermark pointers on the object store in production
/// ([`StorePositions`]), a position set by hand in unit tests ([`FixedPositions`]).
#[async_trait::async_trait]
pub trait Positions: Send + Sync + std::fmt::Debug + 'static {
    /// The log's position now: every partition's pointer that exists.
    async fn read(&self) -> Result<LogPosition, PositionError>;
}

/// The watermark pointers of a topic's log in the object store.
#[derive(Debug, Clone)]
pub struct StorePositions {
    store: Arc<dyn ObjectStore>,
    topic: String,
}

impl StorePositions {
    pub fn new(store: Arc<dyn ObjectStore>, topic: &str) -> Self {
        Self {
            store,
            topic: topic.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl Positions for StorePositions {
    async fn read(&self) -> Result<LogPosition, PositionError> {
        LogPosition::read(self.store.as_ref(), &self.topic)
            .await
            .map_err(|e| PositionError {
                topic: self.topic.clone(),
                reason: e.to_string(),
            })
    }
}

/// A position set by hand, for unit tests of the API and the runner.
#[derive(Debug, Clone)]
pub struct FixedPositions {
    inner: Arc<std::sync::Mutex<LogPosition>>,
}

impl FixedPositions {
    /// `topic` with `partitions` partitions, each durable until `until` (`None`: no pointer
    /// at all yet).
    pub fn new(topic: &str, partitions: i32, until: Option<DateTime<Utc>>) -> Self {
        let position = LogPosition {
            topic: topic.to_owned(),
            expected_partitions: if until.is_some() { partitions } else { 0 },
            partitions: match until {
                Some(until) => (0..partitions)
                    .map(|partition| PartitionPosition {
                        partition,
                        epoch: 1,
                        durable_offset: 0,
                        time_watermark: Some(until),
                    })
                    .collect(),
                None => Vec::new(),
            },
        };
        Self {
            inner: Arc::new(std::sync::Mutex::new(position)),
        }
    }

    /// Replaces the position.
    pub fn set(&self, position: LogPosition) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = position;
    }
}

#[async_trait::async_trait]
impl Positions for FixedPositions {
    async fn read(&self) -> Result<LogPosition, PositionError> {
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// How often a waiting job re-reads the pointers: ingestion moves them after each flush (every
/// 2 s by default) and every few seconds on idle partitions.
const POLL: Duration = Duration::from_secs(2);

/// The log's durable watermark, for exports to wait for and read at.
#[derive(Debug, Clone)]
pub struct LogWatermark {
    positions: Arc<dyn Positions>,
    topic: String,
    grace: Duration,
}

impl LogWatermark {
    /// Reads the pointers of `topic`'s log in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, topic: &str, grace: Duration) -> Self {
        Self::with(Arc::new(StorePositions::new(store, topic)), topic, grace)
    }

    /// A log durable until far in the future, so nothing ever waits: for unit tests of the API
    /// and the runner.
    pub fn durable_forever() -> Self {
        let forever = DateTime::<Utc>::MAX_UTC;
        Self::with(
            Arc::new(FixedPositions::new("events", 1, Some(forever))),
            "events",
            Duration::from_secs(60),
        )
    }

    pub fn with(positions: Arc<dyn Positions>, topic: &str, grace: Duration) -> Self {
        Self {
            positions,
            topic: topic.to_owned(),
            grace,
        }
    }

    /// Until when the log must be durable for an export of a range ending at `to`, accepted at
    /// `accepted`.
    pub fn needed(&self, to: DateTime<Utc>, accepted: DateTime<Utc>) -> Needed {
        Needed::new(to, accepted, self.grace)
    }

    /// Waits until the log is durable as far as `needed`, reporting how far it is short to
    /// `report` at each read; returns the position that satisfied it, for the export to read
    /// at. Fails once `wait` has passed since `accepted` (by `clock`) with the log still short.
    /// The deadline is checked after the pointers: a job that waited in the queue past it still
    /// runs when the log is far enough.
    pub async fn wait_for(
        &self,
        needed: Needed,
        accepted: DateTime<Utc>,
        wait: Duration,
        clock: &dyn Clock,
        cancel: &CancellationToken,
        mut report: impl FnMut(LogLag),
    ) -> Result<LogPosition, WaitError> {
        let deadline = accepted
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::days(1));
        let mut last: Option<(LogPosition, LogLag)> = None;
        loop {
            let read = tokio::select! {
                read = self.positions.read() => read,
                () = cancel.cancelled() => return Err(WaitError::Cancelled),
            };
            let error = match read {
                Ok(position) => {
                    let Some(lag) = lag(&position, needed) else {
                        return Ok(position);
                    };
                    if last.as_ref().map(|(_, l)| l) != Some(&lag) {
                        tracing::info!(
                            topic = %self.topic, needed = %needed.at,
                            durable_until = ?lag.durable_until, partitions = lag.partitions,
                            partitions_behind = lag.partitions_behind,
                            "export waiting for ingestion"
                        );
                    }
                    report(lag);
                    last = Some((position, lag));
                    None
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "reading the log's watermarks");
                    Some(e.to_string())
                }
            };
            let now = clock.now();
            if now >= deadline {
                return Err(WaitError::TooLate(too_late_message(
                    last.as_ref().map(|(p, l)| (p, l)),
                    &self.topic,
                    wait,
                    error.as_deref(),
                )));
            }
            let pause = (deadline - now).to_std().unwrap_or_default().min(POLL);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return Err(WaitError::Cancelled),
            }
        }
    }
}

/// Why a wait for ingestion ended without the log getting far enough.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed; the message says how far the log got and what to do.
    #[error("{0}")]
    TooLate(String),
    #[error("export cancelled")]
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A position of `topic` "events" whose partition `i` has time watermark `marks[i]`.
    fn position(marks: &[Option<&str>]) -> LogPosition {
        LogPosition {
            topic: "events".into(),
            expected_partitions: i32::try_from(marks.len()).unwrap(),
            partitions: marks
                .iter()
                .zip(0..)
                .map(|(mark, partition)| PartitionPosition {
                    partition,
                    epoch: 1,
                    durable_offset: 100 + i64::from(partition),
                    time_watermark: mark.map(t),
                })
                .collect(),
        }
    }

    #[test]
    fn the_log_must_reach_the_request_or_the_range_end_plus_grace_if_later() {
        let minute = Duration::from_secs(60);
        let cases = [
            (
                "2026-01-08T00:00:00Z",
                "2026-11-26T10:00:00Z",
                minute,
                ("2026-11-26T10:00:00Z", None),
                "a past range: the request (everything published before it)",
            ),
            (
                "2026-11-26T10:00:00Z",
                "2026-11-26T10:00:00Z",
                minute,
                ("2026-11-26T10:01:00Z", Some(60)),
                "until now: its end plus the grace",
            ),
            (
                "2026-11-26T09:59:30Z",
                "2026-11-26T10:00:00Z",
                minute,
                ("2026-11-26T10:00:30Z", Some(60)),
                "ends 30 s before the request: its end plus the grace, past the request",
            ),
            (
                "2026-11-26T09:59:00Z",
                "2026-11-26T10:00:00Z",
                minute,
                ("2026-11-26T10:00:00Z", None),
                "end plus grace exactly at the request: the request",
            ),
            (
                "2026-01-08T00:00:00Z",
                "2026-11-26T10:00:00Z",
                Duration::ZERO,
                ("2026-11-26T10:00:00Z", None),
                "no grace, a past range: the request",
            ),
            (
                "2026-11-26T10:05:00Z",
                "2026-11-26T10:00:00Z",
                minute,
                ("2026-11-26T10:06:00Z", Some(60)),
                "a range ending in the future: its end plus the grace",
            ),
        ];
        for (to, accepted, grace, (at, grace_secs), what) in cases {
            assert_eq!(
                Needed::new(t(to), t(accepted), grace),
                Needed {
                    at: t(at),
                    grace_secs
                },
                "{what}"
            );
        }
    }

    #[test]
    fn only_a_complete_position_past_what_is_needed_is_ready() {
        let needed = Needed {
            at: t("2026-01-08T00:01:00Z"),
            grace_secs: Some(60),
        };
        const BEFORE: Option<&str> = Some("2026-01-08T00:00:30Z");
        const AT: Option<&str> = Some("2026-01-08T00:01:00Z");
        const AFTER: Option<&str> = Some("2026-11-26T10:00:00Z");
        // (time watermarks per partition, expected (durable_until, partitions, behind) or ready)
        type Case = (
            &'static [Option<&'static str>],
            Option<(Option<&'static str>, u32, u32, u32)>,
            &'static str,
        );
        let cases: &[Case] = &[
            (&[], Some((None, 0, 0, 0)), "no pointer at all: waits"),
            (
                &[AFTER, None, BEFORE],
                Some((None, 3, 2, 1)),
                "a partition without a time watermark: waits, whatever the others say",
            ),
            (
                &[AFTER, BEFORE, AFTER, BEFORE],
                Some((BEFORE, 4, 2, 0)),
                "two partitions short of the range's end plus grace",
            ),
            (
                &[AFTER, AT, AFTER],
                None,
                "exactly at what is needed: ready",
            ),
            (&[AFTER, AFTER], None, "every partition past it: ready"),
        ];
        for (marks, expected, what) in cases {
            let got = lag(&position(marks), needed);
            let expected = expected.map(
                |(until, partitions, partitions_behind, partitions_missing)| LogLag {
                    durable_until: until.map(t),
                    needed,
                    partitions,
                    partitions_behind,
                    partitions_missing,
                },
            );
            assert_eq!(got, expected, "{what}");
        }
        // Partition 1 of 3 has no pointer at all; a stray pointer of a partition past the count
        // does not stand in for it.
        let mut gap = position(&[AFTER, AFTER, AFTER, AFTER]);
        gap.expected_partitions = 3;
        gap.partitions.remove(1);
        let got = lag(&gap, needed).expect("waits for partition 1");
        assert_eq!(
            (
                got.partitions,
                got.partitions_behind,
                got.partitions_missing
            ),
            (3, 1, 1)
        );
        assert_eq!(got.durable_until, None);
    }

    #[test]
    fn the_waiting_text_says_how_far_the_log_has_got() {
        let needed = Needed {
            at: t("2026-01-08T00:01:00Z"),
            grace_secs: Some(60),
        };
        let cases = [
            (
                LogLag {
                    durable_until: Some(t("2026-01-07T23:58:00Z")),
                    needed,
                    partitions: 4,
                    partitions_behind: 1,
                    partitions_missing: 0,
                },
                "waiting for ingestion: the log is durable until 2026-01-07T23:58:00Z, 180s \
                 short of 2026-01-08T00:01:00Z (the range's end plus 60s of grace); 1 of 4 \
                 partitions behind",
            ),
            (
                LogLag {
                    durable_until: None,
                    needed: Needed {
                        at: t("2026-11-26T10:00:00Z"),
                        grace_secs: None,
                    },
                    partitions: 2,
                    partitions_behind: 1,
                    partitions_missing: 1,
                },
                "waiting for ingestion: 1 of 2 partitions has no watermark yet; the log must \
                 be durable until 2026-11-26T10:00:00Z (when the export was requested)",
            ),
            (
                LogLag {
                    durable_until: None,
                    needed,
                    partitions: 0,
                    partitions_behind: 0,
                    partitions_missing: 0,
                },
                "waiting for ingestion: the log has no watermark yet; it must be durable until \
                 2026-01-08T00:01:00Z (the range's end plus 60s of grace)",
            ),
        ];
        for (lag, text) in cases {
            assert_eq!(waiting_message(&lag), text);
        }
    }

    #[tokio::test]
    async fn a_wait_reports_how_far_the_log_is_then_returns_the_position_that_was_enough() {
        let positions = FixedPositions::new("events", 2, None);
        let watermark = LogWatermark::with(
            Arc::new(positions.clone()),
            "events",
            Duration::from_secs(60),
        );
        // Whole seconds, so that positions can be written as text.
        let accepted = t(&instant(Utc::now()));
        let needed = watermark.needed(t("2026-01-08T00:00:00Z"), accepted);
        assert_eq!(
            needed,
            Needed {
                at: accepted,
                grace_secs: None
            },
            "a past range waits for everything published before its request"
        );
        let just_short = instant(accepted - chrono::Duration::seconds(1));
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&reports);
        let waiting = tokio::spawn({
            let watermark = watermark.clone();
            async move {
                watermark
                    .wait_for(
                        needed,
                        accepted,
                        Duration::from_secs(60),
                        &crate::clock::SystemClock,
                        &CancellationToken::new(),
                        |lag| seen.lock().unwrap().push(lag),
                    )
                    .await
            }
        });
        let first_report = async {
            while reports.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), first_report)
            .await
            .expect("a report within 5 s");
        assert_eq!(reports.lock().unwrap()[0].partitions, 0, "no pointer yet");
        // One partition durable far enough, the other just short: still waiting.
        positions.set(position(&[Some("2100-01-01T00:00:00Z"), Some(&just_short)]));
        let short = async {
            loop {
                let last = *reports.lock().unwrap().last().unwrap();
                if last.partitions == 2 {
                    return last;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let short = tokio::time::timeout(Duration::from_secs(10), short)
            .await
            .expect("the new position is read within 10 s");
        assert_eq!(short.durable_until, Some(t(&just_short)));
        assert_eq!(short.partitions_behind, 1);
        assert!(!waiting.is_finished());
        let enough = position(&[Some("2100-01-01T00:00:00Z"), Some(&instant(accepted))]);
        positions.set(enough.clone());
        let got = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait ends once the log is durable far enough")
            .unwrap()
            .unwrap();
        assert_eq!(
            got, enough,
            "the export reads at the position that was enough"
        );
    }

    /// A past range's export accepted 2 minutes ago, waiting at most 1: its failure message,
    /// and when it was accepted (whole seconds).
    async fn fail_at_deadline(positions: Arc<dyn Positions>) -> (String, DateTime<Utc>) {
        let watermark = LogWatermark::with(positions, "chat-events", Duration::from_secs(60));
        let accepted = t(&instant(Utc::now() - chrono::Duration::seconds(120)));
        let failed = watermark
            .wait_for(
                watermark.needed(t("2026-01-08T00:00:00Z"), accepted),
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
        for part in [
            "gave up waiting for ingestion 60s after the export was accepted",
            "\"chat-events\"",
            "ingestion service",
            "/readyz",
            "cce_ingest_partition_stalled",
            "request the export again",
        ] {
            assert!(message.contains(part), "{part:?} missing from {message:?}");
        }
        (message, accepted)
    }

    #[tokio::test]
    async fn a_wait_past_its_deadline_fails_saying_how_far_the_log_got_and_what_to_check() {
        let mut behind = position(&[
            Some("2100-01-01T00:00:00Z"),
            Some("2026-01-07T23:00:00Z"),
            None,
        ]);
        behind.topic = "chat-events".into();
        let fixed = FixedPositions::new("chat-events", 0, None);
        fixed.set(behind);
        let (message, accepted) = fail_at_deadline(Arc::new(fixed)).await;
        for part in [
            "1 of 3 partitions has no watermark yet",
            &format!(
                "durable until {} (when the export was requested)",
                instant(accepted)
            ),
            "topic \"chat-events\", partitions behind: 1, 2.",
            "Is the ingestion service running, and is one of these partitions stalled?",
        ] {
            assert!(message.contains(part), "{part:?} missing from {message:?}");
        }

        let (nothing, _) =
            fail_at_deadline(Arc::new(FixedPositions::new("chat-events", 3, None))).await;
        assert!(
            nothing.contains("has no watermark at all") && nothing.contains("CCE_EVENTS_TOPIC"),
            "{nothing}"
        );

        #[derive(Debug)]
        struct Unreadable;
        #[async_trait::async_trait]
        impl Positions for Unreadable {
            async fn read(&self) -> Result<LogPosition, PositionError> {
                Err(PositionError {
                    topic: "chat-events".into(),
                    reason: "store down".into(),
                })
            }
        }
        let (unread, _) = fail_at_deadline(Arc::new(Unreadable)).await;
        assert!(
            unread.contains("could not be read") && unread.contains("store down"),
            "{unread}"
        );
    }

    #[test]
    fn records_written_by_the_previous_version_still_fold() {
        use crate::state::{JobProgress, JobSpec};
        // A job accepted by step 5 recorded the events topic's end offsets: ignored now.
        let old = r#"{"from":null,"to":"2026-01-08T00:00:00Z","format":"json",
            "source":{"topic":"chat-events","partitions":[{"partition":0,"end_offset":7}]}}"#;
        let spec: JobSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.to, t("2026-01-08T00:00:00Z"));
        assert!(!serde_json::to_string(&spec).unwrap().contains("source"));
        // And a beat's progress with the old lag.
        let progress: JobProgress = serde_json::from_str(
            r#"{"events_read":0,"files_written":0,"bytes_written":0,"percent":0,
                "waiting_for_ingestion":{"events":5,"partitions":1}}"#,
        )
        .unwrap();
        assert_eq!(progress.waiting_for_log, None);
    }
}
