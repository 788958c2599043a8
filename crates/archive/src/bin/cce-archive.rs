//! `cce-archive`: the export engine by hand.
//!
//!   cce-archive export --company acme --from 2026-01-01T00:00:00Z --to 2026-02-01T00:00:00Z --key exports/acme/jan.zip
//!   cce-archive verify archive.zip
//!   cce-archive read-floor --company acme --topic chat-events   # the benchmark's I/O floor

#![allow(clippy::print_stdout)] // machine-readable results go to stdout

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use archive::{ExportRequest, Progress, export_to_s3};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use storage::S3Config;

#[path = "cce-archive/read_floor.rs"]
mod read_floor;

#[derive(Debug, Parser)]
#[command(
    name = "cce-archive",
    version,
    about = "Exports a company's compliance log to a zip archive, and verifies archives"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum Command {
    /// Renders an export into the bucket at --key (visible only once complete).
    Export {
        #[arg(long)]
        company: String,
        /// Inclusive start (RFC 3339). Omit for all history.
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Exclusive end (RFC 3339). Default: now.
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        /// Only conversations with this person (repeatable).
        #[arg(long = "person")]
        people: Vec<String>,
        /// Only this conversation (repeatable).
        #[arg(long = "conversation")]
        conversations: Vec<String>,
        /// IANA time zone for day files. Default: UTC.
        #[arg(long, default_value = "")]
        time_zone: String,
        /// How conversations are written: json (the seed's layout), eml (one RFC 5322 message
        /// per post) or csv (one row per event); `docs/export-format.md`.
        #[arg(long, default_value = "json")]
        format: archive::DataFormat,
        /// Object key of the archive.
        #[arg(long)]
        key: String,
        /// Read the log at the current position of this events topic (as the export service
        /// does, recorded in the manifest). Default: everything the bucket's log holds.
        #[arg(long)]
        topic: Option<String>,
        /// Memory the export is sized for, in MiB. Default: 256.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
        memory_budget_mib: Option<u64>,
        /// Temporary disk (in TMPDIR) the export may use, in MiB; past it the export fails
        /// saying so. Default: 8192.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
        disk_budget_mib: Option<u64>,
        /// Threads that serialise and compress entries. Default: every core.
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        s3: S3Config,
    },
    /// Prints a presigned download URL for an archive.
    Presign {
        #[arg(long)]
        key: String,
        /// How long the URL works, in seconds (at most 7 days).
        #[arg(long, default_value_t = 900)]
        ttl_secs: u64,
        #[command(flatten)]
        s3: S3Config,
    },
    /// Benchmark baseline (I/O floor): reads what an export of the range reads (directory and
    /// events, through the log cursor) without rendering, then fetches the same objects again
    /// without decoding; prints bytes, seconds and MB/s of both.
    ReadFloor {
        #[arg(long)]
        company: String,
        /// Inclusive start (RFC 3339). Omit for all history.
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Exclusive end (RFC 3339). Default: now.
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        /// Read at the current position of this events topic, as `export --topic`.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        s3: S3Config,
    },
    /// Checks an archive against its manifest.json; exits 1 when anything differs.
    Verify { path: std::path::PathBuf },
    /// Benchmark baseline: deflates every entry's content again, on one core, at `--level`,
    /// and prints the rate (the bytes are read from the archive first, untimed).
    DeflateBaseline {
        path: std::path::PathBuf,
        #[arg(long, default_value_t = 6)]
        level: u32,
    },
}

/// The log position `topic`'s watermark pointers give now; an error when it has none (a
/// misspelt topic would otherwise export nothing).
async fn position_of(
    store: &dyn storage::ObjectStore,
    topic: &str,
) -> anyhow::Result<compliance_log::LogPosition> {
    let position = compliance_log::LogPosition::read(store, topic)
        .await
        .with_context(|| format!("reading the log position of {topic}"))?;
    anyhow::ensure!(
        !position.partitions.is_empty(),
        "the log has no watermark pointers for topic {topic}: is it the events topic ingestion reads?"
    );
    Ok(position)
}

/// The process's peak resident memory (VmHWM) in MiB, where the OS tells it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads start (see `archive::allocator`).
    archive::allocator::return_freed_memory_at_once();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Export {
            company,
            from,
            to,
            people,
            conversations,
            time_zone,
            format,
            key,
            topic,
            memory_budget_mib,
            disk_budget_mib,
            threads,
            s3,
        } => {
            let defaults = archive::ExportLimits::default();
            let limits = archive::ExportLimits {
                memory_bytes: memory_budget_mib.map_or(defaults.memory_bytes, |m| m << 20),
                disk_bytes: disk_budget_mib.map_or(defaults.disk_bytes, |m| m << 20),
                threads: threads.unwrap_or(defaults.threads),
            };
            let store = Arc::new(storage::S3Store::connect(&s3).await);
            let position = match &topic {
                Some(topic) => Some(position_of(store.as_ref(), topic).await?),
                None => None,
            };
            let request = ExportRequest {
                company_id: company,
                from,
                to: to.unwrap_or_else(Utc::now),
                person_ids: people.into_iter().collect::<BTreeSet<_>>(),
                conversation_ids: conversations.into_iter().collect(),
                time_zone,
                position,
                limits,
                format,
                schedule: None,
                signer: None,
            };
            let started = Instant::now();
            let mut last = Instant::now();
            // Peak RSS when the export has read a quarter, half and three quarters of the range:
            // flat from the first to the last means memory does not grow with the export.
            let mut peak_by_quarter: Vec<Option<f64>> = Vec::new();
            let stored = export_to_s3(
                &request,
                store.clone(),
                store,
                &key,
                &archive::CancellationToken::new(),
                |p: Progress| {
                    while peak_by_quarter.len() < 3
                        && p.percent >= 25 * (peak_by_quarter.len() as u32 + 1)
                    {
                        peak_by_quarter.push(peak_rss_mib());
                    }
                    if last.elapsed().as_millis() >= 500 || p.percent == 100 {
                        eprintln!(
                            "[export] {:>3}% {} events read, {} files, {:.1} MB written",
                            p.percent,
                            p.events_read,
                            p.files_written,
                            p.bytes_written as f64 / 1e6
                        );
                        last = Instant::now();
                    }
                },
            )
            .await
            .context("export failed")?;
            println!(
                "{}",
                serde_json::json!({"key": stored.key, "size": stored.size, "sha256": stored.sha256,
                    "json_bytes": stored.summary.json_bytes, "files": stored.summary.files + 1,
                    "events": stored.summary.totals.events, "seconds": started.elapsed().as_secs_f64(),
                    "peak_rss_mib": peak_rss_mib(), "peak_rss_mib_at_quarters": peak_by_quarter})
            );
            eprintln!(
                "[export] s3://{}/{} {} bytes sha256 {} in {:.1}s: {} files, {} events",
                s3.bucket,
                stored.key,
                stored.size,
                stored.sha256,
                started.elapsed().as_secs_f64(),
                stored.summary.files + 1,
                stored.summary.totals.events
            );
        }
        Command::ReadFloor {
            company,
            from,
            to,
            topic,
            s3,
        } => {
            let store: Arc<dyn storage::ObjectStore> =
                Arc::new(storage::S3Store::connect(&s3).await);
            let position = match &topic {
                Some(topic) => Some(position_of(store.as_ref(), topic).await?),
                None => None,
            };
            let from = from.unwrap_or_else(event_model::validate::earliest_accepted);
            let to = to.unwrap_or_else(Utc::now);
            anyhow::ensure!(from < to, "--from must be before --to");
            let floor = read_floor::measure(store, position, &company, from, to)
                .await
                .context("reading the log")?;
            println!("{}", floor.to_json());
        }
        Command::Presign { key, ttl_secs, s3 } => {
            anyhow::ensure!(
                ttl_secs <= 7 * 24 * 3600,
                "--ttl-secs is at most 604800 (7 days), S3's limit"
            );
            let store = storage::S3Store::connect(&s3).await;
            anyhow::ensure!(
                storage::ObjectStore::head(&store, &key).await?.is_some(),
                "no archive at s3://{}/{key}",
                s3.bucket
            );
            let url = storage::ObjectStore::presign_get(
                &store,
                &key,
                std::time::Duration::from_secs(ttl_secs),
            )
            .await?;
            println!("{url}");
        }
        Command::DeflateBaseline { path, level } => {
            use std::io::Write;
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let mut entries = archive::verify::ArchiveReader::new(file)?;
            let (mut bytes, mut busy) = (0u64, std::time::Duration::ZERO);
            for index in 0..entries.len() {
                let mut content = Vec::new();
                entries.read(index, |b| content.extend_from_slice(b))?;
                let started = Instant::now();
                let mut encoder =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
                encoder.write_all(&content)?;
                let out = encoder.finish()?;
                busy += started.elapsed();
                bytes += content.len() as u64;
                std::hint::black_box(out);
            }
            println!(
                "{}",
                serde_json::json!({"json_bytes": bytes, "seconds": busy.as_secs_f64(),
                    "mb_per_s": bytes as f64 / 1e6 / busy.as_secs_f64().max(1e-9), "level": level})
            );
        }
        Command::Verify { path } => {
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let report = archive::verify::verify(&mut file).context("reading the archive")?;
            for problem in &report.problems {
                eprintln!("[verify] {problem}");
            }
            if !report.problems.is_empty() {
                eprintln!(
                    "[verify] {}: {} problems",
                    path.display(),
                    report.problems.len()
                );
                std::process::exit(1);
            }
            eprintln!(
                "[verify] {}: OK, {} files ({} bytes) match manifest.json, whose counts {} day \
                 files bear out",
                path.display(),
                report.files_checked,
                report.bytes_checked,
                report.day_files_counted
            );
        }
    }
    Ok(())
}

/// mimalloc returns freed memory to the system; see the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
