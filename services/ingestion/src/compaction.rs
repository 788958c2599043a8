//! The compaction loop of `cce-ingestion`: every interval, one compaction pass over the events
//! topic's log (closed days rewritten into per-company objects), then garbage collection of
//! segments that were compacted and outlived their retention.
//!
//! The loop holds no state: a pass's outcome lives in the log (its pass record), and a pass is
//! deterministic and safe to kill at any point, so stopping mid-pass on shutdown loses nothing
//! and two replicas running the loop at once do no harm.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use telemetry::CancellationToken;
use tokio::task::JoinHandle;

use crate::Config;
use crate::metrics::Metrics;

/// What the loop needs from the compactor (the `compliance-log` compactor implements it).
#[async_trait]
pub trait Compaction: Send + Sync + 'static {
    /// Runs one pass; returns a one-line summary when it wrote one, `None` when there was
    /// nothing to compact.
    async fn run_pass(&self, now: DateTime<Utc>) -> anyhow::Result<Option<String>>;
    /// Deletes segments compacted and older than the retention; returns how many.
    async fn collect_garbage(&self, now: DateTime<Utc>) -> anyhow::Result<u64>;
}

/// The compactor of the events topic's log, when this replica compacts (`--compaction on`).
///
/// TODO(issue 10): plug in `compliance_log::compact::Compactor` (being written on another
/// branch): `Compactor::new(store, CompactionConfig { topic: config.events_topic, grace:
/// config.compaction_grace(), retention: config.segment_retention(), max_chunk_bytes: 64 MiB })`
/// with `impl Compaction for Compactor`. Until then this build has no compactor and says so.
pub fn compactor(
    _store: Arc<dyn storage::ObjectStore>,
    config: &Config,
) -> Option<Arc<dyn Compaction>> {
    if config.compaction == crate::Switch::Off {
        return None;
    }
    tracing::warn!("compaction is on but this build has no compactor yet; not compacting");
    None
}

/// Runs a pass every `every` until `stop` fires (the first one right away).
pub fn spawn_loop(
    compaction: Arc<dyn Compaction>,
    every: Duration,
    metrics: Metrics,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // A pass cut short by shutdown is redone by the next one (passes are idempotent).
            tokio::select! {
                _ = stop.cancelled() => return,
                () = once(compaction.as_ref(), &metrics) => {}
            }
        }
    })
}

/// One pass and one garbage collection; failures are logged and retried at the next interval.
async fn once(compaction: &dyn Compaction, metrics: &Metrics) {
    let now = Utc::now();
    match compaction.run_pass(now).await {
        Ok(Some(summary)) => {
            metrics
                .compaction_passes
                .with_label_values(&["compacted"])
                .inc();
            tracing::info!(%summary, "compaction pass written");
        }
        Ok(None) => {
            metrics.compaction_passes.with_label_values(&["idle"]).inc();
            tracing::debug!("nothing to compact");
        }
        Err(error) => {
            metrics
                .compaction_passes
                .with_label_values(&["failed"])
                .inc();
            tracing::warn!(
                error = format!("{error:#}"),
                "compaction pass failed; retrying at the next interval"
            );
            return;
        }
    }
    match compaction.collect_garbage(now).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "deleted compacted segments past their retention"),
        Err(error) => tracing::warn!(
            error = format!("{error:#}"),
            "collecting compacted segments failed; retrying at the next interval"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<&'static str>>,
        fail_pass: bool,
    }

    #[async_trait]
    impl Compaction for Recorder {
        async fn run_pass(&self, _now: DateTime<Utc>) -> anyhow::Result<Option<String>> {
            self.calls.lock().unwrap().push("pass");
            if self.fail_pass {
                anyhow::bail!("store down");
            }
            Ok(Some("seq 1".into()))
        }
        async fn collect_garbage(&self, _now: DateTime<Utc>) -> anyhow::Result<u64> {
            self.calls.lock().unwrap().push("gc");
            Ok(2)
        }
    }

    fn metrics() -> Metrics {
        Metrics::register(&prometheus::Registry::new()).unwrap()
    }

    #[tokio::test]
    async fn a_pass_then_garbage_collection_and_counted() {
        let recorder = Recorder::default();
        let metrics = metrics();
        once(&recorder, &metrics).await;
        assert_eq!(*recorder.calls.lock().unwrap(), ["pass", "gc"]);
        let compacted = metrics.compaction_passes.with_label_values(&["compacted"]);
        assert_eq!(compacted.get(), 1);
    }

    #[tokio::test]
    async fn a_failed_pass_collects_nothing_and_is_counted() {
        let recorder = Recorder {
            fail_pass: true,
            ..Recorder::default()
        };
        let metrics = metrics();
        once(&recorder, &metrics).await;
        assert_eq!(*recorder.calls.lock().unwrap(), ["pass"]);
        assert_eq!(
            metrics
                .compaction_passes
                .with_label_values(&["failed"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn the_loop_stops_when_told() {
        let stop = CancellationToken::new();
        let task = spawn_loop(
            Arc::new(Recorder::default()),
            Duration::from_secs(3600),
            metrics(),
            stop.clone(),
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop stops")
            .unwrap();
    }
}
