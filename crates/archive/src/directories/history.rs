//! Membership over time: who was a member of each conversation when, and its names over time,
//! for `users.json` and `teams.json` (`docs/export-format.md`, "Membership over time").
//!
//! The export folds its range's metadata changes into the directory as it stood at the range's
//! start ([`compliance_log::LogReader::metadata_range`]); every period a change ends — a
//! membership, a name — is kept here, on disk, by conversation. A conversation's history is
//! then what its periods ended in the range hold plus what the directory at the range's end
//! still holds open (current members with when they joined, the current name with when it was
//! set). So memory holds one conversation's history at a time, whatever the range: the ended
//! periods live in an on-disk B-tree (redb, in an anonymous temporary file with a bounded page
//! cache, counted against the export's [`DiskBudget`]) keyed by (conversation, order of
//! ending), read back one conversation at a time.

use std::cmp::Ordering;
use std::fs::File;

use chrono::{DateTime, FixedOffset, Utc};
use event_model::directory::{ConversationState, Ended, Since};
use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::spill::DiskUse;
use crate::{ArchiveError, DiskBudget};

const TABLE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("ended_periods");
/// The on-disk table's page cache.
const DISK_CACHE_BYTES: usize = 4 << 20;
/// Ended periods held before they are written in one transaction (redb holds a transaction's
/// pages in memory until it commits).
const PERIODS_PER_COMMIT: usize = 4_096;

/// One ended period as the table stores it.
#[derive(Debug, Serialize, Deserialize)]
enum Stored {
    Membership {
        person_id: String,
        joined: Option<Since>,
        left: Since,
    },
    Name {
        name: Option<String>,
        named: Option<Since>,
        until: Since,
    },
}

/// The periods the range's changes ended, by conversation.
pub struct MembershipHistory {
    /// The range's start: what began before it was in effect at the start.
    start: DateTime<Utc>,
    disk_budget: DiskBudget,
    /// Created with the first ended period (most exports end none).
    table: Option<DiskTable>,
    pending: Vec<((String, u64), Vec<u8>)>,
    next: u64,
}

#[derive(Debug)]
struct DiskTable {
    db: Database,
    file: File,
    used: DiskUse,
}

impl std::fmt::Debug for MembershipHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipHistory")
            .field("start", &self.start)
            .field("ended", &self.next)
            .finish_non_exhaustive()
    }
}

fn disk_error<E: std::error::Error + 'static>(e: E) -> ArchiveError {
    // A full TMPDIR says so and what to do, like every other temporary file of the export.
    if crate::spill::is_disk_full(&e) {
        return crate::spill::full_disk_error(e);
    }
    ArchiveError::Internal(format!("membership history on temporary disk: {e}"))
}

impl DiskTable {
    fn create(budget: &DiskBudget) -> Result<Self, ArchiveError> {
        let file = tempfile::tempfile().map_err(disk_error)?;
        let measured = file.try_clone().map_err(disk_error)?;
        let db = redb::Builder::new()
            .set_cache_size(DISK_CACHE_BYTES)
            .create_with_backend(FileBackend::new(file).map_err(disk_error)?)
            .map_err(disk_error)?;
        let mut table = Self {
            db,
            file: measured,
            used: DiskUse::new(budget),
        };
        table.measure()?;
        Ok(table)
    }

    /// Makes the count the file's length now.
    fn measure(&mut self) -> Result<(), ArchiveError> {
        let len = self.file.metadata().map_err(disk_error)?.len();
        self.used.set(len)
    }
}

impl MembershipHistory {
    /// An empty history of a range starting at `start`; its table counts against `disk`.
    pub fn new(start: DateTime<Utc>, disk: &DiskBudget) -> Self {
        Self {
            start,
            disk_budget: disk.clone(),
            table: None,
            pending: Vec::new(),
            next: 0,
        }
    }

    /// Keeps one ended period (periods must come in the order they ended).
    pub fn push(&mut self, ended: Ended) -> Result<(), ArchiveError> {
        let conversation_id = ended.conversation_id().to_owned();
        let stored = match ended {
            Ended::Membership {
                member,
                joined,
                left,
                ..
            } => Stored::Membership {
                person_id: member.person_id,
                joined,
                left,
            },
            Ended::Name {
                name, named, until, ..
            } => Stored::Name { name, named, until },
        };
        let bytes = serde_json::to_vec(&stored).map_err(disk_error)?;
        self.pending.push(((conversation_id, self.next), bytes));
        self.next += 1;
        if self.pending.len() >= PERIODS_PER_COMMIT {
            self.commit()?;
        }
        Ok(())
    }

    /// Writes the pending periods in one transaction.
    fn commit(&mut self) -> Result<(), ArchiveError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let table = match &mut self.table {
            Some(table) => table,
            None => self.table.insert(DiskTable::create(&self.disk_budget)?),
        };
        // Counted before it is written (keys, values and redb's per-entry overhead), then
        // made the file's real length once committed.
        let bytes: u64 = self
            .pending
            .iter()
            .map(|((id, _), v)| (id.len() + v.len() + 64) as u64)
            .sum();
        table.used.grow(bytes)?;
        let write = table.db.begin_write().map_err(disk_error)?;
        {
            let mut t = write.open_table(TABLE).map_err(disk_error)?;
            for ((id, seq), value) in self.pending.drain(..) {
                t.insert((id.as_str(), seq), value.as_slice())
                    .map_err(disk_error)?;
            }
        }
        write.commit().map_err(disk_error)?;
        table.measure()
    }

    /// Ends the writing: what is pending goes to disk.
    pub fn finish(&mut self) -> Result<(), ArchiveError> {
        self.commit()
    }

    /// The range's start.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// How many periods the range ended.
    pub fn ended(&self) -> u64 {
        self.next
    }

    /// Conversation `id`'s history over the range: its ended periods and what `state` (the
    /// conversation at the range's end; `None` when the directory does not know it) still
    /// holds open. Only [`finish`](Self::finish)ed periods are read.
    pub fn conversation(
        &self,
        id: &str,
        state: Option<&ConversationState>,
    ) -> Result<ConversationHistory, ArchiveError> {
        let before_start =
            |since: Option<&Since>| since.is_none_or(|s| s.at.with_timezone(&Utc) < self.start);
        let mut memberships = Vec::new();
        let mut names = Vec::new();
        if let Some(table) = &self.table {
            let read = table.db.begin_read().map_err(disk_error)?;
            let t = read.open_table(TABLE).map_err(disk_error)?;
            for entry in t.range((id, 0)..=(id, u64::MAX)).map_err(disk_error)? {
                let (_, value) = entry.map_err(disk_error)?;
                match serde_json::from_slice::<Stored>(value.value()).map_err(disk_error)? {
                    Stored::Membership {
                        person_id,
                        joined,
                        left,
                    } => memberships.push(MembershipPeriod {
                        member_at_range_start: before_start(joined.as_ref()),
                        person_id,
                        joined,
                        left: Some(left),
                    }),
                    Stored::Name { name, named, until } => names.push(NamePeriod {
                        in_effect_at_range_start: before_start(named.as_ref()),
                        name,
                        named,
                        until: Some(until),
                    }),
                }
            }
        }
        if let Some(state) = state {
            memberships.extend(state.members.entries().map(|(person_id, joined)| {
                MembershipPeriod {
                    person_id: person_id.to_owned(),
                    member_at_range_start: before_start(joined),
                    joined: joined.cloned(),
                    left: None,
                }
            }));
            if state.name.is_some() || state.named.is_some() {
                names.push(NamePeriod {
                    in_effect_at_range_start: before_start(state.named.as_ref()),
                    name: state.name.clone(),
                    named: state.named.clone(),
                    until: None,
                });
            }
        }
        // By when they began (unknown first: before the range), then person, then end.
        memberships.sort_by(|a, b| {
            began(a.joined.as_ref(), b.joined.as_ref())
                .then_with(|| a.person_id.cmp(&b.person_id))
                .then_with(|| ended(a.left.as_ref(), b.left.as_ref()))
        });
        Ok(ConversationHistory { memberships, names })
    }
}

fn began(a: Option<&Since>, b: Option<&Since>) -> Ordering {
    a.map(|s| s.at).cmp(&b.map(|s| s.at))
}

/// Open (`None`) last.
fn ended(a: Option<&Since>, b: Option<&Since>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.at.cmp(&b.at),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// One conversation's membership and names over an export's range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationHistory {
    /// Every membership in effect at some instant of the range, by when it began.
    pub memberships: Vec<MembershipPeriod>,
    /// Every name in effect at some instant of the range, in order.
    pub names: Vec<NamePeriod>,
}

/// One person's membership of a conversation, from joining to leaving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipPeriod {
    pub person_id: String,
    /// When they joined and who added them (the creator, for members at creation); `None`
    /// when the log's directory did not record it (a snapshot older than join times).
    pub joined: Option<Since>,
    /// Whether they were a member at the range's start (they joined before it).
    pub member_at_range_start: bool,
    /// When they left and who removed them (themselves when they left); `None`: a member at
    /// the range's end.
    pub left: Option<Since>,
}

/// One name of a conversation, from being set to being replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePeriod {
    pub name: Option<String>,
    /// When it was set and by whom; `None` when the log's directory did not record it.
    pub named: Option<Since>,
    /// Whether it was the name at the range's start.
    pub in_effect_at_range_start: bool,
    /// When it was replaced and by whom; `None`: the name at the range's end.
    pub until: Option<Since>,
}

impl MembershipPeriod {
    /// Whether the person was a member at `at` (an instant of the range).
    pub fn covers(&self, at: DateTime<FixedOffset>) -> bool {
        let joined = match &self.joined {
            Some(joined) => joined.at <= at,
            None => true,
        };
        joined && self.left.as_ref().is_none_or(|left| at < left.at)
    }
}

impl ConversationHistory {
    /// The people who were members at `at` (an instant of the range: a post's time), in id
    /// order, each once — who could read what was posted then.
    pub fn members_at(&self, at: DateTime<FixedOffset>) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .memberships
            .iter()
            .filter(|m| m.covers(at))
            .map(|m| m.person_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use event_model::directory::{Directory, Members};
    use event_model::event::Member;
    use event_model::{ConversationKind, EventBody};

    use super::*;

    fn since(at: &str, by: &str) -> Since {
        Since {
            at: at.parse().unwrap(),
            by: by.into(),
        }
    }

    fn member(id: &str) -> Member {
        Member {
            person_id: id.into(),
            company_id: "acme".into(),
            name: None,
            email: None,
        }
    }

    fn left(conversation: &str, person: &str, joined: Option<Since>, at: &str) -> Ended {
        Ended::Membership {
            conversation_id: conversation.into(),
            member: member(person),
            joined,
            left: since(at, person),
        }
    }

    fn state(id: &str, members: Members) -> ConversationState {
        ConversationState {
            id: id.into(),
            kind: ConversationKind::Team,
            owner_company_id: "acme".into(),
            name: Some("Desk".into()),
            created_at: None,
            created_by: None,
            archived_at: None,
            members,
            named: None,
        }
    }

    #[test]
    fn who_was_a_member_at_an_instant() {
        let start = "2026-02-01T00:00:00Z".parse().unwrap();
        let mut history = MembershipHistory::new(start, &DiskBudget::unlimited());
        // Ann joined before the range and left inside it; Bo joined and left inside it.
        history
            .push(left(
                "t",
                "ann",
                Some(since("2026-01-01T00:00:00Z", "x")),
                "2026-02-01T12:00:00Z",
            ))
            .unwrap();
        history
            .push(left(
                "t",
                "bo",
                Some(since("2026-02-01T06:00:00Z", "ann")),
                "2026-02-01T08:00:00Z",
            ))
            .unwrap();
        // Another conversation's period is not this one's.
        history
            .push(left("u", "zed", None, "2026-02-01T01:00:00Z"))
            .unwrap();
        history.finish().unwrap();
        let mut members = Members::default();
        // Cy: a member at the start whose joining an older snapshot did not record.
        members.insert(&member("cy"));
        members.join(&member("dee"), &since("2026-02-01T10:00:00Z", "cy"));
        let t = history
            .conversation("t", Some(&state("t", members)))
            .unwrap();
        let at = |text: &str| text.parse::<DateTime<FixedOffset>>().unwrap();
        assert_eq!(t.members_at(at("2026-02-01T00:00:00Z")), ["ann", "cy"]);
        assert_eq!(
            t.members_at(at("2026-02-01T07:00:00+01:00")),
            ["ann", "bo", "cy"]
        );
        assert_eq!(t.members_at(at("2026-02-01T08:00:00Z")), ["ann", "cy"]);
        assert_eq!(
            t.members_at(at("2026-02-01T11:00:00Z")),
            ["ann", "cy", "dee"]
        );
        assert_eq!(t.members_at(at("2026-02-01T12:00:00Z")), ["cy", "dee"]);
        let starts: Vec<(&str, bool)> = t
            .memberships
            .iter()
            .map(|m| (m.person_id.as_str(), m.member_at_range_start))
            .collect();
        // Unknown joinings first (before the range), then by when they joined.
        assert_eq!(
            starts,
            [("cy", true), ("ann", true), ("bo", false), ("dee", false)]
        );
        assert_eq!(t.names.len(), 1);
        assert!(t.names[0].in_effect_at_range_start);
        // A conversation the directory does not know: what ended in it, nothing open.
        let u = history.conversation("u", None).unwrap();
        assert_eq!(u.memberships.len(), 1);
        assert!(u.names.is_empty());
        assert_eq!(
            history.conversation("none", None).unwrap(),
            ConversationHistory::default()
        );
    }

    /// A large history goes to disk as it is folded and comes back one conversation at a
    /// time: what memory holds is a batch of pending periods and the conversation asked for.
    #[test]
    fn a_large_history_streams_through_disk_by_conversation() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let disk = DiskBudget::unlimited();
        let mut directory = Directory::default();
        let mut history = MembershipHistory::new(start, &disk);
        let team = |c: usize| event_model::event::ConversationRef {
            id: format!("conv-{c:03}"),
            kind: ConversationKind::Team,
            owner_company_id: "acme".into(),
            member_company_ids: Vec::new(),
        };
        let (conversations, people) = (50, 200);
        let mut n = 0u64;
        let mut event = |body: EventBody| {
            n += 1;
            event_model::Event {
                event_id: format!("e{n}"),
                occurred_at: (start + chrono::Duration::seconds(n as i64)).fixed_offset(),
                body,
            }
        };
        for c in 0..conversations {
            let created = event(EventBody::ConversationCreated {
                conversation: team(c),
                name: Some(format!("Team {c}")),
                created_by: "p0".into(),
                members: Vec::new(),
            });
            directory.apply(&created);
        }
        // Each person joins and leaves each conversation once.
        for p in 0..people {
            for c in 0..conversations {
                for body in [
                    EventBody::MembersAdded {
                        conversation: team(c),
                        members: vec![member(&format!("p{p:03}"))],
                        added_by: "p0".into(),
                    },
                    EventBody::MembersRemoved {
                        conversation: team(c),
                        members: vec![member(&format!("p{p:03}"))],
                        removed_by: "p0".into(),
                    },
                ] {
                    let e = event(body);
                    directory.apply_recording(&e, &mut |ended| history.push(ended).unwrap());
                    assert!(history.pending.len() < PERIODS_PER_COMMIT);
                }
            }
        }
        history.finish().unwrap();
        assert_eq!(history.ended(), (people * conversations) as u64);
        assert!(history.pending.is_empty());
        assert!(disk.used() > 0, "the periods are on disk");
        let c7 = history
            .conversation("conv-007", directory.conversations.get("conv-007"))
            .unwrap();
        assert_eq!(c7.memberships.len(), people);
        assert!(
            c7.memberships
                .iter()
                .all(|m| m.left.is_some() && !m.member_at_range_start)
        );
        let ids: Vec<&str> = c7
            .memberships
            .iter()
            .map(|m| m.person_id.as_str())
            .collect();
        let want: Vec<String> = (0..people).map(|p| format!("p{p:03}")).collect();
        assert_eq!(ids, want);
        drop(history);
        assert_eq!(disk.used(), 0, "the table's disk is given back");
    }

    #[test]
    fn a_history_past_the_disk_budget_fails_with_the_budget_error() {
        let disk = DiskBudget::new(64 * 1024);
        let mut history = MembershipHistory::new(Utc::now(), &disk);
        let error = (0..100_000)
            .map(|n| {
                history.push(left(
                    "t",
                    &format!("person-{n:08}"),
                    None,
                    "2026-02-01T00:00:00Z",
                ))
            })
            .find_map(Result::err)
            .or_else(|| history.finish().err())
            .unwrap();
        assert!(matches!(error, ArchiveError::DiskBudget { .. }), "{error}");
        drop(history);
        assert_eq!(disk.used(), 0);
    }
}
