//! A re-created topic, against the real broker and store: ingestion begins a new log epoch
//! (offsets restarted under the same names), every object of the old epoch stays byte for byte,
//! and the new history is logged whole. Its own test binary: deleting a topic was seen to crash
//! librdkafka 2.12 clients of the same process that talk to tansu (strcmp in the metadata
//! cache), which would take unrelated tests down with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_v2_support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use compliance_log::Watermark;
use compliance_log::v2::epoch::EpochMarker;
use compliance_log::v2::keys;
use log_v2_support::{objects, posts, segment_contents, topics, wait_durable};
use telemetry::CancellationToken;
use tests::{Stack, expected_by_company, ingestion_config, kafka, unique, wait_for};

/// Commits `offset` for partition 0 of `topic` in `group`, as a member that has left would have.
async fn commit(stack: &Stack, group: &str, topic: &str, offset: i64) {
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
        list.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(offset))
            .unwrap();
        consumer.commit(&list, CommitMode::Sync).unwrap();
        let committed =
            ingestion::consumer::committed_offsets(&brokers, &group, &topic, 1).unwrap();
        assert_eq!(committed, [rdkafka::Offset::Offset(offset)]);
    })
    .await
    .unwrap();
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

    let first = posts(&prefix, 5, 300, "first");
    // Every client of the topic is gone before it is deleted: librdkafka 2.12 was seen to crash
    // (strcmp in its metadata cache, on tansu's answer for a deleted topic) in a client that
    // still tracked it.
    kafka::produce(&kafka::producer(&stack), &t.events, &first).await;
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
    kafka::produce(&kafka::producer(&stack), &t.events, &second).await;
    // Whether or not the broker forgot the group's offsets with the topic, the group says 300,
    // as it would with Kafka keeping them: consuming from there would skip offsets 0..299.
    commit(&stack, &t.group, &t.events, 300).await;
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
