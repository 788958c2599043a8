//! The export service's configuration: every field settable by flag and by `CCE_*` variable.

use std::net::SocketAddr;

use storage::S3Config;
use telemetry::LogFormat;

/// Serves the compliance export API to the admin portal.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "cce-export", version)]
pub struct Config {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(long, env = "CCE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    #[command(flatten)]
    pub s3: S3Config,
    /// Address the gRPC API listens on.
    #[arg(long, env = "CCE_EXPORT_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the health (`/healthz`, `/readyz`) and metrics (`/metrics`) endpoint.
    #[arg(long, env = "CCE_EXPORT_OPS_ADDR", default_value = "127.0.0.1:9102")]
    pub ops_addr: SocketAddr,
    /// Log line format on stderr.
    #[arg(long, env = "CCE_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}
