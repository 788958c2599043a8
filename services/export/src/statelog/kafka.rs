//! The [`RecordLog`] on a Kafka topic of one partition.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::{Entry, LogError, LogReader, RecordLog};

const PARTITION: i32 = 0;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A one-partition Kafka topic kept forever.
pub struct KafkaLog {
    brokers: String,
    topic: String,
    producer: FutureProducer,
    /// For metadata and watermarks only (never subscribed).
    meta: std::sync::Arc<BaseConsumer>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn unavailable(brokers: &str, doing: &str, error: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!(
        "{doing} at {brokers}: {error}; check that the broker is running and reachable \
         (CCE_KAFKA_BROKERS)"
    ))
}

impl KafkaLog {
    /// Connects and checks that `topic` exists with exactly one partition.
    pub async fn connect(brokers: &str, topic: &str) -> Result<Self, LogError> {
        let client_error = |e: rdkafka::error::KafkaError| {
            LogError::Misconfigured(format!("configuring the Kafka client for {brokers}: {e}"))
        };
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "0")
            .create()
            .map_err(client_error)?;
        let meta: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("cce-export-state-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .map_err(client_error)?;
        let meta = std::sync::Arc::new(meta);
        let partitions = {
            let (meta, topic) = (meta.clone(), topic.to_owned());
            tokio::task::spawn_blocking(move || {
                let metadata = meta.fetch_metadata(Some(&topic), TIMEOUT)?;
                Ok::<_, rdkafka::error::KafkaError>(
                    metadata
                        .topics()
                        .iter()
                        .filter(|t| t.name() == topic && t.error().is_none())
                        .map(|t| t.partitions().len())
                        .sum::<usize>(),
                )
            })
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?
            .map_err(|e| unavailable(brokers, "reading the topics", e))?
        };
        match partitions {
            0 => Err(LogError::Misconfigured(format!(
                "the state topic {topic:?} does not exist: create it with one partition and \
                 retention.ms=-1 (as deploy/local/up.sh does), or set CCE_STATE_TOPIC"
            ))),
            1 => Ok(Self {
                brokers: brokers.to_owned(),
                topic: topic.to_owned(),
                producer,
                meta,
            }),
            n => Err(LogError::Misconfigured(format!(
                "the state topic {topic:?} has {n} partitions; it must have exactly one (one \
                 order for every replica's fold)"
            ))),
        }
    }
}

/// Why a topic with these settings would lose records, if it would.
pub fn drops_history(configs: &[(String, Option<String>)]) -> Option<String> {
    let get = |name: &str| {
        configs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    };
    let policy = get("cleanup.policy").unwrap_or_else(|| "delete".into());
    if policy.split(',').any(|p| p.trim() == "compact") {
        return Some(format!(
            "cleanup.policy={policy}: compaction keeps only each company's last record"
        ));
    }
    for setting in ["retention.ms", "retention.bytes"] {
        if let Some(value) = get(setting)
            && value.trim().parse::<i64>().is_ok_and(|v| v >= 0)
        {
            return Some(format!("{setting}={value}"));
        }
    }
    None
}

#[async_trait]
impl RecordLog for KafkaLog {
    fn name(&self) -> &str {
        &self.topic
    }

    async fn check_kept_forever(&self) -> Result<(), LogError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .map_err(|e| LogError::Misconfigured(e.to_string()))?;
        // The broker answered the metadata request a moment ago: a failure here means it does
        // not describe settings (or not this way), which is reported, not treated as "unsafe".
        let described = admin
            .describe_configs(
                &[ResourceSpecifier::Topic(&self.topic)],
                &AdminOptions::new().request_timeout(Some(TIMEOUT)),
            )
            .await;
        let configs: Vec<(String, Option<String>)> = match described {
            Ok(described) => match described.into_iter().next() {
                Some(Ok(resource)) => resource
                    .entries
                    .into_iter()
                    .map(|entry| (entry.name, entry.value))
                    .collect(),
                Some(Err(error)) => {
                    tracing::warn!(topic = %self.topic, %error, "the broker does not describe the state topic's settings; cannot check that it keeps its records forever");
                    Vec::new()
                }
                None => Vec::new(),
            },
            Err(error) => {
                tracing::warn!(topic = %self.topic, %error, "the broker does not describe the state topic's settings; cannot check that it keeps its records forever");
                Vec::new()
            }
        };
        if configs.is_empty() {
            tracing::warn!(topic = %self.topic, "no settings described for the state topic; cannot check that it keeps its records forever");
        }
        match drops_history(&configs) {
            None => Ok(()),
            Some(why) => Err(LogError::Misconfigured(format!(
                "refusing to use the state topic {:?}: {why} would drop history that every \
                 replica must read; set retention.ms=-1, retention.bytes=-1 and \
                 cleanup.policy=delete on it (kafka-configs --alter --entity-type topics \
                 --entity-name {} --add-config retention.ms=-1)",
                self.topic, self.topic
            ))),
        }
    }

    async fn append(&self, key: &str, payload: Vec<u8>) -> Result<u64, LogError> {
        let offset = self
            .producer
            .send(
                FutureRecord::to(&self.topic)
                    .partition(PARTITION)
                    .key(key)
                    .payload(&payload),
                Timeout::After(TIMEOUT),
            )
            .await
            .map_err(|(e, _)| unavailable(&self.brokers, "writing to the state topic", e))?
            .offset;
        u64::try_from(offset)
            .map_err(|_| LogError::Unavailable(format!("the broker answered offset {offset}")))
    }

    async fn end(&self) -> Result<u64, LogError> {
        let (meta, topic) = (self.meta.clone(), self.topic.clone());
        let (_, high) =
            tokio::task::spawn_blocking(move || meta.fetch_watermarks(&topic, PARTITION, TIMEOUT))
                .await
                .map_err(|e| LogError::Unavailable(e.to_string()))?
                .map_err(|e| unavailable(&self.brokers, "reading the end of the state topic", e))?;
        Ok(u64::try_from(high).unwrap_or(0))
    }

    async fn reader(&self, from: u64) -> Result<Box<dyn LogReader>, LogError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            // Never committed: the position is the fold's own.
            .set(
                "group.id",
                format!("cce-export-state-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            // Large fetches: a start-up reads the topic's tail as fast as the broker serves it.
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "16777216")
            .set("queued.min.messages", "200000")
            .create()
            .map_err(|e| LogError::Misconfigured(e.to_string()))?;
        let mut assignment = TopicPartitionList::new();
        let offset = i64::try_from(from).map_err(|e| LogError::Misconfigured(e.to_string()))?;
        assignment
            .add_partition_offset(&self.topic, PARTITION, Offset::Offset(offset))
            .map_err(|e| LogError::Misconfigured(e.to_string()))?;
        consumer
            .assign(&assignment)
            .map_err(|e| unavailable(&self.brokers, "reading the state topic", e))?;
        Ok(Box::new(KafkaReader {
            consumer,
            brokers: self.brokers.clone(),
        }))
    }
}

struct KafkaReader {
    consumer: StreamConsumer,
    brokers: String,
}

#[async_trait]
impl LogReader for KafkaReader {
    async fn next(&mut self) -> Result<Entry, LogError> {
        let message = self
            .consumer
            .recv()
            .await
            .map_err(|e| unavailable(&self.brokers, "reading the state topic", e))?;
        Ok(Entry {
            offset: u64::try_from(message.offset()).unwrap_or(0),
            payload: message.payload().unwrap_or(&[]).to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Some((*v).to_owned())))
            .collect()
    }

    #[test]
    fn retention_that_would_drop_history_is_named() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (
                &[("retention.ms", "-1"), ("cleanup.policy", "delete")],
                None,
            ),
            (&[("retention.ms", "-1"), ("retention.bytes", "-1")], None),
            (&[], None),
            (
                &[("retention.ms", "604800000")],
                Some("retention.ms=604800000"),
            ),
            (
                &[("retention.ms", "-1"), ("retention.bytes", "1073741824")],
                Some("retention.bytes=1073741824"),
            ),
            (
                &[("retention.ms", "-1"), ("cleanup.policy", "compact")],
                Some("cleanup.policy=compact"),
            ),
            (
                &[("retention.ms", "-1"), ("cleanup.policy", "compact,delete")],
                Some("cleanup.policy=compact,delete"),
            ),
        ];
        for (settings, want) in cases {
            let got = drops_history(&configs(settings));
            match want {
                None => assert_eq!(got, None, "{settings:?}"),
                Some(want) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(want)),
                    "{settings:?}: {got:?}"
                ),
            }
        }
    }
}
