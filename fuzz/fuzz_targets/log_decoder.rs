//! The log decoder: every decoder of bytes read from the store (`docs/log-format.md`).
//!
//! The first byte picks the decoder; the rest is the object. Objects are checksummed, so random
//! bytes rarely get past the checksum: the "sealed" modes take the object without its
//! checksums (and, for a segment, without its preamble) and fill them in, so the fuzzer reaches
//! the header checks and the record lines behind them.
//!
//! Properties, beyond "never panics" (a panic in a decoder is a crashed export or compactor):
//! - a decoded segment's records lie in its source range and partition, each slice holds as
//!   many records as its header says, and each record routes to the slice's company;
//! - a decoded part chunk or meta day names the company asked for, its records are of its day
//!   and route to its company;
//! - the streaming `ChunkDecoder`, fed the same object in pieces of any size, accepts exactly
//!   what `decode_part` accepts and hands out the same records in the same order.
#![no_main]

use bytes::Bytes;
use compliance_log::LogRecord;
use compliance_log::format;
use compliance_log::v2::part::{self, ChunkDecoder, PartHeader};
use compliance_log::v2::segment::{self, SegmentHeader};
use compliance_log::v2::{epoch::EpochMarker, keys, pass::PassRecord, pointer::Watermark};
use event_model::route;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const SEGMENT_KEY: &str =
    "log/v2/segments/chat-events/00002/000001/00000000000000000010-00000000000000000019.seg";
const COMPANY: &str = "acme";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, object)) = data.split_first() else {
        return;
    };
    match mode % 8 {
        0 => check_segment(&Bytes::copy_from_slice(object)),
        1 => {
            if let Some(sealed) = seal_segment(object) {
                check_segment(&sealed);
            }
        }
        2 => check_part(object, 64),
        3 => {
            let piece = usize::from(object.first().copied().unwrap_or(1)).max(1);
            if let Some(sealed) = seal_part(object.get(1..).unwrap_or_default()) {
                check_part(&sealed, piece);
            }
        }
        4 => check_meta_day(object),
        5 => {
            if let Some(sealed) = seal_part(object) {
                check_meta_day(&sealed);
            }
        }
        6 => {
            let _ = format::decode("log/v1/acme/events/2026-11-25T10/x.jsonl", object);
            if let Some(sealed) = seal_v1(object) {
                if let Ok((header, records)) =
                    format::decode("log/v1/acme/events/2026-11-25T10/x.jsonl", &sealed)
                {
                    assert_eq!(header.records, records.len());
                }
            }
        }
        _ => {
            let _ = Watermark::decode("w", object);
            let _ = EpochMarker::decode("e", object);
            let _ = PassRecord::decode("p", object);
        }
    }
});

/// Decodes a whole segment and checks what a decoded one promises.
fn check_segment(bytes: &Bytes) {
    let Ok((header, by_company)) = segment::decode(SEGMENT_KEY, bytes) else {
        return;
    };
    assert_eq!(by_company.len(), header.companies.len());
    for ((company, records), slice) in by_company.iter().zip(&header.companies) {
        assert_eq!(company, &slice.company_id);
        assert_eq!(records.len(), slice.records);
        for record in records {
            assert_eq!(record.partition, header.source.partition);
            assert!(
                (header.source.first_offset..=header.source.last_offset).contains(&record.offset)
            );
            assert!(route(&record.event).contains(company.as_str()));
        }
    }
}

/// A segment from `header line \n body` with its preamble, body length and slice checksums
/// filled in (slices that lie outside the body keep theirs).
fn seal_segment(object: &[u8]) -> Option<Bytes> {
    let newline = object.iter().position(|b| *b == b'\n')?;
    let mut header: SegmentHeader = serde_json::from_slice(&object[..newline]).ok()?;
    let body = &object[newline + 1..];
    header.body_bytes = body.len() as u64;
    for slice in &mut header.companies {
        let range = usize::try_from(slice.start).ok()?..usize::try_from(slice.len).ok()?;
        if let Some(end) = range.start.checked_add(range.end)
            && let Some(bytes) = body.get(range.start..end)
        {
            slice.sha256 = hex::encode(Sha256::digest(bytes));
        }
    }
    let line = serde_json::to_vec(&header).ok()?;
    let mut out = format!("CCE-LOG-SEGMENT v2 {:012}\n", line.len() + 1).into_bytes();
    out.extend_from_slice(&line);
    out.push(b'\n');
    out.extend_from_slice(body);
    Some(Bytes::from(out))
}

/// The header of a part or meta day, if its first line is one.
fn part_header(object: &[u8]) -> Option<PartHeader> {
    let newline = object.iter().position(|b| *b == b'\n')?;
    serde_json::from_slice(&object[..newline]).ok()
}

/// A part chunk or meta day with its body checksum filled in.
fn seal_part(object: &[u8]) -> Option<Vec<u8>> {
    let newline = object.iter().position(|b| *b == b'\n')?;
    let mut header: PartHeader = serde_json::from_slice(&object[..newline]).ok()?;
    let body = &object[newline + 1..];
    header.body_sha256 = hex::encode(Sha256::digest(body));
    let mut out = serde_json::to_vec(&header).ok()?;
    out.push(b'\n');
    out.extend_from_slice(body);
    Some(out)
}

/// A format-1 object with its body checksum filled in.
fn seal_v1(object: &[u8]) -> Option<Vec<u8>> {
    let newline = object.iter().position(|b| *b == b'\n')?;
    let mut header: format::Header = serde_json::from_slice(&object[..newline]).ok()?;
    let body = &object[newline + 1..];
    header.body_sha256 = hex::encode(Sha256::digest(body));
    let mut out = serde_json::to_vec(&header).ok()?;
    out.push(b'\n');
    out.extend_from_slice(body);
    Some(out)
}

/// What a record is, for comparing two decodings of it.
fn identity(record: &LogRecord) -> (u32, i32, i64, String) {
    (
        record.epoch,
        record.partition,
        record.offset,
        record.raw.get().to_owned(),
    )
}

/// Decodes a part chunk whole and in pieces of `piece` bytes; both must agree. The key and the
/// company are the ones its header names (when it has one), so the checks behind the name pass.
fn check_part(object: &[u8], piece: usize) {
    let (key, company) = match part_header(object) {
        Some(h) => (
            keys::day_part_key(&h.company_id, h.day, h.pass.seq, &h.pass.hash, h.chunk),
            h.company_id,
        ),
        None => (
            keys::day_part_key(
                COMPANY,
                "2026-11-25".parse().expect("a day"),
                1,
                "0123456789abcdef",
                0,
            ),
            COMPANY.to_owned(),
        ),
    };
    let whole = part::decode_part(&key, object, &company);
    if let Ok((header, records)) = &whole {
        assert_eq!(header.company_id, company);
        assert_eq!(records.len(), header.records);
        for record in records {
            assert_eq!(
                record
                    .event
                    .occurred_at
                    .with_timezone(&chrono::Utc)
                    .date_naive(),
                header.day
            );
            assert!(route(&record.event).contains(company.as_str()));
        }
    }
    let streamed = stream_part(&key, &company, object, piece);
    match (&whole, &streamed) {
        (Ok((_, whole)), Ok(streamed)) => {
            let whole: Vec<_> = whole.iter().map(identity).collect();
            let streamed: Vec<_> = streamed.iter().map(identity).collect();
            assert_eq!(
                whole, streamed,
                "the streamed chunk differs from the whole one"
            );
        }
        (Err(_), Err(_)) => {}
        (whole, streamed) => panic!(
            "decode_part and ChunkDecoder disagree: whole {:?}, streamed {:?}",
            whole
                .as_ref()
                .map(|(_, r)| r.len())
                .map_err(ToString::to_string),
            streamed.as_ref().map(Vec::len).map_err(ToString::to_string)
        ),
    }
}

/// Feeds a `ChunkDecoder` the object in pieces, taking records a few at a time.
fn stream_part(
    key: &str,
    company: &str,
    object: &[u8],
    piece: usize,
) -> compliance_log::Result<Vec<LogRecord>> {
    let mut decoder = ChunkDecoder::new(key, company);
    let mut out = Vec::new();
    for chunk in object.chunks(piece) {
        decoder.push(Bytes::copy_from_slice(chunk))?;
        while !decoder.wants_piece() {
            out.extend(decoder.next_records(3, 512)?);
        }
        // A piece may end where its last line does: the decoder then has nothing to carry.
        out.extend(decoder.next_records(3, 512)?);
    }
    out.extend(decoder.finish()?);
    Ok(out)
}

/// Decodes a meta day under the key its header names.
fn check_meta_day(object: &[u8]) {
    let (key, company) = match part_header(object) {
        Some(h) => (
            keys::meta_day_key(&h.company_id, h.day, h.pass.seq, &h.pass.hash),
            h.company_id,
        ),
        None => (
            keys::meta_day_key(
                COMPANY,
                "2026-11-25".parse().expect("a day"),
                1,
                "0123456789abcdef",
            ),
            COMPANY.to_owned(),
        ),
    };
    if let Ok((header, _directory, changes)) = part::decode_meta_day(&key, object, &company) {
        assert_eq!(header.company_id, company);
        assert_eq!(changes.len(), header.records);
        for change in &changes {
            assert!(change.event.body.is_metadata());
            assert!(route(&change.event).contains(company.as_str()));
        }
    }
}
