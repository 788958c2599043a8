//! Rendering, table by table, over an in-memory log: layout, scope, edit logs, deletes, notes,
//! files, time zones, equal timestamps at day and range boundaries, filters, determinism.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use archive::{ExportRequest, export_to_sink};
use compliance_log::LogReader;
use serde_json::{Value, json};
use support::history::history;
use support::request;

async fn log() -> LogReader {
    support::log_of_exactly(&history()).await
}

async fn export(request: &ExportRequest) -> (Vec<u8>, BTreeMap<String, Value>) {
    let reader = log().await;
    let (bytes, _, _) = export_to_sink(request, &reader, Vec::new(), |_| {})
        .await
        .unwrap();
    let files = archive::verify::read_entries(&bytes)
        .unwrap()
        .into_iter()
        .map(|(name, body)| {
            let rel = name.split_once('/').unwrap().1.to_owned();
            (rel, serde_json::from_slice(&body).unwrap())
        })
        .collect();
    (bytes, files)
}

fn items(file: &Value) -> Vec<&Value> {
    file["items"].as_array().unwrap().iter().collect()
}

#[tokio::test]
async fn layout_scope_history_notes_and_files() {
    let (bytes, files) = export(&request("")).await;
    let names: Vec<&String> = files.keys().collect();
    assert_eq!(
        names,
        [
            "People_And_Groups/users.json",
            "People_Chats/dm1/2026-02-01.json",
            "People_Chats/dm1/2026-02-02.json",
            "Team_Chats/Trading_Desk__team1/2026-02-01.json",
            "Team_Chats/Trading_Desk__team1/2026-02-02.json",
            "Teams/teams.json",
            "manifest.json",
        ]
    );
    // Scope: the globex-owned group is nowhere, though acme's ann is in it.
    assert!(!String::from_utf8_lossy(&bytes).contains("grp1"));
    let users = &files["People_And_Groups/users.json"]["conversations"];
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["id"], "dm1");
    assert_eq!(
        files["Teams/teams.json"]["conversations"][0]["name"],
        "../Trading/Desk"
    );

    let day1 = items(&files["Team_Chats/Trading_Desk__team1/2026-02-01.json"]);
    let t1 = day1.iter().find(|i| i["id"] == "t1").unwrap();
    assert_eq!(t1["text"], "second");
    assert_eq!(t1["edits"][0]["text_before"], "first");
    assert_eq!(t1["edits"][0]["editor"]["name"], "Ann Ångström");
    let note = day1.iter().find(|i| i["id"] == "n1").unwrap();
    assert_eq!(note["text"], "v2");
    assert!(note.get("edits").is_none(), "notes carry no edit log");
    let file = day1.iter().find(|i| i["kind"] == "file").unwrap();
    assert_eq!(file["content_included"], false);
    assert_eq!(file["size"], 1234);
    let reply = day1.iter().find(|i| i["id"] == "t2").unwrap();
    assert_eq!(reply["parent_post_id"], "t1");

    let day2 = items(&files["Team_Chats/Trading_Desk__team1/2026-02-02.json"]);
    let old = day2.iter().find(|i| i["id"] == "old").unwrap();
    assert_eq!(
        old["created_elsewhere"], true,
        "an edit of a post created before the range"
    );
    assert_eq!(old["edits"][0]["text"], "old text, edited");
    let deleted = day2.iter().find(|i| i["id"] == "t2").unwrap();
    assert_eq!(deleted["deleted"]["by"]["id"], "ann");
    assert_eq!(deleted["deleted"]["text_before"], "reply");
    assert!(
        !day2.iter().any(|i| i["id"] == "late"),
        "the range's end is exclusive"
    );

    // Equal timestamps at midnight: both on the 2nd, in id order; the one before on the 1st.
    let dm2: Vec<&str> = items(&files["People_Chats/dm1/2026-02-02.json"])
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(dm2, ["d1", "d2"]);
    let dm1: Vec<&str> = items(&files["People_Chats/dm1/2026-02-01.json"])
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(dm1, ["d0"]);

    // The manifest lists every other file with its hash, and the counts.
    let manifest = &files["manifest.json"];
    assert_eq!(manifest["files"].as_array().unwrap().len(), files.len() - 1);
    assert_eq!(manifest["totals"]["edits"], 2);
    assert_eq!(manifest["totals"]["deletes"], 1);
    assert_eq!(manifest["format_version"], 5);
    // Read without a position (as `cce-archive` does): the manifest names none.
    let position = &manifest["log_position"];
    assert_eq!(position["log_format_version"], 2, "{position}");
    assert!(position["topic"].is_null(), "{position}");
    assert!(position["durable_until"].is_null(), "{position}");
    assert_eq!(position["partitions"], json!([]), "{position}");
    // `days` has one line per day file, in date order, and adds up to each conversation's
    // counts, which add up to the totals.
    let days = manifest["days"].as_array().unwrap();
    let day_files: Vec<String> = files
        .keys()
        .filter(|path| path.contains("_Chats/"))
        .cloned()
        .collect();
    assert_eq!(days.len(), day_files.len());
    let dates: Vec<&str> = days.iter().map(|d| d["date"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|w| w[0] <= w[1]), "{dates:?}");
    for day in days {
        let conversation = manifest["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["conversation_id"] == day["conversation_id"])
            .unwrap();
        let path = format!(
            "{}/{}.json",
            conversation["folder"].as_str().unwrap(),
            day["date"].as_str().unwrap()
        );
        assert!(files.contains_key(&path), "{path} listed in days");
        // Every item of the file is there because of at least one event that day.
        let c = &day["counts"];
        let events = c["events"].as_u64().unwrap();
        assert!(events >= items(&files[&path]).len() as u64, "{path}: {c}");
        let kinds = ["posts", "edits", "deletes", "notes", "files_shared"];
        assert_eq!(
            events,
            kinds.iter().map(|k| c[k].as_u64().unwrap()).sum::<u64>(),
            "{path}: {c}"
        );
    }
    let mut total_events = 0;
    for conversation in manifest["conversations"].as_array().unwrap() {
        let id = &conversation["conversation_id"];
        let from_days: u64 = days
            .iter()
            .filter(|d| &d["conversation_id"] == id)
            .map(|d| d["counts"]["events"].as_u64().unwrap())
            .sum();
        assert_eq!(conversation["counts"]["events"], from_days);
        total_events += from_days;
    }
    assert_eq!(manifest["totals"]["events"], total_events);
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn time_zones_move_day_boundaries() {
    // In New York (UTC-5) the midnight-UTC posts belong to Feb 1st.
    let (_, files) = export(&request("America/New_York")).await;
    let feb1: Vec<&str> = items(&files["People_Chats/dm1/2026-02-01.json"])
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(feb1, ["d0", "d1", "d2"]);
    assert_eq!(
        files["manifest.json"]["request"]["time_zone"],
        "America/New_York"
    );
}

#[tokio::test]
async fn filters_by_person_and_conversation() {
    let mut by_conversation = request("");
    by_conversation.conversation_ids.insert("dm1".into());
    let (_, files) = export(&by_conversation).await;
    assert!(
        files.keys().all(|k| !k.starts_with("Team_Chats/")),
        "{:?}",
        files.keys()
    );
    assert!(files.contains_key("People_Chats/dm1/2026-02-02.json"));

    let mut by_person = request("");
    by_person.person_ids.insert("nobody".into());
    let (_, files) = export(&by_person).await;
    assert!(
        files.keys().all(|k| !k.contains("_Chats/")),
        "{:?}",
        files.keys()
    );
}

#[tokio::test]
async fn the_same_request_gives_the_same_archive() {
    let (a, _) = export(&request("Europe/London")).await;
    let (b, _) = export(&request("Europe/London")).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn the_manifest_records_the_log_position_the_archive_was_read_at() {
    let at = |s: &str| Some(s.parse().unwrap());
    let position = compliance_log::LogPosition {
        topic: "chat-events".into(),
        expected_partitions: 2,
        partitions: vec![
            compliance_log::PartitionPosition {
                partition: 0,
                epoch: 1,
                durable_offset: 5021,
                time_watermark: at("2026-11-26T10:00:05Z"),
            },
            compliance_log::PartitionPosition {
                partition: 1,
                epoch: 2,
                durable_offset: 17,
                time_watermark: at("2026-11-26T10:00:02Z"),
            },
        ],
    };
    let mut read_at = request("UTC");
    read_at.position = Some(position);
    let (bytes, files) = export(&read_at).await;
    assert_eq!(
        files["manifest.json"]["log_position"],
        json!({
            "log_format_version": 2,
            "events_before": "2026-02-03T00:00:00Z",
            "events_read": files["manifest.json"]["log_position"]["events_read"],
            "topic": "chat-events",
            "durable_until": "2026-11-26T10:00:02Z",
            "partitions": [
                {"partition": 0, "epoch": 1, "durable_offset": 5021,
                 "time_watermark": "2026-11-26T10:00:05Z"},
                {"partition": 1, "epoch": 2, "durable_offset": 17,
                 "time_watermark": "2026-11-26T10:00:02Z"},
            ],
        })
    );
    assert!(files["manifest.json"].get("source_offsets").is_none());
    // The log here is format 1 (inside every position): the same content as without one.
    let (_, unpositioned) = export(&request("UTC")).await;
    assert_eq!(
        files["manifest.json"]["totals"],
        unpositioned["manifest.json"]["totals"]
    );
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn bad_requests_say_what_to_change() {
    let reader = log().await;
    let mut reversed = request("");
    reversed.to = "2026-01-01T00:00:00Z".parse().unwrap();
    let error = export_to_sink(&reversed, &reader, Vec::new(), |_| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("reversed"), "{error}");
    let error = export_to_sink(&request("Mars/Olympus"), &reader, Vec::new(), |_| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("IANA"), "{error}");
}

#[tokio::test]
async fn a_day_of_large_texts_is_split_into_parts_by_size() {
    // 10 posts of 900 KB: about 9 MB of JSON in one day (past 8 MiB), far under 10,000 items.
    let events: Vec<Value> = (0..10)
        .map(|i| {
            support::ev(
                &format!("e{i:02}"),
                &format!("2026-02-01T10:{i:02}:00Z"),
                "post.created",
                json!({"post_id": format!("p{i:02}"), "author_id": "ann",
                       "text": format!("{i:02}{}", "x".repeat(900_000))}),
            )
        })
        .collect();
    let (days, manifest) = support::export(&events, "").await;
    let names: Vec<&str> = days.keys().map(String::as_str).collect();
    assert_eq!(names, ["2026-02-01", "2026-02-01_part-2"]);
    let mut ids = Vec::new();
    for (part, file) in days.values().enumerate() {
        assert_eq!(
            (&file["part"], &file["parts"]),
            (&json!(part + 1), &json!(2))
        );
        let bytes = serde_json::to_vec_pretty(file).unwrap().len();
        assert!(
            bytes <= archive::render::MAX_PART_BYTES + 1_000_000,
            "part {part}: {bytes} bytes"
        );
        ids.extend(
            items(file)
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
    }
    let want: Vec<String> = (0..10).map(|i| format!("p{i:02}")).collect();
    assert_eq!(ids, want, "every post once, in order across the parts");
    assert_eq!(manifest["totals"]["posts"], 10);
}

/// The job's percent never goes back, and ends at 100: a format-1 log's total grows as its
/// days are listed (the share of data read would dip), and the share switches from the range's
/// time to the data once the total is known.
#[tokio::test]
async fn progress_only_goes_forward() {
    let start: chrono::DateTime<chrono::Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
    let events: Vec<Value> = (0..24 * 20)
        .map(|i| {
            let at = (start + chrono::Duration::minutes(37 * i))
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            support::ev(
                &format!("e{i}"),
                &at,
                "post.created",
                json!({"post_id": format!("p{i}"), "author_id": "ann", "text": "hello"}),
            )
        })
        .collect();
    let reader = support::log_of(&events).await;
    let mut request = request("");
    request.to = "2026-03-01T00:00:00Z".parse().unwrap();
    let mut seen = Vec::new();
    export_to_sink(&request, &reader, Vec::new(), |p| seen.push(p.percent))
        .await
        .unwrap();
    assert!(seen.len() > 10, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&100));
}
