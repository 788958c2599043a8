//! Membership over time in `users.json` and `teams.json` (format version 5): joins, leaves,
//! removals and renames before, inside and after the range, and who did each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use archive::export_to_sink;
use serde_json::{Value, json};
use support::history::ev;

const TEAM: &str = r#"{"id": "team1", "kind": "team", "owner_company_id": "acme"}"#;
const GROUP: &str = r#"{"id": "grp1", "kind": "group", "owner_company_id": "acme"}"#;

fn member(id: &str) -> Value {
    json!({"person_id": id, "company_id": "acme"})
}

fn added(id: &str, at: &str, by: &str, who: &str) -> Value {
    ev(
        id,
        at,
        "conversation.members_added",
        TEAM,
        json!({"added_by": by, "members": [member(who)]}),
    )
}

fn removed(id: &str, at: &str, by: &str, who: &str) -> Value {
    ev(
        id,
        at,
        "conversation.members_removed",
        TEAM,
        json!({"removed_by": by, "members": [member(who)]}),
    )
}

fn renamed(id: &str, at: &str, by: &str, name: &str) -> Value {
    ev(
        id,
        at,
        "conversation.renamed",
        TEAM,
        json!({"renamed_by": by, "name": name}),
    )
}

/// The range is 2026-02-01..03 (`support::request`).
fn events() -> Vec<Value> {
    vec![
        json!({"event_id": "p0", "type": "person.created", "occurred_at": "2026-01-01T00:00:00Z",
               "person": {"id": "ann", "company_id": "acme", "name": "Ann", "email": "ann@acme"}}),
        // Before the range.
        ev(
            "c1",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            TEAM,
            json!({"name": "Old", "created_by": "ann", "members": [member("ann"), member("bo"), member("cy")]}),
        ),
        added("a1", "2026-01-10T00:00:00Z", "ann", "dan"),
        removed("r1", "2026-01-15T00:00:00Z", "cy", "cy"),
        renamed("n1", "2026-01-20T00:00:00Z", "ann", "Desk"),
        // Inside it.
        added("a2", "2026-02-01T09:00:00Z", "ann", "eve"),
        ev(
            "e1",
            "2026-02-01T10:00:00Z",
            "post.created",
            TEAM,
            json!({"post_id": "p1", "author_id": "ann", "text": "who reads this?"}),
        ),
        removed("r2", "2026-02-01T12:00:00Z", "ann", "eve"),
        removed("r3", "2026-02-01T13:00:00+01:00", "bo", "bo"),
        renamed("n2", "2026-02-02T08:00:00Z", "bo", "Trading"),
        added("a3", "2026-02-02T09:00:00Z", "dan", "fay"),
        ev(
            "g1",
            "2026-02-02T10:00:00Z",
            "conversation.created",
            GROUP,
            json!({"created_by": "dan", "members": [member("dan"), member("ann")]}),
        ),
        // After it.
        removed("r4", "2026-02-04T00:00:00Z", "ann", "dan"),
        renamed("n3", "2026-02-05T00:00:00Z", "ann", "After"),
    ]
}

async fn listings(events: &[Value]) -> (Value, Value) {
    let reader = support::log_of_exactly(events).await;
    let (bytes, _, _) = export_to_sink(&support::request(""), &reader, Vec::new(), |_| {})
        .await
        .unwrap();
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let (mut users, mut teams) = (Value::Null, Value::Null);
    for (name, body) in archive::verify::read_entries(&bytes).unwrap() {
        if name.ends_with("/People_And_Groups/users.json") {
            users = serde_json::from_slice(&body).unwrap();
        } else if name.ends_with("/Teams/teams.json") {
            teams = serde_json::from_slice(&body).unwrap();
        } else if name.ends_with("/manifest.json") {
            let manifest: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(manifest["format_version"], 5);
        }
    }
    (users, teams)
}

fn period(
    person: Value,
    joined: (&str, &str),
    at_start: bool,
    left: Option<(&str, &str)>,
) -> Value {
    json!({
        "person": person, "joined_at": joined.0, "added_by": joined.1,
        "member_at_range_start": at_start,
        "left_at": left.map(|l| l.0), "removed_by": left.map(|l| l.1),
        "left_by_themselves": left.is_some_and(|l| Some(l.1) == person["id"].as_str()),
    })
}

/// A person known only from member lists.
fn listed(id: &str) -> Value {
    json!({"id": id, "company_id": "acme", "name": null, "email": null})
}

#[tokio::test]
async fn every_membership_and_name_of_the_range_with_who_did_it() {
    let (users, teams) = listings(&events()).await;
    let team = &teams["conversations"][0];
    assert_eq!(team["id"], "team1");
    let ann = json!({"id": "ann", "company_id": "acme", "name": "Ann", "email": "ann@acme"});
    assert_eq!(
        team["membership"],
        json!([
            // Members at the start, with their real join times (the log has them).
            period(ann.clone(), ("2026-01-01T00:00:00Z", "ann"), true, None),
            // Left by himself inside the range, at his own offset.
            period(
                listed("bo"),
                ("2026-01-01T00:00:00Z", "ann"),
                true,
                Some(("2026-02-01T13:00:00+01:00", "bo"))
            ),
            // Removed after the range: a member to its end.
            period(listed("dan"), ("2026-01-10T00:00:00Z", "ann"), true, None),
            // Joined and removed inside it.
            period(
                listed("eve"),
                ("2026-02-01T09:00:00Z", "ann"),
                false,
                Some(("2026-02-01T12:00:00Z", "ann"))
            ),
            period(listed("fay"), ("2026-02-02T09:00:00Z", "dan"), false, None),
            // Cy, who left before the range, is not there.
        ]),
        "{team:#}"
    );
    assert_eq!(
        team["names"],
        json!([
            {"name": "Desk", "from": "2026-01-20T00:00:00Z", "changed_by": "ann",
             "in_effect_at_range_start": true, "until": "2026-02-02T08:00:00Z", "replaced_by": "bo"},
            {"name": "Trading", "from": "2026-02-02T08:00:00Z", "changed_by": "bo",
             "in_effect_at_range_start": false, "until": null, "replaced_by": null},
        ]),
        "{team:#}"
    );
    // The fields before format version 5 still say the range's end.
    assert_eq!(team["name"], "Trading");
    let members: Vec<&str> = team["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["ann", "dan", "fay"]);
    // A group created inside the range: its members joined at its creation, by its creator;
    // a conversation without a name has no names.
    let group = &users["conversations"][0];
    assert_eq!(group["id"], "grp1");
    assert_eq!(
        group["membership"],
        json!([
            period(ann, ("2026-02-02T10:00:00Z", "dan"), false, None),
            period(listed("dan"), ("2026-02-02T10:00:00Z", "dan"), false, None),
        ])
    );
    assert_eq!(group["names"], json!([]));
}

/// A range that starts after everything: the state at its start, nothing ended in it.
#[tokio::test]
async fn a_range_after_the_changes_shows_the_state_at_its_start() {
    let mut events = events();
    events.retain(|e| e["occurred_at"].as_str().unwrap() < "2026-02-01");
    let (_, teams) = listings(&events).await;
    let team = &teams["conversations"][0];
    let ids: Vec<(&str, bool, &Value)> = team["membership"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["person"]["id"].as_str().unwrap(),
                m["member_at_range_start"].as_bool().unwrap(),
                &m["left_at"],
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("ann", true, &Value::Null),
            ("bo", true, &Value::Null),
            ("dan", true, &Value::Null)
        ]
    );
    assert_eq!(team["names"].as_array().unwrap().len(), 1);
    assert_eq!(team["names"][0]["name"], "Desk");
    assert_eq!(team["names"][0]["in_effect_at_range_start"], true);
}
