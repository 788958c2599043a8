//! `manifest.json`: what was asked, what the archive holds, and how to check it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const EXPORT_FORMAT: &str = "cce-export-json";
pub const EXPORT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub request: RequestRecord,
    /// What part of the log the archive reflects.
    pub log_position: LogPosition,
    /// Per conversation and per day: what the archive holds.
    pub conversations: Vec<ConversationCounts>,
    pub totals: Counts,
    /// Every other file of the archive, relative to the top-level folder.
    pub files: Vec<FileRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub company_id: String,
    /// Inclusive; `null` with `all_history`.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    pub all_history: bool,
    pub person_ids: Vec<String>,
    pub conversation_ids: Vec<String>,
    /// IANA name of the zone day files are bucketed in.
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPosition {
    pub log_format_version: u32,
    /// Events are those with `occurred_at` before this instant, as the log held them when read.
    pub events_before: DateTime<Utc>,
    /// Distinct events read for the range (after deduplication), before filters.
    pub events_read: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub events: u64,
    pub posts: u64,
    pub edits: u64,
    pub deletes: u64,
    pub notes: u64,
    pub files_shared: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationCounts {
    pub conversation_id: String,
    pub kind: String,
    /// The folder under `People_Chats/` or `Team_Chats/`.
    pub folder: String,
    /// By date (`YYYY-MM-DD` in the request's time zone).
    pub days: BTreeMap<String, Counts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.events += other.events;
        self.posts += other.posts;
        self.edits += other.edits;
        self.deletes += other.deletes;
        self.notes += other.notes;
        self.files_shared += other.files_shared;
    }
}
