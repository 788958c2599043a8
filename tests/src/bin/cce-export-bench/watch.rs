//! Runs a benchmark's child process while watching its memory: its resident set is sampled
//! every 100 ms, and a child that passes the cap is killed (and reported as such), so a case
//! that would need gigabytes cannot take the machine down.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

/// How a watched run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Exited 0; the last line of its stdout as JSON.
    Done(Value),
    /// Killed by the watcher at the cap.
    Killed { rss_mib: f64, after: Duration },
    /// Exited otherwise (an error, or killed by the system: an OOM kill shows as a signal).
    Failed { status: String, stderr_tail: String },
}

/// A run: how it ended, and the peak resident set the watcher saw (the child's own `VmHWM`
/// is exact; this is a 100 ms sample, kept for runs that did not finish).
#[derive(Debug)]
pub struct Watched {
    pub outcome: Outcome,
    pub peak_rss_mib: f64,
    pub elapsed: Duration,
    /// The last progress line the child printed on stderr.
    pub last_progress: String,
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `command`, echoing its stderr with `label`, killing it once its resident set passes
/// `cap_mib`. Blocking: call from a blocking thread.
pub fn run(mut command: Command, label: &str, cap_mib: f64) -> anyhow::Result<Watched> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the child process")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text = line;
        }
        text
    });
    let label = label.to_owned();
    let err = std::thread::spawn(move || {
        let (mut progress, mut tail) = (String::new(), Vec::<String>::new());
        let mut echoed: Option<Instant> = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Progress lines come twice a second: echo one every 10 s.
            let is_progress = line.contains("% ");
            if !is_progress || echoed.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                eprintln!("[{label}] {line}");
                if is_progress {
                    echoed = Some(Instant::now());
                }
            }
            if is_progress {
                progress.clone_from(&line);
            }
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
        (progress, tail.join("\n"))
    });
    let mut peak = 0f64;
    let mut killed = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(rss) = rss_mib(pid) {
            peak = peak.max(rss);
            if rss > cap_mib && killed.is_none() {
                eprintln!(
                    "[watch] {rss:.0} MiB resident, past the cap of {cap_mib:.0} MiB: killing"
                );
                child.kill().ok();
                killed = Some((rss, started.elapsed()));
            }
        }
        // A sampling interval, not a synchronisation: try_wait above sees the exit.
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let stdout = out.join().unwrap_or_default();
    let (last_progress, stderr_tail) = err.join().unwrap_or_default();
    let outcome = match killed {
        Some((rss_mib, after)) => Outcome::Killed { rss_mib, after },
        None if status.success() => Outcome::Done(
            serde_json::from_str(&stdout)
                .with_context(|| format!("the child's last line is not JSON: {stdout}"))?,
        ),
        None => Outcome::Failed {
            status: status.to_string(),
            stderr_tail,
        },
    };
    Ok(Watched {
        outcome,
        peak_rss_mib: peak,
        elapsed,
        last_progress,
    })
}
