//! The job runner: every replica claims the jobs the state allows to start, runs them with the
//! export engine, renews its lease while they run, and records their results.
//!
//! A claim, a heartbeat or a result is only a request to the state log; the fold decides (see
//! [`crate::state`]). A worker stops its export — aborting the upload, so no partial object is
//! ever visible — when the job is cancelled, when its lease is lost, or on shutdown (where it
//! releases the job for another replica). Each attempt uploads to its own key, so a late worker
//! can never overwrite the archive a job's accepted result names; a refused result's object is
//! deleted.
//!
//! Before the engine reads the log, a job waits until ingestion has written every event the
//! events topic had accepted when the job was accepted ([`crate::watermark`]), heartbeating
//! how far behind it is; it fails if that takes longer than the configured wait.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archive::{CancellationToken, ExportRequest};
use storage::ObjectStore;
use tokio::task::JoinSet;

use crate::lifecycle::EXPORTS_PREFIX;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::state::{
    Command, Job, JobProgress, JobResult, JobSpec, JobStatus, Outcome, SERVICE_ACTOR,
};
use crate::statelog::StateLog;
use crate::watermark::{IngestOffsets, SourceOffsets, WaitError};

/// The engine's request for a job.
pub fn export_request(company_id: &str, spec: &JobSpec) -> ExportRequest {
    ExportRequest {
        company_id: company_id.to_owned(),
        from: spec.from,
        to: spec.to,
        person_ids: spec.person_ids.iter().cloned().collect::<BTreeSet<_>>(),
        conversation_ids: spec
            .conversation_ids
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        time_zone: spec.time_zone.clone(),
        source_offsets: spec.source.as_ref().map(manifest_offsets),
    }
}

/// The job's source offsets as the manifest records them.
fn manifest_offsets(source: &SourceOffsets) -> archive::manifest::SourceOffsets {
    archive::manifest::SourceOffsets {
        topic: source.topic.clone(),
        partitions: source
            .partitions
            .iter()
            .map(|p| archive::manifest::PartitionOffset {
                partition: p.partition,
                end_offset: p.end_offset,
            })
            .collect(),
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Ingestion(#[from] WaitError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
}

/// Where an attempt's archive goes: per company, job and attempt; no user-chosen text.
pub fn archive_key(
    company_id: &str,
    job_id: &str,
    attempt: u32,
    request: &ExportRequest,
) -> String {
    format!(
        "{EXPORTS_PREFIX}{company_id}/{job_id}/attempt-{attempt}/compliance-export_{company_id}_{}.zip",
        request.label()
    )
}

#[derive(Debug, Clone)]
pub struct Runner {
    pub log: StateLog,
    /// Where ingestion stands, to wait for it before exporting.
    pub ingest: IngestOffsets,
    /// How long a job may wait for ingestion, counted from its acceptance.
    pub ingest_wait: Duration,
    pub log_store: Arc<dyn ObjectStore>,
    pub archive_store: Arc<dyn ObjectStore>,
    pub notifier: Notifier,
    pub worker: String,
    pub lease: Duration,
    pub max_jobs: usize,
    pub metrics: Metrics,
}

/// Why a run stopped before its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    LostLease,
    Shutdown,
}

/// A job gets this many attempts (claims); a job whose workers keep dying fails after them.
pub const MAX_ATTEMPTS: u32 = 5;

/// Frees a job's local slot however its task ends (including a panic).
struct Slot {
    running: Arc<Mutex<HashSet<String>>>,
    job_id: String,
    metrics: Metrics,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.running.dec();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.job_id);
    }
}

/// Whether a result was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    Yes,
    Refused,
    Unknown,
}

impl Runner {
    /// Claims and runs jobs until `shutdown`; then stops running exports and releases them.
    pub async fn run(self, shutdown: CancellationToken) {
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut tasks = JoinSet::new();
        // Notifications retried in their own task, so a slow mail relay never delays claims.
        tasks.spawn(self.clone().notify_loop(shutdown.clone()));
        let mut changes = self.log.subscribe();
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(error) = done {
                    tracing::error!(%error, "an export task panicked");
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            self.claim(&running, &mut tasks, &shutdown).await;
            tokio::select! {
                () = shutdown.cancelled() => {}
                _ = changes.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!(worker = %self.worker, "job runner stopped");
    }

    async fn claim(
        &self,
        running: &Arc<Mutex<HashSet<String>>>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) {
        let now = self.log.clock().now();
        // Only each company's oldest claimable job: the fold refuses any other claim.
        let candidates: Vec<(String, String)> = self.log.read(|state| {
            state
                .companies()
                .filter_map(|(company, cs)| {
                    cs.claimable(now)
                        .first()
                        .map(|job| (company.clone(), job.id.clone()))
                })
                .collect()
        });
        for (company, job_id) in candidates {
            {
                let running = running.lock().unwrap_or_else(|e| e.into_inner());
                if running.len() >= self.max_jobs || running.contains(&job_id) {
                    continue;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            let lease_until = self.log.clock().now() + chrono_lease(self.lease);
            let claim = Command::Claim {
                job_id: job_id.clone(),
                worker: self.worker.clone(),
                lease_until,
            };
            match self.log.submit(&company, SERVICE_ACTOR, claim).await {
                Ok(Outcome::Applied) => {
                    running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(job_id.clone());
                    self.metrics.running.inc();
                    let slot = Slot {
                        running: running.clone(),
                        job_id: job_id.clone(),
                        metrics: self.metrics.clone(),
                    };
                    let runner = self.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        let _slot = slot;
                        runner
                            .run_job(&company, &job_id, lease_until, &shutdown)
                            .await;
                    });
                }
                Ok(_) => tracing::debug!(%job_id, "claim lost to another worker"),
                Err(error) => tracing::warn!(%job_id, %error, "claiming a job"),
            }
        }
    }

    fn job(&self, company: &str, job_id: &str) -> Option<Job> {
        self.log
            .read(|s| s.company(company).and_then(|c| c.job(job_id).cloned()))
    }

    async fn run_job(
        &self,
        company: &str,
        job_id: &str,
        lease_until: chrono::DateTime<chrono::Utc>,
        shutdown: &CancellationToken,
    ) {
        let Some(job) = self.job(company, job_id) else {
            return;
        };
        if job.attempts > MAX_ATTEMPTS {
            let error = format!(
                "gave up after {MAX_ATTEMPTS} attempts: the workers running it kept stopping \
                 (see the export service's logs); request the export again"
            );
            self.finish(company, job_id, JobResult::Failed { error }, None)
                .await;
            return;
        }
        let request = export_request(company, &job.spec);
        let key = archive_key(company, job_id, job.attempts, &request);
        tracing::info!(%company, job = %job_id, attempt = job.attempts, %key, "export started");
        let cancel = CancellationToken::new();
        let progress: Arc<Mutex<JobProgress>> = Arc::default();
        let stop: Arc<Mutex<Option<Stop>>> = Arc::default();
        let upload_started = self.log.clock().now();
        // Heartbeats in their own task, so a slow Kafka round trip never stalls the export.
        let heartbeats = tokio::spawn(self.clone().heartbeats(
            company.to_owned(),
            job_id.to_owned(),
            lease_until,
            progress.clone(),
            stop.clone(),
            cancel.clone(),
        ));
        let export = {
            let (progress, cancel, request, key) = (progress.clone(), &cancel, &request, &key);
            let (source, accepted) = (job.spec.source.clone(), job.created_at);
            async move {
                if let Some(source) = &source {
                    let set = |lag| {
                        *progress.lock().unwrap_or_else(|e| e.into_inner()) = JobProgress {
                            waiting_for_ingestion: Some(lag),
                            ..JobProgress::default()
                        };
                    };
                    let clock = self.log.clock().as_ref();
                    self.ingest
                        .wait_for(source, accepted, self.ingest_wait, clock, cancel, set)
                        .await?;
                    *progress.lock().unwrap_or_else(|e| e.into_inner()) = JobProgress::default();
                }
                archive::export_to_s3(
                    request,
                    self.log_store.clone(),
                    self.archive_store.clone(),
                    key,
                    cancel,
                    move |p| {
                        *progress.lock().unwrap_or_else(|e| e.into_inner()) = JobProgress {
                            events_read: p.events_read,
                            files_written: p.files_written,
                            bytes_written: p.bytes_written,
                            percent: p.percent.min(99),
                            waiting_for_ingestion: None,
                        };
                    },
                )
                .await
                .map_err(RunError::from)
            }
        };
        tokio::pin!(export);
        let mut changes = self.log.subscribe();
        let set_stop = |why: Stop| {
            stop.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(why);
            cancel.cancel();
        };
        let result = loop {
            tokio::select! {
                result = &mut export => break result,
                _ = changes.changed(), if !cancel.is_cancelled() => {
                    let still_ours = self.job(company, job_id).is_some_and(|j| {
                        j.stored_status() == JobStatus::InProgress
                            && j.owner.as_deref() == Some(self.worker.as_str())
                    });
                    if !still_ours {
                        set_stop(self.why_stopped(company, job_id));
                    }
                }
                () = shutdown.cancelled(), if !cancel.is_cancelled() => set_stop(Stop::Shutdown),
            }
        };
        heartbeats.abort();
        let stop = *stop.lock().unwrap_or_else(|e| e.into_inner());
        match (result, stop) {
            (Ok(stored), None) => {
                let finish = JobResult::Completed {
                    key: stored.key.clone(),
                    size: stored.size,
                    sha256: stored.sha256.clone(),
                    upload_started,
                    progress: Some(JobProgress {
                        events_read: stored.summary.events_read,
                        // Every file listed, plus manifest.json itself.
                        files_written: stored.summary.files + 1,
                        bytes_written: stored.size,
                        percent: 100,
                        waiting_for_ingestion: None,
                    }),
                };
                self.finish(company, job_id, finish, Some(&stored.key))
                    .await;
            }
            (_, Some(Stop::Shutdown)) => {
                let release = Command::Release {
                    job_id: job_id.to_owned(),
                    worker: self.worker.clone(),
                };
                let released = self.log.submit(company, SERVICE_ACTOR, release).await;
                self.metrics.runs.with_label_values(&["released"]).inc();
                tracing::info!(job = %job_id, released = matches!(released, Ok(Outcome::Applied)), "export stopped for shutdown");
                self.delete_unless_recorded(company, job_id, &key).await;
            }
            (_, Some(stop)) => {
                let label = if stop == Stop::Cancelled {
                    "cancelled"
                } else {
                    "lost_lease"
                };
                self.metrics.runs.with_label_values(&[label]).inc();
                tracing::info!(job = %job_id, reason = label, "export stopped");
                self.delete_unless_recorded(company, job_id, &key).await;
            }
            (Err(error), None) => {
                tracing::warn!(job = %job_id, %error, "export failed");
                let finish = JobResult::Failed {
                    error: error.to_string(),
                };
                self.finish(company, job_id, finish, None).await;
            }
        }
    }

    /// Renews the lease every second (a third of the lease at most) with the latest progress;
    /// stops the export when the lease is lost or runs out unrenewed.
    async fn heartbeats(
        self,
        company: String,
        job_id: String,
        mut lease_until: chrono::DateTime<chrono::Utc>,
        progress: Arc<Mutex<JobProgress>>,
        stop: Arc<Mutex<Option<Stop>>>,
        cancel: CancellationToken,
    ) {
        let every = (self.lease / 3).min(Duration::from_secs(1));
        let stop_with = |why: Stop| {
            stop.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(why);
            cancel.cancel();
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let left = (lease_until - self.log.clock().now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            if left.is_zero() {
                stop_with(Stop::LostLease);
                return;
            }
            let until = self.log.clock().now() + chrono_lease(self.lease);
            let heartbeat = Command::Heartbeat {
                job_id: job_id.clone(),
                worker: self.worker.clone(),
                lease_until: until,
                progress: *progress.lock().unwrap_or_else(|e| e.into_inner()),
            };
            // Never wait past the lease: an unrenewed lease means stop.
            match tokio::time::timeout(left, self.log.submit(&company, SERVICE_ACTOR, heartbeat))
                .await
            {
                Ok(Ok(Outcome::Applied)) => lease_until = until,
                Ok(Ok(_)) => {
                    stop_with(self.why_stopped(&company, &job_id));
                    return;
                }
                Ok(Err(error)) => tracing::warn!(job = %job_id, %error, "renewing the lease"),
                Err(_) => tracing::warn!(job = %job_id, "renewing the lease timed out"),
            }
        }
    }

    fn why_stopped(&self, company: &str, job_id: &str) -> Stop {
        match self.job(company, job_id).map(|j| j.stored_status()) {
            Some(JobStatus::Cancelled) => Stop::Cancelled,
            _ => Stop::LostLease,
        }
    }

    async fn finish(&self, company: &str, job_id: &str, result: JobResult, key: Option<&str>) {
        let label = match result {
            JobResult::Completed { .. } => "completed",
            JobResult::Failed { .. } => "failed",
        };
        let finish = Command::Finish {
            job_id: job_id.to_owned(),
            worker: self.worker.clone(),
            result,
        };
        let mut recorded = Recorded::Unknown;
        for attempt in 0..5u32 {
            match self
                .log
                .submit(company, SERVICE_ACTOR, finish.clone())
                .await
            {
                Ok(Outcome::Applied) => {
                    recorded = Recorded::Yes;
                    break;
                }
                Ok(_) => {
                    // Refused — or an earlier attempt that timed out was recorded after all.
                    recorded = if self.recorded(company, job_id, key) {
                        Recorded::Yes
                    } else {
                        Recorded::Refused
                    };
                    break;
                }
                Err(error) => {
                    tracing::warn!(job = %job_id, %error, attempt, "recording the result");
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
            }
        }
        match recorded {
            Recorded::Yes => {}
            Recorded::Refused => {
                if let Some(key) = key {
                    self.delete_unless_recorded(company, job_id, key).await;
                }
                self.metrics.runs.with_label_values(&["lost_lease"]).inc();
                tracing::warn!(job = %job_id, "the result was refused: another worker owns the job or it was cancelled");
                return;
            }
            Recorded::Unknown => {
                // Whether the log holds it is unknown: keep the object (the lifecycle rule
                // removes it if unused); the lease will run out and the job run again if not.
                tracing::error!(job = %job_id, "could not record the result; the job will be retried when its lease ends");
                return;
            }
        }
        self.metrics.runs.with_label_values(&[label]).inc();
        tracing::info!(job = %job_id, result = label, "export finished");
        if let Some(job) = self.job(company, job_id) {
            self.send_notifications(company, &job).await;
        }
    }

    /// Whether the state names `key` (or, without a key, any result) for the job.
    fn recorded(&self, company: &str, job_id: &str, key: Option<&str>) -> bool {
        self.job(company, job_id).is_some_and(|j| match key {
            Some(key) => j.archive.as_ref().is_some_and(|a| a.key == key),
            None => j.stored_status() == JobStatus::Failed,
        })
    }

    /// Deletes an attempt's archive unless the state names it as the job's archive.
    async fn delete_unless_recorded(&self, company: &str, job_id: &str, key: &str) {
        if self.log.sync().await.is_err() {
            return; // not sure what the log says: leave it to the lifecycle rule
        }
        if !self.recorded(company, job_id, Some(key))
            && let Err(error) = self.archive_store.delete(key).await
        {
            tracing::warn!(%key, %error, "deleting an unrecorded archive");
        }
    }

    /// Notifies and records it; false when it must be tried again.
    async fn send_notifications(&self, company: &str, job: &Job) -> bool {
        match self.notifier.notify(company, job).await {
            Ok(()) => {
                let notified = Command::Notified {
                    job_id: job.id.clone(),
                };
                if let Err(error) = self.log.submit(company, SERVICE_ACTOR, notified).await {
                    tracing::warn!(job = %job.id, %error, "recording the notification");
                }
                true
            }
            Err(error) => {
                tracing::warn!(job = %job.id, error = format!("{error:#}"), "notifying; will retry");
                false
            }
        }
    }

    /// Finished jobs whose notification was not recorded a while after they finished (their
    /// worker died, or the mail relay was down) are notified by whichever replica sees them,
    /// retried with backoff (2 s doubling to 10 min) while it fails.
    async fn notify_loop(self, shutdown: CancellationToken) {
        let mut retries: HashMap<String, (u32, tokio::time::Instant)> = HashMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            let grace = chrono_lease(self.lease) * 4;
            let now = self.log.clock().now();
            let instant = tokio::time::Instant::now();
            let pending: Vec<(String, Job)> = self.log.read(|state| {
                state
                    .companies()
                    .flat_map(|(company, cs)| {
                        cs.jobs()
                            .filter(|j| {
                                !j.notified
                                    && matches!(
                                        j.stored_status(),
                                        JobStatus::Completed | JobStatus::Failed
                                    )
                                    && j.finished_at.is_some_and(|f| f + grace < now)
                                    && retries.get(&j.id).is_none_or(|(_, next)| instant >= *next)
                            })
                            .map(|j| (company.clone(), j.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            });
            for (company, job) in pending {
                let sent = tokio::select! {
                    () = shutdown.cancelled() => return,
                    sent = self.send_notifications(&company, &job) => sent,
                };
                if sent {
                    retries.remove(&job.id);
                } else {
                    let attempts = retries.get(&job.id).map_or(1, |(n, _)| n + 1);
                    let wait =
                        Duration::from_secs(1u64 << attempts.min(9)).min(Duration::from_secs(600));
                    retries.insert(
                        job.id.clone(),
                        (attempts, tokio::time::Instant::now() + wait),
                    );
                }
            }
        }
    }
}

fn chrono_lease(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::seconds(15))
}
