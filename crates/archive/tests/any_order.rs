//! A property test: a post's and a note's events at random times — before, inside and after the
//! range, on any day, in any order relative to their creation, with ties broken by random event
//! ids, in three time zones. Whatever the order, the archive holds every event of the range
//! exactly once in the file of its day, flags exactly the changes that come before their
//! creation, invents nothing, and verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{ev, export};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PostCreated,
    PostEdited,
    PostDeleted,
    NoteCreated,
    NoteEdited,
    NoteDeleted,
}

impl Kind {
    fn is_post(self) -> bool {
        matches!(
            self,
            Self::PostCreated | Self::PostEdited | Self::PostDeleted
        )
    }
    fn is_creation(self) -> bool {
        matches!(self, Self::PostCreated | Self::NoteCreated)
    }
}

#[derive(Debug, Clone)]
struct Event {
    kind: Kind,
    id: String,
    at: DateTime<Utc>,
    text: String,
}

impl Event {
    /// Log order: time, then event id.
    fn key(&self) -> (DateTime<Utc>, &str) {
        (self.at, &self.id)
    }

    fn json(&self) -> Value {
        let at = stamp(self.at);
        let (ty, fields) = match self.kind {
            Kind::PostCreated => (
                "post.created",
                json!({"post_id": "p", "author_id": "ann", "text": self.text}),
            ),
            Kind::PostEdited => (
                "post.edited",
                json!({"post_id": "p", "editor_id": "ann", "text": self.text}),
            ),
            Kind::PostDeleted => ("post.deleted", json!({"post_id": "p", "deleted_by": "ann"})),
            Kind::NoteCreated => (
                "note.created",
                json!({"note_id": "n", "author_id": "ann", "text": self.text}),
            ),
            Kind::NoteEdited => (
                "note.edited",
                json!({"note_id": "n", "editor_id": "ann", "text": self.text}),
            ),
            Kind::NoteDeleted => ("note.deleted", json!({"note_id": "n", "deleted_by": "ann"})),
        };
        ev(&self.id, &at, ty, fields)
    }
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Kinds of events, times in half-hour steps from two hours before the range to two after it
/// (ties are likely), event ids in a random order, and a time zone.
fn scenario() -> impl Strategy<Value = (Vec<Event>, &'static str)> {
    (
        prop::bool::weighted(0.85),
        0usize..4,
        any::<bool>(),
        prop::bool::weighted(0.85),
        0usize..3,
        any::<bool>(),
        prop::sample::select(vec!["", "America/New_York", "Asia/Tokyo"]),
    )
        .prop_flat_map(
            |(post, edits, deleted, note, note_edits, note_deleted, tz)| {
                let mut kinds = Vec::new();
                kinds.extend(post.then_some(Kind::PostCreated));
                kinds.extend(std::iter::repeat_n(Kind::PostEdited, edits));
                kinds.extend(deleted.then_some(Kind::PostDeleted));
                kinds.extend(note.then_some(Kind::NoteCreated));
                kinds.extend(std::iter::repeat_n(Kind::NoteEdited, note_edits));
                kinds.extend(note_deleted.then_some(Kind::NoteDeleted));
                let n = kinds.len();
                (
                    Just(kinds),
                    prop::collection::vec(-4i64..100, n),
                    Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                    Just(tz),
                )
            },
        )
        .prop_map(|(kinds, slots, ids, tz)| {
            let from: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
            let events = kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| Event {
                    kind,
                    id: format!("e{:02}", ids[i]),
                    at: from + Duration::minutes(30 * slots[i]),
                    text: format!("text {i}"),
                })
                .collect();
            (events, tz)
        })
}

/// What one day file should hold of one item, from the events alone.
#[derive(Debug, Default)]
struct Expected<'a> {
    creation: Option<&'a Event>,
    /// In log order.
    changes: Vec<&'a Event>,
}

fn check(events: &[Event], tz: &str, days: &BTreeMap<String, Value>, manifest: &Value) {
    let zone: Tz = if tz.is_empty() {
        Tz::UTC
    } else {
        tz.parse().unwrap()
    };
    let (from, to) = (
        "2026-02-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap(),
        "2026-02-03T00:00:00Z".parse::<DateTime<Utc>>().unwrap(),
    );
    let date = |e: &Event| e.at.with_timezone(&zone).format("%Y-%m-%d").to_string();
    let mut in_range: Vec<&Event> = events
        .iter()
        .filter(|e| from <= e.at && e.at < to)
        .collect();
    in_range.sort_by(|a, b| a.key().cmp(&b.key()));
    assert_eq!(manifest["totals"]["events"], in_range.len() as u64);

    // The text before each post change, as the export saw it: the last text, forgotten on a
    // deletion.
    let mut text_before: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    let mut known: Option<&str> = None;
    for e in in_range.iter().filter(|e| e.kind.is_post()) {
        match e.kind {
            Kind::PostCreated => known = Some(&e.text),
            Kind::PostEdited => {
                text_before.insert(&e.id, known);
                known = Some(&e.text);
            }
            _ => {
                text_before.insert(&e.id, known.take());
            }
        }
    }

    let dates: BTreeSet<String> = in_range.iter().map(|e| date(e)).collect();
    assert_eq!(days.keys().cloned().collect::<BTreeSet<_>>(), dates);
    for (day, file) in days {
        let items = file["items"].as_array().unwrap();
        for post in [true, false] {
            let mut want = Expected::default();
            for e in in_range
                .iter()
                .filter(|e| e.kind.is_post() == post && date(e) == *day)
            {
                if e.kind.is_creation() {
                    want.creation = Some(e);
                } else {
                    want.changes.push(e);
                }
            }
            let kind = if post { "post" } else { "note" };
            let found: Vec<&Value> = items.iter().filter(|i| i["kind"] == kind).collect();
            if want.creation.is_none() && want.changes.is_empty() {
                assert!(found.is_empty(), "{day}: {found:?}");
                continue;
            }
            assert_eq!(found.len(), 1, "{day}: one {kind} item: {items:?}");
            let earlier_changes: BTreeSet<String> = in_range
                .iter()
                .filter(|e| e.kind.is_post() == post && !e.kind.is_creation())
                .map(|e| date(e))
                .filter(|d| d < day)
                .collect();
            let context = format!("{day} {kind}: {events:?} in {tz:?}");
            if post {
                check_post(found[0], &want, &earlier_changes, &text_before, &context);
            } else {
                check_note(found[0], &want, &earlier_changes, &context);
            }
        }
    }
}

/// Whether a change is flagged out of order: exactly when its creation is in the same file
/// and comes after it in log order.
fn out_of_order(want: &Expected, change: &Event) -> bool {
    want.creation.is_some_and(|c| c.key() > change.key())
}

fn check_creation(item: &Value, want: &Expected, earlier: &BTreeSet<String>, context: &str) {
    match want.creation {
        Some(creation) => {
            assert_eq!(item["created_at"], stamp(creation.at), "{context}");
            assert!(item.get("created_elsewhere").is_none(), "{context}");
            let on = item.get("changed_before_creation_on");
            if earlier.is_empty() {
                assert!(on.is_none(), "{context}");
            } else {
                assert_eq!(on, Some(&json!(earlier)), "{context}");
            }
        }
        None => {
            assert_eq!(item["created_at"], Value::Null, "{context}");
            assert_eq!(item["created_elsewhere"], true, "{context}");
            assert_eq!(item["author"], Value::Null, "{context}");
        }
    }
}

fn check_post(
    item: &Value,
    want: &Expected,
    earlier: &BTreeSet<String>,
    text_before: &BTreeMap<&str, Option<&str>>,
    context: &str,
) {
    check_creation(item, want, earlier, context);
    let edits: Vec<&&Event> = want
        .changes
        .iter()
        .filter(|e| e.kind == Kind::PostEdited)
        .collect();
    let shown = item["edits"].as_array().unwrap();
    assert_eq!(shown.len(), edits.len(), "{context}");
    for (shown, edit) in shown.iter().zip(&edits) {
        assert_eq!(shown["at"], stamp(edit.at), "{context}");
        assert_eq!(shown["text"], edit.text, "{context}");
        assert_eq!(
            shown["text_before"],
            json!(text_before[edit.id.as_str()]),
            "{context}"
        );
        assert_eq!(
            shown.get("out_of_order") == Some(&json!(true)),
            out_of_order(want, edit),
            "{context}"
        );
    }
    match want.changes.iter().find(|e| e.kind == Kind::PostDeleted) {
        Some(deletion) => {
            let shown = &item["deleted"];
            assert_eq!(shown["at"], stamp(deletion.at), "{context}");
            assert_eq!(
                shown["text_before"],
                json!(text_before[deletion.id.as_str()])
            );
            assert_eq!(
                shown.get("out_of_order") == Some(&json!(true)),
                out_of_order(want, deletion),
                "{context}"
            );
        }
        None => assert_eq!(item["deleted"], Value::Null, "{context}"),
    }
    // The text after the item's last event of the day that set one, in log order.
    let last_text = want
        .creation
        .into_iter()
        .chain(edits.iter().map(|e| **e))
        .max_by(|a, b| a.key().cmp(&b.key()))
        .map(|e| e.text.as_str());
    assert_eq!(item["text"], json!(last_text), "{context}");
}

fn check_note(item: &Value, want: &Expected, earlier: &BTreeSet<String>, context: &str) {
    check_creation(item, want, earlier, context);
    assert!(item.get("edits").is_none(), "{context}");
    let edits: Vec<&&Event> = want
        .changes
        .iter()
        .filter(|e| e.kind == Kind::NoteEdited)
        .collect();
    assert_eq!(item["edit_count"], edits.len(), "{context}");
    let last = edits.last();
    assert_eq!(
        item["last_edited_at"],
        json!(last.map(|e| stamp(e.at))),
        "{context}"
    );
    assert_eq!(
        item.get("last_edit_out_of_order") == Some(&json!(true)),
        last.is_some_and(|e| out_of_order(want, e)),
        "{context}"
    );
    // A note's final state: its last edit's content, else its creation's.
    let text = last
        .map(|e| e.text.as_str())
        .or(want.creation.map(|c| c.text.as_str()));
    assert_eq!(item["text"], json!(text), "{context}");
    match want.changes.iter().find(|e| e.kind == Kind::NoteDeleted) {
        Some(deletion) => {
            assert_eq!(item["deleted"]["at"], stamp(deletion.at), "{context}");
            assert_eq!(
                item["deleted"].get("out_of_order") == Some(&json!(true)),
                out_of_order(want, deletion),
                "{context}"
            );
        }
        None => assert_eq!(item["deleted"], Value::Null, "{context}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_event_of_the_range_is_in_the_archive_once_in_any_order(
        (events, tz) in scenario()
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let logged: Vec<Value> = events.iter().map(Event::json).collect();
        // `export` fails unless `verify` (files, hashes and reconciled counts) finds nothing.
        let (days, manifest) = runtime.block_on(export(&logged, tz));
        check(&events, tz, &days, &manifest);
    }
}
