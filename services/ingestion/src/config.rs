//! The ingestion service's configuration: every field settable by flag and by `CCE_*` variable.

use std::net::SocketAddr;
use std::time::Duration;

use storage::S3Config;
use telemetry::LogFormat;

/// Consumes chat events from Kafka into each company's compliance log on S3.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "cce-ingestion", version)]
pub struct Config {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(long, env = "CCE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topic the chat platform publishes its events to.
    #[arg(long, env = "CCE_EVENTS_TOPIC", default_value = "chat-events")]
    pub events_topic: String,
    /// Topic that receives events which cannot be ingested, with the reason in headers.
    #[arg(long, env = "CCE_DEAD_LETTER_TOPIC", default_value = "chat-events-dlq")]
    pub dead_letter_topic: String,
    /// Consumer group shared by every ingestion replica.
    #[arg(long, env = "CCE_INGEST_GROUP", default_value = "cce-ingestion")]
    pub group_id: String,
    /// Flush a partition's buffered events once the oldest has waited this long, in
    /// milliseconds. With the write itself this bounds how late an event becomes durable
    /// (default 2000: durable within 5 seconds on a healthy store).
    #[arg(long, env = "CCE_FLUSH_INTERVAL_MS", default_value_t = 2000)]
    pub flush_interval_ms: u64,
    /// Flush as soon as this many bytes of events are buffered (default 8 MiB).
    #[arg(long, env = "CCE_FLUSH_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub flush_max_bytes: usize,
    /// Largest accepted event in bytes; larger ones are dead-lettered (default 1 MiB).
    #[arg(long, env = "CCE_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_event_bytes: usize,
    /// How far past the message's Kafka timestamp `occurred_at` may be, in hours, before an
    /// event is dead-lettered.
    #[arg(long, env = "CCE_MAX_FUTURE_SKEW_HOURS", default_value_t = 24)]
    pub max_future_skew_hours: i64,
    /// Kafka consumer session timeout in milliseconds.
    #[arg(long, env = "CCE_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 30_000)]
    pub session_timeout_ms: u64,
    /// On partition revoke and on shutdown, the time allowed to flush and commit, in
    /// milliseconds; must be shorter than the session timeout. What is not durable by then is
    /// left uncommitted, for the next owner to replay.
    #[arg(long, env = "CCE_DRAIN_DEADLINE_MS", default_value_t = 10_000)]
    pub drain_deadline_ms: u64,
    /// A partition whose flush (log write or dead letter) has failed for this long, in seconds,
    /// counts as stalled: `/readyz` fails and `cce_ingest_partition_stalled` shows it. Other
    /// partitions go on meanwhile.
    #[arg(long, env = "CCE_PARTITION_STALL_SECS", default_value_t = 20)]
    pub stall_after_secs: u64,
    /// How long, in seconds, to retry a dead letter while the dead-letter topic is missing or
    /// refuses us, before keeping the letter on the object store only (under `dead-letters/`).
    #[arg(long, env = "CCE_DEAD_LETTER_TOPIC_WAIT_SECS", default_value_t = 30)]
    pub dead_letter_topic_wait_secs: u64,
    /// Whether this replica compacts the log's closed days into per-company objects (`on` or
    /// `off`). Every replica may: passes are deterministic and one at a time per topic.
    #[arg(long, env = "CCE_COMPACTION", value_enum, default_value_t = Switch::On)]
    pub compaction: Switch,
    /// Seconds between compaction passes (default 60).
    #[arg(long, env = "CCE_COMPACTION_INTERVAL_SECS", default_value_t = 60)]
    pub compaction_interval_secs: u64,
    /// How long after a day ends, in seconds of the log's time watermark, before compaction
    /// closes it; later events of that day still land, as deltas (default 300).
    #[arg(long, env = "CCE_COMPACTION_GRACE_SECS", default_value_t = 300)]
    pub compaction_grace_secs: u64,
    /// How long, in days, segments are kept after compaction has rewritten them (default 7).
    #[arg(long, env = "CCE_SEGMENT_RETENTION_DAYS", default_value_t = 7)]
    pub segment_retention_days: u64,
    #[command(flatten)]
    pub s3: S3Config,
    /// Address of the health (`/healthz`, `/readyz`) and metrics (`/metrics`) endpoint.
    #[arg(long, env = "CCE_INGEST_OPS_ADDR", default_value = "127.0.0.1:9101")]
    pub ops_addr: SocketAddr,
    /// Log line format on stderr.
    #[arg(long, env = "CCE_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

/// A feature switch, as a flag or variable takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Config {
    /// Cross-field rules, checked at start-up.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.drain_deadline_ms < self.session_timeout_ms,
            "--drain-deadline-ms ({}) must be shorter than --session-timeout-ms ({}): a drain \
             that outlives the session lets another replica take the partitions mid-flush",
            self.drain_deadline_ms,
            self.session_timeout_ms
        );
        anyhow::ensure!(
            self.flush_interval_ms > 0,
            "--flush-interval-ms must be positive"
        );
        anyhow::ensure!(
            self.flush_max_bytes > 0,
            "--flush-max-bytes must be positive"
        );
        anyhow::ensure!(
            self.max_event_bytes > 0,
            "--max-event-bytes must be positive"
        );
        anyhow::ensure!(
            self.compaction_interval_secs > 0,
            "--compaction-interval-secs must be positive"
        );
        anyhow::ensure!(
            self.events_topic != self.dead_letter_topic,
            "the dead-letter topic must differ from the events topic"
        );
        Ok(())
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub fn stall_after(&self) -> Duration {
        Duration::from_secs(self.stall_after_secs)
    }

    pub fn dead_letter_topic_wait(&self) -> Duration {
        Duration::from_secs(self.dead_letter_topic_wait_secs)
    }

    pub fn drain_deadline(&self) -> Duration {
        Duration::from_millis(self.drain_deadline_ms)
    }

    pub fn compaction_interval(&self) -> Duration {
        Duration::from_secs(self.compaction_interval_secs)
    }

    pub fn compaction_grace(&self) -> Duration {
        Duration::from_secs(self.compaction_grace_secs)
    }

    pub fn segment_retention(&self) -> Duration {
        Duration::from_secs(self.segment_retention_days.saturating_mul(24 * 3600))
    }

    pub fn limits(&self) -> event_model::Limits {
        event_model::Limits {
            max_bytes: self.max_event_bytes,
            max_future_skew: chrono::Duration::hours(self.max_future_skew_hours),
        }
    }
}
