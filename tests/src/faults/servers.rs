//! The stack's servers (tansu, garage) as processes: signalled, stopped and restarted with
//! the same command line, working directory and data, and the stack's pid file kept current
//! so `deploy/local/down.sh` stops what the suite restarted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Broker,
    Store,
}

impl Server {
    fn binary_name(self) -> &'static str {
        match self {
            Self::Broker => "tansu",
            Self::Store => "garage",
        }
    }

    fn log_name(self) -> &'static str {
        match self {
            Self::Broker => "tansu.log",
            Self::Store => "garage.log",
        }
    }
}

/// A running server process of the stack in `dir` (the `CCE_STACK_DIR` of its env file).
#[derive(Debug, Clone)]
pub struct Process {
    pub server: Server,
    pub pid: u32,
    argv: Vec<String>,
    cwd: PathBuf,
    /// Its environment: a restart must not inherit the suite's (its `RUST_LOG` made tansu
    /// log every request's spans, hundreds of MB a minute).
    environ: Vec<(String, String)>,
}

/// Finds `server` among the stack's pids.
pub fn find(dir: &Path, server: Server) -> anyhow::Result<Process> {
    for pid in read_pids(dir)? {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_it = argv.first().is_some_and(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| n == server.binary_name())
        });
        if is_it {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
                .with_context(|| format!("reading the working directory of pid {pid}"))?;
            let environ = std::fs::read(format!("/proc/{pid}/environ"))
                .with_context(|| format!("reading the environment of pid {pid}"))?
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect();
            return Ok(Process {
                server,
                pid,
                argv,
                cwd,
                environ,
            });
        }
    }
    bail!(
        "no running {} among the pids in {}/pids",
        server.binary_name(),
        dir.display()
    )
}

fn read_pids(dir: &Path) -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string(dir.join("pids"))
        .with_context(|| format!("reading {}/pids", dir.display()))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`).
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// Whether `pid` is running (a zombie is not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

impl Process {
    /// Waits until the process has exited (polling /proc; it is not our child).
    pub async fn wait_exit(&self, deadline: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while alive(self.pid) {
            ensure!(
                start.elapsed() < deadline,
                "{} (pid {}) still running after {deadline:?}",
                self.server.binary_name(),
                self.pid
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops the process with `signal_name` (`TERM` or `KILL`), waiting for it to exit.
    pub async fn stop(&self, signal_name: &str) -> anyhow::Result<()> {
        signal(self.pid, signal_name)?;
        self.wait_exit(Duration::from_secs(30)).await
    }

    /// Starts the server again exactly as it ran (same arguments, directory and data),
    /// detached from this process so that `down.sh` owns it, and records its pid in place of
    /// the old one.
    pub fn restart(&self, dir: &Path) -> anyhow::Result<Self> {
        ensure!(
            !alive(self.pid),
            "pid {} is still running: stop it first",
            self.pid
        );
        let log = dir.join("logs").join(self.server.log_name());
        // `sh` backgrounds the server and exits, so init adopts it as up.sh's servers are.
        let output = std::process::Command::new("sh")
            .env_clear()
            .envs(self.environ.iter().map(|(k, v)| (k, v)))
            .arg("-c")
            .arg(r#"cd "$1" && log="$2" && shift 2 && "$@" >>"$log" 2>&1 </dev/null & echo $!"#)
            .arg("sh")
            .arg(&self.cwd)
            .arg(&log)
            .args(&self.argv)
            .output()
            .context("starting the server again")?;
        ensure!(output.status.success(), "sh failed: {output:?}");
        let pid: u32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .context("reading the new pid")?;
        let pids: Vec<String> = read_pids(dir)?
            .into_iter()
            .map(|p| if p == self.pid { pid } else { p })
            .map(|p| p.to_string())
            .collect();
        std::fs::write(dir.join("pids"), pids.join("\n") + "\n")
            .context("updating the stack's pid file")?;
        Ok(Self {
            server: self.server,
            pid,
            argv: self.argv.clone(),
            cwd: self.cwd.clone(),
            environ: self.environ.clone(),
        })
    }
}
