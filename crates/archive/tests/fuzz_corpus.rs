//! The fuzz targets' seed corpus (`fuzz/`, `deploy/local/fuzz.sh`), made from the docs'
//! examples: every event of `docs/events.md`, and the log objects and the archive the project
//! makes of them — a segment, a part chunk, a meta day, a format-1 object, a watermark, an
//! epoch marker, a pass record, and an export of those events.
//!
//! As a test it checks that every example of the docs is accepted and that each object decodes
//! back to what was encoded (the archive verifies clean). With `CCE_FUZZ_CORPUS=<fuzz/corpus>`
//! it also writes the seeds there, one folder per target, in each target's input format (the
//! first byte picks the decoder or the mode: `fuzz/fuzz_targets/*.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use archive::export_to_sink;
use compliance_log::format::{self, Stream};
use compliance_log::v2::epoch::EpochMarker;
use compliance_log::v2::part::{self, PartSpec};
use compliance_log::v2::pass::{Cut, PassRecord, PassRef};
use compliance_log::v2::pointer::Watermark;
use compliance_log::v2::segment;
use compliance_log::{LogRecord, PendingRecord, SourceRange};
use event_model::directory::Directory;
use event_model::{Limits, parse_event};
use serde_json::value::RawValue;

const DOCS_EVENTS: &str = include_str!("../../../docs/events.md");

/// The examples of `docs/events.md`: the body of every fenced `json` block.
fn docs_examples() -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in DOCS_EVENTS.lines() {
        match (&mut block, line.trim_start()) {
            (None, "```json") => block = Some(String::new()),
            (Some(text), "```") => {
                out.push(std::mem::take(text));
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// The examples as the consumer takes them, at offsets 0.. of partition 2.
fn pending(examples: &[String]) -> Vec<PendingRecord> {
    let now = "2026-12-01T00:00:00Z".parse().unwrap();
    examples
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let (event, raw) = parse_event(text.as_bytes(), &Limits::default(), now)
                .unwrap_or_else(|r| panic!("docs/events.md example {i} is rejected: {r}\n{text}"));
            PendingRecord {
                offset: 10 + i as i64,
                event,
                raw,
            }
        })
        .collect()
}

fn log_record(record: &PendingRecord) -> LogRecord {
    LogRecord {
        epoch: 1,
        partition: 2,
        offset: record.offset,
        event: record.event.clone(),
        raw: RawValue::from_string(serde_json::to_string(&record.raw).unwrap()).unwrap(),
    }
}

/// Seeds by target, file name → bytes.
type Corpus = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

/// The log objects of the examples, each decoded back and checked.
fn log_seeds(records: &[PendingRecord], corpus: &mut Corpus) {
    let seeds = corpus.entry("log_decoder").or_default();
    let source = SourceRange {
        topic: "chat-events".into(),
        partition: 2,
        first_offset: 10,
        last_offset: 10 + records.len() as i64 - 1,
    };
    let (bytes, header) = segment::encode(1, &source, records).unwrap();
    let (decoded, by_company) = segment::decode("seg", &bytes).unwrap();
    assert_eq!(decoded, header);
    assert_eq!(
        by_company.iter().map(|(_, r)| r.len()).sum::<usize>(),
        header.records
    );
    seeds.insert("segment".into(), with_mode(0, &bytes));
    // The sealed mode takes the segment without its preamble.
    seeds.insert(
        "segment-unsealed".into(),
        with_mode(1, &bytes[segment::PREAMBLE_LEN..]),
    );

    // acme's part of 2026-03-02 and its meta day.
    let day = "2026-03-02".parse().unwrap();
    let of_day: Vec<LogRecord> = records
        .iter()
        .filter(|r| {
            event_model::route(&r.event).contains("acme")
                && r.event.occurred_at.to_utc().date_naive() == day
        })
        .map(log_record)
        .collect();
    assert!(!of_day.is_empty());
    let pass = PassRef {
        seq: 3,
        hash: "0123456789abcdef".into(),
    };
    let cuts = [Cut {
        partition: 2,
        epoch: 1,
        cut: source.last_offset + 1,
    }];
    let merged = BTreeSet::new();
    let spec = PartSpec {
        company_id: "acme",
        day,
        pass: &pass,
        cuts: &cuts,
        merged: &merged,
    };
    let chunks = part::encode_part(&spec, &of_day, 1 << 20).unwrap();
    let (key, chunk) = &chunks[0];
    let (_, decoded) = part::decode_part(key, chunk, "acme").unwrap();
    assert_eq!(decoded.len(), of_day.len());
    seeds.insert("part".into(), with_mode(2, chunk));
    let mut split = vec![3, 7];
    split.extend_from_slice(chunk);
    seeds.insert("part-pieces".into(), split);

    let metadata: Vec<LogRecord> = of_day
        .iter()
        .filter(|r| r.event.body.is_metadata())
        .cloned()
        .collect();
    let mut directory = Directory::default();
    for record in &metadata {
        directory.apply(&record.event);
    }
    let (key, meta) = part::encode_meta_day(&spec, &directory, &metadata).unwrap();
    let (_, snapshot, changes) = part::decode_meta_day(&key, &meta, "acme").unwrap();
    assert_eq!((snapshot, changes.len()), (directory, metadata.len()));
    seeds.insert("meta-day".into(), with_mode(4, &meta));

    // A format-1 object of acme's content.
    let lines: Vec<(i32, i64, &serde_json::Value)> = records
        .iter()
        .filter(|r| event_model::route(&r.event).contains("acme"))
        .map(|r| (2, r.offset, &r.raw))
        .collect();
    let v1 = format::encode("acme", Stream::Events, None, &source, &lines).unwrap();
    let (_, decoded) = format::decode("v1", &v1).unwrap();
    assert_eq!(decoded.len(), lines.len());
    seeds.insert("v1".into(), with_mode(6, &v1));

    let watermark = Watermark::new("chat-events", 2, 12, 1, source.last_offset + 1);
    let (key, watermark) = (watermark.key(), watermark.encode().unwrap());
    Watermark::decode(&key, &watermark).unwrap();
    seeds.insert("watermark".into(), with_mode(7, &watermark));
    let marker = EpochMarker::new("chat-events", 2, 1, None, 10, "first", None);
    let (key, marker) = (marker.key(), marker.encode().unwrap());
    EpochMarker::decode(&key, &marker).unwrap();
    seeds.insert("epoch".into(), with_mode(7, &marker));
    let horizon = "2026-03-03T00:00:00Z".parse().unwrap();
    let pass = PassRecord::new("chat-events", None, horizon, Vec::new());
    let (key, pass) = (pass.key(), pass.encode().unwrap());
    PassRecord::decode(&key, &pass).unwrap();
    seeds.insert("pass".into(), with_mode(7, &pass));
}

/// The archive of acme's export of the examples, and its entries for the target's entry mode.
async fn archive_seeds(examples: &[String], corpus: &mut Corpus) {
    let events: Vec<serde_json::Value> = examples
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let reader = support::log_of_exactly(&events).await;
    let mut request = support::request("Europe/Berlin");
    request.from = Some("2026-03-01T00:00:00Z".parse().unwrap());
    request.to = "2026-07-01T00:00:00Z".parse().unwrap();
    let (bytes, _, _) = export_to_sink(&request, &reader, Vec::new(), |_| {})
        .await
        .unwrap();
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.day_files_counted > 0);
    let seeds = corpus.entry("archive_verify").or_default();
    seeds.insert("export".into(), with_mode(1, &bytes));
    let mut entries = vec![0u8];
    for (i, (name, content)) in archive::verify::read_entries(&bytes)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            entries.push(0);
        }
        entries.extend_from_slice(name.as_bytes());
        entries.push(0);
        entries.extend_from_slice(&content);
    }
    seeds.insert("export-entries".into(), entries);
}

/// Conversation ids and names: the docs' and the hostile ones the unit tests know.
fn folder_seeds(records: &[PendingRecord], corpus: &mut Corpus) {
    let seeds = corpus.entry("folder_names").or_default();
    let mut docs = Vec::new();
    for record in records {
        if let event_model::EventBody::ConversationCreated {
            conversation, name, ..
        } = &record.event.body
        {
            docs.extend_from_slice(conversation.id.as_bytes());
            docs.push(0);
            docs.extend_from_slice(name.as_deref().unwrap_or("").as_bytes());
            docs.push(0);
        }
    }
    seeds.insert("docs".into(), docs);
    let hostile: &[(&str, &str)] = &[
        ("a/b", "../../etc/passwd"),
        ("a_b", "Team/With/Slashes"),
        ("a\\b", "CON"),
        ("c1", "com1.txt"),
        ("C1", "\u{202E}gnp.exe"),
        ("..", "  spaced  "),
        ("team1", "名前のチーム"),
    ];
    let mut bytes = Vec::new();
    for (id, name) in hostile {
        bytes.extend_from_slice(id.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
    }
    seeds.insert("hostile".into(), bytes);
}

#[tokio::test]
async fn the_docs_examples_make_a_log_and_an_archive_that_decode_back() {
    let examples = docs_examples();
    assert!(examples.len() >= 15, "{} examples", examples.len());
    let records = pending(&examples);
    let mut corpus = Corpus::new();
    let events = corpus.entry("event_parser").or_default();
    for (i, text) in examples.iter().enumerate() {
        events.insert(
            format!("docs-events-{i:02}.json"),
            text.clone().into_bytes(),
        );
    }
    log_seeds(&records, &mut corpus);
    archive_seeds(&examples, &mut corpus).await;
    folder_seeds(&records, &mut corpus);

    if let Some(root) = std::env::var_os("CCE_FUZZ_CORPUS") {
        for (target, seeds) in &corpus {
            let dir = Path::new(&root).join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in seeds {
                std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
            }
        }
    }
}
