//! The compaction loop of `cce-ingestion`: every interval, one compaction pass over the events
//! topic's log (closed days rewritten into per-company objects), then garbage collection of
//! segments that were compacted and outlived their retention.
//!
//! The loop holds no state: a pass's outcome lives in the log (its pass record), and a pass is
//! deterministic and safe to kill at any point, so stopping mid-pass on shutdown loses nothing
//! and two replicas running the loop at once do no harm.
//!
//! It runs on a thread of its own with a single-threaded runtime and its own S3 client: a pass is
//! CPU work (merging, sorting, hashing) that must not take the consumer's workers, and the
//! compactor's futures are not `Send` (so they could not be spawned on the shared runtime).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use compliance_log::compact::{CompactionConfig, Compactor};
use telemetry::CancellationToken;

use crate::Config;
use crate::metrics::Metrics;

/// What the loop needs from the compactor (the `compliance-log` compactor implements it).
#[async_trait(?Send)]
pub trait Compaction {
    /// Runs one pass; returns a one-line summary when it wrote one, `None` when there was
    /// nothing to compact.
    async fn run_pass(&self, now: DateTime<Utc>) -> anyhow::Result<Option<String>>;
    /// Deletes segments compacted and older than the retention; returns how many.
    async fn collect_garbage(&self, now: DateTime<Utc>) -> anyhow::Result<u64>;
}

/// Starts the compaction loop on a thread of its own when this replica compacts
/// (`--compaction on`); it stops when `stop` fires (a pass in progress is dropped).
pub fn spawn(
    config: &Config,
    metrics: Metrics,
    stop: CancellationToken,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    if config.compaction == crate::Switch::Off {
        return Ok(None);
    }
    let settings = CompactionConfig {
        grace: config.compaction_grace(),
        retention: config.segment_retention(),
        ..CompactionConfig::new(&config.events_topic)
    };
    let (s3, every) = (config.s3.clone(), config.compaction_interval());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("cce-compaction".into())
        .spawn(move || {
            runtime.block_on(async move {
                let store = Arc::new(storage::S3Store::connect(&s3).await);
                let compactor = Compactor::new(store, settings);
                run_loop(&compactor, every, &metrics, &stop).await;
            });
        })?;
    Ok(Some(thread))
}

#[async_trait(?Send)]
impl Compaction for Compactor {
    async fn run_pass(&self, now: DateTime<Utc>) -> anyhow::Result<Option<String>> {
        let summary = Compactor::run_pass(self, now).await?;
        Ok(summary.map(|s| {
            format!(
                "pass {} ({}), horizon {}: read {} records of {} segments, wrote {} records \
                 in {} parts and {} metadata days",
                s.pass.seq,
                s.pass.hash,
                s.horizon.to_rfc3339(),
                s.read.records,
                s.read.segments,
                s.wrote.records,
                s.wrote.parts,
                s.wrote.meta_days
            )
        }))
    }

    async fn collect_garbage(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        Ok(Compactor::collect_garbage(self, now).await?)
    }
}

/// How often garbage collection runs. Collection walks every compacted object of the topic's
/// companies (`Compactor::collect_garbage`), so it runs a few times a day rather than after
/// every pass: its LISTs then stay a small share of the compactor's requests however many
/// companies and days the log holds. Deletion is only due days after a pass anyway
/// (`CCE_SEGMENT_RETENTION_DAYS`).
pub const COLLECT_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Whether garbage collection is due: first after start, then every [`COLLECT_EVERY`].
fn collection_due(last: Option<std::time::Instant>) -> bool {
    last.is_none_or(|at| at.elapsed() >= COLLECT_EVERY)
}

/// Runs a pass every `every` until `stop` fires (the first one right away).
pub async fn run_loop(
    compaction: &dyn Compaction,
    every: Duration,
    metrics: &Metrics,
    stop: &CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut collected: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let collect = collection_due(collected);
        // A pass cut short by shutdown is redone by the next one (passes are idempotent).
        tokio::select! {
            _ = stop.cancelled() => return,
            () = once(compaction, metrics, collect) => {}
        }
        if collect {
            collected = Some(std::time::Instant::now());
        }
    }
}

/// One pass and, when `collect`, one garbage collection; failures are logged and retried at
/// the next interval.
async fn once(compaction: &dyn Compaction, metrics: &Metrics, collect: bool) {
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
    if !collect {
        return;
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

    #[async_trait(?Send)]
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
        once(&recorder, &metrics, true).await;
        assert_eq!(*recorder.calls.lock().unwrap(), ["pass", "gc"]);
        let compacted = metrics.compaction_passes.with_label_values(&["compacted"]);
        assert_eq!(compacted.get(), 1);
    }

    #[tokio::test]
    async fn garbage_collection_runs_only_when_due() {
        let recorder = Recorder::default();
        once(&recorder, &metrics(), false).await;
        assert_eq!(*recorder.calls.lock().unwrap(), ["pass"]);
        assert!(collection_due(None));
        assert!(!collection_due(Some(std::time::Instant::now())));
    }

    #[tokio::test]
    async fn a_failed_pass_collects_nothing_and_is_counted() {
        let recorder = Recorder {
            fail_pass: true,
            ..Recorder::default()
        };
        let metrics = metrics();
        once(&recorder, &metrics, true).await;
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
        let recorder = Recorder::default();
        let metrics = metrics();
        let looping = run_loop(&recorder, Duration::from_secs(3600), &metrics, &stop);
        let stopper = async {
            // The first pass runs at once; then the loop waits an hour unless told.
            while recorder.calls.lock().unwrap().len() < 2 {
                tokio::task::yield_now().await;
            }
            stop.cancel();
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(looping, stopper)
        })
        .await
        .expect("the loop stops");
        assert_eq!(*recorder.calls.lock().unwrap(), ["pass", "gc"]);
    }
}
