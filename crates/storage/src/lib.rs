//! The object-store interface the services need, and its implementations.
//!
//! The services depend on [`ObjectStore`], never on an SDK: [`S3Store`] talks to any S3-API store
//! (AWS, MinIO, garage) and [`MemoryStore`] serves unit tests. Both pass the same
//! [`conformance`] suite (the S3 one against a real server in the integration tests).
//!
//! There is deliberately no create-only put: garage ignores `If-None-Match: *`, so correctness
//! never depends on it. Callers make keys and contents deterministic instead (`docs/servers.md`).

mod memory;
mod s3;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

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
