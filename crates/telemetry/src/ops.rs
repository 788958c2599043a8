//! The operations HTTP endpoint: health, readiness and Prometheus metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// Readiness flag a service flips once its dependencies answer, and back when they stop.
/// Liveness (`/healthz`) only says the process serves requests.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct OpsState {
    health: Health,
    registry: Registry,
}

/// A running operations endpoint. Dropping it does not stop it; cancel the token it was
/// started with.
#[derive(Debug)]
pub struct OpsServer {
    /// The address it listens on (useful when started on port 0).
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

impl OpsServer {
    /// Binds `addr` and serves `/healthz`, `/readyz` and `/metrics` until `shutdown` fires.
    pub async fn start(
        addr: SocketAddr,
        health: Health,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the ops endpoint on {addr}: {e}"))?;
        let local_addr = listener.local_addr()?;
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(OpsState { health, registry });
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "ops endpoint stopped");
            }
        });
        tracing::info!(%local_addr, "ops endpoint listening (/healthz, /readyz, /metrics)");
        Ok(Self { local_addr, task })
    }
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            format!("cannot encode metrics: {error}\n").into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("demo_total", "a demo counter").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let server = OpsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            health.clone(),
            registry,
            shutdown.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{}", server.local_addr);
        let client = reqwest::Client::new();

        let live = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(live.status(), 200);
        let not_ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(not_ready.status(), 503);
        health.set_ready(true);
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert!(metrics.text().await.unwrap().contains("demo_total 3"));

        shutdown.cancel();
        server.task.await.unwrap();
    }
}
