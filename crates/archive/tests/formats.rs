//! The EML and CSV formats end to end, in process: a history with every kind of event and
//! texts that are hard to carry (non-ASCII, emoji, CR/LF, quotes, commas, formula starts, long
//! and empty texts), threads, edits, deletions, events out of order and items created before
//! the range, exported in each format; the archive passes `verify`, and every message is
//! checked with Python's `email` parser and every CSV file with Python's `csv` module
//! (`tests/python/check_eml.py`, `check_csv.py`). What they read back is compared with the
//! JSON format's items for the same request (EML) and with the events themselves (CSV).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use archive::{DataFormat, export_to_sink};
use serde_json::{Value, json};
use support::history::{ACME_GLOBEX_DM, ACME_TEAM, ev};

const FROM: &str = "2026-02-01T00:00:00Z";
const TO: &str = "2026-02-03T00:00:00Z";

const TEXTS: [&str; 12] = [
    "hello",
    "héllo wörld — 😀 ✓ 名前のチーム",
    "two\r\nlines and a lone\rcarriage return and a\nline feed",
    "say \"hi\", then \"bye\"",
    "=SUM(A1:A9)",
    "+1 -1 @here",
    "'already quoted",
    "\ttabbed",
    "",
    "   spaces around   ",
    "=?UTF-8?B?Zm9v?= looks encoded\r\n--=_cce_part\r\n",
    "🚀",
];

fn long_text() -> String {
    // A long line with no space to fold at, and multi-byte characters across every boundary.
    "ü".repeat(3_000) + &"x".repeat(5_000)
}

fn people_and_conversations() -> Vec<Value> {
    vec![
        json!({"event_id": "a0", "type": "person.created", "occurred_at": "2026-01-01T00:00:00Z",
               "person": {"id": "ann", "company_id": "acme", "name": "Ann Ångström", "email": "ann@acme"}}),
        json!({"event_id": "a1", "type": "person.created", "occurred_at": "2026-01-01T00:00:00Z",
               "person": {"id": "hal", "company_id": "acme", "name": "Hal \"H\" O'Neil, Jr.", "email": "hal@acme"}}),
        ev(
            "c1",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            ACME_TEAM,
            json!({"name": "Desk «Zürich» 🚀, \"east\"", "created_by": "ann",
                   "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "hal", "company_id": "acme"},
                               {"person_id": "zed", "company_id": "acme"}]}),
        ),
        ev(
            "c2",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            ACME_GLOBEX_DM,
            json!({"created_by": "gus", "members": [{"person_id": "ann", "company_id": "acme"},
                   {"person_id": "gus", "company_id": "globex", "name": "Gus"}]}),
        ),
    ]
}

fn history() -> Vec<Value> {
    let mut all = people_and_conversations();
    let team = |id: &str, at: &str, ty: &str, fields: Value| ev(id, at, ty, ACME_TEAM, fields);
    let post = |post: &str, who: &str, text: &str| json!({"post_id": post, "author_id": who, "text": text});
    // Created before the range, changed inside it.
    all.push(team(
        "e-old",
        "2026-01-31T12:00:00Z",
        "post.created",
        post("old", "ann", "old text"),
    ));
    for (i, text) in TEXTS.iter().enumerate() {
        let at = format!("2026-02-01T09:{i:02}:00Z");
        all.push(team(
            &format!("e-t{i:02}"),
            &at,
            "post.created",
            post(&format!("t{i}"), "ann", text),
        ));
    }
    all.push(team(
        "e-long",
        "2026-02-01T09:30:00Z",
        "post.created",
        post("long", "hal", &long_text()),
    ));
    all.push(team("e-reply", "2026-02-01T09:31:00Z", "post.created",
        json!({"post_id": "r1", "author_id": "hal", "text": "a reply, ünïcödé", "parent_post_id": "t0"})));
    all.push(team(
        "e-ed1",
        "2026-02-01T10:00:00Z",
        "post.edited",
        json!({"post_id": "t1", "editor_id": "hal", "text": "edited once\r\n"}),
    ));
    all.push(team(
        "e-ed2",
        "2026-02-01T10:01:00Z",
        "post.edited",
        json!({"post_id": "t1", "editor_id": "ann", "text": "=edited twice"}),
    ));
    all.push(team(
        "e-del",
        "2026-02-01T10:02:00Z",
        "post.deleted",
        json!({"post_id": "t3", "deleted_by": "hal"}),
    ));
    all.push(team(
        "e-old-ed",
        "2026-02-01T10:03:00Z",
        "post.edited",
        json!({"post_id": "old", "editor_id": "ann", "text": "old, edited"}),
    ));
    all.push(team(
        "e-old-del",
        "2026-02-02T10:03:00Z",
        "post.deleted",
        json!({"post_id": "old", "deleted_by": "zed"}),
    ));
    // Edited before created (clocks that disagree), and created twice.
    all.push(team(
        "e-oo1",
        "2026-02-01T11:00:00Z",
        "post.edited",
        json!({"post_id": "oo", "editor_id": "ann", "text": "oo after"}),
    ));
    all.push(team(
        "e-oo2",
        "2026-02-01T11:01:00Z",
        "post.created",
        post("oo", "ann", "oo before"),
    ));
    all.push(team(
        "e-dup1",
        "2026-02-01T11:02:00Z",
        "post.created",
        post("dup", "ann", "first"),
    ));
    all.push(team(
        "e-dup2",
        "2026-02-01T11:03:00Z",
        "post.created",
        post("dup", "ann", "second"),
    ));
    // A note's life, and files with and without a post.
    all.push(team(
        "e-n1",
        "2026-02-01T12:00:00Z",
        "note.created",
        json!({"note_id": "n1", "author_id": "ann", "title": "Ideen für Q2 — 🚀", "text": "v1"}),
    ));
    all.push(team(
        "e-n2",
        "2026-02-01T12:01:00Z",
        "note.edited",
        json!({"note_id": "n1", "editor_id": "hal", "title": "Ideen", "text": "v2,\r\n\"quoted\""}),
    ));
    all.push(team(
        "e-n3",
        "2026-02-02T12:02:00Z",
        "note.deleted",
        json!({"note_id": "n1", "deleted_by": "ann"}),
    ));
    all.push(team("e-f1", "2026-02-01T13:00:00Z", "file.shared",
        json!({"file_id": "f1", "author_id": "ann", "name": "Q1 report — final, v2.pdf", "size": 123_456,
               "content_type": "application/pdf", "sha256": "ab".repeat(32), "post_id": "t0"})));
    all.push(team("e-f2", "2026-02-02T13:00:00Z", "file.shared",
        json!({"file_id": "f2", "author_id": "zed", "name": "=cmd.xlsx", "size": 0,
               "content_type": "application/vnd.ms-excel", "sha256": "cd".repeat(32), "post_id": null})));
    // A name too long for one header line.
    all.push(team(
        "e-f3",
        "2026-02-02T13:01:00Z",
        "file.shared",
        json!({"file_id": "f3", "author_id": "hal", "name": format!("{}.txt", "n".repeat(1_200)),
               "size": 1, "content_type": "text/plain", "sha256": "ef".repeat(32), "post_id": null}),
    ));
    // The direct chat, on the second day, and after the range.
    for (i, text) in TEXTS.iter().enumerate().take(5) {
        let at = format!("2026-02-02T08:{i:02}:00Z");
        all.push(ev(
            &format!("e-d{i}"),
            &at,
            "post.created",
            ACME_GLOBEX_DM,
            json!({"post_id": format!("d{i}"), "author_id": if i % 2 == 0 { "ann" } else { "gus" },
                   "text": text}),
        ));
    }
    all.push(ev(
        "e-after",
        "2026-02-03T00:00:00Z",
        "post.created",
        ACME_GLOBEX_DM,
        json!({"post_id": "late", "author_id": "ann", "text": "after the range"}),
    ));
    all
}

async fn export(format: DataFormat) -> Vec<u8> {
    let reader = support::log_of_exactly(&history()).await;
    let mut request = support::request("");
    request.format = format;
    let (bytes, _, _) = export_to_sink(&request, &reader, Vec::new(), |_| {})
        .await
        .unwrap();
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
    bytes
}

/// Runs a checker of `tests/python` on the archive; its JSON output.
fn python(script: &str, archive: &[u8]) -> Value {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(archive).unwrap();
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "tests",
        "python",
        script,
    ]
    .iter()
    .collect();
    let output = Command::new("python3")
        .arg(&path)
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

/// The JSON format's items for the same request: (path of the day, position, item).
async fn json_items() -> Vec<(String, usize, Value)> {
    let bytes = export(DataFormat::Json).await;
    let mut items = Vec::new();
    let mut positions: BTreeMap<String, usize> = BTreeMap::new();
    for (name, body) in archive::verify::read_entries(&bytes).unwrap() {
        let rel = name.split_once('/').unwrap().1;
        if !(rel.starts_with("Team_Chats/") || rel.starts_with("People_Chats/")) {
            continue;
        }
        let file: Value = serde_json::from_slice(&body).unwrap();
        let (folder, _) = rel.rsplit_once('/').unwrap();
        let day = format!("{folder}/{}", file["date"].as_str().unwrap());
        for item in file["items"].as_array().unwrap() {
            let position = positions.entry(day.clone()).or_default();
            *position += 1;
            items.push((day.clone(), *position, item.clone()));
        }
    }
    items
}

fn text_of(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

#[tokio::test]
async fn every_eml_message_parses_and_shows_its_item() {
    let bytes = export(DataFormat::Eml).await;
    let checked = python("check_eml.py", &bytes);
    let messages = checked["messages"].as_array().unwrap();
    let items = json_items().await;
    assert_eq!(messages.len(), items.len(), "one message per item");
    let by_path: BTreeMap<String, &Value> = messages
        .iter()
        .map(|m| {
            let path = m["path"].as_str().unwrap();
            (path.split_once('/').unwrap().1.to_owned(), m)
        })
        .collect();
    for (day, position, item) in &items {
        let kind = item["kind"].as_str().unwrap();
        let id = item["id"].as_str().unwrap();
        let prefix = format!("{day}/{position:06}_{kind}-");
        let (_, message) = by_path
            .range(prefix.clone()..)
            .next()
            .filter(|(path, _)| path.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no message {prefix}…"));
        let headers = &message["headers"];
        let what = format!("{prefix}{id}");
        assert_eq!(headers["X-CCE-Item-Kind"], kind, "{what}");
        assert_eq!(headers["X-CCE-Item-Id"], id, "{what}");
        assert_eq!(message["msg_type"], "ChatComplianceExport", "{what}");
        let parts = message["parts"].as_array().unwrap();
        let subject = message["subject"].as_str().unwrap();
        match kind {
            "post" => {
                assert_eq!(
                    message["body"],
                    text_of(&item["text"]),
                    "{what}: the body is the text"
                );
                let edits = item["edits"].as_array().unwrap();
                let befores: Vec<&Value> = parts
                    .iter()
                    .filter(|p| p["part"] == "edit-before")
                    .collect();
                let afters: Vec<&Value> =
                    parts.iter().filter(|p| p["part"] == "edit-after").collect();
                assert_eq!(
                    (befores.len(), afters.len()),
                    (edits.len(), edits.len()),
                    "{what}"
                );
                for ((edit, before), after) in edits.iter().zip(befores).zip(afters) {
                    assert_eq!(before["text"], text_of(&edit["text_before"]), "{what}");
                    assert_eq!(
                        before["text_before_unknown"],
                        edit["text_before"].is_null(),
                        "{what}"
                    );
                    assert_eq!(before["event_at"], edit["at"], "{what}");
                    assert_eq!(before["actor_id"], edit["editor"]["id"], "{what}");
                    assert_eq!(after["text"], edit["text"], "{what}");
                }
                let deleted: Vec<&Value> = parts.iter().filter(|p| p["part"] == "delete").collect();
                assert_eq!(
                    deleted.len(),
                    usize::from(item["deleted"].is_object()),
                    "{what}"
                );
                if let Some(part) = deleted.first() {
                    assert_eq!(
                        part["text"],
                        text_of(&item["deleted"]["text_before"]),
                        "{what}"
                    );
                    assert_eq!(part["actor_id"], item["deleted"]["by"]["id"], "{what}");
                }
                match item["parent_post_id"].as_str() {
                    Some(parent) if !item["created_at"].is_null() => {
                        let parent = format!("<post.{parent}.team1@acme.chat.invalid>");
                        assert_eq!(message["in_reply_to"], parent.as_str(), "{what}");
                        assert_eq!(message["references"], parent.as_str(), "{what}");
                    }
                    _ if item["created_at"].is_null() => {
                        // Changes of a post created elsewhere reply to its message.
                        let own = format!("<post.{id}.team1@acme.chat.invalid>");
                        assert_eq!(message["in_reply_to"], own.as_str(), "{what}");
                    }
                    _ => assert!(message["in_reply_to"].is_null(), "{what}"),
                }
                if let Some(author) = item["author"]["id"].as_str() {
                    // Gus is known only as a member of the direct chat, at globex.
                    let company = item["author"]["company_id"]
                        .as_str()
                        .unwrap_or(if author == "gus" { "globex" } else { "acme" });
                    let address = format!("{author}@{company}.chat.invalid");
                    assert_eq!(message["from"]["address"], address.as_str(), "{what}");
                }
            }
            "note" => {
                assert_eq!(message["body"], text_of(&item["text"]), "{what}");
                assert_eq!(
                    headers["X-CCE-Edit-Count"],
                    item["edit_count"].to_string(),
                    "{what}"
                );
                if let Some(title) = item["title"].as_str() {
                    assert_eq!(headers["X-CCE-Note-Title"], title, "{what}");
                }
            }
            _ => {
                assert_eq!(headers["X-CCE-File-Name"], item["name"], "{what}");
                assert_eq!(
                    headers["X-CCE-File-Size"],
                    item["size"].to_string(),
                    "{what}"
                );
                assert_eq!(headers["X-CCE-File-Sha256"], item["sha256"], "{what}");
                assert_eq!(
                    headers["X-CCE-File-Content-Type"], item["content_type"],
                    "{what}"
                );
            }
        }
        if day.starts_with("Team_Chats/") {
            assert!(
                subject.starts_with("[Desk «Zürich» 🚀, \"east\"] "),
                "{what}: {subject}"
            );
            assert_eq!(
                headers["X-CCE-Conversation-Name"],
                "Desk «Zürich» 🚀, \"east\""
            );
            let to: Vec<&str> = message["to"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["address"].as_str().unwrap())
                .collect();
            assert_eq!(
                to,
                [
                    "ann@acme.chat.invalid",
                    "hal@acme.chat.invalid",
                    "zed@acme.chat.invalid"
                ],
                "{what}"
            );
        }
    }
    // Spot checks a reader would notice.
    let find = |id: &str| {
        messages
            .iter()
            .find(|m| {
                m["headers"]["X-CCE-Item-Id"] == id && m["headers"]["X-CCE-Item-Kind"] == "post"
            })
            .unwrap()
    };
    let t1 = find("t1");
    assert_eq!(t1["body"], "=edited twice");
    assert_eq!(t1["from"]["name"], "Ann Ångström");
    assert_eq!(t1["message_id"], "<post.t1.team1@acme.chat.invalid>");
    assert_eq!(t1["date"], "2026-02-01T09:01:00+00:00");
    let long = find("long");
    assert_eq!(long["body"], long_text().as_str());
    assert_eq!(long["from"]["name"], "Hal \"H\" O'Neil, Jr.");
    assert_eq!(find("t2")["body"], TEXTS[2], "CR and LF survive");
    // Another company's person, in the direct chat: at their company's domain.
    let gus = find("d1");
    assert_eq!(gus["from"]["address"], "gus@globex.chat.invalid");
    assert_eq!(gus["from"]["name"], "Gus");
    let to: Vec<&Value> = gus["to"].as_array().unwrap().iter().collect();
    assert_eq!(to.len(), 2, "{to:?}");
    assert!(
        to.iter()
            .any(|a| a["address"] == "gus@globex.chat.invalid" && a["name"] == "Gus")
    );
    let ids: Vec<&str> = messages
        .iter()
        .filter(|m| m["headers"]["X-CCE-Item-Id"] == "dup")
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "<post.dup.team1@acme.chat.invalid>",
            "<post.dup.team1.2@acme.chat.invalid>"
        ]
    );
}

/// The events of the history the CSV must hold, by event id.
fn events_in_range() -> BTreeMap<String, Value> {
    let (from, to): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        (FROM.parse().unwrap(), TO.parse().unwrap());
    history()
        .into_iter()
        .filter(|e| {
            let at: chrono::DateTime<chrono::Utc> =
                e["occurred_at"].as_str().unwrap().parse().unwrap();
            let ty = e["type"].as_str().unwrap();
            at >= from && at < to && !ty.starts_with("person.") && !ty.starts_with("conversation.")
        })
        .map(|e| (e["event_id"].as_str().unwrap().to_owned(), e))
        .collect()
}

#[tokio::test]
async fn every_csv_row_parses_and_is_one_event() {
    let bytes = export(DataFormat::Csv).await;
    let checked = python("check_csv.py", &bytes);
    let rows = checked["rows"].as_array().unwrap();
    let events = events_in_range();
    assert_eq!(rows.len(), events.len(), "one row per event");
    let mut previous = None;
    for row in rows {
        let id = row["event_id"].as_str().unwrap();
        let event = events
            .get(id)
            .unwrap_or_else(|| panic!("row of no event: {row}"));
        let (kind, item, actor) = match event["type"].as_str().unwrap() {
            "post.created" => ("post", "post_id", "author_id"),
            "post.edited" => ("edit", "post_id", "editor_id"),
            "post.deleted" => ("delete", "post_id", "deleted_by"),
            "note.created" => ("note", "note_id", "author_id"),
            "note.edited" => ("note_edit", "note_id", "editor_id"),
            "note.deleted" => ("note_delete", "note_id", "deleted_by"),
            _ => ("file", "file_id", "author_id"),
        };
        assert_eq!(row["event_kind"], kind, "{id}");
        assert_eq!(row["item_id"], event[item], "{id}");
        assert_eq!(row["actor_id"], event[actor], "{id}");
        assert_eq!(
            row["text"],
            text_of(&event["text"]),
            "{id}: the text round-trips"
        );
        assert_eq!(row["title"], text_of(&event["title"]), "{id}");
        assert_eq!(row["event_time"], event["occurred_at"], "{id}");
        assert_eq!(
            row["local_date"],
            &event["occurred_at"].as_str().unwrap()[..10],
            "{id}"
        );
        let conversation = &event["conversation"]["id"];
        assert_eq!(row["conversation_id"], *conversation, "{id}");
        if kind == "file" {
            assert_eq!(row["file_name"], event["name"], "{id}");
            assert_eq!(row["file_size"], event["size"].to_string(), "{id}");
            assert_eq!(row["file_sha256"], event["sha256"], "{id}");
        }
        // Log order: by time, within a day file.
        let at = row["event_time"].as_str().unwrap().to_owned();
        assert!(
            previous.as_ref().is_none_or(|p: &String| *p <= at),
            "{id} out of order"
        );
        previous = Some(at);
    }
    let row = |id: &str| rows.iter().find(|r| r["event_id"] == id).unwrap();
    assert_eq!(row("e-ed1")["previous_text"], TEXTS[1]);
    assert_eq!(row("e-ed2")["previous_text"], "edited once\r\n");
    assert_eq!(row("e-ed2")["previous_text_known"], "yes");
    assert_eq!(row("e-del")["previous_text"], TEXTS[3]);
    assert_eq!(
        row("e-old-ed")["previous_text_known"],
        "no",
        "created before the range"
    );
    assert_eq!(row("e-old-del")["previous_text"], "old, edited");
    assert_eq!(row("e-reply")["parent_post_id"], "t0");
    assert_eq!(
        row("e-t00")["conversation_name"],
        "Desk «Zürich» 🚀, \"east\""
    );
    assert_eq!(row("e-t00")["actor_name"], "Ann Ångström");
    assert_eq!(row("e-long")["text"], long_text().as_str());
    assert_eq!(
        row("e-f2")["file_name"],
        "=cmd.xlsx",
        "the guard is removed on reading"
    );
    let files: Vec<&str> = rows.iter().map(|r| r["file"].as_str().unwrap()).collect();
    assert!(files.contains(&"Events/2026-02-01.csv") && files.contains(&"Events/2026-02-02.csv"));
}

/// A spreadsheet shows a guarded cell as typed: the raw file holds `'=SUM(…)`, never a cell
/// starting with `=`.
#[tokio::test]
async fn csv_cells_that_a_spreadsheet_would_run_are_guarded() {
    let bytes = export(DataFormat::Csv).await;
    let entries = archive::verify::read_entries(&bytes).unwrap();
    let (_, day) = entries
        .iter()
        .find(|(name, _)| name.ends_with("Events/2026-02-01.csv"))
        .unwrap();
    let text = String::from_utf8(day.clone()).unwrap();
    assert!(text.starts_with("\u{feff}event_id,event_time,local_date,event_kind,"));
    assert!(text.contains(",'=SUM(A1:A9),"), "guarded");
    assert!(text.contains(",'+1 -1 @here,"));
    assert!(text.contains(",''already quoted,"));
    assert!(text.contains(",\"say \"\"hi\"\", then \"\"bye\"\"\","));
    assert!(!text.contains(",=SUM"));
}

#[tokio::test]
async fn the_manifest_names_the_format_and_no_day_files_are_written() {
    for (format, name) in [
        (DataFormat::Eml, "cce-export-eml"),
        (DataFormat::Csv, "cce-export-csv"),
    ] {
        let bytes = export(format).await;
        let entries = archive::verify::read_entries(&bytes).unwrap();
        let (_, manifest) = entries
            .iter()
            .find(|(n, _)| n.ends_with("/manifest.json"))
            .unwrap();
        let manifest: Value = serde_json::from_slice(manifest).unwrap();
        assert_eq!(manifest["format"], name);
        assert!(manifest["totals"]["edits"].as_u64().unwrap() >= 4);
        assert!(
            !entries
                .iter()
                .any(|(n, _)| n.ends_with(".json") && n.contains("_Chats/"))
        );
    }
}

/// Rebuilds an archive with `change` applied to its entries (content by name; `None` drops
/// the entry) and the manifest's `files` made to agree with the changed files, so that only
/// the recount can tell.
async fn doctored(bytes: &[u8], change: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    use sha2::Digest;
    let mut entries = Vec::new();
    let mut changed: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for (name, body) in archive::verify::read_entries(bytes).unwrap() {
        let rel = name.split_once('/').unwrap().1.to_owned();
        let after = change(&rel, body.clone());
        if after.as_ref() != Some(&body) {
            changed.insert(rel, after.clone());
        }
        if let Some(after) = after {
            entries.push((name, after));
        }
    }
    assert!(!changed.is_empty(), "nothing doctored");
    for (name, body) in &mut entries {
        if name.ends_with("/manifest.json") {
            let mut manifest: Value = serde_json::from_slice(body).unwrap();
            let files = manifest["files"].as_array_mut().unwrap();
            files.retain(|f| !matches!(changed.get(f["path"].as_str().unwrap()), Some(None)));
            for file in files {
                if let Some(Some(new)) = changed.get(file["path"].as_str().unwrap()) {
                    file["size"] = json!(new.len());
                    file["sha256"] = json!(hex::encode(sha2::Sha256::digest(new)));
                }
            }
            *body = serde_json::to_vec_pretty(&manifest).unwrap();
        }
    }
    let mut zip = archive::ZipWriter::new(Vec::new(), 6, 1);
    for (name, body) in entries {
        zip.add(name, body.into()).await.unwrap();
    }
    zip.finish().await.unwrap().0
}

fn problems(bytes: &[u8]) -> Vec<String> {
    archive::verify::verify(&mut std::io::Cursor::new(bytes))
        .unwrap()
        .problems
}

/// A message or a row missing, with the manifest's file list made to agree: `verify` recounts
/// the events and names the day whose counts the files do not bear out.
#[tokio::test]
async fn verify_recounts_messages_and_rows_against_the_manifest() {
    let eml = export(DataFormat::Eml).await;
    let without_a_message = doctored(&eml, |name, body| {
        (!name.ends_with("_post-t3.eml")).then_some(body)
    })
    .await;
    let found = problems(&without_a_message);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("/2026-02-01/: manifest.json counts")
            && found[0].contains("but the file holds"),
        "{found:?}"
    );

    let csv = export(DataFormat::Csv).await;
    let without_a_row = doctored(&csv, |name, body| {
        if name != "Events/2026-02-01.csv" {
            return Some(body);
        }
        let text = String::from_utf8(body).unwrap();
        let kept: Vec<&str> = text
            .split_inclusive("\r\n")
            .filter(|line| !line.starts_with("e-del,"))
            .collect();
        Some(kept.concat().into_bytes())
    })
    .await;
    let found = problems(&without_a_row);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("deletes 1") && found[0].contains("deletes 0"),
        "{found:?}"
    );

    // A row of a kind the format does not have is named.
    let odd_kind = doctored(&csv, |name, body| {
        if name != "Events/2026-02-01.csv" {
            return Some(body);
        }
        let text = String::from_utf8(body).unwrap();
        Some(text.replace(",delete,team1,", ",erase,team1,").into_bytes())
    })
    .await;
    let found = problems(&odd_kind);
    assert!(
        found.iter().any(|p| p.contains("event_kind \"erase\"")),
        "{found:?}"
    );
}

/// A busy day in both conversations, so that a small memory budget moves day files to disk.
fn busy_history() -> Vec<Value> {
    let mut all = history();
    for i in 0..3_000 {
        let at = format!(
            "2026-02-01T{:02}:{:02}:{:02}Z",
            14 + i / 3_600,
            (i / 60) % 60,
            i % 60
        );
        let conversation = if i % 3 == 0 {
            ACME_GLOBEX_DM
        } else {
            ACME_TEAM
        };
        let (ty, fields) = if i % 7 == 6 {
            (
                "post.edited",
                json!({"post_id": format!("b{}", i - 6), "editor_id": "hal",
                                   "text": format!("edited {i} ✓")}),
            )
        } else {
            (
                "post.created",
                json!({"post_id": format!("b{i}"), "author_id": "ann",
                                    "text": format!("{} #{i}", TEXTS[i % TEXTS.len()])}),
            )
        };
        all.push(ev(&format!("b{i:05}"), &at, ty, conversation, fields));
    }
    all
}

/// The same request gives the same bytes in EML and CSV whatever the export may use: threads,
/// and a memory budget small enough that day files move to disk (EML messages are then made
/// from items read back from disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eml_and_csv_archives_are_the_same_whatever_the_limits() {
    let reader = support::log_of_exactly(&busy_history()).await;
    for format in [DataFormat::Eml, DataFormat::Csv] {
        let mut outputs = Vec::new();
        for (threads, memory_bytes) in [
            (4, archive::ExportLimits::default().memory_bytes),
            (1, 64 << 10),
        ] {
            let mut request = support::request("");
            request.format = format;
            request.limits = archive::ExportLimits {
                memory_bytes,
                threads,
                ..archive::ExportLimits::default()
            };
            let (bytes, _, summary) = export_to_sink(&request, &reader, Vec::new(), |_| {})
                .await
                .unwrap();
            assert!(summary.totals.posts > 2_500, "{summary:?}");
            assert!(
                problems(&bytes).is_empty(),
                "{format:?} {:?}",
                problems(&bytes)
            );
            outputs.push(bytes);
        }
        assert!(
            outputs[0] == outputs[1],
            "{format:?}: the bytes depend on the limits"
        );
    }
}
