//! Property tests of the log's encodings (`docs/log-format.md`): whatever the events — any
//! companies, direct chats routed to two, any times, texts with quotes, newlines and non-ASCII
//! — a segment decodes to each company's records in offset order, unchanged, and a compacted
//! part, split into chunks of any size and read whole or streamed in pieces of any size
//! (`ChunkDecoder`), gives back the day's records in log order. The fuzz target
//! `fuzz/fuzz_targets/log_decoder.rs` covers the other direction: bytes that were never encoded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use compliance_log::v2::part::{self, ChunkDecoder, PartSpec};
use compliance_log::v2::pass::{Cut, PassRef};
use compliance_log::v2::segment;
use compliance_log::{LogRecord, PendingRecord, SourceRange};
use event_model::{Limits, parse_event, route};
use proptest::prelude::*;
use serde_json::{Value, json};

const COMPANIES: [&str; 3] = ["acme", "globex", "initech"];
const FIRST_OFFSET: i64 = 1000;

/// One event to generate: its owner, a second company when it is a direct chat, the minute of
/// 2026-03-02..03 it happened, and its text.
#[derive(Debug, Clone)]
struct Spec {
    owner: usize,
    direct_with: Option<usize>,
    minute: u32,
    text: String,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..COMPANIES.len(),
        proptest::option::of(0..COMPANIES.len()),
        0u32..2 * 24 * 60,
        "[a-z \"\\\\\n\té€😀]{0,40}",
    )
        .prop_map(|(owner, direct_with, minute, text)| Spec {
            owner,
            direct_with,
            minute,
            text,
        })
}

/// The events as the consumer hands them to a writer: validated, at consecutive offsets.
fn pending(specs: &[Spec]) -> Vec<PendingRecord> {
    let now = "2026-12-01T00:00:00Z".parse().unwrap();
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let owner = COMPANIES[s.owner];
            let conversation = match s.direct_with {
                Some(other) => json!({"id": format!("dm-{i}"), "kind": "direct",
                    "owner_company_id": owner,
                    "member_company_ids": [owner, COMPANIES[other]]}),
                None => json!({"id": format!("team-{owner}"), "kind": "team",
                    "owner_company_id": owner}),
            };
            let at = "2026-03-02T00:00:00Z"
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
                + chrono::Duration::minutes(i64::from(s.minute));
            let value = json!({"event_id": format!("e{i}"), "type": "post.created",
                "occurred_at": at.to_rfc3339(), "conversation": conversation,
                "post_id": format!("p{i}"), "author_id": "ann", "text": s.text});
            let (event, raw) = parse_event(
                &serde_json::to_vec(&value).unwrap(),
                &Limits::default(),
                now,
            )
            .unwrap();
            PendingRecord {
                offset: FIRST_OFFSET + i as i64,
                event,
                raw,
            }
        })
        .collect()
}

/// A record as a reader returns it, for comparing: position, event, and the stored text read
/// back as JSON.
fn seen(record: &LogRecord) -> (u32, i32, i64, event_model::Event, Value) {
    (
        record.epoch,
        record.partition,
        record.offset,
        record.event.clone(),
        serde_json::from_str(record.raw.get()).unwrap(),
    )
}

/// Streams one chunk through a `ChunkDecoder` in pieces of `piece` bytes.
fn stream(key: &str, company: &str, object: &[u8], piece: usize) -> Vec<LogRecord> {
    let mut decoder = ChunkDecoder::new(key, company);
    let mut out = Vec::new();
    for chunk in object.chunks(piece) {
        decoder.push(Bytes::copy_from_slice(chunk)).unwrap();
        while !decoder.wants_piece() {
            out.extend(decoder.next_records(2, 300).unwrap());
        }
    }
    out.extend(decoder.finish().unwrap());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_segment_gives_each_company_its_records_in_offset_order(
        specs in proptest::collection::vec(spec(), 1..40),
    ) {
        let records = pending(&specs);
        let source = SourceRange {
            topic: "chat-events".into(),
            partition: 4,
            first_offset: FIRST_OFFSET,
            last_offset: FIRST_OFFSET + records.len() as i64 - 1,
        };
        let (bytes, header) = segment::encode(7, &source, &records).unwrap();
        let (decoded, by_company) = segment::decode("seg", &bytes).unwrap();
        prop_assert_eq!(&decoded, &header);
        let companies: BTreeSet<String> = records.iter().flat_map(|r| route(&r.event)).collect();
        prop_assert_eq!(
            by_company.iter().map(|(c, _)| c.clone()).collect::<BTreeSet<_>>(),
            companies
        );
        for (company, got) in &by_company {
            let want: Vec<_> = records
                .iter()
                .filter(|r| route(&r.event).contains(company))
                .map(|r| (7, 4, r.offset, r.event.clone(), r.raw.clone()))
                .collect();
            prop_assert_eq!(got.iter().map(seen).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn a_part_in_chunks_of_any_size_read_whole_or_in_pieces_is_the_days_records(
        specs in proptest::collection::vec(spec(), 1..40),
        max_chunk_bytes in 1usize..3000,
        piece in 1usize..500,
    ) {
        let day = "2026-03-02".parse().unwrap();
        let records: Vec<LogRecord> = pending(&specs)
            .into_iter()
            .filter(|r| route(&r.event).contains("acme")
                && r.event.occurred_at.to_utc().date_naive() == day)
            .map(|r| LogRecord {
                epoch: 2,
                partition: 1,
                offset: r.offset,
                raw: serde_json::value::RawValue::from_string(
                    serde_json::to_string(&r.raw).unwrap()).unwrap(),
                event: r.event,
            })
            .collect();
        prop_assume!(!records.is_empty());
        let (records, collapsed) = part::merge_records(records);
        prop_assert_eq!(collapsed, 0);
        let pass = PassRef { seq: 9, hash: "00112233445566ff".into() };
        let cuts = [Cut { partition: 1, epoch: 2, cut: FIRST_OFFSET + 100 }];
        let merged = BTreeSet::new();
        let spec = PartSpec { company_id: "acme", day, pass: &pass, cuts: &cuts, merged: &merged };
        let chunks = part::encode_part(&spec, &records, max_chunk_bytes).unwrap();
        let (mut whole, mut streamed) = (Vec::new(), Vec::new());
        for (key, bytes) in &chunks {
            whole.extend(part::decode_part(key, bytes, "acme").unwrap().1);
            streamed.extend(stream(key, "acme", bytes, piece));
        }
        let want: Vec<_> = records.iter().map(seen).collect();
        prop_assert_eq!(whole.iter().map(seen).collect::<Vec<_>>(), want.clone());
        prop_assert_eq!(streamed.iter().map(seen).collect::<Vec<_>>(), want);
    }
}
