//! Operations plumbing shared by both services.
//!
//! - [`init_tracing`]: structured logs (text or JSON) filtered by `RUST_LOG`.
//! - [`OpsServer`]: `GET /healthz` (liveness), `GET /readyz` (readiness) and `GET /metrics`
//!   (Prometheus text format) on a separate port from the service's own traffic.
//! - [`shutdown_on_signal`]: a [`CancellationToken`] cancelled on SIGTERM or Ctrl-C.

mod ops;

pub use ops::{Health, OpsServer};
pub use tokio_util::sync::CancellationToken;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// Installs the global `tracing` subscriber. The filter comes from `RUST_LOG` (default `info`).
/// Calling it twice is harmless: the second call keeps the first subscriber.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Returns a token that is cancelled when the process receives SIGTERM or SIGINT (Ctrl-C).
/// Services stop taking work when it fires and finish in-flight work within their deadline.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fired = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                    _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        fired.cancel();
    });
    token
}
