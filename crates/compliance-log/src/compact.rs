//! Compaction (`docs/log-format.md`, "Compaction pass"): rewrites the records of closed days
//! from the multi-company segments into per-company day parts and metadata days, then records
//! the pass.
//!
//! A pass reads the head pass and the watermark pointers, derives the new horizon (the day the
//! slowest partition's time watermark, less the grace period, falls in) and the new cuts (the
//! durable offsets), and reads only what is not compacted yet: the segments from the old cut
//! (from the old `scan_from` when the horizon moved) up to the new cut, and of those only the
//! slices of companies with records of closed days. Companies are processed in contiguous
//! shards planned from the slice sizes in the segment headers, so memory follows the shard
//! budget, not the pass. Each company-day with input is merged with its current objects and
//! written under names derived from the pass; the pass record is written last, with counts and
//! hashes of what was read and written, after checking that they reconcile.
//!
//! Kill it anywhere: nothing is replaced, a rerun with the same inputs writes the same names and
//! bytes, and readers ignore objects of passes past the head and incomplete parts. Two
//! compactors at once either write the same bytes (same inputs) or different names (different
//! cuts); a reader takes the union of the objects no other object covers (`v2::view`), so
//! neither can hide a record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use event_model::directory::Directory;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use storage::{ObjectStore, list_all, put_new};

use crate::v2::keys;
use crate::v2::part::{self, PartSpec};
use crate::v2::pass::{PassPartition, PassRecord, PassRef, ReadTally, WroteTally};
use crate::v2::pointer::{LogPosition, Watermark};
use crate::v2::segment::{self, Located};
use crate::v2::view;
use crate::{LogError, LogRecord, Result};

mod gc;

/// What a compactor does and how.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// The topic whose log it compacts.
    pub topic: String,
    /// How long after the time watermark passes a day's end the day is closed.
    pub grace: Duration,
    /// How long compacted segments and superseded parts are kept (default 7 days).
    pub retention: Duration,
    /// The largest body of one part chunk, in bytes (default 64 MiB).
    pub max_chunk_bytes: usize,
}

impl CompactionConfig {
    /// The defaults: 5 minutes of grace, 7 days of retention, 64 MiB chunks.
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            grace: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_chunk_bytes: 64 << 20,
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassSummary {
    pub pass: PassRef,
    pub horizon: DateTime<Utc>,
    pub read: ReadTally,
    pub wrote: WroteTally,
}

/// Runs compaction passes over one topic's log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Compactor {
    store: Arc<dyn ObjectStore>,
    config: CompactionConfig,
    shard_bytes: u64,
    concurrency: usize,
}

/// One (partition, epoch) of a pass: what the previous pass left and where this one stops.
#[derive(Debug, Clone)]
struct Span {
    partition: i32,
    epoch: u32,
    old_cut: i64,
    old_scan_from: i64,
    new_cut: i64,
}

/// A segment to read, with the (partition, epoch) span it belongs to, and its slices when the
/// whole segment was fetched (taken by the one shard that reads them).
#[derive(Debug)]
struct Input {
    span: usize,
    located: Located,
    slices: std::sync::Mutex<Option<Vec<CompanyRecords>>>,
}

/// One company's records from one segment.
type CompanyRecords = (String, Vec<LogRecord>);

/// Input records by (company, day).
type Groups = BTreeMap<(String, NaiveDate), Vec<LogRecord>>;

impl Compactor {
    pub fn new(store: Arc<dyn ObjectStore>, config: CompactionConfig) -> Self {
        Self {
            store,
            config,
            shard_bytes: 256 << 20,
            concurrency: 16,
        }
    }

    /// The most slice bytes one shard of companies reads into memory (default 256 MiB; a
    /// single company larger than it gets a shard of its own).
    pub fn with_shard_budget(mut self, bytes: u64) -> Self {
        self.shard_bytes = bytes.max(1);
        self
    }

    pub fn config(&self) -> &CompactionConfig {
        &self.config
    }

    /// Runs one pass. `None` when there is nothing to do (no pointers yet, or neither the
    /// horizon nor any cut moved since the head pass).
    pub async fn run_pass(&self, now: DateTime<Utc>) -> Result<Option<PassSummary>> {
        let store = self.store.as_ref();
        let topic = &self.config.topic;
        let head = PassRecord::head(store, topic).await?;
        let pointers = Watermark::read_all(store, topic).await?;
        let Some(horizon) = self.horizon(head.as_ref(), &pointers, now) else {
            return Ok(None);
        };
        let old_horizon = head.as_ref().map(|h| h.horizon);
        let mut spans = spans(head.as_ref(), &pointers);
        if head.is_some()
            && old_horizon == Some(horizon)
            && spans.iter().all(|s| s.new_cut == s.old_cut)
        {
            return Ok(None);
        }
        let horizon_moved = old_horizon != Some(horizon);

        // The segments to read, by span, and each span's new scan_from.
        let mut listed: Vec<(usize, storage::ObjectMeta)> = Vec::new();
        for (index, span) in spans.iter().enumerate() {
            let start = if horizon_moved {
                span.old_scan_from.min(span.old_cut)
            } else {
                span.old_cut
            };
            let objects = view::segment_objects_between(
                store,
                topic,
                span.partition,
                span.epoch,
                start,
                span.new_cut,
            )
            .await?;
            listed.extend(objects.into_iter().map(|o| (index, o)));
        }
        lower_splitting_cuts(&mut spans, &mut listed);
        if head.is_some() && !horizon_moved && spans.iter().all(|s| s.new_cut == s.old_cut) {
            return Ok(None);
        }
        // When every input segment fits the shard budget, one GET per segment (header and
        // body); otherwise the headers first, then each shard's slices by ranged GETs.
        let whole = listed.iter().map(|(_, o)| o.size).sum::<u64>() <= self.shard_bytes;
        let inputs: Vec<Input> = futures::stream::iter(listed)
            .map(|(span, object)| async move {
                if whole {
                    let bytes = store.get(&object.key).await?;
                    let (header, slices) = segment::decode(&object.key, &bytes)?;
                    Ok::<_, LogError>(Input {
                        span,
                        located: Located {
                            key: object.key,
                            header,
                            body_start: 0,
                        },
                        slices: std::sync::Mutex::new(Some(slices)),
                    })
                } else {
                    Ok(Input {
                        span,
                        located: segment::read_header(store, &object.key).await?,
                        slices: std::sync::Mutex::new(None),
                    })
                }
            })
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let mut partitions = Vec::with_capacity(spans.len());
        for (index, span) in spans.iter().enumerate() {
            let first_open = inputs
                .iter()
                .filter(|i| i.span == index)
                .find(|i| {
                    i.located
                        .header
                        .companies
                        .iter()
                        .any(|c| c.max_time >= horizon)
                })
                .map(|i| i.located.header.source.first_offset);
            let scan_from = if !horizon_moved && span.old_scan_from < span.old_cut {
                span.old_scan_from
            } else {
                first_open.unwrap_or(span.new_cut)
            };
            partitions.push(PassPartition {
                partition: span.partition,
                epoch: span.epoch,
                cut: span.new_cut,
                scan_from: scan_from.min(span.new_cut),
            });
        }
        let mut record = PassRecord::new(
            topic,
            head.as_ref().map(PassRecord::reference),
            horizon,
            partitions,
        );
        let pass = record.reference();
        let cuts = record.cuts();
        tracing::info!(topic = %topic, seq = pass.seq, hash = %pass.hash, horizon = %horizon, segments = inputs.len(), "compaction pass started");

        // Which slices are input, and the read tally (independent of how shards are cut).
        let needed = |input: &Input, slice: &segment::CompanySlice| {
            let span = &spans[input.span];
            slice.min_time < horizon
                && (input.located.header.source.last_offset >= span.old_cut
                    || old_horizon.is_none_or(|h| slice.max_time >= h))
        };
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        let mut read_lines = Vec::new();
        for input in &inputs {
            for slice in &input.located.header.companies {
                if needed(input, slice) {
                    *sizes.entry(slice.company_id.clone()).or_default() += slice.len;
                    read_lines.push(format!(
                        "{} {} {}\n",
                        input.located.key, slice.company_id, slice.sha256
                    ));
                }
            }
        }
        record.read.segments = inputs.len() as u64;
        record.read.slices = read_lines.len() as u64;
        record.read.sha256 = hex::encode(Sha256::digest(read_lines.concat().as_bytes()));

        let mut written: Vec<(String, String)> = Vec::new();
        for (first, last) in shards(&sizes, self.shard_bytes) {
            let (content, meta, taken) = self
                .read_shard(
                    &inputs,
                    &spans,
                    &first,
                    &last,
                    horizon,
                    old_horizon,
                    &needed,
                )
                .await?;
            record.read.records += taken;
            let mut by_company: BTreeMap<String, BTreeMap<NaiveDate, Vec<LogRecord>>> =
                BTreeMap::new();
            for ((company, day), input) in meta {
                by_company.entry(company).or_default().insert(day, input);
            }
            // Company-days (and companies' metadata) are independent: merged and written a few
            // at a time, each writing its objects as soon as they are verified.
            let (pass, cuts) = (&pass, cuts.as_slice());
            let days = content.into_iter().map(|((company, day), input)| {
                futures::future::Either::Left(async move {
                    let (objects, tally) = self.merge_day(&company, day, input, pass, cuts).await?;
                    self.write_all(objects, tally).await
                })
            });
            let metas = by_company.into_iter().map(|(company, days)| {
                futures::future::Either::Right(async move {
                    let (objects, tally) =
                        self.merge_meta(&company, days, pass, cuts, horizon).await?;
                    self.write_all(objects, tally).await
                })
            });
            let done: Vec<(WroteTally, Vec<(String, String)>)> =
                futures::stream::iter(days.chain(metas))
                    .buffer_unordered(self.concurrency)
                    .try_collect()
                    .await?;
            for (tally, objects) in done {
                add(&mut record.wrote, &tally);
                written.extend(objects);
            }
        }
        written.sort();
        let lines: String = written.iter().map(|(k, s)| format!("{k} {s}\n")).collect();
        record.wrote.sha256 = hex::encode(Sha256::digest(lines.as_bytes()));
        if !record.wrote.reconciles(&record.read) {
            return Err(LogError::Corrupt {
                key: record.key(),
                reason: format!(
                    "the pass does not reconcile: wrote {} records ({} carried over, {} duplicates \
                     collapsed) for {} read; not recording it",
                    record.wrote.records,
                    record.wrote.carried,
                    record.wrote.duplicates,
                    record.read.records
                ),
            });
        }
        put_new(store, &record.key(), record.encode()?).await?;
        tracing::info!(topic = %topic, seq = pass.seq, hash = %pass.hash, records_read = record.read.records, records_written = record.wrote.records, parts = record.wrote.parts, meta_days = record.wrote.meta_days, "compaction pass recorded");
        Ok(Some(PassSummary {
            pass,
            horizon,
            read: record.read,
            wrote: record.wrote,
        }))
    }

    /// Writes a group's objects (create-only); returns its tally and `(key, body sha256)` of
    /// each object.
    async fn write_all(
        &self,
        objects: Vec<(String, Bytes)>,
        tally: WroteTally,
    ) -> Result<(WroteTally, Vec<(String, String)>)> {
        let store = self.store.as_ref();
        let fingerprints = objects
            .iter()
            .map(|(key, bytes)| (key.clone(), body_sha256(bytes)))
            .collect();
        futures::stream::iter(objects)
            .map(|(key, bytes)| async move {
                put_new(store, &key, bytes).await.map_err(LogError::from)
            })
            .buffer_unordered(4)
            .try_collect::<Vec<_>>()
            .await?;
        Ok((tally, fingerprints))
    }

    /// Deletes what no reader needs any more; returns how many objects it deleted.
    pub async fn collect_garbage(&self, now: DateTime<Utc>) -> Result<u64> {
        gc::collect(self, now).await
    }

    /// The new horizon: the day the least time watermark less the grace falls in, never before
    /// the head's, never after `now` less the grace. `None` when there is none yet.
    fn horizon(
        &self,
        head: Option<&PassRecord>,
        pointers: &[Watermark],
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if pointers.is_empty() {
            return head.map(|h| h.horizon);
        }
        let grace = chrono::Duration::from_std(self.config.grace).unwrap_or(chrono::Duration::MAX);
        let position = LogPosition::from_pointers(&self.config.topic, pointers);
        let candidate = position
            .min_time_watermark()
            .and_then(|t| t.min(now).checked_sub_signed(grace))
            .map(floor_day);
        match (candidate, head.map(|h| h.horizon)) {
            (Some(c), Some(old)) => Some(c.max(old)),
            (c, old) => c.or(old),
        }
    }

    /// Reads one shard's input slices and groups the input records by (company, day), content
    /// and metadata apart. Returns them and how many records were taken.
    #[allow(clippy::too_many_arguments)]
    async fn read_shard(
        &self,
        inputs: &[Input],
        spans: &[Span],
        first: &str,
        last: &str,
        horizon: DateTime<Utc>,
        old_horizon: Option<DateTime<Utc>>,
        needed: &(dyn Fn(&Input, &segment::CompanySlice) -> bool + Sync),
    ) -> Result<(Groups, Groups, u64)> {
        let store = self.store.as_ref();
        let wanted: Vec<&Input> = inputs
            .iter()
            .filter(|input| {
                input.located.header.companies.iter().any(|c| {
                    c.company_id.as_str() >= first
                        && c.company_id.as_str() <= last
                        && needed(input, c)
                })
            })
            .collect();
        let slices: Vec<(usize, Vec<CompanyRecords>)> = futures::stream::iter(wanted)
            .map(|input| async move {
                let fetched = input
                    .slices
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                let slices = match fetched {
                    Some(all) => all
                        .into_iter()
                        .filter(|(c, _)| c.as_str() >= first && c.as_str() <= last)
                        .collect(),
                    None => segment::read_companies(store, &input.located, first, last).await?,
                };
                Ok::<_, LogError>((input.span, slices))
            })
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let (mut content, mut meta) = (Groups::new(), Groups::new());
        let mut taken = 0;
        for (span, companies) in slices {
            let span = &spans[span];
            for (company, records) in companies {
                for record in records {
                    let at = record.event.occurred_at.with_timezone(&Utc);
                    let input = at < horizon
                        && record.offset < span.new_cut
                        && (record.offset >= span.old_cut || old_horizon.is_none_or(|h| at >= h));
                    if !input {
                        continue;
                    }
                    taken += 1;
                    let group = if record.event.body.is_metadata() {
                        &mut meta
                    } else {
                        &mut content
                    };
                    group
                        .entry((company.clone(), at.date_naive()))
                        .or_default()
                        .push(record);
                }
            }
        }
        Ok((content, meta, taken))
    }

    /// Merges a company-day's input with its current part; returns the chunks to write.
    async fn merge_day(
        &self,
        company: &str,
        day: NaiveDate,
        input: Vec<LogRecord>,
        pass: &PassRef,
        cuts: &[crate::v2::pass::Cut],
    ) -> Result<(Vec<(String, Bytes)>, WroteTally)> {
        let store = self.store.as_ref();
        let keys: Vec<String> = list_all(store, &keys::day_prefix(company, day))
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let existing = view::read_day(store, company, &others(&keys, pass)).await?;
        let carried = existing.records.len() as u64;
        let mut all = existing.records;
        all.extend(input);
        let (merged, duplicates) = part::merge_records(all);
        let spec = PartSpec {
            company_id: company,
            day,
            pass,
            cuts,
            merged: &existing.covered,
        };
        let chunks = part::encode_part(&spec, &merged, self.config.max_chunk_bytes)?;
        // Verify what is about to be written, from its bytes.
        let mut records = 0;
        let mut seen = Vec::with_capacity(merged.len());
        for (key, bytes) in &chunks {
            let (_, decoded) = part::decode_part(key, bytes, company)?;
            records += decoded.len() as u64;
            seen.extend(
                decoded
                    .into_iter()
                    .map(|r| (r.source_position(), r.event.event_id)),
            );
        }
        let expected: Vec<_> = merged
            .iter()
            .map(|r| (r.source_position(), r.event.event_id.clone()))
            .collect();
        if seen != expected {
            return Err(LogError::Corrupt {
                key: chunks.first().map(|c| c.0.clone()).unwrap_or_default(),
                reason: "the encoded part does not hold the merged records".into(),
            });
        }
        let tally = WroteTally {
            parts: chunks.len() as u64,
            records,
            carried,
            duplicates,
            ..WroteTally::default()
        };
        Ok((chunks, tally))
    }

    /// Merges a company's metadata input with its metadata days: the days with input get their
    /// changes merged, and every later day's snapshot is recomputed until one comes out as it
    /// was.
    async fn merge_meta(
        &self,
        company: &str,
        mut input: BTreeMap<NaiveDate, Vec<LogRecord>>,
        pass: &PassRef,
        cuts: &[crate::v2::pass::Cut],
        horizon: DateTime<Utc>,
    ) -> Result<(Vec<(String, Bytes)>, WroteTally)> {
        let store = self.store.as_ref();
        let mut by_day: BTreeMap<NaiveDate, Vec<String>> = BTreeMap::new();
        for object in list_all(store, &keys::meta_days_prefix(company)).await? {
            if let Some(name) = keys::parse_part_key(&object.key) {
                by_day.entry(name.day).or_default().push(object.key);
            }
        }
        let Some(first_input) = input.keys().next().copied() else {
            return Ok((Vec::new(), WroteTally::default()));
        };
        // The directory before the first day with input: the latest earlier day with a
        // trusted snapshot, then every day after it is rewritten.
        let mut base = Directory::default();
        let mut start = NaiveDate::MIN;
        for (day, keys) in by_day.range(..first_input).rev() {
            let existing = view::read_meta_day(store, company, &others(keys, pass)).await?;
            if let Some(snapshot) = existing.snapshot {
                base = snapshot;
                start = day.succ_opt().unwrap_or(*day);
                break;
            }
        }
        let days: BTreeSet<NaiveDate> = by_day
            .range(start..)
            .map(|(d, _)| *d)
            .chain(input.keys().copied())
            .filter(|d| {
                d.and_hms_opt(0, 0, 0)
                    .is_some_and(|t| t.and_utc() < horizon)
            })
            .collect();
        let mut objects = Vec::new();
        let mut tally = WroteTally::default();
        for day in days {
            let keys = by_day.get(&day).cloned().unwrap_or_default();
            let existing = view::read_meta_day(store, company, &others(&keys, pass)).await?;
            let new_input = input.remove(&day).unwrap_or_default();
            if new_input.is_empty() && day > first_input {
                // Past every day with input: once a snapshot comes out as it was, the later
                // ones are right as they are.
                let mut after = base.clone();
                for change in settle_by_id(&existing.changes) {
                    after.apply(&change.event);
                }
                if existing.snapshot.as_ref() == Some(&after) {
                    if input.is_empty() {
                        break;
                    }
                    base = after;
                    continue;
                }
            }
            tally.carried += existing.changes.len() as u64;
            let mut all = existing.changes;
            all.extend(new_input);
            let (changes, duplicates) = part::merge_records(all);
            tally.duplicates += duplicates;
            for change in settle_by_id(&changes) {
                base.apply(&change.event);
            }
            let spec = PartSpec {
                company_id: company,
                day,
                pass,
                cuts,
                merged: &existing.covered,
            };
            let (key, bytes) = part::encode_meta_day(&spec, &base, &changes)?;
            let (_, snapshot, decoded) = part::decode_meta_day(&key, &bytes, company)?;
            if snapshot != base || decoded.len() != changes.len() {
                return Err(LogError::Corrupt {
                    key,
                    reason: "the encoded metadata day does not hold what was merged".into(),
                });
            }
            tally.records += decoded.len() as u64;
            tally.meta_days += 1;
            objects.push((key, bytes));
        }
        Ok((objects, tally))
    }
}

/// The candidates of a company-day of earlier passes only (`seq` below this pass's). A rerun of
/// the same pass must write the same bytes, so it never merges what it wrote itself; nor what a
/// concurrent compactor wrote under the same `seq` and another hash: the same name must mean
/// the same bytes, whichever of the two got its parts in first. Readers take the union of such
/// peers' parts (neither covers the other), and the next pass merges them.
fn others(keys: &[impl AsRef<str>], pass: &PassRef) -> Vec<view::Candidate> {
    let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    view::candidates(keys.iter().copied(), pass)
        .into_iter()
        .filter(|c| c.pass.seq < pass.seq)
        .collect()
}

/// One copy per event (the earliest in the source), in log order: what a directory folds.
fn settle_by_id(records: &[LogRecord]) -> Vec<&LogRecord> {
    let mut chosen: BTreeMap<&str, &LogRecord> = BTreeMap::new();
    for record in records {
        let entry = chosen
            .entry(record.event.event_id.as_str())
            .or_insert(record);
        if record.source_position() < entry.source_position() {
            *entry = record;
        }
    }
    let mut out: Vec<&LogRecord> = chosen.into_values().collect();
    out.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    out
}

fn add(total: &mut WroteTally, part: &WroteTally) {
    total.parts += part.parts;
    total.meta_days += part.meta_days;
    total.records += part.records;
    total.carried += part.carried;
    total.duplicates += part.duplicates;
}

fn body_sha256(object: &[u8]) -> String {
    let body = object
        .iter()
        .position(|b| *b == b'\n')
        .map_or(object, |n| &object[n + 1..]);
    hex::encode(Sha256::digest(body))
}

/// Midnight UTC of an instant's day.
pub(crate) fn floor_day(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(at, |t| t.and_utc())
}

/// The (partition, epoch) spans of a pass: every epoch of every partition the pointers know,
/// with what the head pass left (nothing for an epoch it does not know) and the new cut (the
/// durable offset in the current epoch; every earlier epoch is closed, so all of it).
fn spans(head: Option<&PassRecord>, pointers: &[Watermark]) -> Vec<Span> {
    let mut spans: BTreeMap<(i32, u32), Span> = BTreeMap::new();
    for pointer in pointers {
        for epoch in 1..=pointer.epoch {
            let old = head.and_then(|h| h.partition(pointer.partition, epoch));
            let (old_cut, old_scan_from) = old.map_or((0, 0), |p| (p.cut, p.scan_from));
            let new_cut = if epoch < pointer.epoch {
                i64::MAX
            } else {
                pointer.durable_offset
            };
            spans.insert(
                (pointer.partition, epoch),
                Span {
                    partition: pointer.partition,
                    epoch,
                    old_cut,
                    old_scan_from,
                    new_cut: new_cut.max(old_cut),
                },
            );
        }
    }
    // A span the head knows but no pointer does stays as it was.
    for p in head.map(|h| h.partitions.as_slice()).unwrap_or_default() {
        spans.entry((p.partition, p.epoch)).or_insert(Span {
            partition: p.partition,
            epoch: p.epoch,
            old_cut: p.cut,
            old_scan_from: p.scan_from,
            new_cut: p.cut,
        });
    }
    spans.into_values().collect()
}

/// Lowers each span's new cut to the start of any listed segment it would split, and drops the
/// listed segments that then start at or past it.
///
/// A cut inside a segment (`first < cut <= last`) can come from a stale writer: after the
/// partition moved on, the old owner wrote a shorter segment and moved the pointer back. Later
/// passes and readers list segments from the cut on (`start_after`), so the part of the longer
/// segment past the cut would never be read. A cut at a segment's start keeps it listed.
fn lower_splitting_cuts(spans: &mut [Span], listed: &mut Vec<(usize, storage::ObjectMeta)>) {
    for (index, span) in spans.iter_mut().enumerate() {
        let ranges: Vec<(i64, i64)> = listed
            .iter()
            .filter(|(i, _)| *i == index)
            .filter_map(|(_, o)| keys::segment_range(&o.key))
            .collect();
        // Lowering the cut may make it split another segment: repeat until none is split.
        while let Some(first) = ranges
            .iter()
            .filter(|(first, last)| *first < span.new_cut && span.new_cut <= *last)
            .map(|(first, _)| *first)
            .min()
        {
            // Never below the head's cut: what is below it was compacted already.
            let lowered = first.max(span.old_cut);
            if lowered == span.new_cut {
                break;
            }
            tracing::warn!(
                partition = span.partition,
                epoch = span.epoch,
                pointer = span.new_cut,
                cut = lowered,
                "the durable offset splits a segment (a stale writer moved the pointer back?); \
                 cutting at the segment's start"
            );
            span.new_cut = lowered;
        }
    }
    listed.retain(|(index, object)| {
        keys::segment_range(&object.key).is_none_or(|(first, _)| first < spans[*index].new_cut)
    });
}

/// Cuts the companies (in id order) into contiguous runs of at most `budget` slice bytes
/// (a company larger than the budget gets a run of its own).
fn shards(sizes: &BTreeMap<String, u64>, budget: u64) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String, u64)> = None;
    for (company, size) in sizes {
        current = match current {
            Some((first, _, total)) if total + size <= budget => {
                Some((first, company.clone(), total + size))
            }
            Some((first, last, _)) => {
                out.push((first, last));
                Some((company.clone(), company.clone(), *size))
            }
            None => Some((company.clone(), company.clone(), *size)),
        };
    }
    out.extend(current.map(|(first, last, _)| (first, last)));
    out
}

#[cfg(test)]
mod tests;
