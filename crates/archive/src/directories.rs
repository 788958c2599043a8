//! `People_And_Groups/users.json` and `Teams/teams.json`: the conversations of the export's
//! scope with their members, and their membership and names over the range (`history`),
//! streamed.
//!
//! A company's directory can be large (tens of thousands of conversations, teams of 50,000
//! members), so a listing is never built in memory: it is serialised straight into a spill
//! file, one conversation record at a time (its members one person at a time), and the ZIP
//! writer compresses it from there. The bytes are those the listings always had — the pretty
//! JSON of `{"conversations": [...]}` with every object's keys in alphabetical order (as
//! `serde_json::Value` maps sort them) — so the records below declare their fields in that
//! order. Format version 5 added `membership` and `names` to each conversation; the fields
//! before them are as they were.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::iter::Peekable;

use chrono::{DateTime, FixedOffset};
use event_model::ConversationKind;
use event_model::directory::{ConversationState, Directory, Members};
use serde::{Serialize, Serializer};

use crate::spill::{Spill, from_io};
use crate::{ArchiveError, DiskBudget};

pub mod history;

use history::{ConversationHistory, MembershipHistory};

/// The two listings: where each goes and which conversations it holds.
pub(crate) const LISTINGS: [(&str, Section); 2] = [
    ("People_And_Groups/users.json", Section::People),
    ("Teams/teams.json", Section::Teams),
];

/// Which conversations a listing holds: teams, or every other (direct chats, groups, and
/// conversations the directory does not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    People,
    Teams,
}

/// What the listings are made from; the renderer lends its own rules for scope and folders,
/// so the listings say what the day files do.
pub(crate) struct Scope<'a> {
    /// The directory at the range's end.
    pub(crate) directory: &'a Directory,
    /// The periods the range's changes ended.
    pub(crate) history: &'a MembershipHistory,
    /// Conversations with content in the range; listed whatever the scope, and marked.
    pub(crate) seen: &'a BTreeSet<String>,
    /// Whether a conversation of the directory is in the export's scope.
    pub(crate) in_scope: &'a dyn Fn(&str) -> bool,
    /// A conversation's folder (`Team_Chats/…`, `People_Chats/…`) and kind.
    pub(crate) folder_of: &'a dyn Fn(&str) -> (String, ConversationKind),
}

/// Writes one listing into a spill file counted against `disk`. On a multi-threaded runtime
/// the work (seconds for a very large directory) leaves the async worker first.
pub(crate) fn write_listing(
    scope: &Scope<'_>,
    section: Section,
    disk: &DiskBudget,
) -> Result<Spill, ArchiveError> {
    off_the_async_worker(|| {
        let mut spill = Spill::with_budget(disk)?;
        let mut out = BufWriter::with_capacity(64 * 1024, &mut spill);
        let document = Document {
            conversations: Listing { scope, section },
        };
        serde_json::to_writer_pretty(&mut out, &document).map_err(|e| {
            from_io(std::io::Error::from(e), |e| {
                ArchiveError::Internal(format!("writing a directory listing: {e}"))
            })
        })?;
        out.flush().map_err(|e| {
            from_io(e, |e| {
                ArchiveError::Internal(format!("writing a directory listing: {e}"))
            })
        })?;
        drop(out);
        Ok(spill)
    })
}

/// Folds the range's metadata changes (in log order) into `directory`, the directory at the
/// range's `start`, leaving it at the range's end; returns the periods they ended. On a
/// multi-threaded runtime the work (the periods go to disk) leaves the async worker first.
pub(crate) fn fold_range(
    directory: &mut Directory,
    changes: Vec<compliance_log::LogRecord>,
    start: chrono::DateTime<chrono::Utc>,
    disk: &DiskBudget,
) -> Result<MembershipHistory, ArchiveError> {
    off_the_async_worker(|| {
        let mut history = MembershipHistory::new(start, disk);
        let mut failed = None;
        for record in changes {
            directory.apply_recording(&record.event, &mut |ended| {
                if failed.is_none()
                    && let Err(error) = history.push(ended)
                {
                    failed = Some(error);
                }
            });
        }
        if let Some(error) = failed {
            return Err(error);
        }
        history.finish()?;
        Ok(history)
    })
}

fn off_the_async_worker<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[derive(Serialize)]
struct Document<'a> {
    conversations: Listing<'a>,
}

/// The listing's conversations, made and serialised one at a time.
struct Listing<'a> {
    scope: &'a Scope<'a>,
    section: Section,
}

impl Serialize for Listing<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let scope = self.scope;
        let in_directory = scope
            .directory
            .conversations
            .keys()
            .filter(|id| (scope.in_scope)(id));
        let records = union(in_directory, scope.seen.iter())
            .filter_map(|id| {
                let state = scope.directory.conversations.get(id);
                let section = match state {
                    Some(c) if c.kind == ConversationKind::Team => Section::Teams,
                    _ => Section::People,
                };
                (section == self.section).then_some((id, state))
            })
            .map(|(id, state)| {
                // One conversation's history at a time, read from the periods on disk.
                let history = scope.history.conversation(id, state)?;
                Ok::<_, ArchiveError>(ConversationRecord::new(scope, id, state, history))
            });
        Fallible(std::cell::Cell::new(Some(records))).serialize(serializer)
    }
}

/// A sequence whose elements may fail to be made: the first error ends the serialisation.
struct Fallible<I>(std::cell::Cell<Option<I>>);

impl<I, T, E> Serialize for Fallible<I>
where
    I: Iterator<Item = Result<T, E>>,
    T: Serialize,
    E: std::fmt::Display,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let Some(items) = self.0.take() else {
            return Err(S::Error::custom("a listing is serialised once"));
        };
        let mut seq = serializer.serialize_seq(None)?;
        for item in items {
            seq.serialize_element(&item.map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
}

/// One conversation of a listing; fields in alphabetical order.
#[derive(Serialize)]
struct ConversationRecord<'a> {
    archived_at: Option<&'a DateTime<FixedOffset>>,
    created_at: Option<&'a DateTime<FixedOffset>>,
    created_by: Option<&'a str>,
    folder: String,
    has_content_in_range: bool,
    id: &'a str,
    kind: &'static str,
    members: MemberList<'a>,
    /// Every membership in effect in the range (format version 5).
    membership: MembershipList<'a>,
    name: Option<&'a str>,
    /// Every name in effect in the range (format version 5).
    names: NameList,
    owner_company_id: Option<&'a str>,
}

impl<'a> ConversationRecord<'a> {
    fn new(
        scope: &'a Scope<'a>,
        id: &'a str,
        state: Option<&'a ConversationState>,
        history: ConversationHistory,
    ) -> Self {
        let (folder, kind) = (scope.folder_of)(id);
        Self {
            archived_at: state.and_then(|c| c.archived_at.as_ref()),
            created_at: state.and_then(|c| c.created_at.as_ref()),
            created_by: state.and_then(|c| c.created_by.as_deref()),
            folder,
            has_content_in_range: scope.seen.contains(id),
            id,
            kind: kind.as_str(),
            members: MemberList {
                directory: scope.directory,
                members: state.map(|c| &c.members),
            },
            membership: MembershipList {
                directory: scope.directory,
                periods: history.memberships,
            },
            name: state.and_then(|c| c.name.as_deref()),
            names: NameList(history.names),
            owner_company_id: state.map(|c| c.owner_company_id.as_str()),
        }
    }
}

/// A conversation's memberships over the range, each with the person the directory knows.
struct MembershipList<'a> {
    directory: &'a Directory,
    periods: Vec<history::MembershipPeriod>,
}

/// One membership; fields in alphabetical order.
#[derive(Serialize)]
struct MembershipRecord<'a> {
    added_by: Option<&'a str>,
    joined_at: Option<&'a DateTime<FixedOffset>>,
    left_at: Option<&'a DateTime<FixedOffset>>,
    left_by_themselves: bool,
    member_at_range_start: bool,
    person: PersonRecord<'a>,
    removed_by: Option<&'a str>,
}

impl Serialize for MembershipList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.periods.iter().map(|m| MembershipRecord {
            added_by: m.joined.as_ref().map(|j| j.by.as_str()),
            joined_at: m.joined.as_ref().map(|j| &j.at),
            left_at: m.left.as_ref().map(|l| &l.at),
            left_by_themselves: m.left.as_ref().is_some_and(|l| l.by == m.person_id),
            member_at_range_start: m.member_at_range_start,
            person: person_record(self.directory, &m.person_id),
            removed_by: m.left.as_ref().map(|l| l.by.as_str()),
        }))
    }
}

/// A conversation's names over the range.
struct NameList(Vec<history::NamePeriod>);

/// One name; fields in alphabetical order.
#[derive(Serialize)]
struct NameRecord<'a> {
    changed_by: Option<&'a str>,
    from: Option<&'a DateTime<FixedOffset>>,
    in_effect_at_range_start: bool,
    name: Option<&'a str>,
    replaced_by: Option<&'a str>,
    until: Option<&'a DateTime<FixedOffset>>,
}

impl Serialize for NameList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|n| NameRecord {
            changed_by: n.named.as_ref().map(|s| s.by.as_str()),
            from: n.named.as_ref().map(|s| &s.at),
            in_effect_at_range_start: n.in_effect_at_range_start,
            name: n.name.as_deref(),
            replaced_by: n.until.as_ref().map(|s| s.by.as_str()),
            until: n.until.as_ref().map(|s| &s.at),
        }))
    }
}

/// The person `id` as the directory knows them.
fn person_record<'a>(directory: &'a Directory, id: &'a str) -> PersonRecord<'a> {
    match directory.people.get(id) {
        Some(p) => PersonRecord::Known {
            company_id: &p.company_id,
            email: p.email.as_deref(),
            id,
            name: p.name.as_deref(),
        },
        None => PersonRecord::Unknown { id },
    }
}

/// A conversation's current members, in id order, each as the person the directory knows.
struct MemberList<'a> {
    directory: &'a Directory,
    members: Option<&'a Members>,
}

impl Serialize for MemberList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.members
                .into_iter()
                .flat_map(|members| members.keys().map(|id| person_record(self.directory, id))),
        )
    }
}

/// A person as listings and items show them; fields in alphabetical order.
#[derive(Serialize)]
#[serde(untagged)]
enum PersonRecord<'a> {
    Known {
        company_id: &'a str,
        email: Option<&'a str>,
        id: &'a str,
        name: Option<&'a str>,
    },
    Unknown {
        id: &'a str,
    },
}

/// The sorted union of two sorted, duplicate-free sequences of ids.
fn union<'a>(
    a: impl Iterator<Item = &'a String>,
    b: impl Iterator<Item = &'a String>,
) -> impl Iterator<Item = &'a String> {
    Union {
        a: a.peekable(),
        b: b.peekable(),
    }
}

struct Union<A: Iterator, B: Iterator> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<'a, A, B> Iterator for Union<A, B>
where
    A: Iterator<Item = &'a String>,
    B: Iterator<Item = &'a String>,
{
    type Item = &'a String;

    fn next(&mut self) -> Option<&'a String> {
        let order = match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, _) => return self.b.next(),
        };
        match order {
            Ordering::Less => self.a.next(),
            Ordering::Greater => self.b.next(),
            Ordering::Equal => {
                self.b.next();
                self.a.next()
            }
        }
    }
}

#[cfg(test)]
mod scale;

#[cfg(test)]
mod tests {
    use event_model::directory::{PersonState, Since};
    use event_model::event::Member;
    use serde_json::{Value, json};

    use super::*;

    /// A directory with every case: people known and not, with and without names and emails;
    /// conversations of each kind, named or not, archived or not, empty or not.
    fn directory() -> Directory {
        let mut directory = Directory::default();
        for p in 0..30 {
            let id = format!("u{p:02}");
            directory.people.insert(
                id.clone(),
                PersonState {
                    id,
                    company_id: if p % 4 == 0 { "globex" } else { "acme" }.into(),
                    name: (p % 3 != 0).then(|| format!("Person \"{p}\" Ü\t🚀")),
                    email: (p % 5 != 0).then(|| format!("u{p}@acme")),
                    active: p % 7 != 0,
                },
            );
        }
        let at: DateTime<FixedOffset> = "2026-01-02T03:04:05.678+05:30".parse().unwrap();
        for c in 0..60usize {
            let id = format!("c{c:03}");
            let kind = [
                ConversationKind::Direct,
                ConversationKind::Group,
                ConversationKind::Team,
            ][c % 3];
            let members: Vec<Member> = (0..c % 11)
                .map(|m| Member {
                    // Some members the directory has no person for.
                    person_id: format!("u{:02}", (c * 5 + m * 7) % 37),
                    company_id: "acme".into(),
                    name: None,
                    email: None,
                })
                .collect();
            directory.conversations.insert(
                id.clone(),
                ConversationState {
                    id,
                    kind,
                    owner_company_id: "acme".into(),
                    name: (c % 4 != 0).then(|| format!("Name {c} \\ \"quoted\" \u{1}")),
                    created_at: (c % 5 != 0).then_some(at),
                    created_by: (c % 6 != 0).then(|| "u01".to_owned()),
                    archived_at: (c % 7 == 3).then_some(at),
                    members: members.iter().collect(),
                    named: None,
                },
            );
        }
        directory
    }

    fn folder_of(directory: &Directory, id: &str) -> (String, ConversationKind) {
        let state = directory.conversations.get(id);
        let kind = state.map_or(ConversationKind::Group, |c| c.kind);
        let name = state.and_then(|c| c.name.as_deref());
        (
            format!("{kind:?}/{}", crate::names::conversation_folder(id, name)),
            kind,
        )
    }

    /// No period ended in the range (which starts before everything the tests hold).
    fn no_history() -> MembershipHistory {
        MembershipHistory::new(
            "2000-01-01T00:00:00Z".parse().unwrap(),
            &DiskBudget::unlimited(),
        )
    }

    /// The listings as they were built before streaming: one `Value` tree (render.rs at
    /// 0c600df), with format version 5's `membership` and `names` made from the history.
    pub(super) fn reference(scope: &Scope<'_>) -> [Vec<u8>; 2] {
        let person = |id: &str| match scope.directory.people.get(id) {
            Some(p) => {
                json!({"id": id, "name": p.name, "email": p.email, "company_id": p.company_id})
            }
            None => json!({"id": id}),
        };
        let ids: BTreeSet<String> = scope
            .directory
            .conversations
            .keys()
            .filter(|id| (scope.in_scope)(id))
            .chain(scope.seen.iter())
            .cloned()
            .collect();
        let (mut people, mut teams) = (Vec::new(), Vec::new());
        for id in &ids {
            let state = scope.directory.conversations.get(id);
            let (folder, kind) = (scope.folder_of)(id);
            let members: Vec<Value> = state
                .map(|c| c.members.keys().map(&person).collect())
                .unwrap_or_default();
            let history = scope.history.conversation(id, state).unwrap();
            let since = |s: Option<&Since>| (s.map(|s| s.at), s.map(|s| s.by.clone()));
            let membership: Vec<Value> = history
                .memberships
                .iter()
                .map(|m| {
                    let ((joined_at, added_by), (left_at, removed_by)) =
                        (since(m.joined.as_ref()), since(m.left.as_ref()));
                    json!({"person": person(&m.person_id), "joined_at": joined_at,
                           "added_by": added_by, "left_at": left_at,
                           "left_by_themselves": removed_by.as_deref() == Some(m.person_id.as_str()),
                           "removed_by": removed_by, "member_at_range_start": m.member_at_range_start})
                })
                .collect();
            let names: Vec<Value> = history
                .names
                .iter()
                .map(|n| {
                    let ((from, changed_by), (until, replaced_by)) =
                        (since(n.named.as_ref()), since(n.until.as_ref()));
                    json!({"name": n.name, "from": from, "changed_by": changed_by, "until": until,
                           "replaced_by": replaced_by, "in_effect_at_range_start": n.in_effect_at_range_start})
                })
                .collect();
            let record = json!({
                "membership": membership, "names": names,
                "id": id, "kind": kind.as_str(), "name": state.and_then(|c| c.name.clone()),
                "owner_company_id": state.map(|c| c.owner_company_id.clone()),
                "created_at": state.and_then(|c| c.created_at), "created_by": state.and_then(|c| c.created_by.clone()),
                "archived_at": state.and_then(|c| c.archived_at), "members": members, "folder": folder,
                "has_content_in_range": scope.seen.contains(id),
            });
            if state.is_some_and(|c| c.kind == ConversationKind::Team) {
                teams.push(record);
            } else {
                people.push(record);
            }
        }
        [people, teams]
            .map(|list| serde_json::to_vec_pretty(&json!({"conversations": list})).unwrap())
    }

    fn streamed(scope: &Scope<'_>, section: Section, disk: &DiskBudget) -> Vec<u8> {
        let spill = write_listing(scope, section, disk).unwrap();
        let mut reader = spill.into_reader().unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk(4096).unwrap() {
            bytes.extend_from_slice(&chunk);
        }
        bytes
    }

    #[test]
    fn the_streamed_listings_are_the_value_trees_bytes() {
        let directory = directory();
        // Content in conversations of the directory and in some it does not know.
        let seen: BTreeSet<String> = ["c001", "c002", "c017", "c059", "a-unknown", "z-unknown"]
            .into_iter()
            .map(String::from)
            .collect();
        let folder = |id: &str| folder_of(&directory, id);
        let filters: [&dyn Fn(&str) -> bool; 3] = [
            &|_| true,
            &|id: &str| id.ends_with('3') || id.ends_with('5'),
            &|_| false,
        ];
        for (n, in_scope) in filters.into_iter().enumerate() {
            let history = no_history();
            let scope = Scope {
                directory: &directory,
                history: &history,
                seen: &seen,
                in_scope,
                folder_of: &folder,
            };
            let [people, teams] = reference(&scope);
            let disk = DiskBudget::unlimited();
            assert_eq!(
                String::from_utf8(streamed(&scope, Section::People, &disk)).unwrap(),
                String::from_utf8(people).unwrap(),
                "filter {n}"
            );
            assert_eq!(
                String::from_utf8(streamed(&scope, Section::Teams, &disk)).unwrap(),
                String::from_utf8(teams).unwrap(),
                "filter {n}"
            );
            assert_eq!(disk.used(), 0, "the spills are given back");
        }
        // An empty directory: empty lists.
        let empty = Directory::default();
        let none = BTreeSet::new();
        let folder = |id: &str| folder_of(&empty, id);
        let history = no_history();
        let scope = Scope {
            directory: &empty,
            history: &history,
            seen: &none,
            in_scope: &|_| true,
            folder_of: &folder,
        };
        let bytes = streamed(&scope, Section::Teams, &DiskBudget::unlimited());
        assert_eq!(bytes, reference(&scope)[1]);
        assert_eq!(bytes, b"{\n  \"conversations\": []\n}");
    }

    #[test]
    fn a_listing_past_the_disk_budget_fails_with_the_budget_error() {
        let directory = directory();
        let seen = BTreeSet::new();
        let folder = |id: &str| folder_of(&directory, id);
        let history = no_history();
        let scope = Scope {
            directory: &directory,
            history: &history,
            seen: &seen,
            in_scope: &|_| true,
            folder_of: &folder,
        };
        let disk = DiskBudget::new(1_000);
        let error = write_listing(&scope, Section::People, &disk).unwrap_err();
        assert!(matches!(error, ArchiveError::DiskBudget { .. }), "{error}");
        assert_eq!(disk.used(), 0, "the spill is deleted and given back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_threaded_runtime_the_listing_leaves_the_async_worker() {
        let directory = directory();
        let seen = BTreeSet::new();
        let folder = |id: &str| folder_of(&directory, id);
        let history = no_history();
        let scope = Scope {
            directory: &directory,
            history: &history,
            seen: &seen,
            in_scope: &|_| true,
            folder_of: &folder,
        };
        let spill = write_listing(&scope, Section::Teams, &DiskBudget::unlimited()).unwrap();
        let mut reader = spill.into_reader().unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk(1 << 20).unwrap() {
            bytes.extend_from_slice(&chunk);
        }
        assert_eq!(bytes, reference(&scope)[1]);
    }
}
