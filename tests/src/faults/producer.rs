//! A continuous producer of chat events for many companies that records exactly what the
//! broker acknowledged (acks=all, idempotent): the ledger the checker compares the log and
//! the archives with. A send that fails is recorded as uncertain (the broker may have written
//! it before the error): it may appear once, never twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::producer::{FutureProducer, FutureRecord};
use telemetry::CancellationToken;

use super::Rng;
use crate::Stack;

/// What an event is, for the archive's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Meta,
    Post,
    Edit,
    Delete,
}

/// Per company, every event the producer sent, by outcome.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub acked: BTreeMap<String, BTreeMap<String, Kind>>,
    pub uncertain: BTreeMap<String, BTreeMap<String, Kind>>,
}

impl Ledger {
    pub fn acked_count(&self) -> usize {
        self.acked.values().map(BTreeMap::len).sum()
    }

    pub fn uncertain_count(&self) -> usize {
        self.uncertain.values().map(BTreeMap::len).sum()
    }
}

/// How to produce.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topic: String,
    /// Company ids are `<prefix>c00`, `<prefix>c01`, …
    pub prefix: String,
    pub companies: usize,
    pub conversations_per_company: usize,
    /// Events per second, roughly.
    pub rate: u32,
    pub seed: u64,
}

/// A running producer.
#[derive(Debug)]
pub struct Running {
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// A snapshot of the ledger so far.
    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().expect("ledger lock").clone()
    }

    /// Stops producing and waits for every send in flight to be acknowledged or fail.
    pub async fn finish(self) -> anyhow::Result<Ledger> {
        self.stop.cancel();
        self.task.await??;
        Ok(self.ledger.lock().expect("ledger lock").clone())
    }
}

fn producer(stack: &Stack) -> FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", stack.kafka_brokers())
        .set("acks", "all")
        // Not idempotent: tansu 0.6.0's sqlite engine panics on an idempotent producer's next
        // batch after a broker restart and then fails every request (docs/reliability.md). A
        // retry may write an event twice to the topic; the log must collapse the copies (equal
        // event id and time), which the checker then verifies. One request in flight keeps
        // each conversation's events in order through retries.
        .set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        // Long enough to ride out every fault the suite injects; a send that still fails is
        // recorded as uncertain.
        .set("message.timeout.ms", "180000")
        .create()
        .expect("producer")
}

struct Conversation {
    company: String,
    id: String,
    /// Posts whose creation was acknowledged and that are not being deleted.
    live: Vec<String>,
}

fn conversation_json(c: &Conversation) -> serde_json::Value {
    serde_json::json!({"id": c.id, "kind": "team", "owner_company_id": c.company})
}

/// Starts producing; the conversations' creations are acknowledged before this returns.
pub async fn start(stack: &Stack, plan: Plan) -> anyhow::Result<Running> {
    let producer = producer(stack);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut conversations = Vec::new();
    let mut sequence = 0u64;
    let mut creations = FuturesUnordered::new();
    for c in 0..plan.companies {
        let company = format!("{}c{c:02}", plan.prefix);
        for t in 0..plan.conversations_per_company {
            let conversation = Conversation {
                company: company.clone(),
                id: format!("{company}-t{t}"),
                live: Vec::new(),
            };
            sequence += 1;
            let event_id = format!("{company}-e{sequence}");
            let event = serde_json::json!({
                "event_id": event_id, "type": "conversation.created",
                "occurred_at": chrono::Utc::now().to_rfc3339(),
                "conversation": conversation_json(&conversation),
                "name": format!("Fault desk {t}"), "created_by": format!("{company}-u1"),
                "members": [{"person_id": format!("{company}-u1"), "company_id": company,
                             "name": "Ann", "email": "ann@example.com"}]
            });
            creations.push(send(
                &producer,
                &plan.topic,
                conversation.id.clone(),
                event,
                company.clone(),
                event_id,
                Kind::Meta,
                None,
            ));
            conversations.push(conversation);
        }
    }
    while let Some(outcome) = creations.next().await {
        let (company, id, kind, acked, _) = outcome;
        anyhow::ensure!(acked, "the creation of a conversation was not acknowledged");
        record(&ledger, company, id, kind, acked);
    }
    drop(creations);
    let stop = CancellationToken::new();
    let task = tokio::spawn(produce(
        producer,
        plan,
        conversations,
        sequence,
        Arc::clone(&ledger),
        stop.clone(),
    ));
    Ok(Running { ledger, stop, task })
}

fn record(ledger: &Mutex<Ledger>, company: String, id: String, kind: Kind, acked: bool) {
    let mut ledger = ledger.lock().expect("ledger lock");
    let book = if acked {
        &mut ledger.acked
    } else {
        &mut ledger.uncertain
    };
    book.entry(company).or_default().insert(id, kind);
}

/// One send's outcome: company, event id, kind, acknowledged, and for a post creation its
/// (conversation index, post id).
type Outcome = (String, String, Kind, bool, Option<(usize, String)>);

#[allow(clippy::too_many_arguments)]
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: String,
    event: serde_json::Value,
    company: String,
    event_id: String,
    kind: Kind,
    created: Option<(usize, String)>,
) -> Outcome {
    let payload = serde_json::to_vec(&event).expect("json");
    let delivery = producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Duration::from_secs(180),
        )
        .await;
    if let Err((error, _)) = &delivery {
        tracing::debug!(%error, event_id, "send failed: recorded as uncertain");
    }
    (company, event_id, kind, delivery.is_ok(), created)
}

async fn produce(
    producer: FutureProducer,
    plan: Plan,
    mut conversations: Vec<Conversation>,
    mut sequence: u64,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(plan.seed);
    let mut in_flight = FuturesUnordered::new();
    let tick = Duration::from_millis(100);
    let per_tick = (plan.rate / 10).max(1);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let settle = |outcome: Outcome, conversations: &mut Vec<Conversation>| {
        let (company, id, kind, acked, created) = outcome;
        if let (true, Some((index, post))) = (acked, created) {
            conversations[index].live.push(post);
        }
        record(&ledger, company, id, kind, acked);
    };
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                settle(outcome, &mut conversations);
                continue;
            }
            _ = ticker.tick() => {}
        }
        // Back-pressure: while the broker is away, hold at most a few seconds of events.
        if in_flight.len() > (plan.rate as usize) * 30 {
            continue;
        }
        for _ in 0..per_tick {
            let index = rng.below(conversations.len() as u64) as usize;
            let conversation = &mut conversations[index];
            sequence += 1;
            let company = conversation.company.clone();
            let event_id = format!("{company}-e{sequence}");
            let now = chrono::Utc::now().to_rfc3339();
            let roll = rng.below(100);
            let (kind, event, created) = if roll < 70 || conversation.live.is_empty() {
                let post = format!("{company}-p{sequence}");
                let event = serde_json::json!({
                    "event_id": event_id, "type": "post.created", "occurred_at": now,
                    "conversation": conversation_json(conversation),
                    "post_id": post, "author_id": format!("{company}-u1"),
                    "text": format!("fault suite post {sequence}")
                });
                (Kind::Post, event, Some((index, post)))
            } else {
                let at = rng.below(conversation.live.len() as u64) as usize;
                if roll < 90 {
                    let post = conversation.live[at].clone();
                    let event = serde_json::json!({
                        "event_id": event_id, "type": "post.edited", "occurred_at": now,
                        "conversation": conversation_json(conversation),
                        "post_id": post, "editor_id": format!("{company}-u1"),
                        "text": format!("fault suite edit {sequence}")
                    });
                    (Kind::Edit, event, None)
                } else {
                    // Never edited again once its deletion is sent.
                    let post = conversation.live.swap_remove(at);
                    let event = serde_json::json!({
                        "event_id": event_id, "type": "post.deleted", "occurred_at": now,
                        "conversation": conversation_json(conversation),
                        "post_id": post, "deleted_by": format!("{company}-u1")
                    });
                    (Kind::Delete, event, None)
                }
            };
            in_flight.push(send(
                &producer,
                &plan.topic,
                conversation.id.clone(),
                event,
                company,
                event_id,
                kind,
                created,
            ));
        }
    }
    while let Some(outcome) = in_flight.next().await {
        settle(outcome, &mut conversations);
    }
    Ok(())
}
