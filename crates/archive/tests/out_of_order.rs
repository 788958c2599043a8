//! Events whose times are out of order — an edit or deletion timed before its item's creation,
//! when producers' clocks disagree — on one day, across days, across the range's start, and in
//! any order (a property test): every event of the range is in the archive exactly once,
//! flagged where it is out of order, nothing invented, and `verify` reconciles the counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::{ev, export, export_bytes};

fn create(id: &str, at: &str, text: &str) -> Value {
    ev(
        id,
        at,
        "post.created",
        json!({"post_id": "p", "author_id": "ann", "text": text}),
    )
}

fn edit(id: &str, at: &str, text: &str) -> Value {
    ev(
        id,
        at,
        "post.edited",
        json!({"post_id": "p", "editor_id": "ann", "text": text}),
    )
}

fn delete(id: &str, at: &str) -> Value {
    ev(
        id,
        at,
        "post.deleted",
        json!({"post_id": "p", "deleted_by": "ann"}),
    )
}

/// The one item a day file holds.
fn only_item(days: &BTreeMap<String, Value>, date: &str) -> Value {
    let items = days[date]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{date}: {items:?}");
    items[0].clone()
}

fn day_counts(manifest: &Value, date: &str) -> Value {
    manifest["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["date"] == date)
        .unwrap()["counts"]
        .clone()
}

#[tokio::test]
async fn a_deletion_before_its_creation_on_one_day_stays_flagged() {
    // The reported case: the item showed `deleted: null` while the manifest counted it.
    let (days, manifest) = export(
        &[
            delete("e1", "2026-02-01T10:00:00Z"),
            create("e2", "2026-02-01T10:05:00Z", "hello"),
        ],
        "",
    )
    .await;
    let item = only_item(&days, "2026-02-01");
    assert_eq!(item["created_at"], "2026-02-01T10:05:00Z");
    assert_eq!(item["text"], "hello");
    assert_eq!(item["deleted"]["at"], "2026-02-01T10:00:00Z");
    assert_eq!(item["deleted"]["out_of_order"], true);
    assert_eq!(
        item["deleted"]["text_before"],
        Value::Null,
        "unknown, not guessed"
    );
    assert!(item.get("created_elsewhere").is_none());
    let counts = day_counts(&manifest, "2026-02-01");
    assert_eq!(
        (counts["posts"].as_u64(), counts["deletes"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn an_edit_before_its_creation_on_one_day_stays_flagged() {
    let (days, manifest) = export(
        &[
            edit("e1", "2026-02-01T10:00:00Z", "edited"),
            create("e2", "2026-02-01T10:05:00Z", "original"),
            edit("e3", "2026-02-01T10:10:00Z", "edited again"),
        ],
        "",
    )
    .await;
    let item = only_item(&days, "2026-02-01");
    assert_eq!(item["created_at"], "2026-02-01T10:05:00Z");
    let edits = item["edits"].as_array().unwrap();
    assert_eq!(edits.len(), 2);
    assert_eq!(edits[0]["at"], "2026-02-01T10:00:00Z");
    assert_eq!(edits[0]["text"], "edited");
    assert_eq!(edits[0]["out_of_order"], true);
    assert_eq!(edits[0]["text_before"], Value::Null);
    // The edit after the creation is in order; its text before is the creation's.
    assert!(edits[1].get("out_of_order").is_none());
    assert_eq!(edits[1]["text_before"], "original");
    assert_eq!(item["text"], "edited again");
    assert_eq!(day_counts(&manifest, "2026-02-01")["edits"], 2);
}

#[tokio::test]
async fn changes_on_a_day_before_their_creation_stay_on_that_day() {
    for (change, check) in [
        (delete("e1", "2026-02-01T23:59:59Z"), "deleted" as &str),
        (edit("e1", "2026-02-01T23:59:59Z", "edited"), "edits"),
    ] {
        let (days, manifest) =
            export(&[change, create("e2", "2026-02-02T00:00:01Z", "hi")], "").await;
        // The 1st: the change, on an item whose creation is elsewhere; not claimed to be
        // before the range, and not flagged (the creation was not known yet).
        let first = only_item(&days, "2026-02-01");
        assert_eq!(first["created_elsewhere"], true, "{check}");
        assert_eq!(first["created_at"], Value::Null);
        assert!(first.get("created_before_range").is_none());
        match check {
            "deleted" => assert_eq!(first["deleted"]["at"], "2026-02-01T23:59:59Z"),
            _ => assert_eq!(first["edits"][0]["text"], "edited"),
        }
        // The 2nd: the creation, naming the day that holds its earlier change.
        let second = only_item(&days, "2026-02-02");
        assert_eq!(second["created_at"], "2026-02-02T00:00:01Z", "{check}");
        assert_eq!(second["changed_before_creation_on"], json!(["2026-02-01"]));
        assert_eq!(
            second["deleted"],
            Value::Null,
            "the deletion is shown once, on the 1st"
        );
        assert_eq!(second["edits"], json!([]));
        assert_eq!(manifest["totals"]["events"], 2, "{check}");
    }
}

#[tokio::test]
async fn across_the_range_start_each_event_belongs_to_the_range_by_its_own_time() {
    // A deletion timed before the range, its creation inside: the deletion is not in the range.
    let (days, manifest) = export(
        &[
            delete("e1", "2026-01-31T23:59:59Z"),
            create("e2", "2026-02-01T00:00:01Z", "hi"),
        ],
        "",
    )
    .await;
    let item = only_item(&days, "2026-02-01");
    assert_eq!(item["deleted"], Value::Null);
    assert!(item.get("changed_before_creation_on").is_none());
    assert_eq!(manifest["totals"]["deletes"], 0);
    assert_eq!(manifest["totals"]["posts"], 1);

    // A creation before the range, its change inside (in order): the change on a placeholder.
    let (days, _) = export(
        &[
            create("e1", "2026-01-31T23:59:59Z", "hi"),
            edit("e2", "2026-02-01T00:00:00Z", "edited"),
        ],
        "",
    )
    .await;
    let item = only_item(&days, "2026-02-01");
    assert_eq!(item["created_elsewhere"], true);
    assert_eq!(item["edits"][0]["text"], "edited");
    assert!(item["edits"][0].get("out_of_order").is_none());

    // A change at the range's first instant, its creation just after: one day, flagged.
    let (days, _) = export(
        &[
            edit("e1", "2026-02-01T00:00:00Z", "edited"),
            create("e2", "2026-02-01T00:00:01Z", "hi"),
        ],
        "",
    )
    .await;
    assert_eq!(
        only_item(&days, "2026-02-01")["edits"][0]["out_of_order"],
        true
    );
}

#[tokio::test]
async fn a_change_whose_item_is_never_created_in_the_range_stays_a_placeholder() {
    // The creation is timed at the range's end (clocks that disagree): not in the range.
    let (days, manifest) = export(
        &[
            delete("e1", "2026-02-02T23:00:00Z"),
            create("e2", "2026-02-03T00:00:00Z", "late"),
        ],
        "",
    )
    .await;
    assert_eq!(days.len(), 1);
    let item = only_item(&days, "2026-02-02");
    assert_eq!(item["created_elsewhere"], true);
    assert_eq!(item["deleted"]["at"], "2026-02-02T23:00:00Z");
    assert_eq!(manifest["totals"]["posts"], 0);
    assert_eq!(manifest["totals"]["deletes"], 1);
}

fn note(id: &str, at: &str, ty: &str, text: &str) -> Value {
    let fields = match ty {
        "note.created" => json!({"note_id": "n", "author_id": "ann", "title": "T", "text": text}),
        "note.edited" => json!({"note_id": "n", "editor_id": "ann", "title": "T", "text": text}),
        _ => json!({"note_id": "n", "deleted_by": "ann"}),
    };
    ev(id, at, ty, fields)
}

#[tokio::test]
async fn a_note_edited_before_its_creation_shows_the_edit() {
    let (days, manifest) = export(
        &[
            note("e1", "2026-02-01T10:00:00Z", "note.edited", "v2"),
            note("e2", "2026-02-01T10:05:00Z", "note.created", "v1"),
        ],
        "",
    )
    .await;
    let item = only_item(&days, "2026-02-01");
    assert_eq!(item["created_at"], "2026-02-01T10:05:00Z");
    assert_eq!(item["author"]["id"], "ann");
    // A note keeps no edit log: its final state is its last edit's, which the creation must
    // not replace (the edit's content would be lost).
    assert_eq!(item["text"], "v2");
    assert_eq!(item["last_edited_at"], "2026-02-01T10:00:00Z");
    assert_eq!(item["last_edit_out_of_order"], true);
    assert_eq!(item["edit_count"], 1);
    assert!(item.get("edits").is_none(), "notes carry no edit log");
    assert_eq!(day_counts(&manifest, "2026-02-01")["notes"], 2);

    // Across days: the edit on a placeholder on the 1st, the creation on the 2nd.
    let (days, _) = export(
        &[
            note("e1", "2026-02-01T23:59:00Z", "note.edited", "v2"),
            note("e2", "2026-02-02T00:01:00Z", "note.created", "v1"),
            note("e3", "2026-02-02T00:02:00Z", "note.deleted", ""),
        ],
        "",
    )
    .await;
    let first = only_item(&days, "2026-02-01");
    assert_eq!(
        (
            &first["created_elsewhere"],
            &first["text"],
            &first["edit_count"]
        ),
        (&json!(true), &json!("v2"), &json!(1))
    );
    let second = only_item(&days, "2026-02-02");
    assert_eq!(second["text"], "v1");
    assert_eq!(second["edit_count"], 0);
    assert_eq!(second["changed_before_creation_on"], json!(["2026-02-01"]));
    assert_eq!(second["deleted"]["at"], "2026-02-02T00:02:00Z");
    assert!(second["deleted"].get("out_of_order").is_none());
}

/// The reported archive, made again by hand: the day file shows `deleted: null` while the
/// manifest counts the deletion, and the manifest's size and hash of that file are updated so
/// that only the counts can tell. `verify` must fail, naming the file and both counts.
#[tokio::test]
async fn verify_fails_when_a_day_file_does_not_hold_what_the_manifest_counts() {
    use sha2::Digest;
    let bytes = export_bytes(
        &[
            delete("e1", "2026-02-01T10:00:00Z"),
            create("e2", "2026-02-01T10:05:00Z", "hello"),
        ],
        "",
    )
    .await;
    let day_path = format!("{}/2026-02-01.json", support::FOLDER);
    let mut entries = archive::verify::read_entries(&bytes).unwrap();
    let mut day: Option<Vec<u8>> = None;
    for (name, body) in &mut entries {
        if name.ends_with(&day_path) {
            let mut file: Value = serde_json::from_slice(body).unwrap();
            file["items"][0]["deleted"] = Value::Null;
            *body = serde_json::to_vec_pretty(&file).unwrap();
            day = Some(body.clone());
        }
    }
    let day = day.unwrap();
    for (name, body) in &mut entries {
        if name.ends_with("/manifest.json") {
            let mut manifest: Value = serde_json::from_slice(body).unwrap();
            for file in manifest["files"].as_array_mut().unwrap() {
                if file["path"] == day_path.as_str() {
                    file["size"] = json!(day.len());
                    file["sha256"] = json!(hex::encode(sha2::Sha256::digest(&day)));
                }
            }
            *body = serde_json::to_vec_pretty(&manifest).unwrap();
        }
    }
    let mut zip = archive::ZipWriter::new(Vec::new(), 6, 1);
    for (name, body) in entries {
        zip.add(name, body.into()).await.unwrap();
    }
    let (doctored, _, _) = zip.finish().await.unwrap();

    let report = archive::verify::verify(&mut std::io::Cursor::new(&doctored)).unwrap();
    assert_eq!(
        report.problems,
        [format!(
            "{day_path}: manifest.json counts events 2, posts 1, edits 0, deletes 1, notes 0, \
             files_shared 0 but the file holds events 1, posts 1, edits 0, deletes 0, notes 0, \
             files_shared 0"
        )]
    );
    // users.json, teams.json and the day file all match their sizes and hashes.
    assert_eq!(report.files_checked, 3);
    assert_eq!(report.day_files_counted, 1);
}
