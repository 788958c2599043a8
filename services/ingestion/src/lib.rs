//! The ingestion service: chat events from Kafka into each company's compliance log on S3.
//!
//! [`run`] (or [`start`], for tests that need the bound addresses) wires the pieces: the
//! consumer loop ([`consumer`]), the dead-letter producer ([`dead_letter`]), the log writer
//! (`compliance-log`), the lag reader and its time-watermark probes ([`lag`]), the compaction
//! loop ([`compaction`]), metrics and the ops endpoint.

pub mod compaction;
mod config;
pub mod consumer;
pub mod dead_letter;
mod flusher;
pub mod lag;
pub mod lineage;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use compliance_log::LogWriter;
use dead_letter::DeadLetters;
use telemetry::{CancellationToken, Health, OpsServer};

pub use config::{Config, Switch};
pub use metrics::Metrics;

/// A started ingestion service.
#[derive(Debug)]
pub struct Running {
    pub ops_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Validates the config, binds the ops endpoint and starts consuming in the background.
/// Needs the multi-thread Tokio runtime (the rebalance callback drains with `block_in_place`).
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).context("registering metrics")?;
    let health = Health::default();
    // The ops endpoint outlives the consumer by its own token, so health stays visible while
    // the consumer drains.
    let ops_shutdown = CancellationToken::new();
    let ops = OpsServer::start(
        config.ops_addr,
        health.clone(),
        registry,
        ops_shutdown.clone(),
    )
    .await?;
    let store: Arc<dyn storage::ObjectStore> =
        Arc::new(storage::S3Store::connect(&config.s3).await);
    let dead_letters = DeadLetters::new(
        &config.kafka_brokers,
        &config.dead_letter_topic,
        Arc::clone(&store),
        &config.s3.bucket,
        config.dead_letter_topic_wait(),
    )
    .context("creating the dead-letter producer")?;
    let lag = lag::LagReader::new(
        &config.kafka_brokers,
        &config.group_id,
        &config.events_topic,
    )
    .context("creating the lag reader")?;
    let lag_stop = CancellationToken::new();
    let probes = lag::Probes::default();
    let lag_task = lag::spawn_monitor(lag, metrics.clone(), probes.clone(), lag_stop.clone());
    let lineage = lineage::KafkaLineage::new(&config.kafka_brokers, &config.events_topic)
        .context("creating the lineage reader")?;
    // Compaction runs beside the consumer and stops with it; a pass cut short is redone.
    let compaction_thread = compaction::spawn(&config, metrics.clone(), lag_stop.clone())
        .context("starting the compaction loop")?;
    let parts = consumer::Parts {
        writer: LogWriter::new(store),
        lineage,
        dead_letters,
        metrics,
        health: health.clone(),
        probes,
    };
    let task = tokio::spawn(async move {
        let result = consumer::run(&config, parts, shutdown).await;
        lag_stop.cancel();
        let _ = lag_task.await;
        if let Some(thread) = compaction_thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        health.set_ready(false);
        ops_shutdown.cancel();
        ops.task.await.context("joining the ops endpoint")?;
        tracing::info!("ingestion stopped");
        result
    });
    Ok(Running {
        ops_addr: ops.local_addr,
        task,
    })
}

/// Runs the service until `shutdown` is cancelled and the consumer has drained.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running
        .task
        .await
        .context("joining the ingestion service")?
}
