//! An export reads the log only once the log's own watermark says it is durable past the range
//! (`services/export/src/watermark.rs`): it waits for ingestion visibly, saying how far the log
//! has got, reads the log at the position it waited for, records that position in the manifest,
//! and fails with what to check when the log does not get there in time. Against the real broker
//! and object store, with the ingestion service in-process.
//!
//! Who writes the watermark pointers (`log/v2/watermarks/<topic>/<partition>.json`): the
//! format 2 ingestion service publishes them itself. Were [`INGESTION_PUBLISHES_WATERMARKS`]
//! false (an ingestion service that does not), these tests would write them where ingestion
//! would, and only once the ingestion service has made everything below them durable in the log
//! — so a pointer never claims more than the log holds. (The stalled-partition test writes its
//! own pointers either way: no ingestion runs in it.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use compliance_log::LogPosition;
use event_model::EventBody;
use export::SystemClock;
use futures::FutureExt;
use proto::v1 as pb;
use storage::ObjectStore;
use telemetry::CancellationToken;
use tests::exports::{Replica, TokenSpec, authed, create_topics, is, time, wait_job};
use tests::{
    INGESTION_PUBLISHES_WATERMARKS, Stack, binary, kafka, put_watermarks, unique, wait_for,
};

const PARTITIONS: i32 = 4;
/// A past range (the README's).
const FROM: &str = "2026-01-01T00:00:00Z";
const TO: &str = "2026-01-08T00:00:00Z";
/// The export service's default lateness grace (`CCE_EXPORT_LATENESS_GRACE_SECS`).
const GRACE_SECS: i64 = 10;

fn past_range() -> (DateTime<Utc>, DateTime<Utc>) {
    (FROM.parse().unwrap(), TO.parse().unwrap())
}

/// A test's own events topic, dead-letter topic, ingestion group and company.
struct Source {
    events: String,
    dlq: String,
    group: String,
    prefix: String,
}

impl Source {
    async fn create(stack: &Stack) -> Self {
        let source = Self {
            events: unique("ev"),
            dlq: unique("dlq"),
            group: unique("grp"),
            prefix: format!("{}-", unique("wm")),
        };
        kafka::create_topic(stack, &source.events, PARTITIONS).await;
        kafka::create_topic(stack, &source.dlq, 1).await;
        source
    }

    fn company(&self) -> String {
        format!("{}acme", self.prefix)
    }

    /// A generated history (as `cce-loadgen` makes) of live traffic: dated over the half hour
    /// that began an hour ago.
    fn generate(&self, content_events: u64) -> Vec<(String, Vec<u8>)> {
        let start = Utc::now() - chrono::Duration::hours(1);
        self.generate_over(content_events, start, chrono::Duration::minutes(30))
    }

    /// A generated history dated over [`FROM`, [`TO`]) — published now, long after.
    fn generate_past(&self, content_events: u64) -> Vec<(String, Vec<u8>)> {
        let (from, to) = past_range();
        self.generate_over(content_events, from, to - from)
    }

    fn generate_over(
        &self,
        content_events: u64,
        start: DateTime<Utc>,
        span: chrono::Duration,
    ) -> Vec<(String, Vec<u8>)> {
        loadgen::Generator::new(loadgen::Options {
            seed: 9,
            id_prefix: self.prefix.clone(),
            content_events,
            start,
            span,
            ..loadgen::Options::default()
        })
        .map(|m| (m.key, m.payload))
        .collect()
    }

    /// Produces and waits for every delivery.
    async fn produce(&self, stack: &Stack, messages: &[(String, Vec<u8>)]) {
        kafka::produce(&kafka::producer(stack), &self.events, messages).await;
    }

    async fn start_ingestion(&self, stack: &Stack) -> (CancellationToken, ingestion::Running) {
        let stop = CancellationToken::new();
        let running = ingestion::start(
            tests::ingestion_config(stack, &self.events, &self.dlq, &self.group, &[]),
            stop.clone(),
        )
        .await
        .unwrap();
        (stop, running)
    }

    /// An export service reading this source, exports enabled for the company; its admin's
    /// token.
    async fn export_service(&self, stack: &Stack, extra: &[&str]) -> (Replica, String) {
        let state_topic = unique("state");
        create_topics(stack, &state_topic).await;
        let mut args = vec!["--events-topic", &self.events];
        args.extend_from_slice(extra);
        let replica = Replica::start(stack, &state_topic, Arc::new(SystemClock), &args).await;
        let token = TokenSpec::admin(stack, &self.company(), "ann").sign();
        replica
            .client()
            .await
            .enable_exports(authed(&token, pb::EnableExportsRequest {}))
            .await
            .unwrap();
        (replica, token)
    }

    /// The log's position now.
    async fn position(&self, stack: &Stack) -> LogPosition {
        LogPosition::read(&stack.s3_store().await, &self.events)
            .await
            .unwrap()
    }

    /// Waits until the log is durable for everything `produced` (every message produced so
    /// far) and published before `after`, and returns how far it is then (the least time
    /// watermark). Without an ingestion service that publishes watermarks, first waits until
    /// every company's log holds every produced event, then writes the pointers: the
    /// partitions' end offsets, durable now.
    async fn durable(
        &self,
        stack: &Stack,
        produced: &[(String, Vec<u8>)],
        after: DateTime<Utc>,
    ) -> DateTime<Utc> {
        if !INGESTION_PUBLISHES_WATERMARKS {
            let expected = tests::expected_by_company(produced.iter().map(|(_, p)| p.clone()));
            let reader = compliance_log::LogReader::new(Arc::new(stack.s3_store().await));
            for (company, ids) in &expected {
                wait_for("ingestion", Duration::from_secs(120), || async {
                    (tests::log_event_ids(&reader, company).await == *ids).then_some(())
                })
                .await;
            }
            let ends = tests::end_offsets(stack, &self.events, PARTITIONS).await;
            let now = Utc::now();
            let pointers: Vec<_> = ends.iter().map(|&(p, end)| (p, end, Some(now))).collect();
            put_watermarks(stack, &self.events, PARTITIONS, &pointers).await;
        }
        wait_for("the log's watermark", Duration::from_secs(120), || async {
            let position = self.position(stack).await;
            let durable: i64 = position.partitions.iter().map(|p| p.durable_offset).sum();
            position
                .min_time_watermark()
                .filter(|t| *t >= after && durable == produced.len() as i64)
        })
        .await
    }
}

/// Stops the services, then reports a failed check: a test that panicked with an ingestion
/// service still running would hang in the runtime's shutdown instead of failing (its rebalance
/// callback drains on a runtime that is going away).
async fn stop_then_report(
    checked: std::thread::Result<()>,
    replica: Replica,
    ingestion: Option<(CancellationToken, ingestion::Running)>,
) {
    replica.shutdown().await;
    if let Some((stop, running)) = ingestion {
        stop.cancel();
        running.task.await.unwrap().unwrap();
    }
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// What an export up to now waits for: its range's end (the request) plus the grace, which is
/// later than its acceptance.
fn needed_until_now(job: &pb::ExportJob) -> DateTime<Utc> {
    let to = time(job.request.as_ref().unwrap().to.as_ref());
    let needed = to + chrono::Duration::seconds(GRACE_SECS);
    assert!(needed > time(job.created_at.as_ref()), "{job:?}");
    needed
}

/// Requests everything from two hours ago until now.
async fn create_until_now(replica: &Replica, token: &str) -> String {
    let from = Utc::now() - chrono::Duration::hours(2);
    create(replica, token, Some(from), None).await
}

async fn create(
    replica: &Replica,
    token: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> String {
    replica
        .client()
        .await
        .create_export(authed(
            token,
            pb::CreateExportRequest {
                from: from.map(export::service::timestamp),
                to: to.map(export::service::timestamp),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id
}

/// What an archive of the job's range must hold for the company: the ids of its (non-metadata)
/// events in the range — the count the manifest calls `events_read` — and of the posts created
/// in the range.
fn expected(
    payloads: &[(String, Vec<u8>)],
    company: &str,
    job: &pb::ExportJob,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let request = job.request.as_ref().unwrap();
    let (from, to) = (time(request.from.as_ref()), time(request.to.as_ref()));
    let now = Utc::now();
    let (mut events, mut posts) = (BTreeSet::new(), BTreeSet::new());
    for (_, payload) in payloads {
        let (event, _) =
            event_model::parse_event(payload, &event_model::Limits::default(), now).unwrap();
        let at = event.occurred_at.with_timezone(&Utc);
        if !event_model::route(&event).iter().any(|c| c == company)
            || event.body.is_metadata()
            || at < from
            || at >= to
        {
            continue;
        }
        events.insert(event.event_id.clone());
        if let EventBody::PostCreated { post_id, .. } = event.body {
            posts.insert(post_id);
        }
    }
    (events, posts)
}

/// Downloads a completed export and checks it against what was produced: every event of the
/// range read, every post in the day files. Returns the manifest.
async fn check_archive(
    replica: &Replica,
    token: &str,
    job: &pb::ExportJob,
    source: &Source,
    payloads: &[(String, Vec<u8>)],
) -> serde_json::Value {
    let link = replica
        .client()
        .await
        .get_download_url(authed(
            token,
            pb::GetDownloadUrlRequest { id: job.id.clone() },
        ))
        .await
        .unwrap()
        .into_inner();
    let bytes = reqwest::get(&link.url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let entries = archive::verify::read_entries(&bytes).unwrap();

    let (events, posts) = expected(payloads, &source.company(), job);
    assert!(
        events.len() > 100,
        "the range holds {} events",
        events.len()
    );
    let (_, manifest) = entries
        .iter()
        .find(|(name, _)| name.ends_with("/manifest.json"))
        .expect("a manifest");
    let manifest: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    assert_eq!(
        manifest["log_position"]["events_read"],
        events.len() as u64,
        "every event of the range produced before the request is in the archive"
    );
    assert_eq!(
        job.progress.as_ref().unwrap().events_read,
        events.len() as u64
    );
    let mut archived_posts = BTreeSet::new();
    for (name, content) in &entries {
        if !(name.contains("_Chats/") && name.ends_with(".json")) {
            continue;
        }
        let day: serde_json::Value = serde_json::from_slice(content).unwrap();
        for item in day["items"].as_array().unwrap() {
            if item["kind"] == "post" && item.get("created_elsewhere").is_none() {
                archived_posts.insert(item["id"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(archived_posts, posts);
    manifest
}

/// The manifest's log position names the topic and every partition, durable past what the job
/// `needed` and covering the `produced` messages (one offset each).
fn check_position(
    manifest: &serde_json::Value,
    source: &Source,
    needed: DateTime<Utc>,
    produced: usize,
) {
    let position = &manifest["log_position"];
    assert_eq!(manifest["format_version"], 5, "{position}");
    assert_eq!(position["topic"], source.events.as_str(), "{position}");
    let partitions = position["partitions"].as_array().unwrap();
    assert_eq!(
        partitions
            .iter()
            .map(|p| p["partition"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        (0..i64::from(PARTITIONS)).collect::<Vec<_>>(),
        "{position}"
    );
    let covered: i64 = partitions
        .iter()
        .map(|p| p["durable_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(covered, produced as i64, "{position}");
    let marks: Vec<DateTime<Utc>> = partitions
        .iter()
        .map(|p| p["time_watermark"].as_str().unwrap().parse().unwrap())
        .collect();
    let durable_until: DateTime<Utc> = position["durable_until"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        Some(durable_until),
        marks.iter().min().copied(),
        "{position}"
    );
    assert!(durable_until >= needed, "{position} vs {needed}");
    assert!(
        partitions.iter().all(|p| p["epoch"].as_u64().unwrap() >= 1),
        "{position}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_requested_right_after_producing_holds_every_event_published_before_it() {
    let stack = Stack::from_env();
    let source = Source::create(&stack).await;
    let ingestion = source.start_ingestion(&stack).await;
    let (replica, token) = source.export_service(&stack, &[]).await;

    let checked = std::panic::AssertUnwindSafe(async {
        // The README's sequence with live traffic: produce, then request an export up to now
        // at once — before ingestion has flushed (every 2 s by default).
        let messages = source.generate(5_000);
        source.produce(&stack, &messages).await;
        let id = create_until_now(&replica, &token).await;
        let mut client = replica.client().await;
        let job = wait_job(
            &mut client,
            &token,
            &id,
            "finished",
            Duration::from_secs(180),
            |j| {
                j.status != pb::ExportStatus::Accepted as i32
                    && j.status != pb::ExportStatus::InProgress as i32
            },
        )
        .await;
        assert_eq!(job.status, pb::ExportStatus::Completed as i32, "{job:?}");
        let manifest = check_archive(&replica, &token, &job, &source, &messages).await;
        check_position(&manifest, &source, needed_until_now(&job), messages.len());
    })
    .catch_unwind()
    .await;
    stop_then_report(checked, replica, Some(ingestion)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_waits_while_ingestion_is_stopped_and_completes_with_the_events_when_it_resumes()
{
    let stack = Stack::from_env();
    let source = Source::create(&stack).await;
    let (replica, token) = source.export_service(&stack, &[]).await;
    let mut ingestion = None;
    let checked = std::panic::AssertUnwindSafe(async {
        let messages = source.generate(1_500);
        let (first, second) = messages.split_at(messages.len() / 2);

        // Ingestion writes the first half, then stops.
        let before = Utc::now();
        source.produce(&stack, first).await;
        let running = source.start_ingestion(&stack).await;
        source.durable(&stack, first, before).await;
        running.0.cancel();
        running.1.task.await.unwrap().unwrap();
        // Where ingestion left the log (it may have moved its idle partitions' time watermarks
        // until it stopped).
        let stopped_at = source.position(&stack).await.min_time_watermark().unwrap();

        // The second half is published while nothing ingests; an export up to now waits,
        // saying how far the log has got: durable until ingestion stopped, on no partition as
        // far as the range's end (the request) plus the grace.
        source.produce(&stack, second).await;
        let id = create_until_now(&replica, &token).await;
        let mut client = replica.client().await;
        let waiting = wait_job(
            &mut client,
            &token,
            &id,
            "waiting for ingestion",
            Duration::from_secs(60),
            |j| {
                j.status == pb::ExportStatus::InProgress as i32
                    && j.progress
                        .as_ref()
                        .is_some_and(|p| p.log_durable_until.is_some())
            },
        )
        .await;
        let progress = waiting.progress.clone().unwrap();
        let needed = needed_until_now(&waiting);
        assert_eq!(time(progress.log_durable_until.as_ref()), stopped_at);
        assert_eq!(time(progress.log_durable_needed.as_ref()), needed);
        let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        assert_eq!(
            progress.detail,
            format!(
                "waiting for ingestion: the log is durable until {}, {}s short of {} (the \
                 range's end plus {GRACE_SECS}s of grace); {PARTITIONS} of {PARTITIONS} \
                 partitions behind",
                secs(stopped_at),
                (needed - stopped_at).num_seconds().max(1),
                secs(needed),
            )
        );
        assert_eq!(
            (
                progress.ingest_partitions_behind,
                progress.events_read,
                progress.ingest_events_behind
            ),
            (PARTITIONS as u32, 0, 0)
        );
        // The admin tool shows it too.
        let out = Command::new(binary("cce-admin"))
            .args(["get", &id])
            .env("CCE_EXPORT_ENDPOINT", &replica.endpoint)
            .env("CCE_TOKEN", &token)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout.contains("IN_PROGRESS")
                && stdout.contains("waiting for ingestion: the log is durable until"),
            "{stdout}"
        );

        // Ingestion resumes: the export completes with every event, both halves, and its
        // manifest names the position it read at.
        ingestion = Some(source.start_ingestion(&stack).await);
        source.durable(&stack, &messages, needed).await;
        let job = wait_job(
            &mut client,
            &token,
            &id,
            "completed",
            Duration::from_secs(180),
            is(pb::ExportStatus::Completed),
        )
        .await;
        let done = job.progress.as_ref().unwrap();
        assert!(
            done.detail.is_empty()
                && done.ingest_partitions_behind == 0
                && done.log_durable_until.is_none(),
            "{done:?}"
        );
        let manifest = check_archive(&replica, &token, &job, &source, &messages).await;
        check_position(&manifest, &source, needed, messages.len());
    })
    .catch_unwind()
    .await;
    stop_then_report(checked, replica, ingestion).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_fails_saying_what_to_check_when_a_partition_stays_behind() {
    let stack = Stack::from_env();
    let source = Source::create(&stack).await;
    let (replica, token) = source
        .export_service(&stack, &["--ingest-wait-secs", "3"])
        .await;
    // Three partitions are durable past the request (an hour from now); partition 2 stalled in
    // January: what was published to it since is not in the log, and a past range's export
    // needs everything published before its request. (No ingestion runs in this test: the
    // pointers are the test's.)
    let later = Utc::now() + chrono::Duration::hours(1);
    let stalled: DateTime<Utc> = "2026-01-07T12:00:00Z".parse().unwrap();
    put_watermarks(
        &stack,
        &source.events,
        PARTITIONS,
        &[
            (0, 10, Some(later)),
            (1, 10, Some(later)),
            (2, 3, Some(stalled)),
            (3, 10, Some(later)),
        ],
    )
    .await;
    let (from, to) = past_range();
    let id = create(&replica, &token, Some(from), Some(to)).await;

    let mut client = replica.client().await;
    let job = wait_job(
        &mut client,
        &token,
        &id,
        "failed",
        Duration::from_secs(60),
        is(pb::ExportStatus::Failed),
    )
    .await;
    // What is needed is the request: everything published before it. How many seconds short
    // the log is depends on when it was accepted; that it is a number is checked, the rest is
    // said as is.
    let accepted = time(job.created_at.as_ref()).to_rfc3339_opts(SecondsFormat::Secs, true);
    let short = job
        .error
        .split_once("the log is durable until 2026-01-07T12:00:00Z, ")
        .and_then(|(_, rest)| rest.split_once("s short of "))
        .map(|(secs, _)| secs);
    assert!(
        short.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)),
        "{short:?} in {:?}",
        job.error
    );
    for part in [
        "gave up waiting for ingestion 3s after the export was accepted".to_owned(),
        format!("s short of {accepted} (when the export was requested); 1 of 4 partitions behind"),
        format!("topic {:?}, partitions behind: 2.", source.events),
        "is the ingestion service running, and is one of these partitions stalled?".to_owned(),
        "/readyz".to_owned(),
        "cce_ingest_partition_stalled".to_owned(),
        "request the export again".to_owned(),
    ] {
        assert!(
            job.error.to_lowercase().contains(&part.to_lowercase()),
            "{part:?} missing from {:?}",
            job.error
        );
    }
    // No archive was made.
    let store = stack.s3_store().await;
    let objects = storage::list_all(
        &store as &dyn ObjectStore,
        &format!("exports/{}/{id}/", source.company()),
    )
    .await
    .unwrap();
    assert!(objects.is_empty(), "{objects:?}");
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_published_after_an_export_are_in_a_new_export_of_the_range_not_in_the_first() {
    let stack = Stack::from_env();
    let source = Source::create(&stack).await;
    let (replica, token) = source.export_service(&stack, &[]).await;
    let mut ingestion = None;
    let checked = std::panic::AssertUnwindSafe(async {
        let messages = source.generate_past(1_500);
        let (first, late) = messages.split_at(messages.len() / 2);
        let (from, to) = past_range();

        // The first half is published and ingested; an export of the range reads it.
        let before = Utc::now();
        source.produce(&stack, first).await;
        ingestion = Some(source.start_ingestion(&stack).await);
        source.durable(&stack, first, before).await;
        let first_id = create(&replica, &token, Some(from), Some(to)).await;
        let mut client = replica.client().await;
        let first_job = wait_job(
            &mut client,
            &token,
            &first_id,
            "completed",
            Duration::from_secs(120),
            is(pb::ExportStatus::Completed),
        )
        .await;
        // A past range's export needs everything published before its request: the first
        // half, all of it.
        let first_manifest = check_archive(&replica, &token, &first_job, &source, first).await;
        let first_needed = time(first_job.created_at.as_ref());
        check_position(&first_manifest, &source, first_needed, first.len());

        // The second half is published after the first export completed, every event dated
        // inside the exported range (late events): ingestion writes them to the log; a new
        // export of the same range includes them, the first archive does not, and its manifest
        // still says where it read up to.
        let late_in_range = expected(late, &source.company(), &first_job).0;
        assert!(late_in_range.len() > 100, "{}", late_in_range.len());
        let before = Utc::now();
        source.produce(&stack, late).await;
        source.durable(&stack, &messages, before).await;
        let second_id = create(&replica, &token, Some(from), Some(to)).await;
        let second_job = wait_job(
            &mut client,
            &token,
            &second_id,
            "completed",
            Duration::from_secs(120),
            is(pb::ExportStatus::Completed),
        )
        .await;
        let second_manifest =
            check_archive(&replica, &token, &second_job, &source, &messages).await;
        check_position(
            &second_manifest,
            &source,
            time(second_job.created_at.as_ref()),
            messages.len(),
        );
        let read = |m: &serde_json::Value| m["log_position"]["events_read"].as_u64().unwrap();
        assert_eq!(
            read(&second_manifest) - read(&first_manifest),
            late_in_range.len() as u64,
            "the new export holds the late events, the first does not"
        );
    })
    .catch_unwind()
    .await;
    stop_then_report(checked, replica, ingestion).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_past_ranges_export_holds_every_event_published_before_its_request() {
    let stack = Stack::from_env();
    let source = Source::create(&stack).await;
    let ingestion = source.start_ingestion(&stack).await;
    // The default grace.
    let (replica, token) = source.export_service(&stack, &[]).await;
    let checked = std::panic::AssertUnwindSafe(async {
        // A history dated in January, published now (a backfill), and an export of January
        // requested at once, before ingestion has flushed: the range ended long before the
        // request, and the export waits until everything published before the request is
        // durable — so it holds every event. (Waiting only for the range's end plus the grace,
        // it completed with none of them.)
        let messages = source.generate_past(5_000);
        source.produce(&stack, &messages).await;
        let (from, to) = past_range();
        let id = create(&replica, &token, Some(from), Some(to)).await;
        let mut client = replica.client().await;
        let job = wait_job(
            &mut client,
            &token,
            &id,
            "finished",
            Duration::from_secs(180),
            |j| {
                j.status != pb::ExportStatus::Accepted as i32
                    && j.status != pb::ExportStatus::InProgress as i32
            },
        )
        .await;
        assert_eq!(job.status, pb::ExportStatus::Completed as i32, "{job:?}");
        let manifest = check_archive(&replica, &token, &job, &source, &messages).await;
        check_position(
            &manifest,
            &source,
            time(job.created_at.as_ref()),
            messages.len(),
        );
    })
    .catch_unwind()
    .await;
    stop_then_report(checked, replica, Some(ingestion)).await;
}
