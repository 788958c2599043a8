//! A [`Sink`] that streams into an S3 multipart upload.
//!
//! Parts start at 8 MiB and double every 1,000 parts (up to 4 GiB), so 10,000 parts hold about
//! 8 TiB: even a terabyte archive fits. Two parts upload at once while the next fills. The
//! object appears only when [`MultipartSink::complete`] succeeds; on any failure or
//! cancellation the caller calls [`MultipartSink::abort`], and the bucket's lifecycle rule
//! removes uploads abandoned by a crash.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use storage::{CompletedPart, ObjectStore};
use tokio::task::JoinHandle;

use crate::ArchiveError;
use crate::zip::Sink;

const FIRST_PART: usize = 8 * 1024 * 1024;
const MAX_PARTS: i32 = 10_000;
const IN_FLIGHT: usize = 2;

/// The size of part `number` (1-based).
pub fn part_size(number: i32) -> usize {
    let doublings = u32::try_from((number.max(1) - 1) / 1000)
        .unwrap_or(0)
        .min(9);
    FIRST_PART << doublings
}

pub struct MultipartSink {
    store: Arc<dyn ObjectStore>,
    key: String,
    upload_id: String,
    buffer: BytesMut,
    next_part: i32,
    uploading: VecDeque<JoinHandle<Result<CompletedPart, ArchiveError>>>,
    done: Vec<CompletedPart>,
    size: u64,
    sha256: Sha256,
    /// Test hook: upload parts of this size instead (S3 needs 5 MiB for all but the last).
    part_size_override: Option<usize>,
}

impl std::fmt::Debug for MultipartSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultipartSink")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl MultipartSink {
    pub async fn start(store: Arc<dyn ObjectStore>, key: &str) -> Result<Self, ArchiveError> {
        let upload_id = store.create_multipart(key).await?;
        Ok(Self {
            store,
            key: key.to_owned(),
            upload_id,
            buffer: BytesMut::new(),
            next_part: 1,
            uploading: VecDeque::new(),
            done: Vec::new(),
            size: 0,
            sha256: Sha256::new(),
            part_size_override: None,
        })
    }

    /// The store and upload id, to abort the upload after the sink itself is gone.
    pub fn handle(&self) -> (Arc<dyn ObjectStore>, String) {
        (Arc::clone(&self.store), self.upload_id.clone())
    }

    /// For tests against the in-memory store.
    pub fn with_part_size(mut self, size: usize) -> Self {
        self.part_size_override = Some(size);
        self
    }

    fn current_part_size(&self) -> usize {
        self.part_size_override
            .unwrap_or_else(|| part_size(self.next_part))
    }

    fn upload(&mut self, body: Bytes) -> Result<(), ArchiveError> {
        if self.next_part > MAX_PARTS {
            return Err(ArchiveError::Internal(format!(
                "{}: more than {MAX_PARTS} parts",
                self.key
            )));
        }
        let (store, key, upload_id, number) = (
            Arc::clone(&self.store),
            self.key.clone(),
            self.upload_id.clone(),
            self.next_part,
        );
        self.next_part += 1;
        self.uploading.push_back(tokio::spawn(async move {
            let etag = store.upload_part(&key, &upload_id, number, body).await?;
            Ok(CompletedPart { number, etag })
        }));
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<(), ArchiveError> {
        if let Some(task) = self.uploading.pop_front() {
            let part = task
                .await
                .map_err(|e| ArchiveError::Internal(format!("part upload task: {e}")))??;
            self.done.push(part);
        }
        Ok(())
    }

    /// Uploads what is left and completes the upload: the object becomes visible now.
    /// Returns its size and SHA-256 (hex).
    pub async fn complete(mut self) -> Result<(u64, String), ArchiveError> {
        let rest = self.buffer.split().freeze();
        if !rest.is_empty() || self.next_part == 1 {
            self.upload(rest)?;
        }
        while !self.uploading.is_empty() {
            self.wait_oldest().await?;
        }
        let parts = std::mem::take(&mut self.done);
        self.store
            .complete_multipart(&self.key, &self.upload_id, parts)
            .await?;
        Ok((self.size, hex::encode(self.sha256.finalize())))
    }

    /// Abandons the upload and frees its parts.
    pub async fn abort(mut self) {
        for task in self.uploading.drain(..) {
            task.abort();
        }
        if let Err(error) = self.store.abort_multipart(&self.key, &self.upload_id).await {
            tracing::warn!(key = %self.key, %error, "failed to abort a multipart upload; the lifecycle rule will");
        }
    }
}

#[async_trait]
impl Sink for MultipartSink {
    async fn write(&mut self, bytes: Bytes) -> Result<(), ArchiveError> {
        self.size += bytes.len() as u64;
        self.sha256.update(&bytes);
        if self.buffer.capacity() == 0 {
            // One allocation per part, not a series of doublings and copies.
            self.buffer.reserve(self.current_part_size());
        }
        self.buffer.extend_from_slice(&bytes);
        while self.buffer.len() >= self.current_part_size() {
            let part = self.buffer.split_to(self.current_part_size()).freeze();
            self.upload(part)?;
            while self.uploading.len() > IN_FLIGHT {
                self.wait_oldest().await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_grow_so_ten_thousand_parts_hold_a_terabyte() {
        assert_eq!(part_size(1), 8 << 20);
        assert_eq!(part_size(1000), 8 << 20);
        assert_eq!(part_size(1001), 16 << 20);
        assert!(part_size(10_000) <= 5 << 30, "S3's largest part is 5 GiB");
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(n) as u64).sum();
        assert!(total > 1 << 40, "{total}");
    }
}
