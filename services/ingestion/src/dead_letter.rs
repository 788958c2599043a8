//! The dead-letter topic: rejected messages with their original bytes, key and headers, plus
//! headers naming the reason and the source position. Never dropped: a failed send is retried
//! until it succeeds or the service stops (then the offset is not stored and the message is
//! consumed again on restart).

use std::time::Duration;

use event_model::Rejection;
use rdkafka::ClientConfig;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use telemetry::CancellationToken;

/// Header names added to every dead-lettered message.
pub mod headers {
    pub const REASON: &str = "cce-dlq-reason";
    pub const DETAIL: &str = "cce-dlq-detail";
    pub const SOURCE_TOPIC: &str = "cce-dlq-source-topic";
    pub const SOURCE_PARTITION: &str = "cce-dlq-source-partition";
    pub const SOURCE_OFFSET: &str = "cce-dlq-source-offset";
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    pub fn new(brokers: &str, topic: &str) -> anyhow::Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Sends `message` to the dead-letter topic and waits until the broker has it. Returns
    /// `Err` only when `shutdown` fires first.
    pub async fn send(
        &self,
        message: &BorrowedMessage<'_>,
        rejection: &Rejection,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        headers = headers
            .insert(Header {
                key: headers::REASON,
                value: Some(rejection.reason.as_str()),
            })
            .insert(Header {
                key: headers::DETAIL,
                value: Some(rejection.detail.as_str()),
            })
            .insert(Header {
                key: headers::SOURCE_TOPIC,
                value: Some(message.topic()),
            })
            .insert(Header {
                key: headers::SOURCE_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: headers::SOURCE_OFFSET,
                value: Some(offset.as_str()),
            });
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers.clone());
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            let sent = tokio::select! {
                sent = self.producer.send(record, Duration::from_secs(30)) => sent,
                _ = shutdown.cancelled() => anyhow::bail!("shutting down before the dead letter was sent"),
            };
            match sent {
                Ok(_) => return Ok(()),
                Err((error, _)) => {
                    tracing::warn!(
                        topic = %self.topic, source_partition = message.partition(),
                        source_offset = message.offset(), %error,
                        "failed to send a dead letter; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => anyhow::bail!("shutting down before the dead letter was sent"),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
