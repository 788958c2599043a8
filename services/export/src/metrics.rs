//! The export service's Prometheus metrics (`cce_export_*`).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    /// RPCs by method and gRPC code.
    pub rpcs: IntCounterVec,
    /// RPC handling time by method, in seconds (until the handler returns).
    pub rpc_seconds: HistogramVec,
    /// Export runs ended on this replica, by result (completed, failed, cancelled, lost_lease,
    /// released).
    pub runs: IntCounterVec,
    /// Exports running on this replica.
    pub running: IntGauge,
    /// Notifications sent, by channel (email, kafka) and result (sent, failed, skipped).
    pub notifications: IntCounterVec,
    /// Finished exports whose notification this replica gave up on after every attempt failed.
    pub notifications_given_up: IntCounter,
    /// Calls refused by a fair-share limit, by limit (queued_per_company, watches_per_admin).
    pub limited: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let rpcs = IntCounterVec::new(
            Opts::new("cce_export_rpcs_total", "RPCs by method and gRPC code"),
            &["method", "code"],
        )?;
        let rpc_seconds = HistogramVec::new(
            HistogramOpts::new("cce_export_rpc_seconds", "RPC handling time by method"),
            &["method"],
        )?;
        let runs = IntCounterVec::new(
            Opts::new("cce_export_runs_total", "Export runs ended here, by result"),
            &["result"],
        )?;
        let running = IntGauge::new("cce_export_running", "Exports running on this replica")?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "cce_export_notifications_total",
                "Notifications by channel and result",
            ),
            &["channel", "result"],
        )?;
        let notifications_given_up = IntCounter::new(
            "cce_export_notifications_given_up_total",
            "Finished exports whose notification was given up after every attempt failed",
        )?;
        let limited = IntCounterVec::new(
            Opts::new(
                "cce_export_limited_total",
                "Calls refused by a fair-share limit, by limit",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(rpcs.clone()))?;
        registry.register(Box::new(notifications_given_up.clone()))?;
        registry.register(Box::new(limited.clone()))?;
        registry.register(Box::new(rpc_seconds.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(running.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        Ok(Self {
            rpcs,
            rpc_seconds,
            runs,
            running,
            notifications,
            notifications_given_up,
            limited,
        })
    }
}
