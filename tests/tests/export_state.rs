//! The export service's state log against the real broker and store: the Kafka log passes the
//! same conformance suite as the in-memory one; a replica starts from a snapshot; it refuses a
//! state topic that would drop history, with a message a person can act on; a record of an
//! unknown version stops the fold and makes the replica not-ready instead of being skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use export::SystemClock;
use export::statelog::{KafkaLog, RecordLog, Snapshots};
use proto::v1 as pb;
use storage::ObjectStore;
use tests::exports::{Replica, TokenSpec, authed, create_topics};
use tests::{Stack, kafka, unique, wait_for};

#[tokio::test]
async fn the_kafka_state_log_passes_the_conformance_suite() {
    let stack = Stack::from_env();
    let topic = unique("state-conformance");
    kafka::create_topic_with(&stack, &topic, 1, &[("retention.ms", "-1")]).await;
    let a = KafkaLog::connect(stack.kafka_brokers(), &topic)
        .await
        .unwrap();
    let b = KafkaLog::connect(stack.kafka_brokers(), &topic)
        .await
        .unwrap();
    export::statelog::conformance::run(&a, &b).await;
}

async fn readyz(replica: &Replica) -> u16 {
    reqwest::get(format!("http://{}/readyz", replica.running.ops_addr))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_starts_from_the_newest_snapshot_with_the_same_state() {
    let stack = Stack::from_env();
    let state_topic = unique("state");
    create_topics(&stack, &state_topic).await;
    let store: Arc<dyn ObjectStore> = Arc::new(stack.s3_store().await);
    let snapshot_flags = ["--snapshot-every", "1", "--snapshot-interval-secs", "1"];
    let a = Replica::start(&stack, &state_topic, Arc::new(SystemClock), &snapshot_flags).await;
    let company = unique("snap");
    let ann = TokenSpec::admin(&stack, &company, "ann").sign();
    let mut client = a.client().await;
    client
        .enable_exports(authed(&ann, pb::EnableExportsRequest {}))
        .await
        .unwrap();
    for admin in ["bob", "cy"] {
        client
            .grant_access(authed(
                &ann,
                pb::GrantAccessRequest {
                    admin_id: admin.into(),
                },
            ))
            .await
            .unwrap();
    }
    let snapshots = Snapshots::new(store.clone(), "state-snapshots/", &state_topic);
    let covered = wait_for(
        "a snapshot of all 3 records",
        Duration::from_secs(60),
        || async {
            snapshots
                .newest()
                .await
                .unwrap()
                .filter(|(offset, _)| *offset == 3)
                .map(|(offset, _)| offset)
        },
    )
    .await;
    assert_eq!(covered, 3);
    let audit = |replica: &Replica| {
        let ann = ann.clone();
        let endpoint = replica.endpoint.clone();
        async move {
            tests::exports::client(&endpoint)
                .await
                .list_audit_events(authed(&ann, pb::ListAuditEventsRequest::default()))
                .await
                .unwrap()
                .into_inner()
                .events
        }
    };
    let before = audit(&a).await;
    assert_eq!(before.len(), 3, "{before:?}");
    a.shutdown().await;
    // A new replica starts from the snapshot and answers with the same state; it goes on
    // folding what follows.
    let b = Replica::start(&stack, &state_topic, Arc::new(SystemClock), &snapshot_flags).await;
    wait_for("the new replica ready", Duration::from_secs(60), || async {
        (readyz(&b).await == 200).then_some(())
    })
    .await;
    assert_eq!(audit(&b).await, before);
    b.client()
        .await
        .revoke_access(authed(
            &ann,
            pb::RevokeAccessRequest {
                admin_id: "cy".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(audit(&b).await.len(), 4);
    b.shutdown().await;
}

#[tokio::test]
async fn a_state_topic_that_would_drop_history_is_refused_with_what_to_do() {
    let stack = Stack::from_env();
    let short = unique("state-short");
    kafka::create_topic_with(&stack, &short, 1, &[("retention.ms", "604800000")]).await;
    let log = KafkaLog::connect(stack.kafka_brokers(), &short)
        .await
        .unwrap();
    let refused = log.check_kept_forever().await.unwrap_err().to_string();
    assert!(refused.contains("retention.ms=604800000"), "{refused}");
    assert!(refused.contains("retention.ms=-1"), "{refused}");
    // The service refuses to start on it, naming the topic and the fix.
    use clap::Parser;
    let mut argv = vec!["cce-export".to_owned()];
    argv.extend(tests::exports::args(&stack, &short, 0, &[]));
    let config = export::Config::try_parse_from(argv).unwrap();
    let error = export::start(config, telemetry::CancellationToken::new())
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains(&short) && message.contains("retention"),
        "{message}"
    );
    // A topic that does not exist is named too.
    let missing = KafkaLog::connect(stack.kafka_brokers(), &unique("no-such-topic"))
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("does not exist"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_of_an_unknown_version_stops_the_fold_and_readiness() {
    let stack = Stack::from_env();
    let state_topic = unique("state");
    create_topics(&stack, &state_topic).await;
    let replica = Replica::start(&stack, &state_topic, Arc::new(SystemClock), &[]).await;
    let company = unique("ver");
    let ann = TokenSpec::admin(&stack, &company, "ann").sign();
    let mut client = replica.client().await;
    client
        .enable_exports(authed(&ann, pb::EnableExportsRequest {}))
        .await
        .unwrap();
    wait_for("ready", Duration::from_secs(60), || async {
        (readyz(&replica).await == 200).then_some(())
    })
    .await;
    // A newer build (say) writes a version 99 record.
    let log = KafkaLog::connect(stack.kafka_brokers(), &state_topic)
        .await
        .unwrap();
    let offset = log
        .append(
            &company,
            br#"{"v":99,"id":"x","command":{"type":"new_thing"}}"#.to_vec(),
        )
        .await
        .unwrap();
    wait_for("not ready", Duration::from_secs(60), || async {
        (readyz(&replica).await == 503).then_some(())
    })
    .await;
    let status = client
        .get_settings(authed(&ann, pb::GetSettingsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains(&format!("offset {offset}"))
            && status.message().contains("version 99")
            && status.message().contains("upgrade"),
        "{}",
        status.message()
    );
    replica.shutdown().await;
}
