//! Start-up benchmark of the export service (run by `deploy/local/bench-state.sh`): for each
//! history size N, fills a fresh state topic with N records of ordinary jobs in the shape the
//! issue measured — enable and grant per company, then per job create, claim, a heartbeat a
//! second for `--heartbeats-per-job` seconds and finish, as record version 1 wrote them (the
//! history existing deployments have; version 2 keeps heartbeats out of the topic) — writes the
//! snapshot a replica would have written (covering all but the last `--tail` records), then
//! starts the release `cce-export` and measures the time until `/readyz` answers 200: with the
//! snapshot, and (up to `--no-snapshot-max` records) without one.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use export::state::{
    Command as StateCommand, JobProgress, JobResult, JobSpec, Outcome, RECORD_VERSION_LEASES,
    Record, SERVICE_ACTOR, State,
};
use export::statelog::{Snapshots, snapshot};
use rdkafka::ClientConfig;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use storage::{ObjectStore, S3Config};

#[derive(Debug, Parser)]
struct Args {
    /// The release `cce-export` binary.
    #[arg(long)]
    cce_export: PathBuf,
    /// History sizes to measure, in records.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
    records: Vec<u64>,
    /// Heartbeat records per job (a job of that many seconds).
    #[arg(long, default_value_t = 1000)]
    heartbeats_per_job: u64,
    /// Companies the jobs are spread over.
    #[arg(long, default_value_t = 50)]
    companies: u64,
    /// Records after the snapshot (a replica writes one every 10,000 by default: half of that is
    /// the average case).
    #[arg(long, default_value_t = 5_000)]
    tail: u64,
    /// Measure without a snapshot only up to this many records (a full fold of more takes long).
    #[arg(long, default_value_t = 1_000_000)]
    no_snapshot_max: u64,
    #[arg(long, env = "CCE_KAFKA_BROKERS")]
    kafka_brokers: String,
    #[command(flatten)]
    s3: S3Config,
}

/// The ordinary history: per company enable and grant, then jobs round the companies.
struct History {
    companies: u64,
    heartbeats: u64,
    at: DateTime<Utc>,
    index: u64,
}

impl History {
    fn record(&mut self, company: u64, actor: &str, command: StateCommand) -> Record {
        self.at += chrono::Duration::milliseconds(1000);
        self.index += 1;
        Record {
            v: RECORD_VERSION_LEASES,
            id: format!("bench-{}", self.index),
            at: self.at,
            company_id: format!("bench-company-{company}"),
            actor: actor.to_owned(),
            command,
        }
    }

    /// Records of job `job` (global number), in order.
    fn job(&mut self, job: u64) -> Vec<Record> {
        let company = job % self.companies;
        let job_id = format!("job-{job}");
        let mut out = Vec::with_capacity(usize::try_from(self.heartbeats).unwrap() + 3);
        let to = self.at;
        out.push(self.record(
            company,
            "ann",
            StateCommand::CreateExport {
                job_id: job_id.clone(),
                spec: JobSpec {
                    from: None,
                    to,
                    person_ids: vec![],
                    conversation_ids: vec![],
                    time_zone: "Europe/Paris".into(),
                    format: "json".into(),
                    schedule: None,
                },
                requester_email: Some("ann@example.com".into()),
                request_id: Some(format!("req-{job}")),
                max_queued: None,
            },
        ));
        let lease = chrono::Duration::seconds(15);
        let worker = format!("export-{}", job % 3);
        let claim_at = self.at + chrono::Duration::seconds(1);
        out.push(self.record(
            company,
            SERVICE_ACTOR,
            StateCommand::Claim {
                job_id: job_id.clone(),
                worker: worker.clone(),
                lease_until: Some(claim_at + lease),
                takes_over: None,
            },
        ));
        for beat in 0..self.heartbeats {
            let until = self.at + chrono::Duration::seconds(1) + lease;
            out.push(self.record(
                company,
                SERVICE_ACTOR,
                StateCommand::Heartbeat {
                    job_id: job_id.clone(),
                    worker: worker.clone(),
                    lease_until: until,
                    progress: JobProgress {
                        events_read: beat * 1000,
                        files_written: beat,
                        bytes_written: beat * 100_000,
                        percent: u32::try_from(beat * 99 / self.heartbeats.max(1)).unwrap(),
                        waiting_for_log: None,
                    },
                },
            ));
        }
        let upload_started = self.at;
        out.push(self.record(
            company,
            SERVICE_ACTOR,
            StateCommand::Finish {
                job_id: job_id.clone(),
                worker,
                result: JobResult::Completed {
                    key: format!("exports/bench-company-{company}/{job_id}/attempt-1/a.zip"),
                    size: 123_456_789,
                    sha256: "ab".repeat(32),
                    upload_started,
                    progress: None,
                },
            },
        ));
        out
    }
}

/// Produces `n` records to `topic` and folds them; returns the state after all but `tail`
/// records, the next offset it covers, and the fill time.
async fn fill(args: &Args, topic: &str, n: u64) -> anyhow::Result<(State, u64, Duration)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "300000")
        .create()?;
    let started = Instant::now();
    let mut history = History {
        companies: args.companies,
        heartbeats: args.heartbeats_per_job,
        at: "2026-01-01T00:00:00Z".parse()?,
        index: 0,
    };
    let mut state = State::default();
    let mut written = 0u64;
    let mut in_flight: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let snapshot_at = n.saturating_sub(args.tail);
    let mut snapshot: Option<(State, u64)> = None;
    let mut last_offset = -1i64;
    let mut pending: VecDeque<Record> = VecDeque::new();
    for company in 0..args.companies {
        pending.push_back(history.record(company, "ann", StateCommand::Enable));
        pending.push_back(history.record(
            company,
            "ann",
            StateCommand::Grant {
                admin_id: "bob".into(),
            },
        ));
    }
    let mut job = 0u64;
    while written < n {
        if pending.is_empty() {
            pending.extend(history.job(job));
            job += 1;
        }
        let record = pending.pop_front().expect("refilled above");
        let outcome = state.apply(&record);
        anyhow::ensure!(
            !matches!(outcome, Outcome::Rejected(_)),
            "the generated history is not ordinary: {outcome:?} for {record:?}"
        );
        let payload = serde_json::to_vec(&record)?;
        let delivery = loop {
            match producer.send_result(
                FutureRecord::to(topic)
                    .partition(0)
                    .key(&record.company_id)
                    .payload(&payload),
            ) {
                Ok(delivery) => break delivery,
                Err((_, _)) => {
                    // The local queue is full: wait for the oldest delivery.
                    let (_, oldest) = in_flight
                        .pop_front()
                        .context("queue full, none in flight")?;
                    last_offset = delivered(oldest).await?;
                }
            }
        };
        written += 1;
        in_flight.push_back((written, delivery));
        if written == snapshot_at {
            // The offsets of what is in flight are known only once delivered: drain first.
            while let Some((_, delivery)) = in_flight.pop_front() {
                last_offset = delivered(delivery).await?;
            }
            snapshot = Some((state.clone(), u64::try_from(last_offset + 1)?));
        }
        while in_flight.len() > 200_000 {
            let (_, oldest) = in_flight.pop_front().expect("non-empty");
            last_offset = delivered(oldest).await?;
        }
        if written.is_multiple_of(1_000_000) {
            println!(
                "  … {written} records produced ({:.0}/s)",
                written as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    while let Some((_, delivery)) = in_flight.pop_front() {
        delivered(delivery).await?;
    }
    let (state, next) = snapshot.unwrap_or_default();
    Ok((state, next, started.elapsed()))
}

async fn delivered(delivery: DeliveryFuture) -> anyhow::Result<i64> {
    match delivery.await {
        Ok(Ok(delivery)) => Ok(delivery.offset),
        Ok(Err((error, _))) => Err(anyhow::anyhow!("producing: {error}")),
        Err(_) => Err(anyhow::anyhow!("producing: the delivery was cancelled")),
    }
}

/// Starts `cce-export` on the topic and returns the seconds until `/readyz` says 200.
async fn time_to_ready(
    args: &Args,
    topic: &str,
    snapshot_prefix: &str,
    log: &std::path::Path,
) -> anyhow::Result<f64> {
    let ops = tests::exports::free_port();
    let grpc = tests::exports::free_port();
    let started = Instant::now();
    let mut child: Child = Command::new(&args.cce_export)
        .args([
            "--state-topic",
            topic,
            "--liveness-topic",
            &format!("{topic}-liveness"),
            "--notifications-topic",
            &format!("{topic}-notifications"),
            "--snapshot-prefix",
            snapshot_prefix,
            "--ops-addr",
            &format!("127.0.0.1:{ops}"),
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting cce-export")?;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{ops}/readyz");
    let result = loop {
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "cce-export exited ({status}) before it was ready; see {}",
                log.display()
            ));
        }
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            break Ok(started.elapsed().as_secs_f64());
        }
        // Polling the endpoint under measurement; 20 ms is the measurement's resolution.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store: Arc<dyn ObjectStore> = Arc::new(storage::S3Store::connect(&args.s3).await);
    let logs = tempfile::tempdir()?;
    println!(
        "history: ordinary jobs over {} companies, each create + claim + {} heartbeats + finish \
         (record version 1); snapshot {} records before the end",
        args.companies, args.heartbeats_per_job, args.tail
    );
    println!(
        "{:>11} {:>10} {:>12} {:>14} {:>16} {:>18}",
        "records", "fill s", "jobs", "snapshot MB", "ready s (snap)", "ready s (no snap)"
    );
    for &n in &args.records {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let topic = format!("state-bench-{n}-{}", &run[..8]);
        create_topics(&args.kafka_brokers, &topic).await?;
        let (state, next, fill) = fill(&args, &topic, n).await?;
        let jobs: usize = state.companies().map(|(_, c)| c.jobs().count()).sum();
        let prefix = format!("bench-snapshots-{run}/");
        let snapshots = Snapshots::new(store.clone(), &prefix, &topic);
        let bytes = snapshot::encode(&topic, next, &state)?;
        let size = bytes.len();
        snapshots.write(next, bytes).await?;
        let with = time_to_ready(
            &args,
            &topic,
            &prefix,
            &logs.path().join(format!("{n}-snap.log")),
        )
        .await?;
        let without = if n <= args.no_snapshot_max {
            let empty = format!("bench-snapshots-{run}-none/");
            let seconds = time_to_ready(
                &args,
                &topic,
                &empty,
                &logs.path().join(format!("{n}-nosnap.log")),
            )
            .await?;
            format!("{seconds:.2}")
        } else {
            "not measured".into()
        };
        println!(
            "{n:>11} {:>10.1} {jobs:>12} {:>14.2} {with:>16.2} {without:>18}",
            fill.as_secs_f64(),
            size as f64 / 1e6,
        );
    }
    Ok(())
}

async fn create_topics(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let liveness = format!("{topic}-liveness");
    let notifications = format!("{topic}-notifications");
    let topics = [
        NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("retention.ms", "-1"),
        NewTopic::new(&liveness, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&notifications, 1, TopicReplication::Fixed(1)),
    ];
    for created in admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        created.map_err(|(name, error)| anyhow::anyhow!("creating {name}: {error}"))?;
    }
    Ok(())
}
