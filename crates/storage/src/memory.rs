//! An in-memory [`ObjectStore`] for unit tests. It keeps S3's visible behaviour: multipart
//! objects appear only on completion, listings are ordered by key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{CompletedPart, ErrorKind, ListPage, ObjectMeta, ObjectStore, Result, StorageError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
    uploads: Mutex<HashMap<String, Upload>>,
    next_upload: AtomicU64,
}

#[derive(Debug)]
struct Upload {
    key: String,
    parts: BTreeMap<i32, Bytes>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many multipart uploads are started and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.uploads().len()
    }
}

fn no_upload(op: &'static str, key: &str, upload_id: &str) -> StorageError {
    StorageError::new(
        ErrorKind::NotFound,
        op,
        key,
        format!("no upload {upload_id}"),
    )
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.objects().insert(key.to_owned(), body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| StorageError::new(ErrorKind::NotFound, "get", key, "no such key"))
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes> {
        let body = self.get(key).await?;
        let len = body.len() as u64;
        let (start, end) = (start.min(len), end.clamp(start.min(len), len));
        Ok(body.slice(start as usize..end as usize))
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<()> {
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Err(StorageError::new(
                ErrorKind::Conflict,
                "put if absent",
                key,
                "an object is already there",
            ));
        }
        objects.insert(key.to_owned(), body);
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.objects().get(key).map(|b| ObjectMeta {
            key: key.to_owned(),
            size: b.len() as u64,
        }))
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> Result<ListPage> {
        let objects = self.objects();
        let max = usize::try_from(max_keys.max(1)).unwrap_or(1);
        let mut page: Vec<ObjectMeta> = objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| start_after.is_none_or(|after| k.as_str() > after))
            .take(max + 1)
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect();
        let next_start_after = if page.len() > max {
            page.truncate(max);
            page.last().map(|m| m.key.clone())
        } else {
            None
        };
        Ok(ListPage {
            objects: page,
            next_start_after,
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects().remove(key);
        Ok(())
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        let id = format!(
            "upload-{}",
            self.next_upload.fetch_add(1, Ordering::Relaxed)
        );
        self.uploads().insert(
            id.clone(),
            Upload {
                key: key.to_owned(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String> {
        let mut uploads = self.uploads();
        let upload = uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_upload("upload part", key, upload_id))?;
        upload.parts.insert(number, body);
        Ok(format!("etag-{upload_id}-{number}"))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<()> {
        let upload = {
            let mut uploads = self.uploads();
            match uploads.get(upload_id) {
                Some(u) if u.key == key => uploads.remove(upload_id),
                _ => None,
            }
        }
        .ok_or_else(|| no_upload("complete multipart", key, upload_id))?;
        let mut body = Vec::new();
        for part in &parts {
            let bytes = upload.parts.get(&part.number).ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Other,
                    "complete multipart",
                    key,
                    format!("part {} was never uploaded", part.number),
                )
            })?;
            body.extend_from_slice(bytes);
        }
        self.objects().insert(key.to_owned(), Bytes::from(body));
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        self.uploads()
            .remove(upload_id)
            .ok_or_else(|| no_upload("abort multipart", key, upload_id))?;
        Ok(())
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String> {
        Ok(format!("memory:///{key}?ttl={}", ttl.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::conformance::run(&MemoryStore::new(), "conformance/", false).await;
    }
}
