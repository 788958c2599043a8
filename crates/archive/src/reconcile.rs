//! Reconciling `manifest.json`'s counts with what the day files hold: every day file is
//! recounted from its items and compared with its line in `days`; each conversation's counts
//! with the sum of its days, and the totals with the sum of the conversations. A count the
//! files do not bear out (an event counted but not shown, or shown but not counted) fails
//! `verify` with the file and both counts.
//!
//! What an item shows, by the format (`docs/export-format.md`):
//! - a post item: one creation if `created_at` is set, one edit per `edits` entry, one deletion
//!   if `deleted` is set;
//! - a note item: one creation if `created_at` is set, `edit_count` edits, one deletion if
//!   `deleted` is set — all counted in `notes`;
//! - a file item: one share.
//!
//! Archives of format 2 have no `edit_count` on notes: there a note's edits are known only to be
//! at least one when `last_edited_at` is set, so `notes` and `events` are checked as lower
//! bounds.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::manifest::{Counts, Manifest};

/// Whether a path (relative to the archive's top-level folder) is a day file.
pub(crate) fn is_day_file(path: &str) -> bool {
    (path.starts_with("People_Chats/") || path.starts_with("Team_Chats/"))
        && path.ends_with(".json")
}

/// One conversation's day, recounted from its file (or its parts).
#[derive(Debug, Default)]
struct Found {
    counts: Counts,
    /// False when a note's edits could not be counted exactly (format 2).
    exact: bool,
    paths: Vec<String>,
    parts: BTreeSet<u64>,
    parts_declared: BTreeSet<u64>,
}

/// Collects the day files' counts as `verify` reads them, then compares them with the manifest.
#[derive(Debug)]
pub(crate) struct Reconciler {
    /// Each conversation's folder, from the manifest.
    folders: BTreeMap<String, String>,
    found: BTreeMap<(String, String), Found>,
    /// (folder, date) of day files that could not be read (already a problem of their own):
    /// their days are not compared, so one damaged entry is one problem.
    unreadable: BTreeSet<(String, String)>,
}

impl Reconciler {
    pub(crate) fn new(manifest: &Manifest) -> Self {
        Self {
            folders: manifest
                .head
                .conversations
                .iter()
                .map(|c| (c.conversation_id.clone(), c.folder.clone()))
                .collect(),
            found: BTreeMap::new(),
            unreadable: BTreeSet::new(),
        }
    }

    /// Notes a day file that could not be read; `path` is relative to the top-level folder.
    pub(crate) fn unreadable(&mut self, path: &str) {
        if let Some((folder, name)) = path.rsplit_once('/') {
            let stem = name.trim_end_matches(".json");
            let date = stem.split_once("_part-").map_or(stem, |(date, _)| date);
            self.unreadable.insert((folder.to_owned(), date.to_owned()));
        }
    }

    /// Notes that a file of conversation folder `folder`'s day `date` could not be read (EML).
    pub(crate) fn unreadable_day(&mut self, folder: &str, date: &str) {
        self.unreadable.insert((folder.to_owned(), date.to_owned()));
    }

    /// Adds the counts an EML or CSV file holds for a conversation's day, recounted from its
    /// messages or rows (`eml::recount`, `csv::recount`); `path` names the file in messages.
    pub(crate) fn add_counted(
        &mut self,
        conversation_id: &str,
        date: &str,
        path: &str,
        counts: &Counts,
    ) {
        let found = self
            .found
            .entry((conversation_id.to_owned(), date.to_owned()))
            .or_insert_with(|| Found {
                exact: true,
                parts: BTreeSet::from([1]),
                parts_declared: BTreeSet::from([1]),
                ..Found::default()
            });
        found.counts.add(counts);
        if found.paths.last().is_none_or(|last| last != path) {
            found.paths.push(path.to_owned());
        }
    }

    /// Recounts one day file; `path` is relative to the top-level folder.
    pub(crate) fn add(&mut self, path: &str, content: &[u8], problems: &mut Vec<String>) {
        match self.try_add(path, content) {
            Ok(mut found) => problems.append(&mut found),
            Err(problem) => problems.push(format!("{path}: {problem}")),
        }
    }

    fn try_add(&mut self, path: &str, content: &[u8]) -> Result<Vec<String>, String> {
        let (folder, name) = path
            .rsplit_once('/')
            .ok_or("not in a conversation folder")?;
        let stem = name.trim_end_matches(".json");
        let (name_date, part) = match stem.split_once("_part-") {
            Some((date, part)) => (
                date,
                part.parse::<u64>()
                    .map_err(|_| format!("part number {part:?} is not a number"))?,
            ),
            None => (stem, 1),
        };
        let file: Value =
            serde_json::from_slice(content).map_err(|e| format!("not a day file: {e}"))?;
        let conversation_id = file["conversation"]["id"]
            .as_str()
            .ok_or("no conversation.id")?;
        let date = file["date"].as_str().ok_or("no date")?;
        if date != name_date {
            return Err(format!("holds the date {date} but is named {name}"));
        }
        let mut problems = Vec::new();
        match self.folders.get(conversation_id) {
            Some(want) if want == folder => {}
            Some(want) => problems.push(format!(
                "{path}: conversation {conversation_id} is in {want} by the manifest"
            )),
            None => problems.push(format!(
                "{path}: conversation {conversation_id} is not in the manifest's conversations"
            )),
        }
        let items = file["items"].as_array().ok_or("no items")?;
        let (counts, exact, mut empty) = count_items(items);
        problems.extend(
            empty
                .drain(..)
                .map(|item| format!("{path}: item {item} shows no event")),
        );
        let found = self
            .found
            .entry((conversation_id.to_owned(), date.to_owned()))
            .or_insert_with(|| Found {
                exact: true,
                ..Found::default()
            });
        found.counts.add(&counts);
        found.exact &= exact;
        found.paths.push(path.to_owned());
        if !found.parts.insert(part) {
            problems.push(format!("{path}: part {part} of this day twice"));
        }
        if let Some(parts) = file["parts"].as_u64() {
            found.parts_declared.insert(parts);
        }
        Ok(problems)
    }

    /// Compares what the files hold with the manifest's `days`, `conversations` and `totals`.
    pub(crate) fn finish(mut self, manifest: &Manifest, problems: &mut Vec<String>) {
        let mut by_conversation: BTreeMap<&str, Counts> = BTreeMap::new();
        let mut lines = BTreeSet::new();
        for day in &manifest.days {
            let key = (day.conversation_id.clone(), day.date.clone());
            by_conversation
                .entry(&day.conversation_id)
                .or_default()
                .add(&day.counts);
            if !lines.insert(key.clone()) {
                problems.push(format!(
                    "manifest.json: conversation {} on {} is counted twice in days",
                    day.conversation_id, day.date
                ));
                continue;
            }
            if let Some(folder) = self.folders.get(&day.conversation_id)
                && self
                    .unreadable
                    .contains(&(folder.clone(), day.date.clone()))
            {
                self.found.remove(&key);
                continue;
            }
            let Some(found) = self.found.remove(&key) else {
                let folder = self.folders.get(&day.conversation_id).map_or("?", |f| f);
                problems.push(format!(
                    "{folder}/{}.json: missing, but manifest.json counts {} for it",
                    day.date,
                    show(&day.counts)
                ));
                continue;
            };
            let file = match found.paths.as_slice() {
                [one] => one.clone(),
                many => format!("{} ({} parts)", many[0], many.len()),
            };
            if !agrees(&day.counts, &found.counts, found.exact) {
                problems.push(format!(
                    "{file}: manifest.json counts {} but the file holds {}",
                    show(&day.counts),
                    show(&found.counts)
                ));
            }
            let whole: BTreeSet<u64> = (1..=found.parts.len() as u64).collect();
            let declared = found.parts_declared.iter().copied().collect::<Vec<_>>();
            if found.parts != whole || declared != [found.parts.len() as u64] {
                problems.push(format!(
                    "{file}: parts {:?} present, {declared:?} declared",
                    found.parts
                ));
            }
        }
        for ((conversation_id, date), found) in self.found {
            problems.push(format!(
                "{}: holds {} but manifest.json has no count for conversation {conversation_id} \
                 on {date}",
                found.paths.join(", "),
                show(&found.counts)
            ));
        }
        let mut totals = Counts::default();
        for conversation in &manifest.head.conversations {
            totals.add(&conversation.counts);
            let days = by_conversation
                .remove(conversation.conversation_id.as_str())
                .unwrap_or_default();
            if days != conversation.counts {
                problems.push(format!(
                    "manifest.json: conversation {} counts {} but its days add up to {}",
                    conversation.conversation_id,
                    show(&conversation.counts),
                    show(&days)
                ));
            }
        }
        for (conversation_id, days) in by_conversation {
            problems.push(format!(
                "manifest.json: days count {} for conversation {conversation_id}, which is not \
                 in conversations",
                show(&days)
            ));
        }
        if totals != manifest.head.totals {
            problems.push(format!(
                "manifest.json: totals {} but the conversations add up to {}",
                show(&manifest.head.totals),
                show(&totals)
            ));
        }
    }
}

/// Recounts a day file's items: (counts, whether exact, items that show no event).
fn count_items(items: &[Value]) -> (Counts, bool, Vec<String>) {
    let (mut counts, mut exact, mut empty) = (Counts::default(), true, Vec::new());
    for item in items {
        let created = u64::from(!item["created_at"].is_null());
        let deleted = u64::from(item["deleted"].is_object());
        let before = counts.clone();
        match item["kind"].as_str() {
            Some("post") => {
                counts.posts += created;
                counts.edits += item["edits"].as_array().map_or(0, |e| e.len() as u64);
                counts.deletes += deleted;
            }
            Some("note") => {
                let edits = match item["edit_count"].as_u64() {
                    Some(n) => n,
                    None => {
                        // Format 2: at least one edit when it has a last edit.
                        exact = false;
                        u64::from(!item["last_edited_at"].is_null())
                    }
                };
                counts.notes += created + edits + deleted;
            }
            Some("file") => counts.files_shared += 1,
            _ => {}
        }
        counts.events =
            counts.posts + counts.edits + counts.deletes + counts.notes + counts.files_shared;
        if counts == before {
            empty.push(format!(
                "{}:{}",
                item["kind"].as_str().unwrap_or("?"),
                item["id"].as_str().unwrap_or("?")
            ));
        }
    }
    (counts, exact, empty)
}

/// Whether the manifest's counts for a day agree with the file's; `notes` and `events` as
/// lower bounds where the file cannot say exactly.
fn agrees(manifest: &Counts, file: &Counts, exact: bool) -> bool {
    if exact {
        return manifest == file;
    }
    let mut bounded = manifest.clone();
    bounded.notes = file.notes;
    bounded.events = file.events;
    bounded == *file && manifest.notes >= file.notes && manifest.events >= file.events
}

fn show(c: &Counts) -> String {
    format!(
        "events {}, posts {}, edits {}, deletes {}, notes {}, files_shared {}",
        c.events, c.posts, c.edits, c.deletes, c.notes, c.files_shared
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::manifest::{
        ConversationCounts, DayCounts, LogPosition, ManifestHead, RequestRecord,
    };

    fn counts(posts: u64, edits: u64, deletes: u64, notes: u64, files: u64) -> Counts {
        Counts {
            events: posts + edits + deletes + notes + files,
            posts,
            edits,
            deletes,
            notes,
            files_shared: files,
        }
    }

    fn manifest(day: Counts) -> Manifest {
        Manifest {
            head: ManifestHead {
                format: "cce-export-json".into(),
                format_version: 3,
                request: RequestRecord {
                    company_id: "acme".into(),
                    from: None,
                    to: chrono::DateTime::UNIX_EPOCH,
                    all_history: true,
                    person_ids: vec![],
                    conversation_ids: vec![],
                    time_zone: "UTC".into(),
                },
                log_position: LogPosition {
                    log_format_version: 1,
                    events_before: chrono::DateTime::UNIX_EPOCH,
                    events_read: day.events,
                    topic: None,
                    durable_until: None,
                    partitions: vec![],
                },
                conversations: vec![ConversationCounts {
                    conversation_id: "dm1".into(),
                    kind: "direct".into(),
                    folder: "People_Chats/dm1".into(),
                    counts: day.clone(),
                }],
                totals: day.clone(),
                schedule: None,
                signature: None,
            },
            days: vec![DayCounts {
                date: "2026-02-01".into(),
                conversation_id: "dm1".into(),
                counts: day,
            }],
            files: vec![],
        }
    }

    fn day_file(items: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"conversation": {"id": "dm1", "kind": "direct", "name": null},
            "date": "2026-02-01", "time_zone": "UTC", "part": 1, "parts": 1, "items": items}),
        )
        .unwrap()
    }

    fn problems(manifest: &Manifest, files: &[(&str, Vec<u8>)]) -> Vec<String> {
        let mut reconciler = Reconciler::new(manifest);
        let mut problems = Vec::new();
        for (path, content) in files {
            reconciler.add(path, content, &mut problems);
        }
        reconciler.finish(manifest, &mut problems);
        problems
    }

    const PATH: &str = "People_Chats/dm1/2026-02-01.json";

    #[test]
    fn counts_that_the_files_bear_out_pass() {
        let items = json!([
            {"kind": "post", "id": "p1", "created_at": "t", "edits": [{"at": "t"}, {"at": "t"}],
             "deleted": {"at": "t"}},
            {"kind": "post", "id": "p0", "created_elsewhere": true, "created_at": null,
             "edits": [], "deleted": {"at": "t"}},
            {"kind": "note", "id": "n1", "created_at": "t", "edit_count": 2, "deleted": null},
            {"kind": "file", "id": "f1", "shared_at": "t"}
        ]);
        let m = manifest(counts(1, 2, 2, 3, 1));
        assert_eq!(
            problems(&m, &[(PATH, day_file(items))]),
            Vec::<String>::new()
        );
    }

    /// The bug this check exists for: a deletion counted in the manifest but not in the file.
    #[test]
    fn a_count_the_file_does_not_bear_out_names_the_file_and_both_counts() {
        let items = json!([{"kind": "post", "id": "p1", "created_at": "t", "edits": [],
                            "deleted": null}]);
        let m = manifest(counts(1, 0, 1, 0, 0));
        let found = problems(&m, &[(PATH, day_file(items))]);
        assert_eq!(
            found,
            [format!(
                "{PATH}: manifest.json counts events 2, posts 1, edits 0, deletes 1, notes 0, \
                 files_shared 0 but the file holds events 1, posts 1, edits 0, deletes 0, \
                 notes 0, files_shared 0"
            )]
        );
    }

    #[test]
    fn missing_unlisted_and_empty_day_files_and_bad_sums_are_problems() {
        let m = manifest(counts(1, 0, 0, 0, 0));
        let found = problems(&m, &[]);
        assert!(
            found[0].contains("missing, but manifest.json counts"),
            "{found:?}"
        );

        let stray = "People_Chats/dm1/2026-02-02.json".to_owned();
        let mut other = day_file(json!([{"kind": "post", "id": "p", "created_at": "t",
                                          "edits": [], "deleted": null}]));
        other = String::from_utf8(other)
            .unwrap()
            .replace("2026-02-01", "2026-02-02")
            .into_bytes();
        let found = problems(
            &m,
            &[
                (
                    PATH,
                    day_file(json!([{"kind": "post", "id": "p", "created_at": "t",
                                        "edits": [], "deleted": null}])),
                ),
                (&stray, other),
            ],
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("has no count for conversation dm1 on 2026-02-02"));

        let placeholder = json!([{"kind": "post", "id": "p", "created_elsewhere": true,
                                  "created_at": null, "edits": [], "deleted": null}]);
        let found = problems(&m, &[(PATH, day_file(placeholder))]);
        assert!(
            found
                .iter()
                .any(|p| p.contains("item post:p shows no event")),
            "{found:?}"
        );

        let mut bad_totals = manifest(counts(1, 0, 0, 0, 0));
        bad_totals.head.totals.posts = 5;
        let found = problems(
            &bad_totals,
            &[(
                PATH,
                day_file(json!([{"kind": "post", "id": "p", "created_at": "t",
                                      "edits": [], "deleted": null}])),
            )],
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("manifest.json: totals"), "{found:?}");
    }

    #[test]
    fn a_day_whose_file_could_not_be_read_is_not_compared_again() {
        let m = manifest(counts(1, 0, 0, 0, 0));
        let mut reconciler = Reconciler::new(&m);
        reconciler.unreadable(PATH);
        let mut found = Vec::new();
        reconciler.finish(&m, &mut found);
        assert_eq!(found, Vec::<String>::new());

        // Nor when one part of two is unreadable; the other still has to be a day file.
        let mut reconciler = Reconciler::new(&m);
        reconciler.unreadable("People_Chats/dm1/2026-02-01_part-2.json");
        reconciler.add(PATH, &day_file(json!([])), &mut found);
        reconciler.finish(&m, &mut found);
        assert_eq!(found, Vec::<String>::new());
    }

    #[test]
    fn format_2_notes_are_checked_as_lower_bounds() {
        // Three edits of a note, shown (format 2) only by its last_edited_at.
        let items = json!([{"kind": "note", "id": "n1", "created_at": "t", "last_edited_at": "t",
                            "deleted": null}]);
        let m = manifest(counts(0, 0, 0, 4, 0));
        assert_eq!(
            problems(&m, &[(PATH, day_file(items.clone()))]),
            Vec::<String>::new()
        );
        let m = manifest(counts(0, 0, 0, 1, 0));
        assert_eq!(problems(&m, &[(PATH, day_file(items))]).len(), 1);
    }
}
