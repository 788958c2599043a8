//! Which compacted objects of a company-day hold its records, as of a head pass — the one rule
//! the reader and the compactor share.
//!
//! Candidates are the objects of passes up to the head (`seq <= head.seq`), newest first (ties:
//! the head's hash, then the smallest hash — the order of the design). A candidate counts only
//! when all its chunks are present. The first complete one is read; its header's `merged` names
//! the older objects it holds, which are skipped; any other complete candidate it does not
//! cover (left by a compactor that lost a race or was killed after writing it) is read too, and
//! the records are the union. Every object holds only records that are in the log, so a union
//! never adds a wrong record, and the covered set never misses one the head's chain holds.

use std::collections::{BTreeMap, BTreeSet};

use event_model::directory::Directory;
use futures::{StreamExt, TryStreamExt};
use storage::ObjectStore;

use crate::v2::keys;
use crate::v2::part::{self, PartHeader};
use crate::v2::pass::{Cut, PassRef};
use crate::{LogRecord, Result};

/// The objects of one pass for one company-day, by chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pass: PassRef,
    pub chunks: BTreeMap<u32, String>,
}

/// Groups the keys of one company-day (any order) into candidates up to `head`, in preference
/// order. Keys that are not compacted objects' names are ignored.
pub fn candidates<'a>(keys: impl IntoIterator<Item = &'a str>, head: &PassRef) -> Vec<Candidate> {
    let mut by_pass: BTreeMap<PassRef, BTreeMap<u32, String>> = BTreeMap::new();
    for key in keys {
        let Some(name) = keys::parse_part_key(key) else {
            continue;
        };
        if name.seq > head.seq {
            continue;
        }
        by_pass
            .entry(PassRef {
                seq: name.seq,
                hash: name.hash,
            })
            .or_default()
            .insert(name.chunk, key.to_owned());
    }
    let mut out: Vec<Candidate> = by_pass
        .into_iter()
        .map(|(pass, chunks)| Candidate { pass, chunks })
        .collect();
    out.sort_by(|a, b| {
        b.pass
            .seq
            .cmp(&a.pass.seq)
            .then_with(|| (b.pass.hash == head.hash).cmp(&(a.pass.hash == head.hash)))
            .then_with(|| a.pass.hash.cmp(&b.pass.hash))
    });
    out
}

/// The records of a company-day's content as its compacted objects hold them.
#[derive(Debug, Default)]
pub struct DayContent {
    /// The union of the objects read (may hold copies of one record: merge or settle them).
    pub records: Vec<LogRecord>,
    /// Every object these records stand for: the ones read and the ones they merged.
    pub covered: BTreeSet<PassRef>,
    /// The objects read (the others are covered by them, or incomplete).
    pub read: BTreeSet<PassRef>,
    /// Objects fetched (chunks), for request accounting.
    pub gets: u64,
}

/// Reads a company-day's content objects per the rule above.
pub async fn read_day(
    store: &dyn ObjectStore,
    company_id: &str,
    candidates: &[Candidate],
) -> Result<DayContent> {
    let mut content = DayContent::default();
    for candidate in candidates {
        if content.covered.contains(&candidate.pass) {
            continue;
        }
        let Some(first) = candidate.chunks.get(&0) else {
            continue;
        };
        let bytes = store.get(first).await?;
        content.gets += 1;
        let (header, records) = part::decode_part(first, &bytes, company_id)?;
        if (0..header.chunks).any(|c| !candidate.chunks.contains_key(&c)) {
            // Not all chunks are there: a pass killed while writing it. Never half a day.
            continue;
        }
        let rest: Vec<(PartHeader, Vec<LogRecord>)> =
            futures::stream::iter((1..header.chunks).map(|c| candidate.chunks[&c].clone()))
                .map(|key| async move {
                    let bytes = store.get(&key).await?;
                    part::decode_part(&key, &bytes, company_id)
                })
                .buffered(8)
                .try_collect()
                .await?;
        content.gets += rest.len() as u64;
        for (other, _) in &rest {
            if other.pass != header.pass || other.chunks != header.chunks {
                return Err(crate::LogError::Corrupt {
                    key: first.clone(),
                    reason: "its chunks disagree on their pass".into(),
                });
            }
        }
        content.covered.insert(candidate.pass.clone());
        content.read.insert(candidate.pass.clone());
        content.covered.extend(header.merged.iter().cloned());
        content.records.extend(records);
        content
            .records
            .extend(rest.into_iter().flat_map(|(_, records)| records));
    }
    Ok(content)
}

/// A company's metadata day as its compacted objects hold it.
#[derive(Debug, Default)]
pub struct MetaDay {
    /// The directory as of the end of the day, when exactly one object stands for the day (with
    /// several, the snapshots may disagree and none is trusted).
    pub snapshot: Option<Directory>,
    /// The cuts of the object the snapshot comes from.
    pub cuts: Vec<Cut>,
    /// The day's changes, the union of the objects read.
    pub changes: Vec<LogRecord>,
    pub covered: BTreeSet<PassRef>,
    /// The objects read (the others are covered by them).
    pub read: BTreeSet<PassRef>,
    /// The highest pass among the objects read.
    pub seq: u64,
}

/// Reads a company's metadata day per the rule above.
pub async fn read_meta_day(
    store: &dyn ObjectStore,
    company_id: &str,
    candidates: &[Candidate],
) -> Result<MetaDay> {
    let mut day = MetaDay::default();
    let mut read = 0;
    for candidate in candidates {
        if day.covered.contains(&candidate.pass) {
            continue;
        }
        let Some(key) = candidate.chunks.get(&0) else {
            continue;
        };
        let bytes = store.get(key).await?;
        let (header, snapshot, changes) = part::decode_meta_day(key, &bytes, company_id)?;
        read += 1;
        day.seq = day.seq.max(header.pass.seq);
        day.covered.insert(candidate.pass.clone());
        day.read.insert(candidate.pass.clone());
        day.covered.extend(header.merged.iter().cloned());
        if read == 1 {
            day.snapshot = Some(snapshot);
            day.cuts = header.cuts;
        } else {
            day.snapshot = None;
        }
        day.changes.extend(changes);
    }
    Ok(day)
}

/// The keys of one partition's segments (in one epoch) that start at or after `from` and
/// before `before`, in offset order. Because a writer never writes below a published durable
/// offset, these hold every record at or after `from` (`docs/log-format.md`).
pub async fn segments_between(
    store: &dyn ObjectStore,
    topic: &str,
    partition: i32,
    epoch: u32,
    from: i64,
    before: i64,
) -> Result<Vec<String>> {
    Ok(
        segment_objects_between(store, topic, partition, epoch, from, before)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect(),
    )
}

/// [`segments_between`], with the objects' sizes.
pub async fn segment_objects_between(
    store: &dyn ObjectStore,
    topic: &str,
    partition: i32,
    epoch: u32,
    from: i64,
    before: i64,
) -> Result<Vec<storage::ObjectMeta>> {
    let prefix = keys::segments_prefix(topic, partition, epoch);
    let mut start_after = keys::segments_from(topic, partition, epoch, from);
    let mut out = Vec::new();
    loop {
        let page = store.list_page(&prefix, Some(&start_after), 1000).await?;
        for object in page.objects {
            match keys::segment_range(&object.key) {
                Some((first, _)) if first >= before => return Ok(out),
                Some((first, _)) if first >= from => out.push(object),
                _ => {}
            }
        }
        match page.next_start_after {
            Some(next) => start_after = next,
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn candidates_prefer_newest_then_the_heads_hash_then_the_smallest() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let keys = [
            keys::day_part_key("a", day, 5, "bbbbbbbbbbbbbbbb", 0),
            keys::day_part_key("a", day, 5, "aaaaaaaaaaaaaaaa", 0),
            keys::day_part_key("a", day, 5, "cccccccccccccccc", 0),
            keys::day_part_key("a", day, 5, "cccccccccccccccc", 1),
            keys::day_part_key("a", day, 4, "0000000000000000", 0),
            keys::day_part_key("a", day, 6, "0000000000000000", 0),
        ];
        let head = PassRef {
            seq: 5,
            hash: "cccccccccccccccc".into(),
        };
        let got: Vec<(u64, String, usize)> = candidates(keys.iter().map(String::as_str), &head)
            .into_iter()
            .map(|c| (c.pass.seq, c.pass.hash, c.chunks.len()))
            .collect();
        assert_eq!(
            got,
            [
                (5, "cccccccccccccccc".to_owned(), 2),
                (5, "aaaaaaaaaaaaaaaa".to_owned(), 1),
                (5, "bbbbbbbbbbbbbbbb".to_owned(), 1),
                (4, "0000000000000000".to_owned(), 1),
            ]
        );
    }

    #[tokio::test]
    async fn a_part_missing_a_chunk_is_skipped_for_the_previous_one() {
        use crate::v2::part::{PartSpec, encode_part, tests::record};
        let store = storage::MemoryStore::new();
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let old = PassRef {
            seq: 1,
            hash: "1111111111111111".into(),
        };
        let new = PassRef {
            seq: 2,
            hash: "2222222222222222".into(),
        };
        let records: Vec<LogRecord> = (0..6)
            .map(|i| record("acme", &format!("e{i}"), "2026-11-25T10:00:00Z", 0, i))
            .collect();
        let none = BTreeSet::new();
        let covers_old = BTreeSet::from([old.clone()]);
        let spec = |pass, merged| PartSpec {
            company_id: "acme",
            day,
            pass,
            cuts: &[],
            merged,
        };
        let old_chunks = encode_part(&spec(&old, &none), &records[..3], 200).unwrap();
        let new_chunks = encode_part(&spec(&new, &covers_old), &records, 200).unwrap();
        assert!(old_chunks.len() > 1 && new_chunks.len() > 2);
        for (key, bytes) in old_chunks.iter().chain(&new_chunks[..2]) {
            store.put(key, bytes.clone()).await.unwrap();
        }
        let keys: Vec<String> = storage::list_all(&store, &keys::day_prefix("acme", day))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        let (store, head) = (&store, &new);
        let read = |keys: Vec<String>| async move {
            let candidates = candidates(keys.iter().map(String::as_str), head);
            read_day(store, "acme", &candidates).await.unwrap()
        };
        let content = read(keys.clone()).await;
        assert_eq!(content.records, records[..3]);
        assert_eq!(content.read, BTreeSet::from([old.clone()]));
        // Once every chunk is there, the newer part stands for both.
        let mut keys = keys;
        for (key, bytes) in &new_chunks[2..] {
            store.put(key, bytes.clone()).await.unwrap();
            keys.push(key.clone());
        }
        let content = read(keys).await;
        assert_eq!(content.records, records);
        assert_eq!(content.read, BTreeSet::from([new.clone()]));
    }
}
