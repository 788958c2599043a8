//! Log-cost benchmark (run by `deploy/local/bench-log.sh`): does an export's cost follow the
//! data it reads?
//!
//! Builds a log of live-pattern traffic in format 2 — many companies chatting at once over
//! months, one segment per partition per flush window, as ingestion writes it — then, for the
//! busiest company, counts the store requests (through `storage::CountingStore`) and times a
//! read of one month and of all history (its events and its directory, as an export reads
//! them), before and after compaction; and times the compaction. Prints a Markdown table.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use compliance_log::{CompactionConfig, Compactor, LogPosition, LogReader};
use storage::{CountingStore, ObjectStore, RequestCounts, S3Config};
use tests::seed;

#[derive(Debug, Parser)]
struct Args {
    /// Content events over the whole log (every company).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Companies chatting at once.
    #[arg(long, default_value_t = 50)]
    companies: usize,
    /// Days of traffic.
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// Minutes of traffic per segment (per partition flush).
    #[arg(long, default_value_t = 60)]
    flush_minutes: i64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    #[command(flatten)]
    s3: S3Config,
}

/// What one read cost.
struct Cost {
    records: usize,
    people: usize,
    requests: RequestCounts,
    elapsed: Duration,
}

async fn measure(
    store: &Arc<dyn ObjectStore>,
    position: &LogPosition,
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Cost> {
    let counting = Arc::new(CountingStore::new(Arc::clone(store)));
    let reader = LogReader::new(counting.clone()).at(position.clone());
    let started = Instant::now();
    let directory = reader
        .metadata(company, to - chrono::Duration::nanoseconds(1))
        .await?;
    let mut cursor = reader.events(company, from, to);
    let mut records = 0;
    while let Some(hour) = cursor.next_hour().await? {
        records += hour.len();
    }
    Ok(Cost {
        records,
        people: directory.people.len(),
        requests: counting.counts(),
        elapsed: started.elapsed(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store: Arc<dyn ObjectStore> = Arc::new(storage::S3Store::connect(&args.s3).await);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("bench-log-{}", &run[..8]);
    let now = Utc::now();
    let span = chrono::Duration::days(args.days);
    let start = (now - span - chrono::Duration::days(2))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();

    // Live-pattern traffic: every company at once, in time order, one segment per partition
    // per flush window.
    let generator = loadgen::Generator::new(loadgen::Options {
        seed: 5,
        id_prefix: format!("bl{}-", &run[..6]),
        companies: args.companies,
        content_events: args.events,
        start,
        span,
        ..loadgen::Options::default()
    });
    let shape = seed::LogShape {
        partitions: args.partitions,
        flush: chrono::Duration::minutes(args.flush_minutes.max(1)),
        max_records: usize::MAX,
    };
    let written = seed::write_v2_log(Arc::clone(&store), &topic, generator, shape, now).await?;
    let (company, company_records) = written
        .by_company
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(c, n)| (c.clone(), *n))
        .context("no events")?;
    let count = written.segments;
    eprintln!(
        "[bench] wrote {count} segments of {} companies in {:.1?}; measuring {company} ({company_records} records)",
        args.companies, written.elapsed
    );

    let position = LogPosition::read(store.as_ref(), &topic).await?;
    let month_from = start + chrono::Duration::days(args.days / 2);
    let month_to = month_from + chrono::Duration::days(30);
    let all_from: DateTime<Utc> = "2000-01-01T00:00:00Z".parse()?;
    let ranges = [
        ("one month", month_from, month_to, 30),
        ("all history", all_from, now, args.days),
    ];
    let mut before = Vec::new();
    for (_, from, to, _) in ranges {
        before.push(measure(&store, &position, &company, from, to).await?);
    }
    let compactor = Compactor::new(Arc::clone(&store), CompactionConfig::new(&topic));
    let compacting = Instant::now();
    let summary = compactor
        .run_pass(now)
        .await?
        .context("the pass had nothing to do")?;
    let compaction = compacting.elapsed();
    let mut after = Vec::new();
    for (_, from, to, _) in ranges {
        after.push(measure(&store, &position, &company, from, to).await?);
    }
    for (b, a) in before.iter().zip(&after) {
        anyhow::ensure!(
            (b.records, b.people) == (a.records, a.people),
            "compaction changed a read: {} records and {} people before, {} and {} after",
            b.records,
            b.people,
            a.records,
            a.people
        );
    }

    println!(
        "log of {} events, {} companies over {} days, {} partitions, a segment per {} min per partition ({count} segments); company {company}: {company_records} records",
        args.events, args.companies, args.days, args.partitions, args.flush_minutes
    );
    println!();
    println!("| read | compacted | records | GETs | LISTs | GETs per day | time |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (label, costs) in [("no", &before), ("yes", &after)] {
        for ((name, _, _, days), cost) in ranges.iter().zip(costs.iter()) {
            println!(
                "| {name} | {label} | {} | {} | {} | {:.2} | {:.2} s |",
                cost.records,
                cost.requests.all_gets(),
                cost.requests.lists,
                cost.requests.all_gets() as f64 / *days as f64,
                cost.elapsed.as_secs_f64()
            );
        }
    }
    println!();
    println!(
        "compaction: {:.1} s for {} days ({:.2} s per day): read {} records from {} segments, wrote {} parts and {} metadata days",
        compaction.as_secs_f64(),
        args.days,
        compaction.as_secs_f64() / args.days as f64,
        summary.read.records,
        summary.read.segments,
        summary.wrote.parts,
        summary.wrote.meta_days
    );
    Ok(())
}
