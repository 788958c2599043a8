//! The export service's configuration: every field settable by flag and by `CCE_*` variable.

use std::net::SocketAddr;

use storage::S3Config;
use telemetry::LogFormat;

/// The longest a presigned link may live (S3's SigV4 limit).
pub const MAX_LINK_TTL_SECS: u64 = 7 * 24 * 3600;

/// Serves the compliance export API to the admin portal.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "cce-export", version)]
pub struct Config {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(long, env = "CCE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Kafka topic holding the service's state: settings, access, jobs and the audit trail.
    /// One partition, kept forever; every replica reads all of it.
    #[arg(long, env = "CCE_STATE_TOPIC", default_value = "export-state")]
    pub state_topic: String,
    /// Kafka topic where running exports report liveness and progress every second. Not history:
    /// read from its end, so a short retention (an hour) and compaction by job key suit it.
    #[arg(long, env = "CCE_LIVENESS_TOPIC", default_value = "export-liveness")]
    pub liveness_topic: String,
    /// Where snapshots of the folded state go in the bucket: `<prefix><state topic>/<offset>.json`.
    #[arg(
        long,
        env = "CCE_STATE_SNAPSHOT_PREFIX",
        default_value = "state-snapshots/"
    )]
    pub snapshot_prefix: String,
    /// A replica writes a snapshot once its fold is this many records past the newest one.
    #[arg(long, env = "CCE_STATE_SNAPSHOT_EVERY", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// How often, in seconds, a replica checks whether a snapshot is due.
    #[arg(long, env = "CCE_STATE_SNAPSHOT_INTERVAL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub snapshot_interval_secs: u64,
    /// Kafka topic for the platform's "export finished" events.
    #[arg(
        long,
        env = "CCE_NOTIFICATIONS_TOPIC",
        default_value = "export-notifications"
    )]
    pub notifications_topic: String,
    /// Topic the chat platform publishes its events to (the ingestion service's). An export
    /// waits until the log's watermarks for this topic (`log/v2/watermarks/<topic>/`) say the
    /// log is durable far enough, then reads the log at that position.
    #[arg(long, env = "CCE_EVENTS_TOPIC", default_value = "chat-events")]
    pub events_topic: String,
    /// How long after it occurred, in seconds, an event may still be published and count as on
    /// time, for a range that ends near or after its request. An export waits until everything
    /// published before it was requested is durable in the log (whatever the events'
    /// `occurred_at`: a backfill, a backlog behind a stalled partition); a range that ends less
    /// than this before the request (an export "until now") also waits until its end plus this,
    /// for the events dated at its end that are published a little later. Events published
    /// later than that are in the log, and in exports requested after they are published.
    /// At most a day, the longest an export may wait (`--ingest-wait-secs`).
    #[arg(long = "lateness-grace-secs", env = "CCE_EXPORT_LATENESS_GRACE_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub lateness_grace_secs: u64,
    /// How long an export may wait for the log to become durable far enough, in seconds from
    /// its acceptance; then it fails, saying what to check.
    #[arg(long = "ingest-wait-secs", env = "CCE_EXPORT_INGEST_WAIT_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ingest_wait_secs: u64,
    #[command(flatten)]
    pub s3: S3Config,
    /// Endpoint put in download links when clients reach the store by another address than the
    /// service does (e.g. MinIO inside docker compose). Unset: the S3 endpoint.
    #[arg(long, env = "CCE_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,
    /// Address the gRPC API listens on.
    #[arg(long, env = "CCE_EXPORT_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the health (`/healthz`, `/readyz`) and metrics (`/metrics`) endpoint.
    #[arg(long, env = "CCE_EXPORT_OPS_ADDR", default_value = "127.0.0.1:9102")]
    pub ops_addr: SocketAddr,
    /// How the admin portal's tokens are verified (`auth::TokenConfig`: exactly one of
    /// `--token-signing-key`, `--token-public-key-file`, `--token-jwks-file`).
    #[command(flatten)]
    pub token: crate::auth::TokenConfig,
    /// How long a download link works, in seconds (at most 7 days; never past the archive's
    /// 30-day end).
    #[arg(
        long = "download-link-ttl-secs",
        env = "CCE_DOWNLOAD_LINK_TTL_SECS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(60..=MAX_LINK_TTL_SECS)
    )]
    pub link_ttl_secs: u64,
    /// SMTP relay for notification mail, e.g. `smtp://127.0.0.1:25`,
    /// `smtps://user:password@mail.example.com`. Unset: no mail is sent.
    #[arg(long, env = "CCE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of notification mail.
    #[arg(
        long,
        env = "CCE_SMTP_FROM",
        default_value = "Compliance exports <compliance-exports@localhost>"
    )]
    pub smtp_from: String,
    /// The admin page the mail links to; the job id is appended (`<url>/<job id>`).
    #[arg(
        long,
        env = "CCE_ADMIN_URL",
        default_value = "http://localhost:8080/admin/compliance-exports"
    )]
    pub admin_url: String,
    /// This replica's name in job leases. Unset: host name and a random suffix.
    #[arg(long, env = "CCE_EXPORT_WORKER_ID")]
    pub worker_id: Option<String>,
    /// How long a running export may go unheard on the liveness topic, in seconds, before
    /// another replica takes it over.
    #[arg(long, env = "CCE_EXPORT_LEASE_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(2..=600))]
    pub lease_secs: u64,
    /// How many exports this replica runs at once (the per-company limit of 2 holds regardless).
    #[arg(long, env = "CCE_EXPORT_MAX_JOBS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_jobs: u64,
    /// How many exports one company may have waiting to start; a request beyond it is refused
    /// (RESOURCE_EXHAUSTED, saying how many wait and what to do), so one company cannot fill
    /// the queue ahead of the others. Every replica should be given the same value: the cap
    /// goes in the create record, and the fold enforces the one each record carries.
    #[arg(long, env = "CCE_EXPORT_MAX_QUEUED_PER_COMPANY", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_queued_per_company: u32,
    /// How many schedules (not deleted) one company may have; one more is refused
    /// (RESOURCE_EXHAUSTED) until one is deleted. Every replica should be given the same value:
    /// the cap goes in the create record, and the fold enforces the one each record carries.
    #[arg(long, env = "CCE_EXPORT_MAX_SCHEDULES_PER_COMPANY", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_schedules_per_company: u32,
    /// How many WatchExport streams one admin may have open on one replica; one more is
    /// refused (RESOURCE_EXHAUSTED) until one ends.
    #[arg(long, env = "CCE_EXPORT_MAX_WATCHES_PER_ADMIN", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_watches_per_admin: u32,
    /// Memory each export is sized for, in MiB: the log reader, the open day files, the
    /// entries being compressed and the post texts take their shares of it, and what does not
    /// fit goes to temporary files. A replica needs about `--max-jobs` times this.
    #[arg(long = "memory-budget-mib", env = "CCE_EXPORT_MEMORY_BUDGET_MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(64..=65_536))]
    pub memory_budget_mib: u64,
    /// Temporary disk (in `TMPDIR`) each export may use, in MiB; an export that needs more
    /// fails with a message saying so, and leaves nothing behind.
    #[arg(long = "disk-budget-mib", env = "CCE_EXPORT_DISK_BUDGET_MIB", default_value_t = 8_192,
          value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub disk_budget_mib: u64,
    /// Threads each export serialises and compresses on (0: every core). The archive's bytes
    /// do not depend on it.
    #[arg(long = "render-threads", env = "CCE_EXPORT_RENDER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=256))]
    pub render_threads: u64,
    /// Ed25519 private keys that sign archives' manifests, comma-separated paths of PKCS#8 PEM
    /// files (`openssl genpkey -algorithm ed25519 -out key.pem`; not readable by others). The
    /// first signs new archives; the others are retired keys, still published by
    /// ListSigningKeys so older archives can be checked. A key's id is derived from its public
    /// key (`docs/export-format.md`, "Signature"). Unset: archives are not signed (a warning
    /// at start-up).
    #[arg(
        long = "archive-signing-key-files",
        env = "CCE_ARCHIVE_SIGNING_KEY_FILES",
        value_delimiter = ','
    )]
    pub signing_key_files: Vec<std::path::PathBuf>,
    /// Log line format on stderr.
    #[arg(long, env = "CCE_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Test only (the fault suite): points of a job's life where this replica stops dead, so a
    /// test can kill it exactly there; comma-separated `claim`, `mid_upload`, `before_finish`,
    /// `before_mail` (see `faults.rs`). Unset in production.
    #[arg(
        long,
        env = "CCE_FAULT_PAUSE_AT",
        value_enum,
        value_delimiter = ',',
        hide = true
    )]
    pub fault_pause_at: Vec<crate::faults::FaultPoint>,
    /// Test only (the fault suite): seconds added to this replica's clock (negative: behind),
    /// to run replicas whose clocks disagree, or a replica days behind (scheduled runs made
    /// "in the past"). At most a week either way. Default 0.
    #[arg(long, env = "CCE_CLOCK_OFFSET_SECS", default_value_t = 0, hide = true,
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-604_800..=604_800))]
    pub clock_offset_secs: i64,
}

impl Config {
    /// What each export may use on this replica.
    pub fn export_limits(&self) -> archive::ExportLimits {
        archive::ExportLimits {
            memory_bytes: self.memory_budget_mib << 20,
            disk_bytes: self.disk_budget_mib << 20,
            threads: usize::try_from(self.render_threads).unwrap_or(0),
        }
    }
}
