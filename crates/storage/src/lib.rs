//! The object-store interface the services need, and its implementations.
//!
//! The services depend on [`ObjectStore`], never on an SDK: [`S3Store`] talks to any S3-API store
//! (AWS, MinIO, garage) and [`MemoryStore`] serves unit tests. Both pass the same
//! [`conformance`] suite (the S3 one against a real server in the integration tests).
//!
//! Create-only writes go through [`put_new`]: it sends `If-None-Match: *` (honoured by AWS S3
//! and MinIO) but does not depend on it, because garage ignores it (`docs/servers.md`): it looks
//! first, and an object already there with other bytes is a [`ErrorKind::Conflict`], never
//! replaced. Callers also make keys and contents deterministic, so a retry finds its own bytes.

mod counting;
mod memory;
mod s3;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use counting::{CountingStore, RequestCounts};
pub use memory::MemoryStore;
pub use s3::{S3Config, S3Store};

/// What went wrong, in terms a caller can act on (never an SDK type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    /// The credentials were refused or lack the permission.
    AccessDenied,
    /// The store did not answer in time or the connection failed; retrying may help.
    Unavailable,
    /// A create-only write found an object with other bytes under its key.
    Conflict,
    /// The request was malformed or refused for another reason.
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {key}: {message}")]
pub struct StorageError {
    pub kind: ErrorKind,
    /// The operation, e.g. `put`, `complete multipart`.
    pub op: &'static str,
    pub key: String,
    pub message: String,
}

impl StorageError {
    pub fn new(
        kind: ErrorKind,
        op: &'static str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            op,
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// One page of a listing, in lexicographic key order.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Set when more keys follow: pass it as `start_after` to get the next page.
    pub next_start_after: Option<String>,
}

/// A part of a multipart upload, as `complete_multipart` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based, at most 10,000.
    pub number: i32,
    pub etag: String,
}

/// The operations the services need from an object store. Keys are relative to the store's
/// bucket; every method is safe to call concurrently.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes the whole object, replacing any object at `key`.
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;
    /// Reads the whole object. `NotFound` when there is none.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Reads bytes `start..end` of the object (fewer when it is shorter). `NotFound` when there
    /// is none.
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes>;
    /// Writes the object only if no object is at `key` (`If-None-Match: *`). Stores that ignore
    /// the condition replace silently; [`put_new`] does not rely on it.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<()>;
    /// The object's size, or `None` when there is none.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;
    /// Up to `max_keys` objects whose keys start with `prefix` and sort after `start_after`.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> Result<ListPage>;
    /// Deletes the object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Starts a multipart upload and returns its id. The object stays invisible until
    /// [`complete_multipart`](Self::complete_multipart) succeeds.
    async fn create_multipart(&self, key: &str) -> Result<String>;
    /// Uploads one part (every part but the last must be at least 5 MiB on S3) and returns its
    /// ETag.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String>;
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<()>;
    /// Abandons the upload and frees its parts.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()>;

    /// A URL that lets anyone holding it GET the object until `ttl` passes.
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String>;
}

/// What [`put_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutNew {
    Created,
    /// The object was there already with exactly these bytes (a retry or a replay).
    AlreadyIdentical,
}

/// Writes an object that must never be replaced: if `key` holds other bytes already, fails with
/// [`ErrorKind::Conflict`] and leaves it alone. The check does not depend on the store honouring
/// `If-None-Match` (garage does not); two writers racing on one key between the check and the
/// write remain possible on such a store, which is why callers derive keys and bytes from the
/// content, so racing writers write the same bytes.
pub async fn put_new(store: &dyn ObjectStore, key: &str, body: Bytes) -> Result<PutNew> {
    if store.head(key).await?.is_some() {
        let existing = store.get(key).await?;
        if existing == body {
            return Ok(PutNew::AlreadyIdentical);
        }
        return Err(StorageError::new(
            ErrorKind::Conflict,
            "put new",
            key,
            format!(
                "an object of {} bytes with other content is already there ({} bytes offered); \
                 refusing to replace it: two writers use one name (a restarted topic or a second \
                 deployment writing into this bucket?)",
                existing.len(),
                body.len()
            ),
        ));
    }
    match store.put_if_absent(key, body.clone()).await {
        Ok(()) => Ok(PutNew::Created),
        // Another writer got there between the check and the write: same rule as above.
        Err(error) if error.kind == ErrorKind::Conflict => {
            if store.get(key).await? == body {
                Ok(PutNew::AlreadyIdentical)
            } else {
                Err(error)
            }
        }
        Err(error) => Err(error),
    }
}

/// Lists every object under `prefix`, page by page.
pub async fn list_all(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<ObjectMeta>> {
    let mut all = Vec::new();
    let mut start_after: Option<String> = None;
    loop {
        let page = store
            .list_page(prefix, start_after.as_deref(), 1000)
            .await?;
        all.extend(page.objects);
        match page.next_start_after {
            Some(next) => start_after = Some(next),
            None => return Ok(all),
        }
    }
}
