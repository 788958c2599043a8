//! Export benchmark (run by `deploy/local/bench-export.sh`). In one run on one machine, for each
//! case (`--cases`, default all):
//! - seeds a company's log in format 2 into the object store, as ingestion and compaction leave
//!   it: segments written through the v2 log writer on a topic of the case's own, then a
//!   compaction pass, so every closed day is read from compacted parts (`tests::seed`);
//! - exports it with the release `cce-archive export` in its own process (log on S3 → completed
//!   multipart upload; peak RSS = its `VmHWM`), watched: one that passes `--rss-cap-mib` is
//!   killed and reported so;
//! - baselines, same run: the same JSON bytes deflated at the same level on one core
//!   (`cce-archive deflate-baseline`), and the I/O floor, reading the same log objects without
//!   rendering (`cce-archive read-floor`);
//! - prints the ratios, a table of peak RSS by export size, and a JSON summary line.
//!
//! Cases: `small`, `large` and `long` (one company, 60 conversations: a tenth of `--events`
//! over 90 days, all of them over 90 days, all of them over 900 days — the figures of
//! `docs/performance.md`); `huge-day` (one day of `--huge-day-posts` posts in one conversation,
//! with edits and deletes of that day's posts); `big-directory` (`--directory-people` people,
//! 3,000 conversations and teams, an all-company team and two of 5,000, moderate content);
//! `year` (ten companies chatting at once for 365 days; one company's all-history export).
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::{Value, json};
use storage::{ObjectStore, S3Config};
use tests::seed::{self, LogShape};

#[path = "cce-export-bench/watch.rs"]
mod watch;

const CASES: &[&str] = &[
    "small",
    "large",
    "long",
    "huge-day",
    "big-directory",
    "year",
];

#[derive(Debug, Parser)]
struct Args {
    /// The release `cce-archive` binary.
    #[arg(long)]
    cce_archive: PathBuf,
    /// Cases to run, comma-separated (small, large, long, huge-day, big-directory, year).
    #[arg(long, value_delimiter = ',', default_values_t = CASES.iter().map(|c| (*c).to_owned()))]
    cases: Vec<String>,
    /// Content events of the `large` and `long` logs (`small` gets a tenth).
    #[arg(long, default_value_t = 400_000)]
    events: u64,
    /// Posts (and replies) in the `huge-day` conversation's one day.
    #[arg(long, default_value_t = 2_000_000)]
    huge_day_posts: u64,
    /// People in the `big-directory` company.
    #[arg(long, default_value_t = 50_000)]
    directory_people: usize,
    /// Content events of the `year` log (all ten companies).
    #[arg(long, default_value_t = 1_000_000)]
    year_events: u64,
    /// Kill an export whose resident memory passes this (MiB).
    #[arg(long, default_value_t = 8192.0)]
    rss_cap_mib: f64,
    /// Passed to `cce-archive export` when set.
    #[arg(long)]
    memory_budget_mib: Option<u64>,
    /// Passed to `cce-archive export` when set.
    #[arg(long)]
    disk_budget_mib: Option<u64>,
    /// Passed to `cce-archive export` when set.
    #[arg(long)]
    threads: Option<usize>,
    /// The archive's format (json, eml or csv), passed to `cce-archive export` when set.
    #[arg(long)]
    format: Option<String>,
    #[command(flatten)]
    s3: S3Config,
}

/// One case: what to generate and how the log is cut.
struct Case {
    name: &'static str,
    options: loadgen::Options,
    shape: LogShape,
    /// What the log holds, for the table.
    about: String,
}

/// Midnight (UTC) `days` days before `now`.
fn midnight_before(now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    (now - chrono::Duration::days(days))
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

fn case(name: &str, args: &Args, prefix: &str, now: DateTime<Utc>) -> anyhow::Result<Case> {
    // One segment per partition per day of events (at most 10,000 records): compaction turns
    // them into one part per company-day whatever the segments were, so this only sets how
    // long seeding takes.
    let daily = LogShape {
        partitions: 4,
        flush: chrono::Duration::days(1),
        max_records: 10_000,
    };
    let chat = |events: u64, days: i64| loadgen::Options {
        seed: 3,
        id_prefix: prefix.to_owned(),
        companies: 1,
        people_per_company: 40,
        conversations_per_company: 60,
        content_events: events,
        // Ending before now, so every event passes the future-skew check and every day is
        // closed by the compaction pass.
        start: now - chrono::Duration::days(days) - chrono::Duration::days(1),
        span: chrono::Duration::days(days),
        ..loadgen::Options::default()
    };
    Ok(match name {
        "small" => Case {
            name: "small",
            options: chat(args.events / 10, 90),
            shape: daily,
            about: format!("{} events, 90 days", args.events / 10),
        },
        "large" => Case {
            name: "large",
            options: chat(args.events, 90),
            shape: daily,
            about: format!("{} events, 90 days", args.events),
        },
        "long" => Case {
            name: "long",
            options: chat(args.events, 900),
            shape: daily,
            about: format!("{} events, 900 days", args.events),
        },
        "huge-day" => {
            // Posts and replies are 70 of every 82 content events of the posts mix.
            let events = args.huge_day_posts * 82 / 70;
            Case {
                name: "huge-day",
                options: loadgen::Options {
                    seed: 3,
                    id_prefix: prefix.to_owned(),
                    companies: 1,
                    people_per_company: 50,
                    conversations_per_company: 0,
                    large_teams: vec![50],
                    mix: loadgen::Mix::Posts,
                    content_events: events,
                    start: midnight_before(now, 2),
                    span: chrono::Duration::hours(24) - chrono::Duration::seconds(1),
                },
                // A flush by size: one conversation is one partition's traffic.
                shape: LogShape {
                    partitions: 4,
                    flush: chrono::Duration::hours(1),
                    max_records: 10_000,
                },
                about: format!(
                    "1 day, 1 conversation: ~{} posts of {events} events",
                    args.huge_day_posts
                ),
            }
        }
        "big-directory" => Case {
            name: "big-directory",
            options: loadgen::Options {
                seed: 3,
                id_prefix: prefix.to_owned(),
                companies: 1,
                people_per_company: args.directory_people,
                conversations_per_company: 3_000,
                large_teams: vec![args.directory_people, 5_000, 5_000],
                content_events: 100_000,
                start: midnight_before(now, 9),
                span: chrono::Duration::days(7),
                ..loadgen::Options::default()
            },
            shape: daily,
            about: format!(
                "{} people, 3,003 conversations (teams of {0}, 5,000, 5,000), 100000 events, 7 days",
                args.directory_people
            ),
        },
        "year" => Case {
            name: "year",
            options: loadgen::Options {
                seed: 3,
                id_prefix: prefix.to_owned(),
                companies: 10,
                people_per_company: 40,
                conversations_per_company: 60,
                content_events: args.year_events,
                start: midnight_before(now, 367),
                span: chrono::Duration::days(365),
                ..loadgen::Options::default()
            },
            shape: daily,
            about: format!(
                "10 companies chatting at once, {} events, 365 days",
                args.year_events
            ),
        },
        other => anyhow::bail!("unknown case {other:?}: the cases are {}", CASES.join(", ")),
    })
}

fn s3_args(s3: &S3Config) -> Vec<String> {
    vec![
        "--s3-endpoint".into(),
        s3.endpoint.clone().unwrap_or_default(),
        "--s3-region".into(),
        s3.region.clone(),
        "--s3-bucket".into(),
        s3.bucket.clone(),
    ]
}

/// Runs `cce-archive` with `args` (watched), on a blocking thread.
async fn cce_archive(
    bench: &Args,
    args: Vec<String>,
    label: &str,
) -> anyhow::Result<watch::Watched> {
    let mut command = std::process::Command::new(&bench.cce_archive);
    command.args(args);
    let (label, cap) = (label.to_owned(), bench.rss_cap_mib);
    tokio::task::spawn_blocking(move || watch::run(command, &label, cap)).await?
}

/// What one case measured.
#[derive(Debug, Default)]
struct Measured {
    about: String,
    company: String,
    /// Records seeded (all companies), seconds to write them and to compact.
    seeded: (u64, f64, f64),
    export: Option<Value>,
    /// How the export failed, when it did.
    failure: Option<String>,
    peak_rss_mib: f64,
    floor: Option<Value>,
    baseline: Option<Value>,
}

async fn run_case(
    args: &Args,
    store: &Arc<dyn ObjectStore>,
    run: &str,
    name: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Measured> {
    let prefix = format!("b{}-{name}-", &run[..8]);
    let case = case(name, args, &prefix, now)?;
    let topic = format!("bench-export-{}-{}", &run[..8], case.name);
    let company = format!("{prefix}acme");
    let generator = loadgen::Generator::new(case.options.clone());
    let written = seed::write_v2_log(Arc::clone(store), &topic, generator, case.shape, now)
        .await
        .with_context(|| format!("seeding {name}"))?;
    eprintln!(
        "[bench] {name}: wrote {} records ({} of {company}) in {} segments, {:.1} MB, in {:.1?}",
        written.records,
        written.by_company.get(&company).copied().unwrap_or(0),
        written.segments,
        written.bytes as f64 / 1e6,
        written.elapsed
    );
    let (pass, compaction) = seed::compact(Arc::clone(store), &topic, now).await?;
    eprintln!(
        "[bench] {name}: compacted in {compaction:.1?}: {} records from {} segments into {} parts and {} metadata days",
        pass.read.records, pass.read.segments, pass.wrote.parts, pass.wrote.meta_days
    );
    let mut measured = Measured {
        about: case.about,
        company: company.clone(),
        seeded: (
            written.records,
            written.elapsed.as_secs_f64(),
            compaction.as_secs_f64(),
        ),
        ..Measured::default()
    };

    let to = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let key = format!("exports/bench-{run}/{name}.zip");
    let mut export_args: Vec<String> = [
        "export",
        "--company",
        &company,
        "--to",
        &to,
        "--topic",
        &topic,
        "--key",
        &key,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for (flag, value) in [
        (
            "--memory-budget-mib",
            args.memory_budget_mib.map(|v| v.to_string()),
        ),
        (
            "--disk-budget-mib",
            args.disk_budget_mib.map(|v| v.to_string()),
        ),
        ("--threads", args.threads.map(|v| v.to_string())),
        ("--format", args.format.clone()),
    ] {
        if let Some(value) = value {
            export_args.extend([flag.to_owned(), value]);
        }
    }
    export_args.extend(s3_args(&args.s3));
    let watched = cce_archive(args, export_args, &format!("{name} export")).await?;
    measured.peak_rss_mib = watched.peak_rss_mib;
    match watched.outcome {
        watch::Outcome::Done(export) => {
            measured.peak_rss_mib = export["peak_rss_mib"]
                .as_f64()
                .unwrap_or(watched.peak_rss_mib);
            eprintln!("[bench] {name}: {export}");
            measured.export = Some(export);
        }
        watch::Outcome::Killed { rss_mib, after } => {
            measured.failure = Some(format!(
                "killed by the bench at {rss_mib:.0} MiB resident after {:.1} s (cap {:.0} MiB); last progress: {}",
                after.as_secs_f64(),
                args.rss_cap_mib,
                watched.last_progress
            ));
        }
        watch::Outcome::Failed {
            status,
            stderr_tail,
        } => {
            measured.failure = Some(format!(
                "failed ({status}) after {:.1} s at {:.0} MiB resident (last sample); last progress: {}; stderr: {stderr_tail}",
                watched.elapsed.as_secs_f64(),
                watched.peak_rss_mib,
                watched.last_progress
            ));
        }
    }
    if let Some(failure) = &measured.failure {
        eprintln!("[bench] {name}: export {failure}");
    }

    // The I/O floor: the same request's log objects, read without rendering.
    let mut floor_args: Vec<String> = [
        "read-floor",
        "--company",
        &company,
        "--to",
        &to,
        "--topic",
        &topic,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    floor_args.extend(s3_args(&args.s3));
    match cce_archive(args, floor_args, &format!("{name} read-floor"))
        .await?
        .outcome
    {
        watch::Outcome::Done(floor) => {
            eprintln!("[bench] {name}: read floor {floor}");
            measured.floor = Some(floor);
        }
        other => eprintln!("[bench] {name}: read floor did not finish: {other:?}"),
    }

    // Deflate baseline: the archive's JSON, deflated again on one core at the same level.
    if measured.export.is_some() {
        let url = store.presign_get(&key, Duration::from_secs(3600)).await?;
        let path = std::env::temp_dir().join(format!("bench-{run}-{name}.zip"));
        let mut response = reqwest::get(&url).await?.error_for_status()?;
        let mut file = tokio::fs::File::create(&path).await?;
        while let Some(chunk) = response.chunk().await? {
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
        }
        drop(file);
        let baseline_args = vec!["deflate-baseline".to_owned(), path.display().to_string()];
        let baseline = cce_archive(args, baseline_args, &format!("{name} deflate")).await;
        std::fs::remove_file(&path).ok();
        match baseline?.outcome {
            watch::Outcome::Done(baseline) => measured.baseline = Some(baseline),
            other => eprintln!("[bench] {name}: deflate baseline did not finish: {other:?}"),
        }
    }
    Ok(measured)
}

fn f(v: Option<&Value>, k: &str) -> f64 {
    v.and_then(|v| v[k].as_f64()).unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for name in &args.cases {
        anyhow::ensure!(
            CASES.contains(&name.as_str()),
            "unknown case {name:?}: the cases are {}",
            CASES.join(", ")
        );
    }
    let store: Arc<dyn ObjectStore> = Arc::new(storage::S3Store::connect(&args.s3).await);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let now = Utc::now();
    let mut results: BTreeMap<&str, Measured> = BTreeMap::new();
    for name in CASES.iter().filter(|c| args.cases.iter().any(|n| n == *c)) {
        results.insert(name, run_case(&args, &store, &run, name, now).await?);
    }
    report(&args, &results);
    Ok(())
}

fn report(args: &Args, results: &BTreeMap<&str, Measured>) {
    let threads = args
        .threads
        .map_or_else(|| "every core".to_owned(), |t| t.to_string());
    println!(
        "\nexport benchmark (release build, deflate level 6, zlib-rs backend; export threads: {threads}; memory budget: {})",
        args.memory_budget_mib
            .map_or_else(|| "default".to_owned(), |m| format!("{m} MiB"))
    );
    println!();
    println!(
        "| case | log | JSON MB | files | events | peak RSS MiB | export s | export MB/s | deflate MB/s (1 core) | export / deflate | read floor s (fetch / cursor) | export / floor |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in CASES {
        let Some(m) = results.get(name) else { continue };
        let e = m.export.as_ref();
        let (json_mb, seconds) = (f(e, "json_bytes") / 1e6, f(e, "seconds"));
        let export_mbps = json_mb / seconds;
        let deflate = f(m.baseline.as_ref(), "mb_per_s");
        let (fetch, cursor) = (
            f(m.floor.as_ref(), "fetch_seconds"),
            f(m.floor.as_ref(), "cursor_seconds"),
        );
        let outcome = match &m.failure {
            Some(failure) => format!("**{failure}**"),
            None => format!("{:.1}", seconds),
        };
        println!(
            "| {name} | {} | {json_mb:.1} | {} | {} | {:.0} | {outcome} | {export_mbps:.1} | {deflate:.1} | {:.2} | {fetch:.2} / {cursor:.2} | {:.1}× fetch, {:.1}× cursor |",
            m.about,
            e.map_or(Value::Null, |e| e["files"].clone()),
            e.map_or(Value::Null, |e| e["events"].clone()),
            m.peak_rss_mib,
            export_mbps / deflate,
            seconds / fetch,
            seconds / cursor,
        );
    }
    println!();
    if let Some(large) = results.get("large") {
        let e = large.export.as_ref();
        let export_mbps = f(e, "json_bytes") / 1e6 / f(e, "seconds");
        let deflate = f(large.baseline.as_ref(), "mb_per_s");
        println!(
            "large: export {export_mbps:.1} MB/s of JSON vs deflate level 6 on one core {deflate:.1} MB/s: ratio {:.2} (goal >= 0.8)",
            export_mbps / deflate
        );
        let floor = large.floor.as_ref();
        println!(
            "large: export {:.1} s vs reading the same log objects {:.2} s (fetch only, {:.1} MB at {:.1} MB/s) / {:.2} s (log cursor: fetch, decode, order)",
            f(e, "seconds"),
            f(floor, "fetch_seconds"),
            f(floor, "bytes") / 1e6,
            f(floor, "fetch_mb_per_s"),
            f(floor, "cursor_seconds"),
        );
    }
    let finished: Vec<(&str, f64)> = results
        .iter()
        .filter(|(_, m)| m.export.is_some())
        .map(|(n, m)| (*n, m.peak_rss_mib))
        .collect();
    if let (Some(low), Some(high)) = (
        finished.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        finished.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
    ) {
        let failed: Vec<&str> = results
            .iter()
            .filter(|(_, m)| m.failure.is_some())
            .map(|(n, _)| *n)
            .collect();
        println!(
            "peak RSS over the finished exports: {:.0} MiB ({}) to {:.0} MiB ({}); all < 256 MiB: {}{}",
            low.1,
            low.0,
            high.1,
            high.0,
            if high.1 < 256.0 && failed.is_empty() {
                "yes"
            } else {
                "no"
            },
            if failed.is_empty() {
                String::new()
            } else {
                format!("; did not finish: {}", failed.join(", "))
            }
        );
    }
    if let Some(long) = results.get("long").and_then(|m| m.export.as_ref()) {
        println!(
            "peak RSS of the long export after 25 / 50 / 75 / 100 % of its range: {} MiB",
            long["peak_rss_mib_at_quarters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| format!("{:.0}", v.as_f64().unwrap_or(0.0)))
                .chain([format!("{:.0}", f(Some(long), "peak_rss_mib"))])
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    let mut summary = serde_json::Map::new();
    if let Some(large) = results.get("large") {
        let e = large.export.as_ref();
        let export_mbps = f(e, "json_bytes") / 1e6 / f(e, "seconds");
        let deflate = f(large.baseline.as_ref(), "mb_per_s");
        summary.insert("export_mb_per_s".into(), json!(export_mbps));
        summary.insert("baseline_mb_per_s".into(), json!(deflate));
        summary.insert("ratio".into(), json!(export_mbps / deflate));
    }
    for (name, m) in results {
        summary.insert(
            (*name).to_owned(),
            json!({"export": m.export, "failure": m.failure, "peak_rss_mib": m.peak_rss_mib,
                "read_floor": m.floor, "deflate_baseline": m.baseline,
                "seeded_records": m.seeded.0, "seed_seconds": m.seeded.1,
                "compaction_seconds": m.seeded.2, "company": m.company}),
        );
    }
    println!("{}", Value::Object(summary));
}
