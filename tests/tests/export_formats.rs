//! EXPORT_FORMAT_EML and EXPORT_FORMAT_CSV through the real service: a generated history in the
//! real object store, a replica on the real broker, one export per format over the same range.
//! Each archive downloads, passes `verify`, and every message (EML) or file (CSV) is checked by
//! Python's own `email` or `csv` module (`tests/python/`), whose counts must equal the
//! manifest's; what they hold is compared with the JSON archive of the same range.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use export::SystemClock;
use proto::v1 as pb;
use storage::ObjectStore;
use tests::exports::{Replica, TokenSpec, authed, create_topics, wait_job};
use tests::{Stack, unique, write_generated_log};

/// Creates an export of `format` up to `to`, waits for it, and downloads it.
async fn export(
    replica: &Replica,
    token: &str,
    format: pb::ExportFormat,
    to: prost_types::Timestamp,
) -> (pb::ExportJob, Vec<u8>) {
    let mut client = replica.client().await;
    let id = client
        .create_export(authed(
            token,
            pb::CreateExportRequest {
                to: Some(to),
                format: format.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let job = wait_job(
        &mut client,
        token,
        &id,
        "the export to finish",
        Duration::from_secs(180),
        |j| {
            j.status != pb::ExportStatus::Accepted as i32
                && j.status != pb::ExportStatus::InProgress as i32
        },
    )
    .await;
    assert_eq!(job.status, pb::ExportStatus::Completed as i32, "{job:?}");
    let (link, bytes) = tests::exports::download(&mut client, token, &id).await;
    assert_eq!(bytes.len() as u64, link.size);
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(
        report.problems.is_empty(),
        "{format:?}: {:?}",
        report.problems
    );
    assert!(
        report.day_files_counted > 0,
        "{format:?}: nothing recounted"
    );
    (job, bytes)
}

/// Runs a checker of `tests/python` on the archive (system Python: only its standard library).
fn python(script: &str, archive: &[u8]) -> serde_json::Value {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(archive).unwrap();
    let output = Command::new("python3")
        .arg(tests::repo_root().join("tests").join("python").join(script))
        .arg(file.path())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn manifest(archive: &[u8]) -> serde_json::Value {
    let entries = archive::verify::read_entries(archive).unwrap();
    let (_, bytes) = entries
        .iter()
        .find(|(name, _)| name.ends_with("/manifest.json"))
        .unwrap();
    serde_json::from_slice(bytes).unwrap()
}

/// The JSON archive's posts created in the range: id → (conversation, text now).
fn json_posts(archive: &[u8]) -> BTreeMap<(String, String), String> {
    let mut posts = BTreeMap::new();
    for (name, content) in archive::verify::read_entries(archive).unwrap() {
        if !(name.contains("_Chats/") && name.ends_with(".json")) {
            continue;
        }
        let day: serde_json::Value = serde_json::from_slice(&content).unwrap();
        let conversation = day["conversation"]["id"].as_str().unwrap().to_owned();
        for item in day["items"].as_array().unwrap() {
            if item["kind"] == "post" && !item["created_at"].is_null() {
                let key = (
                    conversation.clone(),
                    item["id"].as_str().unwrap().to_owned(),
                );
                posts.insert(key, item["text"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    posts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eml_and_csv_exports_hold_what_the_json_export_holds_and_parse_in_python() {
    let stack = Stack::from_env();
    let prefix = format!("{}-", unique("fmt"));
    let store: Arc<dyn ObjectStore> = Arc::new(stack.s3_store().await);
    write_generated_log(store, &prefix, 1_200).await;
    let state_topic = unique("state");
    create_topics(&stack, &state_topic).await;
    let replica = Replica::start(&stack, &state_topic, Arc::new(SystemClock), &[]).await;
    let company = format!("{prefix}acme");
    let token = TokenSpec::admin(&stack, &company, "ann").sign();
    replica
        .client()
        .await
        .enable_exports(authed(&token, pb::EnableExportsRequest {}))
        .await
        .unwrap();
    // One range for the three: everything the log holds, up to now.
    let to = export::service::timestamp(chrono::Utc::now() - chrono::Duration::seconds(1));

    let (_, json) = export(&replica, &token, pb::ExportFormat::Json, to).await;
    let (csv_job, csv) = export(&replica, &token, pb::ExportFormat::Csv, to).await;
    // EML as an operator asks for it: cce-admin create --format eml, download, verify.
    let dir = tempfile::tempdir().unwrap();
    let to_text = tests::exports::time(Some(&to)).to_rfc3339();
    let admin = |args: &[&str]| {
        let out = Command::new(tests::binary("cce-admin"))
            .args(args)
            .current_dir(dir.path())
            .env("CCE_EXPORT_ENDPOINT", &replica.endpoint)
            .env("CCE_TOKEN", &token)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(
            out.status.success(),
            "cce-admin {args:?}: {}",
            text(&out.stderr)
        );
        (text(&out.stdout), text(&out.stderr))
    };
    let (id, _) = tokio::task::block_in_place(|| {
        admin(&["create", "--format", "eml", "--to", &to_text, "--watch"])
    });
    let id = id.trim().to_owned();
    let (verified, _) = tokio::task::block_in_place(|| {
        admin(&["download", &id, "-o", "eml.zip"]);
        admin(&["verify", "eml.zip"])
    });
    assert!(verified.contains("OK"), "{verified}");
    let eml = std::fs::read(dir.path().join("eml.zip")).unwrap();
    let report = archive::verify::verify(&mut std::io::Cursor::new(&eml)).unwrap();
    assert!(
        report.problems.is_empty() && report.day_files_counted > 50,
        "{report:?}"
    );
    let eml_job = tests::exports::get(&mut replica.client().await, &token, &id).await;
    // The job says the format it was asked for.
    let format_of = |job: &pb::ExportJob| job.request.as_ref().unwrap().format;
    assert_eq!(format_of(&eml_job), pb::ExportFormat::Eml as i32);
    assert_eq!(format_of(&csv_job), pb::ExportFormat::Csv as i32);

    let json_manifest = manifest(&json);
    let posts = json_posts(&json);
    assert!(
        posts.len() > 50,
        "a history worth checking: {}",
        posts.len()
    );

    // EML: every message parses without a defect, and the posts are the JSON archive's.
    let eml_manifest = manifest(&eml);
    assert_eq!(eml_manifest["format"], "cce-export-eml");
    assert_eq!(eml_manifest["totals"], json_manifest["totals"]);
    assert_eq!(eml_manifest["days"], json_manifest["days"]);
    let checked = python("check_eml.py", &eml);
    assert_eq!(checked["totals"], json_manifest["totals"]);
    let mut eml_posts = BTreeMap::new();
    for message in checked["messages"].as_array().unwrap() {
        let headers = &message["headers"];
        if headers["X-CCE-Item-Kind"] == "post" && headers.get("X-CCE-Created-At").is_some() {
            let key = (
                headers["X-CCE-Conversation-Id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                headers["X-CCE-Item-Id"].as_str().unwrap().to_owned(),
            );
            let from = message["from"]["address"].as_str().unwrap();
            assert!(from.ends_with(".chat.invalid"), "{from}");
            eml_posts.insert(key, message["body"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(eml_posts, posts, "the same posts with the same texts");

    // CSV: every file parses, one row per event, and the posts are the JSON archive's.
    let csv_manifest = manifest(&csv);
    assert_eq!(csv_manifest["format"], "cce-export-csv");
    assert_eq!(csv_manifest["totals"], json_manifest["totals"]);
    let checked = python("check_csv.py", &csv);
    assert_eq!(checked["totals"], json_manifest["totals"]);
    let rows = checked["rows"].as_array().unwrap();
    let ids: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), rows.len(), "no event twice");
    assert_eq!(
        rows.len() as u64,
        json_manifest["totals"]["events"].as_u64().unwrap(),
        "one row per event"
    );
    let csv_posts: BTreeSet<(String, String)> = rows
        .iter()
        .filter(|r| r["event_kind"] == "post")
        .map(|r| {
            (
                r["conversation_id"].as_str().unwrap().to_owned(),
                r["item_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let json_keys: BTreeSet<(String, String)> = posts.keys().cloned().collect();
    assert_eq!(csv_posts, json_keys);
    replica.shutdown().await;
}
