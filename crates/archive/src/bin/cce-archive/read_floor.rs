//! `cce-archive read-floor`: the export benchmark's I/O floor. Reads what an export of the
//! same request reads from the log — the company's directory as of the end of the range and
//! its events in the range, through the log cursor — without rendering anything, recording
//! every request it makes; then fetches exactly those objects (and byte ranges) again, 16 at a
//! time, without decoding them. The first figure is the reader's floor (fetch, decode, order),
//! the second the store's (bytes off S3 only). Both go through the same reader code as the
//! export, so they follow it whatever it reads (compacted parts, segment slices, format 1).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use compliance_log::LogReader;
use futures::{StreamExt, TryStreamExt};
use storage::{CompletedPart, ListPage, ObjectMeta, ObjectStore, Result};

/// One read request, to make again.
#[derive(Debug, Clone)]
enum Request {
    Get(String),
    Range(String, u64, u64),
    List(String, Option<String>, i32),
}

/// Forwards every call to the wrapped store and remembers the reads (GETs, ranged GETs, LIST
/// pages) and the bytes they returned.
#[derive(Debug)]
struct RecordingStore {
    inner: Arc<dyn ObjectStore>,
    requests: Mutex<Vec<Request>>,
    bytes: std::sync::atomic::AtomicU64,
}

impl RecordingStore {
    fn record(&self, request: Request, bytes: usize) {
        self.bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(request);
        }
    }
}

#[async_trait]
impl ObjectStore for RecordingStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.inner.put(key, body).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let bytes = self.inner.get(key).await?;
        self.record(Request::Get(key.to_owned()), bytes.len());
        Ok(bytes)
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes> {
        let bytes = self.inner.get_range(key, start, end).await?;
        self.record(Request::Range(key.to_owned(), start, end), bytes.len());
        Ok(bytes)
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<()> {
        self.inner.put_if_absent(key, body).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> Result<ListPage> {
        let page = self.inner.list_page(prefix, start_after, max_keys).await?;
        let request = Request::List(prefix.to_owned(), start_after.map(str::to_owned), max_keys);
        self.record(request, 0);
        Ok(page)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        self.inner.create_multipart(key).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String> {
        self.inner.upload_part(key, upload_id, number, body).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<()> {
        self.inner.complete_multipart(key, upload_id, parts).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String> {
        self.inner.presign_get(key, ttl).await
    }
}

/// What the two reads measured.
#[derive(Debug)]
pub struct Floor {
    pub records: u64,
    pub people: usize,
    pub gets: usize,
    pub lists: usize,
    pub bytes: u64,
    pub cursor: Duration,
    pub fetch: Duration,
}

impl Floor {
    /// The machine-readable line the benchmark reads.
    pub fn to_json(&self) -> serde_json::Value {
        let rate = |d: Duration| self.bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9);
        serde_json::json!({"records": self.records, "people": self.people, "gets": self.gets,
            "lists": self.lists, "bytes": self.bytes,
            "cursor_seconds": self.cursor.as_secs_f64(), "cursor_mb_per_s": rate(self.cursor),
            "fetch_seconds": self.fetch.as_secs_f64(), "fetch_mb_per_s": rate(self.fetch)})
    }
}

/// Reads `company`'s log over `from..to` from `store` as an export does (at `position`, if
/// any), then fetches the same objects again.
pub async fn measure(
    store: Arc<dyn ObjectStore>,
    position: Option<compliance_log::LogPosition>,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Floor> {
    let recording = Arc::new(RecordingStore {
        inner: Arc::clone(&store),
        requests: Mutex::new(Vec::new()),
        bytes: std::sync::atomic::AtomicU64::new(0),
    });
    let mut reader = LogReader::new(recording.clone());
    if let Some(position) = position {
        reader = reader.at(position);
    }
    let started = Instant::now();
    let directory = reader
        .metadata(company, to - chrono::Duration::nanoseconds(1))
        .await?;
    let mut cursor = reader.events(company, from, to);
    let mut records = 0u64;
    while let Some(batch) = cursor.next_batch().await? {
        records += batch.len() as u64;
    }
    let cursor_time = started.elapsed();
    drop(cursor);
    drop(reader);
    let requests = recording
        .requests
        .lock()
        .map_err(|_| anyhow::anyhow!("a reading task panicked"))?
        .clone();
    let lists = requests
        .iter()
        .filter(|r| matches!(r, Request::List(..)))
        .count();

    let started = Instant::now();
    let fetched: Vec<u64> = futures::stream::iter(requests.iter().cloned())
        .map(|request| {
            let store = Arc::clone(&store);
            async move {
                let bytes = match request {
                    Request::Get(key) => store.get(&key).await?.len() as u64,
                    Request::Range(key, start, end) => {
                        store.get_range(&key, start, end).await?.len() as u64
                    }
                    Request::List(prefix, start_after, max_keys) => {
                        store
                            .list_page(&prefix, start_after.as_deref(), max_keys)
                            .await?;
                        0
                    }
                };
                anyhow::Ok(bytes)
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let fetch = started.elapsed();
    let bytes = recording.bytes.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(
        fetched.iter().sum::<u64>() == bytes,
        "the second fetch got {} bytes, the read {bytes}: the log changed under the benchmark",
        fetched.iter().sum::<u64>()
    );
    Ok(Floor {
        records,
        people: directory.people.len(),
        gets: requests.len() - lists,
        lists,
        bytes,
        cursor: cursor_time,
        fetch,
    })
}
