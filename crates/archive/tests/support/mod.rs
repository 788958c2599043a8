//! Shared by the tests of events out of order: one team conversation's log in memory, exported
//! for 2026-02-01..03 and verified.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod history;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use archive::{ExportRequest, export_to_sink};
use compliance_log::{LogReader, PendingRecord, SourceRange, V1Writer};
use event_model::{Limits, parse_event};
use serde_json::{Value, json};
use storage::MemoryStore;

pub const TEAM: &str = r#"{"id": "team1", "kind": "team", "owner_company_id": "acme"}"#;
pub const FOLDER: &str = "Team_Chats/team1";

pub fn ev(id: &str, at: &str, ty: &str, fields: Value) -> Value {
    let mut v = json!({"event_id": id, "type": ty, "occurred_at": at,
                       "conversation": serde_json::from_str::<Value>(TEAM).unwrap()});
    for (k, x) in fields.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

pub async fn log_of(events: &[Value]) -> LogReader {
    let mut all = vec![ev(
        "c1",
        "2026-01-01T00:00:00Z",
        "conversation.created",
        json!({"created_by": "ann", "members": [{"person_id": "ann", "company_id": "acme"}]}),
    )];
    all.extend(events.iter().cloned());
    log_of_exactly(&all).await
}

/// A log in memory holding exactly `events`, at offsets 0.. of one source partition.
pub async fn log_of_exactly(events: &[Value]) -> LogReader {
    let store = Arc::new(MemoryStore::new());
    let now = "2026-12-01T00:00:00Z".parse().unwrap();
    let records: Vec<PendingRecord> = events
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (event, raw) =
                parse_event(&serde_json::to_vec(v).unwrap(), &Limits::default(), now).unwrap();
            PendingRecord {
                offset: i as i64,
                event,
                raw,
            }
        })
        .collect();
    let source = SourceRange {
        topic: "t".into(),
        partition: 0,
        first_offset: 0,
        last_offset: records.len() as i64 - 1,
    };
    V1Writer::new(store.clone())
        .write(&source, &records)
        .await
        .unwrap();
    LogReader::new(store)
}

pub fn request(tz: &str) -> ExportRequest {
    ExportRequest {
        company_id: "acme".into(),
        from: Some("2026-02-01T00:00:00Z".parse().unwrap()),
        to: "2026-02-03T00:00:00Z".parse().unwrap(),
        person_ids: BTreeSet::new(),
        conversation_ids: BTreeSet::new(),
        time_zone: tz.into(),
        position: None,
        limits: archive::ExportLimits::default(),
        format: archive::DataFormat::Json,
        schedule: None,
        signer: None,
    }
}

/// The archive of `events` for the range, as bytes.
pub async fn export_bytes(events: &[Value], tz: &str) -> Vec<u8> {
    let reader = log_of(events).await;
    let (bytes, _, _) = export_to_sink(&request(tz), &reader, Vec::new(), |_| {})
        .await
        .unwrap();
    bytes
}

/// The archive's day files of the team by date, and its manifest; fails unless it verifies.
pub async fn export(events: &[Value], tz: &str) -> (BTreeMap<String, Value>, Value) {
    let bytes = export_bytes(events, tz).await;
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut days = BTreeMap::new();
    let mut manifest = Value::Null;
    for (name, body) in archive::verify::read_entries(&bytes).unwrap() {
        let rel = name.split_once('/').unwrap().1;
        let value: Value = serde_json::from_slice(&body).unwrap();
        if let Some(file) = rel.strip_prefix(&format!("{FOLDER}/")) {
            days.insert(file.trim_end_matches(".json").to_owned(), value);
        } else if rel == "manifest.json" {
            manifest = value;
        }
    }
    (days, manifest)
}
