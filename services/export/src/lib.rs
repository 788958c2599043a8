//! The export service: the admin portal's gRPC API over the compliance logs.
//!
//! Built so far: the service skeleton (configuration, the standard gRPC health service, server
//! reflection, the ops endpoint, graceful shutdown), token verification ([`auth`]) and the access
//! rules ([`access`]). The export API itself (`compliance.export.v1.ComplianceExportService`,
//! Step 4) is not served yet; until then the health service reports it `NOT_SERVING`.

pub mod access;
pub mod auth;
mod config;

use anyhow::Context;
use telemetry::{CancellationToken, Health, OpsServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::Config;

/// The service name clients check with the gRPC health protocol.
pub const SERVICE_NAME: &str = "compliance.export.v1.ComplianceExportService";

/// A started export service: where it listens, and the task to await after cancelling.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: std::net::SocketAddr,
    pub ops_addr: std::net::SocketAddr,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds the gRPC and ops listeners and serves until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let registry = prometheus::Registry::new();
    let health = Health::default();
    let ops = OpsServer::start(config.ops_addr, health.clone(), registry, shutdown.clone()).await?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::NotServing)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;

    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC address {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    tracing::info!(%grpc_addr, "gRPC listening");
    health.set_ready(true);

    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
            .await
            .context("serving gRPC")?;
        ops.task.await.context("joining the ops endpoint")?;
        tracing::info!("export service stopped");
        Ok(())
    });
    Ok(Running {
        grpc_addr,
        ops_addr: ops.local_addr,
        task,
    })
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.task.await.context("joining the export service")?
}
