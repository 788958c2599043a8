//! The local stack works through the same libraries the services use: rdkafka against the
//! Kafka-API broker, aws-sdk-s3 (through our `storage` crate) against the S3-API store.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use storage::ObjectStore;
use tests::{Stack, unique};

const RECV_DEADLINE: Duration = Duration::from_secs(60);

fn consumer(stack: &Stack, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.kafka_brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

#[tokio::test]
async fn kafka_consumer_group_resumes_after_its_committed_offset() {
    let stack = Stack::from_env();
    let topic = unique("stack-test");
    let group = unique("stack-test-group");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", stack.kafka_brokers())
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert!(
        created.iter().all(Result::is_ok),
        "create topic: {created:?}"
    );

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.kafka_brokers())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in 0..100 {
        let seq = i.to_string();
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("key-{i}"))
                    .payload(&format!("message {i}"))
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "seq",
                        value: Some(&seq),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    // The first consumer reads 60 messages and commits after the 60th.
    let first = consumer(&stack, &group, &topic);
    for i in 0..60 {
        let message = tokio::time::timeout(RECV_DEADLINE, first.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.offset(), i);
        assert_eq!(message.payload(), Some(format!("message {i}").as_bytes()));
        assert_eq!(message.key(), Some(format!("key-{i}").as_bytes()));
        let header = message.headers().expect("headers").get(0);
        assert_eq!(
            (header.key, header.value),
            ("seq", Some(i.to_string().as_bytes()))
        );
        if i == 59 {
            first.commit_message(&message, CommitMode::Sync).unwrap();
        }
    }
    drop(first);

    // A restarted consumer in the same group resumes exactly after the committed offset.
    let second = consumer(&stack, &group, &topic);
    for i in 60..100 {
        let message = tokio::time::timeout(RECV_DEADLINE, second.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.offset(), i, "resumed at the wrong offset");
        assert_eq!(message.payload(), Some(format!("message {i}").as_bytes()));
    }
    // Nothing follows the last message.
    let extra = tokio::time::timeout(Duration::from_secs(2), second.recv()).await;
    assert!(
        extra.is_err(),
        "unexpected message after the last: {:?}",
        extra.map(|m| m.map(|m| m.offset()))
    );
}

#[tokio::test]
async fn s3_store_passes_the_conformance_suite() {
    let stack = Stack::from_env();
    let store = stack.s3_store().await;
    storage::conformance::run(&store, &format!("{}/", unique("conformance")), true).await;
}

#[tokio::test]
async fn presigned_url_serves_plain_http_and_a_tampered_one_is_refused() {
    let stack = Stack::from_env();
    let store = stack.s3_store().await;
    let key = format!("{}/archive.zip", unique("presign"));
    let body = Bytes::from_static(b"PK\x03\x04 pretend archive");
    store.put(&key, body.clone()).await.unwrap();

    let url = store
        .presign_get(&key, Duration::from_secs(120))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "presigned GET failed: {}",
        response.text().await.unwrap()
    );
    assert_eq!(response.bytes().await.unwrap(), body);

    // Flip the signature's last hex digit.
    let (before, signature) = url.split_once("X-Amz-Signature=").expect("a SigV4 URL");
    let mut forged: Vec<char> = signature.chars().collect();
    let last = forged.iter().rposition(char::is_ascii_hexdigit).unwrap();
    forged[last] = if forged[last] == '0' { '1' } else { '0' };
    let tampered = format!(
        "{before}X-Amz-Signature={}",
        forged.into_iter().collect::<String>()
    );
    let refused = http.get(&tampered).send().await.unwrap();
    assert_eq!(refused.status(), 403);
}
