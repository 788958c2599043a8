//! The export service: the admin portal's gRPC API over the compliance logs.
//!
//! - [`auth`]: the portal's tokens; [`access`]: who may do what.
//! - [`state`]: settings, access, jobs and the audit trail as a pure fold over commands;
//!   [`statelog`]: those commands on a Kafka topic kept forever, folded by every replica from
//!   the newest snapshot; [`liveness`]: running exports' heartbeats and progress, not kept.
//! - [`service`]: the RPCs, with [`convert`] (state ↔ messages), `validate` (requests) and
//!   [`rpc_metrics`] (every call counted and timed, one layer); [`runner`]: claiming and running
//!   jobs with the export engine; [`watermark`]: an export waits until the log is durable past
//!   its range, and reads it there; [`notify`]: mail and a Kafka event when a job finishes;
//!   [`lifecycle`]: the bucket's rules.

pub mod access;
pub mod auth;
pub mod cadence;
pub mod clock;
mod config;
pub mod convert;
pub mod faults;
pub mod lifecycle;
pub mod limits;
pub mod liveness;
mod metrics;
pub mod notify;
pub mod progress;
pub mod rpc_metrics;
pub mod runner;
pub mod schedule_api;
pub mod scheduler;
pub mod service;
pub mod signing_keys;
pub mod state;
pub mod statelog;
mod validate;
pub mod watermark;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use storage::{ObjectStore, S3Config, S3Store};
use telemetry::{CancellationToken, Health, OpsServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use clock::{Clock, ShiftedClock, SystemClock};
pub use config::{Config, MAX_LINK_TTL_SECS};

/// The service name clients check with the gRPC health protocol.
pub const SERVICE_NAME: &str = "compliance.export.v1.ComplianceExportService";

/// A started export service: where it listens, and the task to await after cancelling.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: std::net::SocketAddr,
    pub ops_addr: std::net::SocketAddr,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the service with the system clock.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    // Test only: a replica whose clock is off (`CCE_CLOCK_OFFSET_SECS`), for the fault suite.
    let clock: Arc<dyn Clock> = match config.clock_offset_secs {
        0 => Arc::new(SystemClock),
        offset => Arc::new(ShiftedClock::new(chrono::Duration::seconds(offset))),
    };
    start_with_clock(config, clock, shutdown).await
}

/// Binds the listeners, installs the bucket's lifecycle rules, folds the state topic and serves
/// until `shutdown` is cancelled. `clock` is the service's notion of now (tests move it).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    // First, before connecting to anything: a service with a weak or missing key must not start.
    let verifier =
        auth::Verifier::from_config(&config.token).context("checking the token key settings")?;
    let signing_keys = signing_keys::SigningKeys::load(&config.signing_key_files)
        .context("loading the archive signing keys")?;
    match signing_keys.signer() {
        Some(signer) => tracing::info!(key_id = %signer.key_id(), "archives are signed"),
        None => tracing::warn!(
            "archives are not signed: set CCE_ARCHIVE_SIGNING_KEY_FILES to an Ed25519 key \
             (openssl genpkey -algorithm ed25519)"
        ),
    }
    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::register(&registry)?;
    let health = Health::default();
    let ops = OpsServer::start(config.ops_addr, health.clone(), registry, shutdown.clone()).await?;

    let store = S3Store::connect(&config.s3).await;
    lifecycle::install(&store).await.with_context(|| {
        format!(
            "installing the bucket's lifecycle rules (is the object store at {} reachable, and \
             are the bucket and credentials right?)",
            config
                .s3
                .endpoint
                .as_deref()
                .unwrap_or("the AWS default endpoint")
        )
    })?;
    let link_store: Arc<dyn ObjectStore> = match &config.s3_public_endpoint {
        Some(endpoint) => Arc::new(
            S3Store::connect(&S3Config {
                endpoint: Some(endpoint.clone()),
                ..config.s3.clone()
            })
            .await,
        ),
        None => Arc::new(store.clone()),
    };
    let store: Arc<dyn ObjectStore> = Arc::new(store);

    // The fold outlives the API and the runner, which still write (releases) while stopping.
    let fold_stop = CancellationToken::new();
    let state_topic: Arc<dyn statelog::RecordLog> = Arc::new(
        statelog::KafkaLog::connect(&config.kafka_brokers, &config.state_topic)
            .await
            .context("opening the export state topic")?,
    );
    let snapshots = statelog::SnapshotPolicy {
        snapshots: statelog::Snapshots::new(
            store.clone(),
            &config.snapshot_prefix,
            &config.state_topic,
        ),
        every: config.snapshot_every,
        interval: Duration::from_secs(config.snapshot_interval_secs),
    };
    let log = statelog::StateLog::open(state_topic, Some(snapshots), clock, fold_stop.clone())
        .await
        .context("opening the export state topic")?;
    let liveness = liveness::Liveness::start(
        Arc::new(
            liveness::KafkaLiveness::connect(
                &config.kafka_brokers,
                &config.liveness_topic,
                fold_stop.clone(),
            )
            .await
            .context("opening the export liveness topic")?,
        ),
        fold_stop.clone(),
    );
    let notifier = Arc::new(notify::Notifier::new(&config, metrics.clone())?);
    let worker = config.worker_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "export".into());
        format!("{host}-{}", &uuid::Uuid::new_v4().to_string()[..8])
    });
    let watermark = watermark::LogWatermark::new(
        store.clone(),
        &config.events_topic,
        Duration::from_secs(config.lateness_grace_secs),
    );
    let faults = faults::Faults::new(&config.fault_pause_at);
    let runner = runner::Runner {
        log: log.clone(),
        liveness: liveness.clone(),
        watermark,
        ingest_wait: Duration::from_secs(config.ingest_wait_secs),
        log_store: store.clone(),
        archive_store: faults.wrap(store),
        notifier,
        worker: worker.clone(),
        lease: Duration::from_secs(config.lease_secs),
        max_jobs: usize::try_from(config.max_jobs).unwrap_or(2),
        limits: config.export_limits(),
        metrics: metrics.clone(),
        faults,
        signer: signing_keys.signer(),
    };
    let runner_task = tokio::spawn(runner.run(shutdown.clone()));
    let api = service::Api {
        log: log.clone(),
        liveness,
        verifier,
        link_store,
        link_ttl: Duration::from_secs(config.link_ttl_secs),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        max_queued_per_company: config.max_queued_per_company,
        watches: limits::WatchLimiter::new(config.max_watches_per_admin),
        signing_keys,
        max_schedules_per_company: config.max_schedules_per_company,
    };
    let scheduler = scheduler::Scheduler {
        log: log.clone(),
        max_queued: config.max_queued_per_company,
    };
    let scheduler_task = tokio::spawn(scheduler.run(shutdown.clone()));
    let rpc_metrics =
        rpc_metrics::RpcMetricsLayer::new(metrics, proto::v1::FILE_DESCRIPTOR_SET, SERVICE_NAME)?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;

    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC address {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    tracing::info!(%grpc_addr, %worker, "gRPC listening");
    // Ready once the fold has caught up, however long that takes; not ready again if it halts.
    tokio::spawn(readiness(log, health, shutdown.clone()));

    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(tower::Layer::layer(
                &rpc_metrics,
                proto::v1::compliance_export_service_server::ComplianceExportServiceServer::new(
                    api,
                ),
            ))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
            .await
            .context("serving gRPC");
        // However serving ended, everything else stops too.
        shutdown.cancel();
        runner_task.await.context("joining the job runner")?;
        scheduler_task.await.context("joining the scheduler")?;
        fold_stop.cancel();
        ops.task.await.context("joining the ops endpoint")?;
        served?;
        tracing::info!("export service stopped");
        Ok(())
    });
    Ok(Running {
        grpc_addr,
        ops_addr: ops.local_addr,
        task,
    })
}

/// Sets `/readyz` from the fold: ready once caught up, not ready once halted.
async fn readiness(log: statelog::StateLog, health: Health, shutdown: CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => return,
        caught_up = log.caught_up() => if caught_up.is_err() { return },
    }
    health.set_ready(true);
    let mut changes = log.subscribe();
    while log.halted().is_none() {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
    health.set_ready(false);
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.task.await.context("joining the export service")?
}
