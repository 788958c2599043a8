//! Ingestion into log format v2 against the real broker and store: a flush costs one segment
//! and at most one pointer PUT however many companies it touched; a re-created topic begins a
//! new epoch and leaves every object of the old one byte for byte; SIGKILL mid-stream and a
//! restart lose and double nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use compliance_log::Watermark;
use compliance_log::v2::epoch::EpochMarker;
use compliance_log::v2::{keys, segment};
use storage::{ObjectStore, S3Store, list_all};
use telemetry::CancellationToken;
use tests::{Stack, expected_by_company, ingestion_config, kafka, unique, wait_for};

struct Topics {
    events: String,
    dlq: String,
    group: String,
}

async fn topics(stack: &Stack, partitions: i32) -> Topics {
    let t = Topics {
        events: unique("v2events"),
        dlq: unique("v2dlq"),
        group: unique("v2group"),
    };
    kafka::create_topic(stack, &t.events, partitions).await;
    kafka::create_topic(stack, &t.dlq, 1).await;
    t
}

/// A post in a team conversation of `company`, now.
fn post(company: &str, id: &str) -> (String, Vec<u8>) {
    let event = serde_json::json!({
        "event_id": id, "type": "post.created", "occurred_at": chrono::Utc::now().to_rfc3339(),
        "conversation": {"id": format!("{company}-c1"), "kind": "team", "owner_company_id": company},
        "post_id": id, "author_id": format!("{company}-u1"), "text": format!("text of {id}")
    });
    (format!("{company}-c1"), serde_json::to_vec(&event).unwrap())
}

/// `count` posts spread evenly over `companies` companies named `<prefix>co<i>`.
fn posts(prefix: &str, companies: usize, count: usize, tag: &str) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let company = format!("{prefix}co{}", i % companies);
            post(&company, &format!("{company}-{tag}-{i}"))
        })
        .collect()
}

/// Every object under `prefix`, with its bytes.
async fn objects(store: &S3Store, prefix: &str) -> BTreeMap<String, Bytes> {
    let mut all = BTreeMap::new();
    for object in list_all(store, prefix).await.unwrap() {
        all.insert(object.key.clone(), store.get(&object.key).await.unwrap());
    }
    all
}

/// What the topic's segments hold: event ids by company (deduplicated by event id, as the
/// reader does, failing on a record two segments of one epoch disagree about), and how many
/// segments there are.
async fn segment_contents(
    store: &S3Store,
    topic: &str,
) -> (BTreeMap<String, BTreeSet<String>>, usize) {
    let segments = objects(store, &format!("{}segments/{topic}/", keys::ROOT)).await;
    let mut by_company: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // (epoch, partition, offset) → event id: a replayed range must hold the same events.
    let mut at: BTreeMap<(u32, i32, i64), String> = BTreeMap::new();
    for (key, bytes) in &segments {
        let (header, companies) = segment::decode(key, bytes).unwrap();
        for (company, records) in companies {
            for record in records {
                let id = record.event.event_id.clone();
                let place = (header.epoch, record.partition, record.offset);
                if let Some(seen) = at.insert(place, id.clone()) {
                    assert_eq!(seen, id, "{key}: offset {place:?} holds another event");
                }
                by_company.entry(company.clone()).or_default().insert(id);
            }
        }
    }
    (by_company, segments.len())
}

/// The topic's pointers, by partition.
async fn pointers(store: &S3Store, topic: &str) -> BTreeMap<i32, Watermark> {
    Watermark::read_all(store, topic)
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.partition, w))
        .collect()
}

/// Waits until the pointers of `partitions` partitions say `total` offsets are durable.
async fn wait_durable(store: &S3Store, topic: &str, partitions: usize, total: i64, what: &str) {
    wait_for(what, Duration::from_secs(120), || async {
        let pointers = Watermark::read_all(store, topic).await.ok()?;
        let sum: i64 = pointers.iter().map(|w| w.durable_offset).sum();
        (pointers.len() == partitions && sum >= total).then_some(())
    })
    .await;
}

async fn metrics_page(ops: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A sample's value in a Prometheus text page (`name` includes any labels).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// What the PUT metrics say: (flushes, flushes with at most 2 PUTs, segments, pointer PUTs).
fn put_counts(page: &str) -> (f64, f64, f64, f64) {
    (
        metric(page, "cce_log_puts_per_flush_count"),
        metric(page, "cce_log_puts_per_flush_bucket{le=\"2\"}"),
        metric(page, "cce_log_objects_written_total{kind=\"segment\"}"),
        metric(page, "cce_log_objects_written_total{kind=\"watermark\"}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_per_flush_do_not_depend_on_how_many_companies_chat() {
    let stack = Stack::from_env();
    let store = stack.s3_store().await;
    let t = topics(&stack, 2).await;
    let prefix = format!("{}-", unique("many"));
    let shutdown = CancellationToken::new();
    let running = ingestion::start(
        ingestion_config(
            &stack,
            &t.events,
            &t.dlq,
            &t.group,
            &["--flush-interval-ms", "1000"],
        ),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let producer = kafka::producer(&stack);
    let mut produced = 0;
    let mut before = put_counts(&metrics_page(running.ops_addr).await);
    let mut segments_before = 0;
    let mut all = Vec::new();
    for (round, companies) in [10, 500].into_iter().enumerate() {
        let batch = posts(&prefix, companies, 2_000, &format!("r{round}"));
        kafka::produce(&producer, &t.events, &batch).await;
        produced += batch.len() as i64;
        all.extend(batch);
        wait_durable(&store, &t.events, 2, produced, "the round to be durable").await;
        let after = put_counts(&metrics_page(running.ops_addr).await);
        let (flushes, small, segments, _) = (
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            after.3 - before.3,
        );
        eprintln!("{companies} companies: {flushes} flushes, {segments} segments");
        assert!(flushes >= 1.0, "{companies} companies: no flush counted");
        assert_eq!(
            small, flushes,
            "{companies} companies: a flush made more than 2 PUTs"
        );
        assert!(
            segments <= flushes,
            "{companies} companies: {segments} segments for {flushes} flushes"
        );
        // The store agrees: one segment object per segment counted, each naming its companies.
        let (by_company, in_store) = segment_contents(&store, &t.events).await;
        assert_eq!(
            (in_store - segments_before) as f64,
            segments,
            "{companies} companies: segments in the store vs the metric"
        );
        segments_before = in_store;
        let touched = by_company.keys().filter(|c| c.starts_with(&prefix)).count();
        assert!(touched >= companies, "{touched} companies in the segments");
        before = after;
    }
    // Nothing else was written: segments, one pointer and one epoch marker per partition, and
    // no object of format 1 for these companies.
    let log = objects(&store, keys::ROOT).await;
    let ours: Vec<&String> = log.keys().filter(|k| k.contains(&t.events)).collect();
    assert_eq!(ours.len(), segments_before + 2 + 2, "{ours:#?}");
    let v1 = list_all(&store, &format!("log/v1/{prefix}")).await.unwrap();
    assert!(v1.is_empty(), "format 1 objects written: {v1:?}");
    // Everything produced is there, each company's own events only.
    let (by_company, _) = segment_contents(&store, &t.events).await;
    let expected = expected_by_company(all.iter().map(|(_, p)| p.clone()));
    for (company, ids) in &expected {
        assert_eq!(by_company.get(company), Some(ids), "{company}");
    }
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

/// Runs kafka-python's admin client: deletes `topic` and creates it again with `partitions`.
async fn recreate_topic(stack: &Stack, topic: &str, partitions: i32) {
    let python = std::env::var("CCE_PYTHON")
        .expect("CCE_PYTHON (set by deploy/local/test.sh) names the venv's python");
    let script = r#"
import sys, time
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
brokers, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = KafkaAdminClient(bootstrap_servers=brokers)
admin.delete_topics([topic])
deadline = time.time() + 60
while True:
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
        break
    except TopicAlreadyExistsError:
        # Deletion completes in the background.
        if time.time() > deadline:
            raise
        time.sleep(0.5)
"#;
    let output = tokio::process::Command::new(&python)
        .args([
            "-c",
            script,
            stack.kafka_brokers(),
            topic,
            &partitions.to_string(),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "kafka-python re-creating {topic}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recreated_topic_begins_a_new_epoch_and_leaves_the_old_one_byte_for_byte() {
    let stack = Stack::from_env();
    let store = stack.s3_store().await;
    let t = topics(&stack, 1).await;
    let prefix = format!("{}-", unique("epoch"));
    let flags = ["--flush-interval-ms", "300"];
    let producer = kafka::producer(&stack);

    let first = posts(&prefix, 5, 300, "first");
    kafka::produce(&producer, &t.events, &first).await;
    let shutdown = CancellationToken::new();
    let running = ingestion::start(
        ingestion_config(&stack, &t.events, &t.dlq, &t.group, &flags),
        shutdown.clone(),
    )
    .await
    .unwrap();
    wait_durable(&store, &t.events, 1, 300, "the first history").await;
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
    let epoch_one = |all: &BTreeMap<String, Bytes>| -> BTreeMap<String, Bytes> {
        all.iter()
            .filter(|(k, _)| {
                k.starts_with(&keys::segments_prefix(&t.events, 0, 1))
                    || *k == &keys::epoch_key(&t.events, 0, 1)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let before = epoch_one(&objects(&store, keys::ROOT).await);
    assert!(
        before.len() >= 2,
        "a marker and segments: {:?}",
        before.keys()
    );

    // The topic is re-created: offsets restart at 0, with other events. More of them than
    // before, so the group's committed offset (300) is inside the new history: only the epoch
    // rules (the record at 299 differs) keep ingestion from skipping the new offsets 0..299.
    recreate_topic(&stack, &t.events, 1).await;
    let second = posts(&prefix, 5, 450, "second");
    kafka::produce(&producer, &t.events, &second).await;
    let shutdown = CancellationToken::new();
    let running = ingestion::start(
        ingestion_config(&stack, &t.events, &t.dlq, &t.group, &flags),
        shutdown.clone(),
    )
    .await
    .unwrap();
    wait_for("epoch 2's pointer", Duration::from_secs(120), || async {
        let w = Watermark::read(&store, &t.events, 0).await.ok()??;
        (w.epoch == 2 && w.durable_offset >= 450).then_some(())
    })
    .await;
    shutdown.cancel();
    running.task.await.unwrap().unwrap();

    let marker = EpochMarker::latest(&store, &t.events, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((marker.epoch, marker.start_offset), (2, 0));
    assert_eq!(marker.reason, "record differs");
    assert_eq!(
        marker.previous.map(|p| (p.epoch, p.durable_offset)),
        Some((1, 300))
    );
    let after = objects(&store, keys::ROOT).await;
    assert_eq!(
        epoch_one(&after),
        before,
        "every object of epoch 1, byte for byte"
    );
    let (by_company, _) = segment_contents(&store, &t.events).await;
    let mut expected = expected_by_company(first.iter().map(|(_, p)| p.clone()));
    for (company, ids) in expected_by_company(second.iter().map(|(_, p)| p.clone())) {
        expected.entry(company).or_default().extend(ids);
    }
    assert_eq!(by_company, expected, "both histories, whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_between_segments_and_restart_loses_and_doubles_nothing() {
    let stack = Stack::from_env();
    let store = stack.s3_store().await;
    let t = topics(&stack, 2).await;
    let prefix = format!("{}-", unique("kill2"));
    let messages = posts(&prefix, 50, 8_000, "k");
    let producer = kafka::producer(&stack);
    // Small flushes (many segments), a short session so each killed member is evicted quickly.
    let flags = [
        "--flush-interval-ms",
        "100",
        "--flush-max-bytes",
        "20000",
        "--session-timeout-ms",
        "6000",
        "--drain-deadline-ms",
        "3000",
    ];
    let log_dir = std::env::temp_dir().join(&t.group);
    std::fs::create_dir_all(&log_dir).unwrap();
    eprintln!("ingestion logs: {}", log_dir.display());
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
    // Each run is fed a chunk and killed once it has written `n` segments: the kill lands
    // between or inside flushes (segment written, pointer or offsets not yet).
    let chunks: Vec<_> = messages.chunks(messages.len() / 4 + 1).collect();
    for (run, (chunk, n)) in chunks.iter().zip([1.0, 3.0, 7.0, 12.0]).enumerate() {
        kafka::produce(&producer, &t.events, chunk).await;
        let ops = tests::exports::free_port();
        let mut child = spawn(run, ops);
        let url = format!("http://127.0.0.1:{ops}/metrics");
        wait_for(
            &format!("run {run} to write {n} segments"),
            Duration::from_secs(90),
            || async {
                let page = reqwest::get(&url).await.ok()?.text().await.ok()?;
                (metric(&page, "cce_log_objects_written_total{kind=\"segment\"}") >= n)
                    .then_some(())
            },
        )
        .await;
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "run {run} should have died by SIGKILL");
        // tansu does not rebalance when a dead member's session expires, so a member joining
        // before then would be assigned nothing for good (docs/servers.md): wait it out.
        tokio::time::sleep(Duration::from_secs(7)).await;
    }
    let child = spawn(chunks.len(), tests::exports::free_port());
    wait_durable(
        &store,
        &t.events,
        2,
        messages.len() as i64,
        "every offset durable after the kills",
    )
    .await;
    let (by_company, segments) = segment_contents(&store, &t.events).await;
    eprintln!("{segments} segments");
    let expected = expected_by_company(messages.iter().map(|(_, p)| p.clone()));
    assert_eq!(by_company, expected, "every event, once per company");
    // One epoch throughout: a restart after SIGKILL is not a new history.
    for (partition, pointer) in pointers(&store, &t.events).await {
        assert_eq!(pointer.epoch, 1, "partition {partition}");
    }
    let markers = list_all(&store, &format!("{}epochs/{}/", keys::ROOT, t.events))
        .await
        .unwrap();
    assert_eq!(markers.len(), 2, "{markers:?}");
    let pid = child.id().expect("pid").to_string();
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(term.success());
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "graceful exit after SIGTERM");
}
