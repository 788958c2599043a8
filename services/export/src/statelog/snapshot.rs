//! Snapshots of the folded state on object storage, so a replica folds only what follows the
//! newest one instead of the whole history.
//!
//! `<prefix><topic>/<offset, 20 digits>.json`: the [`State`] after folding every record before
//! `offset` (the next offset to fold). The state serialises with ordered maps only, so any
//! replica writing the snapshot of the same offset writes the same bytes; which replica writes
//! it does not matter. The newest few are kept, older ones deleted.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use storage::ObjectStore;

use crate::state::State;

/// The snapshot file format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// How many snapshots are kept (older ones are deleted after a write). More than one, so a
/// replica reading the newest while another writes a newer one never finds it gone.
const KEEP: usize = 3;

#[derive(Serialize, Deserialize)]
struct SnapshotFile<S> {
    format: u32,
    /// The newest record version the writer's build folds: a snapshot by a newer build may hold
    /// the effect of records this build would halt on, so it is passed over.
    #[serde(default)]
    record_version: u32,
    topic: String,
    /// The next offset to fold after this state.
    next_offset: u64,
    state: S,
}

/// Where one topic's snapshots live.
#[derive(Debug, Clone)]
pub struct Snapshots {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    topic: String,
}

/// Encodes the snapshot of `state` folded up to (not including) `next_offset`.
pub fn encode(topic: &str, next_offset: u64, state: &State) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&SnapshotFile {
        format: SNAPSHOT_FORMAT,
        record_version: crate::state::RECORD_VERSION,
        topic: topic.to_owned(),
        next_offset,
        state,
    })
}

impl Snapshots {
    /// Snapshots of `topic` under `<prefix><topic>/`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, topic: &str) -> Self {
        Self {
            store,
            prefix: format!("{prefix}{topic}/"),
            topic: topic.to_owned(),
        }
    }

    /// The folder of this topic's snapshots.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of the snapshot covering the records before `next_offset`.
    pub fn key(&self, next_offset: u64) -> String {
        format!("{}{next_offset:020}.json", self.prefix)
    }

    /// The newest readable snapshot: its offset and state. One this build cannot read (a newer
    /// format, or damaged) is passed over for the one before, with a warning; folding from an
    /// older one only costs time.
    pub async fn newest(&self) -> anyhow::Result<Option<(u64, State)>> {
        let listed = storage::list_all(self.store.as_ref(), &self.prefix)
            .await
            .with_context(|| {
                format!(
                    "listing the state snapshots under {} in the object store (check the S3 \
                     endpoint, bucket and credentials)",
                    self.prefix
                )
            })?;
        for object in listed.iter().rev() {
            match self.read(&object.key).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(key = %object.key, error = format!("{error:#}"), "passing over an unreadable state snapshot");
                }
            }
        }
        Ok(None)
    }

    async fn read(&self, key: &str) -> anyhow::Result<Option<(u64, State)>> {
        let Some(name) = key.strip_prefix(&self.prefix) else {
            return Ok(None);
        };
        if !name.ends_with(".json") {
            return Ok(None);
        }
        let bytes = self.store.get(key).await.context("reading")?;
        #[derive(Deserialize)]
        struct Header {
            format: u32,
            #[serde(default)]
            record_version: u32,
        }
        let header: Header = serde_json::from_slice(&bytes).context("decoding its header")?;
        anyhow::ensure!(
            header.format == SNAPSHOT_FORMAT,
            "snapshot format {} (this build reads {SNAPSHOT_FORMAT})",
            header.format
        );
        anyhow::ensure!(
            header.record_version <= crate::state::RECORD_VERSION,
            "written by a build that folds record version {} (this build folds up to {}): it may \
             hold records this build must stop at",
            header.record_version,
            crate::state::RECORD_VERSION
        );
        let file: SnapshotFile<State> = serde_json::from_slice(&bytes).context("decoding")?;
        anyhow::ensure!(
            file.topic == self.topic,
            "a snapshot of topic {:?}",
            file.topic
        );
        anyhow::ensure!(
            self.key(file.next_offset) == key,
            "its offset {} does not match its name",
            file.next_offset
        );
        Ok(Some((file.next_offset, file.state)))
    }

    /// Writes an encoded snapshot (unless that offset's exists: it holds the same bytes), then
    /// deletes all but the newest few.
    pub async fn write(&self, next_offset: u64, bytes: Vec<u8>) -> anyhow::Result<()> {
        let key = self.key(next_offset);
        if self.store.head(&key).await?.is_none() {
            let size = bytes.len();
            self.store.put(&key, Bytes::from(bytes)).await?;
            tracing::info!(%key, offset = next_offset, size, "state snapshot written");
        }
        let listed = storage::list_all(self.store.as_ref(), &self.prefix).await?;
        if listed.len() > KEEP {
            for old in &listed[..listed.len() - KEEP] {
                self.store.delete(&old.key).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_newest_readable_snapshot_wins_and_old_ones_are_pruned() {
        let store: Arc<dyn ObjectStore> = Arc::new(storage::MemoryStore::new());
        let snapshots = Snapshots::new(store.clone(), "state-snapshots/", "export-state");
        assert!(snapshots.newest().await.unwrap().is_none());
        for offset in [10, 20, 30, 40] {
            let bytes = encode("export-state", offset, &State::default()).unwrap();
            snapshots.write(offset, bytes).await.unwrap();
        }
        let keys: Vec<_> = storage::list_all(store.as_ref(), "state-snapshots/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            keys,
            [20, 30, 40].map(|o| format!("state-snapshots/export-state/{o:020}.json"))
        );
        assert_eq!(snapshots.newest().await.unwrap().unwrap().0, 40);
        // A newer format (or a damaged object) is passed over for the one before.
        store
            .put(
                &snapshots.key(50),
                Bytes::from_static(br#"{"format":2,"whatever":true}"#),
            )
            .await
            .unwrap();
        assert_eq!(snapshots.newest().await.unwrap().unwrap().0, 40);
        // So is one by a build that folds newer record versions (rolled back after it wrote).
        let newer = String::from_utf8(encode("export-state", 60, &State::default()).unwrap())
            .unwrap()
            .replace(
                &format!("\"record_version\":{}", crate::state::RECORD_VERSION),
                &format!("\"record_version\":{}", crate::state::RECORD_VERSION + 1),
            );
        assert!(newer.contains("record_version"));
        store
            .put(&snapshots.key(60), Bytes::from(newer))
            .await
            .unwrap();
        assert_eq!(snapshots.newest().await.unwrap().unwrap().0, 40);
        // Another topic's snapshots are not this one's.
        let other = Snapshots::new(store.clone(), "state-snapshots/", "export-state-2");
        assert!(other.newest().await.unwrap().is_none());
    }
}
