//! Scheduled exports end to end, against the real broker, object store and an SMTP server:
//! a daily schedule started four days ago on a replica whose clock is two days behind makes
//! two runs; that replica stops (SIGTERM) and two replicas with the right clock catch up the
//! two missed runs, in order, once each — run 3 waiting for ingestion (held back), failing
//! after the replicas' wait, and made again over the same range after the backoff, the
//! schedule showing why meanwhile; every run's archive is downloaded and the chain
//! checked — consecutive ranges, each manifest naming the previous run's end and archive
//! SHA-256, every post of the log in exactly one archive — with one mail per run. The
//! schedule is created, listed, paused, resumed and deleted with `cce-admin`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as Span, DurationRound, Timelike, Utc};
use event_model::EventBody;
use proto::v1 as pb;
use proto::v1::compliance_export_service_client::ComplianceExportServiceClient;
use tests::exports::{TokenSpec, archived_post_ids, authed, create_topics, sha256, time};
use tests::faults_export::{Replica, SmtpSink};
use tests::{Stack, unique, wait_for};
use tonic::transport::Channel;

const DAY: i64 = 86_400;

/// Writes generated events dated from `from` to `to` straight into the log, as ingestion
/// would; returns the payloads.
async fn write_events(
    stack: &Stack,
    prefix: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Vec<u8>> {
    let now = Utc::now();
    let payloads: Vec<Vec<u8>> = loadgen::Generator::new(loadgen::Options {
        seed: 13,
        id_prefix: prefix.to_owned(),
        content_events: 1_500,
        start: from,
        span: to - from,
        ..loadgen::Options::default()
    })
    .map(|m| m.payload)
    .collect();
    let records: Vec<compliance_log::PendingRecord> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let (event, raw) =
                event_model::parse_event(payload, &event_model::Limits::default(), now).unwrap();
            compliance_log::PendingRecord {
                offset: i as i64,
                event,
                raw,
            }
        })
        .collect();
    let writer = compliance_log::V1Writer::new(Arc::new(stack.s3_store().await));
    for chunk in records.chunks(2_000) {
        let source = compliance_log::SourceRange {
            topic: "schedules-test".into(),
            partition: 0,
            first_offset: chunk[0].offset,
            last_offset: chunk[chunk.len() - 1].offset,
        };
        writer.write(&source, chunk).await.unwrap();
    }
    payloads
}

/// The archive's manifest.
fn manifest(bytes: &[u8]) -> serde_json::Value {
    let entries = archive::verify::read_entries(bytes).unwrap();
    let (_, content) = entries
        .iter()
        .find(|(name, _)| name.ends_with("/manifest.json"))
        .expect("a manifest.json");
    serde_json::from_slice(content).unwrap()
}

fn instant(value: &serde_json::Value) -> DateTime<Utc> {
    value.as_str().expect("a time").parse().unwrap()
}

async fn get_schedule(
    client: &mut ComplianceExportServiceClient<Channel>,
    token: &str,
    id: &str,
) -> pb::Schedule {
    client
        .get_schedule(authed(
            token,
            pb::GetScheduleRequest {
                schedule_id: id.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the schedule has completed `runs` runs.
async fn wait_runs(endpoint: &str, token: &str, id: &str, runs: u64) -> pb::Schedule {
    let mut client = tests::exports::client(endpoint).await;
    wait_for(
        &format!("schedule {id} to complete {runs} runs"),
        Duration::from_secs(90),
        || {
            let (mut client, token) = (client.clone(), token.to_owned());
            async move {
                let schedule = get_schedule(&mut client, &token, id).await;
                assert!(
                    schedule.runs_completed <= runs,
                    "more runs than due: {schedule:?}"
                );
                (schedule.runs_completed == runs).then_some(schedule)
            }
        },
    )
    .await;
    get_schedule(&mut client, token, id).await
}

/// The company's exports, oldest first.
async fn exports(endpoint: &str, token: &str) -> Vec<pb::ExportJob> {
    let mut client = tests::exports::client(endpoint).await;
    let mut jobs = client
        .list_exports(authed(
            token,
            pb::ListExportsRequest {
                page_size: 250,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    jobs.reverse();
    jobs
}

fn terminate(replica: &mut Replica) {
    let pid = replica.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daily_schedule_catches_up_after_a_restart_and_its_archives_chain() {
    let stack = Stack::from_env();
    let prefix = format!("{}-", unique("sched"));
    let company = format!("{prefix}acme");
    let now = Utc::now();
    // Daily at this hour (UTC), from four days ago: runs end at start + 1..=4 days, the last
    // at the top of the current hour.
    let start = (now - Span::days(4))
        .duration_trunc(Span::hours(1))
        .unwrap();
    let payloads = write_events(&stack, &prefix, start - Span::hours(2), now).await;
    let parse_time = Utc::now();
    let expected_posts: BTreeSet<String> = payloads
        .iter()
        .filter_map(|p| {
            let (event, _) =
                event_model::parse_event(p, &event_model::Limits::default(), parse_time).unwrap();
            let at = event.occurred_at.with_timezone(&Utc);
            let in_chain = start <= at && at < start + Span::days(4);
            match event.body {
                EventBody::PostCreated { post_id, .. }
                    if in_chain && event_model::route(&event).contains(&company) =>
                {
                    Some(post_id)
                }
                _ => None,
            }
        })
        .collect();
    assert!(expected_posts.len() > 50, "{}", expected_posts.len());

    let smtp = SmtpSink::start().await;
    let state_topic = unique("state");
    create_topics(&stack, &state_topic).await;
    let logs = tempfile::tempdir().unwrap();
    let cli = |endpoint: &str, token: &str, args: &[&str]| {
        tests::exports::admin_cli(endpoint, Some(token), args, logs.path())
    };
    let flags = [
        "--smtp-url",
        &smtp.url(),
        "--admin-url",
        "https://portal.test/exports",
    ];
    // Every replica signs with the same key, as a deployment's replicas do.
    let key = tests::exports::key_file(
        logs.path(),
        "archive-signing.pem",
        tests::exports::ACTIVE_ARCHIVE_KEY,
        0o600,
    );
    let key = key.to_str().unwrap().to_owned();
    let start_replica = |name: &str, env: &[(&str, &str)], extra: &[&str]| {
        let flags: Vec<&str> = flags
            .iter()
            .copied()
            .chain(["--archive-signing-key-files", key.as_str()])
            .chain(extra.iter().copied())
            .collect();
        Replica::start(&stack, &state_topic, &flags, env, &logs.path().join(name))
    };
    // The first replica's clock is two days behind: for it, only two runs are due.
    let behind = (-2 * DAY).to_string();
    let mut first = start_replica("first.log", &[("CCE_CLOCK_OFFSET_SECS", &behind)], &[]);
    let mut ann = TokenSpec::admin(&stack, &company, "ann");
    ann.email = Some("ann@acme.test".into());
    let ann = ann.sign();
    let mut client = tests::exports::client(&first.endpoint).await;
    client
        .enable_exports(authed(&ann, pb::EnableExportsRequest {}))
        .await
        .unwrap();

    // Created with cce-admin; a bad cadence is explained.
    let (ok, _, err) = cli(
        &first.endpoint,
        &ann,
        &["schedule", "create", "--cadence", "hourly", "--hour", "1"],
    );
    assert!(!ok && err.contains("daily, weekly or monthly"), "{err}");
    let (ok, _, err) = cli(
        &first.endpoint,
        &ann,
        &["schedule", "create", "--cadence", "daily", "--hour", "24"],
    );
    assert!(!ok && err.contains("0..=23"), "{err}");
    let hour = start.hour().to_string();
    let start_arg = start.to_rfc3339();
    let create = [
        "schedule",
        "create",
        "--cadence",
        "daily",
        "--hour",
        &hour,
        "--start",
        &start_arg,
        "--name",
        "nightly",
        "--request-id",
        "nightly-1",
    ];
    let (ok, out, err) = cli(&first.endpoint, &ann, &create);
    assert!(ok, "{err}");
    let id = out.split('\t').next().unwrap().trim().to_owned();
    assert!(out.contains("ACTIVE") && out.contains("daily at"), "{out}");
    // The same request id: the same schedule.
    let (ok, again, err) = cli(&first.endpoint, &ann, &create);
    assert!(ok && again.starts_with(&id), "{again} {err}");

    let schedule = wait_runs(&first.endpoint, &ann, &id, 2).await;
    assert_eq!(time(schedule.covered_until.as_ref()), start + Span::days(2));
    assert_eq!(time(schedule.next_run_at.as_ref()), start + Span::days(3));
    assert_eq!(
        exports(&first.endpoint, &ann).await.len(),
        2,
        "run 3 is not due yet"
    );

    // SIGTERM; then two replicas with the right clock: runs 3 and 4 are due, and are made
    // once each, in order.
    terminate(&mut first);
    wait_for("the first replica to stop", Duration::from_secs(30), || {
        let running = first.is_running();
        async move { (!running).then_some(()) }
    })
    .await;
    // Meanwhile ingestion is behind: the log is durable only until two days ago. Run 3 covers
    // a range that ended a day ago, yet it waits for everything published before it was made;
    // and fails after the replicas' wait (12 s), to be made again once the backoff has passed.
    let events = format!("{state_topic}-events");
    let durable = start + Span::days(2);
    let behind = [(0, 0, Some(durable)), (1, 0, Some(durable))];
    tests::put_watermarks(&stack, &events, 2, &behind).await;
    let wait = ["--ingest-wait-secs", "12"];
    let second = start_replica("second.log", &[], &wait);
    let third = start_replica("third.log", &[], &wait);
    let waiting = wait_for(
        "run 3 to wait for ingestion",
        Duration::from_secs(60),
        || {
            let (endpoint, ann) = (second.endpoint.clone(), ann.clone());
            async move {
                let jobs = exports(&endpoint, &ann).await;
                jobs.get(2)
                    .filter(|job| {
                        job.progress
                            .as_ref()
                            .is_some_and(|p| p.detail.contains("waiting for ingestion"))
                    })
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(waiting.schedule_run, 3, "{waiting:?}");
    let progress = waiting.progress.unwrap();
    assert_eq!(time(progress.log_durable_until.as_ref()), durable);
    let mut client = tests::exports::client(&second.endpoint).await;
    let failed = tests::exports::wait_job(
        &mut client,
        &ann,
        &waiting.id,
        "failed",
        Duration::from_secs(60),
        tests::exports::is(pb::ExportStatus::Failed),
    )
    .await;
    let schedule = get_schedule(&mut client, &ann, &id).await;
    assert_eq!(schedule.runs_completed, 2);
    assert_eq!(schedule.last_job_id, failed.id);
    assert!(
        schedule.last_error.contains("waiting for ingestion"),
        "{schedule:?}"
    );
    // Tried again a minute after the failure, over the same range.
    assert_eq!(
        time(schedule.next_run_at.as_ref()),
        time(failed.finished_at.as_ref()) + Span::minutes(1)
    );
    // Ingestion catches up: run 3 is made again and completes, then run 4.
    let forever = DateTime::<Utc>::MAX_UTC;
    let caught_up = [(0, 0, Some(forever)), (1, 0, Some(forever))];
    tests::put_watermarks(&stack, &events, 2, &caught_up).await;
    let schedule = wait_runs(&second.endpoint, &ann, &id, 4).await;
    assert_eq!(time(schedule.covered_until.as_ref()), start + Span::days(4));
    assert_eq!(time(schedule.next_run_at.as_ref()), start + Span::days(5));
    assert_eq!(schedule.last_error, "");

    let all = exports(&third.endpoint, &ann).await;
    assert_eq!(
        all.len(),
        5,
        "one export per run, and run 3 again: {all:#?}"
    );
    let retried = &all[3];
    assert_eq!(retried.schedule_run, 3);
    assert_eq!(retried.request, failed.request, "the same range");
    assert!(
        time(retried.created_at.as_ref()) >= time(failed.finished_at.as_ref()) + Span::minutes(1),
        "made again only after the backoff: {retried:?}"
    );
    let jobs: Vec<pb::ExportJob> = all.iter().filter(|j| j.id != failed.id).cloned().collect();
    let mut previous: Option<(DateTime<Utc>, String, DateTime<Utc>)> = None;
    let mut union = BTreeSet::new();
    let mut archived = 0;
    for (k, job) in (1u64..).zip(&jobs) {
        assert_eq!(
            (job.schedule_id.as_str(), job.schedule_run),
            (id.as_str(), k)
        );
        assert_eq!(job.status, pb::ExportStatus::Completed as i32, "{job:?}");
        let request = job.request.as_ref().unwrap();
        let k_days = i64::try_from(k).unwrap();
        assert_eq!(time(request.from.as_ref()), start + Span::days(k_days - 1));
        assert_eq!(time(request.to.as_ref()), start + Span::days(k_days));
        let mut client = client_for(&third.endpoint).await;
        let (_, bytes) = tests::exports::download(&mut client, &ann, &job.id).await;
        assert_eq!(sha256(&bytes), job.archive_sha256);
        std::fs::write(logs.path().join(format!("run-{k}.zip")), &bytes).unwrap();
        let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let manifest = manifest(&bytes);
        let link = &manifest["schedule"];
        assert_eq!(link["schedule_id"], id.as_str());
        assert_eq!(link["run"], k);
        let from = instant(&manifest["request"]["from"]);
        let to = instant(&manifest["request"]["to"]);
        match &previous {
            None => assert!(link["previous"].is_null(), "{link}"),
            Some((previous_to, previous_sha, previous_finished)) => {
                assert_eq!(instant(&link["previous"]["to"]), *previous_to);
                assert_eq!(
                    from,
                    *previous_to,
                    "run {k} starts where run {} ended",
                    k - 1
                );
                assert_eq!(link["previous"]["archive_sha256"], previous_sha.as_str());
                // Made only once the previous run had completed.
                assert!(
                    time(job.created_at.as_ref()) >= *previous_finished,
                    "{job:?}"
                );
            }
        }
        previous = Some((to, sha256(&bytes), time(job.finished_at.as_ref())));
        let posts = archived_post_ids(&bytes);
        archived += posts.len();
        union.extend(posts);
    }
    assert_eq!(archived, union.len(), "a post in two archives");

    // What an auditor does with nothing but the archives and the published public key.
    let (ok, out, err) = cli(&third.endpoint, &ann, &["keys", "-o", "keys"]);
    assert!(ok, "{out}{err}");
    let runs: Vec<String> = (1..=jobs.len()).map(|k| format!("run-{k}.zip")).collect();
    let mut verify: Vec<&str> = vec!["verify"];
    verify.extend(runs.iter().map(String::as_str));
    verify.extend(["--public-key", "keys"]);
    let (ok, out, err) = cli(&third.endpoint, &ann, &verify);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("covers every instant exactly once"),
        "{out}{err}"
    );
    assert_eq!(
        out.matches("signature of key").count(),
        jobs.len(),
        "every archive's signature checked: {out}"
    );
    // Without run 2 the chain has a gap, and verify says so.
    let without_two: Vec<&str> = verify
        .iter()
        .copied()
        .filter(|a| *a != "run-2.zip")
        .collect();
    let (ok, out, err) = cli(&third.endpoint, &ann, &without_two);
    assert!(!ok, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("does NOT cover every instant exactly once"),
        "{out}{err}"
    );
    let missing: Vec<_> = expected_posts.difference(&union).collect();
    let extra: Vec<_> = union.difference(&expected_posts).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );

    // One mail per export (the failed one's too).
    for job in &all {
        let id = job.id.clone();
        wait_for(
            &format!("the mail about {id}"),
            Duration::from_secs(60),
            || {
                let mails = smtp.mails_about(&id);
                async move { (mails >= 1).then_some(()) }
            },
        )
        .await;
        assert_eq!(smtp.mails_about(&job.id), 1, "{}", job.id);
    }

    // Another company sees nothing of it.
    let gus = TokenSpec::admin(&stack, &format!("{prefix}globex"), "gus").sign();
    let mut client = client_for(&second.endpoint).await;
    client
        .enable_exports(authed(&gus, pb::EnableExportsRequest {}))
        .await
        .unwrap();
    let hidden = client
        .get_schedule(authed(
            &gus,
            pb::GetScheduleRequest {
                schedule_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    let (ok, _, err) = cli(&second.endpoint, &gus, &["schedule", "pause", &id]);
    assert!(!ok && err.contains("no schedule"), "{err}");

    // Pause, resume and delete with cce-admin, each audited.
    for (verb, state) in [
        ("pause", "PAUSED"),
        ("resume", "ACTIVE"),
        ("delete", "DELETED"),
    ] {
        let (ok, out, err) = cli(&third.endpoint, &ann, &["schedule", verb, &id]);
        assert!(ok && out.contains(state), "{verb}: {out} {err}");
    }
    let (ok, out, err) = cli(&second.endpoint, &ann, &["schedule", "list"]);
    assert!(
        ok && out.starts_with(&id) && out.contains("DELETED"),
        "{out} {err}"
    );
    let (ok, _, err) = cli(&second.endpoint, &ann, &["schedule", "resume", &id]);
    assert!(!ok && err.contains("deleted"), "{err}");
    let audit = client
        .list_audit_events(authed(
            &ann,
            pb::ListAuditEventsRequest {
                page_size: 250,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = audit
        .iter()
        .rev()
        .map(|e| e.action.as_str())
        .filter(|a| a.starts_with("schedule"))
        .collect();
    assert_eq!(
        actions,
        [
            "schedule_created",
            "schedule_run",
            "schedule_run",
            "schedule_run",
            "schedule_run",
            "schedule_run",
            "schedule_paused",
            "schedule_resumed",
            "schedule_deleted"
        ]
    );
    assert!(
        audit
            .iter()
            .filter(|e| e.action == "schedule_run")
            .all(|e| e.actor_id == "service")
    );
    let retry = audit
        .iter()
        .find(|e| e.action == "schedule_run" && e.subject == retried.id)
        .unwrap();
    assert_eq!(retry.details["run"], "3");
    assert_eq!(retry.details["try"], "2");
    drop((second, third));
}

async fn client_for(endpoint: &str) -> ComplianceExportServiceClient<Channel> {
    tests::exports::client(endpoint).await
}
