//! The state topic: appending commands and folding every record into the shared [`State`].
//!
//! Each replica reads the whole topic from the beginning (assigned partitions, no consumer
//! group, nothing committed) and folds it. An append waits until this replica's fold has reached
//! the record, and returns the fold's [`Outcome`] for it — so a caller learns what the log
//! decided, not what it hoped. [`StateLog::sync`] waits until the fold has reached the topic's
//! end as of the call, so a read after another replica's write sees it ("revoked at once").

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use telemetry::CancellationToken;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::state::{Command, Outcome, RECORD_VERSION, Record, State};

/// The state topic cannot be reached or did not confirm in time.
#[derive(Debug, thiserror::Error)]
#[error("the export service's state log is unavailable: {0}")]
pub struct Unavailable(pub String);

impl From<Unavailable> for tonic::Status {
    fn from(error: Unavailable) -> Self {
        tonic::Status::unavailable(format!("{error}; retry shortly"))
    }
}

#[derive(Debug)]
struct Shared {
    state: RwLock<State>,
    /// Next offset to fold, per partition.
    applied: Mutex<HashMap<i32, i64>>,
    waiters: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    version: watch::Sender<u64>,
}

/// A replica's handle on the state topic.
#[derive(Clone)]
pub struct StateLog {
    producer: FutureProducer,
    consumer: Arc<StreamConsumer>,
    topic: String,
    partitions: Vec<i32>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

impl std::fmt::Debug for StateLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateLog")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl StateLog {
    /// Connects, starts folding from the beginning and returns once caught up.
    pub async fn open(
        brokers: &str,
        topic: &str,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "0")
            .create()?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Never committed: every replica folds the whole topic at start.
            .set(
                "group.id",
                format!("cce-export-state-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let consumer = Arc::new(consumer);
        let partitions = {
            let consumer = consumer.clone();
            let topic = topic.to_owned();
            tokio::task::spawn_blocking(move || partitions_of(&consumer, &topic)).await??
        };
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let (version, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: RwLock::default(),
            applied: Mutex::default(),
            waiters: Mutex::default(),
            version,
        });
        tokio::spawn(fold(consumer.clone(), shared.clone(), shutdown));
        let log = Self {
            producer,
            consumer,
            topic: topic.to_owned(),
            partitions,
            shared,
            clock,
            timeout: Duration::from_secs(15),
        };
        log.sync().await?;
        tracing::info!(topic, "export state folded");
        Ok(log)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Runs `f` over the folded state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.shared.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes whenever a record is folded.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// Appends a command and returns what the fold made of it.
    pub async fn submit(
        &self,
        company_id: &str,
        actor: &str,
        command: Command,
    ) -> Result<Outcome, Unavailable> {
        let record = Record {
            v: RECORD_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            at: self.clock.now(),
            company_id: company_id.to_owned(),
            actor: actor.to_owned(),
            command,
        };
        let payload = serde_json::to_vec(&record).map_err(|e| Unavailable(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(record.id.clone(), tx);
        let sent = self
            .producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(company_id)
                    .payload(&payload),
                Timeout::After(self.timeout),
            )
            .await;
        if let Err((error, _)) = sent {
            self.waiters().remove(&record.id);
            return Err(Unavailable(format!(
                "writing to Kafka topic {}: {error}",
                self.topic
            )));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => {
                self.waiters().remove(&record.id);
                Err(Unavailable(format!(
                    "the record was written to {} but not read back within {:?}",
                    self.topic, self.timeout
                )))
            }
        }
    }

    /// Waits until everything written to the topic before this call has been folded.
    pub async fn sync(&self) -> Result<(), Unavailable> {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let partitions = self.partitions.clone();
        let timeout = self.timeout;
        let targets = tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|&p| {
                    consumer
                        .fetch_watermarks(&topic, p, timeout)
                        .map(|(_, high)| (p, high))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Unavailable(e.to_string()))?
        .map_err(|e| Unavailable(format!("reading the end of {}: {e}", self.topic)))?;
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let caught_up = {
                let applied = self
                    .shared
                    .applied
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                targets
                    .iter()
                    .all(|(p, high)| *high <= 0 || applied.get(p).is_some_and(|a| a >= high))
            };
            if caught_up {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(Unavailable(format!(
                    "still reading {} after {:?}",
                    self.topic, self.timeout
                )));
            }
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Outcome>>> {
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn partitions_of(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(15))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "the state topic {topic:?} does not exist: create it (one partition, retention forever, \
         as deploy/local/up.sh does) or set CCE_STATE_TOPIC"
    );
    Ok(partitions)
}

async fn fold(consumer: Arc<StreamConsumer>, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "reading the state topic; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let decided = match serde_json::from_slice::<Record>(message.payload().unwrap_or(&[])) {
            Ok(record) if record.v == RECORD_VERSION => {
                let outcome = shared
                    .state
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(&record);
                if let crate::state::Outcome::Rejected(reason) = &outcome {
                    tracing::debug!(id = %record.id, %reason, "state command refused");
                }
                Some((record.id, outcome))
            }
            Ok(record) => {
                tracing::error!(
                    version = record.v,
                    offset = message.offset(),
                    "a state record of an unknown version: upgrade this replica"
                );
                None
            }
            Err(error) => {
                tracing::error!(%error, offset = message.offset(), "an unreadable state record; skipped");
                None
            }
        };
        shared
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(message.partition(), message.offset() + 1);
        if let Some((id, outcome)) = decided
            && let Some(waiter) = shared
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id)
        {
            let _ = waiter.send(outcome);
        }
        shared.version.send_modify(|v| *v += 1);
    }
}
