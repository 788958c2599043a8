//! Log format version 1: object keys and the checksummed object encoding.
//!
//! ```text
//! log/v1/<company>/events/<YYYY-MM-DD>/<HH>/<topic>.<partition>.<first>-<last>.jsonl
//! log/v1/<company>/meta/<topic>.<partition>.<first>-<last>.jsonl
//! ```
//! `events` holds content (posts, notes, files) bucketed by the UTC hour of `occurred_at`, so a
//! range read lists and fetches only its own hours. `meta` holds people, conversation and
//! membership events, readable on their own whatever the range. `<first>-<last>` is the range
//! of source offsets the writer flushed (zero-padded so keys sort by offset): the same range
//! always yields the same keys and the same bytes, so a replay or a stale writer can only
//! rewrite identical objects.
//!
//! An object is JSON lines: a header line, then one record per line. The header's
//! `body_sha256` covers every byte after the header's newline.

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use event_model::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::{LogError, Result};

pub const FORMAT_NAME: &str = "cce-compliance-log";
pub const FORMAT_VERSION: u32 = 1;

/// Which of a company's two streams an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Events,
    Meta,
}

impl Stream {
    pub fn of(event: &Event) -> Self {
        if event.body.is_metadata() {
            Self::Meta
        } else {
            Self::Events
        }
    }
}

/// The span of one Kafka partition a writer flushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRange {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// One event as the log holds it.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The log epoch of its source position (`docs/log-format.md`); 0 for format version 1.
    pub epoch: u32,
    pub partition: i32,
    pub offset: i64,
    pub event: Event,
    /// The event's JSON as the log holds it, verbatim, unknown fields included. Kept as text:
    /// readers that need only the typed event never build a tree of it.
    pub raw: Box<RawValue>,
}

impl PartialEq for LogRecord {
    fn eq(&self, other: &Self) -> bool {
        (
            self.epoch,
            self.partition,
            self.offset,
            &self.event,
            self.raw.get(),
        ) == (
            other.epoch,
            other.partition,
            other.offset,
            &other.event,
            other.raw.get(),
        )
    }
}

impl LogRecord {
    /// The event's JSON as a tree, unknown fields included.
    pub fn raw_value(&self) -> Value {
        // The log's lines were checked against their checksum and parsed once already.
        serde_json::from_str(self.raw.get()).unwrap_or(Value::Null)
    }

    /// Where the record came from, for choosing among duplicates: the smallest wins.
    pub fn source_position(&self) -> (u32, i32, i64) {
        (self.epoch, self.partition, self.offset)
    }

    /// The log's total order: time, then `event_id`.
    pub fn sort_key(&self) -> (DateTime<Utc>, &str) {
        (
            self.event.occurred_at.with_timezone(&Utc),
            self.event.event_id.as_str(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub company_id: String,
    pub stream: Stream,
    /// For `events` objects: the UTC hour, `YYYY-MM-DDTHH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<String>,
    pub source: SourceRange,
    pub records: usize,
    pub body_sha256: String,
}

/// One line of an object's body, as written: the event by reference, never copied.
#[derive(Debug, Serialize)]
pub(crate) struct RecordLineOut<'a> {
    /// Written by compacted objects, whose records come from several epochs; segments and v1
    /// objects take it from their header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) epoch: Option<u32>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) event: &'a RawValue,
}

/// Appends a record as one line with its epoch (compacted objects, whose records come from
/// several epochs), the event's text verbatim.
pub fn write_record_line(body: &mut Vec<u8>, record: &LogRecord) -> serde_json::Result<()> {
    let line = RecordLineOut {
        epoch: Some(record.epoch),
        partition: record.partition,
        offset: record.offset,
        event: &record.raw,
    };
    serde_json::to_writer(&mut *body, &line)?;
    body.push(b'\n');
    Ok(())
}

/// A version 1 line, as written.
#[derive(Debug, Serialize)]
struct V1LineOut<'a> {
    partition: i32,
    offset: i64,
    event: &'a Value,
}

/// One line of an object's body, as read: the event's text borrowed from the body, parsed once
/// into the typed event and copied once as the raw text.
#[derive(Debug, Deserialize)]
struct RecordLineIn<'a> {
    #[serde(default)]
    epoch: Option<u32>,
    partition: i32,
    offset: i64,
    #[serde(borrow)]
    event: &'a RawValue,
}

pub fn company_prefix(company_id: &str) -> String {
    format!("log/v1/{company_id}/")
}

pub fn meta_prefix(company_id: &str) -> String {
    format!("{}meta/", company_prefix(company_id))
}

pub fn events_prefix(company_id: &str) -> String {
    format!("{}events/", company_prefix(company_id))
}

pub fn events_day_prefix(company_id: &str, day: NaiveDate) -> String {
    format!("{}{}/", events_prefix(company_id), day.format("%Y-%m-%d"))
}

fn source_name(source: &SourceRange) -> String {
    format!(
        "{}.{:05}.{:020}-{:020}.jsonl",
        source.topic, source.partition, source.first_offset, source.last_offset
    )
}

/// The hour bucket of an instant, as it appears in keys and headers: `YYYY-MM-DDTHH`.
pub fn hour_label(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H").to_string()
}

/// Truncates an instant to its UTC hour.
pub fn floor_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(at)
}

pub fn events_key(company_id: &str, hour: DateTime<Utc>, source: &SourceRange) -> String {
    format!(
        "{}{:02}/{}",
        events_day_prefix(company_id, hour.date_naive()),
        hour.hour(),
        source_name(source)
    )
}

pub fn meta_key(company_id: &str, source: &SourceRange) -> String {
    format!("{}{}", meta_prefix(company_id), source_name(source))
}

/// The hour (0–23) an `events` key belongs to, from its `<HH>/` segment.
pub fn hour_of_events_key(key: &str) -> Option<u32> {
    let mut segments = key.rsplit('/');
    segments.next()?; // file name
    segments.next()?.parse().ok().filter(|h| *h < 24)
}

/// Encodes one object. `records` must be in offset order; the result is a pure function of the
/// arguments.
pub fn encode(
    company_id: &str,
    stream: Stream,
    hour: Option<DateTime<Utc>>,
    source: &SourceRange,
    records: &[(i32, i64, &Value)],
) -> Result<Bytes> {
    let encode_error = |e: serde_json::Error| LogError::Encode {
        company_id: company_id.to_owned(),
        reason: e.to_string(),
    };
    let mut body = Vec::new();
    for (partition, offset, event) in records {
        let line = V1LineOut {
            partition: *partition,
            offset: *offset,
            event,
        };
        serde_json::to_writer(&mut body, &line).map_err(encode_error)?;
        body.push(b'\n');
    }
    let header = Header {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        company_id: company_id.to_owned(),
        stream,
        hour: hour.map(hour_label),
        source: source.clone(),
        records: records.len(),
        body_sha256: hex::encode(Sha256::digest(&body)),
    };
    let mut object = serde_json::to_vec(&header).map_err(encode_error)?;
    object.push(b'\n');
    object.extend_from_slice(&body);
    Ok(Bytes::from(object))
}

/// The fewest bytes a record line can have: its position and an event with an id, a type and
/// a time take well over this. Bounds what a header's record count may reserve.
const MIN_RECORD_LINE_BYTES: usize = 64;

/// Decodes record lines (`{"partition","offset","event"}`, optionally `"epoch"`); lines
/// without an epoch get `default_epoch`. `expected` (a header's count) only sizes the result,
/// and no larger than the body can hold: a corrupt count must fail the count check, not abort
/// the process on an allocation of petabytes (found by `fuzz/fuzz_targets/log_decoder.rs`).
pub(crate) fn decode_lines(
    key: &str,
    body: &[u8],
    default_epoch: u32,
    expected: usize,
) -> Result<Vec<LogRecord>> {
    let mut records = Vec::with_capacity(expected.min(body.len() / MIN_RECORD_LINE_BYTES + 1));
    for (index, line) in body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        records.push(decode_line(key, line, default_epoch, index)?);
    }
    Ok(records)
}

/// Decodes one record line (without its newline), the `index`-th of its object's body (for the
/// error); a line without an epoch gets `default_epoch`.
pub(crate) fn decode_line(
    key: &str,
    line: &[u8],
    default_epoch: u32,
    index: usize,
) -> Result<LogRecord> {
    let corrupt = |reason: String| LogError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let record: RecordLineIn =
        serde_json::from_slice(line).map_err(|e| corrupt(format!("record {index}: {e}")))?;
    let event: Event = serde_json::from_str(record.event.get())
        .map_err(|e| corrupt(format!("record {index} is not a valid event: {e}")))?;
    Ok(LogRecord {
        epoch: record.epoch.unwrap_or(default_epoch),
        partition: record.partition,
        offset: record.offset,
        event,
        raw: record.event.to_owned(),
    })
}

/// Decodes and verifies one object: its format, version, checksum and record count.
pub fn decode(key: &str, bytes: &[u8]) -> Result<(Header, Vec<LogRecord>)> {
    let corrupt = |reason: String| LogError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header: Header = serde_json::from_slice(&bytes[..newline])
        .map_err(|e| corrupt(format!("bad header: {e}")))?;
    if header.format != FORMAT_NAME || header.version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format {} version {} is not {FORMAT_NAME} version {FORMAT_VERSION}",
            header.format, header.version
        )));
    }
    let body = &bytes[newline + 1..];
    let actual = hex::encode(Sha256::digest(body));
    if actual != header.body_sha256 {
        return Err(corrupt(format!(
            "body checksum {actual} does not match the header's {}",
            header.body_sha256
        )));
    }
    let records = decode_lines(key, body, 0, header.records)?;
    if records.len() != header.records {
        return Err(corrupt(format!(
            "{} records, the header says {}",
            records.len(),
            header.records
        )));
    }
    Ok((header, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> SourceRange {
        SourceRange {
            topic: "chat-events".into(),
            partition: 3,
            first_offset: 100,
            last_offset: 199,
        }
    }

    fn post(id: &str) -> Value {
        json!({"event_id": id, "type": "post.created", "occurred_at": "2026-11-25T10:15:00Z",
               "conversation": {"id": "c", "kind": "team", "owner_company_id": "acme"},
               "post_id": "p", "author_id": "u", "text": "héllo 👋", "extra": {"b": 1, "a": 2}})
    }

    #[test]
    fn keys_sort_by_hour_and_offset_and_name_their_hour() {
        let hour: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let key = events_key("acme", hour, &source());
        assert_eq!(
            key,
            "log/v1/acme/events/2026-11-25/10/chat-events.00003.00000000000000000100-00000000000000000199.jsonl"
        );
        assert_eq!(hour_of_events_key(&key), Some(10));
        assert!(key.starts_with(&events_day_prefix("acme", hour.date_naive())));
    }

    #[test]
    fn encoding_is_deterministic_and_round_trips() {
        let (a, b) = (post("e1"), post("e2"));
        let records = [(3, 100, &a), (3, 150, &b)];
        let hour = Some("2026-11-25T10:00:00Z".parse().unwrap());
        let once = encode("acme", Stream::Events, hour, &source(), &records).unwrap();
        let twice = encode("acme", Stream::Events, hour, &source(), &records).unwrap();
        assert_eq!(once, twice);
        let (header, decoded) = decode("k", &once).unwrap();
        assert_eq!(header.records, 2);
        assert_eq!(header.hour.as_deref(), Some("2026-11-25T10"));
        assert_eq!(decoded[1].offset, 150);
        assert_eq!(decoded[0].raw_value(), a);
        assert_eq!(decoded[0].event.event_id, "e1");
    }

    #[test]
    fn record_lines_with_an_epoch_round_trip() {
        let a = post("e1");
        let object = encode("acme", Stream::Events, None, &source(), &[(3, 100, &a)]).unwrap();
        let (_, mut records) = decode("k", &object).unwrap();
        records[0].epoch = 4;
        let mut body = Vec::new();
        write_record_line(&mut body, &records[0]).unwrap();
        let back = decode_lines("k", &body, 1, 1).unwrap();
        assert_eq!(back, records);
    }

    /// An object whose header counts far more records than its body holds, checksum intact.
    fn with_record_count(object: &[u8], records: u64) -> Vec<u8> {
        let newline = object.iter().position(|b| *b == b'\n').unwrap();
        let mut header: Value = serde_json::from_slice(&object[..newline]).unwrap();
        header["records"] = records.into();
        let mut out = serde_json::to_vec(&header).unwrap();
        out.extend_from_slice(&object[newline..]);
        out
    }

    #[test]
    fn a_huge_record_count_is_corrupt_not_an_allocation() {
        let a = post("e1");
        let object = encode("acme", Stream::Events, None, &source(), &[(3, 100, &a)]).unwrap();
        // usize::MAX overflowed the reservation (a panic); 10^15 records asked the allocator
        // for 304 PB, which aborts the process.
        for records in [u64::MAX, 1_000_000_000_000_000] {
            let error = decode("log/v1/acme/x", &with_record_count(&object, records)).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains(&format!("1 records, the header says {records}")),
                "{error}"
            );
        }
    }

    #[test]
    fn the_log_reads_back_the_json_ingestion_kept_whatever_its_numbers() {
        // Found by fuzz/fuzz_targets/event_parser.rs: without serde_json's exact float parsing
        // (`float_roundtrip`, enabled in the workspace's Cargo.toml), this unknown field read
        // back from the log one unit in the last place off what ingestion kept, and moved again
        // on every parse and write (a replay or a compaction that re-serialises).
        let big = "24222222222222222222222222222222222222222222222222222222222222222281152";
        let text = serde_json::to_string(&post("e1")).unwrap().replacen(
            '{',
            &format!("{{\"big\": {big}, "),
            1,
        );
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        let limits = event_model::Limits::default();
        let (_, kept) = event_model::parse_event(text.as_bytes(), &limits, now).unwrap();
        let object = encode("acme", Stream::Events, None, &source(), &[(3, 100, &kept)]).unwrap();
        let (_, records) = decode("k", &object).unwrap();
        assert_eq!(records[0].raw_value(), kept, "{}", records[0].raw.get());
        let (_, replayed) =
            event_model::parse_event(records[0].raw.get().as_bytes(), &limits, now).unwrap();
        assert_eq!(replayed, kept);
    }

    #[test]
    fn a_flipped_byte_is_reported_not_skipped() {
        let a = post("e1");
        let mut object = encode("acme", Stream::Events, None, &source(), &[(3, 100, &a)])
            .unwrap()
            .to_vec();
        let last = object.len() - 3;
        object[last] ^= 0x01;
        let error = decode("log/v1/acme/x", &object).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
    }
}
