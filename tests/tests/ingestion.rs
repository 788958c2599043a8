//! Ingestion against the real broker and store: what is produced is read back from the
//! compliance log exactly — no loss, no duplicates — through restarts, rebalances and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compliance_log::LogReader;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use telemetry::CancellationToken;
use tests::{Stack, expected_by_company, ingestion_config, kafka, log_event_ids, unique, wait_for};

struct Topics {
    events: String,
    dlq: String,
    group: String,
}

async fn topics(stack: &Stack, partitions: i32) -> Topics {
    let t = Topics {
        events: unique("events"),
        dlq: unique("dlq"),
        group: unique("group"),
    };
    kafka::create_topic(stack, &t.events, partitions).await;
    kafka::create_topic(stack, &t.dlq, 1).await;
    t
}

/// Starts an in-process ingestion instance on the test's topics and group.
async fn start_instance(
    stack: &Stack,
    t: &Topics,
    flags: &[&str],
) -> (CancellationToken, ingestion::Running) {
    let stop = CancellationToken::new();
    let config = ingestion_config(stack, &t.events, &t.dlq, &t.group, flags);
    (stop.clone(), ingestion::start(config, stop).await.unwrap())
}

fn generated(prefix: &str, content_events: u64) -> Vec<(String, Vec<u8>)> {
    loadgen::Generator::new(loadgen::Options {
        seed: 7,
        id_prefix: prefix.to_owned(),
        content_events,
        ..loadgen::Options::default()
    })
    .map(|m| (m.key, m.payload))
    .collect()
}

async fn reader(stack: &Stack) -> LogReader {
    LogReader::new(Arc::new(stack.s3_store().await))
}

/// Waits until every company's log holds exactly the expected ids (and nothing else).
async fn assert_log_matches(stack: &Stack, messages: &[(String, Vec<u8>)], deadline: Duration) {
    let expected = expected_by_company(messages.iter().map(|(_, p)| p.clone()));
    let reader = reader(stack).await;
    for (company, ids) in &expected {
        let got = wait_for(&format!("company {company}'s log"), deadline, || async {
            let got = log_event_ids(&reader, company).await;
            (got.len() >= ids.len()).then_some(got)
        })
        .await;
        let missing: Vec<_> = ids.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(ids).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{company}: missing {missing:?}, extra {extra:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_history_is_read_back_exactly_and_offsets_are_committed() {
    let stack = Stack::from_env();
    let t = topics(&stack, 4).await;
    let prefix = format!("{}-", unique("rt"));
    let messages = generated(&prefix, 3_000);
    kafka::produce(&kafka::producer(&stack), &t.events, &messages).await;

    let shutdown = CancellationToken::new();
    let config = ingestion_config(
        &stack,
        &t.events,
        &t.dlq,
        &t.group,
        &["--flush-interval-ms", "300"],
    );
    let running = ingestion::start(config, shutdown.clone()).await.unwrap();
    assert_log_matches(&stack, &messages, Duration::from_secs(90)).await;

    let metrics = reqwest::get(format!("http://{}/metrics", running.ops_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "cce_ingest_events_consumed_total {}",
            messages.len()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("cce_ingest_events_appended_total{type=\"post.created\"}"));
    let ready = reqwest::get(format!("http://{}/readyz", running.ops_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    shutdown.cancel();
    running.task.await.unwrap().unwrap();
    // Every partition's committed offset is at its end: nothing will be consumed twice.
    let (brokers, group, topic) = (
        stack.kafka_brokers().to_owned(),
        t.group.clone(),
        t.events.clone(),
    );
    let committed = tokio::task::spawn_blocking(move || {
        ingestion::consumer::committed_offsets(&brokers, &group, &topic, 4)
    })
    .await
    .unwrap()
    .unwrap();
    let total: i64 = committed.iter().map(|o| o.to_raw().unwrap_or(0)).sum();
    assert_eq!(total, messages.len() as i64, "committed {committed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_is_durable_in_the_log_within_five_seconds_by_default() {
    let stack = Stack::from_env();
    let t = topics(&stack, 1).await;
    let shutdown = CancellationToken::new();
    let running = ingestion::start(
        ingestion_config(&stack, &t.events, &t.dlq, &t.group, &[]),
        shutdown.clone(),
    )
    .await
    .unwrap();
    // Let the consumer join its group before the clock starts.
    let company = unique("flush");
    let warmup = person_event(&company, "warmup");
    kafka::produce(&kafka::producer(&stack), &t.events, &[warmup]).await;
    let reader = reader(&stack).await;
    wait_for("the warm-up event", Duration::from_secs(60), || async {
        (!log_event_ids(&reader, &company).await.is_empty()).then_some(())
    })
    .await;

    let produced = Instant::now();
    kafka::produce(
        &kafka::producer(&stack),
        &t.events,
        &[person_event(&company, "timed")],
    )
    .await;
    wait_for_event(
        &reader,
        &company,
        "timed",
        "the timed event within 5 s",
        Duration::from_secs(5),
    )
    .await;
    eprintln!("durable {:?} after it was produced", produced.elapsed());
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

/// Waits until `<company>-<suffix>` is in the company's log.
async fn wait_for_event(
    reader: &LogReader,
    company: &str,
    suffix: &str,
    what: &str,
    deadline: Duration,
) {
    let id = format!("{company}-{suffix}");
    wait_for(what, deadline, || async {
        log_event_ids(reader, company)
            .await
            .contains(&id)
            .then_some(())
    })
    .await;
}

fn person_event(company: &str, suffix: &str) -> (String, Vec<u8>) {
    let event = serde_json::json!({
        "event_id": format!("{company}-{suffix}"), "type": "person.updated",
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "person": {"id": format!("{company}-u1"), "company_id": company, "name": "Zoë", "email": "z@x"}
    });
    (format!("{company}-u1"), serde_json::to_vec(&event).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_goes_to_the_dead_letter_topic_with_bytes_headers_and_reason() {
    let stack = Stack::from_env();
    let t = topics(&stack, 1).await;
    let company = unique("dlq");
    let good = person_event(&company, "good");
    let oversized = format!("{{\"pad\": \"{}\"}}", "x".repeat(3000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"{not json".to_vec()),
        ("invalid_utf8", b"{\"type\": \"\xff\xfe\"}".to_vec()),
        ("unknown_type", br#"{"event_id":"x1","type":"post.liked","occurred_at":"2026-01-01T00:00:00Z"}"#.to_vec()),
        ("missing_field", br#"{"event_id":"x2","type":"person.created","occurred_at":"2026-01-01T00:00:00Z"}"#.to_vec()),
        (
            "invalid_field",
            br#"{"event_id":"x3","type":"person.created","occurred_at":"2026-01-01T00:00:00Z","person":{"id":1,"company_id":"a","name":"n","email":"e"}}"#.to_vec(),
        ),
        (
            "timestamp_out_of_range",
            br#"{"event_id":"x4","type":"person.created","occurred_at":"1970-01-01T00:00:00Z","person":{"id":"u","company_id":"a","name":"n","email":"e"}}"#.to_vec(),
        ),
        ("oversized", oversized.into_bytes()),
    ];
    let producer = kafka::producer(&stack);
    for (i, (_, payload)) in cases.iter().enumerate() {
        let index = i.to_string();
        producer
            .send(
                FutureRecord::to(&t.events)
                    .key("bad")
                    .payload(payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "trace-id",
                        value: Some(&index),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    kafka::produce(&producer, &t.events, std::slice::from_ref(&good)).await;

    let shutdown = CancellationToken::new();
    let config = ingestion_config(
        &stack,
        &t.events,
        &t.dlq,
        &t.group,
        &["--max-event-bytes", "2048", "--flush-interval-ms", "200"],
    );
    let running = ingestion::start(config, shutdown.clone()).await.unwrap();

    let dead = kafka::consume(&stack, &t.dlq, cases.len(), Duration::from_secs(60)).await;
    for (i, ((reason, payload), message)) in cases.iter().zip(&dead).enumerate() {
        assert_eq!(
            message.payload(),
            Some(payload.as_slice()),
            "case {reason}: original bytes"
        );
        assert_eq!(message.key(), Some(b"bad".as_slice()));
        let headers = message.headers().expect("headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| panic!("case {reason}: no header {name}"))
        };
        assert_eq!(header("trace-id"), i.to_string(), "original header kept");
        assert_eq!(header("cce-dlq-reason"), *reason);
        assert!(!header("cce-dlq-detail").is_empty());
        assert_eq!(header("cce-dlq-source-topic"), t.events);
        assert_eq!(header("cce-dlq-source-partition"), "0");
        assert_eq!(header("cce-dlq-source-offset"), i.to_string());
    }
    // Ingestion carried on past the bad input.
    let reader = reader(&stack).await;
    wait_for_event(
        &reader,
        &company,
        "good",
        "the good event after the bad ones",
        Duration::from_secs(30),
    )
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", running.ops_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, _) in &cases {
        assert!(
            metrics.contains(&format!(
                "cce_ingest_dead_lettered_total{{reason=\"{reason}\"}} 1"
            )),
            "metric for {reason}: {metrics}"
        );
    }
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_through_a_rebalance_lose_and_double_nothing() {
    let stack = Stack::from_env();
    let t = topics(&stack, 4).await;
    let prefix = format!("{}-", unique("rb"));
    let messages = generated(&prefix, 6_000);
    let (first, second) = messages.split_at(messages.len() / 2);
    let producer = kafka::producer(&stack);
    kafka::produce(&producer, &t.events, first).await;

    let flags = [
        "--flush-interval-ms",
        "300",
        "--session-timeout-ms",
        "10000",
        "--drain-deadline-ms",
        "5000",
    ];
    let (stop_a, a) = start_instance(&stack, &t, &flags).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // B joins: the group rebalances while A is mid-stream.
    let (stop_b, b) = start_instance(&stack, &t, &flags).await;
    kafka::produce(&producer, &t.events, second).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A leaves gracefully: its partitions are drained and handed to B.
    stop_a.cancel();
    a.task.await.unwrap().unwrap();

    assert_log_matches(&stack, &messages, Duration::from_secs(120)).await;
    stop_b.cancel();
    b.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_from_an_independent_python_client_are_ingested_intact() {
    let stack = Stack::from_env();
    let python = std::env::var("CCE_PYTHON")
        .expect("CCE_PYTHON (set by deploy/local/test.sh) names the venv's python");
    let t = topics(&stack, 2).await;
    let company = unique("py");
    let script = r#"
import json, sys
from kafka import KafkaProducer
brokers, topic, company = sys.argv[1:4]
producer = KafkaProducer(bootstrap_servers=brokers, acks="all")
conv = {"id": company + "-c1", "kind": "direct", "owner_company_id": company,
        "member_company_ids": [company, company + "-other"]}
events = [
  {"event_id": company + "-1", "type": "conversation.created", "occurred_at": "2026-03-01T09:00:00+02:00",
   "conversation": conv, "created_by": "u1",
   "members": [{"person_id": "u1", "company_id": company, "name": "Łukasz Żółw", "email": "l@x"},
               {"person_id": "u2", "company_id": company + "-other", "name": "Søren", "email": "s@y"}]},
  {"event_id": company + "-2", "type": "post.created", "occurred_at": "2026-03-01T09:01:00+02:00",
   "conversation": conv, "post_id": "p1", "author_id": "u1", "text": "Grüße 👋 — «ok»", "client": "kafka-python"},
  {"event_id": company + "-3", "type": "post.edited", "occurred_at": "2026-03-01T09:02:00+02:00",
   "conversation": conv, "post_id": "p1", "editor_id": "u1", "text": "Grüße 👋 (edited)"},
]
for e in events:
    producer.send(topic, key=conv["id"].encode(), value=json.dumps(e, ensure_ascii=False).encode("utf-8"))
producer.flush()
"#;
    let status = tokio::process::Command::new(&python)
        .args(["-c", script, stack.kafka_brokers(), &t.events, &company])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kafka-python producer failed");

    let shutdown = CancellationToken::new();
    let running = ingestion::start(
        ingestion_config(
            &stack,
            &t.events,
            &t.dlq,
            &t.group,
            &["--flush-interval-ms", "200"],
        ),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let reader = reader(&stack).await;
    let expected: BTreeSet<String> = (1..=3).map(|i| format!("{company}-{i}")).collect();
    for owner in [company.clone(), format!("{company}-other")] {
        let got = wait_for(
            "the python client's events",
            Duration::from_secs(30),
            || async {
                let ids = log_event_ids(&reader, &owner).await;
                (ids.len() >= 3).then_some(ids)
            },
        )
        .await;
        assert_eq!(
            got, expected,
            "a direct chat across companies lands in both logs"
        );
    }
    let mut cursor = reader.events(
        &company,
        "2026-03-01T00:00:00Z".parse().unwrap(),
        "2026-03-02T00:00:00Z".parse().unwrap(),
    );
    let hour = cursor.next_hour().await.unwrap().expect("the posts' hour");
    let raw = hour[0].raw_value();
    assert_eq!(raw["text"], "Grüße 👋 — «ok»");
    assert_eq!(raw["client"], "kafka-python", "unknown fields are kept");
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

/// Waits until the group's committed offsets cover `total` messages across `partitions`.
async fn wait_committed(
    stack: &Stack,
    t: &Topics,
    partitions: i32,
    total: usize,
    deadline: Duration,
) {
    wait_for("offsets committed to the end", deadline, || async {
        let (brokers, group, topic) = (
            stack.kafka_brokers().to_owned(),
            t.group.clone(),
            t.events.clone(),
        );
        let committed = tokio::task::spawn_blocking(move || {
            ingestion::consumer::committed_offsets(&brokers, &group, &topic, partitions)
        })
        .await
        .unwrap()
        .ok()?;
        let sum: i64 = committed
            .iter()
            .map(|o| o.to_raw().unwrap_or(0).max(0))
            .sum();
        (sum == total as i64).then_some(())
    })
    .await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A counter's value in a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_and_restart_loses_and_doubles_nothing() {
    let stack = Stack::from_env();
    let t = topics(&stack, 4).await;
    let prefix = format!("{}-", unique("kill"));
    let messages = generated(&prefix, 12_000);
    let producer = kafka::producer(&stack);
    // A short session timeout, so the group evicts each killed member quickly.
    let flags = [
        "--flush-interval-ms",
        "300",
        "--session-timeout-ms",
        "6000",
        "--drain-deadline-ms",
        "3000",
    ];
    let log_dir = std::env::temp_dir().join(&t.group);
    std::fs::create_dir_all(&log_dir).unwrap();
    let spawn = |run: usize, ops: u16| {
        let ops = format!("127.0.0.1:{ops}");
        let flags = [&flags[..], &["--ops-addr", &ops]].concat();
        let args = tests::ingestion_args(&stack, &t.events, &t.dlq, &t.group, &flags);
        let log = std::fs::File::create(log_dir.join(format!("run-{run}.log"))).unwrap();
        tokio::process::Command::new(tests::binary("cce-ingestion"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start cce-ingestion")
    };
    eprintln!("ingestion logs: {}", log_dir.display());
    // Four runs, each fed a fresh chunk and killed with SIGKILL once it has written part of it.
    let chunks: Vec<_> = messages.chunks(messages.len() / 4 + 1).collect();
    for (run, chunk) in chunks.iter().enumerate() {
        kafka::produce(&producer, &t.events, chunk).await;
        let ops = free_port();
        let mut child = spawn(run, ops);
        let metrics = format!("http://127.0.0.1:{ops}/metrics");
        wait_for(
            "the run to write some of its chunk",
            Duration::from_secs(60),
            || async {
                let page = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
                (metric(&page, "cce_ingest_log_objects_written_total") > 0.0).then_some(())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(150 * run as u64)).await;
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "run {run} should have died by SIGKILL");
        // tansu does not rebalance when a dead member's session expires, so a member joining
        // before then would be assigned nothing for good (docs/servers.md): wait it out.
        tokio::time::sleep(Duration::from_secs(7)).await;
    }
    // A last run finishes the backlog and stops gracefully on SIGTERM.
    let child = spawn(chunks.len(), free_port());
    wait_committed(&stack, &t, 4, messages.len(), Duration::from_secs(120)).await;
    assert_log_matches(&stack, &messages, Duration::from_secs(30)).await;
    let pid = child.id().expect("pid").to_string();
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(term.success());
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "graceful exit after SIGTERM: {:?}",
        output.status
    );
}

/// A test that panics with an in-process ingestion instance running drops its runtime midway.
/// The consumer's close then revokes its partitions: that must not block on the runtime going
/// away (it used to hang the test process instead of failing it).
#[test]
fn dropping_the_runtime_mid_stream_does_not_hang() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let stack = Stack::from_env();
            let t = topics(&stack, 2).await;
            let messages = generated(&unique("abandon"), 200);
            kafka::produce(&kafka::producer(&stack), &t.events, &messages).await;
            // A long flush interval: the events stay buffered when the runtime goes away.
            let (_stop, running) =
                start_instance(&stack, &t, &["--flush-interval-ms", "600000"]).await;
            wait_for("events buffered", Duration::from_secs(30), || async {
                let page = reqwest::get(format!("http://{}/metrics", running.ops_addr))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                (metric(&page, "cce_ingest_events_consumed_total") >= 100.0).then_some(())
            })
            .await;
        });
        let dropping = Instant::now();
        drop(runtime);
        done_tx.send(dropping.elapsed()).unwrap();
    });
    let took = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("dropping the runtime hung");
    assert!(took < Duration::from_secs(30), "dropping took {took:?}");
}
