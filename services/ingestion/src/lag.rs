//! Consumer lag from the broker's point of view: for every partition of the events topic, the
//! high watermark minus the group's committed offset, read every few seconds by a client of its
//! own. Unlike librdkafka's statistics it does not depend on this consumer polling or owning the
//! partition, so a stuck partition shows its true, growing lag (never a stale 0). Every replica
//! reports the whole topic: aggregate with `max` across replicas.
//!
//! The same reads are the log's time-watermark probes ([`Probes`]): the instant taken before
//! asking for a partition's high watermark, and the answer. Once a partition's log is durable up
//! to that high watermark, everything published before the instant is in the log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use compliance_log::Probe;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use telemetry::CancellationToken;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(5);

/// One partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    /// The offset the next produced message gets.
    pub high_watermark: i64,
    /// When the high watermark was asked for (taken before the request).
    pub probe: Probe,
    /// The group's committed offset (the next to consume), if it has one.
    pub committed: Option<i64>,
    pub lag: i64,
}

/// Lag when the group has committed `committed` and the partition holds `[low, high)`.
pub fn lag_of(low: i64, high: i64, committed: Option<i64>) -> i64 {
    (high - committed.unwrap_or(low).max(low)).max(0)
}

/// A client that reads the group's positions without joining the group.
pub struct LagReader {
    consumer: BaseConsumer,
    topic: String,
}

impl std::fmt::Debug for LagReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagReader")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl LagReader {
    pub fn new(brokers: &str, group: &str, topic: &str) -> anyhow::Result<Self> {
        // Same group id, but never subscribes: it only asks the coordinator for the group's
        // committed offsets, so it takes no part in rebalances.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
        })
    }

    /// Reads every partition's position (blocking: call from a blocking thread).
    pub fn read(&self) -> anyhow::Result<Vec<PartitionLag>> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        anyhow::ensure!(
            !partitions.is_empty(),
            "topic {} has no partitions (does it exist?)",
            self.topic
        );
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition(&self.topic, *p);
        }
        let committed = self.consumer.committed_offsets(list, TIMEOUT)?;
        let mut lags = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let at = Utc::now();
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, partition, TIMEOUT)?;
            let committed = committed
                .find_partition(&self.topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            lags.push(PartitionLag {
                partition,
                high_watermark: high,
                probe: Probe {
                    at,
                    high_watermark: high,
                },
                committed,
                lag: lag_of(low, high, committed),
            });
        }
        Ok(lags)
    }
}

/// The latest probe of each partition of the events topic, shared with the consumer.
pub type Probes = Arc<Mutex<BTreeMap<i32, Probe>>>;

/// Publishes `cce_ingest_consumer_lag` and the partitions' [`Probes`] every few seconds until
/// `stop` fires.
pub fn spawn_monitor(
    reader: LagReader,
    metrics: Metrics,
    probes: Probes,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let reader = std::sync::Arc::new(reader);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let read = {
                let reader = std::sync::Arc::clone(&reader);
                tokio::task::spawn_blocking(move || reader.read()).await
            };
            match read {
                Ok(Ok(lags)) => {
                    failing = false;
                    {
                        let mut probes = probes.lock().unwrap_or_else(|p| p.into_inner());
                        for lag in &lags {
                            probes.insert(lag.partition, lag.probe);
                        }
                    }
                    for lag in lags {
                        metrics
                            .consumer_lag
                            .with_label_values(&[&lag.partition.to_string()])
                            .set(lag.lag);
                    }
                }
                Ok(Err(error)) => {
                    metrics.lag_checks_failed.inc();
                    if !failing {
                        tracing::warn!(%error, "cannot read the consumer lag from the broker");
                    }
                    failing = true;
                }
                Err(error) => tracing::warn!(%error, "lag check task failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::lag_of;

    #[test]
    fn lag_counts_from_the_committed_offset_or_the_oldest_message() {
        assert_eq!(lag_of(0, 10, Some(4)), 6);
        assert_eq!(lag_of(0, 10, Some(10)), 0);
        assert_eq!(lag_of(0, 10, None), 10, "nothing committed: all of it");
        assert_eq!(lag_of(7, 10, None), 3, "retention dropped the first 7");
        assert_eq!(
            lag_of(7, 10, Some(2)),
            3,
            "committed before what retention kept"
        );
        assert_eq!(lag_of(0, 0, None), 0);
    }
}
