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
}

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
                    "Messages behind the high watermark",
                ),
                &["partition"],
            )?,
            buffered_events: IntGauge::new(
                "cce_ingest_buffered_events",
                "Events consumed and not yet durable in the log",
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
        // Every reason shows from the start, at zero, so alerts need no "absent" special case.
        for reason in RejectReason::ALL {
            metrics.dead_lettered.with_label_values(&[reason.as_str()]);
        }
        Ok(metrics)
    }
}
