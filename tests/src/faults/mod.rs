//! The fault suite (`deploy/local/faults.sh`, binary `cce-faults`): faults injected into the
//! running stack and the services while a producer keeps producing, then an independent check
//! that every acknowledged event is in its company's log exactly once and in its archive.
//!
//! Each scenario group is a function taking the stack and its [`Settings`] and returning
//! [`Outcome`]s; `cce-faults` runs them as subcommands (`ingest-kills`, `broker`, `store`,
//! `network`) or all in a row (`all`). A new group (the export service's faults) adds its
//! module here and a subcommand in `src/bin/cce-faults.rs`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::Stack;

pub mod checker;
pub mod ingest;
pub mod producer;
pub mod proxy;
pub mod servers;

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// SIGKILLs of ingestion in the kill scenario.
    pub kills: usize,
    /// Companies the producer writes for, and events per second.
    pub companies: usize,
    pub rate: u32,
    /// Ingestion's consumer session timeout: the supervisor restarts a killed instance only
    /// after it (tansu does not rebalance when a dead member's session expires: docs/servers.md).
    pub session_timeout: Duration,
    /// Seed of every random choice (delays, events), printed so a run can be repeated.
    pub seed: u64,
    /// Where ingestion's logs go.
    pub log_dir: PathBuf,
    /// Companies exported for the archive check (all when `None`).
    pub archive_sample: Option<usize>,
}

/// One scenario's result, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub scenario: String,
    /// What was injected, and how many times.
    pub injected: String,
    pub count: usize,
    /// Seconds from the end of each fault until the log was durable up to what had been
    /// produced when it ended (ingestion caught up by itself).
    pub recovery_secs: Vec<f64>,
    /// The longest recovery allowed.
    pub recovery_limit_secs: f64,
    pub verdict: checker::Verdict,
    pub seconds: f64,
    /// Extra facts (e.g. flush retries seen during the fault).
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.verdict.passed()
            && self
                .recovery_secs
                .iter()
                .all(|s| *s <= self.recovery_limit_secs)
    }

    /// One line of the report.
    pub fn summary(&self) -> String {
        let max = self.recovery_secs.iter().copied().fold(0.0f64, f64::max);
        let v = &self.verdict;
        format!(
            "{status} {scenario}: {injected} x{count}; {acked} acked events ({uncertain} uncertain) \
             for {companies} companies, {in_log} in the log, missing {missing}, doubled {doubled}, \
             unexpected {unexpected}; {archives} archives (posts/edits/deletes {counts:?}), \
             {problems} problems; recovery max {max:.1}s (limit {limit:.0}s) over {n}; {secs:.0}s{notes}",
            status = if self.passed() { "PASS" } else { "FAIL" },
            scenario = self.scenario,
            injected = self.injected,
            count = self.count,
            acked = v.acked,
            uncertain = v.uncertain,
            companies = v.companies,
            in_log = v.in_log,
            missing = v.missing_count,
            doubled = v.doubled_count,
            unexpected = v.unexpected.len(),
            archives = v.archives_checked,
            counts = v.archive_counts,
            problems = v.archive_problems.len(),
            limit = self.recovery_limit_secs,
            n = self.recovery_secs.len(),
            secs = self.seconds,
            notes = if self.notes.is_empty() {
                String::new()
            } else {
                format!("; {}", self.notes.join("; "))
            },
        )
    }
}

/// A small deterministic generator (xorshift64*), so a run's choices follow from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.below(span))
    }
}

/// The stack's data directory (where its pid file and logs are).
pub fn stack_dir(stack: &Stack) -> PathBuf {
    PathBuf::from(stack.var("CCE_STACK_DIR"))
}

/// A counter or gauge's value in a Prometheus text page (summed over its labels).
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = if rest.starts_with('{') {
                rest.split_once('}')?.1
            } else {
                rest
            };
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Fetches a metrics page, `None` while the endpoint is not up.
pub async fn metrics_page(ops: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    client
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Writes the outcomes as JSON lines to `path`.
pub fn write_report(path: &std::path::Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let lines: Vec<String> = outcomes
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    std::fs::write(path, lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_labelled_series_and_skips_comments() {
        let page = "# HELP x y\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\nx_total_other 9\n";
        assert!((metric(page, "x_total") - 5.0).abs() < f64::EPSILON);
        assert!((metric(page, "missing")).abs() < f64::EPSILON);
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            let x = a.between(Duration::from_millis(10), Duration::from_millis(20));
            assert_eq!(
                x,
                b.between(Duration::from_millis(10), Duration::from_millis(20))
            );
            assert!(x >= Duration::from_millis(10) && x < Duration::from_millis(20));
        }
    }
}
