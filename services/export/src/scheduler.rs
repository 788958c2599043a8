//! The scheduler: every replica proposes the scheduled runs that are due by its clock; the fold
//! accepts one proposal per run ([`crate::state::schedules`]), so racing replicas make each run
//! once. An accepted run is an ordinary job: the runner claims it, waits for ingestion, exports,
//! mails, like any other.
//!
//! What is due comes from the fold's due index (schedules by the instant their next run may be
//! made), so a tick looks only at due schedules, however many companies have schedules. A run
//! refused for a full queue (the per-company cap) is proposed again after a while; so is one the
//! log could not take.

use std::collections::HashMap;
use std::time::Duration;

use telemetry::CancellationToken;

use crate::access::Denied;
use crate::state::{Command, NextRun, Outcome, RunLink, SERVICE_ACTOR};
use crate::statelog::StateLog;

/// A proposal refused for a full queue (or any other reason but a lost race) is not made again
/// by this replica for this long.
const DEFER: Duration = Duration::from_secs(30);
/// At most this many proposals per tick, so a backlog of due schedules (a long outage) does not
/// hold the loop; the rest follow on the next ticks.
const PER_TICK: usize = 200;

/// The manifest's link for a scheduled run's job.
pub fn manifest_link(link: &RunLink) -> archive::manifest::ScheduleLink {
    archive::manifest::ScheduleLink {
        schedule_id: link.schedule_id.clone(),
        run: link.run,
        previous: link
            .previous
            .as_ref()
            .map(|previous| archive::manifest::PreviousRun {
                to: previous.to,
                archive_sha256: previous.archive_sha256.clone(),
            }),
    }
}

#[derive(Debug, Clone)]
pub struct Scheduler {
    pub log: StateLog,
    /// The cap on a company's waiting exports (as for CreateExport), put in each proposal.
    pub max_queued: u32,
}

impl Scheduler {
    /// Once the state is caught up, proposes due runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => return,
            caught_up = self.log.caught_up() => if caught_up.is_err() {
                return; // the fold halted and said why
            },
        }
        // (company, schedule) → not before this instant (monotonic), after a refusal.
        let mut deferred: HashMap<(String, String), tokio::time::Instant> = HashMap::new();
        let mut changes = self.log.subscribe();
        loop {
            let instant = tokio::time::Instant::now();
            deferred.retain(|_, until| *until > instant);
            for (company, schedule, next) in self.due(&deferred) {
                if shutdown.is_cancelled() {
                    return;
                }
                if !self.propose(&company, &schedule, &next).await {
                    deferred.insert((company, schedule), instant + DEFER);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = changes.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The runs due now by this replica's clock, earliest first, but the deferred ones.
    fn due(
        &self,
        deferred: &HashMap<(String, String), tokio::time::Instant>,
    ) -> Vec<(String, String, NextRun)> {
        let now = self.log.clock().now();
        self.log.read(|state| {
            state
                .due_schedules(now)
                .filter(|(c, s)| !deferred.contains_key(&((*c).to_owned(), (*s).to_owned())))
                .filter_map(|(company, id)| {
                    let cs = state.company(company)?;
                    let next = cs.next_run(cs.schedule(id)?)?;
                    Some((company.to_owned(), id.to_owned(), next))
                })
                .take(PER_TICK)
                .collect()
        })
    }

    /// Proposes `next`; false when it should not be proposed again for a while.
    async fn propose(&self, company: &str, schedule: &str, next: &NextRun) -> bool {
        let job_id = uuid::Uuid::new_v4().to_string();
        let command = Command::ScheduleRun {
            schedule_id: schedule.to_owned(),
            run: next.number,
            job_id: job_id.clone(),
            from: next.from,
            to: next.to,
            max_queued: Some(self.max_queued),
        };
        match self.log.submit(company, SERVICE_ACTOR, command).await {
            Ok(Outcome::Applied) => {
                tracing::info!(%company, %schedule, run = next.number, job = %job_id, from = %next.from.to_rfc3339(), to = %next.to.to_rfc3339(), retry = next.retry, "scheduled run made");
                true
            }
            Ok(Outcome::Rejected(Denied::ResourceExhausted(reason))) => {
                tracing::info!(%company, %schedule, run = next.number, %reason, "scheduled run waits: the company's queue is full");
                false
            }
            Ok(Outcome::Rejected(Denied::FailedPrecondition(reason))) => {
                // Another replica made it first, or the schedule changed meanwhile.
                tracing::debug!(%company, %schedule, run = next.number, %reason, "scheduled run not made");
                true
            }
            Ok(outcome) => {
                tracing::warn!(%company, %schedule, run = next.number, ?outcome, "scheduled run refused");
                false
            }
            Err(error) => {
                tracing::warn!(%company, %schedule, run = next.number, %error, "proposing a scheduled run");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DurationRound, Timelike, Utc};

    use super::*;
    use crate::cadence::Cadence;
    use crate::clock::SystemClock;
    use crate::state::{Job, JobResult, JobStatus, ScheduleSpec};
    use crate::statelog::{MemoryLog, RecordLog};

    async fn replica(log: &MemoryLog, stop: &CancellationToken) -> StateLog {
        let records: Arc<dyn RecordLog> = Arc::new(log.clone());
        let state = StateLog::open(records, None, Arc::new(SystemClock), stop.clone())
            .await
            .unwrap();
        state.caught_up().await.unwrap();
        state
    }

    fn jobs(log: &StateLog) -> Vec<Job> {
        log.read(|s| s.company("acme").unwrap().jobs().cloned().collect())
    }

    /// Two replicas' schedulers on one log, and this test as the runner: the three runs due
    /// (the schedule started three days ago) are made once each, one after another, each
    /// chained to the archive of the one before.
    #[tokio::test]
    async fn two_replicas_make_each_due_run_once_and_in_order() {
        let log = MemoryLog::new("export-state");
        let stop = CancellationToken::new();
        let (a, b) = (replica(&log, &stop).await, replica(&log, &stop).await);
        a.submit("acme", "ann", Command::Enable).await.unwrap();
        let start = (Utc::now() - chrono::Duration::days(3))
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap();
        let create = Command::CreateSchedule {
            schedule_id: "s1".into(),
            spec: ScheduleSpec {
                cadence: Cadence::Daily,
                hour: start.hour(),
                time_zone: String::new(),
                person_ids: vec![],
                conversation_ids: vec![],
                format: "json".into(),
                name: String::new(),
            },
            start,
            requester_email: None,
            request_id: None,
            max_schedules: None,
        };
        assert_eq!(
            a.submit("acme", "ann", create).await.unwrap(),
            Outcome::Applied
        );
        for log in [&a, &b] {
            let scheduler = Scheduler {
                log: log.clone(),
                max_queued: 20,
            };
            tokio::spawn(scheduler.run(stop.clone()));
        }
        let mut changes = a.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let all = jobs(&a);
            assert!(
                all.iter()
                    .filter(|j| matches!(j.stored_status(), JobStatus::Accepted))
                    .count()
                    <= 1,
                "two runs waiting at once: {all:#?}"
            );
            if let Some(job) = all
                .iter()
                .find(|j| j.stored_status() == JobStatus::Accepted)
            {
                let claim = Command::Claim {
                    job_id: job.id.clone(),
                    worker: "w".into(),
                    lease_until: None,
                    takes_over: None,
                };
                a.submit("acme", SERVICE_ACTOR, claim).await.unwrap();
                let finish = Command::Finish {
                    job_id: job.id.clone(),
                    worker: "w".into(),
                    result: JobResult::Completed {
                        key: format!("exports/acme/{}/attempt-1/a.zip", job.id),
                        size: 1,
                        sha256: format!("sha-{}", job.id),
                        upload_started: Utc::now(),
                        progress: None,
                    },
                };
                a.submit("acme", SERVICE_ACTOR, finish).await.unwrap();
                continue;
            }
            if all.len() == 3 {
                break;
            }
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => panic!("runs not made: {all:#?}"),
            }
        }
        let all = jobs(&a);
        let links: Vec<_> = all
            .iter()
            .map(|j| j.spec.schedule.clone().unwrap())
            .collect();
        assert_eq!(links.iter().map(|l| l.run).collect::<Vec<_>>(), [1, 2, 3]);
        for (k, job) in all.iter().enumerate() {
            let days = i64::try_from(k).unwrap();
            assert_eq!(job.spec.from, Some(start + chrono::Duration::days(days)));
            assert_eq!(job.spec.to, start + chrono::Duration::days(days + 1));
            if k > 0 {
                let previous = links[k].previous.clone().unwrap();
                assert_eq!(previous.archive_sha256, format!("sha-{}", all[k - 1].id));
            }
        }
        // Run 4 is due tomorrow: nothing more is made, by either replica.
        b.sync().await.unwrap();
        assert_eq!(
            b.read(|s| s.next_schedule_due()),
            Some(start + chrono::Duration::days(4))
        );
        assert_eq!(jobs(&b).len(), 3);
        stop.cancel();
    }
}
