//! Scheduled exports in the fold (record version 4).
//!
//! A schedule makes one ordinary job per period. Nothing about a run is decided by a replica
//! alone: a replica whose clock says a run is due proposes it ([`Command::ScheduleRun`]: the
//! schedule, the run's number and range, a fresh job id), and the fold accepts it only if
//!
//! - the schedule is active;
//! - it is the next run: run 1 from the schedule's start, or run k+1 from the end of run k once
//!   run k's job has COMPLETED (its archive's SHA-256 goes into run k+1's manifest) — or, once
//!   run k's job has FAILED or been CANCELLED, run k again over the same range (a retry);
//! - its range is not empty and ends no later than the record's own time;
//! - the company has room in its queue (the same cap as CreateExport).
//!
//! So replicas racing to make the same run create one job: the log orders their proposals and
//! every one after the first names a run that is no longer next. The chain never skips: a run is
//! retried until it completes, and the next starts exactly where it ended.
//!
//! Which schedules need a run soon is indexed by due time ([`DueIndex`], kept by [`State`]),
//! rebuilt when a snapshot is read, so the scheduler looks only at what is due.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{AuditEntry, CompanyState, Job, JobSpec, JobStatus, Outcome, Record, queue_full};
use crate::access::{Action, Denied};
use crate::cadence::{Boundaries, Cadence, zone};

/// A failed run is tried again after this, doubling with each failure of the same run…
pub const RETRY_FIRST: Duration = Duration::minutes(1);
/// …up to this.
pub const RETRY_MAX: Duration = Duration::hours(1);

/// What a schedule exports each run, as validated when it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub cadence: Cadence,
    /// 0..=23: runs end at this hour, local time in `time_zone`.
    pub hour: u32,
    /// IANA zone of `hour` and of the archives' day files; empty: UTC.
    #[serde(default)]
    pub time_zone: String,
    #[serde(default)]
    pub person_ids: Vec<String>,
    #[serde(default)]
    pub conversation_ids: Vec<String>,
    /// As in [`JobSpec::format`].
    pub format: String,
    #[serde(default)]
    pub name: String,
}

impl ScheduleSpec {
    /// The schedule's boundaries; `None` for a zone this build does not know.
    pub fn boundaries(&self) -> Option<Boundaries> {
        Some(Boundaries {
            cadence: self.cadence,
            hour: self.hour,
            zone: zone(&self.time_zone)?,
        })
    }

    /// Why the fold refuses it, if it does (the API says it first, in more words).
    fn check(&self) -> Result<(), Denied> {
        let bad = |m: String| Err(Denied::InvalidArgument(m));
        if self.hour > 23 {
            return bad(format!("hour {} is not 0..=23", self.hour));
        }
        match self.cadence {
            Cadence::Weekly { weekday } if !(1..=7).contains(&weekday) => {
                return bad(format!(
                    "weekday {weekday} is not 1 (Monday) ..= 7 (Sunday)"
                ));
            }
            Cadence::Monthly { day_of_month } if !(1..=28).contains(&day_of_month) => {
                return bad(format!("day_of_month {day_of_month} is not 1..=28"));
            }
            _ => {}
        }
        if zone(&self.time_zone).is_none() {
            return bad(format!("unknown time zone {:?}", self.time_zone));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    Active,
    Paused,
    Deleted,
}

/// A schedule's newest run: its number, range and the job making it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    pub number: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The run's newest job (earlier ones failed or were cancelled).
    pub job_id: String,
    /// How many jobs this run has had (1, then one more per retry).
    pub tries: u32,
}

/// One schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    /// Creation order within the company.
    pub seq: u64,
    pub spec: ScheduleSpec,
    /// Start of run 1's range.
    pub start: DateTime<Utc>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Where each run's mail goes (the creator's, from the token).
    pub requester_email: Option<String>,
    pub request_id: Option<String>,
    pub status: ScheduleStatus,
    /// The newest run; runs before it have completed.
    pub current: Option<ScheduleRun>,
}

/// The link from a scheduled run's job to its schedule's chain (the archive's manifest says the
/// same, `archive::manifest::ScheduleLink`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLink {
    pub schedule_id: String,
    pub run: u64,
    /// `None` for run 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousLink>,
}

/// The previous run: its range end (this run's start) and its archive's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousLink {
    pub to: DateTime<Utc>,
    pub archive_sha256: String,
}

/// The run a schedule needs next, and from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRun {
    pub number: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub previous: Option<PreviousLink>,
    /// A failed or cancelled run made again (same number and range).
    pub retry: bool,
    /// When it may be proposed: its range's end, or for a retry the backoff after the failure.
    pub due: DateTime<Utc>,
}

/// What a schedule's runs have reached, from its newest run's job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// End of the last completed run (everything from the start until here is archived).
    pub covered_until: Option<DateTime<Utc>>,
    pub runs_completed: u64,
    pub last_job_id: Option<String>,
    /// Why the newest run's job failed (or that it was cancelled), while it waits to be retried.
    pub last_error: Option<String>,
    /// The next run's due time, when one is to be made (active, none in flight).
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The wait before the `tries`-th retry of a run.
pub fn retry_backoff(tries: u32) -> Duration {
    let doublings = tries.saturating_sub(1).min(10);
    (RETRY_FIRST * (1 << doublings)).min(RETRY_MAX)
}

impl CompanyState {
    pub fn schedule(&self, id: &str) -> Option<&Schedule> {
        self.schedules.get(id)
    }

    /// Every schedule (deleted ones too), newest first.
    pub fn schedules(&self) -> Vec<&Schedule> {
        let mut all: Vec<&Schedule> = self.schedules.values().collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.seq));
        all
    }

    /// Schedules that still make runs (not deleted): what the per-company cap counts.
    pub fn live_schedules(&self) -> usize {
        self.schedules
            .values()
            .filter(|s| s.status != ScheduleStatus::Deleted)
            .count()
    }

    /// The run `schedule` needs next, if any: none while a run's job waits or runs, nor for a
    /// paused or deleted schedule, nor with a zone this build does not know.
    pub fn next_run(&self, schedule: &Schedule) -> Option<NextRun> {
        if schedule.status != ScheduleStatus::Active {
            return None;
        }
        let boundaries = schedule.spec.boundaries()?;
        let Some(run) = &schedule.current else {
            let to = boundaries.next_after(schedule.start);
            return Some(NextRun {
                number: 1,
                from: schedule.start,
                to,
                previous: None,
                retry: false,
                due: to,
            });
        };
        let job = self.jobs.get(&run.job_id)?;
        match job.status {
            JobStatus::Completed => {
                let to = boundaries.next_after(run.to);
                Some(NextRun {
                    number: run.number + 1,
                    from: run.to,
                    to,
                    previous: Some(PreviousLink {
                        to: run.to,
                        archive_sha256: job.archive.as_ref()?.sha256.clone(),
                    }),
                    retry: false,
                    due: to,
                })
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                let failed_at = job.finished_at.unwrap_or(job.created_at);
                Some(NextRun {
                    number: run.number,
                    from: run.from,
                    to: run.to,
                    previous: job.spec.schedule.as_ref()?.previous.clone(),
                    retry: true,
                    due: run.to.max(failed_at + retry_backoff(run.tries)),
                })
            }
            JobStatus::Accepted | JobStatus::InProgress | JobStatus::Expired => None,
        }
    }

    /// What `schedule`'s runs have reached.
    pub fn schedule_progress(&self, schedule: &Schedule) -> Progress {
        let mut progress = Progress {
            next_run_at: self.next_run(schedule).map(|n| n.due),
            ..Progress::default()
        };
        let Some(run) = &schedule.current else {
            return progress;
        };
        progress.last_job_id = Some(run.job_id.clone());
        let job = self.jobs.get(&run.job_id);
        let status = job.map(|j| j.status);
        if status == Some(JobStatus::Completed) {
            progress.covered_until = Some(run.to);
            progress.runs_completed = run.number;
        } else {
            progress.covered_until = (run.number > 1).then_some(run.from);
            progress.runs_completed = run.number - 1;
        }
        progress.last_error = match (status, job) {
            (Some(JobStatus::Failed), Some(job)) => job.error.clone(),
            (Some(JobStatus::Cancelled), _) => Some(format!(
                "run {}'s export {} was cancelled; it is made again",
                run.number, run.job_id
            )),
            _ => None,
        };
        progress
    }

    fn schedule_mut(&mut self, id: &str) -> Result<&mut Schedule, Denied> {
        self.schedules
            .get_mut(id)
            .ok_or_else(|| Denied::NotFound(format!("no schedule {id:?}")))
    }
}

/// Which schedules are due when, across companies: `(due, company, schedule)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueIndex {
    by_time: BTreeSet<(DateTime<Utc>, String, String)>,
    of: BTreeMap<(String, String), DateTime<Utc>>,
}

impl DueIndex {
    /// Sets (or clears) when `schedule` of `company` is due.
    pub fn set(&mut self, company: &str, schedule: &str, due: Option<DateTime<Utc>>) {
        let key = (company.to_owned(), schedule.to_owned());
        if let Some(old) = self.of.remove(&key) {
            self.by_time.remove(&(old, key.0.clone(), key.1.clone()));
        }
        if let Some(due) = due {
            self.by_time.insert((due, key.0.clone(), key.1.clone()));
            self.of.insert(key, due);
        }
    }

    /// `(company, schedule)` of every schedule due at or before `now`, earliest first.
    pub fn due(&self, now: DateTime<Utc>) -> impl Iterator<Item = (&str, &str)> {
        self.by_time
            .iter()
            .take_while(move |(due, _, _)| *due <= now)
            .map(|(_, company, schedule)| (company.as_str(), schedule.as_str()))
    }

    /// The earliest due time, if any schedule is waiting for one.
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.by_time.first().map(|(due, _, _)| *due)
    }

    pub fn len(&self) -> usize {
        self.of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }
}

/// The cap's refusal, saying what to do.
fn too_many(live: usize, cap: u32) -> Denied {
    Denied::ResourceExhausted(format!(
        "your company already has {live} schedules, the most allowed ({cap}): delete one you no \
         longer need (DeleteSchedule), then create this one again"
    ))
}

fn audit(company: &mut CompanyState, record: &Record, action: &str, subject: &str) {
    company.audit.push(AuditEntry {
        id: record.id.clone(),
        at: record.at,
        actor: record.actor.clone(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        details: BTreeMap::new(),
    });
}

fn detail(company: &mut CompanyState, key: &str, value: String) {
    if let Some(entry) = company.audit.last_mut() {
        entry.details.insert(key.to_owned(), value);
    }
}

/// Folds a create.
#[allow(clippy::too_many_arguments)] // the command's fields, one by one
pub(super) fn create(
    company: &mut CompanyState,
    record: &Record,
    schedule_id: &str,
    spec: &ScheduleSpec,
    start: DateTime<Utc>,
    requester_email: Option<&String>,
    request_id: Option<&String>,
    max_schedules: Option<u32>,
) -> Result<Outcome, Denied> {
    let actor = record.actor.as_str();
    company.access.allows(actor, Action::CreateExport)?;
    if let Some(key) = request_id
        && let Some(existing) = company
            .schedules
            .values()
            .find(|s| s.created_by == actor && s.request_id.as_ref() == Some(key))
    {
        return Ok(Outcome::ExistingSchedule {
            schedule_id: existing.id.clone(),
        });
    }
    if company.schedules.contains_key(schedule_id) {
        return Err(Denied::InvalidArgument(format!(
            "schedule id {schedule_id:?} is taken"
        )));
    }
    spec.check()?;
    if let Some(cap) = max_schedules
        && company.live_schedules() >= usize::try_from(cap).unwrap_or(usize::MAX)
    {
        return Err(too_many(company.live_schedules(), cap));
    }
    let seq = company.schedules.len() as u64;
    company.schedules.insert(
        schedule_id.to_owned(),
        Schedule {
            id: schedule_id.to_owned(),
            seq,
            spec: spec.clone(),
            start,
            created_by: actor.to_owned(),
            created_at: record.at,
            requester_email: requester_email.cloned(),
            request_id: request_id.cloned(),
            status: ScheduleStatus::Active,
            current: None,
        },
    );
    audit(company, record, "schedule_created", schedule_id);
    let cadence = match spec.cadence {
        Cadence::Daily => "daily".to_owned(),
        Cadence::Weekly { weekday } => format!("weekly on day {weekday}"),
        Cadence::Monthly { day_of_month } => format!("monthly on day {day_of_month}"),
    };
    detail(company, "cadence", cadence);
    detail(company, "hour", spec.hour.to_string());
    detail(company, "time_zone", spec.time_zone.clone());
    detail(company, "start", start.to_rfc3339());
    if !spec.name.is_empty() {
        detail(company, "name", spec.name.clone());
    }
    Ok(Outcome::Applied)
}

/// What an admin does to a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Pause,
    Resume,
    Delete,
}

/// Folds a pause, resume or delete. Idempotent: doing it again changes (and audits) nothing.
pub(super) fn change(
    company: &mut CompanyState,
    record: &Record,
    schedule_id: &str,
    change: Change,
) -> Result<Outcome, Denied> {
    company.access.allows(&record.actor, Action::CreateExport)?;
    let schedule = company.schedule_mut(schedule_id)?;
    let (to, action) = match (change, schedule.status) {
        (Change::Delete, ScheduleStatus::Deleted) => return Ok(Outcome::Applied),
        (_, ScheduleStatus::Deleted) => {
            return Err(Denied::FailedPrecondition(format!(
                "schedule {schedule_id} is deleted: create a new schedule (its start can be \
                 this one's covered_until, to continue the chain)"
            )));
        }
        (Change::Pause, ScheduleStatus::Paused) | (Change::Resume, ScheduleStatus::Active) => {
            return Ok(Outcome::Applied);
        }
        (Change::Pause, _) => (ScheduleStatus::Paused, "schedule_paused"),
        (Change::Resume, _) => (ScheduleStatus::Active, "schedule_resumed"),
        (Change::Delete, _) => (ScheduleStatus::Deleted, "schedule_deleted"),
    };
    schedule.status = to;
    audit(company, record, action, schedule_id);
    Ok(Outcome::Applied)
}

/// A proposed run, as the command carries it.
pub(super) struct Proposal<'a> {
    pub schedule_id: &'a str,
    pub run: u64,
    pub job_id: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub max_queued: Option<u32>,
}

/// Folds a proposed run: accepted only as the module says; then it is an ordinary job.
pub(super) fn run(
    company: &mut CompanyState,
    record: &Record,
    p: &Proposal<'_>,
) -> Result<Outcome, Denied> {
    let id = p.schedule_id;
    let schedule = company
        .schedules
        .get(id)
        .ok_or_else(|| Denied::NotFound(format!("no schedule {id:?}")))?;
    if schedule.status != ScheduleStatus::Active {
        return Err(Denied::FailedPrecondition(format!(
            "schedule {id} is not active"
        )));
    }
    let Some(next) = company.next_run(schedule) else {
        return Err(Denied::FailedPrecondition(format!(
            "schedule {id}'s run {} is still being made",
            schedule.current.as_ref().map_or(0, |r| r.number)
        )));
    };
    let not_next = || {
        Denied::FailedPrecondition(format!(
            "run {} of schedule {id} from {} is not the next run (run {} from {})",
            p.run,
            p.from.to_rfc3339(),
            next.number,
            next.from.to_rfc3339()
        ))
    };
    if p.run != next.number || p.from != next.from {
        return Err(not_next());
    }
    if next.retry && p.to != next.to {
        return Err(not_next());
    }
    if p.to <= p.from || p.to > record.at {
        return Err(Denied::InvalidArgument(format!(
            "run {} of schedule {id} would cover {} to {}: a run's range must be non-empty and \
             end by now",
            p.run,
            p.from.to_rfc3339(),
            p.to.to_rfc3339()
        )));
    }
    if company.jobs.contains_key(p.job_id) {
        return Err(Denied::InvalidArgument(format!(
            "export id {:?} is taken",
            p.job_id
        )));
    }
    if let Some(cap) = p.max_queued
        && company.queued() >= usize::try_from(cap).unwrap_or(usize::MAX)
    {
        return Err(queue_full(company.queued(), cap));
    }
    let tries = match (&schedule.current, next.retry) {
        (Some(current), true) => current.tries + 1,
        _ => 1,
    };
    let spec = JobSpec {
        from: Some(p.from),
        to: p.to,
        person_ids: schedule.spec.person_ids.clone(),
        conversation_ids: schedule.spec.conversation_ids.clone(),
        time_zone: schedule.spec.time_zone.clone(),
        format: schedule.spec.format.clone(),
        schedule: Some(RunLink {
            schedule_id: id.to_owned(),
            run: p.run,
            previous: next.previous.clone(),
        }),
    };
    let job = Job::accepted(
        p.job_id.to_owned(),
        company.order.len() as u64,
        spec,
        schedule.created_by.clone(),
        schedule.requester_email.clone(),
        None,
        record.at,
    );
    company.jobs.insert(p.job_id.to_owned(), job);
    company.order.push(p.job_id.to_owned());
    if let Some(schedule) = company.schedules.get_mut(id) {
        schedule.current = Some(ScheduleRun {
            number: p.run,
            from: p.from,
            to: p.to,
            job_id: p.job_id.to_owned(),
            tries,
        });
    }
    audit(company, record, "schedule_run", p.job_id);
    detail(company, "schedule", id.to_owned());
    detail(company, "run", p.run.to_string());
    detail(company, "from", p.from.to_rfc3339());
    detail(company, "to", p.to.to_rfc3339());
    if tries > 1 {
        detail(company, "try", tries.to_string());
    }
    Ok(Outcome::Applied)
}

#[cfg(test)]
#[path = "schedules_tests.rs"]
mod tests;
