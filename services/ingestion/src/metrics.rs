//! The ingestion service's Prometheus metrics. Constant names; no company id as a label.

use event_model::RejectReason;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub consumed: IntCounter,
    pub appended: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub objects_written: IntCounter,
    pub bytes_written: IntCounter,
    pub flush_seconds: Histogram,
    pub write_retries: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub buffered_events: IntGauge,
    pub dead_letter_deliveries: IntCounterVec,
    pub partition_stalled: IntGaugeVec,
    pub stalled_partitions: IntGauge,
    pub lag_checks_failed: IntCounter,
    /// Log objects written (v2), by kind: `segment`, `watermark`, `epoch`.
    pub log_objects: IntCounterVec,
    /// Object-store PUTs per partition flush (segment and watermark pointer).
    pub puts_per_flush: Histogram,
    /// Compaction passes by outcome.
    pub compaction_passes: IntCounterVec,
}

/// The kinds of log objects ingestion writes, as `cce_log_objects_written_total` labels them.
pub const LOG_OBJECT_KINDS: [&str; 3] = ["segment", "watermark", "epoch"];

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            consumed: IntCounter::new(
                "cce_ingest_events_consumed_total",
                "Kafka messages consumed",
            )?,
            appended: IntCounterVec::new(
                Opts::new(
                    "cce_ingest_events_appended_total",
                    "Events appended to company logs (one per company an event is routed to)",
                ),
                &["type"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "cce_ingest_dead_lettered_total",
                    "Messages sent to the dead-letter topic",
                ),
                &["reason"],
            )?,
            objects_written: IntCounter::new(
                "cce_ingest_log_objects_written_total",
                "Log objects written to the object store",
            )?,
            bytes_written: IntCounter::new(
                "cce_ingest_log_bytes_written_total",
                "Bytes of log objects written to the object store",
            )?,
            flush_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "cce_ingest_flush_duration_seconds",
                    "Time to make one partition's buffered events durable",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
            write_retries: IntCounter::new(
                "cce_ingest_write_retries_total",
                "Log writes retried after a store error",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "cce_ingest_consumer_lag",
                    "Messages between the group's committed offset and the broker's high watermark, per partition of the events topic (read from the broker every 5 s, whoever owns the partition)",
                ),
                &["partition"],
            )?,
            buffered_events: IntGauge::new(
                "cce_ingest_buffered_events",
                "Events consumed and not yet durable in the log",
            )?,
            dead_letter_deliveries: IntCounterVec::new(
                Opts::new(
                    "cce_ingest_dead_letter_deliveries_total",
                    "Dead letters delivered, by how: topic (whole message), pointer (bytes on the object store, pointer on the topic), store_only (the topic could not take even a pointer)",
                ),
                &["delivery"],
            )?,
            partition_stalled: IntGaugeVec::new(
                Opts::new(
                    "cce_ingest_partition_stalled",
                    "1 while a partition's flush has been failing for longer than the stall threshold",
                ),
                &["partition"],
            )?,
            stalled_partitions: IntGauge::new(
                "cce_ingest_stalled_partitions",
                "Partitions that cannot make progress (their flush failing past the stall threshold)",
            )?,
            lag_checks_failed: IntCounter::new(
                "cce_ingest_lag_checks_failed_total",
                "Reads of the broker's watermarks and the group's committed offsets that failed",
            )?,
            log_objects: IntCounterVec::new(
                Opts::new(
                    "cce_log_objects_written_total",
                    "Log objects (format v2) written by kind: segment (one per partition flush), watermark (the partition's pointer), epoch (a marker)",
                ),
                &["kind"],
            )?,
            puts_per_flush: Histogram::with_opts(
                HistogramOpts::new(
                    "cce_log_puts_per_flush",
                    "Object-store PUTs of one partition flush (segment and watermark pointer)",
                )
                .buckets(vec![0.0, 1.0, 2.0, 3.0, 4.0, 8.0, 16.0]),
            )?,
            compaction_passes: IntCounterVec::new(
                Opts::new(
                    "cce_log_compaction_passes_total",
                    "Compaction passes by outcome: compacted (a pass record written), idle (nothing to compact), failed",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(metrics.consumed.clone()))?;
        registry.register(Box::new(metrics.appended.clone()))?;
        registry.register(Box::new(metrics.dead_lettered.clone()))?;
        registry.register(Box::new(metrics.objects_written.clone()))?;
        registry.register(Box::new(metrics.bytes_written.clone()))?;
        registry.register(Box::new(metrics.flush_seconds.clone()))?;
        registry.register(Box::new(metrics.write_retries.clone()))?;
        registry.register(Box::new(metrics.consumer_lag.clone()))?;
        registry.register(Box::new(metrics.buffered_events.clone()))?;
        registry.register(Box::new(metrics.dead_letter_deliveries.clone()))?;
        registry.register(Box::new(metrics.partition_stalled.clone()))?;
        registry.register(Box::new(metrics.stalled_partitions.clone()))?;
        registry.register(Box::new(metrics.lag_checks_failed.clone()))?;
        registry.register(Box::new(metrics.log_objects.clone()))?;
        registry.register(Box::new(metrics.puts_per_flush.clone()))?;
        registry.register(Box::new(metrics.compaction_passes.clone()))?;
        for kind in LOG_OBJECT_KINDS {
            metrics.log_objects.with_label_values(&[kind]);
        }
        for outcome in ["compacted", "idle", "failed"] {
            metrics.compaction_passes.with_label_values(&[outcome]);
        }
        // Every reason shows from the start, at zero, so alerts need no "absent" special case.
        for reason in RejectReason::ALL {
            metrics.dead_lettered.with_label_values(&[reason.as_str()]);
        }
        for delivery in crate::dead_letter::Delivery::ALL {
            metrics
                .dead_letter_deliveries
                .with_label_values(&[delivery.as_str()]);
        }
        Ok(metrics)
    }
}
