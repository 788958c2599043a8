//! The independent checker: compares the producer's ledger with the compliance log, read with
//! the project's reader (`compliance_log::LogReader`), and with the archive of an export of
//! each company (`archive::export_to_s3`, read back and verified with `archive::verify`, its
//! manifest's counts compared). It shares nothing with ingestion but the log's format.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use compliance_log::{LogPosition, LogReader};
use storage::ObjectStore;

use super::producer::{Kind, Ledger};
use crate::Stack;

/// What the checker found for one scenario group.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verdict {
    pub companies: usize,
    pub acked: usize,
    pub uncertain: usize,
    /// Distinct events the reader returned (over every company).
    pub in_log: usize,
    /// Acknowledged events missing from their company's log (first few, and how many).
    pub missing: Vec<String>,
    pub missing_count: usize,
    /// Events the reader returned more than once.
    pub doubled: Vec<String>,
    pub doubled_count: usize,
    /// Events in the log the producer never sent.
    pub unexpected: Vec<String>,
    /// Uncertain sends that did reach the log (allowed, once).
    pub uncertain_in_log: usize,
    pub archives_checked: usize,
    /// Archive problems (verify failures, counts that differ from the log's).
    pub archive_problems: Vec<String>,
    /// Posts, edits and deletes counted in the archives' manifests (bore out by their day
    /// files, as `verify` checked).
    pub archive_counts: [u64; 3],
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.missing_count == 0
            && self.doubled_count == 0
            && self.unexpected.is_empty()
            && self.archive_problems.is_empty()
    }
}

/// Every partition's end offset of `topic` now.
pub async fn end_offsets(stack: &Stack, topic: &str, partitions: i32) -> Vec<i64> {
    crate::end_offsets(stack, topic, partitions)
        .await
        .into_iter()
        .map(|(_, end)| end)
        .collect()
}

/// Waits until the log's watermark pointers say every partition is durable up to `ends`
/// (ingestion has caught up to that point); returns how long that took.
pub async fn wait_durable(
    store: &dyn ObjectStore,
    topic: &str,
    ends: &[i64],
    deadline: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok(position) = LogPosition::read(store, topic).await {
            let caught_up = ends.iter().enumerate().all(|(p, end)| {
                position
                    .partition(p as i32)
                    .is_some_and(|pos| pos.durable_offset >= *end)
            });
            if caught_up {
                return Ok(start.elapsed());
            }
        }
        ensure!(
            start.elapsed() < deadline,
            "the log of {topic} was not durable up to {ends:?} within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event id the reader returns for `company` with how often.
async fn read_company(
    reader: &LogReader,
    company: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let from = "2000-01-01T00:00:00Z".parse().expect("instant");
    let to = chrono::Utc::now() + chrono::Duration::days(2);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursor = reader.events(company, from, to);
    while let Some(hour) = cursor.next_hour().await.context("reading events")? {
        for record in hour {
            *seen.entry(record.event.event_id.clone()).or_default() += 1;
        }
    }
    for record in reader
        .meta_events(company, to)
        .await
        .context("reading metadata")?
    {
        *seen.entry(record.event.event_id.clone()).or_default() += 1;
    }
    Ok(seen)
}

/// Checks every company of the ledger: its log holds every acknowledged event once, nothing
/// twice, nothing unknown; then exports `archive_sample` companies (all when `None`) and
/// checks their archives' counts against the events the log holds.
pub async fn check(
    stack: &Stack,
    topic: &str,
    ledger: &Ledger,
    archive_sample: Option<usize>,
) -> anyhow::Result<Verdict> {
    let store: Arc<dyn ObjectStore> = Arc::new(stack.s3_store().await);
    let reader = LogReader::new(Arc::clone(&store));
    let mut verdict = Verdict {
        companies: ledger.acked.len(),
        acked: ledger.acked_count(),
        uncertain: ledger.uncertain_count(),
        ..Verdict::default()
    };
    let empty = BTreeMap::new();
    let mut in_log_by_company: BTreeMap<&str, Vec<Kind>> = BTreeMap::new();
    for (company, acked) in &ledger.acked {
        let uncertain = ledger.uncertain.get(company).unwrap_or(&empty);
        let seen = read_company(&reader, company).await?;
        verdict.in_log += seen.len();
        let kinds = in_log_by_company.entry(company).or_default();
        for (id, count) in &seen {
            if *count > 1 {
                verdict.doubled_count += 1;
                if verdict.doubled.len() < 10 {
                    verdict.doubled.push(format!("{id} x{count}"));
                }
            }
            match (acked.get(id), uncertain.get(id)) {
                (Some(kind), _) => kinds.push(*kind),
                (None, Some(kind)) => {
                    verdict.uncertain_in_log += 1;
                    kinds.push(*kind);
                }
                (None, None) => verdict.unexpected.push(id.clone()),
            }
        }
        for id in acked.keys().filter(|id| !seen.contains_key(*id)) {
            verdict.missing_count += 1;
            if verdict.missing.len() < 10 {
                verdict.missing.push(id.clone());
            }
        }
    }

    let position = LogPosition::read(store.as_ref(), topic)
        .await
        .context("reading the log position")?;
    let sample: Vec<&str> = in_log_by_company
        .keys()
        .copied()
        .take(archive_sample.unwrap_or(usize::MAX))
        .collect();
    for company in sample {
        let kinds = &in_log_by_company[company];
        let count = |k: Kind| kinds.iter().filter(|x| **x == k).count() as u64;
        let expected = [count(Kind::Post), count(Kind::Edit), count(Kind::Delete)];
        match export_counts(&store, company, &position).await {
            Ok(got) => {
                verdict.archives_checked += 1;
                for (total, n) in verdict.archive_counts.iter_mut().zip(got) {
                    *total += n;
                }
                if got != expected {
                    verdict.archive_problems.push(format!(
                        "{company}: archive counts posts/edits/deletes {got:?}, the log holds {expected:?}"
                    ));
                }
            }
            Err(error) => verdict
                .archive_problems
                .push(format!("{company}: {error:#}")),
        }
    }
    Ok(verdict)
}

/// Exports `company`'s whole history at `position`, verifies the archive and returns its
/// manifest's post, edit and delete totals.
async fn export_counts(
    store: &Arc<dyn ObjectStore>,
    company: &str,
    position: &LogPosition,
) -> anyhow::Result<[u64; 3]> {
    let key = format!("exports/{company}/faults-{}.zip", uuid::Uuid::new_v4());
    let request = archive::ExportRequest {
        company_id: company.to_owned(),
        from: None,
        to: chrono::Utc::now() + chrono::Duration::hours(2),
        person_ids: BTreeSet::new(),
        conversation_ids: BTreeSet::new(),
        time_zone: String::new(),
        position: Some(position.clone()),
        limits: archive::ExportLimits {
            threads: 1,
            ..archive::ExportLimits::default()
        },
        format: archive::DataFormat::Json,
        schedule: None,
        signer: None,
    };
    archive::export_to_s3(
        &request,
        Arc::clone(store),
        Arc::clone(store),
        &key,
        &archive::CancellationToken::new(),
        |_| {},
    )
    .await
    .context("exporting")?;
    let bytes = store.get(&key).await.context("downloading the archive")?;
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes[..]))
        .context("verifying the archive")?;
    ensure!(
        report.problems.is_empty(),
        "verify found {} problems: {:?}",
        report.problems.len(),
        report.problems.iter().take(3).collect::<Vec<_>>()
    );
    let manifest = archive::verify::read_entries(&bytes)
        .context("reading the archive's entries")?
        .into_iter()
        .find(|(name, _)| name.ends_with("/manifest.json") || name == "manifest.json")
        .context("no manifest.json in the archive")?;
    let manifest: archive::Manifest =
        serde_json::from_slice(&manifest.1).context("parsing manifest.json")?;
    let totals = manifest.head.totals;
    store.delete(&key).await.context("deleting the archive")?;
    Ok([totals.posts, totals.edits, totals.deletes])
}
