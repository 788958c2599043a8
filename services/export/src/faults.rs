//! Test-only fault points, so the fault suite can kill a replica at an exact point of a job's
//! life instead of at a random instant.
//!
//! `CCE_FAULT_PAUSE_AT=claim,mid_upload,before_finish,before_mail` (empty by default) makes the
//! runner, when it reaches one of those points, log `fault point reached` with the point and
//! the job and then wait forever, holding whatever it holds (the claim, the open multipart
//! upload, the completed object, the recorded result), while its heartbeats go on. The test
//! watches the replica's log for the line and SIGKILLs the process there. Never set it in
//! production: a paused job is only taken over once its replica stops beating (dies).
//!
//! The points, in a job's order:
//! - `claim`: the claim is in the state log; nothing is exported yet.
//! - `mid_upload`: the archive's multipart upload has stored its first part; the object is
//!   not visible yet.
//! - `before_finish`: the upload is complete (the attempt's object is visible); the result is
//!   not recorded yet.
//! - `before_mail`: the result is recorded; the requester is not notified yet.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use storage::{CompletedPart, ListPage, ObjectMeta, ObjectStore};

/// A point of a job's life where a replica can be made to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum FaultPoint {
    /// After the claim is recorded, before the export starts.
    Claim,
    /// After the archive's first part is stored, before the upload completes.
    MidUpload,
    /// After the upload completes, before the result is recorded.
    BeforeFinish,
    /// After the result is recorded, before the notifications.
    BeforeMail,
}

impl FaultPoint {
    /// The name used in `CCE_FAULT_PAUSE_AT` and in the log line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::MidUpload => "mid_upload",
            Self::BeforeFinish => "before_finish",
            Self::BeforeMail => "before_mail",
        }
    }
}

/// The points where this replica pauses (none outside the fault suite).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pause_at: Arc<[FaultPoint]>,
}

impl Faults {
    pub fn new(pause_at: &[FaultPoint]) -> Self {
        Self {
            pause_at: pause_at.into(),
        }
    }

    /// Whether the replica pauses at `point`.
    pub fn pauses_at(&self, point: FaultPoint) -> bool {
        self.pause_at.contains(&point)
    }

    /// Returns at once unless the replica pauses at `point`; then logs the marker and never
    /// returns (the fault suite kills the process).
    pub async fn reached(&self, point: FaultPoint, job_id: &str) {
        if !self.pauses_at(point) {
            return;
        }
        tracing::warn!(
            point = point.name(),
            job = %job_id,
            "fault point reached; pausing until killed (CCE_FAULT_PAUSE_AT, test only)"
        );
        std::future::pending::<()>().await;
    }

    /// `store`, pausing after the first part of any multipart upload is stored when the
    /// replica pauses at [`FaultPoint::MidUpload`]; else `store` itself.
    pub fn wrap(&self, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        if self.pauses_at(FaultPoint::MidUpload) {
            Arc::new(PausingStore {
                inner: store,
                faults: self.clone(),
            })
        } else {
            store
        }
    }
}

/// An object store that pauses (forever) once an upload part has been stored.
#[derive(Debug)]
struct PausingStore {
    inner: Arc<dyn ObjectStore>,
    faults: Faults,
}

#[async_trait]
impl ObjectStore for PausingStore {
    async fn put(&self, key: &str, body: Bytes) -> storage::Result<()> {
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> storage::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, end: u64) -> storage::Result<Bytes> {
        self.inner.get_range(key, start, end).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> storage::Result<()> {
        self.inner.put_if_absent(key, body).await
    }
    async fn head(&self, key: &str) -> storage::Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> storage::Result<ListPage> {
        self.inner.list_page(prefix, start_after, max_keys).await
    }
    async fn delete(&self, key: &str) -> storage::Result<()> {
        self.inner.delete(key).await
    }
    async fn create_multipart(&self, key: &str) -> storage::Result<String> {
        self.inner.create_multipart(key).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> storage::Result<String> {
        let etag = self.inner.upload_part(key, upload_id, number, body).await?;
        // The part is in the store and the object is not visible: the middle of the upload.
        let job = key.split('/').nth(2).unwrap_or(key);
        self.faults.reached(FaultPoint::MidUpload, job).await;
        Ok(etag)
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> storage::Result<()> {
        self.inner.complete_multipart(key, upload_id, parts).await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> storage::Result<()> {
        self.inner.abort_multipart(key, upload_id).await
    }
    async fn presign_get(&self, key: &str, ttl: Duration) -> storage::Result<String> {
        self.inner.presign_get(key, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use storage::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn an_unset_point_returns_at_once_and_a_set_one_pauses() {
        let faults = Faults::new(&[FaultPoint::BeforeMail]);
        faults.reached(FaultPoint::Claim, "j1").await;
        let paused = tokio::time::timeout(
            Duration::from_millis(50),
            faults.reached(FaultPoint::BeforeMail, "j1"),
        )
        .await;
        assert!(paused.is_err(), "a set point returned");
    }

    #[tokio::test]
    async fn the_store_pauses_after_the_first_part_is_stored_and_only_when_asked() {
        let memory: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        // Not pausing at mid_upload: the store itself, unwrapped.
        let plain = Faults::new(&[FaultPoint::Claim]).wrap(memory.clone());
        assert!(Arc::ptr_eq(&plain, &memory));

        let paused = Faults::new(&[FaultPoint::MidUpload]).wrap(memory.clone());
        let key = "exports/acme/j1/attempt-1/a.zip";
        let upload = paused.create_multipart(key).await.unwrap();
        let part = tokio::time::timeout(
            Duration::from_millis(50),
            paused.upload_part(key, &upload, 1, Bytes::from_static(b"part")),
        )
        .await;
        assert!(part.is_err(), "the upload went on past its first part");
        assert!(
            memory.head(key).await.unwrap().is_none(),
            "the paused upload's object is visible"
        );
    }
}
