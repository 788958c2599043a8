//! What the log writer asks Kafka when it opens a partition ([`compliance_log::lineage::Lineage`]):
//! the cluster id, a partition's watermarks, and the fingerprint of the message at one offset.
//!
//! Its own client, outside the consumer group, so the questions never touch the group's
//! position or take part in rebalances. librdkafka's calls block: each runs on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use compliance_log::lineage::{Lineage, LineageError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

const TIMEOUT: Duration = Duration::from_secs(10);

/// [`Lineage`] backed by the Kafka cluster the events come from.
#[derive(Clone)]
pub struct KafkaLineage {
    inner: Arc<Inner>,
}

struct Inner {
    brokers: String,
    topic: String,
    /// Metadata, cluster id and watermarks; never subscribes nor commits.
    client: BaseConsumer,
}

impl std::fmt::Debug for KafkaLineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLineage")
            .field("topic", &self.inner.topic)
            .finish_non_exhaustive()
    }
}

fn kafka_error(what: &str, error: &KafkaError) -> LineageError {
    LineageError(format!("{what}: {error}"))
}

impl KafkaLineage {
    pub fn new(brokers: &str, topic: &str) -> anyhow::Result<Self> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(Self {
            inner: Arc::new(Inner {
                brokers: brokers.to_owned(),
                topic: topic.to_owned(),
                client,
            }),
        })
    }

    /// Runs a blocking librdkafka call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Inner) -> Result<T, LineageError> + Send + 'static,
    ) -> Result<T, LineageError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || call(&inner))
            .await
            .map_err(|e| LineageError(format!("lineage task failed: {e}")))?
    }

    /// How many partitions the topic has now.
    pub async fn partition_count(&self) -> Result<i32, LineageError> {
        self.blocking(|inner| {
            let metadata = inner
                .client
                .fetch_metadata(Some(&inner.topic), TIMEOUT)
                .map_err(|e| kafka_error("reading the topic's metadata", &e))?;
            let count = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == inner.topic)
                .map(|t| t.partitions().len())
                .sum::<usize>();
            if count == 0 {
                return Err(LineageError(format!(
                    "topic {} has no partitions (does it exist?)",
                    inner.topic
                )));
            }
            i32::try_from(count).map_err(|_| LineageError("too many partitions".into()))
        })
        .await
    }
}

#[async_trait]
impl Lineage for KafkaLineage {
    async fn cluster_id(&self) -> Result<String, LineageError> {
        self.blocking(|inner| {
            inner
                .client
                .client()
                .fetch_cluster_id(TIMEOUT)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| LineageError("the broker did not give a cluster id".into()))
        })
        .await
    }

    async fn watermarks(&self, partition: i32) -> Result<(i64, i64), LineageError> {
        self.blocking(move |inner| {
            inner
                .client
                .fetch_watermarks(&inner.topic, partition, TIMEOUT)
                .map_err(|e| kafka_error("reading the partition's watermarks", &e))
        })
        .await
    }

    async fn payload_sha256(
        &self,
        partition: i32,
        offset: i64,
    ) -> Result<Option<String>, LineageError> {
        self.blocking(move |inner| fetch_payload_sha256(inner, partition, offset))
            .await
    }
}

/// Reads the one message at `offset` with a short-lived consumer assigned to it (no group:
/// nothing is committed, nobody rebalances).
fn fetch_payload_sha256(
    inner: &Inner,
    partition: i32,
    offset: i64,
) -> Result<Option<String>, LineageError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &inner.brokers)
        // librdkafka wants a group id for a consumer; it is never joined (assign, not subscribe).
        .set("group.id", "cce-ingestion-lineage")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // An offset retention already removed: no message rather than a jump to the end.
        .set("auto.offset.reset", "error")
        .create()
        .map_err(|e| kafka_error("creating the lineage reader", &e))?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(&inner.topic, partition, Offset::Offset(offset))
        .map_err(|e| kafka_error("listing the offset to read", &e))?;
    consumer
        .assign(&list)
        .map_err(|e| kafka_error("assigning the partition", &e))?;
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) if message.offset() == offset => {
                let payload = message.payload().unwrap_or_default();
                return Ok(Some(hex::encode(Sha256::digest(payload))));
            }
            // The offset is gone (compaction, a transaction marker): the next one came instead.
            Some(Ok(message)) if message.offset() > offset => return Ok(None),
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
            Some(Err(KafkaError::MessageConsumption(code)))
                if code == rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange
                    || code == rdkafka::types::RDKafkaErrorCode::AutoOffsetReset =>
            {
                return Ok(None);
            }
            Some(Err(error)) => return Err(kafka_error("reading the message", &error)),
        }
    }
    Err(LineageError(format!(
        "no message at offset {offset} of partition {partition} within {TIMEOUT:?}"
    )))
}
