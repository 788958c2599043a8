//! The export service's fault suite (the export-service part of `docs/reliability.md`), against
//! the real broker and store with real `cce-export` processes and a real SMTP server:
//!
//! - a replica killed (SIGKILL) at each point of a job's life — at its claim, mid-upload,
//!   between the upload's completion and its result, between the result and the mail — made
//!   exact by the test-only `CCE_FAULT_PAUSE_AT`: another replica completes the job, one
//!   archive object is left under `exports/<company>/<job>/`, one mail is sent;
//! - two replicas, one with its clock 20 s ahead or behind (`CCE_CLOCK_OFFSET_SECS`), running several
//!   jobs: each completes once, in its first attempt (no lease taken from a live worker), one
//!   archive, one mail;
//! - the disk of `TMPDIR` full during an export (a replica in its own mount namespace with a
//!   1 MiB tmpfs with 16 KiB free as `TMPDIR`): the job fails saying so, leaves no object,
//!   and the replica goes on to complete a small export;
//! - the store killed (SIGKILL) or frozen (SIGSTOP) during an export and brought back with
//!   the same data: on a private stack (its own tansu and garage), so the other tests sharing
//!   the suite's store are not hit.
//!
//! One round of each by default (the CI run); `CCE_FAULTS_EXPORT_ROUNDS=<n>` runs n (the
//! fault script's long run). Each prints a `faults-export:` line with its figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use export::state::{Job, JobStatus};
use proto::v1 as pb;
use storage::ObjectStore;
use tests::exports::{TokenSpec, authed, create_topics, timestamp};
use tests::faults_export::{Replica, SmtpSink, StateView, job_objects, rounds, secs, slow_relay};
use tests::{Stack, unique, wait_for, write_generated_log};

/// The points of a job's life where `CCE_FAULT_PAUSE_AT` stops a replica (`export::faults`).
const POINTS: [&str; 4] = ["claim", "mid_upload", "before_finish", "before_mail"];

/// A company's log in the suite's store, a requester with a mail address, an SMTP sink.
struct Company {
    stack: Stack,
    store: Arc<dyn ObjectStore>,
    id: String,
    token: String,
    smtp: SmtpSink,
    logs: tempfile::TempDir,
}

impl Company {
    async fn new(stack: Stack, name: &str, events: u64) -> Self {
        let prefix = format!("{}-", unique(name));
        let store: Arc<dyn ObjectStore> = Arc::new(stack.s3_store().await);
        write_generated_log(store.clone(), &prefix, events).await;
        let id = format!("{prefix}acme");
        let mut token = TokenSpec::admin(&stack, &id, "ann");
        token.email = Some("ann@acme.test".into());
        Self {
            token: token.sign(),
            store,
            id,
            smtp: SmtpSink::start().await,
            logs: tempfile::tempdir().unwrap(),
            stack,
        }
    }

    /// A replica of the export service on `state_topic`, mailing through the sink.
    fn replica(&self, state_topic: &str, worker: &str, env: &[(&str, &str)]) -> Replica {
        self.replica_mailing_via(&self.smtp.url(), state_topic, worker, env)
    }

    /// A replica mailing through `smtp` (which reaches the sink).
    fn replica_mailing_via(
        &self,
        smtp: &str,
        state_topic: &str,
        worker: &str,
        env: &[(&str, &str)],
    ) -> Replica {
        let log = self.logs.path().join(format!("{worker}.log"));
        Replica::start(
            &self.stack,
            state_topic,
            &["--smtp-url", smtp, "--worker-id", worker],
            env,
            &log,
        )
    }

    async fn create(&self, replica: &Replica, request: pb::CreateExportRequest) -> String {
        tests::exports::client(&replica.endpoint)
            .await
            .create_export(authed(&self.token, request))
            .await
            .unwrap()
            .into_inner()
            .id
    }

    async fn enable(&self, replica: &Replica) {
        tests::exports::client(&replica.endpoint)
            .await
            .enable_exports(authed(&self.token, pb::EnableExportsRequest {}))
            .await
            .unwrap();
    }

    /// The job's archive: the one object under its prefix, named by the state, whole.
    async fn only_archive(&self, job: &Job) -> String {
        let objects = job_objects(self.store.as_ref(), &self.id, &job.id).await;
        let archive = job
            .archive
            .as_ref()
            .expect("a completed job names its archive");
        assert_eq!(
            objects,
            std::slice::from_ref(&archive.key),
            "export {}: exactly its recorded archive under its prefix",
            job.id
        );
        let bytes = self.store.get(&archive.key).await.unwrap();
        let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        archive.key.clone()
    }

    /// Waits until the job's mail is recorded as sent, then checks that exactly one reached
    /// the sink, also after every other replica's notification loop (every 2 s) had a turn.
    async fn one_mail(&self, view: &StateView, job_id: &str, deadline: Duration) {
        view.wait_job(&self.id, job_id, "notified", deadline, |j| j.notified)
            .await;
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(5) {
            // Watching for a duplicate for two loop periods; a count above one fails at once.
            assert!(
                self.smtp.mails_about(job_id) <= 1,
                "a second mail for {job_id}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(self.smtp.mails_about(job_id), 1, "mails about {job_id}");
    }
}

fn completed(job: &Job) -> bool {
    job.stored_status() == JobStatus::Completed
}

/// One round: replica `a` pauses at `point` in a job and is SIGKILLed there while `b` runs.
async fn kill_at(company: &Company, point: &str, round: usize) {
    let state_topic = unique("state");
    create_topics(&company.stack, &state_topic).await;
    let (a_name, b_name) = (format!("a-{point}-{round}"), format!("b-{point}-{round}"));
    let mut a = company.replica(&state_topic, &a_name, &[("CCE_FAULT_PAUSE_AT", point)]);
    company.enable(&a).await;
    let created = Instant::now();
    let id = company.create(&a, pb::CreateExportRequest::default()).await;
    a.wait_paused_at(point, &id, Duration::from_secs(90)).await;
    let paused_after = secs(created);

    // What a paused worker leaves visible: nothing before its upload completes; its attempt's
    // whole object after.
    let visible = job_objects(company.store.as_ref(), &company.id, &id).await;
    match point {
        "before_finish" | "before_mail" => assert_eq!(visible.len(), 1, "{visible:?}"),
        _ => assert!(
            visible.is_empty(),
            "a partial archive is visible: {visible:?}"
        ),
    }

    let b = company.replica(&state_topic, &b_name, &[]);
    let view = StateView::open(&company.stack, &state_topic).await;
    tests::exports::client(&b.endpoint).await; // b serves before a dies
    a.kill();
    let killed = Instant::now();
    let job = view
        .wait_job(
            &company.id,
            &id,
            "completed",
            Duration::from_secs(120),
            completed,
        )
        .await;
    let completed_after = secs(killed);
    company.one_mail(&view, &id, Duration::from_secs(120)).await;
    let mailed_after = secs(killed);
    let key = company.only_archive(&job).await;
    // Who recorded the result: b in a second attempt, unless a had recorded it already.
    let (by_a, attempt) = match point {
        "before_mail" => (true, 1),
        _ => (false, 2),
    };
    assert_eq!(
        (a.finished(&id), b.finished(&id), job.attempts),
        (by_a, !by_a, attempt),
        "(recorded by a, recorded by b, attempts): {job:?}"
    );
    assert!(key.contains(&format!("/attempt-{attempt}/")), "{key}");
    drop(b);
    eprintln!(
        "faults-export: kill point={point} round={round} paused_after_s={paused_after} \
         completed_after_kill_s={completed_after} mailed_after_kill_s={mailed_after} \
         attempts={} objects=1 mails=1",
        job.attempts
    );
}

async fn kill_at_point(point: &str) {
    let company = Company::new(Stack::from_env(), &format!("kill-{point}"), 3_000).await;
    for round in 1..=rounds(1) {
        kill_at(&company, point, round).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_at_its_claim_leaves_one_job_one_archive_one_mail() {
    kill_at_point(POINTS[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_upload_leaves_one_job_one_archive_one_mail() {
    kill_at_point(POINTS[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_between_upload_and_result_leaves_one_job_one_archive_one_mail() {
    kill_at_point(POINTS[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_between_result_and_mail_leaves_one_job_one_archive_one_mail() {
    kill_at_point(POINTS[3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_replicas_clock_20_s_ahead_every_job_completes_once_with_one_mail() {
    clock_skew_rounds("ahead", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_replicas_clock_20_s_behind_every_job_completes_once_with_one_mail() {
    clock_skew_rounds("behind", -20).await;
}

/// Two replicas, one with its clock `offset_secs` off, share the jobs of a company.
async fn clock_skew_rounds(skewed: &str, offset_secs: i64) {
    let company = Company::new(Stack::from_env(), &format!("skew{skewed}"), 2_000).await;
    let slow_relay = slow_relay(company.smtp.port(), Duration::from_secs(5)).await;
    let offset = offset_secs.to_string();
    for round in 1..=rounds(1) {
        let state_topic = unique("state");
        create_topics(&company.stack, &state_topic).await;
        let skewed_name = format!("{skewed}-{round}");
        let exact_name = format!("exact-{round}");
        let skewed_replica = company.replica(
            &state_topic,
            &skewed_name,
            &[("CCE_CLOCK_OFFSET_SECS", offset.as_str())],
        );
        // The exact replica's mail relay answers after 5 s, so its jobs stay finished and
        // unnotified that long: the other replica must not take their mail over (it judges
        // how long a job has waited by its own clock, 20 s off), nor a running job.
        let exact = company.replica_mailing_via(&slow_relay, &state_topic, &exact_name, &[]);
        let view = StateView::open(&company.stack, &state_topic).await;
        company.enable(&exact).await;
        let started = Instant::now();
        let mut ids = Vec::new();
        for i in 0..6 {
            // Requests reach both replicas, so jobs carry both clocks' times.
            let via = if i % 2 == 0 { &skewed_replica } else { &exact };
            ids.push(
                company
                    .create(via, pb::CreateExportRequest::default())
                    .await,
            );
        }
        let mut owners = std::collections::BTreeMap::<&str, usize>::new();
        for id in &ids {
            let job = view
                .wait_job(
                    &company.id,
                    id,
                    "completed",
                    Duration::from_secs(180),
                    completed,
                )
                .await;
            assert_eq!(job.attempts, 1, "taken over from a live worker: {job:?}");
        }
        let completed_after = secs(started);
        for id in &ids {
            company.one_mail(&view, id, Duration::from_secs(120)).await;
            let job = view.job(&company.id, id).unwrap();
            let key = company.only_archive(&job).await;
            assert!(key.contains("/attempt-1/"), "{key}");
            // Exactly one replica recorded its result.
            let by: Vec<&str> = [(&skewed_replica, &skewed_name), (&exact, &exact_name)]
                .into_iter()
                .filter(|(r, _)| r.finished(id))
                .map(|(_, name)| name.as_str())
                .collect();
            assert_eq!(by.len(), 1, "{id} recorded by {by:?}");
            *owners.entry(by[0]).or_default() += 1;
        }
        assert!(
            owners.contains_key(skewed_name.as_str()) && owners.contains_key(exact_name.as_str()),
            "both replicas ran jobs: {owners:?}"
        );
        eprintln!(
            "faults-export: skew {offset_secs}s round={round} jobs={} by_worker={owners:?} \
             all_completed_after_s={completed_after} attempts=1 objects=1 mails=1",
            ids.len()
        );
    }
}

/// A replica whose `TMPDIR` is a 1 MiB tmpfs with 16 KiB free, mounted in its own mount
/// namespace (`unshare`: needs root or unprivileged user namespaces), so the mount is private
/// and goes with it.
fn replica_with_tiny_tmpdir(company: &Company, state_topic: &str, worker: &str) -> Replica {
    let smtp = company.smtp.url();
    let log = company.logs.path().join(format!("{worker}.log"));
    let tmp = company.logs.path().join(format!("{worker}-tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    // 1 MiB, all but 16 KiB of it taken by another file: a full disk.
    let script = r#"mount -t tmpfs -o size=1m tmpfs "$TMPDIR" || exit 97
head -c 1032192 /dev/zero >"$TMPDIR/filler" || exit 98
exec "$@""#;
    let binary = tests::binary("cce-export");
    let mut wrapper = vec![
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        script,
        "sh",
        binary.to_str().unwrap(),
    ];
    let mut args = tests::exports::args(
        &company.stack,
        state_topic,
        0,
        &["--smtp-url", &smtp, "--worker-id", worker],
    );
    let port = tests::exports::free_port();
    let addr = args.iter().position(|a| a == "--grpc-addr").unwrap() + 1;
    args[addr] = format!("127.0.0.1:{port}");
    wrapper.extend(args.iter().map(String::as_str));
    Replica::start_command(
        "unshare",
        &wrapper,
        &[("TMPDIR", tmp.to_str().unwrap())],
        port,
        &log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_tmpdir_fails_the_export_saying_so_and_the_replica_goes_on() {
    let company = Company::new(Stack::from_env(), "disk", 40_000).await;
    for round in 1..=rounds(1) {
        let state_topic = unique("state");
        create_topics(&company.stack, &state_topic).await;
        let mut replica =
            replica_with_tiny_tmpdir(&company, &state_topic, &format!("tiny-tmp-{round}"));
        let view = StateView::open(&company.stack, &state_topic).await;
        company.enable(&replica).await;
        let started = Instant::now();
        let big = company
            .create(&replica, pb::CreateExportRequest::default())
            .await;
        let job = view
            .wait_job(
                &company.id,
                &big,
                "finished",
                Duration::from_secs(180),
                |j| matches!(j.stored_status(), JobStatus::Failed | JobStatus::Completed),
            )
            .await;
        let failed_after = secs(started);
        assert_eq!(job.stored_status(), JobStatus::Failed, "{job:?}");
        let error = job.error.clone().unwrap();
        assert!(
            error.contains("TMPDIR") && error.contains("No space left on device"),
            "the error says the temporary disk is full: {error}"
        );
        let left = job_objects(company.store.as_ref(), &company.id, &big).await;
        assert!(left.is_empty(), "a failed export left {left:?}");
        company.one_mail(&view, &big, Duration::from_secs(60)).await;
        assert!(
            replica.is_running(),
            "the replica died: {}",
            replica.log_text()
        );

        // The disk is as full as the export left it; a small export (one day) still fits.
        let small = company
            .create(
                &replica,
                pb::CreateExportRequest {
                    from: Some(timestamp("2001-01-01T00:00:00Z")),
                    to: Some(timestamp("2001-01-02T00:00:00Z")),
                    ..Default::default()
                },
            )
            .await;
        let done = view
            .wait_job(
                &company.id,
                &small,
                "completed",
                Duration::from_secs(120),
                completed,
            )
            .await;
        company.only_archive(&done).await;
        company
            .one_mail(&view, &small, Duration::from_secs(60))
            .await;
        eprintln!(
            "faults-export: tmpdir-full round={round} failed_after_s={failed_after} \
             error={error:?} objects_left=0 next_small_export=completed"
        );
    }
}

/// A private stack (its own tansu and garage, `deploy/local/up.sh`), stopped on drop.
struct PrivateStack {
    dir: tempfile::TempDir,
    stack: Stack,
    /// Garage servers started again by the test (down.sh stops them; reaped on drop).
    restarted: std::sync::Mutex<Vec<std::process::Child>>,
}

impl PrivateStack {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = tests::repo_root();
        let out = std::process::Command::new("bash")
            .arg(root.join("deploy/local/up.sh"))
            .arg(dir.path())
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "up.sh failed");
        let env = std::fs::read_to_string(dir.path().join("stack.env")).unwrap();
        let stack = Stack {
            vars: tests::parse_env_file(&env),
        };
        Self {
            dir,
            stack,
            restarted: std::sync::Mutex::default(),
        }
    }

    /// The garage server's pid (the second line of up.sh's pids file).
    fn garage_pid(&self) -> String {
        let pids = std::fs::read_to_string(self.dir.path().join("pids")).unwrap();
        pids.lines().nth(1).unwrap().trim().to_owned()
    }

    /// Starts garage again on the same configuration and data, as up.sh did.
    fn restart_garage(&self) {
        let garage = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}/deploy/local/common.sh; exec \"$GARAGE_BIN\" -c garage/garage.toml \
                 server >>logs/garage.log 2>&1",
                tests::repo_root().display()
            ))
            .current_dir(self.dir.path())
            .spawn()
            .unwrap();
        // Recorded so that down.sh stops the new server too.
        let pids = self.dir.path().join("pids");
        let text = std::fs::read_to_string(&pids).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[1] = garage.id().to_string();
        std::fs::write(&pids, lines.join("\n") + "\n").unwrap();
        self.restarted.lock().unwrap().push(garage);
    }

    fn signal_garage(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.garage_pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} garage");
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(tests::repo_root().join("deploy/local/down.sh"))
            .arg(self.dir.path())
            .status();
        for mut garage in self.restarted.lock().unwrap().drain(..) {
            let _ = garage.kill();
            let _ = garage.wait();
        }
    }
}

/// What to do to the store during the export.
#[derive(Debug, Clone, Copy)]
enum StoreFault {
    /// SIGKILL, then a new server on the same data after `down`.
    Kill,
    /// SIGSTOP, then SIGCONT after `down`.
    Freeze,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_killed_or_frozen_during_an_export_recovers_with_one_archive_or_a_clear_failure()
{
    let private = PrivateStack::start();
    let company = Company::new(private.stack.clone(), "store", 40_000).await;
    let down = Duration::from_secs(5);
    for round in 1..=rounds(1) {
        for fault in [StoreFault::Kill, StoreFault::Freeze] {
            store_fault(&private, &company, fault, down, round).await;
        }
    }
}

async fn store_fault(
    private: &PrivateStack,
    company: &Company,
    fault: StoreFault,
    down: Duration,
    round: usize,
) {
    let state_topic = unique("state");
    create_topics(&company.stack, &state_topic).await;
    let worker = format!("store-{fault:?}-{round}");
    let replica = company.replica(&state_topic, &worker, &[]);
    let view = StateView::open(&company.stack, &state_topic).await;
    company.enable(&replica).await;
    let id = company
        .create(&replica, pb::CreateExportRequest::default())
        .await;
    // The export is under way: it has read events from the store.
    let client = tests::exports::client(&replica.endpoint).await;
    wait_for(
        "the export to read events",
        Duration::from_secs(120),
        || {
            let mut client = client.clone();
            let (token, id) = (&company.token, &id);
            async move {
                let job = tests::exports::get(&mut client, token, id).await;
                job.progress
                    .is_some_and(|p| p.events_read > 0)
                    .then_some(())
            }
        },
    )
    .await;
    match fault {
        StoreFault::Kill => private.signal_garage("-KILL"),
        StoreFault::Freeze => private.signal_garage("-STOP"),
    }
    // The outage's length: the fault being injected, not a synchronisation.
    tokio::time::sleep(down).await;
    match fault {
        StoreFault::Kill => private.restart_garage(),
        StoreFault::Freeze => private.signal_garage("-CONT"),
    }
    let back = Instant::now();
    let job = view
        .wait_job(&company.id, &id, "finished", Duration::from_secs(60), |j| {
            matches!(j.stored_status(), JobStatus::Failed | JobStatus::Completed)
        })
        .await;
    let finished_after = secs(back);
    // The job itself recovers: a try cut short by the store is tried again (runner.rs), and
    // nothing has to be requested again.
    assert_eq!(
        job.stored_status(),
        JobStatus::Completed,
        "the export did not recover from the store fault {fault:?}: {:?}",
        job.error
    );
    company.only_archive(&job).await;
    let outcome = "completed";
    company.one_mail(&view, &id, Duration::from_secs(60)).await;
    assert!(
        finished_after <= 60.0,
        "the export finished {finished_after} s after the store came back"
    );
    drop(replica);
    eprintln!(
        "faults-export: store fault={fault:?} round={round} down_s={} \
         finished_after_recovery_s={finished_after} outcome={outcome}",
        down.as_secs()
    );
}
