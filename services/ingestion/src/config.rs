//! The ingestion service's configuration: every field settable by flag and by `CCE_*` variable.

use std::net::SocketAddr;

use storage::S3Config;
use telemetry::LogFormat;

/// Consumes chat events from Kafka into each company's compliance log on S3.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "cce-ingestion", version)]
pub struct Config {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(long, env = "CCE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topic the chat platform publishes its events to.
    #[arg(long, env = "CCE_EVENTS_TOPIC", default_value = "chat-events")]
    pub events_topic: String,
    /// Topic that receives events which cannot be ingested, with the reason in headers.
    #[arg(long, env = "CCE_DEAD_LETTER_TOPIC", default_value = "chat-events-dlq")]
    pub dead_letter_topic: String,
    /// Consumer group shared by every ingestion replica.
    #[arg(long, env = "CCE_INGEST_GROUP", default_value = "cce-ingestion")]
    pub group_id: String,
    #[command(flatten)]
    pub s3: S3Config,
    /// Address of the health (`/healthz`, `/readyz`) and metrics (`/metrics`) endpoint.
    #[arg(long, env = "CCE_INGEST_OPS_ADDR", default_value = "127.0.0.1:9101")]
    pub ops_addr: SocketAddr,
    /// Log line format on stderr.
    #[arg(long, env = "CCE_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}
