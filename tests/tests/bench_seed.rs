//! The export benchmark's tools against the real object store: a generated log seeded through
//! the v2 log writer and compacted (`tests::seed`) reads back whole, once per event, every
//! closed day from compacted parts; and `cce-archive export --topic` (with explicit limits) and
//! `cce-archive read-floor` see all of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use compliance_log::{LogPosition, LogReader};
use serde_json::Value;
use storage::ObjectStore;
use tests::{Stack, seed};

fn midnight_before(now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    (now - chrono::Duration::days(days))
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

fn cce_archive(stack: &Stack, args: &[&str]) -> Value {
    let output = std::process::Command::new(tests::binary("cce-archive"))
        .args(args)
        .args(stack.s3_args())
        .output()
        .expect("run cce-archive");
    assert!(
        output.status.success(),
        "cce-archive {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seeded_and_compacted_log_reads_back_whole_and_the_bench_tools_see_it() {
    let stack = Stack::from_env();
    let store: Arc<dyn ObjectStore> = Arc::new(stack.s3_store().await);
    let topic = tests::unique("bench-seed");
    let prefix = format!("{}-", tests::unique("bs"));
    let now = Utc::now();
    let last_event = midnight_before(now, 2);
    let messages: Vec<loadgen::Message> = loadgen::Generator::new(loadgen::Options {
        seed: 9,
        id_prefix: prefix.clone(),
        companies: 2,
        content_events: 3_000,
        large_teams: vec![12],
        start: last_event - chrono::Duration::days(10),
        span: chrono::Duration::days(10),
        ..loadgen::Options::default()
    })
    .collect();
    let expected = tests::expected_by_company(messages.iter().map(|m| m.payload.clone()));
    // Content events (not people and conversations) per company: what an export counts.
    let mut content: BTreeMap<String, u64> = BTreeMap::new();
    for message in &messages {
        let (event, _) =
            event_model::parse_event(&message.payload, &event_model::Limits::default(), now)
                .unwrap();
        if !event.body.is_metadata() {
            for company in event_model::route(&event) {
                *content.entry(company).or_default() += 1;
            }
        }
    }

    // Small segments, several per partition and day, so compaction merges many.
    let shape = seed::LogShape {
        partitions: 3,
        flush: chrono::Duration::hours(6),
        max_records: 200,
    };
    let written = seed::write_v2_log(Arc::clone(&store), &topic, messages.clone(), shape, now)
        .await
        .unwrap();
    assert_eq!(written.records, messages.len() as u64);
    assert!(written.segments >= 40, "{written:?}");
    for (company, ids) in &expected {
        assert_eq!(written.by_company[company], ids.len() as u64, "{company}");
    }
    let (pass, _) = seed::compact(Arc::clone(&store), &topic, now)
        .await
        .unwrap();
    assert!(
        pass.horizon > last_event,
        "every seeded day is closed: {pass:?}"
    );
    assert!(pass.wrote.parts >= 20, "{pass:?}");

    let position = LogPosition::read(store.as_ref(), &topic).await.unwrap();
    assert!(position.is_complete(), "{position:?}");
    let counting = Arc::new(storage::CountingStore::new(Arc::clone(&store)));
    let reader = LogReader::new(counting.clone()).at(position);
    for (company, ids) in &expected {
        counting.reset();
        assert_eq!(
            &tests::log_event_ids(&reader, company).await,
            ids,
            "{company}"
        );
        // From compacted parts: about a GET per day (content and metadata), fewer than the
        // segments (each of which holds both companies' slices).
        let gets = counting.counts().all_gets();
        assert!(gets < written.segments, "{company}: {gets} GETs");
    }

    let company = format!("{prefix}acme");
    let to = now.to_rfc3339();
    let key = format!("exports/{}.zip", tests::unique("bench-seed"));
    let export = cce_archive(
        &stack,
        &[
            "export",
            "--company",
            &company,
            "--to",
            &to,
            "--topic",
            &topic,
            "--key",
            &key,
            "--threads",
            "1",
            "--memory-budget-mib",
            "64",
            "--disk-budget-mib",
            "512",
        ],
    );
    assert_eq!(
        export["events"].as_u64(),
        Some(content[&company]),
        "{export}"
    );
    let floor = cce_archive(
        &stack,
        &[
            "read-floor",
            "--company",
            &company,
            "--to",
            &to,
            "--topic",
            &topic,
        ],
    );
    assert_eq!(
        floor["records"].as_u64(),
        Some(content[&company]),
        "{floor}"
    );
    assert!(floor["people"].as_u64() >= Some(12), "{floor}");
    assert!(
        floor["bytes"].as_u64() > Some(0) && floor["gets"].as_u64() > Some(0),
        "{floor}"
    );
    for figure in ["cursor_seconds", "fetch_seconds"] {
        assert!(floor[figure].as_f64().is_some_and(|s| s > 0.0), "{floor}");
    }
}
