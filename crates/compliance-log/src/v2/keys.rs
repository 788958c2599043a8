//! Object keys of format version 2 (`docs/log-format.md`). Every segment of a key is either a
//! validated identifier (topic names are Kafka-legal, company ids are validated to the same
//! alphabet on ingestion), a zero-padded number or a date, so no key segment comes from free
//! text, and keys sort in the order a reader wants them.

use chrono::NaiveDate;

use crate::format::SourceRange;

pub const ROOT: &str = "log/v2/";

/// `inv_seq`: passes and compacted parts sort newest first, so one `LIST` with `max_keys = 1`
/// finds the newest.
pub fn inverted(seq: u64) -> String {
    format!("{:020}", u64::MAX - seq)
}

/// The sequence number back from [`inverted`].
pub fn uninverted(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().map(|inv| u64::MAX - inv)
}

pub fn epochs_prefix(topic: &str, partition: i32) -> String {
    format!("{ROOT}epochs/{topic}/{partition:05}/")
}

pub fn epoch_key(topic: &str, partition: i32, epoch: u32) -> String {
    format!("{}{epoch:06}.json", epochs_prefix(topic, partition))
}

/// The epoch an epoch marker's key names.
pub fn epoch_of_key(key: &str) -> Option<u32> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// Every segment of one partition in one epoch, in offset order.
pub fn segments_prefix(topic: &str, partition: i32, epoch: u32) -> String {
    format!("{ROOT}segments/{topic}/{partition:05}/{epoch:06}/")
}

pub fn segment_key(epoch: u32, source: &SourceRange) -> String {
    format!(
        "{}{:020}-{:020}.seg",
        segments_prefix(&source.topic, source.partition, epoch),
        source.first_offset,
        source.last_offset
    )
}

/// `start_after` for a `LIST` of the segments that start at `offset` or later. Because a writer
/// never writes a record below the partition's published durable offset, a segment starting
/// before a durable offset holds nothing at or past it that a later segment does not.
pub fn segments_from(topic: &str, partition: i32, epoch: u32, offset: i64) -> String {
    // "<first:020>-…" sorts after "<first:020>" and "<first-1:020>-…" before it.
    format!(
        "{}{:020}",
        segments_prefix(topic, partition, epoch),
        offset.max(0)
    )
}

/// (first, last) offsets from a segment key.
pub fn segment_range(key: &str) -> Option<(i64, i64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".seg")?;
    let (first, last) = name.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

pub fn watermarks_prefix(topic: &str) -> String {
    format!("{ROOT}watermarks/{topic}/")
}

pub fn watermark_key(topic: &str, partition: i32) -> String {
    format!("{}{partition:05}.json", watermarks_prefix(topic))
}

pub fn passes_prefix(topic: &str) -> String {
    format!("{ROOT}compaction/{topic}/passes/")
}

pub fn pass_key(topic: &str, seq: u64, hash: &str) -> String {
    format!("{}{}-{hash}.json", passes_prefix(topic), inverted(seq))
}

pub fn company_prefix(company_id: &str) -> String {
    format!("{ROOT}companies/{company_id}/")
}

/// Every compacted content part of a company, by day then newest pass first.
pub fn days_prefix(company_id: &str) -> String {
    format!("{}days/", company_prefix(company_id))
}

pub fn day_prefix(company_id: &str, day: NaiveDate) -> String {
    format!("{}{}/", days_prefix(company_id), day.format("%Y-%m-%d"))
}

pub fn day_part_key(company_id: &str, day: NaiveDate, seq: u64, hash: &str, chunk: u32) -> String {
    format!(
        "{}{}-{hash}.{chunk:04}.jsonl",
        day_prefix(company_id, day),
        inverted(seq)
    )
}

/// Every compacted metadata day of a company, by day then newest pass first.
pub fn meta_days_prefix(company_id: &str) -> String {
    format!("{}meta/", company_prefix(company_id))
}

pub fn meta_day_prefix(company_id: &str, day: NaiveDate) -> String {
    format!(
        "{}{}/",
        meta_days_prefix(company_id),
        day.format("%Y-%m-%d")
    )
}

pub fn meta_day_key(company_id: &str, day: NaiveDate, seq: u64, hash: &str) -> String {
    format!(
        "{}{}-{hash}.json",
        meta_day_prefix(company_id, day),
        inverted(seq)
    )
}

/// A compacted object's name, parsed: which day, which pass (seq, hash), which chunk (0 for
/// metadata days).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartName {
    pub day: NaiveDate,
    pub seq: u64,
    pub hash: String,
    pub chunk: u32,
}

/// Parses `…/<YYYY-MM-DD>/<inv_seq>-<hash>.<chunk>.jsonl` or `…/<YYYY-MM-DD>/<inv_seq>-<hash>.json`.
pub fn parse_part_key(key: &str) -> Option<PartName> {
    let mut segments = key.rsplit('/');
    let name = segments.next()?;
    let day = NaiveDate::parse_from_str(segments.next()?, "%Y-%m-%d").ok()?;
    let (pass, rest) = name.split_once('.')?;
    let (inv, hash) = pass.split_once('-')?;
    let chunk = match rest {
        "json" => 0,
        _ => rest.strip_suffix(".jsonl")?.parse().ok()?,
    };
    Some(PartName {
        day,
        seq: uninverted(inv)?,
        hash: hash.to_owned(),
        chunk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(first: i64, last: i64) -> SourceRange {
        SourceRange {
            topic: "chat-events".into(),
            partition: 3,
            first_offset: first,
            last_offset: last,
        }
    }

    #[test]
    fn segment_keys_sort_by_offset_and_start_after_finds_later_segments() {
        let early = segment_key(1, &source(90, 99));
        let at = segment_key(1, &source(100, 150));
        let later = segment_key(1, &source(151, 160));
        assert_eq!(
            at,
            "log/v2/segments/chat-events/00003/000001/00000000000000000100-00000000000000000150.seg"
        );
        let from = segments_from("chat-events", 3, 1, 100);
        assert!(early.as_str() < from.as_str());
        assert!(at.as_str() > from.as_str() && later.as_str() > at.as_str());
        assert_eq!(segment_range(&at), Some((100, 150)));
    }

    #[test]
    fn newest_pass_lists_first_and_part_names_round_trip() {
        assert!(pass_key("t", 8, "aa") < pass_key("t", 7, "aa"));
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let key = day_part_key("acme", day, 7, "0123456789abcdef", 2);
        assert_eq!(
            parse_part_key(&key),
            Some(PartName {
                day,
                seq: 7,
                hash: "0123456789abcdef".into(),
                chunk: 2
            })
        );
        let meta = meta_day_key("acme", day, 7, "0123456789abcdef");
        assert_eq!(
            parse_part_key(&meta).map(|p| (p.seq, p.chunk)),
            Some((7, 0))
        );
        assert_eq!(epoch_of_key(&epoch_key("t", 0, 12)), Some(12));
    }
}
