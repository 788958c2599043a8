//! Compacted objects (`docs/log-format.md`, "Compaction pass"): a company's content of one
//! closed day (a *part*, split into chunks when large) and its metadata of that day (a *meta
//! day*: the day's changes and the directory as of the end of the day).
//!
//! Both are JSON lines: a header line naming the company, the day, the pass that wrote it and
//! that pass's cuts, then the body, covered by `body_sha256`. A part's body is record lines
//! `{"epoch","partition","offset","event"}` in log order; a meta day's body is the directory
//! snapshot on one line, then its change lines in log order.
//!
//! `merged` names every earlier object of the same company-day whose records this one holds,
//! so a reader that finds several candidates (two compactors raced) knows which ones another
//! already covers and reads only the rest.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use event_model::directory::Directory;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::format::{FORMAT_NAME, RecordLineOut, decode_line, decode_lines};
use crate::v2::isolation;
use crate::v2::keys;
use crate::v2::pass::{Cut, PassRef};
use crate::v2::segment::FORMAT_VERSION;
use crate::{LogError, LogRecord, Result};

pub const KIND_DAY: &str = "day";
pub const KIND_META_DAY: &str = "meta_day";

/// The header line of a part chunk or a meta day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartHeader {
    pub format: String,
    pub version: u32,
    pub kind: String,
    pub company_id: String,
    pub day: NaiveDate,
    pub pass: PassRef,
    /// 0-based; always 0 for a meta day.
    pub chunk: u32,
    pub chunks: u32,
    /// Record lines in this chunk (change lines for a meta day).
    pub records: usize,
    /// The cuts of the pass that wrote it: it holds every record of its company-day below them.
    pub cuts: Vec<Cut>,
    /// Earlier objects of the same company-day whose records it holds (transitively).
    pub merged: Vec<PassRef>,
    pub body_sha256: String,
}

/// What the chunks of a part, or a meta day, have in common.
#[derive(Debug, Clone)]
pub struct PartSpec<'a> {
    pub company_id: &'a str,
    pub day: NaiveDate,
    pub pass: &'a PassRef,
    pub cuts: &'a [Cut],
    pub merged: &'a BTreeSet<PassRef>,
}

impl PartSpec<'_> {
    fn header(
        &self,
        kind: &str,
        chunk: u32,
        chunks: u32,
        records: usize,
        body: &[u8],
    ) -> PartHeader {
        PartHeader {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            kind: kind.to_owned(),
            company_id: self.company_id.to_owned(),
            day: self.day,
            pass: self.pass.clone(),
            chunk,
            chunks,
            records,
            cuts: self.cuts.to_vec(),
            merged: self.merged.iter().cloned().collect(),
            body_sha256: hex::encode(Sha256::digest(body)),
        }
    }
}

fn encode_error(company_id: &str, e: serde_json::Error) -> LogError {
    LogError::Encode {
        company_id: company_id.to_owned(),
        reason: e.to_string(),
    }
}

fn record_line(company_id: &str, record: &LogRecord, out: &mut Vec<u8>) -> Result<()> {
    let line = RecordLineOut {
        epoch: Some(record.epoch),
        partition: record.partition,
        offset: record.offset,
        event: &record.raw,
    };
    serde_json::to_writer(&mut *out, &line).map_err(|e| encode_error(company_id, e))?;
    out.push(b'\n');
    Ok(())
}

fn seal(company_id: &str, header: &PartHeader, body: Vec<u8>) -> Result<Bytes> {
    let mut object = serde_json::to_vec(header).map_err(|e| encode_error(company_id, e))?;
    object.push(b'\n');
    object.extend_from_slice(&body);
    Ok(Bytes::from(object))
}

/// Sorts records into log order — (time, `event_id`), then source position — and collapses
/// copies of one event (equal `event_id` and time) within one partition to the earliest. Copies
/// in different partitions are all kept: a reader at a log position may admit one and not the
/// other, and it chooses among them after applying its position. One `event_id` at two times is
/// two events, as every reader sees them (`reader/merge.rs`), so an export reads the same before
/// and after compaction. Returns the records and how many were collapsed.
pub fn merge_records(mut records: Vec<LogRecord>) -> (Vec<LogRecord>, u64) {
    records.sort_by(|a, b| {
        (a.sort_key(), a.partition, a.epoch, a.offset).cmp(&(
            b.sort_key(),
            b.partition,
            b.epoch,
            b.offset,
        ))
    });
    let before = records.len();
    records.dedup_by(|later, earlier| {
        later.sort_key() == earlier.sort_key() && later.partition == earlier.partition
    });
    let duplicates = (before - records.len()) as u64;
    records.sort_by(|a, b| {
        (a.sort_key(), a.source_position()).cmp(&(b.sort_key(), b.source_position()))
    });
    (records, duplicates)
}

/// Encodes a company-day's content (in log order, as [`merge_records`] leaves it) as chunks of
/// at most `max_chunk_bytes` of body each (a single larger record gets a chunk of its own).
/// Returns `(key, bytes)` per chunk; a pure function of the arguments.
pub fn encode_part(
    spec: &PartSpec<'_>,
    records: &[LogRecord],
    max_chunk_bytes: usize,
) -> Result<Vec<(String, Bytes)>> {
    let mut bodies: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut line = Vec::new();
    for record in records {
        line.clear();
        record_line(spec.company_id, record, &mut line)?;
        match bodies.last_mut() {
            Some((body, count)) if body.len() + line.len() <= max_chunk_bytes => {
                body.extend_from_slice(&line);
                *count += 1;
            }
            _ => bodies.push((line.clone(), 1)),
        }
    }
    let chunks = u32::try_from(bodies.len()).map_err(|_| LogError::Encode {
        company_id: spec.company_id.to_owned(),
        reason: format!("{} chunks for day {}", bodies.len(), spec.day),
    })?;
    bodies
        .into_iter()
        .enumerate()
        .map(|(chunk, (body, count))| {
            let chunk = chunk as u32;
            let header = spec.header(KIND_DAY, chunk, chunks, count, &body);
            let key = keys::day_part_key(
                spec.company_id,
                spec.day,
                spec.pass.seq,
                &spec.pass.hash,
                chunk,
            );
            Ok((key, seal(spec.company_id, &header, body)?))
        })
        .collect()
}

/// Encodes a company's metadata day: its changes (in log order) and the directory as of the
/// end of the day.
pub fn encode_meta_day(
    spec: &PartSpec<'_>,
    snapshot: &Directory,
    changes: &[LogRecord],
) -> Result<(String, Bytes)> {
    let mut body = serde_json::to_vec(snapshot).map_err(|e| encode_error(spec.company_id, e))?;
    body.push(b'\n');
    for record in changes {
        record_line(spec.company_id, record, &mut body)?;
    }
    let header = spec.header(KIND_META_DAY, 0, 1, changes.len(), &body);
    let key = keys::meta_day_key(spec.company_id, spec.day, spec.pass.seq, &spec.pass.hash);
    Ok((key, seal(spec.company_id, &header, body)?))
}

/// Splits an object into its verified header and body: format, kind, name and checksum.
fn open<'a>(
    key: &str,
    bytes: &'a [u8],
    company_id: &str,
    kind: &str,
) -> Result<(PartHeader, &'a [u8])> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt(key, "no header line".into()))?;
    let header = parse_header(key, &bytes[..newline], kind)?;
    let body = &bytes[newline + 1..];
    check_body_sha256(key, &header, &hex::encode(Sha256::digest(body)))?;
    check_company(key, &header, company_id)?;
    Ok((header, body))
}

fn corrupt(key: &str, reason: String) -> LogError {
    LogError::Corrupt {
        key: key.to_owned(),
        reason,
    }
}

/// Parses a header line and checks its format, kind, and that it names the object's key.
fn parse_header(key: &str, line: &[u8], kind: &str) -> Result<PartHeader> {
    let header: PartHeader =
        serde_json::from_slice(line).map_err(|e| corrupt(key, format!("bad header: {e}")))?;
    if header.format != FORMAT_NAME || header.version != FORMAT_VERSION || header.kind != kind {
        return Err(corrupt(
            key,
            format!(
                "format {} version {} kind {} is not {FORMAT_NAME} version {FORMAT_VERSION} {kind}",
                header.format, header.version, header.kind
            ),
        ));
    }
    let name = keys::parse_part_key(key)
        .ok_or_else(|| corrupt(key, "not a compacted object's name".into()))?;
    let prefix = match kind {
        KIND_DAY => keys::days_prefix(&header.company_id),
        _ => keys::meta_days_prefix(&header.company_id),
    };
    if !key.starts_with(&prefix)
        || name.day != header.day
        || name.seq != header.pass.seq
        || name.hash != header.pass.hash
        || name.chunk != header.chunk
        || header.chunk >= header.chunks
    {
        return Err(corrupt(
            key,
            format!(
                "its header names company {} day {} pass {} {} chunk {}/{}, not this key",
                header.company_id,
                header.day,
                header.pass.seq,
                header.pass.hash,
                header.chunk,
                header.chunks
            ),
        ));
    }
    Ok(header)
}

fn check_body_sha256(key: &str, header: &PartHeader, actual: &str) -> Result<()> {
    if actual != header.body_sha256 {
        return Err(corrupt(
            key,
            format!(
                "body checksum {actual} does not match the header's {}",
                header.body_sha256
            ),
        ));
    }
    Ok(())
}

/// The object must be the one asked for: the name's company and the header's must agree with
/// the reader's (isolation checks every record too).
fn check_company(key: &str, header: &PartHeader, company_id: &str) -> Result<()> {
    if header.company_id != company_id {
        return Err(corrupt(
            key,
            format!(
                "it holds company {:?}, not {company_id:?}",
                header.company_id
            ),
        ));
    }
    Ok(())
}

/// Checks that a decoded record belongs to the part's day.
fn check_day(key: &str, day: NaiveDate, record: &LogRecord) -> Result<()> {
    if record.event.occurred_at.with_timezone(&Utc).date_naive() != day {
        return Err(corrupt(
            key,
            format!("event {} is not of day {day}", record.event.event_id),
        ));
    }
    Ok(())
}

/// Decodes record lines, checks their count and day, and admits them for `company_id`.
fn records_of(
    key: &str,
    header: &PartHeader,
    company_id: &str,
    body: &[u8],
) -> Result<Vec<LogRecord>> {
    let records = decode_lines(key, body, 0, header.records)?;
    if records.len() != header.records {
        return Err(corrupt(
            key,
            format!(
                "{} records, the header says {}",
                records.len(),
                header.records
            ),
        ));
    }
    for record in &records {
        check_day(key, header.day, record)?;
    }
    isolation::admit(key, company_id, &header.company_id, records)
}

/// Decodes and verifies one chunk of a company's part.
pub fn decode_part(
    key: &str,
    bytes: &[u8],
    company_id: &str,
) -> Result<(PartHeader, Vec<LogRecord>)> {
    let (header, body) = open(key, bytes, company_id, KIND_DAY)?;
    let records = records_of(key, &header, company_id, body)?;
    Ok((header, records))
}

/// Decodes one chunk of a company's part as it arrives, in pieces of any size (ranged GETs),
/// so a reader never holds a whole chunk: feed it the pieces in order with [`push`], take the
/// records with [`next_records`] until it wants the next piece, and call [`finish`] after the
/// last one.
///
/// It checks what [`decode_part`] checks — header (format, kind, name, company), each record's
/// day and company (`v2::isolation::admit`), the record count and `body_sha256` — but the count
/// and the checksum only at the end of the chunk: records before a corruption have been handed
/// out by then, so a caller must treat an error as the failure of the whole read (an export
/// fails and publishes nothing).
///
/// [`push`]: Self::push
/// [`next_records`]: Self::next_records
/// [`finish`]: Self::finish
#[derive(Debug)]
pub struct ChunkDecoder {
    key: String,
    company_id: String,
    header: Option<PartHeader>,
    hasher: Sha256,
    /// The current piece and how far it is decoded.
    piece: Bytes,
    at: usize,
    /// The start of a line whose end is in a later piece.
    carry: Vec<u8>,
    /// Record lines decoded so far.
    lines: usize,
}

impl ChunkDecoder {
    pub fn new(key: &str, company_id: &str) -> Self {
        Self {
            key: key.to_owned(),
            company_id: company_id.to_owned(),
            header: None,
            hasher: Sha256::new(),
            piece: Bytes::new(),
            at: 0,
            carry: Vec::new(),
            lines: 0,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The chunk's header, once its line has arrived (checked, but its checksum not yet).
    pub fn header(&self) -> Option<&PartHeader> {
        self.header.as_ref()
    }

    /// Whether the current piece is decoded to its end (its last partial line carried).
    pub fn wants_piece(&self) -> bool {
        self.at >= self.piece.len()
    }

    /// Takes the next piece of the object; the previous one must be decoded to its end.
    pub fn push(&mut self, piece: Bytes) -> Result<()> {
        debug_assert!(self.wants_piece());
        let mut start = 0;
        if self.header.is_none() {
            let Some(newline) = piece.iter().position(|b| *b == b'\n') else {
                // A header longer than a piece: keep it whole until its end arrives.
                self.carry.extend_from_slice(&piece);
                self.piece = Bytes::new();
                self.at = 0;
                return Ok(());
            };
            self.carry.extend_from_slice(&piece[..newline]);
            let header = parse_header(&self.key, &self.carry, KIND_DAY)?;
            check_company(&self.key, &header, &self.company_id)?;
            self.header = Some(header);
            self.carry.clear();
            start = newline + 1;
        }
        self.hasher.update(&piece[start..]);
        self.piece = piece;
        self.at = start;
        Ok(())
    }

    /// Bytes of a partial line carried to the next piece (or decoded by [`finish`](Self::finish)).
    pub fn carried(&self) -> usize {
        self.carry.len()
    }

    /// Decodes up to `max` complete record lines of the current piece (fewer at its end), of
    /// at most `max_bytes` in all unless the first is longer, each checked and admitted.
    pub fn next_records(&mut self, max: usize, max_bytes: usize) -> Result<Vec<LogRecord>> {
        let mut records = Vec::new();
        let mut bytes = 0;
        let Some((day, company)) = self.header.as_ref().map(|h| (h.day, h.company_id.clone()))
        else {
            return Ok(records);
        };
        while records.len() < max && self.at < self.piece.len() {
            let rest = &self.piece[self.at..];
            let Some(newline) = rest.iter().position(|b| *b == b'\n') else {
                self.carry.extend_from_slice(rest);
                self.at = self.piece.len();
                break;
            };
            let len = self.carry.len() + newline + 1;
            if !records.is_empty() && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            self.at += newline + 1;
            let line = if self.carry.is_empty() {
                &rest[..newline]
            } else {
                self.carry.extend_from_slice(&rest[..newline]);
                &self.carry[..]
            };
            if !line.is_empty() {
                let record = decode_line(&self.key, line, 0, self.lines)?;
                self.lines += 1;
                check_day(&self.key, day, &record)?;
                records.push(record);
            }
            self.carry.clear();
        }
        if self.wants_piece() {
            // Free the piece now rather than when the next one comes.
            self.piece = Bytes::new();
            self.at = 0;
        }
        isolation::admit(&self.key, &self.company_id, &company, records)
    }

    /// Ends the chunk after its last piece: decodes a last line without a newline, and checks
    /// the record count and the body's checksum.
    pub fn finish(&mut self) -> Result<Vec<LogRecord>> {
        debug_assert!(self.wants_piece());
        let Some(header) = &self.header else {
            return Err(corrupt(&self.key, "no header line".into()));
        };
        let mut records = Vec::new();
        if !self.carry.is_empty() {
            let record = decode_line(&self.key, &self.carry, 0, self.lines)?;
            self.lines += 1;
            check_day(&self.key, header.day, &record)?;
            records.push(record);
            self.carry.clear();
        }
        if self.lines != header.records {
            return Err(corrupt(
                &self.key,
                format!("{} records, the header says {}", self.lines, header.records),
            ));
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        check_body_sha256(&self.key, header, &actual)?;
        isolation::admit(&self.key, &self.company_id, &header.company_id, records)
    }
}

/// Decodes and verifies a company's meta day: header, snapshot, changes.
pub fn decode_meta_day(
    key: &str,
    bytes: &[u8],
    company_id: &str,
) -> Result<(PartHeader, Directory, Vec<LogRecord>)> {
    let (header, body) = open(key, bytes, company_id, KIND_META_DAY)?;
    let newline = body
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| LogError::Corrupt {
            key: key.to_owned(),
            reason: "no snapshot line".into(),
        })?;
    let snapshot: Directory =
        serde_json::from_slice(&body[..newline]).map_err(|e| LogError::Corrupt {
            key: key.to_owned(),
            reason: format!("bad snapshot: {e}"),
        })?;
    check_snapshot(key, &snapshot, company_id)?;
    let changes = records_of(key, &header, company_id, &body[newline + 1..])?;
    if changes.iter().any(|r| !r.event.body.is_metadata()) {
        return Err(LogError::Corrupt {
            key: key.to_owned(),
            reason: "a change is not a metadata event".into(),
        });
    }
    Ok((header, snapshot, changes))
}

/// A meta day's snapshot must be the company's directory: every conversation in it other than
/// a direct chat (which is every member company's) is owned by the company, since only those
/// conversations' events route to it (`event_model::route`). People of other companies are
/// there legitimately (members of its conversations), so they are not a sign of a wrong object.
fn check_snapshot(key: &str, snapshot: &Directory, company_id: &str) -> Result<()> {
    if let Some(foreign) = snapshot.conversations.values().find(|c| {
        c.kind != event_model::ConversationKind::Direct && c.owner_company_id != company_id
    }) {
        return Err(corrupt(
            key,
            format!(
                "its snapshot holds conversation {:?} of company {:?}, not {company_id:?}",
                foreign.id, foreign.owner_company_id
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use event_model::{Limits, parse_event};
    use serde_json::json;

    pub(crate) fn record(
        company: &str,
        id: &str,
        at: &str,
        partition: i32,
        offset: i64,
    ) -> LogRecord {
        let value = json!({"event_id": id, "type": "post.created", "occurred_at": at,
            "conversation": {"id": format!("c-{company}"), "kind": "team", "owner_company_id": company},
            "post_id": id, "author_id": "u", "text": format!("text of {id}"), "zz": {"b": 1, "a": 2}});
        let bytes = serde_json::to_vec(&value).unwrap();
        let (event, _) = parse_event(
            &bytes,
            &Limits::default(),
            "2026-12-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        LogRecord {
            epoch: 1,
            partition,
            offset,
            event,
            raw: serde_json::value::RawValue::from_string(String::from_utf8(bytes).unwrap())
                .unwrap(),
        }
    }

    fn spec<'a>(pass: &'a PassRef, cuts: &'a [Cut], merged: &'a BTreeSet<PassRef>) -> PartSpec<'a> {
        PartSpec {
            company_id: "acme",
            day: "2026-11-25".parse().unwrap(),
            pass,
            cuts,
            merged,
        }
    }

    /// Feeds a chunk to a [`ChunkDecoder`] in pieces of `piece` bytes.
    fn stream(key: &str, bytes: &Bytes, piece: usize) -> Result<Vec<LogRecord>> {
        let mut decoder = ChunkDecoder::new(key, "acme");
        let mut out = Vec::new();
        for start in (0..bytes.len()).step_by(piece) {
            decoder.push(bytes.slice(start..(start + piece).min(bytes.len())))?;
            while !decoder.wants_piece() {
                out.extend(decoder.next_records(2, usize::MAX)?);
            }
        }
        out.extend(decoder.finish()?);
        Ok(out)
    }

    #[test]
    fn a_chunk_decoded_in_pieces_is_the_chunk_decoded_whole() {
        let pass = PassRef {
            seq: 3,
            hash: "0123456789abcdef".into(),
        };
        let none = BTreeSet::new();
        let records: Vec<LogRecord> = (0..10)
            .map(|i| record("acme", &format!("e{i}"), "2026-11-25T10:00:00Z", 0, i))
            .collect();
        let chunks = encode_part(&spec(&pass, &[], &none), &records, 1 << 20).unwrap();
        let (key, bytes) = &chunks[0];
        // Pieces that cut the header, lines, and newlines anywhere.
        for piece in [1, 7, 64, 1000, bytes.len()] {
            assert_eq!(
                stream(key, bytes, piece).unwrap(),
                records,
                "pieces of {piece}"
            );
        }
        // A flipped digit in a text is still JSON: only the checksum, at the end, tells.
        let mut flipped = bytes.to_vec();
        let at = flipped.len() - 30;
        let at = at + flipped[at..].iter().position(u8::is_ascii_digit).unwrap();
        flipped[at] = if flipped[at] == b'9' { b'8' } else { b'9' };
        let error = stream(key, &Bytes::from(flipped), 64).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        // A chunk cut short after a line: the count tells.
        let end = bytes.len() - 1;
        let cut = bytes[..end].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        let error = stream(key, &bytes.slice(..cut), 64).unwrap_err();
        assert!(
            error.to_string().contains("9 records, the header says 10"),
            "{error}"
        );
        // Another company's chunk is refused at its header.
        let error = ChunkDecoder::new(key, "bank")
            .push(bytes.clone())
            .unwrap_err();
        assert!(error.to_string().contains("not \"bank\""), "{error}");
    }

    #[test]
    fn merging_orders_and_collapses_copies_within_a_partition_only() {
        let (records, duplicates) = merge_records(vec![
            record("acme", "b", "2026-11-25T10:00:00Z", 0, 9),
            record("acme", "a", "2026-11-25T10:00:00Z", 0, 5),
            record("acme", "b", "2026-11-25T10:00:00Z", 0, 3),
            record("acme", "b", "2026-11-25T10:00:00Z", 1, 1),
            record("acme", "c", "2026-11-25T09:00:00Z", 0, 7),
        ]);
        assert_eq!(duplicates, 1);
        let got: Vec<(&str, i32, i64)> = records
            .iter()
            .map(|r| (r.event.event_id.as_str(), r.partition, r.offset))
            .collect();
        assert_eq!(got, [("c", 0, 7), ("a", 0, 5), ("b", 0, 3), ("b", 1, 1)]);
    }

    /// One `event_id` at two times is two events for the readers (`reader/merge.rs`): the
    /// compactor keeps both, so an export reads the same before and after compaction.
    #[test]
    fn one_event_id_at_two_times_stays_two_events() {
        let (records, duplicates) = merge_records(vec![
            record("acme", "b", "2026-11-25T11:00:00Z", 0, 9),
            record("acme", "b", "2026-11-25T10:00:00Z", 0, 3),
        ]);
        assert_eq!(duplicates, 0);
        let got: Vec<(&str, i64)> = records
            .iter()
            .map(|r| (r.event.event_id.as_str(), r.offset))
            .collect();
        assert_eq!(got, [("b", 3), ("b", 9)]);
    }

    #[test]
    fn parts_split_into_chunks_round_trip_and_keep_raw_bytes() {
        let pass = PassRef {
            seq: 3,
            hash: "0123456789abcdef".into(),
        };
        let cuts = [Cut {
            partition: 0,
            epoch: 1,
            cut: 100,
        }];
        let merged = BTreeSet::from([PassRef {
            seq: 2,
            hash: "ffffffffffffffff".into(),
        }]);
        let records: Vec<LogRecord> = (0..10)
            .map(|i| record("acme", &format!("e{i}"), "2026-11-25T10:00:00Z", 0, i))
            .collect();
        let one_line = {
            let mut line = Vec::new();
            record_line("acme", &records[0], &mut line).unwrap();
            line.len()
        };
        let chunks = encode_part(&spec(&pass, &cuts, &merged), &records, one_line * 3).unwrap();
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks,
            encode_part(&spec(&pass, &cuts, &merged), &records, one_line * 3).unwrap()
        );
        let mut back = Vec::new();
        for (key, bytes) in &chunks {
            let (header, records) = decode_part(key, bytes, "acme").unwrap();
            assert_eq!((header.chunks, header.merged.len()), (4, 1));
            back.extend(records);
        }
        assert_eq!(back, records);
        // Another company asking for this object is refused.
        let error = decode_part(&chunks[0].0, &chunks[0].1, "other").unwrap_err();
        assert!(error.to_string().contains("not \"other\""), "{error}");
        // A flipped byte is an error, not a gap.
        let mut bad = chunks[1].1.to_vec();
        let at = bad.len() - 4;
        bad[at] ^= 1;
        assert!(decode_part(&chunks[1].0, &bad, "acme").is_err());
    }

    #[test]
    fn a_record_of_another_company_in_a_part_is_rejected() {
        let pass = PassRef {
            seq: 3,
            hash: "0123456789abcdef".into(),
        };
        let merged = BTreeSet::new();
        let records = [
            record("acme", "a", "2026-11-25T10:00:00Z", 0, 1),
            record("bravo", "b", "2026-11-25T10:00:00Z", 0, 2),
        ];
        let chunks = encode_part(&spec(&pass, &[], &merged), &records, 1 << 20).unwrap();
        let error = decode_part(&chunks[0].0, &chunks[0].1, "acme").unwrap_err();
        assert!(error.to_string().contains("does not belong"), "{error}");
    }

    #[test]
    fn a_meta_day_round_trips_its_snapshot_and_changes() {
        let pass = PassRef {
            seq: 3,
            hash: "0123456789abcdef".into(),
        };
        let merged = BTreeSet::new();
        let value = json!({"event_id": "m1", "type": "person.created", "occurred_at": "2026-11-25T08:00:00Z",
            "person": {"id": "u1", "company_id": "acme", "name": "Ann", "email": "ann@acme"}});
        let bytes = serde_json::to_vec(&value).unwrap();
        let (event, _) = parse_event(
            &bytes,
            &Limits::default(),
            "2026-12-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let change = LogRecord {
            epoch: 1,
            partition: 0,
            offset: 4,
            raw: serde_json::value::RawValue::from_string(String::from_utf8(bytes).unwrap())
                .unwrap(),
            event,
        };
        let mut snapshot = Directory::default();
        snapshot.apply(&change.event);
        let (key, object) = encode_meta_day(
            &spec(&pass, &[], &merged),
            &snapshot,
            std::slice::from_ref(&change),
        )
        .unwrap();
        let (header, back, changes) = decode_meta_day(&key, &object, "acme").unwrap();
        assert_eq!(
            (header.kind.as_str(), back, changes),
            (KIND_META_DAY, snapshot, vec![change])
        );
    }

    /// A metadata event of `company` as the log holds it.
    fn meta(value: serde_json::Value) -> LogRecord {
        let bytes = serde_json::to_vec(&value).unwrap();
        let (event, _) = parse_event(
            &bytes,
            &Limits::default(),
            "2026-12-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        LogRecord {
            epoch: 1,
            partition: 0,
            offset: 4,
            raw: serde_json::value::RawValue::from_string(String::from_utf8(bytes).unwrap())
                .unwrap(),
            event,
        }
    }

    #[test]
    fn a_meta_day_of_another_company_is_refused() {
        let pass = PassRef {
            seq: 3,
            hash: "0123456789abcdef".into(),
        };
        let merged = BTreeSet::new();
        let person = |company: &str| {
            meta(
                json!({"event_id": format!("p-{company}"), "type": "person.created",
                "occurred_at": "2026-11-25T08:00:00Z",
                "person": {"id": format!("u-{company}"), "company_id": company,
                           "name": "N", "email": "n@x"}}),
            )
        };
        let team = |company: &str| {
            meta(
                json!({"event_id": format!("t-{company}"), "type": "conversation.created",
                "occurred_at": "2026-11-25T08:00:00Z",
                "conversation": {"id": format!("team-{company}"), "kind": "team",
                                 "owner_company_id": company},
                "name": "Secret Desk", "created_by": "u",
                "members": [{"person_id": "u", "company_id": company}]}),
            )
        };
        let acme = spec(&pass, &[], &merged);
        let bank = PartSpec {
            company_id: "bank",
            ..spec(&pass, &[], &merged)
        };
        let mut snapshot = Directory::default();
        snapshot.apply(&person("acme").event);
        let (key, object) =
            encode_meta_day(&acme, &snapshot, std::slice::from_ref(&person("acme"))).unwrap();
        // Asked for by another company.
        let error = decode_meta_day(&key, &object, "bank").unwrap_err();
        assert!(error.to_string().contains("not \"bank\""), "{error}");
        // Bank's meta day placed under acme's name.
        let mut bank_snapshot = Directory::default();
        bank_snapshot.apply(&person("bank").event);
        let (_, bank_object) =
            encode_meta_day(&bank, &bank_snapshot, std::slice::from_ref(&person("bank"))).unwrap();
        let error = decode_meta_day(&key, &bank_object, "acme").unwrap_err();
        assert!(
            error.to_string().contains("header names company bank"),
            "{error}"
        );
        // A meta day whose header is acme's but whose snapshot holds bank's team: the snapshot
        // is read as acme's directory, so it would put bank's conversation in acme's export.
        let mut forged = Directory::default();
        forged.apply(&team("bank").event);
        let (key, object) =
            encode_meta_day(&acme, &forged, std::slice::from_ref(&person("acme"))).unwrap();
        let error = decode_meta_day(&key, &object, "acme").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("snapshot holds conversation \"team-bank\" of company \"bank\""),
            "{error}"
        );
        // A direct chat another company owns is acme's too, when acme is a member.
        let mut direct = Directory::default();
        direct.apply(
            &meta(json!({"event_id": "d", "type": "conversation.created",
                "occurred_at": "2026-11-25T08:00:00Z",
                "conversation": {"id": "dm", "kind": "direct", "owner_company_id": "bank",
                                 "member_company_ids": ["acme", "bank"]},
                "created_by": "ua", "members": [{"person_id": "ua", "company_id": "acme"},
                                                {"person_id": "ub", "company_id": "bank"}]}))
            .event,
        );
        let (key, object) =
            encode_meta_day(&acme, &direct, std::slice::from_ref(&person("acme"))).unwrap();
        decode_meta_day(&key, &object, "acme").unwrap();
    }
}
