//! The export service's fault suite harness: replicas as real processes that can be paused at
//! a point of a job's life (`CCE_FAULT_PAUSE_AT`) and killed there, a real SMTP sink, the
//! state as every replica folds it, and what the store holds under a job's prefix.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use export::state::Job;
use export::statelog::{KafkaLog, RecordLog, StateLog};
use storage::ObjectStore;

use crate::{Stack, binary, wait_for};

/// The venv's python (set by `deploy/local/test.sh`).
pub fn python() -> String {
    std::env::var("CCE_PYTHON")
        .expect("CCE_PYTHON (set by deploy/local/test.sh) names the venv's python")
}

/// How many rounds a scenario runs: `CCE_FAULTS_EXPORT_ROUNDS` (the long run), else `short`.
pub fn rounds(short: usize) -> usize {
    std::env::var("CCE_FAULTS_EXPORT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short)
}

/// A real SMTP server (aiosmtpd) storing what it receives in a maildir.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let maildir = tempfile::tempdir().unwrap();
        let port = crate::exports::free_port();
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .spawn()
            .expect("aiosmtpd (installed by deploy/local/install.sh)");
        wait_for("the SMTP server", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Self {
            child,
            port,
            maildir,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail/new");
        std::fs::read_dir(new)
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many messages received so far name `job_id` (the mail links to the job's page).
    pub fn mails_about(&self, job_id: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.contains(job_id))
            .count()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `cce-export` process; SIGKILLed on drop.
#[derive(Debug)]
pub struct Replica {
    child: Child,
    pub endpoint: String,
    pub log: PathBuf,
}

impl Replica {
    /// Starts the binary with the test flags of [`crate::exports::args`] plus `extra`, the
    /// variables `env`, and its log in `log`.
    pub fn start(
        stack: &Stack,
        state_topic: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let port = crate::exports::free_port();
        let args = crate::exports::args(stack, state_topic, port, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let binary = binary("cce-export");
        Self::start_command(binary.to_str().unwrap(), &args, env, port, log)
    }

    /// Runs `program` with `args` (the service, or a wrapper that execs it) serving gRPC on
    /// `port`.
    pub fn start_command(
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        port: u16,
        log: &Path,
    ) -> Self {
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether this replica recorded the job's result (it logs `export finished` only then).
    pub fn finished(&self, job_id: &str) -> bool {
        self.log_text()
            .lines()
            .any(|l| l.contains("export finished") && l.contains(job_id))
    }

    /// Waits until the replica logs that it reached `point` for `job_id` (it is then paused
    /// there for good).
    pub async fn wait_paused_at(&self, point: &str, job_id: &str, deadline: Duration) {
        wait_for(
            &format!("{} to pause at {point} for {job_id}", self.log.display()),
            deadline,
            || async {
                self.log_text()
                    .lines()
                    .any(|l| {
                        l.contains("fault point reached") && l.contains(point) && l.contains(job_id)
                    })
                    .then_some(())
            },
        )
        .await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The export state as every replica folds it, read from the state topic by this process.
#[derive(Debug)]
pub struct StateView {
    log: StateLog,
    stop: telemetry::CancellationToken,
}

impl StateView {
    pub async fn open(stack: &Stack, state_topic: &str) -> Self {
        let records: Arc<dyn RecordLog> = Arc::new(
            KafkaLog::connect(stack.kafka_brokers(), state_topic)
                .await
                .unwrap(),
        );
        let stop = telemetry::CancellationToken::new();
        let log = StateLog::open(records, None, Arc::new(export::SystemClock), stop.clone())
            .await
            .unwrap();
        log.caught_up().await.unwrap();
        Self { log, stop }
    }

    pub fn job(&self, company: &str, job_id: &str) -> Option<Job> {
        self.log
            .read(|s| s.company(company).and_then(|c| c.job(job_id).cloned()))
    }

    /// Waits (on the fold's changes) until `f` holds for the job.
    pub async fn wait_job(
        &self,
        company: &str,
        job_id: &str,
        what: &str,
        deadline: Duration,
        f: impl Fn(&Job) -> bool,
    ) -> Job {
        let mut changes = self.log.subscribe();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(job) = self.job(company, job_id).filter(|j| f(j)) {
                return job;
            }
            let changed = tokio::time::timeout_at(until, changes.changed()).await;
            assert!(
                changed.is_ok(),
                "export {job_id} not {what} within {deadline:?}: {:?}",
                self.job(company, job_id)
            );
        }
    }
}

impl Drop for StateView {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Every object under the job's prefix `exports/<company>/<job>/`.
pub async fn job_objects(store: &dyn ObjectStore, company: &str, job_id: &str) -> Vec<String> {
    storage::list_all(store, &format!("exports/{company}/{job_id}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// Seconds since `start`, rounded to a tenth, for the report.
pub fn secs(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

/// A mail relay that answers late: a TCP proxy on loopback that waits `delay` after accepting
/// each connection before passing it to `upstream` (the SMTP sink). Stops with the runtime.
pub async fn slow_relay(upstream: u16, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await; // the relay's slowness: the fault injected
                if let Ok(mut server) =
                    tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    format!("smtp://127.0.0.1:{port}")
}
