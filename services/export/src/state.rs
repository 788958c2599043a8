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
//!
//! Version 3 adds rules an older build would not apply alike (so it must stop at them rather
//! than diverge): a create may carry its company's cap on waiting exports, which the fold
//! enforces; failed notifications are counted ([`Command::NotifyFailed`]) and given up after
//! [`MAX_NOTIFY_ATTEMPTS`]. For every version the fold accepts only an archive key under
//! `exports/<the job's company>/` ([`archive_key_is_the_companys`]).
//!
//! Version 4 adds scheduled exports ([`schedules`]): schedule commands, and runs proposed by
//! the replicas that the fold accepts one at a time, in order. An older build halts on them
//! rather than ignore them (a schedule it did not fold would never run, or run twice).
//!
//! Jobs are indexed, not scanned: each company keeps its waiting, running and not-yet-notified
//! jobs in ordered sets ([`CompanyState`]), rebuilt from the jobs when a snapshot is read, so a
//! company with years of finished exports costs nothing per claim.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::access::{AccessCommand, AccessState, Action, Denied};
use crate::lifecycle::EXPORTS_PREFIX;
pub use crate::progress::JobProgress;
pub use schedules::{
    DueIndex, NextRun, PreviousLink, RunLink, Schedule, ScheduleRun, ScheduleSpec, ScheduleStatus,
    retry_backoff,
};

pub mod schedules;

/// At most this many of a company's exports run at once.
pub const MAX_RUNNING_PER_COMPANY: usize = 2;
/// A finished archive can be downloaded for this long after its upload started (the bucket's
/// lifecycle rule deletes it after the same time, counted from the object's creation).
pub const RETENTION_DAYS: i64 = 30;
/// The version of the record format this build writes. It reads every version from 1 to this one;
/// a record of a later version stops the fold (see `crate::statelog`).
pub const RECORD_VERSION: u32 = 4;
/// The first record version: leases renewed by heartbeat records in the state topic.
pub const RECORD_VERSION_LEASES: u32 = 1;

/// A finished job's notification is tried this many times (recorded in the log, so every
/// replica agrees on the count); then it is marked failed and nobody tries again.
pub const MAX_NOTIFY_ATTEMPTS: u32 = 5;

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
        /// Version 3: the most exports the company may have waiting to start, as the appending
        /// replica is configured; the fold refuses the create when that many already wait (so
        /// replicas racing to accept cannot exceed it). Unset: no cap.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_queued: Option<u32>,
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
    /// Version 3: notifying a finished job failed, for the `attempt`-th time (1-based; the fold
    /// accepts only the next attempt, so two replicas failing at once count once). After
    /// [`MAX_NOTIFY_ATTEMPTS`] the job's notification is given up.
    NotifyFailed {
        job_id: String,
        attempt: u32,
        reason: String,
    },
    /// Version 4: an admin creates a schedule ([`schedules`]).
    CreateSchedule {
        schedule_id: String,
        spec: ScheduleSpec,
        /// Start of run 1's range.
        start: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester_email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// The most schedules (not deleted) the company may have, as the appending replica is
        /// configured; the fold refuses the create past it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_schedules: Option<u32>,
    },
    /// Version 4: no new run starts until resumed.
    PauseSchedule {
        schedule_id: String,
    },
    /// Version 4: runs continue from where the last one ended.
    ResumeSchedule {
        schedule_id: String,
    },
    /// Version 4: the schedule ends for good.
    DeleteSchedule {
        schedule_id: String,
    },
    /// Version 4: a replica proposes a schedule's next run (or a failed run again) as a new job;
    /// the fold accepts only the next one ([`schedules`]).
    ScheduleRun {
        schedule_id: String,
        run: u64,
        job_id: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        /// As in [`Command::CreateExport`]: a run waits in the same queue, under the same cap.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_queued: Option<u32>,
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
    /// `json`, `eml` or `csv` (`archive::DataFormat::name`).
    pub format: String,
    /// Version 4: a scheduled run's place in its schedule's chain. Unset for an export requested
    /// by hand (and in every record before version 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<RunLink>,
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
            schedule: None,
        }
    }
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
    /// Failed notification attempts, as recorded ([`Command::NotifyFailed`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub notify_failures: u32,
    /// When the last of those failed (the next try waits a backoff from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_failed_at: Option<DateTime<Utc>>,
    /// Every notification attempt failed: nobody tries again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify_given_up: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Job {
    /// A job just accepted (created by an admin's request or a schedule's run): waiting, with
    /// no attempt, result or notification yet.
    pub(crate) fn accepted(
        id: String,
        seq: u64,
        spec: JobSpec,
        requested_by: String,
        requester_email: Option<String>,
        request_id: Option<String>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            seq,
            spec,
            requested_by,
            requester_email,
            request_id,
            created_at,
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
            notify_failures: 0,
            notify_failed_at: None,
            notify_given_up: false,
        }
    }

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

    /// Finished, and its notification neither recorded nor given up: someone must notify.
    pub fn awaits_notification(&self) -> bool {
        matches!(self.status, JobStatus::Completed | JobStatus::Failed)
            && !self.notified
            && !self.notify_given_up
    }

    /// Version 1: whether the lease is live at `at`.
    fn lease_live_v1(&self, at: DateTime<Utc>) -> bool {
        self.status == JobStatus::InProgress && self.lease_until.is_some_and(|l| l > at)
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
#[serde(from = "StoredCompany")]
pub struct CompanyState {
    pub access: AccessState,
    /// Ordered maps throughout, so that a snapshot of the same state is the same bytes.
    jobs: BTreeMap<String, Job>,
    /// Job ids in creation order.
    order: Vec<String>,
    /// Oldest first.
    pub audit: Vec<AuditEntry>,
    /// Version 4: by id. Left out of snapshots while empty, so theirs stay the same bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    schedules: BTreeMap<String, Schedule>,
    /// Derived from `jobs`: not in snapshots (rebuilt when one is read), so their bytes and
    /// format stay what they were.
    #[serde(skip)]
    index: JobIndex,
}

/// A company's state as a snapshot holds it (everything but the indexes).
#[derive(Deserialize)]
struct StoredCompany {
    access: AccessState,
    jobs: BTreeMap<String, Job>,
    order: Vec<String>,
    audit: Vec<AuditEntry>,
    #[serde(default)]
    schedules: BTreeMap<String, Schedule>,
}

impl From<StoredCompany> for CompanyState {
    fn from(stored: StoredCompany) -> Self {
        let mut company = Self {
            access: stored.access,
            jobs: stored.jobs,
            order: stored.order,
            audit: stored.audit,
            schedules: stored.schedules,
            index: JobIndex::default(),
        };
        let ids: Vec<String> = company.jobs.keys().cloned().collect();
        for id in &ids {
            company.reindex(id);
        }
        company
    }
}

/// A company's jobs by what the fold and the runner look for, each set ordered by creation
/// (`seq`, then id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct JobIndex {
    /// Waiting to start (`Accepted`).
    queued: BTreeSet<(u64, String)>,
    /// Claimed and not yet finished, released or cancelled (`InProgress`).
    running: BTreeSet<(u64, String)>,
    /// Finished, not yet notified nor given up.
    unnotified: BTreeSet<(u64, String)>,
    /// (requester, request id) → job id.
    by_request: BTreeMap<(String, String), String>,
}

impl CompanyState {
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// Jobs, oldest first.
    pub fn jobs(&self) -> impl DoubleEndedIterator<Item = &Job> {
        self.order.iter().filter_map(|id| self.jobs.get(id))
    }

    /// Jobs created before the `seq`-th (all with `None`), oldest first: a page of a listing
    /// starts here without walking the newer ones.
    pub fn jobs_before(&self, seq: Option<u64>) -> impl DoubleEndedIterator<Item = &Job> {
        let end = seq.map_or(self.order.len(), |seq| {
            usize::try_from(seq).map_or(self.order.len(), |s| s.min(self.order.len()))
        });
        self.order[..end].iter().filter_map(|id| self.jobs.get(id))
    }

    fn indexed<'a>(
        &'a self,
        set: &'a BTreeSet<(u64, String)>,
    ) -> impl DoubleEndedIterator<Item = &'a Job> + 'a {
        set.iter().filter_map(|(_, id)| self.jobs.get(id))
    }

    /// Puts job `id` in the indexes its current state belongs to (and no others).
    fn reindex(&mut self, id: &str) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        let key = (job.seq, job.id.clone());
        let index = &mut self.index;
        for (set, member) in [
            (&mut index.queued, job.status == JobStatus::Accepted),
            (&mut index.running, job.status == JobStatus::InProgress),
            (&mut index.unnotified, job.awaits_notification()),
        ] {
            if member {
                set.insert(key.clone());
            } else {
                set.remove(&key);
            }
        }
        if let Some(request_id) = &job.request_id {
            index
                .by_request
                .entry((job.requested_by.clone(), request_id.clone()))
                .or_insert_with(|| job.id.clone());
        }
    }

    /// Jobs claimed and not yet finished, released or cancelled: each holds one of the
    /// company's slots until then, whether or not its worker is alive.
    pub fn running(&self) -> usize {
        self.index.running.len()
    }

    /// Jobs waiting to start.
    pub fn queued(&self) -> usize {
        self.index.queued.len()
    }

    /// The jobs that may start, in the order they must start: the oldest waiting jobs, as many
    /// as the limit leaves room for. A claim takes the first.
    pub fn claimable(&self) -> Vec<&Job> {
        let room = MAX_RUNNING_PER_COMPANY.saturating_sub(self.running());
        self.indexed(&self.index.queued).take(room).collect()
    }

    /// Jobs that are running: the ones a replica may take over when it judges their worker dead.
    pub fn in_progress(&self) -> impl Iterator<Item = &Job> {
        self.indexed(&self.index.running)
    }

    /// Finished jobs whose notification is neither recorded nor given up, oldest first.
    pub fn awaiting_notification(&self) -> impl Iterator<Item = &Job> {
        self.indexed(&self.index.unnotified)
    }

    /// Version 1: jobs whose lease is live at `at`; the claimable ones in order (waiting ones,
    /// and running ones whose lease has passed).
    fn claimable_v1(&self, at: DateTime<Utc>) -> Vec<&Job> {
        let running = self.in_progress().filter(|j| j.lease_live_v1(at)).count();
        let room = MAX_RUNNING_PER_COMPANY.saturating_sub(running);
        let lapsed = self
            .index
            .running
            .iter()
            .filter(|(_, id)| self.jobs.get(id).is_some_and(|j| !j.lease_live_v1(at)));
        let mut candidates: Vec<&(u64, String)> = lapsed.chain(&self.index.queued).collect();
        candidates.sort();
        candidates
            .into_iter()
            .filter_map(|(_, id)| self.jobs.get(id))
            .take(room)
            .collect()
    }

    /// 1-based position of an ACCEPTED job in the company's queue; 0 when it is not waiting.
    pub fn queue_position(&self, id: &str) -> u32 {
        let Some(job) = self
            .jobs
            .get(id)
            .filter(|j| j.status == JobStatus::Accepted)
        else {
            return 0;
        };
        let ahead = self.index.queued.range(..(job.seq, job.id.clone())).count();
        u32::try_from(ahead + 1).unwrap_or(u32::MAX)
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
    /// A schedule's create with a request id already used: the existing schedule.
    ExistingSchedule { schedule_id: String },
    /// Refused, with the reason to give the caller.
    Rejected(Denied),
}

/// Every company's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredState")]
pub struct State {
    companies: BTreeMap<String, CompanyState>,
    /// Derived from the schedules and their jobs: not in snapshots, rebuilt when one is read.
    #[serde(skip)]
    due: DueIndex,
}

/// The state as a snapshot holds it (without the due index).
#[derive(Deserialize)]
struct StoredState {
    companies: BTreeMap<String, CompanyState>,
}

impl From<StoredState> for State {
    fn from(stored: StoredState) -> Self {
        let mut state = Self {
            companies: stored.companies,
            due: DueIndex::default(),
        };
        let all: Vec<(String, String)> = state
            .companies
            .iter()
            .flat_map(|(c, cs)| cs.schedules.keys().map(|s| (c.clone(), s.clone())))
            .collect();
        for (company, schedule) in all {
            state.reindex_schedule(&company, &schedule);
        }
        state
    }
}

impl State {
    pub fn company(&self, id: &str) -> Option<&CompanyState> {
        self.companies.get(id)
    }

    pub fn companies(&self) -> impl Iterator<Item = (&String, &CompanyState)> {
        self.companies.iter()
    }

    /// Schedules due at or before `now`, `(company, schedule)`, earliest first.
    pub fn due_schedules(&self, now: DateTime<Utc>) -> impl Iterator<Item = (&str, &str)> {
        self.due.due(now)
    }

    /// The earliest instant a schedule is due, if one is waiting for a time.
    pub fn next_schedule_due(&self) -> Option<DateTime<Utc>> {
        self.due.earliest()
    }

    fn reindex_schedule(&mut self, company_id: &str, schedule_id: &str) {
        let due = self.companies.get(company_id).and_then(|company| {
            let schedule = company.schedule(schedule_id)?;
            company.next_run(schedule).map(|next| next.due)
        });
        self.due.set(company_id, schedule_id, due);
    }

    /// Folds one record.
    pub fn apply(&mut self, record: &Record) -> Outcome {
        let company = self.companies.entry(record.company_id.clone()).or_default();
        let outcome = apply(company, record);
        // Whatever the command did to its job, the indexes follow (one place, so no arm can
        // forget it).
        if let Some(job_id) = record.command.job_id() {
            company.reindex(job_id);
        }
        // Likewise the due index, for the schedule the command or its job belongs to.
        let schedule = match &record.command {
            Command::CreateSchedule { schedule_id, .. }
            | Command::PauseSchedule { schedule_id }
            | Command::ResumeSchedule { schedule_id }
            | Command::DeleteSchedule { schedule_id }
            | Command::ScheduleRun { schedule_id, .. } => Some(schedule_id.clone()),
            command => command
                .job_id()
                .and_then(|job| company.job(job))
                .and_then(|job| job.spec.schedule.as_ref())
                .map(|link| link.schedule_id.clone()),
        };
        if let Some(schedule) = schedule {
            self.reindex_schedule(&record.company_id, &schedule);
        }
        match outcome {
            Ok(outcome) => outcome,
            Err(denied) => Outcome::Rejected(denied),
        }
    }
}

impl Command {
    /// The job the command is about, if any.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Self::Enable
            | Self::Grant { .. }
            | Self::Revoke { .. }
            | Self::CreateSchedule { .. }
            | Self::PauseSchedule { .. }
            | Self::ResumeSchedule { .. }
            | Self::DeleteSchedule { .. } => None,
            Self::CreateExport { job_id, .. }
            | Self::ScheduleRun { job_id, .. }
            | Self::CancelExport { job_id }
            | Self::Claim { job_id, .. }
            | Self::Heartbeat { job_id, .. }
            | Self::Release { job_id, .. }
            | Self::Finish { job_id, .. }
            | Self::LinkIssued { job_id, .. }
            | Self::Notified { job_id }
            | Self::NotifyFailed { job_id, .. } => Some(job_id),
        }
    }
}

/// Whether `key` may be the archive of a job of `company_id`: under `exports/<company>/`, with
/// no empty, `.` or `..` segment that a store or proxy might resolve elsewhere. The fold refuses
/// any other key in a result, and the link code any other key to presign.
pub fn archive_key_is_the_companys(company_id: &str, key: &str) -> bool {
    let Some(rest) = key
        .strip_prefix(EXPORTS_PREFIX)
        .and_then(|k| k.strip_prefix(company_id))
        .and_then(|k| k.strip_prefix('/'))
    else {
        return false;
    };
    !company_id.is_empty()
        && !company_id.contains('/')
        && !rest.is_empty()
        && rest
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

/// The archive a download link may be issued for at `now`: the job's, if it has completed, is
/// within its retention, and its key is the company's. The link code's checks, in one place.
pub fn downloadable_archive(
    company_id: &str,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Archive, Denied> {
    let id = &job.id;
    match (job.status_at(now), &job.archive) {
        (JobStatus::Completed, Some(archive)) => {
            if archive_key_is_the_companys(company_id, &archive.key) {
                Ok(archive.clone())
            } else {
                // Only a state written before the fold checked keys could hold one.
                tracing::error!(company = %company_id, job = %id, key = %archive.key, "refusing to presign an archive key outside the company's prefix");
                Err(Denied::FailedPrecondition(format!(
                    "export {id} names an archive outside your company's exports; no link is                      issued for it: request a new export"
                )))
            }
        }
        (JobStatus::Expired, _) => Err(Denied::FailedPrecondition(format!(
            "export {id} has expired: archives are kept {RETENTION_DAYS} days after they are              made; request a new export"
        ))),
        (status, _) => Err(Denied::FailedPrecondition(format!(
            "export {id} is {}: a download link exists only once it has completed",
            status_word(status)
        ))),
    }
}

/// The message for a create over the company's cap on waiting exports.
fn queue_full(queued: usize, cap: u32) -> Denied {
    Denied::ResourceExhausted(format!(
        "your company already has {queued} exports waiting to start, the most allowed ({cap}):          wait for one of them to start or finish, or cancel one you no longer need          (CancelExport), then request this export again"
    ))
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
            company.access.allows(actor, Action::GrantAccess)?;
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
            company.access.allows(actor, Action::RevokeAccess)?;
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
            max_queued,
        } => {
            company.access.allows(actor, Action::CreateExport)?;
            if let Some(key) = request_id
                && let Some(existing) = company
                    .index
                    .by_request
                    .get(&(actor.to_owned(), key.clone()))
            {
                return Ok(Outcome::Existing {
                    job_id: existing.clone(),
                });
            }
            if company.jobs.contains_key(job_id) {
                return Err(Denied::InvalidArgument(format!(
                    "export id {job_id:?} is taken"
                )));
            }
            if let Some(cap) = *max_queued
                && company.queued() >= usize::try_from(cap).unwrap_or(usize::MAX)
            {
                return Err(queue_full(company.queued(), cap));
            }
            let job = Job::accepted(
                job_id.clone(),
                company.order.len() as u64,
                spec.clone(),
                actor.to_owned(),
                requester_email.clone(),
                request_id.clone(),
                at,
            );
            company.jobs.insert(job_id.clone(), job);
            company.order.push(job_id.clone());
            let entry = company.audit(record, "create_export", job_id);
            entry.details.insert("to".into(), spec.to.to_rfc3339());
            if let Some(from) = spec.from {
                entry.details.insert("from".into(), from.to_rfc3339());
            }
        }
        Command::CancelExport { job_id } => {
            company.access.allows(actor, Action::CancelExport)?;
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
            let company_id = record.company_id.as_str();
            let job = company.job_mut(job_id)?;
            if !(if v1 {
                job.owned_by_v1(worker, at)
            } else {
                job.owned_by(worker)
            }) {
                return Err(lost_lease(job_id));
            }
            if let JobResult::Completed { key, .. } = result
                && !archive_key_is_the_companys(company_id, key)
            {
                // Never a key another company's links could reach; the job stays running and
                // its worker deletes the object it made.
                return Err(Denied::InvalidArgument(format!(
                    "the result of export {job_id} names archive key {key:?}, which is not                      under {EXPORTS_PREFIX}{company_id}/"
                )));
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
            company.access.allows(actor, Action::GetDownloadUrl)?;
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
        Command::NotifyFailed {
            job_id,
            attempt,
            reason,
        } => {
            let job = company.job_mut(job_id)?;
            if !job.awaits_notification() {
                return Err(Denied::FailedPrecondition(format!(
                    "export {job_id} is not awaiting a notification"
                )));
            }
            if *attempt != job.notify_failures + 1 {
                // Another replica's failure of the same attempt is already counted.
                return Err(Denied::FailedPrecondition(format!(
                    "notification attempt {attempt} of export {job_id} is not the next one                      ({} failed so far)",
                    job.notify_failures
                )));
            }
            job.notify_failures = *attempt;
            job.notify_failed_at = Some(at);
            let given_up = *attempt >= MAX_NOTIFY_ATTEMPTS;
            job.notify_given_up = given_up;
            if given_up {
                let entry = company.audit(record, "notification_failed", job_id);
                entry.details.insert("attempts".into(), attempt.to_string());
                entry.details.insert("reason".into(), reason.clone());
            }
        }
        Command::CreateSchedule {
            schedule_id,
            spec,
            start,
            requester_email,
            request_id,
            max_schedules,
        } => {
            return schedules::create(
                company,
                record,
                schedule_id,
                spec,
                *start,
                requester_email.as_ref(),
                request_id.as_ref(),
                *max_schedules,
            );
        }
        Command::PauseSchedule { schedule_id } => {
            return schedules::change(company, record, schedule_id, schedules::Change::Pause);
        }
        Command::ResumeSchedule { schedule_id } => {
            return schedules::change(company, record, schedule_id, schedules::Change::Resume);
        }
        Command::DeleteSchedule { schedule_id } => {
            return schedules::change(company, record, schedule_id, schedules::Change::Delete);
        }
        Command::ScheduleRun {
            schedule_id,
            run,
            job_id,
            from,
            to,
            max_queued,
        } => {
            let proposal = schedules::Proposal {
                schedule_id,
                run: *run,
                job_id,
                from: *from,
                to: *to,
                max_queued: *max_queued,
            };
            return schedules::run(company, record, &proposal);
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
mod props;

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
            schedule: None,
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
                max_queued: None,
            },
        )
    }

    fn create_capped(at: i64, job: &str, cap: u32) -> Record {
        let mut record = create(at, job);
        if let Command::CreateExport { max_queued, .. } = &mut record.command {
            *max_queued = Some(cap);
        }
        record
    }

    fn finish_with_key(at: i64, job: &str, worker: &str, key: &str) -> Record {
        let mut record = finish(at, job, worker);
        if let Command::Finish {
            result: JobResult::Completed { key: k, .. },
            ..
        } = &mut record.command
        {
            *k = key.into();
        }
        record
    }

    fn notify_failed(at: i64, job: &str, attempt: u32) -> Record {
        record(
            at,
            SERVICE_ACTOR,
            Command::NotifyFailed {
                job_id: job.into(),
                attempt,
                reason: "550 mailbox unavailable".into(),
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
                    max_queued: None,
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
    fn a_company_cannot_queue_more_than_its_cap() {
        let mut state = enabled();
        assert_eq!(state.apply(&create_capped(1, "j1", 2)), Outcome::Applied);
        assert_eq!(state.apply(&create_capped(2, "j2", 2)), Outcome::Applied);
        // Two replicas accept at once: the log orders them and the second sees the first.
        let refused = state.apply(&create_capped(3, "j3", 2));
        let Outcome::Rejected(Denied::ResourceExhausted(message)) = refused else {
            panic!("wanted RESOURCE_EXHAUSTED, got {refused:?}");
        };
        assert!(message.contains("2 exports waiting"), "{message}");
        assert!(message.contains("cancel"), "{message}");
        assert!(state.company("acme").unwrap().job("j3").is_none());
        // Another company has its own queue.
        let mut other = create_capped(3, "g1", 2);
        other.company_id = "globex".into();
        other.actor = "gus".into();
        let mut enable = record(0, "gus", Command::Enable);
        enable.company_id = "globex".into();
        state.apply(&enable);
        assert_eq!(state.apply(&other), Outcome::Applied);
        // Once one starts, there is room again; running jobs do not count.
        assert_eq!(state.apply(&claim(4, "j1", "a")), Outcome::Applied);
        assert_eq!(state.apply(&create_capped(5, "j3", 2)), Outcome::Applied);
        assert_eq!(state.company("acme").unwrap().queued(), 2);
        // A record without a cap (written before version 3) is not capped.
        assert_eq!(state.apply(&create(6, "j4")), Outcome::Applied);
    }

    #[test]
    fn the_fold_accepts_only_archive_keys_under_the_jobs_company() {
        let mut state = enabled();
        state.apply(&create(1, "j1"));
        state.apply(&claim(2, "j1", "a"));
        for forged in [
            "exports/globex/j1/attempt-1/a.zip",
            "exports/acme",
            "exports/acme/",
            "exports/acmecorp/j1.zip",
            "exports/acme/../globex/j1.zip",
            "exports/acme//j1.zip",
            "state-snapshots/export-state/1.json",
            "acme/j1.zip",
        ] {
            let outcome = state.apply(&finish_with_key(3, "j1", "a", forged));
            assert!(
                matches!(outcome, Outcome::Rejected(Denied::InvalidArgument(_))),
                "{forged}: {outcome:?}"
            );
            assert_eq!(status(&state, "j1"), JobStatus::InProgress, "{forged}");
        }
        let good = "exports/acme/j1/attempt-1/compliance-export_acme_all.zip";
        assert_eq!(
            state.apply(&finish_with_key(4, "j1", "a", good)),
            Outcome::Applied
        );
    }

    #[test]
    fn no_link_for_an_archive_key_outside_the_company() {
        let mut state = enabled();
        state.apply(&create(1, "j1"));
        state.apply(&claim(2, "j1", "a"));
        state.apply(&finish(3, "j1", "a"));
        let job = state.company("acme").unwrap().job("j1").unwrap().clone();
        assert_eq!(
            downloadable_archive("acme", &job, t(4)).unwrap().key,
            "exports/acme/j1.zip"
        );
        // As a state folded before the fold checked keys (or a snapshot) could hold it.
        let mut forged = job;
        forged.archive.as_mut().unwrap().key = "exports/globex/j9/attempt-1/a.zip".into();
        assert!(matches!(
            downloadable_archive("acme", &forged, t(4)),
            Err(Denied::FailedPrecondition(_))
        ));
    }

    #[test]
    fn a_failing_notification_is_tried_a_bounded_number_of_times() {
        let mut state = enabled();
        state.apply(&create(1, "j1"));
        state.apply(&claim(2, "j1", "a"));
        state.apply(&finish(3, "j1", "a"));
        let waiting = |state: &State| {
            state
                .company("acme")
                .unwrap()
                .awaiting_notification()
                .map(|j| j.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(waiting(&state), ["j1"]);
        for attempt in 1..MAX_NOTIFY_ATTEMPTS {
            let at = 10 * i64::from(attempt);
            assert_eq!(
                state.apply(&notify_failed(at, "j1", attempt)),
                Outcome::Applied
            );
            // Two replicas failing the same attempt count once.
            assert!(rejected(&state.apply(&notify_failed(at, "j1", attempt))));
            assert_eq!(waiting(&state), ["j1"]);
        }
        assert!(rejected(&state.apply(&notify_failed(60, "j1", 9))));
        assert_eq!(
            state.apply(&notify_failed(70, "j1", MAX_NOTIFY_ATTEMPTS)),
            Outcome::Applied
        );
        let job = state.company("acme").unwrap().job("j1").unwrap();
        assert!(job.notify_given_up && !job.notified);
        assert_eq!(job.notify_failures, MAX_NOTIFY_ATTEMPTS);
        // Nobody tries again, and the audit trail says so and why.
        assert!(waiting(&state).is_empty());
        assert!(rejected(&state.apply(&notify_failed(80, "j1", 6))));
        let entry = state.company("acme").unwrap().audit.last().unwrap().clone();
        assert_eq!(entry.action, "notification_failed");
        assert_eq!(entry.details["attempts"], MAX_NOTIFY_ATTEMPTS.to_string());
        assert!(entry.details["reason"].contains("550"));
    }

    #[test]
    fn indexes_follow_every_command_and_are_rebuilt_from_a_snapshot() {
        let mut state = enabled();
        for i in 0..6 {
            state.apply(&create(i + 1, &format!("j{i}")));
        }
        state.apply(&claim(10, "j0", "a"));
        state.apply(&claim(10, "j1", "a"));
        state.apply(&finish(11, "j0", "a"));
        state.apply(&record(
            12,
            "ann",
            Command::CancelExport {
                job_id: "j3".into(),
            },
        ));
        let company = state.company("acme").unwrap();
        let ids = |jobs: Vec<&Job>| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(company.claimable()), ["j2"]);
        assert_eq!(ids(company.in_progress().collect()), ["j1"]);
        assert_eq!(ids(company.awaiting_notification().collect()), ["j0"]);
        assert_eq!(
            (company.queue_position("j2"), company.queue_position("j4")),
            (1, 2)
        );
        assert_eq!(company.queue_position("j3"), 0);
        // The snapshot holds no index; reading it rebuilds them all.
        let bytes = serde_json::to_vec(&state).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("queued"));
        let back: State = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, state);
        assert_eq!(serde_json::to_vec(&back).unwrap(), bytes);
    }

    #[test]
    fn the_fold_and_the_rpcs_refuse_with_the_one_access_rule() {
        use crate::access::Action;
        use crate::auth::Caller;
        let mut state = State::default();
        // Not enabled: the fold and the RPC layer refuse alike, with the same words.
        let caller = Caller {
            admin_id: "ann".into(),
            company_id: "acme".into(),
            is_admin: true,
            email: None,
        };
        let rpc = AccessState::default().authorize(&caller, Action::CreateExport);
        let Outcome::Rejected(fold) = state.apply(&create(1, "j1")) else {
            panic!("a create before enabling was applied");
        };
        assert_eq!(Err(fold), rpc);
        state.apply(&record(2, "ann", Command::Enable));
        // Enabled, but bob has no grant.
        let bob = Caller {
            admin_id: "bob".into(),
            ..caller
        };
        let access = state.company("acme").unwrap().access.clone();
        for (action, command) in [
            (Action::CreateExport, create(3, "j2").command),
            (
                Action::GrantAccess,
                Command::Grant {
                    admin_id: "cy".into(),
                },
            ),
            (
                Action::CancelExport,
                Command::CancelExport {
                    job_id: "j2".into(),
                },
            ),
        ] {
            let Outcome::Rejected(fold) = state.apply(&record(3, "bob", command)) else {
                panic!("{action:?} by an admin with no access was applied");
            };
            assert_eq!(Err(fold), access.authorize(&bob, action), "{action:?}");
        }
    }

    #[test]
    fn records_round_trip_as_json() {
        let record = finish(5, "j1", "a");
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""type":"finish""#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
    }
}
