//! A segment: everything one flush of one partition wrote, for every company it touched, in one
//! object — so a flush costs one PUT however many companies chat at once.
//!
//! ```text
//! CCE-LOG-SEGMENT v2 000000001234\n      32-byte preamble: the header's length, '\n' included
//! {"format":…,"kind":"segment","epoch":1,"source":{…},"companies":[{"company_id":"acme",
//!  "start":0,"len":812,"records":3,"meta_records":1,"min_time":…,"max_time":…,"sha256":…},…]}\n
//! <body: the companies' slices, in company order; a slice is record lines in offset order>
//! ```
//! A reader fetches the preamble and header with one ranged GET ([`HEADER_PROBE`] bytes, a
//! second GET when the header is longer) and then only the slices it wants; each slice carries
//! its own checksum, so a ranged read is verified without the rest of the object.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use event_model::route;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use storage::ObjectStore;

use crate::format::{FORMAT_NAME, SourceRange, decode_lines};
use crate::v2::isolation;
use crate::writer::PendingRecord;
use crate::{LogError, LogRecord, Result};

pub const FORMAT_VERSION: u32 = 2;
const PREAMBLE_TAG: &str = "CCE-LOG-SEGMENT v2 ";
/// The preamble: the tag, the header's length in 12 digits, a newline.
pub const PREAMBLE_LEN: usize = 32;
/// How much of a segment the first read of its header fetches.
pub const HEADER_PROBE: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub format: String,
    pub version: u32,
    pub kind: String,
    pub epoch: u32,
    pub source: SourceRange,
    /// Record lines in the body (an event routed to two companies counts twice).
    pub records: usize,
    pub body_bytes: u64,
    pub companies: Vec<CompanySlice>,
}

/// Where one company's records are in a segment's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompanySlice {
    pub company_id: String,
    /// Offset in the body (the body starts right after the header).
    pub start: u64,
    pub len: u64,
    pub records: usize,
    /// How many of them are metadata (people, conversations, membership).
    pub meta_records: usize,
    /// The earliest and latest `occurred_at` among them, so a reader skips slices outside
    /// its range without fetching them.
    pub min_time: DateTime<Utc>,
    pub max_time: DateTime<Utc>,
    pub sha256: String,
}

impl CompanySlice {
    /// Whether the slice may hold a record with `from <= occurred_at < to`.
    pub fn overlaps(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.min_time < to && self.max_time >= from
    }
}

impl SegmentHeader {
    pub fn slice(&self, company_id: &str) -> Option<&CompanySlice> {
        self.companies
            .binary_search_by(|c| c.company_id.as_str().cmp(company_id))
            .ok()
            .map(|i| &self.companies[i])
    }
}

/// Records by company, in company order.
pub type ByCompany = Vec<(String, Vec<LogRecord>)>;

/// A segment's header and where its body starts in the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub key: String,
    pub header: SegmentHeader,
    pub body_start: u64,
}

/// One record line as a segment writes it: the event by reference.
#[derive(Debug, Serialize)]
struct LineOut<'a> {
    partition: i32,
    offset: i64,
    event: &'a Value,
}

/// Encodes the segment of one flush. `records` must be in offset order; each goes to the slice
/// of every company it routes to. The result is a pure function of the arguments, so a replay of
/// the same range writes the same bytes under the same key.
pub fn encode(
    epoch: u32,
    source: &SourceRange,
    records: &[PendingRecord],
) -> Result<(Bytes, SegmentHeader)> {
    let mut by_company: BTreeMap<String, Vec<&PendingRecord>> = BTreeMap::new();
    for record in records {
        for company in route(&record.event) {
            by_company.entry(company).or_default().push(record);
        }
    }
    let mut body = Vec::new();
    let mut companies = Vec::with_capacity(by_company.len());
    let mut total = 0;
    for (company_id, members) in by_company {
        let start = body.len();
        let encode_error = |e: serde_json::Error| LogError::Encode {
            company_id: company_id.clone(),
            reason: e.to_string(),
        };
        let (mut min_time, mut max_time) = (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC);
        for record in &members {
            let line = LineOut {
                partition: source.partition,
                offset: record.offset,
                event: &record.raw,
            };
            serde_json::to_writer(&mut body, &line).map_err(encode_error)?;
            body.push(b'\n');
            let at = record.event.occurred_at.with_timezone(&Utc);
            min_time = min_time.min(at);
            max_time = max_time.max(at);
        }
        total += members.len();
        companies.push(CompanySlice {
            start: start as u64,
            len: (body.len() - start) as u64,
            records: members.len(),
            meta_records: members
                .iter()
                .filter(|r| r.event.body.is_metadata())
                .count(),
            min_time,
            max_time,
            sha256: hex::encode(Sha256::digest(&body[start..])),
            company_id,
        });
    }
    let header = SegmentHeader {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        kind: "segment".to_owned(),
        epoch,
        source: source.clone(),
        records: total,
        body_bytes: body.len() as u64,
        companies,
    };
    let mut header_line = serde_json::to_vec(&header).map_err(|e| LogError::Encode {
        company_id: String::new(),
        reason: e.to_string(),
    })?;
    header_line.push(b'\n');
    let mut object = Vec::with_capacity(PREAMBLE_LEN + header_line.len() + body.len());
    object.extend_from_slice(format!("{PREAMBLE_TAG}{:012}\n", header_line.len()).as_bytes());
    object.extend_from_slice(&header_line);
    object.extend_from_slice(&body);
    Ok((Bytes::from(object), header))
}

fn corrupt(key: &str, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The header's length from the preamble.
fn header_len(key: &str, bytes: &[u8]) -> Result<usize> {
    let preamble = bytes
        .get(..PREAMBLE_LEN)
        .ok_or_else(|| corrupt(key, "shorter than a segment preamble"))?;
    let text = std::str::from_utf8(preamble).map_err(|_| corrupt(key, "preamble is not text"))?;
    text.strip_prefix(PREAMBLE_TAG)
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|digits| digits.parse::<usize>().ok())
        .ok_or_else(|| corrupt(key, format!("not a version 2 segment preamble: {text:?}")))
}

/// Parses and checks a header: format, version, kind, and slices that tile the body.
fn parse_header(key: &str, line: &[u8]) -> Result<SegmentHeader> {
    let header: SegmentHeader =
        serde_json::from_slice(line).map_err(|e| corrupt(key, format!("bad header: {e}")))?;
    if header.format != FORMAT_NAME || header.version != FORMAT_VERSION || header.kind != "segment"
    {
        return Err(corrupt(
            key,
            format!(
                "format {} version {} kind {} is not a {FORMAT_NAME} version {FORMAT_VERSION} segment",
                header.format, header.version, header.kind
            ),
        ));
    }
    // Checked sums: a corrupt header's lengths or counts must not wrap around into a tiling
    // that passes, and then slice out of bounds (found by `fuzz/fuzz_targets/log_decoder.rs`).
    let mut next: u64 = 0;
    let mut records: usize = 0;
    for slice in &header.companies {
        if slice.start != next {
            return Err(corrupt(
                key,
                format!(
                    "slice of {} does not start where the previous ends",
                    slice.company_id
                ),
            ));
        }
        let (Some(end), Some(sum)) = (
            slice.start.checked_add(slice.len),
            records.checked_add(slice.records),
        ) else {
            return Err(corrupt(
                key,
                format!("slice of {} overflows the body", slice.company_id),
            ));
        };
        (next, records) = (end, sum);
    }
    if next != header.body_bytes || header.records != records {
        return Err(corrupt(key, "slices do not add up to the body"));
    }
    if header
        .companies
        .windows(2)
        .any(|w| w[0].company_id >= w[1].company_id)
    {
        return Err(corrupt(key, "companies are not in order"));
    }
    Ok(header)
}

/// Reads a segment's header with one ranged GET (two when the header is longer than
/// [`HEADER_PROBE`]).
pub async fn read_header(store: &dyn ObjectStore, key: &str) -> Result<Located> {
    let probe = store.get_range(key, 0, HEADER_PROBE).await?;
    let len = header_len(key, &probe)?;
    let end = PREAMBLE_LEN + len;
    let line = if end <= probe.len() {
        probe.slice(PREAMBLE_LEN..end)
    } else {
        store
            .get_range(key, PREAMBLE_LEN as u64, end as u64)
            .await?
    };
    if line.len() != len {
        return Err(corrupt(key, "the header is cut short"));
    }
    Ok(Located {
        key: key.to_owned(),
        header: parse_header(key, &line)?,
        body_start: end as u64,
    })
}

/// Verifies and decodes one slice's bytes, of a segment of `epoch` written from `source`.
fn decode_slice(
    key: &str,
    epoch: u32,
    source: &SourceRange,
    slice: &CompanySlice,
    bytes: &[u8],
) -> Result<Vec<LogRecord>> {
    if bytes.len() as u64 != slice.len {
        return Err(corrupt(
            key,
            format!("the slice of {} is cut short", slice.company_id),
        ));
    }
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != slice.sha256 {
        return Err(corrupt(
            key,
            format!(
                "checksum {actual} of the slice of {} does not match the header's {}",
                slice.company_id, slice.sha256
            ),
        ));
    }
    let records = decode_lines(key, bytes, epoch, slice.records)?;
    if records.len() != slice.records {
        return Err(corrupt(
            key,
            format!(
                "{} records in the slice of {}, the header says {}",
                records.len(),
                slice.company_id,
                slice.records
            ),
        ));
    }
    if records.iter().any(|r| {
        r.partition != source.partition
            || r.offset < source.first_offset
            || r.offset > source.last_offset
    }) {
        return Err(corrupt(
            key,
            "a record lies outside the segment's source range",
        ));
    }
    isolation::admit(key, &slice.company_id, &slice.company_id, records)
}

/// Where one company's slice is in a segment: all a reader keeps of the segment's header (which
/// may list thousands of companies) between reading the header and fetching the slice.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceLocation {
    pub key: String,
    pub epoch: u32,
    pub source: SourceRange,
    /// Where the body starts in the object.
    pub body_start: u64,
    pub slice: CompanySlice,
}

impl Located {
    /// Where `company_id`'s slice is, if the segment has one.
    pub fn locate(&self, company_id: &str) -> Option<SliceLocation> {
        Some(SliceLocation {
            key: self.key.clone(),
            epoch: self.header.epoch,
            source: self.header.source.clone(),
            body_start: self.body_start,
            slice: self.header.slice(company_id)?.clone(),
        })
    }
}

/// The records of one slice, with one ranged GET of its bytes, verified.
pub async fn read_slice(store: &dyn ObjectStore, at: &SliceLocation) -> Result<Vec<LogRecord>> {
    let start = at.body_start + at.slice.start;
    let bytes = store
        .get_range(&at.key, start, start + at.slice.len)
        .await?;
    decode_slice(&at.key, at.epoch, &at.source, &at.slice, &bytes)
}

/// The records of `company_id` in a segment (none when it has no slice), with one ranged GET.
pub async fn read_company(
    store: &dyn ObjectStore,
    located: &Located,
    company_id: &str,
) -> Result<Vec<LogRecord>> {
    match located.locate(company_id) {
        Some(at) => read_slice(store, &at).await,
        None => Ok(Vec::new()),
    }
}

/// The records of the companies in `first..=last` (a contiguous run of slices, as a compactor
/// plans its shards), with one ranged GET; by company.
pub async fn read_companies(
    store: &dyn ObjectStore,
    located: &Located,
    first: &str,
    last: &str,
) -> Result<ByCompany> {
    let slices: Vec<&CompanySlice> = located
        .header
        .companies
        .iter()
        .filter(|c| c.company_id.as_str() >= first && c.company_id.as_str() <= last)
        .collect();
    let (Some(head), Some(tail)) = (slices.first(), slices.last()) else {
        return Ok(Vec::new());
    };
    let (from, to) = (head.start, tail.start + tail.len);
    let bytes = store
        .get_range(
            &located.key,
            located.body_start + from,
            located.body_start + to,
        )
        .await?;
    if bytes.len() as u64 != to - from {
        return Err(corrupt(&located.key, "the body is cut short"));
    }
    slices
        .into_iter()
        .map(|slice| {
            let at = (slice.start - from) as usize;
            let records = decode_slice(
                &located.key,
                located.header.epoch,
                &located.header.source,
                slice,
                &bytes[at..at + slice.len as usize],
            )?;
            Ok((slice.company_id.clone(), records))
        })
        .collect()
}

/// Decodes a whole segment held in memory (tools and tests), by company.
pub fn decode(key: &str, bytes: &Bytes) -> Result<(SegmentHeader, ByCompany)> {
    let len = header_len(key, bytes)?;
    let end = PREAMBLE_LEN + len;
    let line = bytes
        .get(PREAMBLE_LEN..end)
        .ok_or_else(|| corrupt(key, "the header is cut short"))?;
    let located = Located {
        key: key.to_owned(),
        header: parse_header(key, line)?,
        body_start: end as u64,
    };
    let body = &bytes[end..];
    if body.len() as u64 != located.header.body_bytes {
        return Err(corrupt(key, "the body is not as long as the header says"));
    }
    let mut out = Vec::with_capacity(located.header.companies.len());
    for slice in &located.header.companies {
        let bytes = &body[slice.start as usize..(slice.start + slice.len) as usize];
        out.push((
            slice.company_id.clone(),
            decode_slice(
                key,
                located.header.epoch,
                &located.header.source,
                slice,
                bytes,
            )?,
        ));
    }
    Ok((located.header, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_model::{Limits, parse_event};
    use serde_json::json;
    use std::sync::Arc;
    use storage::MemoryStore;

    fn post(id: &str, owner: &str, offset: i64, at: &str) -> PendingRecord {
        let value = json!({"event_id": id, "type": "post.created", "occurred_at": at,
            "conversation": {"id": format!("c-{owner}"), "kind": "team", "owner_company_id": owner},
            "post_id": id, "author_id": "u", "text": format!("text of {id}")});
        let (event, raw) = parse_event(
            &serde_json::to_vec(&value).unwrap(),
            &Limits::default(),
            "2026-12-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        PendingRecord { offset, event, raw }
    }

    fn source(first: i64, last: i64) -> SourceRange {
        SourceRange {
            topic: "chat-events".into(),
            partition: 2,
            first_offset: first,
            last_offset: last,
        }
    }

    fn records() -> Vec<PendingRecord> {
        vec![
            post("b1", "bank", 10, "2026-11-25T10:00:00Z"),
            post("a1", "acme", 11, "2026-11-25T09:00:00Z"),
            post("b2", "bank", 12, "2026-11-24T23:00:00Z"),
            post("a2", "acme", 13, "2026-11-25T11:00:00Z"),
        ]
    }

    #[tokio::test]
    async fn one_object_serves_each_company_its_own_slice() {
        let (bytes, header) = encode(1, &source(10, 13), &records()).unwrap();
        assert_eq!(encode(1, &source(10, 13), &records()).unwrap().0, bytes);
        assert_eq!(header.companies.len(), 2);
        let store = Arc::new(MemoryStore::new());
        let key = crate::v2::keys::segment_key(1, &source(10, 13));
        store.put(&key, bytes.clone()).await.unwrap();
        let located = read_header(store.as_ref(), &key).await.unwrap();
        assert_eq!(located.header, header);
        let acme = read_company(store.as_ref(), &located, "acme")
            .await
            .unwrap();
        assert_eq!(
            acme.iter()
                .map(|r| (r.event.event_id.as_str(), r.offset, r.epoch))
                .collect::<Vec<_>>(),
            [("a1", 11, 1), ("a2", 13, 1)]
        );
        let slice = header.slice("bank").unwrap();
        assert_eq!(slice.min_time.to_rfc3339(), "2026-11-24T23:00:00+00:00");
        assert!(!slice.overlaps(
            "2026-11-25T10:00:01Z".parse().unwrap(),
            "2026-11-26T00:00:00Z".parse().unwrap()
        ));
        assert!(
            read_company(store.as_ref(), &located, "nobody")
                .await
                .unwrap()
                .is_empty()
        );
        let both = read_companies(store.as_ref(), &located, "acme", "bank")
            .await
            .unwrap();
        assert_eq!(both.len(), 2);
        let (_, all) = decode(&key, &bytes).unwrap();
        assert_eq!(all[1].1.len(), 2);
    }

    #[tokio::test]
    async fn a_slice_holding_another_tenants_record_is_refused() {
        let (bytes, header) = encode(1, &source(10, 13), &records()).unwrap();
        let store = MemoryStore::new();
        store.put("k", bytes.clone()).await.unwrap();
        // A header that says acme's slice is bank's (a corrupt or forged object).
        let mut forged = header.clone();
        forged.companies.remove(1);
        forged.companies[0].company_id = "bank".into();
        let located = Located {
            key: "k".into(),
            body_start: bytes.len() as u64 - header.body_bytes,
            header: forged,
        };
        let error = read_company(&store, &located, "bank").await.unwrap_err();
        assert!(
            error.to_string().contains("does not belong to company"),
            "{error}"
        );
    }

    /// The segment of `records` under another header, its preamble redone.
    fn with_header(bytes: &Bytes, header: &SegmentHeader) -> Bytes {
        let body_start = PREAMBLE_LEN + header_len("k", bytes).unwrap();
        let mut line = serde_json::to_vec(header).unwrap();
        line.push(b'\n');
        let mut object = format!("{PREAMBLE_TAG}{:012}\n", line.len()).into_bytes();
        object.extend_from_slice(&line);
        object.extend_from_slice(&bytes[body_start..]);
        Bytes::from(object)
    }

    #[tokio::test]
    async fn slice_lengths_or_counts_that_wrap_around_are_corrupt_not_a_panic() {
        let (bytes, header) = encode(1, &source(10, 13), &records()).unwrap();
        // The first slice claims 2^64 - 1 bytes and the second's length wraps the sum back to
        // the body's length: unchecked, the tiling passed (or overflowed, with debug
        // assertions) and the slice of the body panicked.
        let mut lengths = header.clone();
        lengths.companies[0].len = u64::MAX;
        lengths.companies[1].start = u64::MAX;
        lengths.companies[1].len = header.body_bytes + 1;
        // Record counts that wrap around to the header's total.
        let mut counts = header.clone();
        counts.companies[0].records = usize::MAX;
        counts.companies[1].records = header.records + 1;
        let store = MemoryStore::new();
        for (forged, why) in [
            (lengths, "slice of bank overflows the body"),
            (counts, "slice of bank overflows the body"),
        ] {
            let object = with_header(&bytes, &forged);
            let error = decode("k", &object).unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
            store.put("k", object).await.unwrap();
            let error = read_header(&store, "k").await.unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
        }
    }

    #[tokio::test]
    async fn a_long_header_takes_a_second_read_and_a_flipped_byte_is_an_error() {
        let many: Vec<PendingRecord> = (0..3000)
            .map(|i| {
                post(
                    &format!("e{i}"),
                    &format!("company-{i:05}"),
                    i,
                    "2026-11-25T10:00:00Z",
                )
            })
            .collect();
        let (bytes, header) = encode(1, &source(0, 2999), &many).unwrap();
        assert!(bytes.len() as u64 - header.body_bytes > HEADER_PROBE);
        let store = MemoryStore::new();
        store.put("k", bytes.clone()).await.unwrap();
        let located = read_header(&store, "k").await.unwrap();
        assert_eq!(located.header.companies.len(), 3000);
        let mut flipped = bytes.to_vec();
        let last = flipped.len() - 5;
        flipped[last] ^= 1;
        store.put("k", Bytes::from(flipped)).await.unwrap();
        let error = read_company(&store, &located, "company-02999")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
    }
}
