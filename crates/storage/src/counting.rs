//! An [`ObjectStore`] wrapper that counts the requests made through it, so tests and benchmarks
//! can assert what a read or a pass costs in S3 requests (S3 bills per request).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{CompletedPart, ListPage, ObjectMeta, ObjectStore, Result};

/// Requests made so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Whole-object GETs.
    pub gets: u64,
    /// Ranged GETs.
    pub range_gets: u64,
    /// LIST pages.
    pub lists: u64,
    pub heads: u64,
    /// PUTs, create-only PUTs and multipart uploads (parts counted one each).
    pub puts: u64,
    pub deletes: u64,
}

impl RequestCounts {
    /// Every GET, whole or ranged.
    pub fn all_gets(&self) -> u64 {
        self.gets + self.range_gets
    }

    /// Every request.
    pub fn total(&self) -> u64 {
        self.gets + self.range_gets + self.lists + self.heads + self.puts + self.deletes
    }
}

#[derive(Debug, Default)]
struct Counters {
    gets: AtomicU64,
    range_gets: AtomicU64,
    lists: AtomicU64,
    heads: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
}

/// Counts the requests made through it, then forwards them to the wrapped store.
#[derive(Debug, Clone)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            counters: Arc::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            gets: c.gets.load(Ordering::Relaxed),
            range_gets: c.range_gets.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            heads: c.heads.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
        }
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        let c = &self.counters;
        for counter in [
            &c.gets,
            &c.range_gets,
            &c.lists,
            &c.heads,
            &c.puts,
            &c.deletes,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        Self::bump(&self.counters.puts);
        self.inner.put(key, body).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        Self::bump(&self.counters.gets);
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes> {
        Self::bump(&self.counters.range_gets);
        self.inner.get_range(key, start, end).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<()> {
        Self::bump(&self.counters.puts);
        self.inner.put_if_absent(key, body).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Self::bump(&self.counters.heads);
        self.inner.head(key).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> Result<ListPage> {
        Self::bump(&self.counters.lists);
        self.inner.list_page(prefix, start_after, max_keys).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        Self::bump(&self.counters.deletes);
        self.inner.delete(key).await
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        Self::bump(&self.counters.puts);
        self.inner.create_multipart(key).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String> {
        Self::bump(&self.counters.puts);
        self.inner.upload_part(key, upload_id, number, body).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<()> {
        Self::bump(&self.counters.puts);
        self.inner.complete_multipart(key, upload_id, parts).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        Self::bump(&self.counters.deletes);
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String> {
        self.inner.presign_get(key, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, put_new};

    #[tokio::test]
    async fn counts_each_kind_of_request() {
        let store = CountingStore::new(Arc::new(MemoryStore::new()));
        put_new(&store, "a", Bytes::from_static(b"x"))
            .await
            .unwrap();
        store.get("a").await.unwrap();
        store.get_range("a", 0, 1).await.unwrap();
        store.list_page("", None, 10).await.unwrap();
        let counts = store.counts();
        assert_eq!(
            (
                counts.gets,
                counts.range_gets,
                counts.lists,
                counts.heads,
                counts.puts
            ),
            (1, 1, 1, 1, 1)
        );
        store.reset();
        assert_eq!(store.counts().total(), 0);
    }
}
