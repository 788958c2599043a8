//! Log epochs: every v2 object name carries the epoch of its partition, and a new epoch begins
//! whenever Kafka offsets could have restarted (a re-created topic, another cluster), so names
//! of different histories can never collide. Each epoch has a marker object saying why it
//! began; its bytes hold no wall-clock time, so two replicas that begin the same epoch from the
//! same facts write the same bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use storage::{ObjectStore, list_all};

use crate::Result;
use crate::format::FORMAT_NAME;
use crate::v2::keys;
use crate::v2::segment::FORMAT_VERSION;

/// Where the previous epoch of a partition ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousEpoch {
    pub epoch: u32,
    pub durable_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochMarker {
    pub format: String,
    pub version: u32,
    pub kind: String,
    pub topic: String,
    pub partition: i32,
    pub epoch: u32,
    /// The Kafka cluster id the epoch's offsets belong to, when the broker reports one.
    pub cluster_id: Option<String>,
    /// The first offset this epoch logs.
    pub start_offset: i64,
    /// Why it began: `first`, `cluster changed`, `offsets went back`, `record differs`,
    /// `records expired`.
    pub reason: String,
    pub previous: Option<PreviousEpoch>,
}

impl EpochMarker {
    pub fn new(
        topic: &str,
        partition: i32,
        epoch: u32,
        cluster_id: Option<String>,
        start_offset: i64,
        reason: &str,
        previous: Option<PreviousEpoch>,
    ) -> Self {
        Self {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            kind: "epoch".to_owned(),
            topic: topic.to_owned(),
            partition,
            epoch,
            cluster_id,
            start_offset,
            reason: reason.to_owned(),
            previous,
        }
    }

    pub fn key(&self) -> String {
        keys::epoch_key(&self.topic, self.partition, self.epoch)
    }

    pub fn encode(&self) -> Result<Bytes> {
        super::encode_json(self)
    }

    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        super::decode_json(key, bytes, "epoch", |o: &Self| {
            (o.format.as_str(), o.version, o.kind.as_str())
        })
    }

    /// Writes the marker, never replacing another one (`storage::put_new`).
    pub async fn write(&self, store: &dyn ObjectStore) -> Result<()> {
        storage::put_new(store, &self.key(), self.encode()?).await?;
        Ok(())
    }

    /// Every marker of a partition, oldest first.
    pub async fn all(store: &dyn ObjectStore, topic: &str, partition: i32) -> Result<Vec<Self>> {
        let mut markers = Vec::new();
        for object in list_all(store, &keys::epochs_prefix(topic, partition)).await? {
            let bytes = store.get(&object.key).await?;
            markers.push(Self::decode(&object.key, &bytes)?);
        }
        Ok(markers)
    }

    /// The partition's current (latest) epoch marker, if any.
    pub async fn latest(
        store: &dyn ObjectStore,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Self>> {
        let Some(last) = list_all(store, &keys::epochs_prefix(topic, partition))
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let bytes = store.get(&last.key).await?;
        Self::decode(&last.key, &bytes).map(Some)
    }
}
