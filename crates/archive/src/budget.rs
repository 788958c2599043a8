//! What one export may use on its replica: memory and temporary disk.
//!
//! An export's memory must not follow the company (its busiest day, its busiest conversation,
//! its directory): an out-of-memory kill takes every other job on the replica with it. So every
//! part of the engine that holds data sizes itself from one [`ExportLimits`], and what does not
//! fit goes to temporary files, whose total is held to [`ExportLimits::disk_bytes`] by a
//! [`DiskBudget`]: an export that would need more fails with a message that says so, instead of
//! filling the replica's disk.
//!
//! How the memory budget is shared (default 256 MiB; the rest is the runtime, the directory,
//! the multipart upload's parts and the allocator's slack):
//!
//! | part | share | default |
//! |---|---|---|
//! | log reader: bytes fetched and decoded, not yet rendered | 1/8 | 32 MiB |
//! | open day files' items, before they move to disk | 1/4 | 64 MiB |
//! | entries being serialised and compressed | 1/4 | 64 MiB |
//! | recent post texts (`text_before`), per generation | 1/32 | 8 MiB |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ArchiveError;

const MIB: u64 = 1 << 20;

/// The resources one export may use. Part of [`crate::ExportRequest`]; never changes the
/// archive's bytes (tested across thread counts and budgets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// Peak memory the export is sized for, in bytes.
    pub memory_bytes: u64,
    /// Temporary disk (in `TMPDIR`) the export may use, in bytes.
    pub disk_bytes: u64,
    /// Threads that serialise and compress entries (0: every core).
    pub threads: usize,
}

impl Default for ExportLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 * MIB,
            disk_bytes: 8 * 1024 * MIB,
            threads: 0,
        }
    }
}

impl ExportLimits {
    /// Bytes the log reader may hold: fetched, decoded, not yet handed to the renderer.
    pub fn reader_bytes(&self) -> usize {
        to_usize(self.memory_bytes / 8)
    }

    /// Bytes of open day files' items held in memory before the largest move to disk.
    pub fn items_bytes(&self) -> usize {
        to_usize(self.memory_bytes / 4)
    }

    /// Bytes of entries being serialised and compressed at once.
    pub fn render_bytes(&self) -> usize {
        to_usize(self.memory_bytes / 4)
    }

    /// Bytes of recent post texts per in-memory generation.
    pub fn texts_bytes(&self) -> usize {
        to_usize(self.memory_bytes / 32)
    }

    /// Threads for serialising and compressing: the configured number, or every core.
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// Temporary disk an export may still use, shared by every temporary file it makes. Cheap to
/// clone (the clones share one count).
#[derive(Debug, Clone)]
pub struct DiskBudget {
    limit: u64,
    used: Arc<AtomicU64>,
}

impl DiskBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: Arc::new(AtomicU64::new(0)),
        }
    }

    /// No limit (tools and tests).
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// Counts `bytes` more of temporary disk, or fails — counting nothing — when that would
    /// pass the limit.
    pub fn reserve(&self, bytes: u64) -> Result<(), ArchiveError> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let wanted = used.saturating_add(bytes);
            if wanted > self.limit {
                return Err(ArchiveError::DiskBudget {
                    limit_mib: self.limit / MIB,
                });
            }
            match self.used.compare_exchange_weak(
                used,
                wanted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Gives back `bytes` (a temporary file deleted).
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Bytes counted now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_counts_nothing_then() {
        let budget = DiskBudget::new(10 * MIB);
        budget.reserve(6 * MIB).unwrap();
        let error = budget.clone().reserve(5 * MIB).unwrap_err();
        assert!(error.to_string().contains("10 MiB"), "{error}");
        assert_eq!(budget.used(), 6 * MIB);
        budget.release(6 * MIB);
        budget.reserve(10 * MIB).unwrap();
    }

    #[test]
    fn the_default_shares_fit_the_budget() {
        let limits = ExportLimits::default();
        let shares = limits.reader_bytes()
            + limits.items_bytes()
            + limits.render_bytes()
            + 2 * limits.texts_bytes();
        assert!((shares as u64) < limits.memory_bytes * 3 / 4);
    }
}
