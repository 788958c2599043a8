//! Ingestion into log format v2 against the real broker and store: a flush costs one segment
//! and at most one pointer PUT however many companies it touched; SIGKILL mid-stream and a
//! restart lose and double nothing. (A re-created topic: `log_v2_epochs.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use compliance_log::v2::keys;
use storage::list_all;
use telemetry::CancellationToken;
use tests::{Stack, expected_by_company, ingestion_config, kafka, log_event_ids, unique, wait_for};

mod log_v2_support;

use log_v2_support::{objects, pointers, posts, segment_contents, topics, wait_durable};

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
    // Idle now: the probes move every partition's time watermark past the last publish.
    let published = chrono::Utc::now();
    wait_for(
        "the time watermarks to pass the last publish",
        Duration::from_secs(30),
        || async {
            let pointers = pointers(&store, &t.events).await;
            pointers
                .values()
                .all(|w| w.time_watermark.is_some_and(|tw| tw > published))
                .then_some(())
        },
    )
    .await;
    // Everything produced is there, each company's own events only.
    let (by_company, _) = segment_contents(&store, &t.events).await;
    let expected = expected_by_company(all.iter().map(|(_, p)| p.clone()));
    for (company, ids) in &expected {
        assert_eq!(by_company.get(company), Some(ids), "{company}");
    }
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
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
        "8000",
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
    // between or inside flushes (segment written, pointer or offsets not yet). How many segments
    // a chunk makes depends on how much buffers while a flush is in flight (machine load), so a
    // run that has made everything durable before its `n`th segment is killed then (a kill
    // after a flush); at least one run must have been killed at its `n`th segment.
    let chunks: Vec<_> = messages.chunks(messages.len() / 4 + 1).collect();
    let (mut produced, mut killed_at_n) = (0i64, 0);
    for (run, (chunk, n)) in chunks.iter().zip([1.0, 2.0, 4.0, 6.0]).enumerate() {
        kafka::produce(&producer, &t.events, chunk).await;
        produced += chunk.len() as i64;
        let ops = tests::exports::free_port();
        let mut child = spawn(run, ops);
        let url = format!("http://127.0.0.1:{ops}/metrics");
        let at_n = wait_for(
            &format!("run {run} to write {n} segments or everything produced"),
            Duration::from_secs(90),
            || async {
                let page = reqwest::get(&url).await.ok()?;
                let page = page.text().await.ok()?;
                if metric(&page, "cce_log_objects_written_total{kind=\"segment\"}") >= n {
                    return Some(true);
                }
                let pointers = compliance_log::Watermark::read_all(&store, &t.events)
                    .await
                    .ok()?;
                let durable: i64 = pointers.iter().map(|w| w.durable_offset).sum();
                (pointers.len() == 2 && durable >= produced).then_some(false)
            },
        )
        .await;
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "run {run} should have died by SIGKILL");
        eprintln!(
            "run {run} killed {}",
            if at_n {
                format!("at its segment {n}")
            } else {
                "with everything durable".into()
            }
        );
        killed_at_n += usize::from(at_n);
        // tansu does not rebalance when a dead member's session expires, so a member joining
        // before then would be assigned nothing for good (docs/servers.md): wait it out.
        tokio::time::sleep(Duration::from_secs(7)).await;
    }
    assert!(
        killed_at_n >= 1,
        "no run was killed at its nth segment: every kill came after the run had caught up"
    );
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
    assert_eq!(by_company, expected, "every event in the segments");
    // Through the project's reader: each company's events, each once (it fails on a duplicate).
    // At the topic's position: reads only this topic of the shared bucket.
    let position = compliance_log::LogPosition::read(&store, &t.events)
        .await
        .unwrap();
    let reader =
        compliance_log::LogReader::new(std::sync::Arc::new(stack.s3_store().await)).at(position);
    for (company, ids) in &expected {
        assert_eq!(&log_event_ids(&reader, company).await, ids, "{company}");
    }
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

/// Sets `group`'s committed offset of every partition of `topic` back to 0, as if its offsets
/// were lost (or a replica died before committing).
async fn rewind_group(stack: &Stack, group: &str, topic: &str, partitions: i32) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let (brokers, group, topic) = (
        stack.kafka_brokers().to_owned(),
        group.to_owned(),
        topic.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(&topic, p, rdkafka::Offset::Offset(0))
                .unwrap();
        }
        consumer.commit(&list, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_below_the_durable_offset_writes_nothing_and_sends_no_dead_letter_again() {
    let stack = Stack::from_env();
    let store = stack.s3_store().await;
    let t = topics(&stack, 1).await;
    let prefix = format!("{}-", unique("replay"));
    let mut messages = posts(&prefix, 3, 20, "a");
    messages.insert(7, ("bad".into(), b"{not json".to_vec()));
    kafka::produce(&kafka::producer(&stack), &t.events, &messages).await;
    let flags = ["--flush-interval-ms", "200"];
    let run = || async {
        let shutdown = CancellationToken::new();
        let running = ingestion::start(
            ingestion_config(&stack, &t.events, &t.dlq, &t.group, &flags),
            shutdown.clone(),
        )
        .await
        .unwrap();
        wait_durable(&store, &t.events, 1, 21, "every offset durable").await;
        // Consumed to the end and committed (offsets are stored only after a flush).
        let (brokers, group, topic) = (
            stack.kafka_brokers().to_owned(),
            t.group.clone(),
            t.events.clone(),
        );
        wait_for(
            "offsets committed to the end",
            Duration::from_secs(60),
            || {
                let (brokers, group, topic) = (brokers.clone(), group.clone(), topic.clone());
                async move {
                    let committed = tokio::task::spawn_blocking(move || {
                        ingestion::consumer::committed_offsets(&brokers, &group, &topic, 1)
                    })
                    .await
                    .ok()?
                    .ok()?;
                    (committed == [rdkafka::Offset::Offset(21)]).then_some(())
                }
            },
        )
        .await;
        let page = metrics_page(running.ops_addr).await;
        shutdown.cancel();
        running.task.await.unwrap().unwrap();
        page
    };
    let first = run().await;
    assert_eq!(
        metric(
            &first,
            "cce_ingest_dead_lettered_total{reason=\"invalid_json\"}"
        ),
        1.0
    );
    let written = objects(&store, &format!("{}segments/{}/", keys::ROOT, t.events)).await;

    // The group forgets how far it got: everything is consumed again.
    rewind_group(&stack, &t.group, &t.events, 1).await;
    let again = run().await;
    assert_eq!(
        metric(&again, "cce_ingest_events_consumed_total"),
        21.0,
        "consumed again"
    );
    assert_eq!(
        metric(&again, "cce_log_objects_written_total{kind=\"segment\"}"),
        0.0,
        "nothing below the durable offset is written again"
    );
    assert_eq!(
        metric(
            &again,
            "cce_ingest_dead_lettered_total{reason=\"invalid_json\"}"
        ),
        0.0,
        "the dead letter is not sent again"
    );
    assert_eq!(
        objects(&store, &format!("{}segments/{}/", keys::ROOT, t.events)).await,
        written
    );
    let (brokers, dlq) = (stack.kafka_brokers().to_owned(), t.dlq.clone());
    let letters = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        client
            .fetch_watermarks(&dlq, 0, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(letters, (0, 1), "one dead letter on the topic");
    let (by_company, _) = segment_contents(&store, &t.events).await;
    let expected = expected_by_company(
        messages
            .iter()
            .filter(|(k, _)| k != "bad")
            .map(|(_, p)| p.clone()),
    );
    assert_eq!(by_company, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingestion_compacts_closed_days_itself_and_reads_stay_exact() {
    let stack = Stack::from_env();
    let store = stack.s3_store().await;
    let t = topics(&stack, 2).await;
    let prefix = format!("{}-", unique("compact"));
    // January 2026: every day long closed.
    let messages: Vec<(String, Vec<u8>)> = loadgen::Generator::new(loadgen::Options {
        seed: 5,
        id_prefix: prefix.clone(),
        content_events: 1_500,
        ..loadgen::Options::default()
    })
    .map(|m| (m.key, m.payload))
    .collect();
    kafka::produce(&kafka::producer(&stack), &t.events, &messages).await;
    let shutdown = CancellationToken::new();
    let running = ingestion::start(
        ingestion_config(
            &stack,
            &t.events,
            &t.dlq,
            &t.group,
            &[
                "--flush-interval-ms",
                "300",
                "--compaction-interval-secs",
                "1",
            ],
        ),
        shutdown.clone(),
    )
    .await
    .unwrap();
    wait_durable(
        &store,
        &t.events,
        2,
        messages.len() as i64,
        "every offset durable",
    )
    .await;
    // Once the time watermarks pass the last publish, a pass compacts everything produced.
    let passes = keys::passes_prefix(&t.events);
    wait_for(
        "a compaction pass by cce-ingestion",
        Duration::from_secs(60),
        || async {
            let page = metrics_page(running.ops_addr).await;
            let listed = list_all(&store, &passes).await.ok()?;
            (!listed.is_empty()
                && metric(
                    &page,
                    "cce_log_compaction_passes_total{outcome=\"compacted\"}",
                ) >= 1.0)
                .then_some(())
        },
    )
    .await;
    let position = compliance_log::LogPosition::read(&store, &t.events)
        .await
        .unwrap();
    let reader =
        compliance_log::LogReader::new(std::sync::Arc::new(stack.s3_store().await)).at(position);
    let expected = expected_by_company(messages.iter().map(|(_, p)| p.clone()));
    for (company, ids) in &expected {
        let parts = list_all(&store, &keys::days_prefix(company)).await.unwrap();
        assert!(!parts.is_empty(), "{company}: no compacted day");
        assert_eq!(&log_event_ids(&reader, company).await, ids, "{company}");
    }
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}
