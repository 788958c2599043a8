//! One day file's items and what each event does to them — including events whose times are
//! out of order, when producers' clocks disagree (`docs/export-format.md`, "Events out of
//! order").
//!
//! The renderer applies a day's events in log order (time, then event id). An edit or deletion
//! whose item has no creation in the file yet makes a placeholder (`created_elsewhere: true`)
//! that holds the change. When the creation then comes the same day, it fills in the
//! placeholder instead of replacing it: the changes stay, each flagged `out_of_order`, so every
//! event of the day is in the file exactly once and nothing is invented.
//!
//! Items are typed structs serialised straight into the day file. Their fields are declared in
//! alphabetical order, the order the format has always had (it was built from sorted maps), and
//! optional flags are absent unless set, so the bytes are what they were.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ArchiveError;

/// The kinds of item a day file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// A person as items name them: from the directory, or only their id when it does not know
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Person {
    Known {
        company_id: String,
        email: Option<String>,
        id: String,
        name: Option<String>,
    },
    Unknown {
        id: String,
    },
}

/// A person shared by every item that names them (built once per person).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PersonRef(pub(crate) Arc<Person>);

impl Serialize for PersonRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PersonRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Person::deserialize(deserializer).map(|p| Self(Arc::new(p)))
    }
}

impl PersonRef {
    /// Bytes of the person's JSON, roughly.
    fn estimate(&self) -> usize {
        match &*self.0 {
            Person::Known {
                company_id,
                email,
                id,
                name,
            } => 96 + company_id.len() + id.len() + opt_len(email) + opt_len(name),
            Person::Unknown { id } => 24 + id.len(),
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn opt_len(value: &Option<String>) -> usize {
    value.as_ref().map_or(4, String::len)
}

/// A post's edit, in its edit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Edit {
    pub(crate) at: String,
    pub(crate) editor: PersonRef,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) out_of_order: bool,
    pub(crate) text: String,
    pub(crate) text_before: Option<String>,
}

/// A post's deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PostDeletion {
    pub(crate) at: String,
    pub(crate) by: PersonRef,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) out_of_order: bool,
    pub(crate) text_before: Option<String>,
}

/// A note's deletion (notes keep no text before).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NoteDeletion {
    pub(crate) at: String,
    pub(crate) by: PersonRef,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) out_of_order: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PostItem {
    pub(crate) author: Option<PersonRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) changed_before_creation_on: Option<Vec<String>>,
    pub(crate) created_at: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) created_elsewhere: bool,
    pub(crate) deleted: Option<PostDeletion>,
    pub(crate) edits: Vec<Edit>,
    pub(crate) id: String,
    pub(crate) kind: ItemKind,
    pub(crate) parent_post_id: Option<String>,
    pub(crate) text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NoteItem {
    pub(crate) author: Option<PersonRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) changed_before_creation_on: Option<Vec<String>>,
    pub(crate) created_at: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) created_elsewhere: bool,
    pub(crate) deleted: Option<NoteDeletion>,
    pub(crate) edit_count: u64,
    pub(crate) id: String,
    pub(crate) kind: ItemKind,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) last_edit_out_of_order: bool,
    pub(crate) last_edited_at: Option<String>,
    pub(crate) text: Option<String>,
    pub(crate) title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileItem {
    pub(crate) author: PersonRef,
    pub(crate) content_included: bool,
    pub(crate) content_type: String,
    pub(crate) id: String,
    pub(crate) kind: ItemKind,
    pub(crate) name: String,
    pub(crate) post_id: Option<String>,
    pub(crate) sha256: String,
    pub(crate) shared_at: String,
    pub(crate) size: u64,
}

/// One item of a day file. Serialised as its fields alone (the item says its `kind`);
/// [`Stored`] names the variant for the spill file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    Post(PostItem),
    Note(NoteItem),
    File(FileItem),
}

impl Serialize for Item {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Post(item) => item.serialize(serializer),
            Self::Note(item) => item.serialize(serializer),
            Self::File(item) => item.serialize(serializer),
        }
    }
}

/// An item as a spilled day file keeps it: tagged with its variant, so it reads back as itself.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Stored {
    Post(PostItem),
    Note(NoteItem),
    File(FileItem),
}

/// An item borrowed, written as [`Stored`] reads it back.
#[derive(Debug, Serialize)]
pub(crate) enum StoredRef<'a> {
    Post(&'a PostItem),
    Note(&'a NoteItem),
    File(&'a FileItem),
}

impl<'a> From<&'a Item> for StoredRef<'a> {
    fn from(item: &'a Item) -> Self {
        match item {
            Item::Post(i) => Self::Post(i),
            Item::Note(i) => Self::Note(i),
            Item::File(i) => Self::File(i),
        }
    }
}

impl From<Stored> for Item {
    fn from(item: Stored) -> Self {
        match item {
            Stored::Post(i) => Self::Post(i),
            Stored::Note(i) => Self::Note(i),
            Stored::File(i) => Self::File(i),
        }
    }
}

impl Item {
    pub(crate) fn kind(&self) -> ItemKind {
        match self {
            Self::Post(_) => ItemKind::Post,
            Self::Note(_) => ItemKind::Note,
            Self::File(_) => ItemKind::File,
        }
    }

    /// Whether the item's creation is not in this day file (yet).
    pub(crate) fn is_placeholder(&self) -> bool {
        match self {
            Self::Post(i) => i.created_elsewhere,
            Self::Note(i) => i.created_elsewhere,
            Self::File(_) => false,
        }
    }

    /// The item's `changed_before_creation_on`, for creations whose item has changes on
    /// earlier days.
    pub(crate) fn set_changed_before_creation_on(&mut self, dates: Vec<String>) {
        match self {
            Self::Post(i) => i.changed_before_creation_on = Some(dates),
            Self::Note(i) => i.changed_before_creation_on = Some(dates),
            Self::File(_) => {}
        }
    }

    /// Bytes of the item's pretty JSON in a day file, estimated from its content: what part
    /// sizes and the items' memory are counted in. Deterministic (content only), so parts
    /// split the same way whatever the budget.
    pub(crate) fn estimate(&self) -> usize {
        let person = |p: &Option<PersonRef>| p.as_ref().map_or(4, PersonRef::estimate);
        let dates = |d: &Option<Vec<String>>| {
            d.as_ref()
                .map_or(0, |d| 48 + d.iter().map(|s| s.len() + 12).sum::<usize>())
        };
        match self {
            Self::Post(i) => {
                let edits: usize = i
                    .edits
                    .iter()
                    .map(|e| {
                        120 + e.at.len()
                            + e.editor.estimate()
                            + e.text.len()
                            + opt_len(&e.text_before)
                    })
                    .sum();
                let deleted = i.deleted.as_ref().map_or(4, |d| {
                    80 + d.at.len() + d.by.estimate() + opt_len(&d.text_before)
                });
                200 + person(&i.author)
                    + dates(&i.changed_before_creation_on)
                    + opt_len(&i.created_at)
                    + deleted
                    + edits
                    + i.id.len()
                    + opt_len(&i.parent_post_id)
                    + opt_len(&i.text)
            }
            Self::Note(i) => {
                let deleted = i
                    .deleted
                    .as_ref()
                    .map_or(4, |d| 64 + d.at.len() + d.by.estimate());
                240 + person(&i.author)
                    + dates(&i.changed_before_creation_on)
                    + opt_len(&i.created_at)
                    + deleted
                    + i.id.len()
                    + opt_len(&i.last_edited_at)
                    + opt_len(&i.text)
                    + opt_len(&i.title)
            }
            Self::File(i) => {
                260 + i.author.estimate()
                    + i.content_type.len()
                    + i.id.len()
                    + i.name.len()
                    + opt_len(&i.post_id)
                    + i.sha256.len()
                    + i.shared_at.len()
            }
        }
    }
}

/// What one event does to its item.
#[derive(Debug)]
pub(crate) enum Change {
    /// A post or note created, or a file shared: the item as its creation made it.
    Create(Item),
    /// A post edited: its entry in the edit log (whose text is the post's from now on).
    PostEdit(Edit),
    /// A note edited: its content after the edit, and the edit's time.
    NoteEdit {
        title: Option<String>,
        text: String,
        at: String,
    },
    PostDelete(PostDeletion),
    NoteDelete(NoteDeletion),
}

impl Change {
    /// The kind of item the change is to.
    pub(crate) fn kind(&self) -> ItemKind {
        match self {
            Self::Create(item) => item.kind(),
            Self::PostEdit(_) | Self::PostDelete(_) => ItemKind::Post,
            Self::NoteEdit { .. } | Self::NoteDelete(_) => ItemKind::Note,
        }
    }
}

/// Where a day file's items are kept (in memory, or on disk for the largest days), for
/// [`apply_change`].
pub(crate) trait ItemStore {
    /// The latest item keyed `key` (`kind:id`), if any; it becomes the touched item.
    fn latest(&mut self, key: &str) -> Result<Option<&mut Item>, ArchiveError>;
    /// Adds `item`, the latest keyed `key` from now on; it becomes the touched item.
    fn push(&mut self, key: String, item: Item) -> Result<&mut Item, ArchiveError>;
}

/// Applies one event to the item `id` of the change's kind. The item changed (or added) is
/// the store's last touched one.
pub(crate) fn apply_change(
    store: &mut impl ItemStore,
    id: &str,
    change: Change,
) -> Result<(), ArchiveError> {
    let kind = change.kind();
    let key = item_key(kind, id);
    if let Change::Create(created) = change {
        // A creation completes a placeholder made by changes that came before it in log order
        // (their times are earlier than the creation's). A second creation of an item the file
        // already has (a producer's mistake) is kept as an item of its own, so neither event
        // is lost; later changes go to the newer.
        match store.latest(&key)? {
            Some(item) if item.is_placeholder() => complete(item, created),
            _ => {
                store.push(key, created)?;
            }
        }
        return Ok(());
    }
    // A second deletion of an item (a producer's mistake) starts an item of its own, like a
    // second creation, so neither deletion is lost.
    match store.latest(&key)? {
        Some(item) if !starts_new_item(item, &change) => change_item(item, change),
        _ => change_item(store.push(key, placeholder(kind, id))?, change),
    }
    Ok(())
}

/// The items of one conversation's day in memory, in the order they were first touched.
#[derive(Debug, Default)]
pub(crate) struct DayFile {
    pub(crate) items: Vec<Item>,
    by_key: HashMap<String, usize>,
    /// Each item's [`Item::estimate`] (what parts are split by).
    estimates: Vec<usize>,
    /// The estimates' sum and each item's index entry: the memory the file is counted for.
    bytes: usize,
    touched: usize,
}

/// Memory of an item's entry in a day file's index, besides its key.
const INDEX_ENTRY_BYTES: usize = 64;

/// How a day file keys its items: `kind:id`.
pub(crate) fn item_key(kind: ItemKind, id: &str) -> String {
    format!("{}:{id}", kind.name())
}

impl ItemStore for DayFile {
    fn latest(&mut self, key: &str) -> Result<Option<&mut Item>, ArchiveError> {
        let Some(&index) = self.by_key.get(key) else {
            return Ok(None);
        };
        self.touched = index;
        Ok(self.items.get_mut(index))
    }

    fn push(&mut self, key: String, item: Item) -> Result<&mut Item, ArchiveError> {
        let index = self.items.len();
        self.bytes += key.len() + INDEX_ENTRY_BYTES;
        self.by_key.insert(key, index);
        self.items.push(item);
        self.estimates.push(0);
        self.touched = index;
        Ok(&mut self.items[index])
    }
}

impl DayFile {
    /// Applies one event to the item `id` of the change's kind.
    pub(crate) fn apply(&mut self, id: &str, change: Change) {
        // In memory nothing can fail.
        let _ = apply_change(self, id, change);
        let index = self.touched;
        let estimate = self.items[index].estimate();
        self.bytes = self.bytes + estimate - self.estimates[index];
        self.estimates[index] = estimate;
    }

    /// The keys (`kind:id`) of items whose creation is not in this file.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.by_key
            .iter()
            .filter(|(_, index)| self.items[**index].is_placeholder())
            .map(|(key, _)| key.as_str())
    }

    /// The memory the file is counted for: its items' estimates and their index entries.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The items in order, each with its estimate, and the latest item's index per key.
    pub(crate) fn into_parts(self) -> (Vec<(Item, usize)>, HashMap<String, usize>) {
        (
            self.items.into_iter().zip(self.estimates).collect(),
            self.by_key,
        )
    }
}

/// An item first touched by a change: its creation is on an earlier day, before the range,
/// outside the filters, or — when clocks disagree — later in log order.
fn placeholder(kind: ItemKind, id: &str) -> Item {
    match kind {
        ItemKind::Note => Item::Note(NoteItem {
            author: None,
            changed_before_creation_on: None,
            created_at: None,
            created_elsewhere: true,
            deleted: None,
            edit_count: 0,
            id: id.to_owned(),
            kind,
            last_edit_out_of_order: false,
            last_edited_at: None,
            text: None,
            title: None,
        }),
        ItemKind::Post | ItemKind::File => Item::Post(PostItem {
            author: None,
            changed_before_creation_on: None,
            created_at: None,
            created_elsewhere: true,
            deleted: None,
            edits: Vec::new(),
            id: id.to_owned(),
            kind,
            parent_post_id: None,
            text: None,
        }),
    }
}

/// Whether the item has been deleted.
fn is_deleted(item: &Item) -> bool {
    match item {
        Item::Post(i) => i.deleted.is_some(),
        Item::Note(i) => i.deleted.is_some(),
        Item::File(_) => false,
    }
}

/// Applies `change` to `item` (not a creation: see [`complete`]).
fn change_item(item: &mut Item, change: Change) {
    match (item, change) {
        (Item::Post(item), Change::PostEdit(edit)) => {
            item.text = Some(edit.text.clone());
            item.edits.push(edit);
        }
        (Item::Note(item), Change::NoteEdit { title, text, at }) => {
            item.title = title;
            item.text = Some(text);
            item.last_edited_at = Some(at);
            item.edit_count += 1;
            // This edit is the note's last one now; if the creation is in the file, this edit
            // comes after it.
            item.last_edit_out_of_order = false;
        }
        (Item::Post(item), Change::PostDelete(deleted)) => item.deleted = Some(deleted),
        (Item::Note(item), Change::NoteDelete(deleted)) => item.deleted = Some(deleted),
        // Items are keyed by kind, so a change always meets an item of its kind.
        (_, change) => debug_assert!(false, "a change to an item of another kind: {change:?}"),
    }
}

/// Whether `change` starts an item of its own instead of changing `item`: a second deletion
/// of an item (a producer's mistake), like a second creation, so neither is lost.
fn starts_new_item(item: &Item, change: &Change) -> bool {
    matches!(change, Change::PostDelete(_) | Change::NoteDelete(_)) && is_deleted(item)
}

/// Fills a placeholder in with its creation, which came after the item's changes in log order.
/// The changes stay as they are, flagged `out_of_order`; the creation adds what only it knows.
fn complete(item: &mut Item, created: Item) {
    match (item, created) {
        (Item::Post(item), Item::Post(created)) => {
            for edit in &mut item.edits {
                edit.out_of_order = true;
            }
            if let Some(deleted) = &mut item.deleted {
                deleted.out_of_order = true;
            }
            // The changes already made stay (`edits`, `deleted`); the rest is the creation's.
            *item = PostItem {
                edits: std::mem::take(&mut item.edits),
                deleted: item.deleted.take(),
                created_elsewhere: false,
                ..created
            };
        }
        (Item::Note(item), Item::Note(created)) => {
            if let Some(deleted) = &mut item.deleted {
                deleted.out_of_order = true;
            }
            let edited = item.edit_count > 0;
            // A note shows its last edit's content (it keeps no edit log): the creation's
            // content would replace the only copy of the edit's.
            let (title, text) = if edited {
                (item.title.take(), item.text.take())
            } else {
                (created.title, created.text)
            };
            *item = NoteItem {
                deleted: item.deleted.take(),
                last_edited_at: item.last_edited_at.take(),
                edit_count: item.edit_count,
                last_edit_out_of_order: edited,
                title,
                text,
                created_elsewhere: false,
                ..created
            };
        }
        // Items are keyed by kind; files have no changes, so no placeholders.
        (item, created) => debug_assert!(false, "{created:?} completes {item:?}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn ann() -> PersonRef {
        PersonRef(Arc::new(Person::Unknown { id: "ann".into() }))
    }

    fn post(id: &str, at: &str, text: &str) -> Change {
        Change::Create(Item::Post(PostItem {
            author: Some(ann()),
            changed_before_creation_on: None,
            created_at: Some(at.into()),
            created_elsewhere: false,
            deleted: None,
            edits: vec![],
            id: id.into(),
            kind: ItemKind::Post,
            parent_post_id: None,
            text: Some(text.into()),
        }))
    }

    fn note(id: &str, at: &str, text: &str) -> Change {
        Change::Create(Item::Note(NoteItem {
            author: Some(ann()),
            changed_before_creation_on: None,
            created_at: Some(at.into()),
            created_elsewhere: false,
            deleted: None,
            edit_count: 0,
            id: id.into(),
            kind: ItemKind::Note,
            last_edit_out_of_order: false,
            last_edited_at: None,
            text: Some(text.into()),
            title: Some("t".into()),
        }))
    }

    fn edit(at: &str, text: &str) -> Change {
        Change::PostEdit(Edit {
            at: at.into(),
            editor: ann(),
            out_of_order: false,
            text: text.into(),
            text_before: None,
        })
    }

    fn delete(at: &str) -> Change {
        Change::PostDelete(PostDeletion {
            at: at.into(),
            by: ann(),
            out_of_order: false,
            text_before: None,
        })
    }

    fn note_edit(at: &str, text: &str) -> Change {
        Change::NoteEdit {
            title: Some("t".into()),
            text: text.into(),
            at: at.into(),
        }
    }

    fn json_of(file: &DayFile) -> Vec<Value> {
        file.items
            .iter()
            .map(|i| serde_json::to_value(i).unwrap())
            .collect()
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
                    "edits": [{"at": "11", "editor": {"id": "ann"}, "text_before": null, "text": "b"}],
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
                    "edits": [{"at": "09", "editor": {"id": "ann"}, "text_before": null,
                               "text": "b", "out_of_order": true},
                              {"at": "11", "editor": {"id": "ann"}, "text_before": null,
                               "text": "c"}],
                    "deleted": null}),
            ),
            (
                "a change with no creation",
                ItemKind::Post,
                vec![edit("09", "b")],
                json!({"kind": "post", "id": "p", "created_elsewhere": true, "author": null,
                    "created_at": null, "parent_post_id": null, "text": "b",
                    "edits": [{"at": "09", "editor": {"id": "ann"}, "text_before": null,
                               "text": "b"}],
                    "deleted": null}),
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
                file.apply(id, change);
            }
            assert_eq!(json_of(&file), vec![want], "{name}");
            let estimates: usize = file.items.iter().map(Item::estimate).sum();
            let index = "post:p".len() + INDEX_ENTRY_BYTES;
            assert_eq!(
                file.bytes(),
                estimates + index,
                "{name}: the running estimate"
            );
        }
    }

    #[test]
    fn a_second_deletion_is_an_item_of_its_own() {
        let mut file = DayFile::default();
        file.apply("p", post("p", "10", "a"));
        file.apply("p", delete("11"));
        file.apply("p", delete("12"));
        let items = json_of(&file);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["deleted"]["at"], "11");
        assert_eq!(items[1]["deleted"]["at"], "12");
        assert_eq!(items[1]["created_elsewhere"], true);
    }

    #[test]
    fn a_second_creation_is_an_item_of_its_own() {
        let mut file = DayFile::default();
        file.apply("p", post("p", "10", "a"));
        file.apply("p", post("p", "11", "b"));
        file.apply("p", edit("12", "c"));
        let items = json_of(&file);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["text"], "a");
        assert_eq!(items[1]["text"], "c");
        assert_eq!(file.placeholders().count(), 0);
    }

    #[test]
    fn stored_items_read_back_as_themselves() {
        let mut file = DayFile::default();
        file.apply("p", delete("09"));
        file.apply("p", post("p", "10", "a"));
        file.apply("n", note_edit("11", "x"));
        for item in &file.items {
            let bytes = serde_json::to_vec(&StoredRef::from(item)).unwrap();
            let back: Stored = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(&Item::from(back), item);
        }
    }
}
