//! Export benchmark (run by `deploy/local/bench-export.sh`). In one run on one machine:
//! - writes three generated company logs into the object store: `small` (a tenth of the events
//!   over 90 days), `large` (all of them over 90 days: ten times as dense) and `long` (all of
//!   them over 900 days: as dense as `small`, ten times its size);
//! - exports each with the release `cce-archive` in its own process (log on S3 → completed
//!   multipart upload), reporting MB/s of JSON into the archive and peak RSS;
//! - as baseline, deflates the same JSON bytes at the same level on one core;
//! - prints the ratio, and the exports' peak RSS side by side: memory must not grow with an
//!   export's size (small vs long); it follows the busiest day's density (small vs large).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use compliance_log::{PendingRecord, SourceRange, V1Writer};
use serde_json::Value;
use storage::{ObjectStore, S3Config};

#[derive(Debug, Parser)]
struct Args {
    /// The release `cce-archive` binary.
    #[arg(long)]
    cce_archive: PathBuf,
    /// Content events in the larger company's log (the smaller gets a tenth).
    #[arg(long, default_value_t = 400_000)]
    events: u64,
    #[command(flatten)]
    s3: S3Config,
}

async fn seed(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    events: u64,
    days: i64,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now();
    let span = chrono::Duration::days(days);
    let generator = loadgen::Generator::new(loadgen::Options {
        seed: 3,
        id_prefix: prefix.to_owned(),
        companies: 1,
        people_per_company: 40,
        conversations_per_company: 60,
        content_events: events,
        // Ending before now, so every event passes the future-skew check.
        start: now - span - chrono::Duration::days(1),
        span,
    });
    let writer = V1Writer::new(store);
    let mut chunk = Vec::new();
    let mut offset = 0i64;
    let flush = |chunk: Vec<PendingRecord>| {
        let writer = writer.clone();
        async move {
            let source = SourceRange {
                topic: "bench".into(),
                partition: 0,
                first_offset: chunk[0].offset,
                last_offset: chunk[chunk.len() - 1].offset,
            };
            writer.write(&source, &chunk).await
        }
    };
    for message in generator {
        let (event, raw) =
            event_model::parse_event(&message.payload, &event_model::Limits::default(), now)
                .map_err(|r| anyhow::anyhow!("{r}"))?;
        chunk.push(PendingRecord { offset, event, raw });
        offset += 1;
        if chunk.len() == 20_000 {
            flush(std::mem::take(&mut chunk)).await?;
        }
    }
    if !chunk.is_empty() {
        flush(chunk).await?;
    }
    Ok(format!("{prefix}acme"))
}

fn run_json(command: &mut std::process::Command) -> anyhow::Result<Value> {
    let output = command.output().context("running cce-archive")?;
    anyhow::ensure!(
        output.status.success(),
        "cce-archive failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    Ok(serde_json::from_str(stdout.lines().last().unwrap_or("{}"))?)
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store: Arc<dyn ObjectStore> = Arc::new(storage::S3Store::connect(&args.s3).await);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut results = Vec::new();
    for (label, events, days) in [
        ("small", args.events / 10, 90),
        ("large", args.events, 90),
        ("long", args.events, 900),
    ] {
        let company = seed(
            store.clone(),
            &format!("bench{}-{label}-", &run[..8]),
            events,
            days,
        )
        .await?;
        eprintln!("[bench] seeded {company} with {events} content events");
        let key = format!("exports/bench-{run}/{label}.zip");
        let export = run_json(
            std::process::Command::new(&args.cce_archive)
                .args([
                    "export",
                    "--company",
                    &company,
                    "--to",
                    "2027-01-01T00:00:00Z",
                    "--key",
                    &key,
                ])
                .args(s3_args(&args.s3)),
        )?;
        eprintln!("[bench] {label}: {export}");
        results.push((label, key, export));
    }
    // Baseline: the large archive's JSON, deflated again on one core at the same level.
    let (_, key, large) = &results[1];
    let url = store.presign_get(key, Duration::from_secs(600)).await?;
    let body = reqwest::get(&url).await?.bytes().await?;
    let path = std::env::temp_dir().join(format!("bench-{run}.zip"));
    std::fs::write(&path, &body)?;
    let baseline = run_json(
        std::process::Command::new(&args.cce_archive)
            .arg("deflate-baseline")
            .arg(&path),
    )?;
    std::fs::remove_file(&path).ok();

    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let export_mbps = f(large, "json_bytes") / 1e6 / f(large, "seconds");
    let baseline_mbps = f(&baseline, "mb_per_s");
    let (small, large_rss) = (f(&results[0].2, "peak_rss_mib"), f(large, "peak_rss_mib"));
    let long = &results[2].2;
    let long_rss = f(long, "peak_rss_mib");
    println!(
        "\nexport benchmark (release build, deflate level 6, zlib-rs backend)\n\
         \x20 large export: {:.1} MB of JSON, {} files, {:.1} MB archive, {:.1} s\n\
         \x20 export throughput, log on S3 -> completed multipart upload   {export_mbps:>8.1} MB/s of JSON\n\
         \x20 baseline: deflate of the same bytes, same level, one core    {baseline_mbps:>8.1} MB/s\n\
         \x20 ratio export / baseline                                      {:>8.2}\n\
         \x20 peak RSS, same density, 10x the size: small ({:.1} MB JSON, 90 days) {small:.0} MiB, long ({:.1} MB JSON, 900 days) {long_rss:.0} MiB ({:+.0} %)\n\
         \x20 peak RSS, 10x denser days: large ({:.1} MB JSON, 90 days) {large_rss:.0} MiB ({:+.0} % over small)\n\
         \x20 peak RSS of the long export after 25 / 50 / 75 / 100 % of its range: {} MiB",
        f(large, "json_bytes") / 1e6,
        large["files"],
        f(large, "size") / 1e6,
        f(large, "seconds"),
        export_mbps / baseline_mbps,
        f(&results[0].2, "json_bytes") / 1e6,
        f(long, "json_bytes") / 1e6,
        (long_rss / small - 1.0) * 100.0,
        f(large, "json_bytes") / 1e6,
        (large_rss / small - 1.0) * 100.0,
        long["peak_rss_mib_at_quarters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| format!("{:.0}", v.as_f64().unwrap_or(0.0)))
            .chain([format!("{long_rss:.0}")])
            .collect::<Vec<_>>()
            .join(" / "),
    );
    println!(
        "{}",
        serde_json::json!({"export_mb_per_s": export_mbps, "baseline_mb_per_s": baseline_mbps,
            "ratio": export_mbps / baseline_mbps, "small": results[0].2, "large": large,
            "long": long})
    );
    Ok(())
}
