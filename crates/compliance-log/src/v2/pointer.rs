//! The durable watermark: per partition, how far the log is complete — and the position an
//! export reads at.
//!
//! Ingestion keeps one pointer object per partition (`log/v2/watermarks/<topic>/<partition>.json`,
//! the log's only mutable object): the epoch it writes, the offset below which everything is
//! durable, and the instant before which every record published to the partition is durable. An
//! export waits until the pointers are past its range, captures them as a [`LogPosition`] and
//! reads the log at it, so the archive says exactly what it covers and the same position gives
//! the same archive again, before or after compaction.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use storage::{ObjectStore, list_all};

use crate::format::FORMAT_NAME;
use crate::v2::keys;
use crate::v2::segment::FORMAT_VERSION;
use crate::{LogRecord, Result};

/// Fingerprint of the record at `durable_offset - 1`, for telling a restarted topic from a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRecord {
    pub offset: i64,
    /// SHA-256 (hex) of the Kafka payload as consumed.
    pub payload_sha256: String,
}

/// One partition's pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub format: String,
    pub version: u32,
    pub kind: String,
    pub topic: String,
    pub partition: i32,
    /// The topic's partition count as ingestion saw it, so a reader knows how many to expect.
    pub partitions: i32,
    pub epoch: u32,
    /// Every offset below it, in this epoch, is durable in the log or dead-lettered.
    pub durable_offset: i64,
    /// Every record published to the partition before this instant is durable. Taken from a
    /// probe: the partition's end offset read at `t0` (the clock read before the request); once
    /// `durable_offset` reaches it, the watermark moves to `t0`. `None` until first observed.
    pub time_watermark: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_record: Option<LastRecord>,
}

impl Watermark {
    pub fn new(
        topic: &str,
        partition: i32,
        partitions: i32,
        epoch: u32,
        durable_offset: i64,
    ) -> Self {
        Self {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            kind: "watermark".to_owned(),
            topic: topic.to_owned(),
            partition,
            partitions,
            epoch,
            durable_offset,
            time_watermark: None,
            last_record: None,
        }
    }

    pub fn key(&self) -> String {
        keys::watermark_key(&self.topic, self.partition)
    }

    pub fn encode(&self) -> Result<Bytes> {
        super::encode_json(self)
    }

    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        super::decode_json(key, bytes, "watermark", |o: &Self| {
            (o.format.as_str(), o.version, o.kind.as_str())
        })
    }

    /// Writes the pointer (the one object that is replaced in place).
    pub async fn write(&self, store: &dyn ObjectStore) -> Result<()> {
        Ok(store.put(&self.key(), self.encode()?).await?)
    }

    /// One partition's pointer, or `None` when ingestion has not written one yet.
    pub async fn read(
        store: &dyn ObjectStore,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Self>> {
        let key = keys::watermark_key(topic, partition);
        match store.get(&key).await {
            Ok(bytes) => Ok(Some(Self::decode(&key, &bytes)?)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Every pointer of a topic, in partition order.
    pub async fn read_all(store: &dyn ObjectStore, topic: &str) -> Result<Vec<Self>> {
        let keys: Vec<String> = list_all(store, &keys::watermarks_prefix(topic))
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        futures::stream::iter(keys)
            .map(|key| async move {
                let bytes = store.get(&key).await?;
                Self::decode(&key, &bytes)
            })
            .buffered(16)
            .try_collect()
            .await
    }
}

/// How far one partition of the log is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    pub partition: i32,
    pub epoch: u32,
    pub durable_offset: i64,
    pub time_watermark: Option<DateTime<Utc>>,
}

/// A point in the log: per partition, its epoch and durable offset. Reading at a position
/// returns exactly the records below it, whenever the read happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub topic: String,
    /// The topic's partition count as the pointers say (0 when there is none).
    pub expected_partitions: i32,
    /// In partition order.
    pub partitions: Vec<PartitionPosition>,
}

impl LogPosition {
    /// The position the pointers give now.
    pub async fn read(store: &dyn ObjectStore, topic: &str) -> Result<Self> {
        Ok(Self::from_pointers(
            topic,
            &Watermark::read_all(store, topic).await?,
        ))
    }

    pub fn from_pointers(topic: &str, pointers: &[Watermark]) -> Self {
        let mut partitions: Vec<PartitionPosition> = pointers
            .iter()
            .filter(|p| p.topic == topic)
            .map(|p| PartitionPosition {
                partition: p.partition,
                epoch: p.epoch,
                durable_offset: p.durable_offset,
                time_watermark: p.time_watermark,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Self {
            topic: topic.to_owned(),
            expected_partitions: pointers.iter().map(|p| p.partitions).max().unwrap_or(0),
            partitions,
        }
    }

    pub fn partition(&self, partition: i32) -> Option<&PartitionPosition> {
        self.partitions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()
            .map(|i| &self.partitions[i])
    }

    /// Whether a record is inside the position: format-1 records (epoch 0) always are; others
    /// when their partition is known and they are below its durable offset in its epoch (or
    /// from an earlier epoch, which is closed).
    pub fn admits(&self, record: &LogRecord) -> bool {
        if record.epoch == 0 {
            return true;
        }
        self.partition(record.partition).is_some_and(|p| {
            record.epoch < p.epoch || (record.epoch == p.epoch && record.offset < p.durable_offset)
        })
    }

    /// Every partition `0..expected_partitions` has a pointer with a time watermark.
    pub fn is_complete(&self) -> bool {
        self.expected_partitions > 0
            && (0..self.expected_partitions).all(|p| {
                self.partition(p)
                    .is_some_and(|pos| pos.time_watermark.is_some())
            })
    }

    /// The instant before which every partition's records are durable: the least time
    /// watermark, `None` unless the position is complete.
    pub fn min_time_watermark(&self) -> Option<DateTime<Utc>> {
        if !self.is_complete() {
            return None;
        }
        self.partitions
            .iter()
            .filter_map(|p| p.time_watermark)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MemoryStore;

    #[tokio::test]
    async fn pointers_make_a_position_that_admits_only_what_is_below_it() {
        let store = MemoryStore::new();
        for (partition, epoch, durable, at) in [
            (0, 1, 50, "2026-11-26T10:00:00Z"),
            (1, 2, 7, "2026-11-26T09:59:00Z"),
        ] {
            let mut pointer = Watermark::new("t", partition, 2, epoch, durable);
            pointer.time_watermark = Some(at.parse().unwrap());
            pointer.write(&store).await.unwrap();
        }
        let position = LogPosition::read(&store, "t").await.unwrap();
        assert!(position.is_complete());
        assert_eq!(
            position.min_time_watermark(),
            Some("2026-11-26T09:59:00Z".parse().unwrap())
        );
        let record = |epoch, partition, offset| {
            let raw = serde_json::value::RawValue::from_string(
                r#"{"event_id":"e","type":"person.created","occurred_at":"2026-11-26T00:00:00Z","person":{"id":"u","company_id":"acme","name":"n","email":"e"}}"#.into(),
            )
            .unwrap();
            LogRecord {
                epoch,
                partition,
                offset,
                event: serde_json::from_str(raw.get()).unwrap(),
                raw,
            }
        };
        assert!(position.admits(&record(1, 0, 49)));
        assert!(!position.admits(&record(1, 0, 50)));
        assert!(position.admits(&record(1, 1, 1_000))); // an earlier, closed epoch
        assert!(!position.admits(&record(3, 1, 0))); // an epoch begun after the position
        assert!(!position.admits(&record(1, 2, 0))); // a partition it does not know
        assert!(position.admits(&record(0, 9, 9))); // format 1
        let partial = LogPosition::from_pointers("t", &[Watermark::new("t", 0, 2, 1, 5)]);
        assert!(!partial.is_complete());
        assert_eq!(partial.min_time_watermark(), None);
    }
}
