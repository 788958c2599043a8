//! The export service's shared state, as a pure fold over an ordered log of commands.
//!
//! Every replica appends commands to the `export-state` Kafka topic (keyed by company, so one
//! company's commands keep one order) and folds every record of the topic into the same
//! [`State`]. Nothing is decided by a replica alone: a command is a request, and the fold — the
//! same code over the same records in the same order everywhere — decides whether it takes
//! effect. That is how the per-company limit of running exports is exact across replicas: two
//! claims sent at the same instant are ordered by the log, and the second sees the first.
//!
//! Time inside the fold is the record's own `at` (the appending replica's clock), never the
//! folding replica's clock, so every replica reaches the same decisions.
//!
//! Ownership (record version 2): a claimed job runs until it is finished, released, cancelled or
//! taken over — the fold never lets it lapse by time, so a running job holds one of its company's
//! two slots for exactly that long. Whether its worker is still alive is judged by each replica
//! from the liveness channel (`crate::liveness`), which is not kept forever; a replica that judges
//! it dead appends a claim naming the attempt it takes over, and the first such claim in the log
//! wins (the attempt counter moves on, so the others are refused). The old worker's results are
//! refused once it no longer owns the job.
//!
//! Version 1 records (written before liveness moved out of this topic) are folded with their own
//! rules: leases with an expiry, renewed by heartbeat records. A topic written by version 1 keeps
//! those records forever, so the rules stay.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::access::{AccessCommand, AccessState, Denied};
use crate::watermark::LogLag;

/// At most this many of a company's exports run at once.
pub const MAX_RUNNING_PER_COMPANY: usize = 2;
/// A finished archive can be downloaded for this long after its upload started (the bucket's
/// lifecycle rule deletes it after the same time, counted from the object's creation).
pub const RETENTION_DAYS: i64 = 30;
/// The version of the record format this build writes. It reads every version from 1 to this one;
/// a record of a later version stops the fold (see `crate::statelog`).
pub const RECORD_VERSION: u32 = 2;
/// The first record version: leases renewed by heartbeat records in the state topic.
pub const RECORD_VERSION_LEASES: u32 = 1;

/// Whether this build can fold records of version `v`.
pub fn is_known_version(v: u32) -> bool {
    (RECORD_VERSION_LEASES..=RECORD_VERSION).contains(&v)
}

/// One record of the state topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// Unique per record; the appender waits for the fold's outcome under this id.
    pub id: String,
    /// When the appender wrote it, by its clock.
    pub at: DateTime<Utc>,
    pub company_id: String,
    /// The admin who acted, or `service` for the service's own commands.
    pub actor: String,
    pub command: Command,
}

/// The actor of the service's own commands (claims, heartbeats, results).
pub const SERVICE_ACTOR: &str = "service";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    Enable,
    Grant {
        admin_id: String,
    },
    Revoke {
        admin_id: String,
    },
    CreateExport {
        job_id: String,
        spec: JobSpec,
        /// Where the completion email goes, from the requester's token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester_email: Option<String>,
        /// The client's idempotency key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    CancelExport {
        job_id: String,
    },
    /// A worker starts a job: a waiting one (`takes_over` unset), or a running one whose worker
    /// it judges dead (`takes_over`: the attempt it replaces).
    Claim {
        job_id: String,
        worker: String,
        /// Version 1 only: when the lease ends unless renewed by a heartbeat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_until: Option<DateTime<Utc>>,
        /// Version 2: the attempt this claim takes over; the first such claim in the log wins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        takes_over: Option<u32>,
    },
    /// Version 1 only: renews a lease and records progress. Version 2 sends liveness and
    /// progress to the liveness channel instead, which is not kept forever.
    Heartbeat {
        job_id: String,
        worker: String,
        lease_until: DateTime<Utc>,
        progress: JobProgress,
    },
    /// The owner gives the job back (graceful shutdown); it waits again and can be claimed at once.
    Release {
        job_id: String,
        worker: String,
    },
    Finish {
        job_id: String,
        worker: String,
        result: JobResult,
    },
    LinkIssued {
        job_id: String,
        expires_at: DateTime<Utc>,
    },
    Notified {
        job_id: String,
    },
}

/// What an export covers, as requested and validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// `None`: all history.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end; for "until now" the instant the request was accepted.
    pub to: DateTime<Utc>,
    #[serde(default)]
    pub person_ids: Vec<String>,
    #[serde(default)]
    pub conversation_ids: Vec<String>,
    #[serde(default)]
    pub time_zone: String,
    /// `json` (the only format so far).
    pub format: String,
}

#[cfg(test)]
impl JobSpec {
    /// All history until now, in UTC: a spec for tests that do not care what it covers.
    pub(crate) fn all_history() -> Self {
        Self {
            from: None,
            to: chrono::Utc::now(),
            person_ids: vec![],
            conversation_ids: vec![],
            time_zone: String::new(),
            format: "json".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub events_read: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub percent: u32,
    /// While the job waits for the log to be durable far enough for it: how far the log has
    /// got (see [`crate::watermark`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_log: Option<LogLag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobResult {
    Completed {
        key: String,
        size: u64,
        sha256: String,
        /// When the upload of this archive started: the object's creation time.
        upload_started: DateTime<Utc>,
        /// The export's final progress (events read, files written, archive bytes).
        #[serde(default)]
        progress: Option<JobProgress>,
    },
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    Accepted,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    /// Never stored: a completed job past its retention, as seen at some instant.
    Expired,
}

impl JobStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Expired
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub expires_at: DateTime<Utc>,
}

/// One export job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Creation order within the company (0, 1, 2, …).
    pub seq: u64,
    pub spec: JobSpec,
    pub requested_by: String,
    pub requester_email: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    status: JobStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    /// Version 1 records only: when the owner's lease ends unless renewed.
    pub lease_until: Option<DateTime<Utc>>,
    /// How many times a worker has claimed it (numbers each attempt's archive key).
    pub attempts: u32,
    /// How many of those attempts were handed back on shutdown (a release): they do not count
    /// against the job's limit of attempts, so rolling deploys never fail a long export.
    #[serde(default)]
    pub releases: u32,
    /// The final progress of a finished job (and, from version 1 records, the last heartbeat's);
    /// a running job's live progress is on the liveness channel.
    pub progress: JobProgress,
    pub archive: Option<Archive>,
    pub error: Option<String>,
    pub notified: bool,
}

impl Job {
    /// Attempts that ended other than by a release: workers that died or were taken over.
    pub fn failed_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.releases)
    }

    /// The status as seen at `now`: a completed job past its retention is `Expired`.
    pub fn status_at(&self, now: DateTime<Utc>) -> JobStatus {
        match (&self.status, &self.archive) {
            (JobStatus::Completed, Some(archive)) if now >= archive.expires_at => {
                JobStatus::Expired
            }
            (status, _) => *status,
        }
    }

    /// The stored status (never `Expired`).
    pub fn stored_status(&self) -> JobStatus {
        self.status
    }

    /// Version 1: whether the lease is live at `at`.
    fn lease_live_v1(&self, at: DateTime<Utc>) -> bool {
        self.status == JobStatus::InProgress && self.lease_until.is_some_and(|l| l > at)
    }

    /// Version 1: a waiting job, or a running one whose lease has passed.
    fn claimable_v1(&self, at: DateTime<Utc>) -> bool {
        self.status == JobStatus::Accepted
            || (self.status == JobStatus::InProgress && !self.lease_live_v1(at))
    }

    fn owned_by_v1(&self, worker: &str, at: DateTime<Utc>) -> bool {
        self.lease_live_v1(at) && self.owner.as_deref() == Some(worker)
    }

    fn owned_by(&self, worker: &str) -> bool {
        self.status == JobStatus::InProgress && self.owner.as_deref() == Some(worker)
    }
}

/// One line of a company's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The record's id.
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: BTreeMap<String, String>,
}

/// One company's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompanyState {
    pub access: AccessState,
    /// Ordered maps throughout, so that a snapshot of the same state is the same bytes.
    jobs: BTreeMap<String, Job>,
    /// Job ids in creation order.
    order: Vec<String>,
    /// Oldest first.
    pub audit: Vec<AuditEntry>,
}

impl CompanyState {
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// Jobs, oldest first.
    pub fn jobs(&self) -> impl DoubleEndedIterator<Item = &Job> {
        self.order.iter().filter_map(|id| self.jobs.get(id))
    }

    /// Jobs claimed and not yet finished, released or cancelled: each holds one of the
    /// company's slots until then, whether or not its worker is alive.
    pub fn running(&self) -> usize {
        self.jobs()
            .filter(|j| j.status == JobStatus::InProgress)
            .count()
    }

    /// The jobs that may start, in the order they must start: the oldest waiting jobs, as many
    /// as the limit leaves room for. A claim takes the first.
    pub fn claimable(&self) -> Vec<&Job> {
        let room = MAX_RUNNING_PER_COMPANY.saturating_sub(self.running());
        self.jobs()
            .filter(|j| j.status == JobStatus::Accepted)
            .take(room)
            .collect()
    }

    /// Jobs that are running: the ones a replica may take over when it judges their worker dead.
    pub fn in_progress(&self) -> impl Iterator<Item = &Job> {
        self.jobs().filter(|j| j.status == JobStatus::InProgress)
    }

    /// Version 1: jobs whose lease is live at `at`; the claimable ones in order.
    fn claimable_v1(&self, at: DateTime<Utc>) -> Vec<&Job> {
        let running = self.jobs().filter(|j| j.lease_live_v1(at)).count();
        let room = MAX_RUNNING_PER_COMPANY.saturating_sub(running);
        self.jobs()
            .filter(|j| j.claimable_v1(at))
            .take(room)
            .collect()
    }

    /// 1-based position of an ACCEPTED job in the company's queue; 0 when it is not waiting.
    pub fn queue_position(&self, id: &str) -> u32 {
        let mut position = 0u32;
        for job in self.jobs() {
            if job.status == JobStatus::Accepted {
                position += 1;
                if job.id == id {
                    return position;
                }
            }
        }
        0
    }

    fn has_access(&self, actor: &str) -> Result<(), Denied> {
        if self.access.enabled.is_none() {
            return Err(Denied::FailedPrecondition(
                "compliance exports are not enabled for your company".into(),
            ));
        }
        if !self.access.grants.contains_key(actor) {
            return Err(Denied::PermissionDenied(
                "you do not have access to compliance exports".into(),
            ));
        }
        Ok(())
    }

    fn audit(&mut self, record: &Record, action: &str, subject: &str) -> &mut AuditEntry {
        self.audit.push(AuditEntry {
            id: record.id.clone(),
            at: record.at,
            actor: record.actor.clone(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            details: BTreeMap::new(),
        });
        self.audit.last_mut().expect("just pushed")
    }

    fn job_mut(&mut self, id: &str) -> Result<&mut Job, Denied> {
        self.jobs
            .get_mut(id)
            .ok_or_else(|| Denied::NotFound(format!("no export {id:?}")))
    }
}

/// What the fold made of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect (or was already in effect: enabling twice, granting twice).
    Applied,
    /// A create with a request id already used: the existing job.
    Existing { job_id: String },
    /// Refused, with the reason to give the caller.
    Rejected(Denied),
}

/// Every company's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    companies: BTreeMap<String, CompanyState>,
}

impl State {
    pub fn company(&self, id: &str) -> Option<&CompanyState> {
        self.companies.get(id)
    }

    pub fn companies(&self) -> impl Iterator<Item = (&String, &CompanyState)> {
        self.companies.iter()
    }

    /// Folds one record.
    pub fn apply(&mut self, record: &Record) -> Outcome {
        let company = self.companies.entry(record.company_id.clone()).or_default();
        match apply(company, record) {
            Ok(outcome) => outcome,
            Err(denied) => Outcome::Rejected(denied),
        }
    }
}

fn apply(company: &mut CompanyState, record: &Record) -> Result<Outcome, Denied> {
    let at = record.at;
    let actor = record.actor.as_str();
    match &record.command {
        Command::Enable => {
            if company.access.enabled.is_none() {
                company.access.apply(&AccessCommand::Enable {
                    by: actor.to_owned(),
                    at,
                })?;
                company.audit(record, "enable", actor);
            }
        }
        Command::Grant { admin_id } => {
            company.has_access(actor)?;
            if !company.access.grants.contains_key(admin_id) {
                company.access.apply(&AccessCommand::Grant {
                    admin: admin_id.clone(),
                    by: actor.to_owned(),
                    at,
                })?;
                company.audit(record, "grant", admin_id);
            }
        }
        Command::Revoke { admin_id } => {
            company.has_access(actor)?;
            company.access.apply(&AccessCommand::Revoke {
                admin: admin_id.clone(),
                by: actor.to_owned(),
                at,
            })?;
            company.audit(record, "revoke", admin_id);
        }
        Command::CreateExport {
            job_id,
            spec,
            requester_email,
            request_id,
        } => {
            company.has_access(actor)?;
            if let Some(key) = request_id
                && let Some(existing) = company
                    .jobs()
                    .find(|j| j.requested_by == actor && j.request_id.as_ref() == Some(key))
            {
                return Ok(Outcome::Existing {
                    job_id: existing.id.clone(),
                });
            }
            if company.jobs.contains_key(job_id) {
                return Err(Denied::InvalidArgument(format!(
                    "export id {job_id:?} is taken"
                )));
            }
            let job = Job {
                id: job_id.clone(),
                seq: company.order.len() as u64,
                spec: spec.clone(),
                requested_by: actor.to_owned(),
                requester_email: requester_email.clone(),
                request_id: request_id.clone(),
                created_at: at,
                status: JobStatus::Accepted,
                started_at: None,
                finished_at: None,
                owner: None,
                lease_until: None,
                attempts: 0,
                releases: 0,
                progress: JobProgress::default(),
                archive: None,
                error: None,
                notified: false,
            };
            company.jobs.insert(job_id.clone(), job);
            company.order.push(job_id.clone());
            let entry = company.audit(record, "create_export", job_id);
            entry.details.insert("to".into(), spec.to.to_rfc3339());
            if let Some(from) = spec.from {
                entry.details.insert("from".into(), from.to_rfc3339());
            }
        }
        Command::CancelExport { job_id } => {
            company.has_access(actor)?;
            let job = company.job_mut(job_id)?;
            match job.status {
                JobStatus::Accepted | JobStatus::InProgress => {
                    job.status = JobStatus::Cancelled;
                    job.finished_at = Some(at);
                    job.owner = None;
                    job.lease_until = None;
                }
                status => {
                    return Err(Denied::FailedPrecondition(format!(
                        "export {job_id} has already finished ({}); only waiting or running \
                         exports can be cancelled",
                        status_word(status)
                    )));
                }
            }
            company.audit(record, "cancel_export", job_id);
        }
        Command::Claim {
            job_id,
            worker,
            lease_until,
            takes_over,
        } => {
            let allowed = if record.v == RECORD_VERSION_LEASES {
                // Only the oldest claimable job, so jobs start in the order they were accepted
                // even when several slots free up at once and replicas race for them.
                company.claimable_v1(at).first().map(|j| &j.id) == Some(job_id)
            } else if let Some(attempt) = takes_over {
                // The first takeover of this attempt wins; the job keeps its slot.
                company
                    .job(job_id)
                    .is_some_and(|j| j.status == JobStatus::InProgress && j.attempts == *attempt)
            } else {
                company.claimable().first().map(|j| &j.id) == Some(job_id)
            };
            if !allowed {
                company.job_mut(job_id)?;
                return Err(Denied::FailedPrecondition(format!(
                    "export {job_id} cannot be claimed now"
                )));
            }
            let job = company.job_mut(job_id)?;
            job.status = JobStatus::InProgress;
            job.owner = Some(worker.clone());
            job.lease_until = *lease_until;
            job.attempts += 1;
            job.started_at.get_or_insert(at);
            job.progress = JobProgress::default();
        }
        Command::Heartbeat {
            job_id,
            worker,
            lease_until,
            progress,
        } => {
            if record.v != RECORD_VERSION_LEASES {
                return Err(Denied::InvalidArgument(format!(
                    "a heartbeat of export {job_id} in the state topic: since record version 2 \
                     heartbeats go to the liveness channel"
                )));
            }
            let job = company.job_mut(job_id)?;
            if !job.owned_by_v1(worker, at) {
                return Err(lost_lease(job_id));
            }
            job.lease_until = Some(*lease_until);
            job.progress = *progress;
        }
        Command::Release { job_id, worker } => {
            let v1 = record.v == RECORD_VERSION_LEASES;
            let job = company.job_mut(job_id)?;
            if !(if v1 {
                job.owned_by_v1(worker, at)
            } else {
                job.owned_by(worker)
            }) {
                return Err(lost_lease(job_id));
            }
            // Waiting again (it keeps its place: it is older than every waiting job).
            job.releases += 1;
            job.status = JobStatus::Accepted;
            job.owner = None;
            job.lease_until = None;
            job.progress = JobProgress::default();
        }
        Command::Finish {
            job_id,
            worker,
            result,
        } => {
            let v1 = record.v == RECORD_VERSION_LEASES;
            let job = company.job_mut(job_id)?;
            if !(if v1 {
                job.owned_by_v1(worker, at)
            } else {
                job.owned_by(worker)
            }) {
                return Err(lost_lease(job_id));
            }
            job.finished_at = Some(at);
            job.owner = None;
            job.lease_until = None;
            let action = match result {
                JobResult::Completed {
                    key,
                    size,
                    sha256,
                    upload_started,
                    progress,
                } => {
                    job.status = JobStatus::Completed;
                    if let Some(progress) = progress {
                        job.progress = *progress;
                    }
                    job.progress.percent = 100;
                    job.archive = Some(Archive {
                        key: key.clone(),
                        size: *size,
                        sha256: sha256.clone(),
                        expires_at: *upload_started + Duration::days(RETENTION_DAYS),
                    });
                    "export_completed"
                }
                JobResult::Failed { error } => {
                    job.status = JobStatus::Failed;
                    job.error = Some(error.clone());
                    "export_failed"
                }
            };
            company.audit(record, action, job_id);
        }
        Command::LinkIssued { job_id, expires_at } => {
            company.has_access(actor)?;
            let job = company.job_mut(job_id)?;
            match job.status_at(at) {
                JobStatus::Completed => {}
                JobStatus::Expired => {
                    return Err(Denied::FailedPrecondition(format!(
                        "export {job_id} has expired: archives are kept {RETENTION_DAYS} days; \
                         request a new export"
                    )));
                }
                status => {
                    return Err(Denied::FailedPrecondition(format!(
                        "export {job_id} is {}: a download link exists only for a completed \
                         export",
                        status_word(status)
                    )));
                }
            }
            let entry = company.audit(record, "download_link", job_id);
            entry
                .details
                .insert("expires_at".into(), expires_at.to_rfc3339());
        }
        Command::Notified { job_id } => {
            company.job_mut(job_id)?.notified = true;
        }
    }
    Ok(Outcome::Applied)
}

fn lost_lease(job_id: &str) -> Denied {
    Denied::FailedPrecondition(format!("this worker no longer owns export {job_id}"))
}

/// The status as a person reads it.
pub fn status_word(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Accepted => "waiting to start",
        JobStatus::InProgress => "in progress",
        JobStatus::Completed => "completed",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
        JobStatus::Expired => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        "2026-11-25T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(seconds)
    }

    fn record(at: i64, actor: &str, command: Command) -> Record {
        Record {
            v: RECORD_VERSION,
            id: format!("r{at}-{actor}"),
            at: t(at),
            company_id: "acme".into(),
            actor: actor.into(),
            command,
        }
    }

    fn spec() -> JobSpec {
        JobSpec {
            from: None,
            to: t(0),
            person_ids: vec![],
            conversation_ids: vec![],
            time_zone: String::new(),
            format: "json".into(),
        }
    }

    fn create(at: i64, job: &str) -> Record {
        record(
            at,
            "ann",
            Command::CreateExport {
                job_id: job.into(),
                spec: spec(),
                requester_email: None,
                request_id: None,
            },
        )
    }

    fn claim(at: i64, job: &str, worker: &str) -> Record {
        claim_taking_over(at, job, worker, None)
    }

    fn take_over(at: i64, job: &str, worker: &str, attempt: u32) -> Record {
        claim_taking_over(at, job, worker, Some(attempt))
    }

    fn claim_taking_over(at: i64, job: &str, worker: &str, takes_over: Option<u32>) -> Record {
        record(
            at,
            SERVICE_ACTOR,
            Command::Claim {
                job_id: job.into(),
                worker: worker.into(),
                lease_until: None,
                takes_over,
            },
        )
    }

    /// A record as version 1 wrote it.
    fn v1(mut record: Record) -> Record {
        record.v = RECORD_VERSION_LEASES;
        record
    }

    fn claim_v1(at: i64, job: &str, worker: &str, lease: i64) -> Record {
        v1(record(
            at,
            SERVICE_ACTOR,
            Command::Claim {
                job_id: job.into(),
                worker: worker.into(),
                lease_until: Some(t(at + lease)),
                takes_over: None,
            },
        ))
    }

    fn finish(at: i64, job: &str, worker: &str) -> Record {
        record(
            at,
            SERVICE_ACTOR,
            Command::Finish {
                job_id: job.into(),
                worker: worker.into(),
                result: JobResult::Completed {
                    key: format!("exports/acme/{job}.zip"),
                    size: 10,
                    sha256: "ab".into(),
                    upload_started: t(at - 1),
                    progress: None,
                },
            },
        )
    }

    fn enabled() -> State {
        let mut state = State::default();
        assert_eq!(
            state.apply(&record(0, "ann", Command::Enable)),
            Outcome::Applied
        );
        state
    }

    fn status(state: &State, job: &str) -> JobStatus {
        state
            .company("acme")
            .unwrap()
            .job(job)
            .unwrap()
            .stored_status()
    }

    fn rejected(outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::Rejected(_))
    }

    #[test]
    fn at_most_two_run_and_the_rest_start_in_order() {
        let mut state = enabled();
        for (i, job) in ["j1", "j2", "j3", "j4"].iter().enumerate() {
            assert_eq!(state.apply(&create(i as i64 + 1, job)), Outcome::Applied);
        }
        // Two replicas claim at the same instant; the log orders them.
        assert_eq!(state.apply(&claim(10, "j1", "a")), Outcome::Applied);
        assert_eq!(state.apply(&claim(10, "j2", "b")), Outcome::Applied);
        // A third claim — of any job — is refused while two leases are live.
        assert!(rejected(&state.apply(&claim(10, "j3", "a"))));
        assert!(rejected(&state.apply(&claim(10, "j4", "b"))));
        // Claiming the same job twice: refused.
        assert!(rejected(&state.apply(&claim(11, "j1", "b"))));
        let company = state.company("acme").unwrap();
        assert_eq!(company.running(), 2);
        assert_eq!(company.queue_position("j3"), 1);
        assert_eq!(company.queue_position("j4"), 2);
        // When one finishes, the oldest waiting job — and only it — may start.
        assert_eq!(state.apply(&finish(20, "j1", "a")), Outcome::Applied);
        assert_eq!(state.apply(&finish(20, "j2", "b")), Outcome::Applied);
        // Two slots are free, yet j4 cannot jump ahead of j3.
        assert!(rejected(&state.apply(&claim(21, "j4", "a"))));
        assert_eq!(state.apply(&claim(21, "j3", "a")), Outcome::Applied);
        assert_eq!(status(&state, "j3"), JobStatus::InProgress);
        assert_eq!(status(&state, "j4"), JobStatus::Accepted);
        assert_eq!(state.apply(&claim(22, "j4", "b")), Outcome::Applied);
    }

    #[test]
    fn a_takeover_names_the_attempt_it_replaces_and_the_first_wins() {
        let mut state = enabled();
        state.apply(&create(1, "j1"));
        state.apply(&create(2, "j2"));
        state.apply(&create(3, "j3"));
        assert_eq!(state.apply(&claim(4, "j1", "a")), Outcome::Applied);
        assert_eq!(state.apply(&claim(4, "j2", "a")), Outcome::Applied);
        // However long a worker is silent, its job keeps its slot: no time-based lapse.
        assert!(rejected(&state.apply(&claim(100_000, "j3", "b"))));
        assert!(rejected(&state.apply(&claim(100_000, "j1", "b"))));
        // Two replicas judge a dead and race to take j1 over: the log's first wins.
        assert_eq!(state.apply(&take_over(10, "j1", "b", 1)), Outcome::Applied);
        assert!(rejected(&state.apply(&take_over(10, "j1", "c", 1))));
        let job = state.company("acme").unwrap().job("j1").unwrap();
        assert_eq!((job.attempts, job.owner.as_deref()), (2, Some("b")));
        assert_eq!(job.started_at, Some(t(4)));
        // Still two running: a takeover never makes a third.
        assert_eq!(state.company("acme").unwrap().running(), 2);
        assert!(rejected(&state.apply(&claim(11, "j3", "c"))));
        // a wakes up: its result is refused; b's stands; a finished job is never taken over.
        assert!(rejected(&state.apply(&finish(12, "j1", "a"))));
        assert_eq!(state.apply(&finish(13, "j1", "b")), Outcome::Applied);
        assert!(rejected(&state.apply(&take_over(14, "j1", "c", 2))));
        assert!(rejected(&state.apply(&take_over(14, "j3", "c", 0))));
        assert_eq!(state.apply(&claim(15, "j3", "c")), Outcome::Applied);
        // Heartbeats are no longer state records.
        let beat = record(
            16,
            SERVICE_ACTOR,
            Command::Heartbeat {
                job_id: "j3".into(),
                worker: "c".into(),
                lease_until: t(30),
                progress: JobProgress::default(),
            },
        );
        assert!(rejected(&state.apply(&beat)));
    }

    #[test]
    fn version_1_records_keep_their_lease_rules() {
        let mut state = enabled();
        state.apply(&v1(create(1, "j1")));
        assert_eq!(state.apply(&claim_v1(2, "j1", "a", 10)), Outcome::Applied);
        // Before the lease ends nobody else can take it.
        assert!(rejected(&state.apply(&claim_v1(5, "j1", "b", 10))));
        // Heartbeats keep it.
        let beat = |at, worker: &str| {
            v1(record(
                at,
                SERVICE_ACTOR,
                Command::Heartbeat {
                    job_id: "j1".into(),
                    worker: worker.into(),
                    lease_until: t(at + 10),
                    progress: JobProgress {
                        events_read: 5,
                        ..JobProgress::default()
                    },
                },
            ))
        };
        assert_eq!(state.apply(&beat(8, "a")), Outcome::Applied);
        assert!(rejected(&state.apply(&claim_v1(15, "j1", "b", 10))));
        // Worker a dies; its lease (18) passes; b takes over.
        assert_eq!(state.apply(&claim_v1(19, "j1", "b", 10)), Outcome::Applied);
        let job = state.company("acme").unwrap().job("j1").unwrap();
        assert_eq!(job.attempts, 2);
        assert_eq!(job.owner.as_deref(), Some("b"));
        assert_eq!(job.progress, JobProgress::default());
        // a wakes up: its heartbeat and its result are refused; b's result stands.
        assert!(rejected(&state.apply(&beat(20, "a"))));
        assert!(rejected(&state.apply(&v1(finish(21, "j1", "a")))));
        assert_eq!(state.apply(&v1(finish(22, "j1", "b"))), Outcome::Applied);
        assert!(rejected(&state.apply(&claim_v1(40, "j1", "a", 10))));
        // A job whose version-1 lease lapsed unrenewed still holds its slot under version 2
        // until a replica takes it over (judging it dead from the liveness channel).
        state.apply(&v1(create(50, "j2")));
        state.apply(&v1(create(51, "j3")));
        state.apply(&v1(create(52, "j4")));
        assert_eq!(state.apply(&claim_v1(53, "j2", "a", 5)), Outcome::Applied);
        assert_eq!(state.apply(&claim_v1(53, "j3", "a", 5)), Outcome::Applied);
        assert!(rejected(&state.apply(&claim(1000, "j4", "b"))));
        assert_eq!(
            state.apply(&take_over(1000, "j2", "b", 1)),
            Outcome::Applied
        );
        assert_eq!(state.apply(&finish(1001, "j2", "b")), Outcome::Applied);
        assert_eq!(state.apply(&claim(1002, "j4", "b")), Outcome::Applied);
    }

    #[test]
    fn snapshots_of_the_same_state_are_the_same_bytes() {
        let mut one = enabled();
        let mut two = enabled();
        for (i, job) in ["j3", "j1", "j2"].iter().enumerate() {
            one.apply(&create(i as i64 + 1, job));
            two.apply(&create(i as i64 + 1, job));
        }
        let a = serde_json::to_vec(&one).unwrap();
        assert_eq!(a, serde_json::to_vec(&two).unwrap());
        let back: State = serde_json::from_slice(&a).unwrap();
        assert_eq!(back, one);
    }

    #[test]
    fn release_makes_a_job_claimable_at_once() {
        let mut state = enabled();
        state.apply(&create(1, "j1"));
        state.apply(&claim(2, "j1", "a"));
        let release = record(
            3,
            SERVICE_ACTOR,
            Command::Release {
                job_id: "j1".into(),
                worker: "a".into(),
            },
        );
        assert_eq!(state.apply(&release), Outcome::Applied);
        assert_eq!(state.apply(&claim(4, "j1", "b")), Outcome::Applied);
        // Handed back on shutdown: a new attempt (its own archive key), not a failed one.
        let job = state.company("acme").unwrap().job("j1").unwrap();
        assert_eq!(
            (job.attempts, job.releases, job.failed_attempts()),
            (2, 1, 1)
        );
    }

    #[test]
    fn releases_on_many_rolling_deploys_do_not_use_up_the_attempts() {
        let mut state = enabled();
        state.apply(&create(1, "j1"));
        for deploy in 0..10 {
            let at = 2 + 2 * deploy;
            assert_eq!(state.apply(&claim(at, "j1", "a")), Outcome::Applied);
            let release = record(
                at + 1,
                SERVICE_ACTOR,
                Command::Release {
                    job_id: "j1".into(),
                    worker: "a".into(),
                },
            );
            assert_eq!(state.apply(&release), Outcome::Applied);
        }
        let job = state.company("acme").unwrap().job("j1").unwrap();
        assert_eq!(job.attempts, 10);
        assert_eq!(job.failed_attempts(), 0);
    }

    #[test]
    fn cancel_stops_waiting_and_running_jobs_but_not_finished_ones() {
        let mut state = enabled();
        state.apply(&create(1, "j1"));
        state.apply(&create(2, "j2"));
        state.apply(&claim(3, "j1", "a"));
        let cancel =
            |at, job: &str| record(at, "ann", Command::CancelExport { job_id: job.into() });
        assert_eq!(state.apply(&cancel(4, "j1")), Outcome::Applied);
        assert_eq!(state.apply(&cancel(4, "j2")), Outcome::Applied);
        assert_eq!(status(&state, "j1"), JobStatus::Cancelled);
        // The worker's result after the cancel is refused (it deletes its object).
        assert!(rejected(&state.apply(&finish(5, "j1", "a"))));
        assert!(rejected(&state.apply(&cancel(6, "j1"))));
        assert!(rejected(&state.apply(&claim(7, "j2", "a"))));
        let unknown = state.apply(&cancel(8, "nope"));
        assert!(matches!(unknown, Outcome::Rejected(Denied::NotFound(_))));
    }

    #[test]
    fn links_only_for_completed_jobs_within_retention_and_every_one_audited() {
        let mut state = enabled();
        state.apply(&create(1, "j1"));
        let link = |at: i64| {
            record(
                at,
                "ann",
                Command::LinkIssued {
                    job_id: "j1".into(),
                    expires_at: t(at + 3600),
                },
            )
        };
        assert!(rejected(&state.apply(&link(2))));
        state.apply(&claim(3, "j1", "a"));
        state.apply(&finish(10, "j1", "a"));
        assert_eq!(state.apply(&link(11)), Outcome::Applied);
        let day = 86_400;
        assert_eq!(state.apply(&link(29 * day)), Outcome::Applied);
        // The archive's upload started at 9: it expires at 9 + 30 days.
        let job = state.company("acme").unwrap().job("j1").unwrap();
        assert_eq!(job.status_at(t(30 * day + 8)), JobStatus::Completed);
        assert_eq!(job.status_at(t(30 * day + 9)), JobStatus::Expired);
        assert!(rejected(&state.apply(&link(30 * day + 9))));
        let links = state
            .company("acme")
            .unwrap()
            .audit
            .iter()
            .filter(|e| e.action == "download_link")
            .count();
        assert_eq!(links, 2);
    }

    #[test]
    fn commands_are_refused_once_access_is_revoked() {
        let mut state = enabled();
        let grant = record(
            1,
            "ann",
            Command::Grant {
                admin_id: "bob".into(),
            },
        );
        assert_eq!(state.apply(&grant), Outcome::Applied);
        let revoke = record(
            2,
            "ann",
            Command::Revoke {
                admin_id: "bob".into(),
            },
        );
        assert_eq!(state.apply(&revoke), Outcome::Applied);
        // A create by bob that was checked before the revoke but ordered after it is refused.
        let mut late = create(3, "j1");
        late.actor = "bob".into();
        assert!(matches!(
            state.apply(&late),
            Outcome::Rejected(Denied::PermissionDenied(_))
        ));
        // A stranger cannot grant; another company's state is separate.
        let mut other = record(
            4,
            "mallory",
            Command::Grant {
                admin_id: "mallory2".into(),
            },
        );
        assert!(rejected(&state.apply(&other)));
        other.company_id = "globex".into();
        assert!(matches!(
            state.apply(&other),
            Outcome::Rejected(Denied::FailedPrecondition(_))
        ));
        let actions: Vec<_> = state
            .company("acme")
            .unwrap()
            .audit
            .iter()
            .map(|e| e.action.as_str())
            .collect();
        assert_eq!(actions, ["enable", "grant", "revoke"]);
    }

    #[test]
    fn a_repeated_request_id_returns_the_same_job() {
        let mut state = enabled();
        let with_key = |at, job: &str| {
            record(
                at,
                "ann",
                Command::CreateExport {
                    job_id: job.into(),
                    spec: spec(),
                    requester_email: None,
                    request_id: Some("k1".into()),
                },
            )
        };
        assert_eq!(state.apply(&with_key(1, "j1")), Outcome::Applied);
        assert_eq!(
            state.apply(&with_key(2, "j2")),
            Outcome::Existing {
                job_id: "j1".into()
            }
        );
        assert_eq!(state.company("acme").unwrap().jobs().count(), 1);
    }

    #[test]
    fn records_round_trip_as_json() {
        let record = finish(5, "j1", "a");
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""type":"finish""#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
    }
}
