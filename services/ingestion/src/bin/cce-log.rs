//! `cce-log`: reads a company's compliance log, for operators and the demo.
//!
//!   cce-log summary --company acme [--from T] [--to T]   counts by type and day, people, conversations
//!   cce-log events  --company acme [--from T] [--to T]   the events as JSON lines, deduplicated, in order
//!   cce-log compact --once [--topic T] [--gc]            one compaction pass (and garbage collection)

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use compliance_log::{CompactionConfig, Compactor, LogReader};
use storage::S3Config;

#[derive(Debug, Parser)]
#[command(name = "cce-log", version, about = "Reads a company's compliance log")]
struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    s3: S3Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Counts of the company's events by type and by day, and its people and conversations.
    Summary(Range),
    /// The company's content events in the range as JSON lines, in log order.
    Events(Range),
    /// Runs one compaction pass over a topic's log, printing what it read and wrote.
    Compact(Compact),
}

#[derive(Debug, clap::Args)]
struct Compact {
    /// Run one pass and exit (a continuous loop is cce-ingestion's compaction role).
    #[arg(long, required = true)]
    once: bool,
    /// The topic whose log to compact.
    #[arg(long, env = "CCE_EVENTS_TOPIC", default_value = "chat-events")]
    topic: String,
    /// Seconds after a day's end (by the least time watermark) before the day is compacted.
    #[arg(long, env = "CCE_COMPACTION_GRACE_SECS", default_value_t = 300)]
    grace_secs: u64,
    /// Days compacted segments and superseded parts are kept before --gc deletes them.
    #[arg(long, env = "CCE_SEGMENT_RETENTION_DAYS", default_value_t = 7)]
    retention_days: u64,
    /// Largest body of one compacted part chunk, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_chunk_bytes: usize,
    /// After the pass, delete compacted segments past retention.
    #[arg(long)]
    gc: bool,
}

#[derive(Debug, clap::Args)]
struct Range {
    /// The company id.
    #[arg(long)]
    company: String,
    /// Start of the range, inclusive (RFC 3339). Default: 2000-01-01.
    #[arg(long, default_value = "2000-01-01T00:00:00Z")]
    from: DateTime<Utc>,
    /// End of the range, exclusive (RFC 3339). Default: now.
    #[arg(long)]
    to: Option<DateTime<Utc>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store: Arc<dyn storage::ObjectStore> = Arc::new(storage::S3Store::connect(&args.s3).await);
    let reader = LogReader::new(Arc::clone(&store));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.command {
        Command::Compact(compact) => {
            let config = CompactionConfig {
                topic: compact.topic,
                grace: Duration::from_secs(compact.grace_secs),
                retention: Duration::from_secs(compact.retention_days * 24 * 3600),
                max_chunk_bytes: compact.max_chunk_bytes,
            };
            let compactor = Compactor::new(store, config);
            match compactor
                .run_pass(Utc::now())
                .await
                .context("run a compaction pass")?
            {
                Some(summary) => writeln!(
                    out,
                    "pass {} {}: horizon {}, read {} records from {} segments, wrote {} records in {} parts and {} metadata days",
                    summary.pass.seq,
                    summary.pass.hash,
                    summary.horizon,
                    summary.read.records,
                    summary.read.segments,
                    summary.wrote.records,
                    summary.wrote.parts,
                    summary.wrote.meta_days
                )?,
                None => writeln!(out, "nothing to compact")?,
            }
            if compact.gc {
                let deleted = compactor
                    .collect_garbage(Utc::now())
                    .await
                    .context("collect garbage")?;
                writeln!(out, "deleted {deleted} objects past retention")?;
            }
        }
        Command::Events(range) => {
            let mut cursor = reader.events(
                &range.company,
                range.from,
                range.to.unwrap_or_else(Utc::now),
            );
            while let Some(hour) = cursor.next_hour().await? {
                for record in hour {
                    out.write_all(record.raw.get().as_bytes())?;
                    out.write_all(b"\n")?;
                }
            }
        }
        Command::Summary(range) => {
            let to = range.to.unwrap_or_else(Utc::now);
            let mut by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut by_day: BTreeMap<String, u64> = BTreeMap::new();
            let mut cursor = reader.events(&range.company, range.from, to);
            while let Some(hour) = cursor.next_hour().await? {
                for record in hour {
                    *by_type.entry(record.event.type_name()).or_default() += 1;
                    let day = record
                        .event
                        .occurred_at
                        .with_timezone(&Utc)
                        .format("%Y-%m-%d");
                    *by_day.entry(day.to_string()).or_default() += 1;
                }
            }
            let meta = reader.meta_events(&range.company, to).await?;
            for record in &meta {
                *by_type.entry(record.event.type_name()).or_default() += 1;
            }
            let directory = reader.metadata(&range.company, to).await?;
            let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
            for conversation in directory.conversations.values() {
                *kinds
                    .entry(format!("{:?}", conversation.kind).to_lowercase())
                    .or_default() += 1;
            }
            writeln!(
                out,
                "company {} from {} to {}",
                range.company, range.from, to
            )?;
            writeln!(
                out,
                "people known: {}; conversations: {kinds:?}",
                directory.people.len()
            )?;
            writeln!(out, "events by type:")?;
            for (kind, count) in &by_type {
                writeln!(out, "  {kind:<30} {count:>8}")?;
            }
            writeln!(out, "content events by day ({} days):", by_day.len())?;
            for (day, count) in by_day.iter().take(10) {
                writeln!(out, "  {day} {count:>8}")?;
            }
            if by_day.len() > 10 {
                writeln!(out, "  … {} more days", by_day.len() - 10)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
