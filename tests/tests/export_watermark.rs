//! An export holds every event the platform had published when it was requested: it waits for
//! ingestion to write them (visibly), and fails with what to do when ingestion does not catch
//! up in time. Against the real broker and object store, with the ingestion service in-process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_model::EventBody;
use export::SystemClock;
use futures::FutureExt;
use proto::v1 as pb;
use storage::ObjectStore;
use telemetry::CancellationToken;
use tests::exports::{Replica, TokenSpec, authed, create_topics, is, wait_job};
use tests::{Stack, binary, kafka, unique};

/// The README's range.
const FROM: &str = "2026-01-01T00:00:00Z";
const TO: &str = "2026-01-08T00:00:00Z";
const PARTITIONS: i32 = 4;

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

    /// Produces a generated history (as `cce-loadgen` does) and waits for every delivery.
    async fn produce(&self, stack: &Stack, content_events: u64) -> Vec<Vec<u8>> {
        let messages: Vec<(String, Vec<u8>)> = loadgen::Generator::new(loadgen::Options {
            seed: 9,
            id_prefix: self.prefix.clone(),
            content_events,
            ..loadgen::Options::default()
        })
        .map(|m| (m.key, m.payload))
        .collect();
        kafka::produce(&kafka::producer(stack), &self.events, &messages).await;
        messages.into_iter().map(|(_, p)| p).collect()
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
        let mut args = vec![
            "--events-topic",
            &self.events,
            "--ingest-group",
            &self.group,
        ];
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

/// Requests the README's range.
async fn create(replica: &Replica, token: &str) -> String {
    replica
        .client()
        .await
        .create_export(authed(
            token,
            pb::CreateExportRequest {
                from: Some(tests::exports::timestamp(FROM)),
                to: Some(tests::exports::timestamp(TO)),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id
}

/// What an archive of the range must hold for the company: the ids of its (non-metadata)
/// events in the range — the count the manifest calls `events_read` — and of the posts created
/// in the range.
fn expected(payloads: &[Vec<u8>], company: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = (FROM.parse().unwrap(), TO.parse().unwrap());
    let now = Utc::now();
    let (mut events, mut posts) = (BTreeSet::new(), BTreeSet::new());
    for payload in payloads {
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
/// range read, every post in the day files, the manifest naming the topic's offsets then.
async fn check_archive(
    replica: &Replica,
    token: &str,
    job: &pb::ExportJob,
    source: &Source,
    payloads: &[Vec<u8>],
) {
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

    let (events, posts) = expected(payloads, &source.company());
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
            if item["kind"] == "post" && item.get("created_before_range").is_none() {
                archived_posts.insert(item["id"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(archived_posts, posts);

    // The offsets covered: the whole topic as produced (one offset per message), all partitions.
    let offsets = &manifest["source_offsets"];
    assert_eq!(offsets["topic"], source.events.as_str(), "{offsets}");
    let partitions = offsets["partitions"].as_array().unwrap();
    assert_eq!(
        partitions
            .iter()
            .map(|p| p["partition"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        (0..i64::from(PARTITIONS)).collect::<Vec<_>>()
    );
    let covered: i64 = partitions
        .iter()
        .map(|p| p["end_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(covered, payloads.len() as i64, "{offsets}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_requested_right_after_producing_holds_every_event_of_its_range() {
    let stack = Stack::from_env();
    let source = Source::create(&stack).await;
    let ingestion = source.start_ingestion(&stack).await;
    let (replica, token) = source.export_service(&stack, &[]).await;

    let checked = std::panic::AssertUnwindSafe(async {
        // The README's sequence: produce a history, then request an export at once — before
        // ingestion has flushed (every 2 s by default).
        let payloads = source.produce(&stack, 5_000).await;
        let id = create(&replica, &token).await;
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
        check_archive(&replica, &token, &job, &source, &payloads).await;
    })
    .catch_unwind()
    .await;
    stop_then_report(checked, replica, Some(ingestion)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_waits_while_ingestion_is_stopped_and_completes_when_it_resumes() {
    let stack = Stack::from_env();
    let source = Source::create(&stack).await;
    let (replica, token) = source.export_service(&stack, &[]).await;
    let mut ingestion = None;
    let checked = std::panic::AssertUnwindSafe(async {
        let payloads = source.produce(&stack, 1_500).await;
        let id = create(&replica, &token).await;

        // Nothing ingests: the export runs, waiting, and says how far behind ingestion is — every
        // message produced, on every partition.
        let mut client = replica.client().await;
        let behind = payloads.len() as u64;
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
                        .is_some_and(|p| p.ingest_events_behind == behind)
            },
        )
        .await;
        let progress = waiting.progress.unwrap();
        assert_eq!(
            progress.detail,
            format!("waiting for ingestion: {behind} events behind on {PARTITIONS} partitions")
        );
        assert_eq!(
            (progress.ingest_partitions_behind, progress.events_read),
            (PARTITIONS as u32, 0)
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
            stdout.contains("IN_PROGRESS") && stdout.contains("waiting for ingestion: "),
            "{stdout}"
        );

        // Ingestion starts: the export completes with everything.
        ingestion = Some(source.start_ingestion(&stack).await);
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
            done.detail.is_empty() && done.ingest_events_behind == 0,
            "{done:?}"
        );
        check_archive(&replica, &token, &job, &source, &payloads).await;
    })
    .catch_unwind()
    .await;
    stop_then_report(checked, replica, ingestion).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_fails_saying_what_to_do_when_ingestion_does_not_catch_up_in_time() {
    let stack = Stack::from_env();
    let source = Source::create(&stack).await;
    let (replica, token) = source
        .export_service(&stack, &["--ingest-wait-secs", "3"])
        .await;
    let payloads = source.produce(&stack, 50).await;
    let id = create(&replica, &token).await;

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
    for part in [
        "gave up waiting for ingestion 3s after the export was accepted".to_owned(),
        format!(
            "{} events accepted before this export was requested",
            payloads.len()
        ),
        format!("{:?}", source.group),
        "check the ingestion service".to_owned(),
        "/readyz".to_owned(),
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
