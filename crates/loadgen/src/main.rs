//! `cce-loadgen`: produces a generated company chat history to Kafka (or prints it).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use loadgen::{Generator, Options};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// Produces a realistic, deterministic chat history (people, conversations, posts, edits,
/// deletes, notes, files, membership changes) to the events topic.
#[derive(Debug, Parser)]
#[command(name = "cce-loadgen", version)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "CCE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to produce to.
    #[arg(long, env = "CCE_EVENTS_TOPIC", default_value = "chat-events")]
    topic: String,
    /// Seed: the same seed and options give the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Prefix for every company, conversation and event id.
    #[arg(long, default_value = "")]
    id_prefix: String,
    #[arg(long, default_value_t = 3)]
    companies: usize,
    #[arg(long, default_value_t = 12)]
    people_per_company: usize,
    #[arg(long, default_value_t = 10)]
    conversations_per_company: usize,
    /// Content events after the initial people and conversations.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// First event time (RFC 3339), or `now`.
    #[arg(long, default_value = "2026-01-01T00:00:00Z", value_parser = parse_start)]
    start: chrono::DateTime<chrono::Utc>,
    /// Days the content events spread over.
    #[arg(long, default_value_t = 30)]
    span_days: i64,
    /// Seconds the content events spread over, instead of `--span-days`: with `--start now`
    /// this is live traffic (every company chatting at once, current timestamps).
    #[arg(long)]
    span_seconds: Option<i64>,
    /// Extra team conversations per company with this many of its people each (comma-separated,
    /// e.g. `50000,5000`): members join in events of at most 400.
    #[arg(long, value_delimiter = ',')]
    large_teams: Vec<usize>,
    /// Which content events: `chat` (every kind) or `posts` (posts, replies, edits and deletes
    /// only: one busy conversation's traffic).
    #[arg(long, default_value = "chat", value_parser = parse_mix)]
    mix: loadgen::Mix,
    /// Print the events as JSON lines on stdout instead of producing them.
    #[arg(long)]
    dry_run: bool,
}

fn parse_mix(text: &str) -> Result<loadgen::Mix, String> {
    match text {
        "chat" => Ok(loadgen::Mix::Chat),
        "posts" => Ok(loadgen::Mix::Posts),
        _ => Err(format!("unknown mix {text:?}: give chat or posts")),
    }
}

fn parse_start(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if text == "now" {
        return Ok(chrono::Utc::now());
    }
    text.parse()
        .map_err(|e| format!("{e}: give an RFC 3339 time such as 2026-01-01T00:00:00Z, or now"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let generator = Generator::new(Options {
        seed: args.seed,
        id_prefix: args.id_prefix.clone(),
        companies: args.companies,
        people_per_company: args.people_per_company,
        conversations_per_company: args.conversations_per_company,
        content_events: args.events,
        start: args.start,
        span: match args.span_seconds {
            Some(seconds) => chrono::Duration::seconds(seconds),
            None => chrono::Duration::days(args.span_days),
        },
        large_teams: args.large_teams.clone(),
        mix: args.mix,
    });
    if args.dry_run {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for message in generator {
            out.write_all(&message.payload)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .context("creating the Kafka producer")?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut in_flight = futures_window::Window::new(20_000);
    for message in generator {
        bytes += message.payload.len() as u64;
        let delivery = producer
            .send_result(
                FutureRecord::to(&args.topic)
                    .key(&message.key)
                    .payload(&message.payload),
            )
            .map_err(|(e, _)| e)
            .context("enqueueing an event")?;
        in_flight.push(delivery).await?;
        sent += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "[loadgen] {sent} events produced ({:.0}/s)",
                sent as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    in_flight.drain().await?;
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the producer")?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "[loadgen] produced {sent} events ({:.1} MB) to {} in {secs:.1}s: {:.0} events/s",
        bytes as f64 / 1e6,
        args.topic,
        sent as f64 / secs
    );
    Ok(())
}

/// A bounded window of delivery futures: waits for the oldest when full, so memory stays flat
/// and every delivery is checked.
mod futures_window {
    use std::collections::VecDeque;

    use anyhow::Context;
    use rdkafka::producer::DeliveryFuture;

    pub struct Window {
        limit: usize,
        pending: VecDeque<DeliveryFuture>,
    }

    impl Window {
        pub fn new(limit: usize) -> Self {
            Self {
                limit,
                pending: VecDeque::new(),
            }
        }

        pub async fn push(&mut self, delivery: DeliveryFuture) -> anyhow::Result<()> {
            self.pending.push_back(delivery);
            while self.pending.len() > self.limit {
                if let Some(oldest) = self.pending.pop_front() {
                    check(oldest).await?;
                }
            }
            Ok(())
        }

        pub async fn drain(&mut self) -> anyhow::Result<()> {
            while let Some(oldest) = self.pending.pop_front() {
                check(oldest).await?;
            }
            Ok(())
        }
    }

    async fn check(delivery: DeliveryFuture) -> anyhow::Result<()> {
        delivery
            .await
            .context("the producer dropped a delivery")?
            .map_err(|(e, _)| e)
            .context("the broker refused an event")?;
        Ok(())
    }
}
