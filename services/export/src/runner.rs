//! The job runner: every replica claims the jobs the state allows to start, runs them with the
//! export engine, renews its lease while they run, and records their results.
//!
//! A claim, a heartbeat or a result is only a request to the state log; the fold decides (see
//! [`crate::state`]). A worker stops its export — aborting the upload, so no partial object is
//! ever visible — when the job is cancelled, when its lease is lost, or on shutdown (where it
//! releases the job for another replica). Each attempt uploads to its own key, so a late worker
//! can never overwrite the archive a job's accepted result names; a refused result's object is
//! deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archive::{ArchiveError, CancellationToken, ExportRequest};
use storage::ObjectStore;
use tokio::task::JoinSet;

use crate::lifecycle::EXPORTS_PREFIX;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::state::{
    Command, Job, JobProgress, JobResult, JobSpec, JobStatus, Outcome, SERVICE_ACTOR,
};
use crate::statelog::StateLog;

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
    }
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

impl Runner {
    /// Claims and runs jobs until `shutdown`; then stops running exports and releases them.
    pub async fn run(self, shutdown: CancellationToken) {
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut retries: HashMap<String, (u32, tokio::time::Instant)> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut changes = self.log.subscribe();
        loop {
            while tasks.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                break;
            }
            self.claim(&running, &mut tasks, &shutdown).await;
            self.notify_abandoned(&mut retries).await;
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
        let candidates: Vec<(String, String)> = self.log.read(|state| {
            state
                .companies()
                .flat_map(|(company, cs)| {
                    cs.claimable(now)
                        .into_iter()
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
                    let runner = self.clone();
                    let running = running.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        runner.metrics.running.inc();
                        runner
                            .run_job(&company, &job_id, lease_until, &shutdown)
                            .await;
                        runner.metrics.running.dec();
                        running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&job_id);
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
        mut lease_until: chrono::DateTime<chrono::Utc>,
        shutdown: &CancellationToken,
    ) {
        let Some(job) = self.job(company, job_id) else {
            return;
        };
        let request = export_request(company, &job.spec);
        let key = archive_key(company, job_id, job.attempts, &request);
        tracing::info!(%company, job = %job_id, attempt = job.attempts, %key, "export started");
        let cancel = CancellationToken::new();
        let progress: Arc<Mutex<JobProgress>> = Arc::default();
        let upload_started = self.log.clock().now();
        let export = {
            let progress = progress.clone();
            archive::export_to_s3(
                &request,
                self.log_store.clone(),
                self.archive_store.clone(),
                &key,
                &cancel,
                move |p| {
                    *progress.lock().unwrap_or_else(|e| e.into_inner()) = JobProgress {
                        events_read: p.events_read,
                        files_written: p.files_written,
                        bytes_written: p.bytes_written,
                        percent: p.percent.min(99),
                    };
                },
            )
        };
        tokio::pin!(export);
        let mut beat = tokio::time::interval((self.lease / 3).min(Duration::from_secs(1)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.log.subscribe();
        let mut stop: Option<Stop> = None;
        let result = loop {
            tokio::select! {
                result = &mut export => break result,
                _ = beat.tick(), if stop.is_none() => {
                    let until = self.log.clock().now() + chrono_lease(self.lease);
                    let current = *progress.lock().unwrap_or_else(|e| e.into_inner());
                    let heartbeat = Command::Heartbeat {
                        job_id: job_id.to_owned(),
                        worker: self.worker.clone(),
                        lease_until: until,
                        progress: current,
                    };
                    match self.log.submit(company, SERVICE_ACTOR, heartbeat).await {
                        Ok(Outcome::Applied) => lease_until = until,
                        Ok(_) => stop = Some(self.why_stopped(company, job_id)),
                        Err(error) => tracing::warn!(job = %job_id, %error, "renewing the lease"),
                    }
                    if stop.is_none() && self.log.clock().now() >= lease_until {
                        stop = Some(Stop::LostLease);
                    }
                    if stop.is_some() { cancel.cancel(); }
                }
                _ = changes.changed(), if stop.is_none() => {
                    let still_ours = self.job(company, job_id).is_some_and(|j| {
                        j.stored_status() == JobStatus::InProgress
                            && j.owner.as_deref() == Some(self.worker.as_str())
                    });
                    if !still_ours {
                        stop = Some(self.why_stopped(company, job_id));
                        cancel.cancel();
                    }
                }
                () = shutdown.cancelled(), if stop.is_none() => {
                    stop = Some(Stop::Shutdown);
                    cancel.cancel();
                }
            }
        };
        match (result, stop) {
            (Ok(stored), None) => {
                let finish = JobResult::Completed {
                    key: stored.key.clone(),
                    size: stored.size,
                    sha256: stored.sha256.clone(),
                    upload_started,
                };
                self.finish(company, job_id, finish, Some(&stored.key))
                    .await;
            }
            (Err(ArchiveError::Cancelled), Some(Stop::Shutdown))
            | (Ok(_), Some(Stop::Shutdown)) => {
                let release = Command::Release {
                    job_id: job_id.to_owned(),
                    worker: self.worker.clone(),
                };
                let _ = self.log.submit(company, SERVICE_ACTOR, release).await;
                self.metrics.runs.with_label_values(&["released"]).inc();
                tracing::info!(job = %job_id, "export stopped for shutdown and released");
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
        let mut recorded = false;
        for attempt in 0..5u32 {
            match self
                .log
                .submit(company, SERVICE_ACTOR, finish.clone())
                .await
            {
                Ok(Outcome::Applied) => {
                    recorded = true;
                    break;
                }
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(job = %job_id, %error, attempt, "recording the result");
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
            }
        }
        if let Some(key) = key {
            self.delete_unless_recorded(company, job_id, key).await;
        }
        if !recorded {
            self.metrics.runs.with_label_values(&["lost_lease"]).inc();
            tracing::warn!(job = %job_id, "the result was refused: another worker owns the job or it was cancelled");
            return;
        }
        self.metrics.runs.with_label_values(&[label]).inc();
        tracing::info!(job = %job_id, result = label, "export finished");
        if let Some(job) = self.job(company, job_id) {
            self.send_notifications(company, &job).await;
        }
    }

    /// Deletes an attempt's archive unless the state names it as the job's archive.
    async fn delete_unless_recorded(&self, company: &str, job_id: &str, key: &str) {
        let recorded = self
            .job(company, job_id)
            .and_then(|j| j.archive)
            .is_some_and(|a| a.key == key);
        if !recorded && let Err(error) = self.archive_store.delete(key).await {
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
    async fn notify_abandoned(&self, retries: &mut HashMap<String, (u32, tokio::time::Instant)>) {
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
            if self.send_notifications(&company, &job).await {
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

fn chrono_lease(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::seconds(15))
}
