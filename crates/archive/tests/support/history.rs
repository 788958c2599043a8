//! The history the rendering tests export (`tests/render.rs`, `tests/golden.rs`): a team, a
//! direct chat across companies and another company's group, with edits, deletes, notes, a file,
//! equal timestamps at day and range boundaries, and events outside the range.

use serde_json::{Value, json};

pub const ACME_GLOBEX_DM: &str = r#"{"id": "dm1", "kind": "direct", "owner_company_id": "globex", "member_company_ids": ["acme", "globex"]}"#;
pub const ACME_TEAM: &str = r#"{"id": "team1", "kind": "team", "owner_company_id": "acme"}"#;
pub const GLOBEX_GROUP: &str = r#"{"id": "grp1", "kind": "group", "owner_company_id": "globex"}"#;

pub fn ev(id: &str, at: &str, ty: &str, conv: &str, fields: Value) -> Value {
    let mut v = json!({"event_id": id, "type": ty, "occurred_at": at, "conversation": serde_json::from_str::<Value>(conv).unwrap()});
    for (k, x) in fields.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

pub fn history() -> Vec<Value> {
    vec![
        json!({"event_id": "p0", "type": "person.created", "occurred_at": "2026-01-01T00:00:00Z",
               "person": {"id": "ann", "company_id": "acme", "name": "Ann Ångström", "email": "ann@acme"}}),
        ev(
            "c1",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            ACME_TEAM,
            json!({"name": "../Trading/Desk", "created_by": "ann",
                  "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "gus", "company_id": "globex", "name": "Gus"}]}),
        ),
        ev(
            "c2",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            ACME_GLOBEX_DM,
            json!({"created_by": "gus", "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "gus", "company_id": "globex", "name": "Gus", "email": "gus@globex"}]}),
        ),
        ev(
            "c3",
            "2026-01-01T00:00:00Z",
            "conversation.created",
            GLOBEX_GROUP,
            json!({"name": "Globex only", "created_by": "gus", "members": [{"person_id": "ann", "company_id": "acme"}, {"person_id": "gus", "company_id": "globex"}, {"person_id": "hal", "company_id": "globex"}]}),
        ),
        // Before the range: a post later edited and deleted inside it.
        ev(
            "e01",
            "2026-01-31T23:00:00Z",
            "post.created",
            ACME_TEAM,
            json!({"post_id": "old", "author_id": "ann", "text": "old text"}),
        ),
        ev(
            "e02",
            "2026-02-01T10:00:00Z",
            "post.created",
            ACME_TEAM,
            json!({"post_id": "t1", "author_id": "ann", "text": "first"}),
        ),
        ev(
            "e03",
            "2026-02-01T10:05:00Z",
            "post.edited",
            ACME_TEAM,
            json!({"post_id": "t1", "editor_id": "ann", "text": "second"}),
        ),
        ev(
            "e04",
            "2026-02-01T10:06:00Z",
            "post.created",
            ACME_TEAM,
            json!({"post_id": "t2", "author_id": "gus", "text": "reply", "parent_post_id": "t1"}),
        ),
        ev(
            "e05",
            "2026-02-02T09:00:00Z",
            "post.edited",
            ACME_TEAM,
            json!({"post_id": "old", "editor_id": "ann", "text": "old text, edited"}),
        ),
        ev(
            "e06",
            "2026-02-02T09:30:00Z",
            "post.deleted",
            ACME_TEAM,
            json!({"post_id": "t2", "deleted_by": "ann"}),
        ),
        ev(
            "e07",
            "2026-02-01T11:00:00Z",
            "note.created",
            ACME_TEAM,
            json!({"note_id": "n1", "author_id": "ann", "title": "Rules", "text": "v1"}),
        ),
        ev(
            "e08",
            "2026-02-01T12:00:00Z",
            "note.edited",
            ACME_TEAM,
            json!({"note_id": "n1", "editor_id": "ann", "title": "Rules", "text": "v2"}),
        ),
        ev(
            "e09",
            "2026-02-01T13:00:00Z",
            "file.shared",
            ACME_TEAM,
            json!({"file_id": "f1", "author_id": "ann", "name": "deck.pdf", "size": 1234, "content_type": "application/pdf", "sha256": "ab".repeat(32)}),
        ),
        // Equal timestamps exactly at midnight UTC, in a direct chat across companies.
        ev(
            "e10",
            "2026-02-02T00:00:00Z",
            "post.created",
            ACME_GLOBEX_DM,
            json!({"post_id": "d1", "author_id": "gus", "text": "at midnight"}),
        ),
        ev(
            "e11",
            "2026-02-02T00:00:00Z",
            "post.created",
            ACME_GLOBEX_DM,
            json!({"post_id": "d2", "author_id": "ann", "text": "also at midnight"}),
        ),
        ev(
            "e12",
            "2026-02-01T23:59:59.999Z",
            "post.created",
            ACME_GLOBEX_DM,
            json!({"post_id": "d0", "author_id": "ann", "text": "just before"}),
        ),
        // A group owned by globex that includes ann: not acme's.
        ev(
            "e13",
            "2026-02-01T10:00:00Z",
            "post.created",
            GLOBEX_GROUP,
            json!({"post_id": "g1", "author_id": "ann", "text": "not for acme"}),
        ),
        // At the range's end: excluded (the range is half-open).
        ev(
            "e14",
            "2026-02-03T00:00:00Z",
            "post.created",
            ACME_TEAM,
            json!({"post_id": "late", "author_id": "ann", "text": "after"}),
        ),
    ]
}
