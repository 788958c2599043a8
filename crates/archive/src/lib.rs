//! The export engine: a company's compliance log, for a range and filters, rendered into the
//! seed's layout with a `manifest.json`, as a ZIP archive streamed to a sink (an S3 multipart
//! upload in production). Format: `docs/export-format.md`.
//!
//! - [`render`]: log → day files, `users.json`, `teams.json`, manifest.
//! - [`zip`]: the streaming ZIP writer (deflate on every core, ZIP64 where needed).
//! - [`spill`]: temporary files for what the end of an archive needs, so memory stays flat;
//!   all of an export's count against its [`DiskBudget`].
//! - [`directories`]: `users.json` and `teams.json`, streamed one conversation at a time, with
//!   membership and names over the range ([`directories::history`]).
//! - [`multipart`]: the S3 multipart sink with growing part sizes.
//! - [`names`]: safe, unique folder names.
//! - [`verify`]: reading an archive back and checking it against its manifest, whose counts
//!   `reconcile` recounts from the day files.

pub mod allocator;
pub mod budget;
mod csv;
mod dayfiles;
pub mod directories;
mod eml;
mod items;
pub mod manifest;
mod mime;
pub mod multipart;
pub mod names;
mod reconcile;
pub mod render;
pub mod signing;
pub mod spill;
mod texts;
pub mod verify;
pub mod zip;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use compliance_log::LogReader;
use storage::ObjectStore;
pub use tokio_util::sync::CancellationToken;

pub use budget::{DiskBudget, ExportLimits};
pub use manifest::{ExportSummary, Manifest};
pub use multipart::MultipartSink;
pub use zip::{Sink, ZipWriter};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The request cannot be served as asked; the message says what to change.
    #[error("invalid export request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Log(#[from] compliance_log::LogError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("entry {name} is {size} bytes, over the ZIP entry limit")]
    EntryTooLarge { name: String, size: u64 },
    /// An archive read back is not what it should be.
    #[error("invalid archive: {0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The export needs more temporary disk than it may use; nothing is left behind.
    #[error(
        "the export needs more than its {limit_mib} MiB of temporary disk (TMPDIR): raise \
         CCE_EXPORT_DISK_BUDGET_MIB (cce-archive --disk-budget-mib) or export a narrower range"
    )]
    DiskBudget { limit_mib: u64 },
    /// The export was cancelled; its upload was aborted.
    #[error("export cancelled")]
    Cancelled,
}

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub company_id: String,
    /// Inclusive start; `None` exports all history.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
    /// Only conversations with any of these people (members or actors). Empty: everyone.
    pub person_ids: BTreeSet<String>,
    /// Only these conversations. Empty: every conversation in scope.
    pub conversation_ids: BTreeSet<String>,
    /// IANA zone for day files; empty means UTC.
    pub time_zone: String,
    /// The position of the log to read at (`LogReader::at`), recorded in the manifest: the
    /// export service passes the one it waited for, so records that become durable later are
    /// not half included and the same position gives the same archive. `None` reads all the
    /// log holds (the offline `cce-archive`).
    pub position: Option<compliance_log::LogPosition>,
    /// What the export may use on its replica (memory, temporary disk, threads); never changes
    /// the archive's bytes.
    pub limits: ExportLimits,
    /// How the conversations are written: the seed's JSON layout, EML or CSV. The manifest
    /// and signature are the same in every format.
    pub format: DataFormat,
    /// Set for a scheduled run: recorded in the manifest (`manifest::ScheduleLink`).
    pub schedule: Option<manifest::ScheduleLink>,
    /// Signs the manifest when set (`signing`).
    pub signer: Option<Arc<signing::Signer>>,
}

/// The layout conversations are written in (`docs/export-format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataFormat {
    /// The seed's layout: one JSON file per conversation and day, `users.json`, `teams.json`.
    #[default]
    Json,
    /// One RFC 5322 message per post.
    Eml,
    /// One RFC 4180 row per post, edit, deletion, note and file event.
    Csv,
}

impl DataFormat {
    /// The format's name in job records and on the command line: `json`, `eml` or `csv`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Eml => "eml",
            Self::Csv => "csv",
        }
    }

    /// The format named `name` ([`DataFormat::name`]); `None` for any other name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "eml" => Some(Self::Eml),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// The manifest's `format` for archives in this format.
    pub fn manifest_format(self) -> &'static str {
        match self {
            Self::Json => manifest::EXPORT_FORMAT,
            Self::Eml => manifest::EXPORT_FORMAT_EML,
            Self::Csv => manifest::EXPORT_FORMAT_CSV,
        }
    }

    /// The format whose manifest says `format`, if any.
    pub fn from_manifest_format(format: &str) -> Option<Self> {
        [Self::Json, Self::Eml, Self::Csv]
            .into_iter()
            .find(|f| f.manifest_format() == format)
    }
}

impl std::str::FromStr for DataFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name)
            .ok_or_else(|| format!("unknown format {name:?}: use json, eml or csv"))
    }
}

impl ExportRequest {
    /// The first instant the export reads (2000-01-01 for all history, as the log holds
    /// nothing earlier).
    pub fn start(&self) -> DateTime<Utc> {
        self.from
            .unwrap_or_else(event_model::validate::earliest_accepted)
    }

    /// A short description of the range for names: `2026-01-01_2026-02-01` or `all-history_…`.
    pub fn label(&self) -> String {
        let to = self.to.format("%Y-%m-%d");
        match self.from {
            Some(from) => format!("{}_{to}", from.format("%Y-%m-%d")),
            None => format!("all-history_{to}"),
        }
    }

    /// Checks what a person could get wrong, with a message saying what to change.
    pub fn validate(&self) -> Result<chrono_tz::Tz, ArchiveError> {
        if !event_model::is_safe_id(&self.company_id) {
            return Err(ArchiveError::InvalidRequest(format!(
                "company id {:?} is not valid",
                self.company_id
            )));
        }
        if self.start() >= self.to {
            return Err(ArchiveError::InvalidRequest(format!(
                "the range is empty or reversed: from {} is not before to {}",
                self.start().to_rfc3339(),
                self.to.to_rfc3339()
            )));
        }
        render::parse_time_zone(&self.time_zone)
    }
}

/// How far an export has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub events_read: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    /// 0–100, from the share of the log's data read (bytes of the objects the range needs,
    /// [`compliance_log::ReadProgress`]); from the share of the range read while the reader
    /// cannot tell.
    pub percent: u32,
}

/// Renders an export into `sink`; returns the sink, the archive's size and what it holds. Reads
/// `reader` at the request's position when it names one.
pub async fn export_to_sink<S: Sink>(
    request: &ExportRequest,
    reader: &LogReader,
    sink: S,
    progress: impl FnMut(Progress),
) -> Result<(S, u64, ExportSummary), ArchiveError> {
    let tz = request.validate()?;
    // The request's position, when it names one, is what the manifest records: read at it.
    let limits = request.limits;
    let reader = reader.clone().with_memory_budget(limits.reader_bytes());
    let reader = &match &request.position {
        Some(position) => reader.at(position.clone()),
        None => reader,
    };
    // Every temporary file of the export counts against one disk budget.
    let disk = DiskBudget::new(limits.disk_bytes);
    // The directory at the range's start, folded forward through the range's changes to its
    // end; the periods they end (memberships, names) are kept for the listings.
    let (mut directory, changes) = reader
        .metadata_range(&request.company_id, request.start(), request.to)
        .await?;
    let history = directories::fold_range(&mut directory, changes, request.start(), &disk)?;
    // One entry per worker thread in flight, within the render share of the budget.
    let zip = ZipWriter::new(sink, 6, limits.worker_threads())
        .with_bytes_in_flight(limits.render_bytes())
        .with_disk_budget(disk);
    render::Renderer::new(request, tz, directory, history, zip)?
        .run(reader, progress)
        .await
}

/// The finished archive in the object store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredArchive {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub summary: ExportSummary,
}

/// Renders an export straight into a multipart upload at `key`. The object appears only when
/// everything is written; on failure or when `cancel` fires, the upload is aborted and nothing
/// is visible.
pub async fn export_to_s3(
    request: &ExportRequest,
    log_store: Arc<dyn ObjectStore>,
    archive_store: Arc<dyn ObjectStore>,
    key: &str,
    cancel: &CancellationToken,
    progress: impl FnMut(Progress),
) -> Result<StoredArchive, ArchiveError> {
    request.validate()?;
    let reader = LogReader::new(log_store);
    let sink = MultipartSink::start(archive_store, key).await?;
    // On error the sink is consumed by the failed render; abort through a second handle.
    let (upload_store, upload_key) = (sink_store(&sink), key.to_owned());
    let rendered = tokio::select! {
        rendered = export_to_sink(request, &reader, sink, progress) => rendered,
        _ = cancel.cancelled() => Err(ArchiveError::Cancelled),
    };
    match rendered {
        Ok((sink, _, summary)) => {
            let (size, sha256) = match sink.complete().await {
                Ok(done) => done,
                Err(error) => {
                    // Not completed (or not known to be): abort, so no parts linger until the
                    // lifecycle rule; aborting a completed upload changes nothing.
                    abort_uploads(&upload_store, &upload_key).await;
                    return Err(error);
                }
            };
            Ok(StoredArchive {
                key: upload_key,
                size,
                sha256,
                summary,
            })
        }
        Err(error) => {
            abort_uploads(&upload_store, &upload_key).await;
            Err(error)
        }
    }
}

fn sink_store(sink: &MultipartSink) -> (Arc<dyn ObjectStore>, String) {
    sink.handle()
}

async fn abort_uploads(handle: &(Arc<dyn ObjectStore>, String), key: &str) {
    let (store, upload_id) = handle;
    if let Err(error) = store.abort_multipart(key, upload_id).await {
        tracing::warn!(%key, %error, "failed to abort a multipart upload; the lifecycle rule will");
    }
}
