//! `users.json` and `teams.json`, byte for byte: the SHA-256 of each, recorded when they were
//! built as one `serde_json::Value` tree, must not change now that they are streamed
//! (`directories.rs`). Histories: the one of `render.rs`, the one of `support`, and a generated
//! one with many conversations (every kind, names that need escaping, members of other
//! companies, people without names, renames, removals, archives, offsets), under each filter.
//! Re-recorded for format version 5, which added `membership` and `names` to every conversation
//! (the bytes before those fields are checked apart, in `directories.rs`'s unit tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use archive::{ExportRequest, export_to_sink};
use compliance_log::LogReader;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ACME_GLOBEX_DM: &str = r#"{"id": "dm1", "kind": "direct", "owner_company_id": "globex", "member_company_ids": ["acme", "globex"]}"#;
const ACME_TEAM: &str = r#"{"id": "team1", "kind": "team", "owner_company_id": "acme"}"#;
const GLOBEX_GROUP: &str = r#"{"id": "grp1", "kind": "group", "owner_company_id": "globex"}"#;

fn ev(id: &str, at: &str, ty: &str, conv: &Value, fields: Value) -> Value {
    let mut v = json!({"event_id": id, "type": ty, "occurred_at": at, "conversation": conv});
    for (k, x) in fields.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn conv(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The directory part of `render.rs`'s history: the same people and conversations, with
/// content in two of them.
fn render_history() -> Vec<Value> {
    let (team, dm, group) = (conv(ACME_TEAM), conv(ACME_GLOBEX_DM), conv(GLOBEX_GROUP));
    vec![
        json!({"event_id": "p0", "type": "person.created", "occurred_at": "2026-01-01T00:00:00Z",
               "person": {"id": "ann", "company_id": "acme", "name": "Ann Ångström", "email": "ann@acme"}}),
        ev(
            "c1",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            &team,
            json!({"name": "../Trading/Desk", "created_by": "ann",
                  "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "gus", "company_id": "globex", "name": "Gus"}]}),
        ),
        ev(
            "c2",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            &dm,
            json!({"created_by": "gus", "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "gus", "company_id": "globex", "name": "Gus", "email": "gus@globex"}]}),
        ),
        ev(
            "c3",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            &group,
            json!({"name": "Globex only", "created_by": "gus", "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "gus", "company_id": "globex"}, {"person_id": "hal", "company_id": "globex"}]}),
        ),
        ev(
            "e02",
            "2026-02-01T10:00:00Z",
            "post.created",
            &team,
            json!({"post_id": "t1", "author_id": "ann", "text": "first"}),
        ),
        ev(
            "e10",
            "2026-02-02T00:00:00Z",
            "post.created",
            &dm,
            json!({"post_id": "d1", "author_id": "gus", "text": "at midnight"}),
        ),
        ev(
            "e13",
            "2026-02-01T10:00:00Z",
            "post.created",
            &group,
            json!({"post_id": "g1", "author_id": "ann", "text": "not for acme"}),
        ),
    ]
}

/// Many conversations of acme: every kind, with and without names (some that need escaping or
/// sanitising), members of acme and of other companies (some named, some not), renames,
/// removals, archives, times with offsets; content in range in some of them.
fn generated_history() -> Vec<Value> {
    let names = [
        None,
        Some("Desk \"A\" \\ back/slash"),
        Some("émoji 🚀 and 中文"),
        Some("tab\tand\u{1}control"),
        Some("</script><b>"),
        Some("a very long name that goes on and on well past the sixty characters a folder keeps"),
        Some("..."),
        Some("CON"),
    ];
    let mut events = Vec::new();
    for p in 0..40 {
        events.push(
            json!({"event_id": format!("p{p:03}"), "type": "person.created",
            "occurred_at": "2025-12-01T00:00:00Z",
            "person": {"id": format!("u{p:03}"), "company_id": "acme",
                       "name": format!("Person \"{p}\" Ü"), "email": format!("u{p}@acme")}}),
        );
    }
    events.push(json!({"event_id": "p100", "type": "person.updated",
        "occurred_at": "2025-12-02T00:00:00Z",
        "person": {"id": "u001", "company_id": "acme", "name": "Renamed One", "email": "one@acme"}}));
    events.push(json!({"event_id": "p101", "type": "person.deactivated",
        "occurred_at": "2025-12-03T00:00:00Z",
        "person": {"id": "u002", "company_id": "acme"}}));
    for c in 0..240usize {
        let kind = ["direct", "group", "team"][c % 3];
        let id = if c % 17 == 5 {
            format!("conv/{c}:odd")
        } else {
            format!("conv-{c:04}")
        };
        let conversation = if kind == "direct" {
            json!({"id": id, "kind": kind, "owner_company_id": "acme",
                   "member_company_ids": ["acme", "globex"]})
        } else {
            json!({"id": id, "kind": kind, "owner_company_id": "acme"})
        };
        let mut members = Vec::new();
        for m in 0..(c % 9) {
            members.push(
                json!({"person_id": format!("u{:03}", (c * 7 + m * 3) % 40), "company_id": "acme"}),
            );
        }
        if c % 4 == 1 {
            members.push(
                json!({"person_id": format!("g{}", c % 11), "company_id": "globex",
                                "name": format!("Guest {}", c % 11)}),
            );
        }
        if c % 6 == 2 {
            members.push(
                json!({"person_id": format!("x{}", c % 5), "company_id": "initech",
                                "email": format!("x{}@initech", c % 5)}),
            );
        }
        if c % 10 == 3 {
            members.push(json!({"person_id": "z-unknown", "company_id": "umbrella"}));
        }
        let at = format!("2026-01-{:02}T{:02}:30:00+05:30", 1 + c % 28, c % 24);
        let mut created = json!({"created_by": format!("u{:03}", c % 40), "members": members});
        if let Some(name) = names[c % names.len()] {
            created["name"] = json!(name);
        }
        // Some conversations are only known through later events (no creation in the log).
        if c % 13 != 7 {
            events.push(ev(
                &format!("c{c:04}"),
                &at,
                "conversation.created",
                &conversation,
                created,
            ));
        }
        if c % 5 == 0 {
            events.push(ev(
                &format!("r{c:04}"),
                "2026-01-29T08:00:00-08:00",
                "conversation.renamed",
                &conversation,
                json!({"name": format!("Renamed {c} ✓"), "renamed_by": "u000"}),
            ));
        }
        if c % 7 == 0 {
            events.push(ev(&format!("a{c:04}"), "2026-01-30T00:00:00Z",
                "conversation.members_added", &conversation,
                json!({"added_by": "u000", "members": [{"person_id": "u039", "company_id": "acme"},
                      {"person_id": "late-guest", "company_id": "globex", "name": "Late", "email": "late@globex"}]})));
        }
        if c % 8 == 1 {
            events.push(ev(&format!("m{c:04}"), "2026-01-30T01:00:00Z",
                "conversation.members_removed", &conversation,
                json!({"removed_by": "u000", "members": [{"person_id": format!("u{:03}", (c * 7) % 40), "company_id": "acme"}]})));
        }
        if c % 11 == 4 {
            events.push(ev(
                &format!("z{c:04}"),
                "2026-01-31T12:00:00.123+01:00",
                "conversation.archived",
                &conversation,
                json!({"archived_by": "u000"}),
            ));
        }
        if c % 3 == 1 || c % 13 == 7 {
            events.push(ev(
                &format!("e{c:04}"),
                "2026-02-01T09:00:00Z",
                "post.created",
                &conversation,
                json!({"post_id": format!("post{c}"), "author_id": "u000", "text": "hi"}),
            ));
        }
    }
    events
}

async fn log(events: &[Value]) -> LogReader {
    support::log_of_exactly(events).await
}

/// The SHA-256 of the archive's `users.json` and `teams.json`, and of the whole archive.
async fn hashes(reader: &LogReader, request: &ExportRequest) -> [String; 3] {
    let (bytes, _, _) = export_to_sink(request, reader, Vec::new(), |_| {})
        .await
        .unwrap();
    let report = archive::verify::verify(&mut std::io::Cursor::new(&bytes)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut users = None;
    let mut teams = None;
    for (name, body) in archive::verify::read_entries(&bytes).unwrap() {
        let hash = hex::encode(Sha256::digest(&body));
        if name.ends_with("/People_And_Groups/users.json") {
            users = Some(hash);
        } else if name.ends_with("/Teams/teams.json") {
            teams = Some(hash);
        }
    }
    [
        users.unwrap(),
        teams.unwrap(),
        hex::encode(Sha256::digest(&bytes)),
    ]
}

fn filtered(people: &[&str], conversations: &[&str]) -> ExportRequest {
    let mut request = support::request("");
    request.person_ids = people.iter().map(|p| (*p).to_owned()).collect();
    request.conversation_ids = conversations.iter().map(|c| (*c).to_owned()).collect();
    request
}

/// Recorded on the `Value`-tree implementation (commit 0c600df): users.json, then teams.json.
const EMPTY: &str = "fd192be5ae256207f6bd7354564181f211cd970e22c44574bcdb3b0d53553721";
const RENDER_USERS: &str = "e89e30305cc95e85f9d8191070db312ad3dde6e955d060e491f2f2d9733db04e";
const RENDER_TEAMS: &str = "bfd59afef6078106fde8867a9642d93ccc3da0f6c023e5273bed6bd466779c6a";

#[tokio::test]
async fn the_listings_keep_their_bytes() {
    let cases: Vec<(&str, Vec<Value>, ExportRequest, [&str; 2])> = vec![
        (
            "render",
            render_history(),
            filtered(&[], &[]),
            [RENDER_USERS, RENDER_TEAMS],
        ),
        (
            "render by person",
            render_history(),
            filtered(&["gus"], &[]),
            [RENDER_USERS, RENDER_TEAMS],
        ),
        (
            "render by conversation",
            render_history(),
            filtered(&[], &["dm1"]),
            [RENDER_USERS, EMPTY],
        ),
        (
            "support",
            support_history(),
            filtered(&[], &[]),
            [
                EMPTY,
                "9fdf430fd8062ec7d5d50ab7810e87d912108fd56474e92c9e4b5ee869c9b59f",
            ],
        ),
        (
            "generated",
            generated_history(),
            filtered(&[], &[]),
            [
                "b8363b746de358cd387e34f6da4de2ea1e3aac567846b0efa8320b08c1aad24d",
                "461f3812bb86e6365a7d90bc467d4508af01656a5e226baba85e33e48ccd02f0",
            ],
        ),
        (
            "generated by person",
            generated_history(),
            filtered(&["u005", "late-guest"], &[]),
            [
                "ce43f3a4570d6382e0dd85d8cb8f6e00361f957db4edc9872b62e1a4e27b55a0",
                "18699c8578f1f204133c51e52c6e4a21718f0700a45b6e8820ac043a72454743",
            ],
        ),
        (
            "generated by conversation",
            generated_history(),
            filtered(&[], &["conv-0003", "conv-0004", "conv/22:odd", "nope"]),
            [
                "766d443503c9ce3183246e9b8295d12aaecfd8f538d2215ca31def9f9dea490a",
                EMPTY,
            ],
        ),
        (
            "generated nobody",
            generated_history(),
            filtered(&["nobody"], &[]),
            [EMPTY, EMPTY],
        ),
    ];
    for (label, events, request, [users, teams]) in cases {
        let reader = log(&events).await;
        let [got_users, got_teams, whole] = hashes(&reader, &request).await;
        // The whole archive's hash, for comparing runs by hand (other entries may change).
        println!("{label:?}: archive {whole}");
        assert_eq!(got_users, users, "{label}: users.json");
        assert_eq!(got_teams, teams, "{label}: teams.json");
    }
}

fn support_history() -> Vec<Value> {
    let mut all = vec![support::ev(
        "c1",
        "2026-01-01T00:00:00Z",
        "conversation.created",
        json!({"created_by": "ann", "members": [{"person_id": "ann", "company_id": "acme"}]}),
    )];
    all.push(support::ev(
        "e1",
        "2026-02-01T10:00:00Z",
        "post.created",
        json!({"post_id": "p1", "author_id": "ann", "text": "hello"}),
    ));
    all
}
