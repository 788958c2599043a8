//! The ingestion service: chat events from Kafka into each company's compliance log on S3.
//!
//! [`run`] (or [`start`], for tests that need the bound addresses) wires the pieces: the
//! consumer loop ([`consumer`]), the dead-letter producer ([`dead_letter`]), the log writer
//! (`compliance-log`), metrics and the ops endpoint.

mod config;
pub mod consumer;
pub mod dead_letter;
pub mod lag;
mod metrics;
mod retry;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use compliance_log::V1Writer;
use dead_letter::DeadLetters;
use telemetry::{CancellationToken, Health, OpsServer};

pub use config::Config;
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
    let lag_task = lag::spawn_monitor(lag, metrics.clone(), lag_stop.clone());
    let parts = consumer::Parts {
        writer: V1Writer::new(store),
        dead_letters,
        metrics,
        health: health.clone(),
    };
    let task = tokio::spawn(async move {
        let result = consumer::run(&config, parts, shutdown).await;
        lag_stop.cancel();
        let _ = lag_task.await;
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
