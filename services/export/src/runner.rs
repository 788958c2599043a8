//! The job runner: every replica claims the jobs the state allows to start, runs them with the
//! export engine, renews its lease while they run, and records their results.
//!
//! A claim or a result is only a request to the state log; the fold decides (see
//! [`crate::state`]). While it runs a job, a worker reports liveness and progress every second on
//! the liveness channel ([`Runner::report_progress`]), which is not kept forever; a replica that
//! hears nothing of an attempt for a whole lease appends a claim taking it over. A worker stops
//! its export — aborting the upload, so no partial object is ever visible — when the job is
//! cancelled, when it is taken over (or it cannot report for a whole lease), or on shutdown
//! (where it releases the job for another replica). Each attempt uploads to its own key, so a late worker
//! can never overwrite the archive a job's accepted result names; a refused result's object is
//! deleted.
//!
//! Before the engine reads the log, a job waits until the log's own watermark says it is durable
//! past the job's acceptance (everything published before the request), or past the range's end
//! plus a grace if that is later, heartbeating how far the log has got, and then reads the log
//! at that position ([`crate::watermark`]); it fails if that takes longer than the configured
//! wait.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archive::{CancellationToken, ExportRequest};
use retry::{Backoff, Next, RetryError, retry_whole_attempts};
use storage::ObjectStore;
use tokio::task::JoinSet;

use crate::faults::FaultPoint;
use crate::lifecycle::EXPORTS_PREFIX;
use crate::liveness::{BEAT_VERSION, Beat, Liveness};
use crate::metrics::Metrics;
use crate::notify::Notify;
use crate::state::{
    Command, Job, JobProgress, JobResult, JobSpec, JobStatus, MAX_NOTIFY_ATTEMPTS, Outcome,
    SERVICE_ACTOR,
};
use crate::statelog::StateLog;
use crate::watermark::{LogWatermark, WaitError};

/// The engine's request for a job, reading all the log holds (the runner sets the position it
/// waited for, [`crate::watermark`]).
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
        position: None,
        limits: archive::ExportLimits::default(),
        // Written by `validate` from the request; records from before EML and CSV say `json`.
        format: archive::DataFormat::from_name(&spec.format).unwrap_or_default(),
        schedule: spec.schedule.as_ref().map(crate::scheduler::manifest_link),
        signer: None,
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

impl RunError {
    /// The store did not answer or dropped the connection: trying again may succeed.
    fn is_transient(&self) -> bool {
        let storage = match self {
            Self::Archive(archive::ArchiveError::Storage(e))
            | Self::Archive(archive::ArchiveError::Log(compliance_log::LogError::Storage(e))) => e,
            _ => return false,
        };
        storage.kind == storage::ErrorKind::Unavailable
    }
}

/// An export cut short by the store is tried this many times in all, waiting 5 s, 10 s, 20 s
/// between tries: a store restart of up to about a minute does not fail the job.
const STORE_RETRY_TRIES: u32 = 4;
const STORE_RETRY_FIRST: Duration = Duration::from_secs(5);
const STORE_RETRY_MAX: Duration = Duration::from_secs(20);

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
    pub liveness: Liveness,
    /// The log's durable watermark, to wait for before exporting and to read at.
    pub watermark: LogWatermark,
    /// How long a job may wait for the log, counted from its acceptance.
    pub ingest_wait: Duration,
    pub log_store: Arc<dyn ObjectStore>,
    pub archive_store: Arc<dyn ObjectStore>,
    pub notifier: Arc<dyn Notify>,
    pub worker: String,
    pub lease: Duration,
    pub max_jobs: usize,
    /// What each export may use (memory, temporary disk, threads).
    pub limits: archive::ExportLimits,
    pub metrics: Metrics,
    /// Test only: where this replica stops dead for the fault suite ([`crate::faults`]).
    pub faults: crate::faults::Faults,
    /// Signs every archive's manifest; `None` when no key is configured.
    pub signer: Option<std::sync::Arc<archive::signing::Signer>>,
}

/// Why a run stopped before its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    LostLease,
    Shutdown,
}

/// Recording a job's result: five attempts, 1 s between the first two, doubling.
const FINISH_RETRIES: Backoff =
    Backoff::new(Duration::from_secs(1), Duration::from_secs(16)).max_attempts(5);

/// A job gets this many attempts (claims not handed back by a release); a job whose workers
/// keep dying fails after them.
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
    /// Once the state is caught up, claims and runs jobs until `shutdown`; then stops running
    /// exports and releases them.
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => return,
            caught_up = self.log.caught_up() => if caught_up.is_err() {
                return; // the fold halted and said why; claiming on a stale state would be wrong
            },
        }
        // Presence beats: proof, to this replica, that it hears the liveness channel.
        self.liveness
            .announce(&self.worker, self.lease / 3, shutdown.clone());
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
        // Every running attempt not heard of for a whole lease (taken over: the first claim
        // wins), then the waiting jobs the fold lets start, longest-waiting first across
        // companies. A replica that does not hear its own presence beats cannot tell a dead
        // worker from its own deafness: it then takes nothing over (others that hear will).
        let can_judge = self.liveness.hears_itself_within(self.lease);
        let candidates: Vec<(String, String, Option<u32>)> = self.log.read(|state| {
            let dead = state.companies().flat_map(|(company, cs)| {
                cs.in_progress()
                    .filter(|job| {
                        can_judge && self.liveness.silent_for(&job.id, job.attempts) >= self.lease
                    })
                    .map(|job| (company.clone(), job.id.clone(), Some(job.attempts)))
            });
            let fresh = claim_order(state)
                .into_iter()
                .map(|(company, job)| (company.to_owned(), job.id.clone(), None));
            dead.chain(fresh).collect()
        });
        let in_progress: HashSet<String> = self.log.read(|state| {
            state
                .companies()
                .flat_map(|(_, cs)| cs.in_progress().map(|j| j.id.clone()))
                .collect()
        });
        self.liveness.retain(|job| in_progress.contains(job));
        for (company, job_id, takes_over) in candidates {
            {
                let running = running.lock().unwrap_or_else(|e| e.into_inner());
                if running.len() >= self.max_jobs || running.contains(&job_id) {
                    continue;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            if let Some(attempt) = takes_over {
                tracing::warn!(%company, job = %job_id, attempt, lease = ?self.lease, "taking over an export whose worker has been silent for a whole lease");
            }
            let claim = Command::Claim {
                job_id: job_id.clone(),
                worker: self.worker.clone(),
                lease_until: None,
                takes_over,
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
                        runner.faults.reached(FaultPoint::Claim, &job_id).await;
                        runner.run_job(&company, &job_id, &shutdown).await;
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

    async fn run_job(&self, company: &str, job_id: &str, shutdown: &CancellationToken) {
        let Some(job) = self.job(company, job_id) else {
            return;
        };
        // The current attempt is one of the claims; releases on shutdown do not count.
        if job.failed_attempts() > MAX_ATTEMPTS {
            let error = format!(
                "gave up after {MAX_ATTEMPTS} attempts: the workers running it kept stopping \
                 (see the export service's logs); request the export again"
            );
            self.finish(company, job_id, JobResult::Failed { error }, None)
                .await;
            return;
        }
        let mut request = export_request(company, &job.spec);
        request.signer = self.signer.clone();
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
            job.attempts,
            progress.clone(),
            stop.clone(),
            cancel.clone(),
        ));
        let export = {
            let (progress, cancel, key) = (progress.clone(), &cancel, &key);
            let accepted = job.created_at;
            // One try of the export. A try cut short by the store (it restarted, or the network
            // to it dropped) left nothing visible — its upload was aborted, and the attempt's
            // key is its own — so it is tried again, a few times over about a minute, before
            // the job is failed (found by the fault suite: a store killed mid-export failed the
            // job for good).
            let try_export = move || {
                let progress = progress.clone();
                let mut request = request.clone();
                async move {
                    // Waits until the log is durable far enough for the range, then reads the log
                    // at the position that showed it, whatever arrives meanwhile.
                    let needed = self.watermark.needed(request.to, accepted);
                    let set = |lag| {
                        *progress.lock().unwrap_or_else(|e| e.into_inner()) =
                            JobProgress::waiting(lag);
                    };
                    let clock = self.log.clock().as_ref();
                    let position = self
                        .watermark
                        .wait_for(needed, accepted, self.ingest_wait, clock, cancel, set)
                        .await?;
                    *progress.lock().unwrap_or_else(|e| e.into_inner()) = JobProgress::default();
                    request.position = Some(position);
                    request.limits = self.limits;
                    archive::export_to_s3(
                        &request,
                        self.log_store.clone(),
                        self.archive_store.clone(),
                        key,
                        cancel,
                        move |p| {
                            *progress.lock().unwrap_or_else(|e| e.into_inner()) =
                                JobProgress::running(&p);
                        },
                    )
                    .await
                    .map_err(RunError::from)
                }
            };
            async move {
                let policy = Backoff::new(STORE_RETRY_FIRST, STORE_RETRY_MAX)
                    .max_attempts(STORE_RETRY_TRIES);
                let on_error = |error: &RunError, failures: u32| {
                    if error.is_transient() {
                        tracing::warn!(job = %job_id, %error, failures, "export cut short by the store; trying again");
                        Next::Retry
                    } else {
                        Next::GiveUp
                    }
                };
                match retry_whole_attempts(&policy, cancel, try_export, on_error).await {
                    Ok(stored) => Ok(stored),
                    Err(RetryError::Failed(error)) => Err(error),
                    Err(RetryError::Cancelled) => Err(archive::ArchiveError::Cancelled.into()),
                }
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
                            && j.attempts == job.attempts
                    });
                    if !still_ours {
                        set_stop(self.why_stopped(company, job_id));
                    }
                }
                () = shutdown.cancelled(), if !cancel.is_cancelled() => set_stop(Stop::Shutdown),
            }
        };
        // Heartbeats go on until the result is recorded: a `finish` that takes its retries
        // must not look like a dead worker to the other replicas.
        let stop = *stop.lock().unwrap_or_else(|e| e.into_inner());
        match (result, stop) {
            (Ok(stored), None) => {
                self.faults.reached(FaultPoint::BeforeFinish, job_id).await;
                let finish = JobResult::Completed {
                    key: stored.key.clone(),
                    size: stored.size,
                    sha256: stored.sha256.clone(),
                    upload_started,
                    progress: Some(JobProgress::finished(&stored)),
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
        heartbeats.abort();
    }

    /// Reports the attempt alive, with its progress, to every replica (the liveness channel).
    /// The one way a running job's progress is published.
    pub async fn report_progress(
        &self,
        company: &str,
        job_id: &str,
        attempt: u32,
        progress: JobProgress,
    ) -> Result<(), crate::statelog::LogError> {
        let beat = Beat {
            v: BEAT_VERSION,
            company_id: company.to_owned(),
            job_id: job_id.to_owned(),
            worker: self.worker.clone(),
            attempt,
            at: self.log.clock().now(),
            progress,
        };
        self.liveness.publish(&beat).await
    }

    /// Reports progress every second (a third of the lease at most); stops the export when it
    /// could not report for a whole lease (other replicas will have judged it dead).
    async fn heartbeats(
        self,
        company: String,
        job_id: String,
        attempt: u32,
        progress: Arc<Mutex<JobProgress>>,
        stop: Arc<Mutex<Option<Stop>>>,
        cancel: CancellationToken,
    ) {
        let every = (self.lease / 3).min(Duration::from_secs(1));
        let mut reported = tokio::time::Instant::now();
        loop {
            let current = *progress.lock().unwrap_or_else(|e| e.into_inner());
            let left = self.lease.saturating_sub(reported.elapsed());
            if left.is_zero() {
                stop.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(Stop::LostLease);
                cancel.cancel();
                return;
            }
            match tokio::time::timeout(
                left,
                self.report_progress(&company, &job_id, attempt, current),
            )
            .await
            {
                Ok(Ok(())) => reported = tokio::time::Instant::now(),
                Ok(Err(error)) => tracing::warn!(job = %job_id, %error, "reporting progress"),
                Err(_) => tracing::warn!(job = %job_id, "reporting progress timed out"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
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
        // Not cut short by shutdown (a token that never fires): a result left unrecorded runs
        // the whole export again.
        let never = CancellationToken::new();
        let submit = || self.log.submit(company, SERVICE_ACTOR, finish.clone());
        let submitted = retry_whole_attempts(&FINISH_RETRIES, &never, submit, |error, failures| {
            tracing::warn!(job = %job_id, %error, attempt = failures - 1, "recording the result");
            Next::Retry
        })
        .await;
        let recorded = match submitted {
            Ok(Outcome::Applied) => Recorded::Yes,
            // Refused — or an earlier attempt that timed out was recorded after all.
            Ok(_) if self.recorded(company, job_id, key) => Recorded::Yes,
            Ok(_) => Recorded::Refused,
            Err(_) => Recorded::Unknown,
        };
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
        crate::lifecycle::delete_other_attempts(self.archive_store.as_ref(), company, job_id, key)
            .await;
        self.metrics.runs.with_label_values(&[label]).inc();
        tracing::info!(job = %job_id, result = label, "export finished");
        self.faults.reached(FaultPoint::BeforeMail, job_id).await;
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

    /// Notifies and records the outcome in the log: `Notified`, or the failed attempt
    /// (`NotifyFailed`, counted by the fold, which gives up after [`MAX_NOTIFY_ATTEMPTS`]).
    /// False when nothing could be recorded (the log is unreachable): try again later.
    async fn send_notifications(&self, company: &str, job: &Job) -> bool {
        let (command, failed) = match self.notifier.notify(company, job).await {
            Ok(()) => (
                Command::Notified {
                    job_id: job.id.clone(),
                },
                None,
            ),
            Err(error) => {
                let attempt = job.notify_failures + 1;
                let reason = format!("{error:#}");
                tracing::warn!(job = %job.id, attempt, max = MAX_NOTIFY_ATTEMPTS, error = %reason, "notifying failed");
                let failed = Command::NotifyFailed {
                    job_id: job.id.clone(),
                    attempt,
                    reason,
                };
                (failed, Some(attempt))
            }
        };
        match self.log.submit(company, SERVICE_ACTOR, command).await {
            Ok(Outcome::Applied) => {
                if let Some(attempt) = failed
                    && attempt >= MAX_NOTIFY_ATTEMPTS
                {
                    self.metrics.notifications_given_up.inc();
                    tracing::error!(%company, job = %job.id, attempts = attempt, "giving up notifying: every attempt failed (see the audit trail)");
                }
                true
            }
            // Another replica recorded this attempt (or the notification) first.
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(job = %job.id, %error, "recording the notification's outcome");
                false
            }
        }
    }

    /// Finished jobs whose notification is not recorded are notified by whichever replica sees
    /// them: a while after they finished (their worker had its chance), then after each failed
    /// attempt a backoff counted from the failure the log recorded ([`notification_due`]), so
    /// every replica agrees when — and whether — to try again.
    async fn notify_loop(self, shutdown: CancellationToken) {
        // Jobs whose outcome this replica could not record: not before this instant.
        let mut unrecorded: HashMap<String, tokio::time::Instant> = HashMap::new();
        // When this replica first saw each finished job unnotified, on its own monotonic clock.
        // The first grace counts from there, not from `finished_at`: that is the finishing
        // replica's clock, and a replica whose clock runs ahead would mail jobs whose worker is
        // still sending (found by the fault suite's clock-skew scenario).
        let mut unnotified_since: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep((self.lease / 3).min(Duration::from_secs(2))) => {}
            }
            let grace = self.lease * 4;
            let backoff = chrono_lease(self.lease) * 2;
            let now = self.log.clock().now();
            let instant = tokio::time::Instant::now();
            unrecorded.retain(|_, until| *until > instant);
            let awaiting: Vec<(String, Job)> = self.log.read(|state| {
                state
                    .companies()
                    .flat_map(|(company, cs)| {
                        cs.awaiting_notification()
                            .filter(|j| !unrecorded.contains_key(&j.id))
                            .map(|j| (company.clone(), j.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            });
            let ids: HashSet<&str> = awaiting.iter().map(|(_, j)| j.id.as_str()).collect();
            unnotified_since.retain(|id, _| ids.contains(id.as_str()));
            let pending: Vec<(String, Job)> = awaiting
                .into_iter()
                .filter(|(_, j)| {
                    let since = *unnotified_since.entry(j.id.clone()).or_insert(instant);
                    notification_due(j, instant.duration_since(since) >= grace, backoff, now)
                })
                .collect();
            for (company, job) in pending {
                let recorded = tokio::select! {
                    () = shutdown.cancelled() => return,
                    recorded = self.send_notifications(&company, &job) => recorded,
                };
                if !recorded {
                    unrecorded.insert(job.id.clone(), instant + Duration::from_secs(30));
                }
            }
        }
    }
}

/// The wait after the `failures`-th failed notification: `base` (twice the lease: 30 s by
/// default), doubling, at most 10 min.
pub fn notify_backoff(failures: u32, base: chrono::Duration) -> chrono::Duration {
    let doublings = failures.saturating_sub(1).min(10);
    (base * (1 << doublings)).min(chrono::Duration::minutes(10))
}

/// Whether a finished job's notification is due at `now`: for the first try by another
/// replica than its worker, once this replica has seen it unnotified for a grace
/// (`grace_passed`, on its own monotonic clock); then [`notify_backoff`] after each failure the
/// log recorded (by the log's times, alike on every replica, and bounded by the fold's attempt
/// count); never once given up.
pub fn notification_due(
    job: &Job,
    grace_passed: bool,
    backoff: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    if !job.awaits_notification() {
        return false;
    }
    match job.notify_failed_at {
        Some(failed) if job.notify_failures > 0 => {
            failed + notify_backoff(job.notify_failures, backoff) <= now
        }
        _ => grace_passed,
    }
}

/// The waiting jobs the fold lets start now, in the order free slots go to them: the
/// longest-waiting first across companies (by acceptance time), each company's in its own
/// order (the fold refuses a claim of any but a company's first waiting job, and acceptance
/// times by different replicas' clocks need not follow it). A merge of the companies' queues
/// by their heads.
pub fn claim_order(state: &crate::state::State) -> Vec<(&str, &Job)> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let queues: Vec<(&str, Vec<&Job>)> = state
        .companies()
        .map(|(company, cs)| (company.as_str(), cs.claimable()))
        .filter(|(_, jobs)| !jobs.is_empty())
        .collect();
    // A queue's head: its acceptance time, company, queue and index in the queue.
    type Head<'a> = Reverse<(chrono::DateTime<chrono::Utc>, &'a str, usize, usize)>;
    let mut heads: BinaryHeap<Head<'_>> = queues
        .iter()
        .enumerate()
        .map(|(q, (company, jobs))| Reverse((jobs[0].created_at, *company, q, 0)))
        .collect();
    let mut order = Vec::with_capacity(queues.iter().map(|(_, jobs)| jobs.len()).sum());
    while let Some(Reverse((_, company, q, i))) = heads.pop() {
        let jobs = &queues[q].1;
        order.push((company, jobs[i]));
        if let Some(next) = jobs.get(i + 1) {
            heads.push(Reverse((next.created_at, company, q, i + 1)));
        }
    }
    order
}

fn chrono_lease(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::seconds(15))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use storage::MemoryStore;

    use super::*;
    use crate::clock::SystemClock;
    use crate::liveness::MemoryLiveness;
    use crate::state::JobSpec;
    use crate::statelog::{MemoryLog, RecordLog};

    struct Replicas {
        log: MemoryLog,
        channel: MemoryLiveness,
        store: Arc<dyn ObjectStore>,
        stop: CancellationToken,
    }

    impl Replicas {
        fn new() -> Self {
            Self {
                log: MemoryLog::new("export-state"),
                channel: MemoryLiveness::default(),
                store: Arc::new(MemoryStore::new()),
                stop: CancellationToken::new(),
            }
        }

        async fn state_log(&self) -> StateLog {
            let log: Arc<dyn RecordLog> = Arc::new(self.log.clone());
            let state = StateLog::open(log, None, Arc::new(SystemClock), self.stop.clone())
                .await
                .unwrap();
            state.caught_up().await.unwrap();
            state
        }

        /// A replica's runner, started. Each may run 8 exports at once (only the fold's limit of
        /// 2 per company binds): a finished export's task holds its local slot while its
        /// notification (to a broker that is not there) times out.
        async fn runner(&self, worker: &str, lease: Duration) -> Runner {
            let liveness = Liveness::start(Arc::new(self.channel.clone()), self.stop.clone());
            self.runner_hearing(worker, lease, liveness).await
        }

        /// A replica's runner, started, hearing other replicas through `liveness`.
        async fn runner_hearing(
            &self,
            worker: &str,
            lease: Duration,
            liveness: Liveness,
        ) -> Runner {
            // A log durable forever: nothing waits for ingestion.
            let watermark = crate::watermark::LogWatermark::durable_forever();
            self.runner_with(worker, lease, liveness, watermark).await
        }

        /// A replica's runner, started, waiting for the log as `watermark` says.
        async fn runner_with(
            &self,
            worker: &str,
            lease: Duration,
            liveness: Liveness,
            watermark: crate::watermark::LogWatermark,
        ) -> Runner {
            self.runner_notifying(worker, lease, liveness, watermark, None)
                .await
        }

        /// A replica's runner, started, notifying through `notifier` (unset: to a broker
        /// that is not there).
        async fn runner_notifying(
            &self,
            worker: &str,
            lease: Duration,
            liveness: Liveness,
            watermark: crate::watermark::LogWatermark,
            notifier: Option<Arc<dyn Notify>>,
        ) -> Runner {
            // Nothing listens there: notifications fail and are retried, which these tests
            // do not look at.
            let config = crate::Config::try_parse_from([
                "cce-export",
                "--token-signing-key",
                "k",
                "--kafka-brokers",
                "127.0.0.1:9",
                "--s3-bucket",
                "unused",
            ])
            .unwrap();
            let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
            let runner = Runner {
                log: self.state_log().await,
                liveness,
                watermark,
                ingest_wait: Duration::from_secs(60),
                log_store: self.store.clone(),
                archive_store: self.store.clone(),
                notifier: notifier.unwrap_or_else(|| {
                    Arc::new(crate::notify::Notifier::new(&config, metrics.clone()).unwrap())
                }),
                worker: worker.to_owned(),
                lease,
                max_jobs: 8,
                limits: archive::ExportLimits::default(),
                metrics,
                faults: crate::faults::Faults::default(),
                signer: None,
            };
            tokio::spawn(runner.clone().run(self.stop.clone()));
            runner
        }
    }

    async fn create(log: &StateLog, job_id: &str) {
        let create = Command::CreateExport {
            job_id: job_id.into(),
            spec: JobSpec::all_history(),
            requester_email: None,
            request_id: None,
            max_queued: None,
        };
        assert_eq!(
            log.submit("acme", "ann", create).await.unwrap(),
            Outcome::Applied
        );
    }

    /// `worker` claims the job (as a replica would before it runs it).
    async fn claimed_by(log: &StateLog, job_id: &str, worker: &str) {
        let claim = Command::Claim {
            job_id: job_id.into(),
            worker: worker.into(),
            lease_until: None,
            takes_over: None,
        };
        assert_eq!(
            log.submit("acme", SERVICE_ACTOR, claim).await.unwrap(),
            Outcome::Applied
        );
    }

    /// Waits (on the fold's changes, with a deadline) until `f` holds for the job.
    async fn wait_job(log: &StateLog, job_id: &str, what: &str, f: impl Fn(&Job) -> bool) -> Job {
        let mut changes = log.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let job = log.read(|s| s.company("acme").and_then(|c| c.job(job_id).cloned()));
            if let Some(job) = job.filter(|j| f(j)) {
                return job;
            }
            let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
            assert!(changed.is_ok(), "export {job_id} not {what} within 30 s");
        }
    }

    /// A channel this replica can publish to but hears nothing from (a stuck consumer).
    #[derive(Debug)]
    struct Deaf(tokio::sync::broadcast::Sender<Beat>);

    #[async_trait::async_trait]
    impl crate::liveness::LivenessChannel for Deaf {
        async fn publish(&self, _beat: &Beat) -> Result<(), crate::statelog::LogError> {
            Ok(())
        }
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Beat> {
            self.0.subscribe()
        }
    }

    fn record_at(
        at: chrono::DateTime<chrono::Utc>,
        company: &str,
        actor: &str,
        command: Command,
    ) -> crate::state::Record {
        crate::state::Record {
            v: crate::state::RECORD_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            at,
            company_id: company.into(),
            actor: actor.into(),
            command,
        }
    }

    #[test]
    fn free_slots_go_to_the_longest_waiting_job_across_companies() {
        let t0: chrono::DateTime<chrono::Utc> = "2026-11-25T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let mut state = crate::state::State::default();
        // "zeta" sorts last by name but has waited longest; "acme"'s second job was accepted
        // (by a replica whose clock is behind) before its first: acme's own order still holds.
        let create = |job: &str| Command::CreateExport {
            job_id: job.into(),
            spec: JobSpec::all_history(),
            requester_email: None,
            request_id: None,
            max_queued: None,
        };
        for (company, admin) in [("acme", "ann"), ("mid", "mo"), ("zeta", "zed")] {
            state.apply(&record_at(at(0), company, admin, Command::Enable));
        }
        for (s, company, admin, job) in [
            (1, "zeta", "zed", "z1"),
            (5, "acme", "ann", "a1"),
            (2, "acme", "ann", "a2"),
            (3, "mid", "mo", "m1"),
            (9, "acme", "ann", "a3"),
        ] {
            let outcome = state.apply(&record_at(at(s), company, admin, create(job)));
            assert_eq!(outcome, Outcome::Applied);
        }
        let order: Vec<(&str, &str)> = claim_order(&state)
            .into_iter()
            .map(|(company, job)| (company, job.id.as_str()))
            .collect();
        // acme's third job is past its 2 slots; a2 follows a1 (the fold starts acme's in order).
        assert_eq!(
            order,
            [
                ("zeta", "z1"),
                ("mid", "m1"),
                ("acme", "a1"),
                ("acme", "a2")
            ]
        );
    }

    #[test]
    fn a_failed_notification_is_due_again_after_a_backoff_by_the_logs_times() {
        let t0: chrono::DateTime<chrono::Utc> = "2026-11-25T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let mut state = crate::state::State::default();
        state.apply(&record_at(at(0), "acme", "ann", Command::Enable));
        let create = Command::CreateExport {
            job_id: "j1".into(),
            spec: JobSpec::all_history(),
            requester_email: None,
            request_id: None,
            max_queued: None,
        };
        state.apply(&record_at(at(0), "acme", "ann", create));
        let claim = Command::Claim {
            job_id: "j1".into(),
            worker: "w".into(),
            lease_until: None,
            takes_over: None,
        };
        state.apply(&record_at(at(1), "acme", SERVICE_ACTOR, claim));
        let finish = Command::Finish {
            job_id: "j1".into(),
            worker: "w".into(),
            result: JobResult::Failed { error: "x".into() },
        };
        state.apply(&record_at(at(2), "acme", SERVICE_ACTOR, finish));
        let job = |state: &crate::state::State| {
            state.company("acme").unwrap().job("j1").cloned().unwrap()
        };
        let grace = true;
        let base = chrono::Duration::seconds(30);
        // Its worker's own try first; others only once they have seen it unnotified for the
        // grace, whatever the log's times say (replicas' clocks disagree).
        assert!(!notification_due(&job(&state), false, base, at(86_400)));
        assert!(notification_due(&job(&state), grace, base, at(3)));
        let mut failed_at = 100;
        for attempt in 1..=MAX_NOTIFY_ATTEMPTS {
            let failed = Command::NotifyFailed {
                job_id: "j1".into(),
                attempt,
                reason: "refused".into(),
            };
            state.apply(&record_at(at(failed_at), "acme", SERVICE_ACTOR, failed));
            let wait = notify_backoff(attempt, base).num_seconds();
            if attempt == MAX_NOTIFY_ATTEMPTS {
                // Given up: never due again.
                assert!(!notification_due(
                    &job(&state),
                    grace,
                    base,
                    at(failed_at + 86_400)
                ));
            } else {
                assert!(!notification_due(
                    &job(&state),
                    grace,
                    base,
                    at(failed_at + wait - 1)
                ));
                assert!(notification_due(
                    &job(&state),
                    grace,
                    base,
                    at(failed_at + wait)
                ));
            }
            failed_at += wait;
        }
        assert_eq!(
            (1..=6)
                .map(|n| notify_backoff(n, base).num_seconds())
                .collect::<Vec<_>>(),
            [30, 60, 120, 240, 480, 600]
        );
    }

    /// A mail relay that refuses every message, counting them.
    #[derive(Debug, Default)]
    struct RefusingRelay(std::sync::atomic::AtomicU32);

    #[async_trait::async_trait]
    impl Notify for RefusingRelay {
        async fn notify(&self, _company_id: &str, _job: &Job) -> anyhow::Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            anyhow::bail!("550 5.1.1 mailbox unavailable")
        }
    }

    #[tokio::test]
    async fn a_failing_notification_is_given_up_after_its_attempts_by_every_replica() {
        let replicas = Replicas::new();
        let admin = replicas.state_log().await;
        admin.submit("acme", "ann", Command::Enable).await.unwrap();
        create(&admin, "j1").await;
        let relay = Arc::new(RefusingRelay::default());
        let lease = Duration::from_millis(200);
        for worker in ["a", "b"] {
            let liveness =
                Liveness::start(Arc::new(replicas.channel.clone()), replicas.stop.clone());
            let watermark = crate::watermark::LogWatermark::durable_forever();
            let notifier: Arc<dyn Notify> = relay.clone();
            replicas
                .runner_notifying(worker, lease, liveness, watermark, Some(notifier))
                .await;
        }
        let job = wait_job(&admin, "j1", "given up notifying", |j| j.notify_given_up).await;
        assert_eq!(job.stored_status(), JobStatus::Completed);
        assert_eq!(job.notify_failures, MAX_NOTIFY_ATTEMPTS);
        let tried = relay.0.load(std::sync::atomic::Ordering::SeqCst);
        // Each attempt by one replica, or by both at the same instant at worst.
        assert!(
            (MAX_NOTIFY_ATTEMPTS..=2 * MAX_NOTIFY_ATTEMPTS).contains(&tried),
            "{tried} tries"
        );
        // Nobody tries again: watched for longer than every backoff so far together.
        let watched = tokio::time::Instant::now();
        while watched.elapsed() < lease * 40 {
            tokio::time::sleep(lease).await; // an observation window, not a synchronisation
            assert_eq!(relay.0.load(std::sync::atomic::Ordering::SeqCst), tried);
        }
        let audit = admin.read(|s| s.company("acme").unwrap().audit.clone());
        assert_eq!(audit.last().unwrap().action, "notification_failed");
        // GetExport says so too.
        let shown = admin.read(|s| {
            let company = s.company("acme").unwrap();
            crate::convert::job_to_proto(company, &job, job.progress, chrono::Utc::now())
        });
        assert_eq!(shown.notification(), proto::v1::NotificationStatus::GivenUp);
        assert_eq!(shown.notification_failures, MAX_NOTIFY_ATTEMPTS);
        replicas.stop.cancel();
    }

    #[tokio::test]
    async fn a_replica_that_cannot_hear_itself_takes_nothing_over() {
        let replicas = Replicas::new();
        let admin = replicas.state_log().await;
        admin.submit("acme", "ann", Command::Enable).await.unwrap();
        create(&admin, "j1").await;
        claimed_by(&admin, "j1", "w1").await;
        let lease = Duration::from_millis(300);
        // w1 may well be alive, but this replica's listening is stuck: it hears nothing, not
        // even itself, so it cannot tell.
        let channel = Arc::new(Deaf(tokio::sync::broadcast::channel(4).0));
        let liveness = Liveness::start(channel, replicas.stop.clone());
        let deaf = replicas.runner_hearing("deaf", lease, liveness).await;
        let waited = tokio::time::Instant::now();
        while waited.elapsed() < lease * 8 {
            tokio::time::sleep(lease / 4).await; // letting leases pass, not a synchronisation
            assert!(!deaf.liveness.hears_itself_within(lease));
        }
        let job = admin.read(|s| s.company("acme").unwrap().job("j1").cloned().unwrap());
        assert_eq!(
            (job.owner.as_deref(), job.attempts),
            (Some("w1"), 1),
            "a deaf replica took a running export over"
        );
    }

    #[tokio::test]
    async fn a_silent_workers_export_is_taken_over_and_a_beating_one_is_not() {
        let replicas = Replicas::new();
        let admin = replicas.state_log().await;
        admin.submit("acme", "ann", Command::Enable).await.unwrap();
        create(&admin, "j1").await;
        // A worker claims j1 and then only beats (as a live worker stuck on a slow log would).
        claimed_by(&admin, "j1", "ghost").await;
        let lease = Duration::from_millis(400);
        let b = replicas.runner("b", lease).await;
        let ghost = Liveness::start(Arc::new(replicas.channel.clone()), replicas.stop.clone());
        let beat = |events| Beat {
            v: BEAT_VERSION,
            company_id: "acme".into(),
            job_id: "j1".into(),
            worker: "ghost".into(),
            attempt: 1,
            at: chrono::Utc::now(),
            progress: JobProgress {
                events_read: events,
                ..JobProgress::default()
            },
        };
        // Beating for five leases: never taken over, and its progress reaches other replicas.
        let beating = tokio::time::Instant::now();
        let mut events = 0;
        while beating.elapsed() < lease * 5 {
            events += 1;
            ghost.publish(&beat(events)).await.unwrap();
            tokio::time::sleep(lease / 4).await; // the beat interval, not a synchronisation
        }
        let job = admin.read(|s| s.company("acme").unwrap().job("j1").cloned().unwrap());
        assert_eq!((job.owner.as_deref(), job.attempts), (Some("ghost"), 1));
        assert!(b.liveness.progress("j1", 1).unwrap().events_read >= events - 1);
        // Silent: b takes it over (attempt 2) and completes it under its own attempt's key.
        let done = wait_job(&admin, "j1", "completed", |j| {
            j.stored_status() == JobStatus::Completed
        })
        .await;
        assert_eq!(done.attempts, 2);
        assert!(done.archive.unwrap().key.contains("/j1/attempt-2/"));
        // The ghost's late result is refused.
        let late = Command::Finish {
            job_id: "j1".into(),
            worker: "ghost".into(),
            result: JobResult::Failed {
                error: "late".into(),
            },
        };
        assert!(matches!(
            admin.submit("acme", SERVICE_ACTOR, late).await.unwrap(),
            Outcome::Rejected(_)
        ));
        replicas.stop.cancel();
    }

    #[tokio::test]
    async fn two_replicas_run_every_job_once_and_never_more_than_two_at_a_time() {
        let replicas = Replicas::new();
        let admin = replicas.state_log().await;
        admin.submit("acme", "ann", Command::Enable).await.unwrap();
        let _a = replicas.runner("a", Duration::from_secs(5)).await;
        let _b = replicas.runner("b", Duration::from_secs(5)).await;
        let mut most = 0;
        let mut changes = admin.subscribe();
        for i in 0..6 {
            create(&admin, &format!("j{i}")).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (running, completed) = admin.read(|s| {
                let company = s.company("acme").unwrap();
                let completed = company
                    .jobs()
                    .filter(|j| j.stored_status() == JobStatus::Completed)
                    .count();
                (company.running(), completed)
            });
            most = most.max(running);
            if completed == 6 {
                break;
            }
            let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
            assert!(changed.is_ok(), "6 exports not completed within 60 s");
        }
        assert!(most <= 2, "{most} ran at once");
        admin.read(|s| {
            for job in s.company("acme").unwrap().jobs() {
                assert_eq!(job.attempts, 1, "{job:?}");
            }
        });
        replicas.stop.cancel();
    }

    #[tokio::test]
    async fn a_job_waits_for_the_log_then_exports_at_the_position_it_waited_for() {
        use crate::watermark::{FixedPositions, LogPosition, LogWatermark, PartitionPosition};
        let replicas = Replicas::new();
        let admin = replicas.state_log().await;
        admin.submit("acme", "ann", Command::Enable).await.unwrap();
        let positions = FixedPositions::new("events", 2, None);
        let watermark = LogWatermark::with(
            Arc::new(positions.clone()),
            "events",
            Duration::from_secs(60),
        );
        let liveness = Liveness::start(Arc::new(replicas.channel.clone()), replicas.stop.clone());
        let runner = replicas
            .runner_with("w", Duration::from_secs(5), liveness, watermark)
            .await;
        create(&admin, "j1").await; // all history up to now: its end plus the grace

        // No watermark yet: the job runs, waiting, and its progress says so.
        let waiting = async {
            loop {
                if let Some(lag) = runner
                    .liveness
                    .progress("j1", 1)
                    .and_then(|p| p.waiting_for_log)
                {
                    return lag;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let lag = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting job reports its progress within 10 s");
        let job = admin.read(|s| s.company("acme").unwrap().job("j1").cloned().unwrap());
        assert_eq!(job.stored_status(), JobStatus::InProgress);
        assert_eq!((lag.partitions, lag.durable_until), (0, None));
        assert_eq!(
            lag.needed,
            crate::watermark::Needed {
                at: job.spec.to + chrono::Duration::seconds(60),
                grace_secs: Some(60)
            },
            "up to now: the range's end plus the grace, past the request"
        );

        // The log becomes durable as far as that: the job exports at that position.
        let past = lag.needed.at;
        let position = LogPosition {
            topic: "events".into(),
            expected_partitions: 2,
            partitions: (0..2)
                .map(|partition| PartitionPosition {
                    partition,
                    epoch: 1,
                    durable_offset: 40 + i64::from(partition),
                    time_watermark: Some(past),
                })
                .collect(),
        };
        positions.set(position);
        let done = wait_job(&admin, "j1", "completed", |j| {
            j.stored_status() == JobStatus::Completed
        })
        .await;
        let bytes = replicas
            .store
            .get(&done.archive.unwrap().key)
            .await
            .unwrap();
        let entries = archive::verify::read_entries(&bytes).unwrap();
        let (_, manifest) = entries
            .iter()
            .find(|(name, _)| name.ends_with("/manifest.json"))
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        let at = manifest["log_position"].clone();
        assert_eq!(at["topic"], "events", "{at}");
        assert_eq!(
            at["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (
                    p["partition"].as_i64().unwrap(),
                    p["durable_offset"].as_i64().unwrap()
                ))
                .collect::<Vec<_>>(),
            [(0, 40), (1, 41)],
            "{at}"
        );
        assert_eq!(
            at["durable_until"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap(),
            past
        );
        replicas.stop.cancel();
    }
}
