//! Liveness and progress of running exports: not history, so not in the state topic.
//!
//! A worker publishes a [`Beat`] every second while it runs an attempt (progress included).
//! Every replica listens from the moment it starts and keeps, per job, the newest beat it has
//! seen ([`Liveness`]). That is all liveness needs: a replica judges an attempt dead once it has
//! heard nothing of it for a whole lease *while listening* — a replica that just started waits a
//! lease before judging anything — and then appends a takeover claim to the state log, where the
//! first takeover of that attempt wins. Nothing here is read back at start, so the channel can
//! keep its records briefly (a short retention and compaction by job on Kafka).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use telemetry::CancellationToken;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::progress::JobProgress;
use crate::statelog::LogError;

/// The version of [`Beat`] this build writes; beats of other versions are ignored (they are
/// not history: a replica that cannot read them only takes longer to see progress).
pub const BEAT_VERSION: u32 = 1;

/// "Attempt `attempt` of this job is alive, and this far along."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub v: u32,
    pub company_id: String,
    pub job_id: String,
    pub worker: String,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub progress: JobProgress,
}

/// Where beats travel between replicas.
#[async_trait]
pub trait LivenessChannel: Send + Sync + std::fmt::Debug + 'static {
    /// Sends a beat to every replica (this one included).
    async fn publish(&self, beat: &Beat) -> Result<(), LogError>;
    /// Beats published from now on, by any replica.
    fn subscribe(&self) -> broadcast::Receiver<Beat>;
}

/// A channel in memory: clones share it, like replicas sharing a topic.
#[derive(Debug, Clone)]
pub struct MemoryLiveness {
    sender: broadcast::Sender<Beat>,
}

impl Default for MemoryLiveness {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
        }
    }
}

#[async_trait]
impl LivenessChannel for MemoryLiveness {
    async fn publish(&self, beat: &Beat) -> Result<(), LogError> {
        let _ = self.sender.send(beat.clone());
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Beat> {
        self.sender.subscribe()
    }
}

/// Beats on a Kafka topic keyed by job, read from its end.
pub struct KafkaLiveness {
    topic: String,
    producer: FutureProducer,
    sender: broadcast::Sender<Beat>,
}

impl std::fmt::Debug for KafkaLiveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLiveness")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaLiveness {
    /// Starts listening at the topic's end (every partition) until `shutdown`.
    pub async fn connect(
        brokers: &str,
        topic: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, LogError> {
        let misconfigured = |e: rdkafka::error::KafkaError| LogError::Misconfigured(e.to_string());
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.timeout.ms", "5000")
            .set("linger.ms", "0")
            .create()
            .map_err(misconfigured)?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("cce-export-liveness-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(misconfigured)?;
        let partitions = {
            let probe: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .create()
                .map_err(misconfigured)?;
            let topic = topic.to_owned();
            tokio::task::spawn_blocking(move || {
                probe
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
                    .map(|m| {
                        m.topics()
                            .iter()
                            .filter(|t| t.name() == topic && t.error().is_none())
                            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                            .collect::<Vec<_>>()
                    })
            })
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?
            .map_err(|e| {
                LogError::Unavailable(format!(
                    "reading the topics at {brokers}: {e}; check that the broker is running and \
                     reachable (CCE_KAFKA_BROKERS)"
                ))
            })?
        };
        if partitions.is_empty() {
            return Err(LogError::Misconfigured(format!(
                "the liveness topic {topic:?} does not exist: create it (short retention, e.g. \
                 retention.ms=3600000, as deploy/local/up.sh does), or set CCE_LIVENESS_TOPIC"
            )));
        }
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::End)
                .map_err(misconfigured)?;
        }
        consumer.assign(&assignment).map_err(misconfigured)?;
        let sender = broadcast::channel(4096).0;
        tokio::spawn(listen(consumer, sender.clone(), shutdown));
        Ok(Self {
            topic: topic.to_owned(),
            producer,
            sender,
        })
    }
}

async fn listen(
    consumer: StreamConsumer,
    sender: broadcast::Sender<Beat>,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            message = consumer.recv() => message,
        };
        match message {
            Ok(message) => match serde_json::from_slice::<Beat>(message.payload().unwrap_or(&[])) {
                Ok(beat) if beat.v == BEAT_VERSION => {
                    let _ = sender.send(beat);
                }
                Ok(beat) => tracing::debug!(version = beat.v, "a beat of another version"),
                Err(error) => tracing::debug!(%error, "an unreadable beat"),
            },
            Err(error) => {
                tracing::warn!(%error, "reading the liveness topic; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[async_trait]
impl LivenessChannel for KafkaLiveness {
    async fn publish(&self, beat: &Beat) -> Result<(), LogError> {
        let payload =
            serde_json::to_vec(beat).map_err(|e| LogError::Misconfigured(e.to_string()))?;
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    // By job (compaction keeps each job's newest); presence beats by worker.
                    .key(if beat.job_id.is_empty() {
                        &beat.worker
                    } else {
                        &beat.job_id
                    })
                    .payload(&payload),
                Timeout::After(Duration::from_secs(5)),
            )
            .await
            .map_err(|(e, _)| {
                LogError::Unavailable(format!("writing to the liveness topic {}: {e}", self.topic))
            })?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Beat> {
        self.sender.subscribe()
    }
}

#[derive(Debug, Clone)]
struct Seen {
    attempt: u32,
    /// None until a beat of the attempt is heard.
    progress: Option<JobProgress>,
    /// The last beat, or when this replica first asked about the attempt.
    at: Instant,
}

#[derive(Debug)]
struct Inner {
    jobs: Mutex<HashMap<String, Seen>>,
    changes: watch::Sender<u64>,
    /// This replica's worker name once it announces itself, and when it last heard its own
    /// presence beat come back through the channel.
    me: Mutex<Option<(String, Option<Instant>)>>,
}

/// What this replica has heard of running attempts.
#[derive(Debug, Clone)]
pub struct Liveness {
    channel: Arc<dyn LivenessChannel>,
    inner: Arc<Inner>,
}

impl Liveness {
    /// Starts listening to `channel` until `shutdown`.
    pub fn start(channel: Arc<dyn LivenessChannel>, shutdown: CancellationToken) -> Self {
        let inner = Arc::new(Inner {
            jobs: Mutex::default(),
            changes: watch::channel(0).0,
            me: Mutex::default(),
        });
        let mut beats = channel.subscribe();
        let listening = inner.clone();
        tokio::spawn(async move {
            loop {
                let beat = tokio::select! {
                    () = shutdown.cancelled() => return,
                    beat = beats.recv() => beat,
                };
                match beat {
                    Ok(beat) if beat.job_id.is_empty() => heard_presence(&listening, &beat),
                    Ok(beat) => record(&listening, &beat),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "liveness listener lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Self { channel, inner }
    }

    /// Publishes a beat for an attempt this replica runs (and notes it at once, so its own
    /// attempts never look silent to itself).
    pub async fn publish(&self, beat: &Beat) -> Result<(), LogError> {
        record(&self.inner, beat);
        self.channel.publish(beat).await
    }

    /// Publishes a presence beat for `worker` every `every` until `shutdown`. From then on,
    /// [`Self::hears_itself_within`] says whether this replica's own beats come back to it: a
    /// replica whose listening is stuck must not judge other workers dead.
    pub fn announce(&self, worker: &str, every: Duration, shutdown: CancellationToken) {
        *self.inner.me.lock().unwrap_or_else(|e| e.into_inner()) = Some((worker.to_owned(), None));
        let channel = Arc::clone(&self.channel);
        let beat = Beat {
            v: BEAT_VERSION,
            company_id: String::new(),
            job_id: String::new(),
            worker: worker.to_owned(),
            attempt: 0,
            at: Utc::now(),
            progress: JobProgress::default(),
        };
        tokio::spawn(async move {
            loop {
                let beat = Beat {
                    at: Utc::now(),
                    ..beat.clone()
                };
                if let Err(error) = channel.publish(&beat).await {
                    tracing::debug!(%error, "publishing a presence beat");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// Whether this replica heard its own presence beat within `window` (always true before it
    /// announces itself). A replica that cannot hear itself cannot tell a dead worker from its
    /// own deafness, so it takes nothing over.
    pub fn hears_itself_within(&self, window: Duration) -> bool {
        match &*self.inner.me.lock().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some((_, heard)) => heard.is_some_and(|at| at.elapsed() < window),
        }
    }

    /// The newest progress heard for this attempt.
    pub fn progress(&self, job_id: &str, attempt: u32) -> Option<JobProgress> {
        self.jobs()
            .get(job_id)
            .filter(|s| s.attempt == attempt)
            .and_then(|s| s.progress)
    }

    /// How long this attempt has been silent: since its last beat, or — when none has been
    /// heard — since this replica first asked (so a replica that just started, or an attempt
    /// just claimed, gets a whole lease before it can be judged dead).
    pub fn silent_for(&self, job_id: &str, attempt: u32) -> Duration {
        let mut jobs = self.jobs();
        match jobs.get(job_id) {
            Some(seen) if seen.attempt >= attempt => seen.at.elapsed(),
            _ => {
                jobs.insert(
                    job_id.to_owned(),
                    Seen {
                        attempt,
                        progress: None,
                        at: Instant::now(),
                    },
                );
                Duration::ZERO
            }
        }
    }

    /// Forgets jobs that no longer run (called with the ones that do).
    pub fn retain(&self, running: impl Fn(&str) -> bool) {
        self.jobs().retain(|job, _| running(job));
    }

    /// Changes whenever a beat is heard.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn heard_presence(inner: &Inner, beat: &Beat) {
    let mut me = inner.me.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((worker, heard)) = me.as_mut()
        && *worker == beat.worker
    {
        *heard = Some(Instant::now());
    }
}

fn record(inner: &Inner, beat: &Beat) {
    let mut jobs = inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let seen = Seen {
        attempt: beat.attempt,
        progress: Some(beat.progress),
        at: Instant::now(),
    };
    match jobs.get_mut(&beat.job_id) {
        // A late beat of an attempt already taken over says nothing about the new one.
        Some(old) if old.attempt > beat.attempt => return,
        Some(old) => *old = seen,
        None => {
            jobs.insert(beat.job_id.clone(), seen);
        }
    }
    drop(jobs);
    inner.changes.send_modify(|v| *v += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(job: &str, attempt: u32, events: u64) -> Beat {
        Beat {
            v: BEAT_VERSION,
            company_id: "acme".into(),
            job_id: job.into(),
            worker: "a".into(),
            attempt,
            at: Utc::now(),
            progress: JobProgress {
                events_read: events,
                ..JobProgress::default()
            },
        }
    }

    #[tokio::test]
    async fn an_attempt_is_silent_from_its_last_beat_or_from_when_first_asked() {
        let channel = MemoryLiveness::default();
        let a = Liveness::start(Arc::new(channel.clone()), CancellationToken::new());
        let b = Liveness::start(Arc::new(channel), CancellationToken::new());
        let pause = Duration::from_millis(50);
        // Nothing heard of j1: silent from when b first asks, not from some earlier time.
        assert_eq!(b.silent_for("j1", 1), Duration::ZERO);
        tokio::time::sleep(pause).await; // the time being measured, not a synchronisation
        assert!(b.silent_for("j1", 1) >= pause);
        let mut changes = b.subscribe();
        a.publish(&beat("j1", 1, 5)).await.unwrap();
        while b.progress("j1", 1).is_none() {
            changes.changed().await.unwrap();
        }
        assert!(b.silent_for("j1", 1) < pause);
        assert_eq!(b.progress("j1", 1).unwrap().events_read, 5);
        // Progress belongs to its attempt; a late beat of an old attempt changes nothing.
        assert_eq!(b.progress("j1", 2), None);
        a.publish(&beat("j1", 2, 1)).await.unwrap();
        a.publish(&beat("j1", 1, 9)).await.unwrap();
        assert_eq!(a.progress("j1", 2).unwrap().events_read, 1);
        assert_eq!(a.progress("j1", 1), None);
        // Hearing a newer attempt means the older one is not silent either.
        assert!(a.silent_for("j1", 1) < pause);
    }
}
