//! The per-company compliance log on object storage (`docs/log-format.md`).
//!
//! - [`format`]: object keys and the checksummed object encoding of format version 1, which
//!   the reader still reads.
//! - [`v2`]: format version 2, which ingestion writes.
//! - [`writer`]: turns a flushed range of one Kafka partition into immutable log objects: per
//!   assigned partition, its epoch ([`lineage`]), one segment per flush and the partition's
//!   watermark pointer.
//! - [`reader`]: a company's events in a time range, deduplicated and ordered, in bounded
//!   batches and bounded memory; and its metadata events (people, conversations, membership).

pub mod compact;
pub mod format;
pub mod lineage;
pub mod reader;
pub mod v2;
pub mod writer;

pub use compact::{CompactionConfig, Compactor, PassSummary};
pub use format::{LogRecord, SourceRange, Stream};
pub use reader::{EventCursor, LogReader, ReadProgress};
pub use v2::pointer::{LogPosition, PartitionPosition, Watermark};
pub use writer::{
    FlushStats, LogWriter, Opened, PartitionLog, PendingRecord, Probe, V1Writer, WriteStats,
};

/// Errors reading or writing the log, with the object concerned.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// An object is not what the format says: a wrong checksum, a bad header, an unknown
    /// version. Never skipped silently: an export must not have a hidden gap.
    #[error("log object {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("cannot encode a log object for company {company_id}: {reason}")]
    Encode { company_id: String, reason: String },
    /// Kafka could not tell whether a partition's offsets continue the log's.
    #[error("cannot check the lineage of {topic} partition {partition}: {reason}")]
    Lineage {
        topic: String,
        partition: i32,
        reason: String,
    },
    /// The partition's pointer is past this writer's position (a later epoch, or a higher
    /// durable offset in its epoch): another writer owns the partition now. The stale writer
    /// stops writing it; nothing was written.
    #[error(
        "{topic} partition {partition} was taken over: its pointer is at epoch {found_epoch} \
         durable offset {found_durable_offset}, past this writer's epoch {epoch} durable offset \
         {durable_offset}; stop writing it"
    )]
    TakenOver {
        topic: String,
        partition: i32,
        epoch: u32,
        durable_offset: i64,
        found_epoch: u32,
        found_durable_offset: i64,
    },
}

impl LogError {
    /// Whether a create-only write found other bytes under its name (two writers, one name):
    /// never retried into a replace; the writer stops.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Storage(e) if e.kind == storage::ErrorKind::Conflict)
    }

    /// Whether another writer took the partition over: the writer must stop writing it.
    pub fn is_taken_over(&self) -> bool {
        matches!(self, Self::TakenOver { .. })
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
