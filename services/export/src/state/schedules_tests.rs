//! The fold's rules for schedules: run numbering, one run per period however many replicas
//! propose it, catch-up in order, pause/resume/delete, retries over the same range.

use super::super::*;
use super::RETRY_FIRST;

fn t(seconds: i64) -> DateTime<Utc> {
    "2026-11-25T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(seconds)
}

const DAY: i64 = 86_400;

/// The schedule's start: five days before `t(0)`, on a boundary (daily at 00:00 UTC).
fn start() -> DateTime<Utc> {
    t(-5 * DAY)
}

fn record(at: DateTime<Utc>, actor: &str, command: Command) -> Record {
    Record {
        v: RECORD_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        at,
        company_id: "acme".into(),
        actor: actor.into(),
        command,
    }
}

fn spec() -> ScheduleSpec {
    ScheduleSpec {
        cadence: crate::cadence::Cadence::Daily,
        hour: 0,
        time_zone: String::new(),
        person_ids: vec![],
        conversation_ids: vec![],
        format: "json".into(),
        name: "daily".into(),
    }
}

fn create(id: &str, request_id: Option<&str>, cap: Option<u32>) -> Record {
    record(
        t(0),
        "ann",
        Command::CreateSchedule {
            schedule_id: id.into(),
            spec: spec(),
            start: start(),
            requester_email: Some("ann@acme.test".into()),
            request_id: request_id.map(Into::into),
            max_schedules: cap,
        },
    )
}

/// Exports enabled for acme by ann, and schedule `s1`.
fn with_schedule() -> State {
    let mut state = State::default();
    state.apply(&record(t(0), "ann", Command::Enable));
    assert_eq!(state.apply(&create("s1", None, None)), Outcome::Applied);
    state
}

fn propose(run: u64, job: &str, from: DateTime<Utc>, to: DateTime<Utc>, at: i64) -> Record {
    record(
        t(at),
        SERVICE_ACTOR,
        Command::ScheduleRun {
            schedule_id: "s1".into(),
            run,
            job_id: job.into(),
            from,
            to,
            max_queued: Some(20),
        },
    )
}

/// Run `run` (the k-th day after the start), as the next run would be proposed.
fn day_run(run: u64, job: &str, at: i64) -> Record {
    let k = i64::try_from(run).unwrap();
    propose(
        run,
        job,
        start() + Duration::days(k - 1),
        start() + Duration::days(k),
        at,
    )
}

fn claim_and_finish(state: &mut State, job: &str, at: i64, result: JobResult) {
    let claim = Command::Claim {
        job_id: job.into(),
        worker: "w".into(),
        lease_until: None,
        takes_over: None,
    };
    assert_eq!(
        state.apply(&record(t(at), SERVICE_ACTOR, claim)),
        Outcome::Applied
    );
    let finish = Command::Finish {
        job_id: job.into(),
        worker: "w".into(),
        result,
    };
    assert_eq!(
        state.apply(&record(t(at + 1), SERVICE_ACTOR, finish)),
        Outcome::Applied
    );
}

fn completed(job: &str, sha: &str) -> JobResult {
    JobResult::Completed {
        key: format!("exports/acme/{job}/attempt-1/a.zip"),
        size: 10,
        sha256: sha.into(),
        upload_started: t(0),
        progress: None,
    }
}

fn next(state: &State) -> Option<NextRun> {
    let company = state.company("acme").unwrap();
    company.next_run(company.schedule("s1").unwrap())
}

fn due(state: &State, at: i64) -> Vec<(String, String)> {
    state
        .due_schedules(t(at))
        .map(|(c, s)| (c.to_owned(), s.to_owned()))
        .collect()
}

fn rejected(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Rejected(_))
}

fn link(state: &State, job: &str) -> RunLink {
    let company = state.company("acme").unwrap();
    company.job(job).unwrap().spec.schedule.clone().unwrap()
}

#[test]
fn runs_are_numbered_in_order_and_each_names_the_previous_archive() {
    let mut state = with_schedule();
    let first = next(&state).unwrap();
    assert_eq!(
        (first.number, first.from, first.to, first.retry),
        (1, start(), start() + Duration::days(1), false)
    );
    assert_eq!(state.apply(&day_run(1, "j1", 0)), Outcome::Applied);
    let job = state.company("acme").unwrap().job("j1").unwrap().clone();
    assert_eq!(job.spec.from, Some(start()));
    assert_eq!(job.spec.to, start() + Duration::days(1));
    assert_eq!(job.requester_email.as_deref(), Some("ann@acme.test"));
    assert_eq!(link(&state, "j1").previous, None);
    // While run 1 is being made, nothing else is: not run 2, not run 1 again.
    assert_eq!(next(&state), None);
    assert!(rejected(&state.apply(&day_run(2, "j2", 1))));
    assert!(rejected(&state.apply(&day_run(1, "j2", 1))));
    claim_and_finish(&mut state, "j1", 2, completed("j1", "aaa"));
    assert_eq!(state.apply(&day_run(2, "j2", 4)), Outcome::Applied);
    assert_eq!(
        link(&state, "j2").previous,
        Some(PreviousLink {
            to: start() + Duration::days(1),
            archive_sha256: "aaa".into()
        })
    );
    let company = state.company("acme").unwrap();
    let progress = company.schedule_progress(company.schedule("s1").unwrap());
    assert_eq!(progress.runs_completed, 1);
    assert_eq!(progress.covered_until, Some(start() + Duration::days(1)));
    assert_eq!(progress.last_job_id.as_deref(), Some("j2"));
    // The run is an ordinary job, audited as the service's own action.
    let entry = company.audit.last().unwrap();
    assert_eq!(
        (entry.action.as_str(), entry.actor.as_str()),
        ("schedule_run", SERVICE_ACTOR)
    );
    assert_eq!(entry.details["run"], "2");
}

#[test]
fn replicas_racing_to_make_a_run_make_it_once() {
    let mut state = with_schedule();
    // Three replicas propose run 1 at once, each with its own job id: the log orders them.
    let outcomes: Vec<Outcome> = ["a", "b", "c"]
        .iter()
        .map(|job| state.apply(&day_run(1, job, 0)))
        .collect();
    assert_eq!(outcomes[0], Outcome::Applied);
    assert!(
        rejected(&outcomes[1]) && rejected(&outcomes[2]),
        "{outcomes:?}"
    );
    assert_eq!(state.company("acme").unwrap().jobs().count(), 1);
    // Once it completes, they race for run 2 likewise; a late proposal of run 1 is refused.
    claim_and_finish(&mut state, "a", 1, completed("a", "aaa"));
    assert!(rejected(&state.apply(&day_run(1, "late", 3))));
    assert_eq!(state.apply(&day_run(2, "d", 3)), Outcome::Applied);
    assert!(rejected(&state.apply(&day_run(2, "e", 3))));
    assert_eq!(state.company("acme").unwrap().jobs().count(), 2);
}

#[test]
fn missed_runs_are_due_at_once_and_made_one_after_another() {
    let mut state = with_schedule();
    // At t(0) five days have passed since the start: run 1 is due (and has been since day 1).
    assert_eq!(due(&state, 0), [("acme".to_owned(), "s1".to_owned())]);
    assert!(
        due(&state, -5 * DAY + 3600).is_empty(),
        "not due before its end"
    );
    let mut made = vec![];
    for run in 1..=5 {
        let job = format!("j{run}");
        // Only the next run can be made, never one further on.
        assert!(rejected(&state.apply(&day_run(run + 1, "skip", 10))));
        assert_eq!(state.apply(&day_run(run, &job, 10)), Outcome::Applied);
        assert!(
            due(&state, 10).is_empty(),
            "nothing due while run {run} is made"
        );
        claim_and_finish(&mut state, &job, 11, completed(&job, &format!("sha{run}")));
        made.push(
            state
                .company("acme")
                .unwrap()
                .job(&job)
                .unwrap()
                .spec
                .clone(),
        );
    }
    // Caught up: consecutive ranges, each chained to the one before; run 6 is due tomorrow.
    for pair in made.windows(2) {
        assert_eq!(pair[1].from, Some(pair[0].to));
        let previous = pair[1].schedule.as_ref().unwrap().previous.clone().unwrap();
        assert_eq!(previous.to, pair[0].to);
    }
    assert!(due(&state, 20).is_empty());
    assert_eq!(due(&state, DAY).len(), 1);
    assert_eq!(state.next_schedule_due(), Some(t(DAY)));
    // A run cannot end after the record's own time.
    let early = propose(6, "j6", t(0), t(DAY), 20);
    assert!(matches!(
        state.apply(&early),
        Outcome::Rejected(Denied::InvalidArgument(_))
    ));
}

#[test]
fn pause_resume_and_delete_are_audited_and_stop_runs() {
    let mut state = with_schedule();
    let change = |command: Command| record(t(1), "ann", command);
    let pause = || {
        change(Command::PauseSchedule {
            schedule_id: "s1".into(),
        })
    };
    let resume = || {
        change(Command::ResumeSchedule {
            schedule_id: "s1".into(),
        })
    };
    let delete = || {
        change(Command::DeleteSchedule {
            schedule_id: "s1".into(),
        })
    };
    assert_eq!(state.apply(&pause()), Outcome::Applied);
    assert_eq!(state.apply(&pause()), Outcome::Applied, "idempotent");
    assert!(due(&state, 0).is_empty());
    assert!(rejected(&state.apply(&day_run(1, "j1", 2))));
    assert_eq!(state.apply(&resume()), Outcome::Applied);
    assert_eq!(due(&state, 0).len(), 1);
    // Resumed where it was: run 1 from the start.
    assert_eq!(next(&state).unwrap().from, start());
    assert_eq!(state.apply(&day_run(1, "j1", 2)), Outcome::Applied);
    // A pause while a run is made lets it finish; resuming continues after it.
    assert_eq!(state.apply(&pause()), Outcome::Applied);
    claim_and_finish(&mut state, "j1", 3, completed("j1", "aaa"));
    assert!(due(&state, 10).is_empty());
    assert_eq!(state.apply(&resume()), Outcome::Applied);
    assert_eq!(next(&state).unwrap().from, start() + Duration::days(1));
    assert_eq!(state.apply(&delete()), Outcome::Applied);
    assert_eq!(state.apply(&delete()), Outcome::Applied, "idempotent");
    assert!(due(&state, 10).is_empty());
    assert!(rejected(&state.apply(&day_run(2, "j2", 10))));
    assert!(matches!(
        state.apply(&resume()),
        Outcome::Rejected(Denied::FailedPrecondition(_))
    ));
    let actions: Vec<&str> = state
        .company("acme")
        .unwrap()
        .audit
        .iter()
        .map(|e| e.action.as_str())
        .filter(|a| a.starts_with("schedule"))
        .collect();
    assert_eq!(
        actions,
        [
            "schedule_created",
            "schedule_paused",
            "schedule_resumed",
            "schedule_run",
            "schedule_paused",
            "schedule_resumed",
            "schedule_deleted"
        ]
    );
}

#[test]
fn a_failed_or_cancelled_run_is_made_again_over_the_same_range_after_a_backoff() {
    let mut state = with_schedule();
    state.apply(&day_run(1, "j1", 0));
    claim_and_finish(&mut state, "j1", 1, completed("j1", "aaa"));
    state.apply(&day_run(2, "j2", 3));
    claim_and_finish(
        &mut state,
        "j2",
        4,
        JobResult::Failed {
            error: "waited too long for ingestion".into(),
        },
    );
    let retry = next(&state).unwrap();
    assert!(retry.retry);
    assert_eq!((retry.number, retry.from), (2, start() + Duration::days(1)));
    assert_eq!(retry.due, t(5) + RETRY_FIRST, "a backoff after the failure");
    assert!(due(&state, 6).is_empty());
    assert_eq!(due(&state, 5 + 60).len(), 1);
    let company = state.company("acme").unwrap();
    let progress = company.schedule_progress(company.schedule("s1").unwrap());
    assert_eq!(
        progress.last_error.as_deref(),
        Some("waited too long for ingestion")
    );
    assert_eq!(progress.runs_completed, 1);
    // Not the next run, nor run 2 over another range: only run 2 again, as it was.
    assert!(rejected(&state.apply(&day_run(3, "j3", 100))));
    let wider = propose(2, "j2b", start() + Duration::days(1), t(0), 100);
    assert!(rejected(&state.apply(&wider)));
    assert_eq!(state.apply(&day_run(2, "j2b", 100)), Outcome::Applied);
    assert_eq!(link(&state, "j2b"), link(&state, "j2"));
    let company = state.company("acme").unwrap();
    assert_eq!(
        company
            .schedule("s1")
            .unwrap()
            .current
            .as_ref()
            .unwrap()
            .tries,
        2
    );
    // Cancelled by an admin: made again as well, after a longer backoff.
    state.apply(&record(
        t(101),
        "ann",
        Command::CancelExport {
            job_id: "j2b".into(),
        },
    ));
    let retry = next(&state).unwrap();
    assert_eq!((retry.number, retry.due), (2, t(101) + RETRY_FIRST * 2));
    let company = state.company("acme").unwrap();
    let progress = company.schedule_progress(company.schedule("s1").unwrap());
    assert!(progress.last_error.unwrap().contains("cancelled"));
    assert_eq!(state.apply(&day_run(2, "j2c", 400)), Outcome::Applied);
    claim_and_finish(&mut state, "j2c", 401, completed("j2c", "bbb"));
    assert_eq!(
        next(&state).unwrap().previous.unwrap().archive_sha256,
        "bbb"
    );
}

#[test]
fn a_run_waits_in_the_company_queue_under_its_cap() {
    let mut state = with_schedule();
    for i in 0..2 {
        let create = Command::CreateExport {
            job_id: format!("manual{i}"),
            spec: JobSpec::all_history(),
            requester_email: None,
            request_id: None,
            max_queued: None,
        };
        state.apply(&record(t(0), "ann", create));
    }
    let mut full = day_run(1, "j1", 0);
    if let Command::ScheduleRun { max_queued, .. } = &mut full.command {
        *max_queued = Some(2);
    }
    assert!(matches!(
        state.apply(&full),
        Outcome::Rejected(Denied::ResourceExhausted(_))
    ));
    assert_eq!(due(&state, 0).len(), 1, "still due: tried again later");
}

#[test]
fn creates_are_capped_idempotent_checked_and_per_company() {
    let mut state = State::default();
    state.apply(&record(t(0), "ann", Command::Enable));
    assert_eq!(
        state.apply(&create("s1", Some("k"), Some(1))),
        Outcome::Applied
    );
    assert_eq!(
        state.apply(&create("s2", Some("k"), Some(1))),
        Outcome::ExistingSchedule {
            schedule_id: "s1".into()
        }
    );
    let refused = state.apply(&create("s2", None, Some(1)));
    let Outcome::Rejected(Denied::ResourceExhausted(message)) = refused else {
        panic!("wanted RESOURCE_EXHAUSTED, got {refused:?}");
    };
    assert!(message.contains("DeleteSchedule"), "{message}");
    state.apply(&record(
        t(1),
        "ann",
        Command::DeleteSchedule {
            schedule_id: "s1".into(),
        },
    ));
    assert_eq!(state.apply(&create("s2", None, Some(1))), Outcome::Applied);
    // An admin without access cannot create; another company cannot touch acme's schedule.
    let mut bob = create("s3", None, None);
    bob.actor = "bob".into();
    assert!(matches!(
        state.apply(&bob),
        Outcome::Rejected(Denied::PermissionDenied(_))
    ));
    let mut enable = record(t(0), "gus", Command::Enable);
    enable.company_id = "globex".into();
    state.apply(&enable);
    let mut other = record(
        t(2),
        "gus",
        Command::PauseSchedule {
            schedule_id: "s2".into(),
        },
    );
    other.company_id = "globex".into();
    assert!(matches!(
        state.apply(&other),
        Outcome::Rejected(Denied::NotFound(_))
    ));
    // The fold checks the spec too (a record written by a faulty client).
    let mut bad = create("s4", None, None);
    if let Command::CreateSchedule { spec, .. } = &mut bad.command {
        spec.time_zone = "Mars/Olympus".into();
    }
    assert!(matches!(
        state.apply(&bad),
        Outcome::Rejected(Denied::InvalidArgument(_))
    ));
}

#[test]
fn schedules_and_their_due_index_survive_a_snapshot() {
    let mut state = with_schedule();
    state.apply(&day_run(1, "j1", 0));
    claim_and_finish(&mut state, "j1", 1, completed("j1", "aaa"));
    let bytes = serde_json::to_vec(&state).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("by_time"));
    let back: State = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(due(&back, 10), due(&state, 10));
    assert_eq!(due(&back, 10).len(), 1);
    assert_eq!(serde_json::to_vec(&back).unwrap(), bytes);
    // A state without schedules keeps the bytes it had before schedules existed.
    let mut plain = State::default();
    plain.apply(&record(t(0), "ann", Command::Enable));
    let text = serde_json::to_string(&plain).unwrap();
    assert!(!text.contains("schedules"), "{text}");
    // A job record from before version 4 (no schedule link) reads as a manual export.
    let old = r#"{"from":null,"to":"2026-11-25T00:00:00Z","format":"json"}"#;
    let spec: JobSpec = serde_json::from_str(old).unwrap();
    assert_eq!(spec.schedule, None);
}

#[test]
fn the_due_index_finds_the_due_few_among_ten_thousand_companies() {
    let mut state = State::default();
    let hours = |i: u32| i % 24;
    for i in 0..10_000u32 {
        let company = format!("c{i}");
        let mut enable = record(t(0), "ann", Command::Enable);
        enable.company_id.clone_from(&company);
        state.apply(&enable);
        let mut create = create("s", None, None);
        create.company_id = company;
        if let Command::CreateSchedule { spec, start, .. } = &mut create.command {
            spec.hour = hours(i);
            // 2026-11-24T00:00Z: run 1 of the schedule at hour h ends h hours later (a day for 0).
            *start = t(-DAY);
        }
        assert_eq!(state.apply(&create), Outcome::Applied);
    }
    // At 05:00 on the 24th, the schedules at hours 1..=5 are due, and only they.
    let at = -DAY + 5 * 3600;
    let due = due(&state, at);
    let expected = (0..10_000u32)
        .filter(|i| (1..=5).contains(&hours(*i)))
        .count();
    assert_eq!(due.len(), expected);
    assert!(due.iter().all(|(c, _)| {
        let i: u32 = c[1..].parse().unwrap();
        (1..=5).contains(&hours(i))
    }));
    // Earliest first: hour 1's schedules, then hour 2's, …
    let first: u32 = due[0].0[1..].parse().unwrap();
    assert_eq!(hours(first), 1);
    assert_eq!(state.next_schedule_due(), Some(t(-DAY + 3600)));
    // Rebuilt alike from a snapshot.
    let back: State = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(back, state);
}
