//! One day file's items and what each event does to them — including events whose times are
//! out of order, when producers' clocks disagree (`docs/export-format.md`, "Events out of
//! order").
//!
//! The renderer applies a day's events in log order (time, then event id). An edit or deletion
//! whose item has no creation in the file yet makes a placeholder (`created_elsewhere: true`)
//! that holds the change. When the creation then comes the same day, it fills in the
//! placeholder instead of replacing it: the changes stay, each flagged `out_of_order`, so every
//! event of the day is in the file exactly once and nothing is invented.

use std::collections::HashMap;

use serde_json::{Value, json};

/// The kinds of item a day file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemKind {
    Post,
    Note,
    File,
}

impl ItemKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Note => "note",
            Self::File => "file",
        }
    }
}

/// What one event does to its item.
#[derive(Debug)]
pub(crate) enum Change {
    /// A post or note created, or a file shared: the item as its creation made it.
    Create(Value),
    /// A post edited: its entry in the edit log and the text after it.
    PostEdit { edit: Value, text: String },
    /// A note edited: its content after the edit, and the edit's time.
    NoteEdit {
        title: Option<String>,
        text: String,
        at: String,
    },
    /// A post or note deleted: the item's `deleted` record.
    Delete(Value),
}

/// The items of one conversation's day, in the order they were first touched.
#[derive(Debug, Default)]
pub(crate) struct DayFile {
    pub(crate) items: Vec<Value>,
    by_key: HashMap<String, usize>,
}

/// How a day file keys its items: `kind:id`.
pub(crate) fn item_key(kind: ItemKind, id: &str) -> String {
    format!("{}:{id}", kind.name())
}

/// Whether the item's creation is not in this day file (yet).
pub(crate) fn is_placeholder(item: &Value) -> bool {
    item.get("created_elsewhere") == Some(&Value::Bool(true))
}

/// An item first touched by a change: its creation is on an earlier day, before the range,
/// outside the filters, or — when clocks disagree — later in log order.
fn placeholder(kind: ItemKind, id: &str) -> Value {
    match kind {
        ItemKind::Note => json!({"kind": "note", "id": id, "created_elsewhere": true,
            "author": null, "created_at": null, "title": null, "text": null,
            "last_edited_at": null, "edit_count": 0, "deleted": null}),
        ItemKind::Post | ItemKind::File => json!({"kind": kind.name(), "id": id,
            "created_elsewhere": true, "author": null, "created_at": null,
            "parent_post_id": null, "text": null, "edits": [], "deleted": null}),
    }
}

impl DayFile {
    /// Applies one event to the item `kind`/`id`.
    pub(crate) fn apply(&mut self, kind: ItemKind, id: &str, change: Change) {
        let key = item_key(kind, id);
        if let Change::Create(created) = change {
            self.create(key, created);
            return;
        }
        // A second deletion of an item (a producer's mistake) starts an item of its own, like a
        // second creation, so neither deletion is lost.
        let deleted_again = |index: &usize| {
            matches!(change, Change::Delete(_)) && self.items[*index]["deleted"].is_object()
        };
        let index = match self.by_key.get(&key).filter(|i| !deleted_again(i)) {
            Some(&index) => index,
            None => {
                self.by_key.insert(key, self.items.len());
                self.items.push(placeholder(kind, id));
                self.items.len() - 1
            }
        };
        let item = &mut self.items[index];
        match change {
            Change::Create(_) => unreachable!("handled above"),
            Change::PostEdit { edit, text } => {
                item["text"] = json!(text);
                if let Some(edits) = item.get_mut("edits").and_then(Value::as_array_mut) {
                    edits.push(edit);
                }
            }
            Change::NoteEdit { title, text, at } => {
                item["title"] = json!(title);
                item["text"] = json!(text);
                item["last_edited_at"] = json!(at);
                item["edit_count"] = json!(item["edit_count"].as_u64().unwrap_or(0) + 1);
                // This edit is the note's last one now; if the creation is in the file, this
                // edit comes after it.
                if let Some(fields) = item.as_object_mut() {
                    fields.remove("last_edit_out_of_order");
                }
            }
            Change::Delete(deleted) => item["deleted"] = deleted,
        }
    }

    /// A creation: a new item, or the completion of a placeholder made by changes that came
    /// before it in log order (their times are earlier than the creation's).
    fn create(&mut self, key: String, created: Value) {
        if let Some(&index) = self.by_key.get(&key) {
            let item = &mut self.items[index];
            if is_placeholder(item) {
                complete(item, created);
                return;
            }
            // A second creation of an item the file already has (a producer's mistake): kept
            // as an item of its own, so neither event is lost; later changes go to the newer.
        }
        self.by_key.insert(key, self.items.len());
        self.items.push(created);
    }

    /// The keys (`kind:id`) of items whose creation is not in this file.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.by_key
            .iter()
            .filter(|(_, index)| is_placeholder(&self.items[**index]))
            .map(|(key, _)| key.as_str())
    }
}

/// Fills a placeholder in with its creation, which came after the item's changes in log order.
/// The changes stay as they are, flagged `out_of_order`; the creation adds what only it knows.
fn complete(item: &mut Value, created: Value) {
    // `get_mut`: indexing a missing field mutably would add it (notes have no `edits`).
    if let Some(edits) = item.get_mut("edits").and_then(Value::as_array_mut) {
        for edit in edits {
            edit["out_of_order"] = json!(true);
        }
    }
    if let Some(deleted) = item.get_mut("deleted").and_then(Value::as_object_mut) {
        deleted.insert("out_of_order".into(), json!(true));
    }
    let note_edited = item["kind"] == "note" && item["edit_count"].as_u64().unwrap_or(0) > 0;
    if note_edited {
        item["last_edit_out_of_order"] = json!(true);
    }
    let Value::Object(created) = created else {
        return;
    };
    for (field, value) in created {
        let keep = match field.as_str() {
            // The changes already made.
            "edits" | "deleted" | "last_edited_at" | "edit_count" => true,
            // A note shows its last edit's content (it keeps no edit log): the creation's
            // content would replace the only copy of the edit's.
            "title" | "text" => note_edited,
            _ => false,
        };
        if !keep {
            item[field.as_str()] = value;
        }
    }
    if let Some(fields) = item.as_object_mut() {
        fields.remove("created_elsewhere");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: &str, at: &str, text: &str) -> Change {
        Change::Create(json!({"kind": "post", "id": id, "author": {"id": "ann"},
            "created_at": at, "parent_post_id": null, "text": text, "edits": [],
            "deleted": null}))
    }

    fn note(id: &str, at: &str, text: &str) -> Change {
        Change::Create(json!({"kind": "note", "id": id, "author": {"id": "ann"},
            "created_at": at, "title": "t", "text": text, "last_edited_at": null,
            "edit_count": 0, "deleted": null}))
    }

    fn edit(at: &str, text: &str) -> Change {
        Change::PostEdit {
            edit: json!({"at": at, "text_before": null, "text": text}),
            text: text.into(),
        }
    }

    fn delete(at: &str) -> Change {
        Change::Delete(json!({"at": at, "by": {"id": "ann"}, "text_before": null}))
    }

    fn note_edit(at: &str, text: &str) -> Change {
        Change::NoteEdit {
            title: Some("t".into()),
            text: text.into(),
            at: at.into(),
        }
    }

    /// Each case: the events of one day in log order → the one item the file holds.
    #[test]
    fn changes_before_the_creation_are_kept_and_flagged() {
        let cases: Vec<(&str, ItemKind, Vec<Change>, Value)> = vec![
            (
                "in order",
                ItemKind::Post,
                vec![post("p", "10", "a"), edit("11", "b"), delete("12")],
                json!({"kind": "post", "id": "p", "author": {"id": "ann"}, "created_at": "10",
                    "parent_post_id": null, "text": "b",
                    "edits": [{"at": "11", "text_before": null, "text": "b"}],
                    "deleted": {"at": "12", "by": {"id": "ann"}, "text_before": null}}),
            ),
            (
                "deleted before created",
                ItemKind::Post,
                vec![delete("09"), post("p", "10", "a")],
                json!({"kind": "post", "id": "p", "author": {"id": "ann"}, "created_at": "10",
                    "parent_post_id": null, "text": "a", "edits": [],
                    "deleted": {"at": "09", "by": {"id": "ann"}, "text_before": null,
                                "out_of_order": true}}),
            ),
            (
                "edited before created, then edited after",
                ItemKind::Post,
                vec![edit("09", "b"), post("p", "10", "a"), edit("11", "c")],
                json!({"kind": "post", "id": "p", "author": {"id": "ann"}, "created_at": "10",
                    "parent_post_id": null, "text": "c",
                    "edits": [{"at": "09", "text_before": null, "text": "b", "out_of_order": true},
                              {"at": "11", "text_before": null, "text": "c"}],
                    "deleted": null}),
            ),
            (
                "a change with no creation",
                ItemKind::Post,
                vec![edit("09", "b")],
                json!({"kind": "post", "id": "p", "created_elsewhere": true, "author": null,
                    "created_at": null, "parent_post_id": null, "text": "b",
                    "edits": [{"at": "09", "text_before": null, "text": "b"}], "deleted": null}),
            ),
            (
                "note edited before created: the edit's content is its final state",
                ItemKind::Note,
                vec![note_edit("09", "v2"), note("n", "10", "v1")],
                json!({"kind": "note", "id": "n", "author": {"id": "ann"}, "created_at": "10",
                    "title": "t", "text": "v2", "last_edited_at": "09", "edit_count": 1,
                    "last_edit_out_of_order": true, "deleted": null}),
            ),
            (
                "note edited before and after created",
                ItemKind::Note,
                vec![
                    note_edit("09", "v2"),
                    note("n", "10", "v1"),
                    note_edit("11", "v3"),
                ],
                json!({"kind": "note", "id": "n", "author": {"id": "ann"}, "created_at": "10",
                    "title": "t", "text": "v3", "last_edited_at": "11", "edit_count": 2,
                    "deleted": null}),
            ),
        ];
        for (name, kind, changes, want) in cases {
            let mut file = DayFile::default();
            let id = if kind == ItemKind::Note { "n" } else { "p" };
            for change in changes {
                file.apply(kind, id, change);
            }
            assert_eq!(file.items, vec![want], "{name}");
        }
    }

    #[test]
    fn a_second_deletion_is_an_item_of_its_own() {
        let mut file = DayFile::default();
        file.apply(ItemKind::Post, "p", post("p", "10", "a"));
        file.apply(ItemKind::Post, "p", delete("11"));
        file.apply(ItemKind::Post, "p", delete("12"));
        assert_eq!(file.items.len(), 2);
        assert_eq!(file.items[0]["deleted"]["at"], "11");
        assert_eq!(file.items[1]["deleted"]["at"], "12");
        assert_eq!(file.items[1]["created_elsewhere"], true);
    }

    #[test]
    fn a_second_creation_is_an_item_of_its_own() {
        let mut file = DayFile::default();
        file.apply(ItemKind::Post, "p", post("p", "10", "a"));
        file.apply(ItemKind::Post, "p", post("p", "11", "b"));
        file.apply(ItemKind::Post, "p", edit("12", "c"));
        assert_eq!(file.items.len(), 2);
        assert_eq!(file.items[0]["text"], "a");
        assert_eq!(file.items[1]["text"], "c");
        assert_eq!(file.placeholders().count(), 0);
    }
}
