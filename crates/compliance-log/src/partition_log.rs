//! The v2 writer of one partition (`docs/log-format.md`): one segment per flush, then the
//! partition's watermark pointer.

use chrono::{DateTime, Utc};

/// One reading of a partition's end: at `at` (taken before asking), Kafka's high watermark was
/// `high_watermark`. Once the log is durable up to it, every record published before `at` is
/// durable, so `at` can become the partition's time watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub at: DateTime<Utc>,
    pub high_watermark: i64,
}
