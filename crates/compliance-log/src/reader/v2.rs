//! Reading format version 2 for one company: compacted parts for closed days, segments for the
//! rest (`docs/log-format.md`, "Reading").
//!
//! Per read: the head pass (a LIST and a GET), which (partition, epoch) spans exist (the
//! reader's position, or one LIST of the epoch markers), one LIST of segments per span from its
//! cut (late events) or its `scan_from` (open days), each listed segment's header once, and
//! then only this company's slices whose time span meets the range. Closed days come from the
//! compacted parts: one LIST per 1,000 part keys across the range, then per day with data its
//! chunks. Every record goes through `v2::isolation::admit` (in the decoders).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use storage::{ObjectMeta, ObjectStore, list_all};

use crate::v2::keys;
use crate::v2::pass::{Cut, PassRecord, PassRef};
use crate::v2::pointer::LogPosition;
use crate::v2::segment;
use crate::v2::view;
use crate::{LogError, LogRecord, Result};

/// Which records a segment scan keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Content,
    Meta,
}

/// The v2 state one read works from: the topic, its head pass and the spans to scan.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub topic: String,
    pub head: Option<PassRecord>,
    /// (partition, epoch) → (cut, scan_from, read segments that start before this).
    pub spans: BTreeMap<(i32, u32), (i64, i64, i64)>,
}

impl Snapshot {
    /// Every closed day is before it (the Unix epoch's start before the first pass).
    pub fn horizon(&self) -> DateTime<Utc> {
        self.head
            .as_ref()
            .map_or(DateTime::<Utc>::MIN_UTC, |h| h.horizon)
    }

    pub fn head_ref(&self) -> Option<PassRef> {
        self.head.as_ref().map(PassRecord::reference)
    }

    /// Opens the v2 state of the log: the position's topic, or every topic with a pointer
    /// (a bucket normally holds one; tests share one between topics).
    pub async fn open_all(
        store: &dyn ObjectStore,
        position: Option<&LogPosition>,
    ) -> Result<Vec<Self>> {
        if let Some(position) = position {
            return Ok(vec![
                Self::open(store, &position.topic, Some(position), &[]).await?,
            ]);
        }
        let root = format!("{}watermarks/", keys::ROOT);
        let mut by_topic: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for object in list_all(store, &root).await? {
            if let Some((topic, _)) = object
                .key
                .strip_prefix(&root)
                .and_then(|rest| rest.split_once('/'))
            {
                by_topic
                    .entry(topic.to_owned())
                    .or_default()
                    .push(object.key.clone());
            }
        }
        let mut out = Vec::with_capacity(by_topic.len());
        for (topic, pointer_keys) in by_topic {
            out.push(Self::open(store, &topic, None, &pointer_keys).await?);
        }
        Ok(out)
    }

    /// Opens one topic: its head pass and its (partition, epoch) spans — every epoch the
    /// position covers (epochs count up from 1), or every epoch marker and pointer.
    async fn open(
        store: &dyn ObjectStore,
        topic: &str,
        position: Option<&LogPosition>,
        pointer_keys: &[String],
    ) -> Result<Self> {
        let head = PassRecord::head(store, topic).await?;
        let mut spans: BTreeMap<(i32, u32), (i64, i64, i64)> = BTreeMap::new();
        match position {
            Some(position) => {
                for p in &position.partitions {
                    for epoch in 1..=p.epoch {
                        let end = if epoch == p.epoch {
                            p.durable_offset
                        } else {
                            i64::MAX
                        };
                        spans.insert((p.partition, epoch), (0, 0, end));
                    }
                }
            }
            None => {
                let prefix = format!("{}epochs/{topic}/", keys::ROOT);
                for object in list_all(store, &prefix).await? {
                    let partition = object
                        .key
                        .strip_prefix(&prefix)
                        .and_then(|rest| rest.split('/').next())
                        .and_then(|p| p.parse::<i32>().ok());
                    if let (Some(partition), Some(epoch)) =
                        (partition, keys::epoch_of_key(&object.key))
                    {
                        spans.insert((partition, epoch), (0, 0, i64::MAX));
                    }
                }
                // Epochs start at 1: a partition with a pointer has at least that one.
                let pointers = keys::watermarks_prefix(topic);
                for key in pointer_keys {
                    if let Some(partition) = key
                        .strip_prefix(&pointers)
                        .and_then(|name| name.strip_suffix(".json"))
                        .and_then(|p| p.parse::<i32>().ok())
                    {
                        spans.entry((partition, 1)).or_insert((0, 0, i64::MAX));
                    }
                }
                for p in head.iter().flat_map(|h| &h.partitions) {
                    spans
                        .entry((p.partition, p.epoch))
                        .or_insert((0, 0, i64::MAX));
                }
            }
        }
        for ((partition, epoch), span) in &mut spans {
            if let Some(p) = head.as_ref().and_then(|h| h.partition(*partition, *epoch)) {
                span.0 = p.cut;
                span.1 = p.scan_from.min(p.cut);
            }
        }
        Ok(Self {
            topic: topic.to_owned(),
            head,
            spans,
        })
    }

    /// This company's slices of `kind` in the segments that are not compacted yet, whose time
    /// span meets `from..to`: each segment's header once (one ranged GET). Reads segments from
    /// each span's cut, or from its `scan_from` when the range reaches the horizon.
    pub async fn slices(
        &self,
        store: &dyn ObjectStore,
        company_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        kind: Kind,
        concurrency: usize,
    ) -> Result<Vec<SliceRef>> {
        let horizon = self.horizon();
        let mut keys: Vec<(String, i64)> = Vec::new();
        for (&(partition, epoch), &(cut, scan_from, end)) in &self.spans {
            let start = if to > horizon { scan_from } else { cut };
            for key in
                view::segments_between(store, &self.topic, partition, epoch, start, end).await?
            {
                keys.push((key, cut));
            }
        }
        let found: Vec<Option<SliceRef>> = futures::stream::iter(keys)
            .map(|(key, cut)| async move {
                let located = segment::read_header(store, &key).await?;
                let Some(at) = located.locate(company_id) else {
                    return Ok(None);
                };
                let slice = &at.slice;
                let wanted_kind = match kind {
                    Kind::Content => slice.records > slice.meta_records,
                    Kind::Meta => slice.meta_records > 0,
                };
                // Below the cut only the records of open days count: closed ones are compacted.
                let below_cut = located.header.source.last_offset < cut;
                if !wanted_kind
                    || !slice.overlaps(from, to)
                    || (below_cut && slice.max_time < horizon)
                {
                    return Ok(None);
                }
                Ok::<_, LogError>(Some(SliceRef { at, cut, horizon }))
            })
            .buffered(concurrency)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The company's compacted parts (chunk objects, with their sizes) of the closed days in
    /// `first..=last`, by day: one LIST per 1,000 keys.
    pub async fn part_keys(
        &self,
        store: &dyn ObjectStore,
        company_id: &str,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, Vec<ObjectMeta>>> {
        let mut out: BTreeMap<NaiveDate, Vec<ObjectMeta>> = BTreeMap::new();
        if self.head.is_none() {
            return Ok(out);
        }
        let last = last.min(
            self.horizon()
                .date_naive()
                .pred_opt()
                .unwrap_or(NaiveDate::MIN),
        );
        if first > last {
            return Ok(out);
        }
        let prefix = keys::days_prefix(company_id);
        // Keys of day D start with "<prefix>D/", which sorts right after "<prefix>D".
        let mut start_after = format!("{prefix}{}", first.format("%Y-%m-%d"));
        loop {
            let page = store.list_page(&prefix, Some(&start_after), 1000).await?;
            for object in &page.objects {
                let Some(name) = keys::parse_part_key(&object.key) else {
                    continue;
                };
                if name.day > last {
                    return Ok(out);
                }
                if name.day >= first {
                    out.entry(name.day).or_default().push(object.clone());
                }
            }
            match page.next_start_after {
                Some(next) => start_after = next,
                None => return Ok(out),
            }
        }
    }
}

/// One company's slice of an uncompacted segment, from its header.
#[derive(Debug, Clone)]
pub(super) struct SliceRef {
    pub at: segment::SliceLocation,
    /// The cut and horizon of its topic's head pass: below the cut only open days count.
    cut: i64,
    horizon: DateTime<Utc>,
}

impl SliceRef {
    /// The earliest `occurred_at` of the slice's records.
    pub fn min_time(&self) -> DateTime<Utc> {
        self.at.slice.min_time
    }

    /// The slice's bytes (a ranged GET of exactly these).
    pub fn len(&self) -> u64 {
        self.at.slice.len
    }

    /// Whether a record of the slice is one a read of `kind` over `from..to` returns: of the
    /// kind, in the range, and not compacted (at or past the cut, or of a day still open at the
    /// head pass). The reader's position is checked apart.
    pub fn keeps(
        &self,
        record: &LogRecord,
        kind: Kind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> bool {
        let at = record.event.occurred_at.with_timezone(&Utc);
        record.event.body.is_metadata() == (kind == Kind::Meta)
            && from <= at
            && at < to
            && (record.offset >= self.cut || at >= self.horizon)
    }

    /// Fetches the slice and keeps the records [`keeps`](Self::keeps) accepts.
    pub async fn read(
        &self,
        store: &dyn ObjectStore,
        kind: Kind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<LogRecord>> {
        let mut records = segment::read_slice(store, &self.at).await?;
        records.retain(|r| self.keeps(r, kind, from, to));
        Ok(records)
    }
}

/// Every record of `kind` in `from..to` the slices hold (metadata: small), `concurrency`
/// slices at a time.
pub(super) async fn read_slices(
    store: &dyn ObjectStore,
    slices: Vec<SliceRef>,
    kind: Kind,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    concurrency: usize,
) -> Result<Vec<LogRecord>> {
    let read: Vec<Vec<LogRecord>> = futures::stream::iter(slices)
        .map(|slice| async move { slice.read(store, kind, from, to).await })
        .buffered(concurrency)
        .try_collect()
        .await?;
    Ok(read.into_iter().flatten().collect())
}

/// Whether every record a compacted object holds (all below `cuts`) is inside `position`.
pub(super) fn within(position: Option<&LogPosition>, cuts: &[Cut]) -> bool {
    let Some(position) = position else {
        return true;
    };
    cuts.iter().all(|c| {
        c.cut <= 0
            || position.partition(c.partition).is_some_and(|p| {
                c.epoch < p.epoch || (c.epoch == p.epoch && c.cut <= p.durable_offset)
            })
    })
}

/// The company's metadata from v2 over every topic: with one topic, as [`metadata`]; with
/// several, every change (no snapshot: the topics' compactions are independent).
#[allow(clippy::too_many_arguments)]
pub(super) async fn metadata_all(
    snapshots: &[Snapshot],
    store: &dyn ObjectStore,
    company_id: &str,
    until: DateTime<Utc>,
    snapshot_before: DateTime<Utc>,
    position: Option<&LogPosition>,
    snapshot_allowed: bool,
    concurrency: usize,
) -> Result<(Option<event_model::directory::Directory>, Vec<LogRecord>)> {
    let allowed = snapshot_allowed && snapshots.len() == 1;
    let mut base = None;
    let mut changes = Vec::new();
    for snapshot in snapshots {
        let (directory, more) = metadata(
            snapshot,
            store,
            company_id,
            until,
            snapshot_before,
            position,
            allowed,
            concurrency,
        )
        .await?;
        base = base.or(directory);
        changes.extend(more);
    }
    Ok((base, changes))
}

/// The company's metadata from v2: a directory snapshot (if one can be used) and the changes
/// after it up to `until`, inside `position`. With `snapshot_allowed` false (or none usable),
/// every change from the start. The snapshot is of a day before `snapshot_before`'s (so the
/// changes returned hold every change from `snapshot_before` on).
#[allow(clippy::too_many_arguments)]
pub(super) async fn metadata(
    snapshot: &Snapshot,
    store: &dyn ObjectStore,
    company_id: &str,
    until: DateTime<Utc>,
    snapshot_before: DateTime<Utc>,
    position: Option<&LogPosition>,
    snapshot_allowed: bool,
    concurrency: usize,
) -> Result<(Option<event_model::directory::Directory>, Vec<LogRecord>)> {
    let after = until + chrono::Duration::nanoseconds(1);
    let slices = snapshot
        .slices(
            store,
            company_id,
            DateTime::<Utc>::MIN_UTC,
            after,
            Kind::Meta,
            concurrency,
        )
        .await?;
    let late = read_slices(
        store,
        slices,
        Kind::Meta,
        DateTime::<Utc>::MIN_UTC,
        after,
        concurrency,
    )
    .await?;
    let horizon = snapshot.horizon();
    let mut by_day: BTreeMap<NaiveDate, Vec<String>> = BTreeMap::new();
    if let Some(head) = snapshot.head_ref() {
        for object in list_all(store, &keys::meta_days_prefix(company_id)).await? {
            if let Some(name) = keys::parse_part_key(&object.key)
                && name.seq <= head.seq
            {
                by_day.entry(name.day).or_default().push(object.key);
            }
        }
    }
    let until_day = until.date_naive();
    let before_day = snapshot_before.min(until).date_naive();
    // A snapshot must predate every change not folded into it: the day of `until` and the
    // earliest uncompacted change of a closed day.
    let earliest_late = late
        .iter()
        .map(|r| r.event.occurred_at.with_timezone(&Utc))
        .filter(|at| *at < horizon)
        .map(|at| at.date_naive())
        .min();
    let limit = earliest_late.map_or(before_day, |d| d.min(before_day));
    let head = snapshot.head_ref();
    let mut changes: Vec<LogRecord> = Vec::new();
    let mut base = None;
    let mut read_days: BTreeSet<NaiveDate> = BTreeSet::new();
    if let Some(head) = &head {
        // Newest day first: the first usable snapshot ends the walk.
        for (day, keys) in by_day.range(..=until_day).rev() {
            let candidates = view::candidates(keys.iter().map(String::as_str), head);
            let meta = view::read_meta_day(store, company_id, &candidates).await?;
            read_days.insert(*day);
            if snapshot_allowed
                && *day < limit
                && let Some(directory) = meta.snapshot
                && within(position, &meta.cuts)
            {
                base = Some(directory);
                break;
            }
            changes.extend(meta.changes);
        }
    }
    changes.extend(late);
    let changes = changes
        .into_iter()
        .filter(|r| {
            r.event.occurred_at.with_timezone(&Utc) <= until && position.is_none_or(|p| p.admits(r))
        })
        .collect();
    Ok((base, changes))
}
