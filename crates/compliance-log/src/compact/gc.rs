//! Garbage collection: segments are deleted once a pass compacted them and the retention
//! period has passed, and compacted objects once a part of a pass that old covers them (or,
//! incomplete, they never will be read), so a reader that started at an older head still finds
//! what it needs.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use storage::ObjectStore;

use super::Compactor;
use crate::Result;
use crate::v2::keys;
use crate::v2::pass::{PassRecord, PassRef};
use crate::v2::view;

/// Deletes the segments every record of which is below the cut and the `scan_from` of a pass
/// older than the retention period (and of the head); returns how many it deleted.
///
/// A pass's age is judged from its horizon: passes with horizon H are written between H + grace
/// and H + grace + 1 day while the time watermark advances, so a pass whose horizon is older
/// than `now - retention - grace - 1 day` was written at least `retention` ago. That holds
/// only while the horizon advances: when it is stuck (one partition's time watermark frozen),
/// passes keep coming with an old horizon, and one written a moment ago would look old, so its
/// superseded parts would go while a reader opened at the previous head still needs them.
/// Nothing is collected then: only while the head's horizon is younger than `now - retention`.
pub(super) async fn collect(compactor: &Compactor, now: DateTime<Utc>) -> Result<u64> {
    let store = compactor.store.as_ref();
    let config = &compactor.config;
    let Some(head) = PassRecord::head(store, &config.topic).await? else {
        return Ok(0);
    };
    let retention = chrono::Duration::from_std(config.retention).unwrap_or(chrono::Duration::MAX);
    let stuck_before = now.checked_sub_signed(retention);
    if stuck_before.is_none_or(|limit| head.horizon <= limit) {
        tracing::warn!(
            topic = %config.topic,
            head = head.seq,
            horizon = %head.horizon,
            retention_secs = config.retention.as_secs(),
            "garbage collection skipped: the head pass's horizon is older than the retention \
             period (a time watermark is stuck?), so the passes' ages are unknown"
        );
        return Ok(0);
    }
    let margin = chrono::Duration::from_std(config.retention + config.grace)
        .unwrap_or(chrono::Duration::MAX)
        + chrono::Duration::days(1);
    let Some(limit) = now.checked_sub_signed(margin) else {
        return Ok(0);
    };
    // Newest first; horizons only go back along the list. Pages are read from the newest until
    // one ends with an old pass, so the cost follows the passes written within the retention
    // window, not every pass ever written; the first old pass is then found by bisection.
    let prefix = keys::passes_prefix(&config.topic);
    let mut keys: Vec<String> = Vec::new();
    let mut start_after: Option<String> = None;
    loop {
        let page = store
            .list_page(&prefix, start_after.as_deref(), 1000)
            .await?;
        keys.extend(page.objects.into_iter().map(|o| o.key));
        let Some(last) = keys.last() else {
            break;
        };
        if PassRecord::decode(last, &store.get(last).await?)?.horizon <= limit {
            break;
        }
        match page.next_start_after {
            Some(next) => start_after = Some(next),
            None => break,
        }
    }
    let (mut low, mut high) = (0, keys.len());
    let mut old: Option<PassRecord> = None;
    while low < high {
        let middle = (low + high) / 2;
        let bytes = store.get(&keys[middle]).await?;
        let pass = PassRecord::decode(&keys[middle], &bytes)?;
        if pass.horizon <= limit {
            high = middle;
            old = Some(pass);
        } else {
            low = middle + 1;
        }
    }
    let Some(old) = old else {
        return Ok(0);
    };
    let mut deleted = 0;
    for p in &old.partitions {
        let mut below = p.cut.min(p.scan_from);
        if let Some(now) = head.partition(p.partition, p.epoch) {
            below = below.min(now.cut).min(now.scan_from);
        }
        let segments =
            view::segments_between(store, &config.topic, p.partition, p.epoch, 0, below).await?;
        for key in segments {
            if keys::segment_range(&key).is_some_and(|(_, last)| last < below) {
                store.delete(&key).await?;
                deleted += 1;
            }
        }
    }
    let parts = collect_parts(store, &head.reference(), old.seq).await?;
    tracing::info!(topic = %config.topic, pass = old.seq, segments = deleted, parts, "compacted objects past retention deleted");
    Ok(deleted + parts)
}

/// Deletes the compacted objects (all companies) that an object of a pass no newer than
/// `old_seq` covers, and incomplete ones of such passes. Walks the keys in order, one
/// company-day at a time, and reads only company-days with more than one candidate.
async fn collect_parts(store: &dyn ObjectStore, head: &PassRef, old_seq: u64) -> Result<u64> {
    let prefix = format!("{}companies/", keys::ROOT);
    let mut start_after: Option<String> = None;
    let mut group: (String, Vec<String>) = (String::new(), Vec::new());
    let mut deleted = 0;
    loop {
        let page = store
            .list_page(&prefix, start_after.as_deref(), 1000)
            .await?;
        for object in page.objects {
            let dir = object
                .key
                .rsplit_once('/')
                .map_or(String::new(), |(d, _)| d.to_owned());
            if dir != group.0 {
                let done = std::mem::replace(&mut group, (dir, Vec::new()));
                deleted += collect_day(store, head, old_seq, &prefix, done).await?;
            }
            group.1.push(object.key);
        }
        match page.next_start_after {
            Some(next) => start_after = Some(next),
            None => break,
        }
    }
    deleted += collect_day(store, head, old_seq, &prefix, group).await?;
    Ok(deleted)
}

/// One company-day's directory `…/companies/<company>/(days|meta)/<day>` and its keys.
async fn collect_day(
    store: &dyn ObjectStore,
    head: &PassRef,
    old_seq: u64,
    prefix: &str,
    (dir, keys): (String, Vec<String>),
) -> Result<u64> {
    let candidates = view::candidates(keys.iter().map(String::as_str), head);
    if candidates.len() < 2 {
        return Ok(0);
    }
    let Some((company, kind)) = dir
        .strip_prefix(prefix)
        .and_then(|rest| rest.split_once('/'))
        .map(|(company, rest)| (company, rest.split('/').next().unwrap_or_default()))
    else {
        return Ok(0);
    };
    let (read, covered): (BTreeSet<PassRef>, BTreeSet<PassRef>) = match kind {
        "days" => {
            let content = view::read_day(store, company, &candidates).await?;
            (content.read, content.covered)
        }
        "meta" => {
            let day = view::read_meta_day(store, company, &candidates).await?;
            (day.read, day.covered)
        }
        _ => return Ok(0),
    };
    // Only what objects of old passes stand for: a reader at any head since holds them too.
    if read.iter().any(|r| r.seq > old_seq) {
        return Ok(0);
    }
    let mut deleted = 0;
    for candidate in &candidates {
        let superseded = covered.contains(&candidate.pass) && !read.contains(&candidate.pass);
        let incomplete = !covered.contains(&candidate.pass)
            && candidate.pass.seq < head.seq
            && candidate.pass.seq <= old_seq;
        if superseded || incomplete {
            for key in candidate.chunks.values() {
                store.delete(key).await?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}
