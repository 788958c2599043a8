//! `manifest.json`: what was asked, what the archive holds, and how to check it.
//!
//! Written in one pass as the archive is: the head (request, log position, per-conversation
//! counts, totals) is small, and the per-day counts and per-file records, which grow with the
//! export, are spilled as they are made and streamed into the entry at the end (`render.rs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const EXPORT_FORMAT: &str = "cce-export-json";
/// The manifest's `format` of an archive of RFC 5322 messages (`docs/export-format.md`, "EML").
pub const EXPORT_FORMAT_EML: &str = "cce-export-eml";
/// The manifest's `format` of an archive of RFC 4180 files (`docs/export-format.md`, "CSV").
pub const EXPORT_FORMAT_CSV: &str = "cce-export-csv";
/// 2: per-day counts moved from each conversation to the flat `days` list, so the manifest can
/// be written while the archive streams; conversations carry their totals.
/// 3: events out of order (a change timed before its item's creation) are kept and flagged;
/// `created_before_range` became `created_elsewhere`; notes carry `edit_count`
/// (`docs/export-format.md`, "Events out of order").
/// 4: `log_position` names the position of the log the archive was read at (the events topic,
/// and per partition its epoch, durable offset and time watermark), replacing
/// `source_offsets` (`docs/export-format.md`, "What an archive covers").
/// 5: each conversation of `users.json` and `teams.json` carries `membership` (every membership
/// in effect in the range: who, joined when and added by whom, left when and removed by whom,
/// whether a member at the range's start) and `names` (every name in effect in the range, from
/// and until when, set by whom); the fields before them are unchanged (`docs/export-format.md`,
/// "Membership over time").
pub const EXPORT_FORMAT_VERSION: u32 = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(flatten)]
    pub head: ManifestHead,
    /// Per conversation and per day (`YYYY-MM-DD` in the request's time zone), in date order:
    /// what each day file holds.
    pub days: Vec<DayCounts>,
    /// Every other file of the archive, relative to the top-level folder, in archive order.
    pub files: Vec<FileRecord>,
}

/// The part of the manifest known only at the end, and small: it does not grow with the range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestHead {
    pub format: String,
    pub format_version: u32,
    pub request: RequestRecord,
    /// What part of the log the archive reflects. (Format 3's `source_offsets`, the events
    /// topic's end offsets when the export was accepted, is not written any more and is
    /// ignored when read.)
    pub log_position: LogPosition,
    /// Every conversation with content in the archive, with its totals.
    pub conversations: Vec<ConversationCounts>,
    pub totals: Counts,
    /// Set on a scheduled run's archive: its place in the schedule's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleLink>,
    /// Set when the manifest is signed: which key, so a verifier picks the public key. The
    /// signature itself is the entry `manifest.json.sig` (`docs/export-format.md`, "Signature").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureInfo>,
}

/// Where a scheduled run's archive sits in its schedule's chain: an auditor holding the
/// archives checks that each run starts where the previous ended and names its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleLink {
    pub schedule_id: String,
    /// 1 for the schedule's first run, then one more per run.
    pub run: u64,
    /// The previous run's range end (this archive's `request.from`) and the SHA-256 of its
    /// whole archive; `null` for the first run.
    pub previous: Option<PreviousRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousRun {
    pub to: DateTime<Utc>,
    /// Hex SHA-256 of the previous run's whole archive (the ZIP file as downloaded).
    pub archive_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureInfo {
    /// `Ed25519`.
    pub algorithm: String,
    /// The signing key's id, as `ListSigningKeys` publishes it.
    pub key_id: String,
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
    /// 2: read by the format 2 reader (which reads format 1 objects too); 1 in older archives.
    pub log_format_version: u32,
    /// Events are those with `occurred_at` before this instant, as the log held them when read.
    pub events_before: DateTime<Utc>,
    /// Distinct events read for the range (after deduplication), before filters.
    pub events_read: u64,
    /// The events topic whose log was read at `partitions`. `null` when the log was read
    /// without a position (everything it held then: `cce-archive`, or format 3 and older).
    #[serde(default)]
    pub topic: Option<String>,
    /// The smallest time watermark of `partitions`: every event published to the topic before
    /// this instant was durable in the log, so it is in the archive if its range and filters
    /// take it. `null` with `topic`.
    #[serde(default)]
    pub durable_until: Option<DateTime<Utc>>,
    /// Where the read stopped on each partition of the topic, in partition order: the archive
    /// holds the records below `durable_offset` in `epoch` (and all of earlier epochs), and
    /// none above. Empty with `topic` `null`.
    #[serde(default)]
    pub partitions: Vec<PartitionPosition>,
}

/// One partition of the position an archive was read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    pub partition: i32,
    /// The log epoch (it changes when the topic's offsets could restart, `docs/log-format.md`).
    pub epoch: u32,
    /// Every offset below it in `epoch` was durable in the log (or dead-lettered).
    pub durable_offset: i64,
    /// Every event published to the partition before it was durable; `null` if ingestion had
    /// not observed one yet.
    pub time_watermark: Option<DateTime<Utc>>,
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
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    pub date: String,
    pub conversation_id: String,
    pub counts: Counts,
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

/// What an export produced, for the job record and progress (the manifest itself is in the
/// archive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Distinct events read for the range, before filters.
    pub events_read: u64,
    pub totals: Counts,
    /// Files listed in the manifest (every entry but `manifest.json`).
    pub files: u64,
    /// Their uncompressed bytes.
    pub json_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_3_manifest_head_still_reads_with_no_position() {
        let v3 = r#"{"format":"cce-export-json","format_version":3,
            "request":{"company_id":"acme","from":null,"to":"2026-01-08T00:00:00Z",
                       "all_history":true,"person_ids":[],"conversation_ids":[],"time_zone":"UTC"},
            "log_position":{"log_format_version":1,"events_before":"2026-01-08T00:00:00Z",
                            "events_read":3},
            "source_offsets":{"topic":"chat-events",
                              "partitions":[{"partition":0,"end_offset":7}]},
            "conversations":[],
            "totals":{"events":0,"posts":0,"edits":0,"deletes":0,"notes":0,"files_shared":0}}"#;
        let head: ManifestHead = serde_json::from_str(v3).unwrap();
        assert_eq!(head.log_position.events_read, 3);
        assert_eq!(head.log_position.topic, None);
        assert_eq!(head.log_position.durable_until, None);
        assert!(head.log_position.partitions.is_empty());
    }
}
