//! The ingestion service: chat events from Kafka into each company's compliance log on S3.
//!
//! Step 1 provides the service skeleton (configuration, health, metrics, graceful shutdown and
//! a readiness check of both dependencies); the consumer lands with Step 2.

mod config;

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use telemetry::{CancellationToken, Health, OpsServer};

pub use config::Config;

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let health = Health::default();
    let ops = OpsServer::start(config.ops_addr, health.clone(), registry, shutdown.clone()).await?;
    let store = storage::S3Store::connect(&config.s3).await;

    while !shutdown.is_cancelled() {
        let ready = dependencies_answer(&config, &store).await;
        health.set_ready(ready);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(if ready { 15 } else { 2 })) => {}
        }
    }
    tracing::info!("ingestion stopped");
    ops.task.await.context("joining the ops endpoint")?;
    Ok(())
}

/// Whether the broker and the bucket both answer; logs what does not.
async fn dependencies_answer(config: &Config, store: &storage::S3Store) -> bool {
    let brokers = config.kafka_brokers.clone();
    let topic = config.events_topic.clone();
    let kafka = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()?;
        consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
        Ok(())
    })
    .await;
    let kafka_ok = match kafka {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(brokers = %config.kafka_brokers, %error, "kafka does not answer");
            false
        }
        Err(error) => {
            tracing::warn!(%error, "kafka check panicked");
            false
        }
    };
    let s3_ok = match storage::ObjectStore::list_page(store, "", None, 1).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(bucket = %config.s3.bucket, %error, "object store does not answer");
            false
        }
    };
    kafka_ok && s3_ok
}
