//! Property test of the fold: random interleavings of the commands every replica and admin
//! may send, in any order the log may put them, keep the fold's promises.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const COMPANIES: [&str; 2] = ["acme", "globex"];
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const ADMINS: [&str; 2] = ["ann", "bob"];

/// One step: a command (naming jobs by index among those created so far) or a clock move.
#[derive(Debug, Clone)]
enum Op {
    Create {
        company: usize,
        admin: usize,
        cap: Option<u32>,
    },
    Claim {
        company: usize,
        job: usize,
        worker: usize,
    },
    TakeOver {
        company: usize,
        job: usize,
        worker: usize,
        back: u32,
    },
    Release {
        company: usize,
        job: usize,
        worker: usize,
    },
    Finish {
        company: usize,
        job: usize,
        worker: usize,
        ok: bool,
        key: usize,
    },
    Cancel {
        company: usize,
        admin: usize,
        job: usize,
    },
    Notified {
        company: usize,
        job: usize,
    },
    NotifyFailed {
        company: usize,
        job: usize,
        attempt: u32,
    },
    Grant {
        company: usize,
        admin: usize,
    },
    Revoke {
        company: usize,
        admin: usize,
    },
    Clock {
        seconds: i64,
    },
    CreateSchedule {
        company: usize,
        admin: usize,
    },
    /// A replica proposes the schedule's next run (`ahead` 0), or a later one, or the next with
    /// a range that does not start where it must (`shifted`).
    ProposeRun {
        company: usize,
        schedule: usize,
        ahead: u64,
        shifted: bool,
    },
    /// The runner makes the schedule's newest run: claims its job (when it may start) and
    /// finishes it, completed or failed.
    FinishRun {
        company: usize,
        schedule: usize,
        ok: bool,
    },
    /// Pause (0), resume (1) or delete (2).
    ChangeSchedule {
        company: usize,
        admin: usize,
        schedule: usize,
        change: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..COMPANIES.len();
    let a = 0..ADMINS.len();
    let w = 0..WORKERS.len();
    let j = 0usize..8;
    prop_oneof![
        3 => (c.clone(), a.clone(), proptest::option::of(1u32..4))
            .prop_map(|(company, admin, cap)| Op::Create { company, admin, cap }),
        4 => (c.clone(), j.clone(), w.clone())
            .prop_map(|(company, job, worker)| Op::Claim { company, job, worker }),
        1 => (c.clone(), j.clone(), w.clone(), 0u32..2)
            .prop_map(|(company, job, worker, back)| Op::TakeOver { company, job, worker, back }),
        1 => (c.clone(), j.clone(), w.clone())
            .prop_map(|(company, job, worker)| Op::Release { company, job, worker }),
        3 => (c.clone(), j.clone(), w.clone(), any::<bool>(), 0usize..4)
            .prop_map(|(company, job, worker, ok, key)| Op::Finish { company, job, worker, ok, key }),
        1 => (c.clone(), a.clone(), j.clone())
            .prop_map(|(company, admin, job)| Op::Cancel { company, admin, job }),
        1 => (c.clone(), j.clone()).prop_map(|(company, job)| Op::Notified { company, job }),
        2 => (c.clone(), j.clone(), 0u32..8)
            .prop_map(|(company, job, attempt)| Op::NotifyFailed { company, job, attempt }),
        1 => (c.clone(), a.clone()).prop_map(|(company, admin)| Op::Grant { company, admin }),
        1 => (c.clone(), a.clone()).prop_map(|(company, admin)| Op::Revoke { company, admin }),
        1 => (-30i64..120).prop_map(|seconds| Op::Clock { seconds }),
        1 => (c.clone(), a.clone()).prop_map(|(company, admin)| Op::CreateSchedule { company, admin }),
        6 => (c.clone(), 0usize..3, prop_oneof![4 => Just(0u64), 1 => 1u64..3], proptest::bool::weighted(0.1))
            .prop_map(|(company, schedule, ahead, shifted)| Op::ProposeRun { company, schedule, ahead, shifted }),
        6 => (c.clone(), 0usize..3, proptest::bool::weighted(0.8))
            .prop_map(|(company, schedule, ok)| Op::FinishRun { company, schedule, ok }),
        1 => (c, a, 0usize..3, 0u8..3)
            .prop_map(|(company, admin, schedule, change)| Op::ChangeSchedule { company, admin, schedule, change }),
    ]
}

/// The fold under test and what the test remembers of what it was told.
struct Model {
    state: State,
    at: DateTime<Utc>,
    n: u64,
    /// Every job whose create was applied, per company, in creation order.
    created: BTreeMap<&'static str, Vec<String>>,
    /// Every schedule whose create was applied, per company.
    schedules: BTreeMap<&'static str, Vec<String>>,
}

impl Model {
    fn new() -> Self {
        let mut model = Self {
            state: State::default(),
            at: "2026-11-25T00:00:00Z".parse().unwrap(),
            n: 0,
            created: BTreeMap::new(),
            schedules: BTreeMap::new(),
        };
        for company in COMPANIES {
            model.apply(company, "ann", Command::Enable);
        }
        model
    }

    fn apply(&mut self, company: &str, actor: &str, command: Command) -> Outcome {
        self.n += 1;
        self.state.apply(&Record {
            v: RECORD_VERSION,
            id: format!("r{}", self.n),
            at: self.at,
            company_id: company.into(),
            actor: actor.into(),
            command,
        })
    }

    /// The job at `index` among the company's created ones, or one that does not exist.
    fn job(&self, company: usize, index: usize) -> String {
        let jobs = self.created.get(COMPANIES[company]).map_or(&[][..], |v| v);
        jobs.get(index)
            .cloned()
            .unwrap_or_else(|| format!("missing-{index}"))
    }

    fn step(&mut self, op: &Op) {
        let service = SERVICE_ACTOR;
        match *op {
            Op::Create {
                company,
                admin,
                cap,
            } => {
                let name = COMPANIES[company];
                let job_id = format!("{name}-{}", self.n);
                let before = self.state.company(name).map_or(0, CompanyState::queued);
                let outcome = self.apply(
                    name,
                    ADMINS[admin],
                    Command::CreateExport {
                        job_id: job_id.clone(),
                        spec: JobSpec::all_history(),
                        requester_email: None,
                        request_id: None,
                        max_queued: cap,
                    },
                );
                if outcome == Outcome::Applied {
                    self.created.entry(name).or_default().push(job_id);
                    if let Some(cap) = cap {
                        let queued = self.state.company(name).unwrap().queued();
                        assert!(
                            queued <= cap as usize,
                            "{queued} queued past a cap of {cap}"
                        );
                    }
                } else if let (Some(cap), Outcome::Rejected(Denied::ResourceExhausted(_))) =
                    (cap, &outcome)
                {
                    assert!(
                        before >= cap as usize,
                        "refused with {before} of {cap} queued"
                    );
                }
            }
            Op::Claim {
                company,
                job,
                worker,
            } => {
                let job_id = self.job(company, job);
                self.apply(
                    COMPANIES[company],
                    service,
                    Command::Claim {
                        job_id,
                        worker: WORKERS[worker].into(),
                        lease_until: None,
                        takes_over: None,
                    },
                );
            }
            Op::TakeOver {
                company,
                job,
                worker,
                back,
            } => {
                let job_id = self.job(company, job);
                let attempts = self
                    .state
                    .company(COMPANIES[company])
                    .and_then(|c| c.job(&job_id))
                    .map_or(0, |j| j.attempts);
                self.apply(
                    COMPANIES[company],
                    service,
                    Command::Claim {
                        job_id,
                        worker: WORKERS[worker].into(),
                        lease_until: None,
                        takes_over: Some(attempts.saturating_sub(back)),
                    },
                );
            }
            Op::Release {
                company,
                job,
                worker,
            } => {
                let job_id = self.job(company, job);
                self.apply(
                    COMPANIES[company],
                    service,
                    Command::Release {
                        job_id,
                        worker: WORKERS[worker].into(),
                    },
                );
            }
            Op::Finish {
                company,
                job,
                worker,
                ok,
                key,
            } => {
                let name = COMPANIES[company];
                let job_id = self.job(company, job);
                let key = match key {
                    0 | 1 => format!("exports/{name}/{job_id}/attempt-1/a.zip"),
                    2 => format!("exports/{}/{job_id}/a.zip", COMPANIES[1 - company]),
                    _ => format!("exports/{name}/../{}/a.zip", COMPANIES[1 - company]),
                };
                let result = if ok {
                    JobResult::Completed {
                        key,
                        size: 1,
                        sha256: "ab".into(),
                        upload_started: self.at,
                        progress: None,
                    }
                } else {
                    JobResult::Failed {
                        error: "boom".into(),
                    }
                };
                self.apply(
                    name,
                    service,
                    Command::Finish {
                        job_id,
                        worker: WORKERS[worker].into(),
                        result,
                    },
                );
            }
            Op::Cancel {
                company,
                admin,
                job,
            } => {
                let job_id = self.job(company, job);
                self.apply(
                    COMPANIES[company],
                    ADMINS[admin],
                    Command::CancelExport { job_id },
                );
            }
            Op::Notified { company, job } => {
                let job_id = self.job(company, job);
                self.apply(COMPANIES[company], service, Command::Notified { job_id });
            }
            Op::NotifyFailed {
                company,
                job,
                attempt,
            } => {
                let job_id = self.job(company, job);
                self.apply(
                    COMPANIES[company],
                    service,
                    Command::NotifyFailed {
                        job_id,
                        attempt,
                        reason: "refused".into(),
                    },
                );
            }
            Op::Grant { company, admin } => {
                self.apply(
                    COMPANIES[company],
                    "ann",
                    Command::Grant {
                        admin_id: ADMINS[admin].into(),
                    },
                );
            }
            Op::Revoke { company, admin } => {
                self.apply(
                    COMPANIES[company],
                    ADMINS[1 - admin],
                    Command::Revoke {
                        admin_id: ADMINS[admin].into(),
                    },
                );
            }
            Op::Clock { seconds } => self.at += Duration::seconds(seconds),
            Op::CreateSchedule { company, admin } => {
                let name = COMPANIES[company];
                let schedule_id = format!("{name}-s{}", self.n);
                let outcome = self.apply(
                    name,
                    ADMINS[admin],
                    Command::CreateSchedule {
                        schedule_id: schedule_id.clone(),
                        spec: ScheduleSpec {
                            cadence: crate::cadence::Cadence::Daily,
                            hour: 0,
                            time_zone: String::new(),
                            person_ids: vec![],
                            conversation_ids: vec![],
                            format: "json".into(),
                            name: String::new(),
                        },
                        start: "2026-11-20T00:00:00Z".parse().unwrap(),
                        requester_email: None,
                        request_id: None,
                        max_schedules: Some(2),
                    },
                );
                if outcome == Outcome::Applied {
                    self.schedules.entry(name).or_default().push(schedule_id);
                }
            }
            Op::ProposeRun {
                company,
                schedule,
                ahead,
                shifted,
            } => {
                let name = COMPANIES[company];
                let schedule_id = self
                    .schedules
                    .get(name)
                    .and_then(|s| s.get(schedule))
                    .cloned()
                    .unwrap_or_else(|| format!("missing-{schedule}"));
                let cs = self.state.company(name);
                let proposal = cs.and_then(|cs| {
                    let s = cs.schedule(&schedule_id)?;
                    // With nothing to make, the run in flight again (which must be refused).
                    cs.next_run(s).or_else(|| {
                        s.current.as_ref().map(|r| NextRun {
                            number: r.number,
                            from: r.from,
                            to: r.to,
                            previous: None,
                            retry: false,
                            due: r.to,
                        })
                    })
                });
                let (run, from, to) = proposal.map_or(
                    (1, self.at - Duration::days(2), self.at - Duration::days(1)),
                    |p| (p.number, p.from, p.to),
                );
                let from = if shifted {
                    from + Duration::hours(1)
                } else {
                    from
                };
                let job_id = format!("{name}-{}", self.n + 1);
                let outcome = self.apply(
                    name,
                    service,
                    Command::ScheduleRun {
                        schedule_id,
                        run: run + ahead,
                        job_id: job_id.clone(),
                        from,
                        to,
                        max_queued: Some(4),
                    },
                );
                if outcome == Outcome::Applied {
                    assert!(ahead == 0 && !shifted, "a run out of order was accepted");
                    self.created.entry(name).or_default().push(job_id);
                }
            }
            Op::FinishRun {
                company,
                schedule,
                ok,
            } => {
                let name = COMPANIES[company];
                let current = self
                    .schedules
                    .get(name)
                    .and_then(|s| s.get(schedule))
                    .and_then(|id| {
                        let cs = self.state.company(name)?;
                        Some(cs.schedule(id)?.current.as_ref()?.job_id.clone())
                    });
                let Some(job_id) = current else { return };
                let status = |model: &Self| {
                    model
                        .state
                        .company(name)
                        .and_then(|c| c.job(&job_id))
                        .map(|j| (j.stored_status(), j.owner.clone()))
                };
                if matches!(status(self), Some((JobStatus::Accepted, _))) {
                    self.apply(
                        name,
                        service,
                        Command::Claim {
                            job_id: job_id.clone(),
                            worker: WORKERS[0].into(),
                            lease_until: None,
                            takes_over: None,
                        },
                    );
                }
                if let Some((JobStatus::InProgress, Some(owner))) = status(self) {
                    let result = if ok {
                        JobResult::Completed {
                            key: format!("exports/{name}/{job_id}/attempt-1/a.zip"),
                            size: 1,
                            sha256: format!("sha-{job_id}"),
                            upload_started: self.at,
                            progress: None,
                        }
                    } else {
                        JobResult::Failed {
                            error: "boom".into(),
                        }
                    };
                    self.apply(
                        name,
                        service,
                        Command::Finish {
                            job_id,
                            worker: owner,
                            result,
                        },
                    );
                }
            }
            Op::ChangeSchedule {
                company,
                admin,
                schedule,
                change,
            } => {
                let name = COMPANIES[company];
                let schedule_id = self
                    .schedules
                    .get(name)
                    .and_then(|s| s.get(schedule))
                    .cloned()
                    .unwrap_or_else(|| format!("missing-{schedule}"));
                let command = match change {
                    0 => Command::PauseSchedule { schedule_id },
                    1 => Command::ResumeSchedule { schedule_id },
                    _ => Command::DeleteSchedule { schedule_id },
                };
                self.apply(name, ADMINS[admin], command);
            }
        }
    }

    /// The chain's promises, for every schedule: one export per run at a time, completed runs
    /// numbered 1..=n with consecutive ranges, each naming the previous archive; the due index
    /// says what a scan says.
    fn check_schedules(&self) {
        let far = self.at + Duration::days(3650);
        let indexed: std::collections::BTreeSet<(String, String)> = self
            .state
            .due_schedules(far)
            .map(|(c, s)| (c.to_owned(), s.to_owned()))
            .collect();
        let mut scanned = std::collections::BTreeSet::new();
        for (company, cs) in self.state.companies() {
            for schedule in cs.schedules() {
                if cs.next_run(schedule).is_some() {
                    scanned.insert((company.clone(), schedule.id.clone()));
                }
                let runs: Vec<&Job> = cs
                    .jobs()
                    .filter(|j| {
                        j.spec
                            .schedule
                            .as_ref()
                            .is_some_and(|l| l.schedule_id == schedule.id)
                    })
                    .collect();
                let live = |j: &&&Job| {
                    !matches!(j.stored_status(), JobStatus::Failed | JobStatus::Cancelled)
                };
                let link = |j: &Job| j.spec.schedule.clone().unwrap();
                let in_flight = runs
                    .iter()
                    .filter(|j| {
                        matches!(
                            j.stored_status(),
                            JobStatus::Accepted | JobStatus::InProgress
                        )
                    })
                    .count();
                assert!(
                    in_flight <= 1,
                    "{}: {in_flight} runs in flight",
                    schedule.id
                );
                let kept: Vec<&&Job> = runs.iter().filter(live).collect();
                for (i, job) in kept.iter().enumerate() {
                    assert_eq!(
                        link(job).run,
                        i as u64 + 1,
                        "{}: runs out of order",
                        schedule.id
                    );
                    if i == 0 {
                        assert_eq!(job.spec.from, Some(schedule.start));
                        assert_eq!(link(job).previous, None);
                    } else {
                        let before = kept[i - 1];
                        assert_eq!(before.stored_status(), JobStatus::Completed);
                        assert_eq!(job.spec.from, Some(before.spec.to));
                        let previous = link(job).previous.unwrap();
                        assert_eq!(previous.to, before.spec.to);
                        assert_eq!(
                            Some(previous.archive_sha256),
                            before.archive.as_ref().map(|a| a.sha256.clone())
                        );
                    }
                }
                // Retries keep their run's range.
                for job in &runs {
                    let same = kept.iter().find(|k| link(k).run == link(job).run);
                    if let Some(same) = same {
                        assert_eq!((job.spec.from, job.spec.to), (same.spec.from, same.spec.to));
                    }
                }
            }
        }
        assert_eq!(indexed, scanned, "the due index and a scan disagree");
    }

    /// Each job's stored status, by company and id.
    fn statuses(&self) -> BTreeMap<(String, String), JobStatus> {
        self.state
            .companies()
            .flat_map(|(company, cs)| {
                cs.jobs()
                    .map(|j| ((company.clone(), j.id.clone()), j.stored_status()))
            })
            .collect()
    }

    fn check(&self, before: &BTreeMap<(String, String), JobStatus>) {
        let now = self.statuses();
        // Never loses a job: every created job is still there, waiting, running or final.
        for (company, jobs) in &self.created {
            let cs = self.state.company(company).unwrap();
            assert_eq!(
                cs.jobs().count(),
                jobs.len(),
                "{company}: jobs appeared or vanished"
            );
            for id in jobs {
                assert!(cs.job(id).is_some(), "{company}/{id} vanished");
            }
        }
        // Final states stay final, and unchanged.
        for (key, status) in before {
            if status.is_final() {
                assert_eq!(now.get(key), Some(status), "{key:?} left its final state");
            }
        }
        for (company, cs) in self.state.companies() {
            let jobs: Vec<&Job> = cs.jobs().collect();
            let running: Vec<&Job> = jobs
                .iter()
                .copied()
                .filter(|j| j.stored_status() == JobStatus::InProgress)
                .collect();
            // Never more than 2 of a company's jobs at once.
            assert!(
                running.len() <= MAX_RUNNING_PER_COMPANY,
                "{company}: {} running",
                running.len()
            );
            // The indexes say what a scan of every job says.
            let waiting: Vec<&Job> = jobs
                .iter()
                .copied()
                .filter(|j| j.stored_status() == JobStatus::Accepted)
                .collect();
            let ids = |v: &[&Job]| v.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
            assert_eq!(cs.running(), running.len());
            assert_eq!(ids(&cs.in_progress().collect::<Vec<_>>()), ids(&running));
            assert_eq!(cs.queued(), waiting.len());
            let room = MAX_RUNNING_PER_COMPANY - running.len();
            assert_eq!(
                ids(&cs.claimable()),
                ids(&waiting[..room.min(waiting.len())])
            );
            for (position, job) in waiting.iter().enumerate() {
                assert_eq!(cs.queue_position(&job.id) as usize, position + 1);
            }
            let unnotified: Vec<&Job> = jobs
                .iter()
                .copied()
                .filter(|j| j.awaits_notification())
                .collect();
            assert_eq!(
                ids(&cs.awaiting_notification().collect::<Vec<_>>()),
                ids(&unnotified)
            );
            for job in jobs {
                // Only the company's own keys; a bounded count of notification failures.
                if let Some(archive) = &job.archive {
                    assert!(
                        archive_key_is_the_companys(company, &archive.key),
                        "{}",
                        archive.key
                    );
                }
                assert!(job.notify_failures <= MAX_NOTIFY_ATTEMPTS);
                assert_eq!(
                    job.notify_given_up,
                    job.notify_failures == MAX_NOTIFY_ATTEMPTS
                );
                // A listing's page starts at the right job without walking newer ones.
                let before: Vec<u64> = cs.jobs_before(Some(job.seq)).map(|j| j.seq).collect();
                assert_eq!(before, (0..job.seq).collect::<Vec<_>>());
                if job.stored_status() == JobStatus::InProgress {
                    assert!(job.owner.is_some(), "{} runs with no owner", job.id);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_the_folds_promises(ops in proptest::collection::vec(op(), 1..200)) {
        let mut model = Model::new();
        for op in &ops {
            let before = model.statuses();
            model.step(op);
            model.check(&before);
            model.check_schedules();
        }
        // A snapshot of whatever state the steps reached reads back the same, indexes included.
        let bytes = serde_json::to_vec(&model.state).unwrap();
        let back: State = serde_json::from_slice(&bytes).unwrap();
        prop_assert!(back == model.state);
    }
}
