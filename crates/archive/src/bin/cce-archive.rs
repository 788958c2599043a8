//! `cce-archive`: the export engine by hand.
//!
//!   cce-archive export --company acme --from 2026-01-01T00:00:00Z --to 2026-02-01T00:00:00Z --key exports/acme/jan.zip
//!   cce-archive verify archive.zip

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use archive::{ExportRequest, Progress, export_to_s3};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use storage::S3Config;

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
        /// Object key of the archive.
        #[arg(long)]
        key: String,
        #[command(flatten)]
        s3: S3Config,
    },
    /// Checks an archive against its manifest.json; exits 1 when anything differs.
    Verify { path: std::path::PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Export {
            company,
            from,
            to,
            people,
            conversations,
            time_zone,
            key,
            s3,
        } => {
            let request = ExportRequest {
                company_id: company,
                from,
                to: to.unwrap_or_else(Utc::now),
                person_ids: people.into_iter().collect::<BTreeSet<_>>(),
                conversation_ids: conversations.into_iter().collect(),
                time_zone,
            };
            let store = Arc::new(storage::S3Store::connect(&s3).await);
            let started = Instant::now();
            let mut last = Instant::now();
            let stored = export_to_s3(&request, store.clone(), store, &key, |p: Progress| {
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
            })
            .await
            .context("export failed")?;
            eprintln!(
                "[export] s3://{}/{} {} bytes sha256 {} in {:.1}s: {} files, {} events",
                s3.bucket,
                stored.key,
                stored.size,
                stored.sha256,
                started.elapsed().as_secs_f64(),
                stored.manifest.files.len() + 1,
                stored.manifest.totals.events
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
                "[verify] {}: OK, {} files ({} bytes) match manifest.json",
                path.display(),
                report.files_checked,
                report.bytes_checked
            );
        }
    }
    Ok(())
}
