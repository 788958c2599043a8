//! Helpers shared by the log v2 ingestion tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use compliance_log::Watermark;
use compliance_log::v2::{keys, segment};
use storage::{ObjectStore, S3Store, list_all};
use tests::{Stack, kafka, unique, wait_for};

pub struct Topics {
    pub events: String,
    pub dlq: String,
    pub group: String,
}

pub async fn topics(stack: &Stack, partitions: i32) -> Topics {
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
pub fn post(company: &str, id: &str) -> (String, Vec<u8>) {
    let event = serde_json::json!({
        "event_id": id, "type": "post.created", "occurred_at": chrono::Utc::now().to_rfc3339(),
        "conversation": {"id": format!("{company}-c1"), "kind": "team", "owner_company_id": company},
        "post_id": id, "author_id": format!("{company}-u1"), "text": format!("text of {id}")
    });
    (format!("{company}-c1"), serde_json::to_vec(&event).unwrap())
}

/// `count` posts spread evenly over `companies` companies named `<prefix>co<i>`.
pub fn posts(prefix: &str, companies: usize, count: usize, tag: &str) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let company = format!("{prefix}co{}", i % companies);
            post(&company, &format!("{company}-{tag}-{i}"))
        })
        .collect()
}

/// Every object under `prefix`, with its bytes.
pub async fn objects(store: &S3Store, prefix: &str) -> BTreeMap<String, Bytes> {
    let mut all = BTreeMap::new();
    for object in list_all(store, prefix).await.unwrap() {
        all.insert(object.key.clone(), store.get(&object.key).await.unwrap());
    }
    all
}

/// What the topic's segments hold: event ids by company (deduplicated by event id, as the
/// reader does, failing on a record two segments of one epoch disagree about), and how many
/// segments there are.
pub async fn segment_contents(
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
pub async fn pointers(store: &S3Store, topic: &str) -> BTreeMap<i32, Watermark> {
    Watermark::read_all(store, topic)
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.partition, w))
        .collect()
}

/// Waits until the pointers of `partitions` partitions say `total` offsets are durable.
pub async fn wait_durable(store: &S3Store, topic: &str, partitions: usize, total: i64, what: &str) {
    wait_for(what, Duration::from_secs(120), || async {
        let pointers = Watermark::read_all(store, topic).await.ok()?;
        let sum: i64 = pointers.iter().map(|w| w.durable_offset).sum();
        (pointers.len() == partitions && sum >= total).then_some(())
    })
    .await;
}
