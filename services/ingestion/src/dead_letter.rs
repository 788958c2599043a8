//! Dead letters: rejected messages, never dropped and never able to stop ingestion.
//!
//! A rejected message goes to the dead-letter topic with its original bytes, key and headers,
//! plus headers naming the reason and the source position. Failures are told apart:
//!
//! - **the record can never fit** (too large for the topic or the producer, invalid, refused by
//!   policy): its original bytes are kept on the object store under
//!   `dead-letters/v1/<topic>/<partition>/<offset>/` (`payload`, verbatim, and `letter.json`: the
//!   reason, the source position and the payload's SHA-256), and a small **pointer** record goes
//!   to the topic instead;
//! - **the topic is unusable** (it does not exist, or we may not write to it): retried for
//!   [`Config::dead_letter_topic_wait`](crate::Config) — a topic being created or a permission
//!   being fixed — then kept on the object store the same way, and ingestion moves on. While the
//!   topic stays unusable, later letters go straight to the store (their `letter.json` says the
//!   pointer could not be published);
//! - **anything else** (broker unreachable, timeouts, leader elections) is transient: retried
//!   with backoff for as long as it takes. Only the partition the letter came from waits; the
//!   consumer keeps serving every other partition, and the wait shows as a stalled partition.
//!
//! Keys derive from the source position and the content is deterministic, so a replay after a
//! crash rewrites the same objects with the same bytes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_model::Rejection;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};
use storage::ObjectStore;
use telemetry::CancellationToken;

use retry::{Backoff, Next, RetryError, retry};

/// How long to wait between attempts at a send or a store write that failed (doubling).
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// The stop token fired before the work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before the work was done")]
pub struct Stopped;

/// Header names added to every dead-lettered message.
pub mod headers {
    pub const REASON: &str = "cce-dlq-reason";
    pub const DETAIL: &str = "cce-dlq-detail";
    pub const SOURCE_TOPIC: &str = "cce-dlq-source-topic";
    pub const SOURCE_PARTITION: &str = "cce-dlq-source-partition";
    pub const SOURCE_OFFSET: &str = "cce-dlq-source-offset";
    /// On a pointer record only: where the original bytes are (`s3://<bucket>/<key>`).
    pub const PAYLOAD_LOCATION: &str = "cce-dlq-payload-location";
    /// On a pointer record only: hex SHA-256 of the original bytes.
    pub const PAYLOAD_SHA256: &str = "cce-dlq-payload-sha256";
    /// On a pointer record only: the size of the original bytes.
    pub const PAYLOAD_BYTES: &str = "cce-dlq-payload-bytes";
}

/// Where dead letters kept on the object store live.
pub const STORE_PREFIX: &str = "dead-letters/v1";

/// A rejected message, owned, kept with its partition's buffer until the letter is delivered.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub reason: &'static str,
    pub detail: String,
}

impl DeadLetter {
    pub fn new(message: &BorrowedMessage<'_>, rejection: &Rejection) -> Self {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
            reason: rejection.reason.as_str(),
            detail: rejection.detail.clone(),
        }
    }

    /// Bytes this letter holds in memory.
    pub fn size(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Vec::len) + self.detail.len()
    }

    /// The folder on the object store for this letter: derived from the source position only.
    fn store_folder(&self) -> String {
        format!(
            "{STORE_PREFIX}/{}/{}/{:020}",
            storage_safe(&self.topic),
            self.partition,
            self.offset
        )
    }
}

/// Topic names may hold `.`, `_`, `-` and alphanumerics; anything else (and a leading dot) is
/// escaped so that a name can never become a path of its own.
fn storage_safe(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c.to_string(),
            '.' if i > 0 => c.to_string(),
            other => format!("%{:02X}", u32::from(other)),
        })
        .collect()
}

/// How a letter was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The whole message is on the dead-letter topic.
    Topic,
    /// The original bytes are on the object store; a pointer is on the topic.
    Pointer,
    /// The original bytes and `letter.json` are on the object store; the topic could not take
    /// even a pointer.
    StoreOnly,
}

impl Delivery {
    pub const ALL: [Delivery; 3] = [Delivery::Topic, Delivery::Pointer, Delivery::StoreOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Topic => "topic",
            Delivery::Pointer => "pointer",
            Delivery::StoreOnly => "store_only",
        }
    }
}

/// What a failed send means for what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// This record can never be written to the topic, however often we retry.
    RecordRefused,
    /// The topic cannot take anything now (missing, not authorised); may be fixed by an operator.
    TopicUnusable,
    /// Worth retrying as is.
    Transient,
}

/// Tells a producer error apart: permanent for this record, topic-level, or transient.
pub fn classify(error: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return Failure::Transient,
    };
    match code {
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidMessage
        | C::InvalidRecord
        | C::PolicyViolation
        | C::InvalidRequiredAcks
        | C::BadMessage => Failure::RecordRefused,
        C::UnknownTopic
        | C::UnknownTopicOrPartition
        | C::UnknownPartition
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::InvalidTopic => Failure::TopicUnusable,
        _ => Failure::Transient,
    }
}

/// `letter.json`, next to the payload on the object store, and the pointer record's value.
#[derive(Debug, Serialize)]
struct LetterFile<'a> {
    format: u32,
    reason: &'a str,
    detail: &'a str,
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
    /// `s3://<bucket>/<key>` of the original bytes.
    payload_location: String,
    payload_sha256: String,
    payload_bytes: usize,
    /// The original key, hex-encoded (absent when the message had none).
    key_hex: Option<String>,
    /// The original headers, values hex-encoded.
    headers: Vec<HeaderFile<'a>>,
    /// Why the whole message is not on the dead-letter topic.
    why_not_on_topic: &'a str,
}

#[derive(Debug, Serialize)]
struct HeaderFile<'a> {
    key: &'a str,
    value_hex: Option<String>,
}

/// Delivers dead letters; cheap to clone and share between partitions' flush tasks.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// How long to retry a topic that is unusable before keeping a letter on the store alone.
    topic_wait: Duration,
    /// While set and in the future, the topic was found unusable: skip straight to the store.
    topic_down_until: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// Reports the retry state of a delivery: `Some(reason)` while retrying, `None` once through.
pub type RetryReport<'a> = &'a (dyn Fn(Option<String>) + Send + Sync);

impl DeadLetters {
    pub fn new(
        brokers: &str,
        topic: &str,
        store: Arc<dyn ObjectStore>,
        bucket: &str,
        topic_wait: Duration,
    ) -> anyhow::Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            // A missing topic fails a send after this long (librdkafka's default is 30 s); we
            // retry it ourselves up to `topic_wait`.
            .set("topic.metadata.propagation.max.ms", "5000")
            .create()?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            store,
            bucket: bucket.to_owned(),
            topic_wait,
            topic_down_until: Arc::new(Mutex::new(None)),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Delivers `letter` and returns how. Returns `Err` only when `stop` fires first; then the
    /// letter's offset must not be stored (it is consumed again).
    pub async fn deliver(
        &self,
        letter: &DeadLetter,
        report: RetryReport<'_>,
        stop: &CancellationToken,
    ) -> Result<Delivery, Stopped> {
        let delivery = self.deliver_inner(letter, report, stop).await;
        report(None);
        delivery
    }

    async fn deliver_inner(
        &self,
        letter: &DeadLetter,
        report: RetryReport<'_>,
        stop: &CancellationToken,
    ) -> Result<Delivery, Stopped> {
        if self.topic_known_down() {
            return self
                .keep_on_store(letter, "the dead-letter topic is unusable", report, stop)
                .await
                .map(|()| Delivery::StoreOnly);
        }
        let mut headers = original_headers(letter);
        headers = with_source_headers(headers, letter);
        match self
            .send_until_decided(letter, &headers, &letter.payload, report, stop)
            .await?
        {
            Ok(()) => Ok(Delivery::Topic),
            Err(Failure::TopicUnusable) => {
                self.mark_topic_down();
                self.keep_on_store(letter, "the dead-letter topic is unusable", report, stop)
                    .await?;
                Ok(Delivery::StoreOnly)
            }
            Err(_) => {
                let why = "the dead-letter topic refused the record (too large or invalid)";
                let file = self.keep_on_store(letter, why, report, stop).await;
                file?;
                let pointer = self.letter_file(letter, why);
                let body = serde_json::to_vec(&pointer).unwrap_or_default();
                let headers = with_source_headers(OwnedHeaders::new(), letter)
                    .insert(Header {
                        key: headers::PAYLOAD_LOCATION,
                        value: Some(pointer.payload_location.as_str()),
                    })
                    .insert(Header {
                        key: headers::PAYLOAD_SHA256,
                        value: Some(pointer.payload_sha256.as_str()),
                    })
                    .insert(Header {
                        key: headers::PAYLOAD_BYTES,
                        value: Some(pointer.payload_bytes.to_string().as_str()),
                    });
                match self
                    .send_until_decided(letter, &headers, &body, report, stop)
                    .await?
                {
                    Ok(()) => Ok(Delivery::Pointer),
                    Err(failure) => {
                        if failure == Failure::TopicUnusable {
                            self.mark_topic_down();
                        }
                        tracing::error!(
                            topic = %self.topic, source_partition = letter.partition,
                            source_offset = letter.offset, ?failure,
                            "the dead-letter topic refused even the pointer; the letter is kept on the store only"
                        );
                        Ok(Delivery::StoreOnly)
                    }
                }
            }
        }
    }

    fn topic_known_down(&self) -> bool {
        let mut down = self
            .topic_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    fn mark_topic_down(&self) {
        // Try the topic again after a while: an operator may have created it meanwhile.
        *self
            .topic_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + self.topic_wait);
    }

    /// Sends one record: transient failures are retried until they pass (or `stop`); an
    /// unusable topic is retried for `topic_wait`; a refused record is returned at once.
    async fn send_until_decided(
        &self,
        letter: &DeadLetter,
        headers: &OwnedHeaders,
        payload: &[u8],
        report: RetryReport<'_>,
        stop: &CancellationToken,
    ) -> Result<Result<(), Failure>, Stopped> {
        let mut unusable_since: Option<Instant> = None;
        let send = || {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers.clone());
            record = record.payload(payload);
            if let Some(key) = &letter.key {
                record = record.key(key.as_slice());
            }
            async move {
                let sent = self.producer.send(record, Duration::from_secs(30)).await;
                sent.map(|_| ()).map_err(|(error, _)| error)
            }
        };
        let sent = retry(&BACKOFF, stop, send, |error, _| {
            let failure = classify(error);
            match failure {
                Failure::RecordRefused => {
                    tracing::warn!(
                        topic = %self.topic, source_partition = letter.partition,
                        source_offset = letter.offset, bytes = payload.len(), %error,
                        "the dead-letter topic refused the record"
                    );
                    return Next::GiveUp;
                }
                Failure::TopicUnusable => {
                    let since = *unusable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.topic_wait {
                        tracing::error!(
                            topic = %self.topic, source_partition = letter.partition,
                            source_offset = letter.offset, %error, waited_secs = since.elapsed().as_secs(),
                            "the dead-letter topic is unusable; create it or grant write access"
                        );
                        return Next::GiveUp;
                    }
                }
                Failure::Transient => {}
            }
            report(Some(format!(
                "dead letter for offset {} not delivered: {error}",
                letter.offset
            )));
            tracing::warn!(
                topic = %self.topic, source_partition = letter.partition,
                source_offset = letter.offset, %error, ?failure,
                "failed to send a dead letter; retrying this partition only"
            );
            Next::Retry
        })
        .await;
        match sent {
            Ok(()) => Ok(Ok(())),
            Err(RetryError::Failed(error)) => Ok(Err(classify(&error))),
            Err(RetryError::Cancelled) => Err(Stopped),
        }
    }

    fn letter_file<'a>(&self, letter: &'a DeadLetter, why: &'a str) -> LetterFile<'a> {
        LetterFile {
            format: 1,
            reason: letter.reason,
            detail: &letter.detail,
            source_topic: &letter.topic,
            source_partition: letter.partition,
            source_offset: letter.offset,
            payload_location: format!("s3://{}/{}/payload", self.bucket, letter.store_folder()),
            payload_sha256: hex::encode(Sha256::digest(&letter.payload)),
            payload_bytes: letter.payload.len(),
            key_hex: letter.key.as_ref().map(hex::encode),
            headers: letter
                .headers
                .iter()
                .map(|(key, value)| HeaderFile {
                    key,
                    value_hex: value.as_ref().map(hex::encode),
                })
                .collect(),
            why_not_on_topic: why,
        }
    }

    /// Writes the payload, then `letter.json`, retrying store errors until they pass.
    async fn keep_on_store(
        &self,
        letter: &DeadLetter,
        why: &str,
        report: RetryReport<'_>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let folder = letter.store_folder();
        let file = serde_json::to_vec_pretty(&self.letter_file(letter, why)).unwrap_or_default();
        let objects = [
            (
                format!("{folder}/payload"),
                Bytes::from(letter.payload.clone()),
            ),
            (format!("{folder}/letter.json"), Bytes::from(file)),
        ];
        for (key, body) in objects {
            let put = || self.store.put(&key, body.clone());
            // Every error is retried: only the stop token ends the retries.
            retry(&BACKOFF, stop, put, |error, _| {
                report(Some(format!("dead letter not kept on the store: {error}")));
                tracing::warn!(%key, %error, "failed to keep a dead letter on the store; retrying");
                Next::Retry
            })
            .await
            .map_err(|_| Stopped)?;
        }
        tracing::warn!(
            source_partition = letter.partition, source_offset = letter.offset,
            location = %format!("s3://{}/{folder}/", self.bucket), why,
            "dead letter kept on the object store"
        );
        Ok(())
    }
}

fn original_headers(letter: &DeadLetter) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &letter.headers {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: value.as_deref(),
        });
    }
    headers
}

fn with_source_headers(headers: OwnedHeaders, letter: &DeadLetter) -> OwnedHeaders {
    let partition = letter.partition.to_string();
    let offset = letter.offset.to_string();
    headers
        .insert(Header {
            key: headers::REASON,
            value: Some(letter.reason),
        })
        .insert(Header {
            key: headers::DETAIL,
            value: Some(letter.detail.as_str()),
        })
        .insert(Header {
            key: headers::SOURCE_TOPIC,
            value: Some(letter.topic.as_str()),
        })
        .insert(Header {
            key: headers::SOURCE_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: headers::SOURCE_OFFSET,
            value: Some(offset.as_str()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_errors_are_told_apart() {
        use RDKafkaErrorCode as C;
        let cases = [
            (C::MessageSizeTooLarge, Failure::RecordRefused),
            (C::InvalidRecord, Failure::RecordRefused),
            (C::PolicyViolation, Failure::RecordRefused),
            (C::UnknownTopicOrPartition, Failure::TopicUnusable),
            (C::UnknownTopic, Failure::TopicUnusable),
            (C::TopicAuthorizationFailed, Failure::TopicUnusable),
            (C::MessageTimedOut, Failure::Transient),
            (C::AllBrokersDown, Failure::Transient),
            (C::NotLeaderForPartition, Failure::Transient),
            (C::RequestTimedOut, Failure::Transient),
            (C::NotEnoughReplicas, Failure::Transient),
            (C::QueueFull, Failure::Transient),
        ];
        for (code, expected) in cases {
            assert_eq!(
                classify(&KafkaError::MessageProduction(code)),
                expected,
                "{code:?}"
            );
        }
        assert_eq!(
            classify(&KafkaError::Canceled),
            Failure::Transient,
            "a client-level error is retried"
        );
    }

    #[test]
    fn store_names_come_from_the_source_position_and_cannot_escape() {
        assert_eq!(storage_safe("chat-events"), "chat-events");
        assert_eq!(storage_safe("a.b_c"), "a.b_c");
        assert_eq!(storage_safe("../x"), "%2E.%2Fx");
        assert_eq!(storage_safe(".."), "%2E.");
        assert_eq!(storage_safe("a/b"), "a%2Fb");
        let letter = DeadLetter {
            topic: "chat-events".into(),
            partition: 3,
            offset: 42,
            key: None,
            payload: b"x".to_vec(),
            headers: vec![],
            reason: "oversized",
            detail: String::new(),
        };
        assert_eq!(
            letter.store_folder(),
            "dead-letters/v1/chat-events/3/00000000000000000042"
        );
    }
}
