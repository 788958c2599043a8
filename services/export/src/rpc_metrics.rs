//! Per-RPC metrics as one tower layer around the gRPC service, instead of a call in every
//! handler: each call is counted by method and gRPC code (`cce_export_rpcs_total`) and timed by
//! method (`cce_export_rpc_seconds`); calls that fail with UNAVAILABLE are logged.
//!
//! The code is read from the response's headers: a handler's error becomes a trailers-only
//! response whose headers carry `grpc-status`; a response without it is the handler's `Ok`
//! (for a streaming call, the stream was opened; how the stream ends is not counted). The time
//! runs until the handler returns, not until a streamed response ends.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use prost::Message;
use tonic::codegen::http;
use tonic::server::NamedService;

use crate::metrics::Metrics;

/// The method label of a path that names no method of the service (bounded label values).
const UNKNOWN_METHOD: &str = "unknown";

/// Wraps a gRPC service so that every call is counted and timed.
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    metrics: Metrics,
    /// The service's method names: only these become label values.
    methods: Arc<HashSet<String>>,
}

impl RpcMetricsLayer {
    /// A layer for the service `service` (full name, e.g. `compliance.export.v1.…Service`),
    /// whose methods are read from the encoded file descriptor set `descriptors`.
    pub fn new(metrics: Metrics, descriptors: &[u8], service: &str) -> anyhow::Result<Self> {
        let set = prost_types::FileDescriptorSet::decode(descriptors)
            .context("decoding the gRPC file descriptor set")?;
        let methods: HashSet<String> = set
            .file
            .iter()
            .flat_map(|file| {
                let package = file.package();
                file.service
                    .iter()
                    .filter(move |s| {
                        let full = if package.is_empty() {
                            s.name().to_owned()
                        } else {
                            format!("{package}.{}", s.name())
                        };
                        full == service
                    })
                    .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
            })
            .collect();
        anyhow::ensure!(
            !methods.is_empty(),
            "the file descriptor set has no methods for the service {service}"
        );
        Ok(Self {
            metrics,
            methods: Arc::new(methods),
        })
    }

    /// The label for a request path `/<service>/<method>`.
    fn method(&self, path: &str) -> String {
        path.rsplit_once('/')
            .map(|(_, method)| method)
            .filter(|method| self.methods.contains(*method))
            .unwrap_or(UNKNOWN_METHOD)
            .to_owned()
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// A gRPC service whose calls are counted and timed; see [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    layer: RpcMetricsLayer,
}

/// Served under the wrapped service's name.
impl<S: NamedService> NamedService for RpcMetrics<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.layer.method(request.uri().path());
        let metrics = self.layer.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let status = match &response {
                Ok(response) => tonic::Status::from_header_map(response.headers()),
                // The transport failed the call: no gRPC code reached the client.
                Err(_) => Some(tonic::Status::unknown("the service failed the call")),
            };
            let code = status.as_ref().map_or(tonic::Code::Ok, tonic::Status::code);
            metrics
                .rpcs
                .with_label_values(&[method.as_str(), &format!("{code:?}")])
                .inc();
            metrics
                .rpc_seconds
                .with_label_values(&[method.as_str()])
                .observe(started.elapsed().as_secs_f64());
            if let Some(status) = &status
                && status.code() == tonic::Code::Unavailable
            {
                tracing::warn!(%method, message = status.message(), "RPC failed");
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> RpcMetricsLayer {
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        RpcMetricsLayer::new(metrics, proto::v1::FILE_DESCRIPTOR_SET, crate::SERVICE_NAME).unwrap()
    }

    #[test]
    fn methods_come_from_the_descriptor_and_other_paths_are_unknown() {
        let layer = layer();
        assert_eq!(layer.methods.len(), 19, "{:?}", layer.methods);
        let service = crate::SERVICE_NAME;
        assert_eq!(layer.method(&format!("/{service}/GetExport")), "GetExport");
        assert_eq!(
            layer.method(&format!("/{service}/WatchExport")),
            "WatchExport"
        );
        for other in [format!("/{service}/DropTables"), "/".into(), String::new()] {
            assert_eq!(layer.method(&other), UNKNOWN_METHOD, "{other:?}");
        }
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        let wrong = RpcMetricsLayer::new(metrics, proto::v1::FILE_DESCRIPTOR_SET, "no.Such");
        assert!(wrong.is_err());
    }
}
