//! Garbage collection: segments are deleted once a pass compacted them and the retention
//! period has passed, so a reader that started at an older head still finds what it needs.

use chrono::{DateTime, Utc};
use storage::list_all;

use super::Compactor;
use crate::Result;
use crate::v2::keys;
use crate::v2::pass::PassRecord;
use crate::v2::view;

/// Deletes the segments every record of which is below the cut and the `scan_from` of a pass
/// older than the retention period (and of the head); returns how many it deleted.
///
/// A pass's age is judged from its horizon: passes with horizon H are written between H + grace
/// and H + grace + 1 day while the time watermark advances, so a pass whose horizon is older
/// than `now - retention - grace - 1 day` was written at least `retention` ago.
pub(super) async fn collect(compactor: &Compactor, now: DateTime<Utc>) -> Result<u64> {
    let store = compactor.store.as_ref();
    let config = &compactor.config;
    let Some(head) = PassRecord::head(store, &config.topic).await? else {
        return Ok(0);
    };
    let margin = chrono::Duration::from_std(config.retention + config.grace)
        .unwrap_or(chrono::Duration::MAX)
        + chrono::Duration::days(1);
    let Some(limit) = now.checked_sub_signed(margin) else {
        return Ok(0);
    };
    // Newest first; horizons only go back along the list, so search for the first old pass.
    let keys: Vec<String> = list_all(store, &keys::passes_prefix(&config.topic))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
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
    tracing::info!(topic = %config.topic, pass = old.seq, deleted, "compacted segments past retention deleted");
    Ok(deleted)
}
