//! An in-memory [`RecordLog`] for unit tests: clones share one log, like replicas sharing a
//! topic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Entry, LogError, LogReader, RecordLog};

#[derive(Debug, Default)]
struct Inner {
    records: Vec<Vec<u8>>,
    /// A finite retention, to test the refusal.
    retention: Option<Duration>,
    /// While set, every call fails as if the broker were down.
    down: bool,
}

/// A log in memory; offsets are the positions (dense).
#[derive(Debug, Clone)]
pub struct MemoryLog {
    name: String,
    inner: Arc<Mutex<Inner>>,
    len: watch::Sender<u64>,
}

impl MemoryLog {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            inner: Arc::default(),
            len: watch::channel(0).0,
        }
    }

    /// Pretends the log's records expire after `retention` (None: kept forever).
    pub fn set_retention(&self, retention: Option<Duration>) {
        self.lock().retention = retention;
    }

    /// Makes every call fail (true) or work again (false).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn up(&self) -> Result<std::sync::MutexGuard<'_, Inner>, LogError> {
        let inner = self.lock();
        if inner.down {
            return Err(LogError::Unavailable(format!("{} is down", self.name)));
        }
        Ok(inner)
    }
}

#[async_trait]
impl RecordLog for MemoryLog {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check_kept_forever(&self) -> Result<(), LogError> {
        match self.up()?.retention {
            None => Ok(()),
            Some(retention) => Err(LogError::Misconfigured(format!(
                "{} has a retention of {retention:?}: it must keep its records forever",
                self.name
            ))),
        }
    }

    async fn append(&self, _key: &str, payload: Vec<u8>) -> Result<u64, LogError> {
        let mut inner = self.up()?;
        inner.records.push(payload);
        let len = inner.records.len() as u64;
        drop(inner);
        self.len.send_replace(len);
        Ok(len - 1)
    }

    async fn end(&self) -> Result<u64, LogError> {
        Ok(self.up()?.records.len() as u64)
    }

    async fn reader(&self, from: u64) -> Result<Box<dyn LogReader>, LogError> {
        drop(self.up()?);
        Ok(Box::new(MemoryReader {
            log: self.clone(),
            len: self.len.subscribe(),
            next: from,
        }))
    }
}

struct MemoryReader {
    log: MemoryLog,
    len: watch::Receiver<u64>,
    next: u64,
}

#[async_trait]
impl LogReader for MemoryReader {
    async fn next(&mut self) -> Result<Entry, LogError> {
        loop {
            {
                let inner = self.log.up()?;
                if let Some(payload) = usize::try_from(self.next)
                    .ok()
                    .and_then(|i| inner.records.get(i))
                {
                    let entry = Entry {
                        offset: self.next,
                        payload: payload.clone(),
                    };
                    self.next += 1;
                    return Ok(entry);
                }
            }
            self.len
                .changed()
                .await
                .map_err(|_| LogError::Unavailable("the log was dropped".into()))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let log = MemoryLog::new("conformance");
        super::super::conformance::run(&log, &log.clone()).await;
    }
}
