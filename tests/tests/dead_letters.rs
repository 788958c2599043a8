//! Dead letters never stop ingestion, against the real broker and store, with default settings:
//! a record the dead-letter topic cannot take is kept on the store with a pointer on the topic;
//! a missing topic is waited for, then the letter is kept on the store and ingestion goes on; a
//! topic that comes back in time gets every letter, in source order. Meanwhile the dashboards
//! tell the truth: the stuck partition shows as stalled, `/readyz` fails, and the lag grows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use compliance_log::LogReader;
use rdkafka::ClientConfig;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::{Digest, Sha256};
use storage::ObjectStore;
use telemetry::CancellationToken;
use tests::{Stack, ingestion_config, kafka, log_event_ids, unique, wait_for};

struct Topics {
    events: String,
    dlq: String,
    group: String,
}

fn person_event(company: &str, suffix: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event_id": format!("{company}-{suffix}"), "type": "person.updated",
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "person": {"id": format!("{company}-u1"), "company_id": company, "name": "Zoë", "email": "z@x"}
    }))
    .unwrap()
}

/// A producer that may send the 1.2 MB event (librdkafka's default cap is 1,000,000 bytes).
fn large_producer(stack: &Stack) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", stack.kafka_brokers())
        .set("acks", "all")
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer")
}

async fn send(producer: &FutureProducer, topic: &str, partition: i32, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

fn header(message: &OwnedMessage, name: &str) -> String {
    message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no header {name}"))
}

async fn page(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A sample's value in a Prometheus text page (`name` includes the labels).
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_for_ids(reader: &LogReader, company: &str, ids: &[String], deadline: Duration) {
    wait_for(&format!("{ids:?} in {company}'s log"), deadline, || async {
        let got = log_event_ids(reader, company).await;
        ids.iter().all(|id| got.contains(id)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_1_2_mb_event_is_dead_lettered_by_pointer_and_the_events_after_it_are_ingested() {
    let stack = Stack::from_env();
    let t = Topics {
        events: unique("events"),
        dlq: unique("dlq"),
        group: unique("group"),
    };
    kafka::create_topic(&stack, &t.events, 1).await;
    kafka::create_topic(&stack, &t.dlq, 1).await;
    let company = unique("big");
    let huge = serde_json::to_vec(&serde_json::json!({
        "event_id": format!("{company}-huge"), "type": "post.created",
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "post": {"id": "p1", "text": "x".repeat(1_200_000)}
    }))
    .unwrap();
    assert!(huge.len() > 1_200_000);
    let producer = large_producer(&stack);
    send(&producer, &t.events, 0, "conv-1", &huge).await;
    let after: Vec<String> = (1..=5).map(|i| format!("after-{i}")).collect();
    for suffix in &after {
        send(
            &producer,
            &t.events,
            0,
            "conv-1",
            &person_event(&company, suffix),
        )
        .await;
    }

    // Default settings: only the topics, the group and an ephemeral ops port are the test's.
    let shutdown = CancellationToken::new();
    let config = ingestion_config(&stack, &t.events, &t.dlq, &t.group, &[]);
    let running = ingestion::start(config, shutdown.clone()).await.unwrap();

    let dead = kafka::consume(&stack, &t.dlq, 1, Duration::from_secs(60)).await;
    let pointer = &dead[0];
    assert_eq!(header(pointer, "cce-dlq-reason"), "oversized");
    assert_eq!(header(pointer, "cce-dlq-source-topic"), t.events);
    assert_eq!(header(pointer, "cce-dlq-source-partition"), "0");
    assert_eq!(header(pointer, "cce-dlq-source-offset"), "0");
    assert_eq!(pointer.key(), Some(b"conv-1".as_slice()));
    assert_eq!(
        header(pointer, "cce-dlq-payload-bytes"),
        huge.len().to_string()
    );
    let sha = hex::encode(Sha256::digest(&huge));
    assert_eq!(header(pointer, "cce-dlq-payload-sha256"), sha);
    let location = header(pointer, "cce-dlq-payload-location");
    let bucket = stack.s3_config().bucket;
    let key = location
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap_or_else(|| panic!("location {location} not in bucket {bucket}"));
    assert!(key.starts_with("dead-letters/v1/"), "{key}");
    let store = stack.s3_store().await;
    let kept = store.get(key).await.unwrap();
    assert_eq!(kept.len(), huge.len());
    assert!(kept == huge, "the store keeps the original bytes");
    // The pointer's value is the letter: reason, position and checksum, readable by a person.
    let letter: serde_json::Value = serde_json::from_slice(pointer.payload().unwrap()).unwrap();
    assert_eq!(letter["payload_sha256"], sha.as_str());
    assert_eq!(letter["source_offset"], 0);
    assert_eq!(letter["reason"], "oversized");
    let beside: serde_json::Value = serde_json::from_slice(
        &store
            .get(&key.replace("/payload", "/letter.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(beside["payload_location"], location.as_str());

    let reader = LogReader::new(Arc::new(stack.s3_store().await));
    let ids: Vec<String> = after.iter().map(|s| format!("{company}-{s}")).collect();
    wait_for_ids(&reader, &company, &ids, Duration::from_secs(30)).await;
    wait_for("metrics", Duration::from_secs(20), || async {
        let (_, text) = page(running.ops_addr, "/metrics").await;
        (metric(
            &text,
            "cce_ingest_dead_letter_deliveries_total{delivery=\"pointer\"}",
        ) == Some(1.0)
            && metric(&text, "cce_ingest_consumer_lag{partition=\"0\"}") == Some(0.0))
        .then_some(())
    })
    .await;
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_dead_letter_topic_stalls_one_partition_visibly_then_the_letter_is_kept_on_the_store()
 {
    let stack = Stack::from_env();
    let t = Topics {
        events: unique("events"),
        dlq: unique("dlq-missing"),
        group: unique("group"),
    };
    kafka::create_topic(&stack, &t.events, 2).await;
    let company = unique("nodlq");
    let producer = kafka::producer(&stack);
    send(&producer, &t.events, 0, "k", b"{not json").await;
    let behind: Vec<String> = (1..=3).map(|i| format!("p0-{i}")).collect();
    for suffix in &behind {
        send(
            &producer,
            &t.events,
            0,
            "k",
            &person_event(&company, suffix),
        )
        .await;
    }

    let shutdown = CancellationToken::new();
    let config = ingestion_config(&stack, &t.events, &t.dlq, &t.group, &[]);
    let running = ingestion::start(config, shutdown.clone()).await.unwrap();
    let reader = LogReader::new(Arc::new(stack.s3_store().await));

    // The other partition keeps flowing while partition 0 waits for its dead letter.
    send(
        &producer,
        &t.events,
        1,
        "other",
        &person_event(&company, "p1-1"),
    )
    .await;
    wait_for_ids(
        &reader,
        &company,
        &[format!("{company}-p1-1")],
        Duration::from_secs(15),
    )
    .await;
    // Partition 0 cannot make progress: the dashboards say so (default stall threshold 20 s).
    wait_for(
        "partition 0 reported stalled",
        Duration::from_secs(28),
        || async {
            let (status, _) = page(running.ops_addr, "/readyz").await;
            let (_, text) = page(running.ops_addr, "/metrics").await;
            (status == 503
                && metric(&text, "cce_ingest_partition_stalled{partition=\"0\"}") == Some(1.0)
                && metric(&text, "cce_ingest_consumer_lag{partition=\"0\"}") == Some(4.0)
                && metric(&text, "cce_ingest_consumer_lag{partition=\"1\"}") == Some(0.0))
            .then_some(())
        },
    )
    .await;

    // After the topic wait (default 30 s) the letter is kept on the store and the partition
    // moves on.
    let folder = format!("dead-letters/v1/{}/0/{:020}", t.events, 0);
    let store = stack.s3_store().await;
    let letter = wait_for(
        "the letter on the store",
        Duration::from_secs(30),
        || async { store.get(&format!("{folder}/letter.json")).await.ok() },
    )
    .await;
    let letter: serde_json::Value = serde_json::from_slice(&letter).unwrap();
    assert_eq!(letter["reason"], "invalid_json");
    assert_eq!(letter["source_topic"], t.events.as_str());
    assert_eq!(letter["source_partition"], 0);
    assert_eq!(letter["source_offset"], 0);
    assert_eq!(
        letter["payload_sha256"],
        hex::encode(Sha256::digest(b"{not json")).as_str()
    );
    assert_eq!(
        store
            .get(&format!("{folder}/payload"))
            .await
            .unwrap()
            .as_ref(),
        b"{not json"
    );
    let ids: Vec<String> = behind.iter().map(|s| format!("{company}-{s}")).collect();
    wait_for_ids(&reader, &company, &ids, Duration::from_secs(15)).await;
    wait_for("ready again, lag 0", Duration::from_secs(20), || async {
        let (status, _) = page(running.ops_addr, "/readyz").await;
        let (_, text) = page(running.ops_addr, "/metrics").await;
        (status == 200
            && metric(&text, "cce_ingest_partition_stalled{partition=\"0\"}") == Some(0.0)
            && metric(&text, "cce_ingest_consumer_lag{partition=\"0\"}") == Some(0.0)
            && metric(
                &text,
                "cce_ingest_dead_letter_deliveries_total{delivery=\"store_only\"}",
            ) == Some(1.0))
        .then_some(())
    })
    .await;
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_topic_that_refuses_for_a_while_gets_every_letter_in_source_order() {
    let stack = Stack::from_env();
    let t = Topics {
        events: unique("events"),
        dlq: unique("dlq-late"),
        group: unique("group"),
    };
    kafka::create_topic(&stack, &t.events, 1).await;
    let company = unique("late");
    let producer = kafka::producer(&stack);
    // bad, good, bad, good, bad: offsets 0..5.
    let bad: Vec<Vec<u8>> = (0..3).map(|i| format!("{{bad {i}").into_bytes()).collect();
    send(&producer, &t.events, 0, "k", &bad[0]).await;
    send(&producer, &t.events, 0, "k", &person_event(&company, "g1")).await;
    send(&producer, &t.events, 0, "k", &bad[1]).await;
    send(&producer, &t.events, 0, "k", &person_event(&company, "g2")).await;
    send(&producer, &t.events, 0, "k", &bad[2]).await;

    let shutdown = CancellationToken::new();
    let config = ingestion_config(&stack, &t.events, &t.dlq, &t.group, &[]);
    let running = ingestion::start(config, shutdown.clone()).await.unwrap();
    // The topic refuses (does not exist) for a while, then comes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    kafka::create_topic(&stack, &t.dlq, 1).await;
    send(&producer, &t.events, 0, "k", &person_event(&company, "g3")).await;

    let dead = kafka::consume(&stack, &t.dlq, 3, Duration::from_secs(60)).await;
    for (i, message) in dead.iter().enumerate() {
        assert_eq!(
            message.payload(),
            Some(bad[i].as_slice()),
            "letter {i}: bytes"
        );
        assert_eq!(
            header(message, "cce-dlq-source-offset"),
            (2 * i).to_string(),
            "letters in source order"
        );
        assert_eq!(header(message, "cce-dlq-reason"), "invalid_json");
    }
    let reader = LogReader::new(Arc::new(stack.s3_store().await));
    let ids: Vec<String> = ["g1", "g2", "g3"]
        .iter()
        .map(|s| format!("{company}-{s}"))
        .collect();
    wait_for_ids(&reader, &company, &ids, Duration::from_secs(30)).await;
    let store = stack.s3_store().await;
    let kept = storage::list_all(&store, &format!("dead-letters/v1/{}/", t.events))
        .await
        .unwrap();
    assert!(kept.is_empty(), "nothing needed the store: {kept:?}");
    let (_, text) = page(running.ops_addr, "/metrics").await;
    assert_eq!(
        metric(
            &text,
            "cce_ingest_dead_letter_deliveries_total{delivery=\"topic\"}"
        ),
        Some(3.0)
    );
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
}
