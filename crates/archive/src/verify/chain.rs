//! Checking that scheduled archives follow one another: grouped by schedule and ordered by
//! run, each run must start exactly where the previous ended, and name the previous run's
//! range end and the SHA-256 of its whole archive (`manifest::ScheduleLink`). Then the runs
//! given cover `[first run's from, last run's to)` — every instant exactly once — and a signed
//! last archive vouches for all before it, since each names its predecessor's bytes.
//! (`docs/export-format.md`, "Checking a chain of scheduled archives".)

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::manifest::ManifestHead;

/// One archive given to [`check`]: what `verify` read of its manifest, and the SHA-256 of the
/// whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainArchive {
    /// How messages name it (its path).
    pub name: String,
    /// Lowercase hex SHA-256 of the archive file as downloaded.
    pub sha256: String,
    pub head: ManifestHead,
}

/// One schedule's runs among the archives given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub schedule_id: String,
    pub company_id: String,
    /// The first and last run numbers given.
    pub first_run: u64,
    pub last_run: u64,
    /// The first run's start (`None`: all history) and the last run's end.
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
    /// Gaps, overlaps and mismatches found; empty when the runs cover `[from, to)` exactly once.
    pub problems: Vec<String>,
}

impl Chain {
    /// One line for a person: the range covered and whether every instant is in exactly one
    /// archive.
    pub fn summary(&self) -> String {
        let runs = if self.first_run == self.last_run {
            format!("run {}", self.first_run)
        } else {
            format!("runs {} to {}", self.first_run, self.last_run)
        };
        let range = format!(
            "[{}, {})",
            self.from.map_or_else(|| "all history".into(), show),
            show(self.to)
        );
        let verdict = if self.problems.is_empty() {
            "covers every instant exactly once".to_owned()
        } else {
            format!(
                "does NOT cover every instant exactly once: {} problem{}",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" }
            )
        };
        format!(
            "schedule {} (company {}): {runs} {range} {verdict}",
            self.schedule_id, self.company_id
        )
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// One per schedule, in schedule id order.
    pub chains: Vec<Chain>,
    /// Archives that belong to no chain (not made by a schedule).
    pub problems: Vec<String>,
}

impl ChainReport {
    /// Whether every archive is in a chain and every chain is whole.
    pub fn is_whole(&self) -> bool {
        self.problems.is_empty() && self.chains.iter().all(|c| c.problems.is_empty())
    }
}

fn show(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Checks the chains the archives form (see the module's comment).
pub fn check(archives: &[ChainArchive]) -> ChainReport {
    let mut report = ChainReport::default();
    let mut by_schedule: BTreeMap<&str, Vec<&ChainArchive>> = BTreeMap::new();
    for archive in archives {
        match &archive.head.schedule {
            Some(link) => by_schedule
                .entry(link.schedule_id.as_str())
                .or_default()
                .push(archive),
            None => report.problems.push(format!(
                "{}: not a scheduled run's archive (its manifest has no schedule), so it is in \
                 no chain",
                archive.name
            )),
        }
    }
    for (schedule_id, mut runs) in by_schedule {
        runs.sort_by_key(|a| (run_of(a), a.name.clone()));
        report.chains.push(check_one(schedule_id, &runs));
    }
    report
}

fn run_of(archive: &ChainArchive) -> u64 {
    archive.head.schedule.as_ref().map_or(0, |link| link.run)
}

fn start_of(archive: &ChainArchive) -> DateTime<Utc> {
    archive
        .head
        .request
        .from
        .unwrap_or_else(event_model::validate::earliest_accepted)
}

/// One schedule's runs, sorted by run number.
fn check_one(schedule_id: &str, runs: &[&ChainArchive]) -> Chain {
    let (first, last) = (runs[0], runs[runs.len() - 1]);
    let company_id = first.head.request.company_id.clone();
    let mut problems = Vec::new();
    for archive in runs {
        let run = run_of(archive);
        let link = archive.head.schedule.as_ref();
        if archive.head.request.company_id != company_id {
            problems.push(format!(
                "{} (run {run}): company {}, but {} is company {company_id}'s",
                archive.name, archive.head.request.company_id, first.name
            ));
        }
        match link.and_then(|l| l.previous.as_ref()) {
            None if run > 1 => problems.push(format!(
                "{} (run {run}): names no previous run, though it is not the first",
                archive.name
            )),
            Some(_) if run <= 1 => problems.push(format!(
                "{} (run {run}): the first run names a previous run",
                archive.name
            )),
            Some(previous) if Some(previous.to) != archive.head.request.from => {
                problems.push(format!(
                    "{} (run {run}): says the previous run ended at {}, but its own range \
                     starts at {}",
                    archive.name,
                    show(previous.to),
                    archive
                        .head
                        .request
                        .from
                        .map_or_else(|| "the start of history".into(), show)
                ));
            }
            _ => {}
        }
    }
    for pair in runs.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        let (run_before, run_after) = (run_of(before), run_of(after));
        if run_after == run_before {
            problems.push(if before.sha256 == after.sha256 {
                format!(
                    "{} and {} are the same archive (run {run_after}) given twice",
                    before.name, after.name
                )
            } else {
                format!(
                    "{} and {} are different archives that both claim to be run {run_after}",
                    before.name, after.name
                )
            });
            continue;
        }
        let (end, start) = (before.head.request.to, start_of(after));
        if run_after != run_before + 1 {
            let missing = if run_after == run_before + 2 {
                format!("run {} is", run_before + 1)
            } else {
                format!("runs {} to {} are", run_before + 1, run_after - 1)
            };
            problems.push(format!(
                "gap: {missing} missing between {} (run {run_before}) and {} (run \
                 {run_after}), so [{}, {}) is in none of the archives given",
                before.name,
                after.name,
                show(end),
                show(start)
            ));
            continue;
        }
        if start > end {
            problems.push(format!(
                "gap: [{}, {}) is in no archive: {} (run {run_before}) ends at {}, {} (run \
                 {run_after}) starts at {}",
                show(end),
                show(start),
                before.name,
                show(end),
                after.name,
                show(start)
            ));
        } else if start < end {
            problems.push(format!(
                "overlap: [{}, {}) is in two archives: {} (run {run_before}) ends at {}, {} \
                 (run {run_after}) starts at {}",
                show(start),
                show(end),
                before.name,
                show(end),
                after.name,
                show(start)
            ));
        }
        let Some(previous) = after
            .head
            .schedule
            .as_ref()
            .and_then(|l| l.previous.as_ref())
        else {
            continue; // named above
        };
        if previous.to != end {
            problems.push(format!(
                "{} (run {run_after}): says run {run_before} ended at {}, but {} (run \
                 {run_before}) ends at {}",
                after.name,
                show(previous.to),
                before.name,
                show(end)
            ));
        }
        if !previous.archive_sha256.eq_ignore_ascii_case(&before.sha256) {
            problems.push(format!(
                "{} (run {run_after}): names run {run_before}'s archive SHA-256 {}, but {} has \
                 SHA-256 {}: it is not the archive run {run_before} made (changed or replaced)",
                after.name, previous.archive_sha256, before.name, before.sha256
            ));
        }
    }
    Chain {
        schedule_id: schedule_id.to_owned(),
        company_id,
        first_run: run_of(first),
        last_run: run_of(last),
        from: first.head.request.from,
        to: last.head.request.to,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{PreviousRun, ScheduleLink};

    fn at(day: u32) -> DateTime<Utc> {
        format!("2026-03-{day:02}T00:00:00Z").parse().unwrap()
    }

    /// Run `run` of schedule `s1` over days `[from, to)` of March, naming `previous`.
    fn archive(run: u64, from: u32, to: u32, previous: Option<(u32, &str)>) -> ChainArchive {
        let head = serde_json::json!({
            "format": "cce-export-json", "format_version": 4,
            "request": {"company_id": "acme", "from": at(from), "to": at(to),
                        "all_history": false, "person_ids": [], "conversation_ids": [],
                        "time_zone": "UTC"},
            "log_position": {"log_format_version": 2, "events_before": at(to), "events_read": 0},
            "conversations": [],
            "totals": {"events": 0, "posts": 0, "edits": 0, "deletes": 0, "notes": 0,
                       "files_shared": 0}
        });
        let mut head: ManifestHead = serde_json::from_value(head).unwrap();
        head.schedule = Some(ScheduleLink {
            schedule_id: "s1".into(),
            run,
            previous: previous.map(|(day, sha)| PreviousRun {
                to: at(day),
                archive_sha256: sha.into(),
            }),
        });
        ChainArchive {
            name: format!("run{run}.zip"),
            sha256: format!("sha{run}"),
            head,
        }
    }

    fn problems(archives: &[ChainArchive]) -> Vec<String> {
        let report = check(archives);
        assert_eq!(report.chains.len(), 1);
        report.chains[0].problems.clone()
    }

    #[test]
    fn consecutive_runs_that_name_each_other_cover_their_range_once() {
        // Given in any order.
        let archives = [
            archive(3, 3, 4, Some((3, "sha2"))),
            archive(1, 1, 2, None),
            archive(2, 2, 3, Some((2, "sha1"))),
        ];
        let report = check(&archives);
        assert!(report.is_whole(), "{report:?}");
        assert_eq!(
            report.chains[0].summary(),
            "schedule s1 (company acme): runs 1 to 3 [2026-03-01T00:00:00Z, \
             2026-03-04T00:00:00Z) covers every instant exactly once"
        );
    }

    #[test]
    fn a_chain_may_start_after_the_first_run() {
        let archives = [
            archive(5, 5, 6, Some((5, "sha4"))),
            archive(6, 6, 7, Some((6, "sha5"))),
        ];
        assert!(check(&archives).is_whole());
    }

    #[test]
    fn each_break_of_the_chain_is_named() {
        let cases: Vec<(&str, Vec<ChainArchive>, &str)> = vec![
            (
                "gap",
                vec![archive(1, 1, 2, None), archive(2, 3, 4, Some((3, "sha1")))],
                "gap: [2026-03-02T00:00:00Z, 2026-03-03T00:00:00Z) is in no archive",
            ),
            (
                "overlap",
                vec![archive(1, 1, 3, None), archive(2, 2, 4, Some((2, "sha1")))],
                "overlap: [2026-03-02T00:00:00Z, 2026-03-03T00:00:00Z) is in two archives",
            ),
            (
                "missing run",
                vec![archive(1, 1, 2, None), archive(3, 3, 4, Some((3, "sha2")))],
                "gap: run 2 is missing between run1.zip (run 1) and run3.zip (run 3)",
            ),
            (
                "wrong previous hash",
                vec![archive(1, 1, 2, None), archive(2, 2, 3, Some((2, "other")))],
                "run2.zip (run 2): names run 1's archive SHA-256 other, but run1.zip has \
                 SHA-256 sha1",
            ),
            (
                "previous end disagrees with the archive",
                vec![archive(1, 1, 3, None), archive(2, 2, 4, Some((2, "sha1")))],
                "run2.zip (run 2): says run 1 ended at 2026-03-02T00:00:00Z, but run1.zip \
                 (run 1) ends at 2026-03-03T00:00:00Z",
            ),
            (
                "previous end disagrees with its own start",
                vec![archive(1, 1, 2, None), archive(2, 2, 3, Some((1, "sha1")))],
                "run2.zip (run 2): says the previous run ended at 2026-03-01T00:00:00Z, but \
                 its own range starts at 2026-03-02T00:00:00Z",
            ),
            (
                "no previous",
                vec![archive(1, 1, 2, None), archive(2, 2, 3, None)],
                "run2.zip (run 2): names no previous run",
            ),
            (
                "same run twice",
                vec![archive(1, 1, 2, None), archive(1, 1, 2, None)],
                "are the same archive (run 1) given twice",
            ),
        ];
        for (what, archives, expected) in cases {
            let problems = problems(&archives);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{what}: {problems:#?} lacks {expected:?}"
            );
            let summary = check(&archives).chains[0].summary();
            assert!(summary.contains("does NOT cover"), "{what}: {summary}");
        }
    }

    #[test]
    fn an_archive_of_no_schedule_is_named() {
        let mut plain = archive(1, 1, 2, None);
        plain.head.schedule = None;
        let report = check(&[plain, archive(1, 1, 2, None)]);
        assert!(!report.is_whole());
        assert_eq!(
            report.problems,
            [
                "run1.zip: not a scheduled run's archive (its manifest has no schedule), so it is \
              in no chain"
            ]
        );
    }
}
