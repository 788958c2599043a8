//! A conversation's current members, held compactly.
//!
//! Memberships are most of a large directory's memory: a company with ten teams of 50,000
//! people holds over half a million. Kept as a `BTreeMap<String, Member>` each cost about 270
//! bytes (the id twice, four more strings, a wide map entry); here each is one allocation
//! holding its id, company, name and email back to back, in a set ordered by id, for about 90.
//! The serialised form (in the log's metadata snapshots) is the map of person id to [`Member`]
//! it always was, read and written one member at a time; a member whose joining the directory
//! saw also carries `joined` (when and by whom), which older snapshots lack.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Deserializer, Serialize};

use super::Since;
use crate::event::Member;

/// Current members by person id, in id order.
#[derive(Clone, Default)]
pub struct Members {
    set: BTreeSet<Packed>,
}

/// Equal when every member is, whole (the set itself compares ids only).
impl PartialEq for Members {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .set
                .iter()
                .zip(&other.set)
                .all(|(a, b)| a.parts() == b.parts() && a.joined == b.joined)
    }
}

impl Eq for Members {}

impl fmt::Debug for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.set.iter().map(|p| (p.id(), p.member())))
            .finish()
    }
}

impl Members {
    /// Adds a member, or replaces what is known of them (keeping when they joined).
    pub fn insert(&mut self, member: &Member) {
        let joined = self
            .set
            .get(member.person_id.as_str())
            .and_then(|p| p.joined.clone());
        self.set.replace(Packed::new(member, joined));
    }

    /// Adds a member who joined at `joined`; of a member already, replaces what is known of
    /// them and keeps when they joined (they have been one since).
    pub fn join(&mut self, member: &Member, joined: &Since) {
        let joined = match self.set.get(member.person_id.as_str()) {
            Some(present) => present.joined.clone(),
            None => Some(Box::new(joined.clone())),
        };
        self.set.replace(Packed::new(member, joined));
    }

    /// Removes a member; whether they were one.
    pub fn remove(&mut self, person_id: &str) -> bool {
        self.set.remove(person_id)
    }

    /// Removes a member and returns them with when they joined, if the directory saw it.
    pub fn take(&mut self, person_id: &str) -> Option<(Member, Option<Since>)> {
        self.set
            .take(person_id)
            .map(|p| (p.member(), p.joined.map(|j| *j)))
    }

    /// Sets when a member joined (a member of the set; otherwise nothing).
    pub fn set_joined(&mut self, person_id: &str, joined: Since) {
        if let Some(mut packed) = self.set.take(person_id) {
            packed.joined = Some(Box::new(joined));
            self.set.insert(packed);
        }
    }

    /// When the member joined and who added them, if the directory saw it.
    pub fn joined(&self, person_id: &str) -> Option<&Since> {
        self.set.get(person_id).and_then(|p| p.joined.as_deref())
    }

    /// The members' ids with when they joined (if known), in id order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&Since>)> {
        self.set.iter().map(|p| (p.id(), p.joined.as_deref()))
    }

    pub fn contains(&self, person_id: &str) -> bool {
        self.set.contains(person_id)
    }

    /// The member with this id, as the event that added them said.
    pub fn get(&self, person_id: &str) -> Option<Member> {
        self.set.get(person_id).map(Packed::member)
    }

    /// The members' ids, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(Packed::id)
    }

    /// The members, in id order.
    pub fn iter(&self) -> impl Iterator<Item = Member> + '_ {
        self.set.iter().map(Packed::member)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Of members listed twice, the last wins (as inserting them in turn would have it).
impl<'a> FromIterator<&'a Member> for Members {
    fn from_iter<I: IntoIterator<Item = &'a Member>>(members: I) -> Self {
        Self::build(members.into_iter().map(|m| Packed::new(m, None)).collect())
    }
}

impl Members {
    /// Members who all joined at `joined` (a conversation's creation); of members listed
    /// twice, the last wins.
    pub fn joined_together<'a>(
        members: impl IntoIterator<Item = &'a Member>,
        joined: &Since,
    ) -> Self {
        Self::build(
            members
                .into_iter()
                .map(|m| Packed::new(m, Some(Box::new(joined.clone()))))
                .collect(),
        )
    }

    /// Builds the set in one pass over sorted members, which fills its nodes (inserting one
    /// at a time leaves them about half full, and a large team is built from one event).
    fn build(packed: Vec<Packed>) -> Self {
        // By id, and of equal ids the last listed first: `dedup` keeps the first of a run.
        let mut indexed: Vec<(usize, Packed)> = packed.into_iter().enumerate().collect();
        indexed.sort_by(|(i, a), (j, b)| a.id().cmp(b.id()).then(j.cmp(i)));
        indexed.dedup_by(|(_, later), (_, kept)| later.id() == kept.id());
        Self {
            set: indexed.into_iter().map(|(_, p)| p).collect(),
        }
    }
}

/// One member: id, company, name and email in one string, with their lengths, and when they
/// joined (boxed: unknown for members of older snapshots, and one pointer when known).
#[derive(Clone)]
struct Packed {
    text: Box<str>,
    joined: Option<Box<Since>>,
    id_len: u32,
    company_len: u32,
    /// `ABSENT` for no name.
    name_len: u32,
    /// `ABSENT` for no email.
    email_len: u32,
}

const ABSENT: u32 = u32::MAX;

impl Packed {
    fn new(member: &Member, joined: Option<Box<Since>>) -> Self {
        let name = member.name.as_deref();
        let email = member.email.as_deref();
        let mut text = String::with_capacity(
            member.person_id.len()
                + member.company_id.len()
                + name.map_or(0, str::len)
                + email.map_or(0, str::len),
        );
        for part in [
            Some(member.person_id.as_str()),
            Some(member.company_id.as_str()),
            name,
            email,
        ]
        .into_iter()
        .flatten()
        {
            text.push_str(part);
        }
        // Events are at most a few MiB: every length fits in 32 bits, below `ABSENT`.
        let len = |s: &str| u32::try_from(s.len()).unwrap_or(ABSENT - 1);
        Self {
            text: text.into_boxed_str(),
            joined,
            id_len: len(&member.person_id),
            company_len: len(&member.company_id),
            name_len: name.map_or(ABSENT, len),
            email_len: email.map_or(ABSENT, len),
        }
    }

    /// The four parts: id, company, name, email.
    fn parts(&self) -> (&str, &str, Option<&str>, Option<&str>) {
        let mut rest = &*self.text;
        let mut take = |len: u32| {
            if len == ABSENT {
                return None;
            }
            // The lengths were measured on the same strings, at char boundaries.
            let (part, tail) = rest.split_at(len as usize);
            rest = tail;
            Some(part)
        };
        let id = take(self.id_len).unwrap_or_default();
        let company = take(self.company_len).unwrap_or_default();
        let name = take(self.name_len);
        let email = take(self.email_len);
        (id, company, name, email)
    }

    fn id(&self) -> &str {
        &self.text[..self.id_len as usize]
    }

    fn member(&self) -> Member {
        let (id, company, name, email) = self.parts();
        Member {
            person_id: id.to_owned(),
            company_id: company.to_owned(),
            name: name.map(str::to_owned),
            email: email.map(str::to_owned),
        }
    }
}

// A set of members is keyed by id alone (each id is in it once).
impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Packed {}

impl PartialOrd for Packed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Packed {
    fn cmp(&self, other: &Self) -> Ordering {
        self.id().cmp(other.id())
    }
}

impl Borrow<str> for Packed {
    fn borrow(&self) -> &str {
        self.id()
    }
}

/// A member as it is serialised: the fields of [`Member`], in its order, then when they
/// joined if known (absent otherwise, so a directory without join times is the bytes it was).
#[derive(Serialize)]
struct MemberOut<'a> {
    person_id: &'a str,
    company_id: &'a str,
    name: Option<&'a str>,
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<&'a Since>,
}

/// A member as it is read: [`Member`] and `joined`, absent in older snapshots.
#[derive(Deserialize)]
struct MemberIn {
    company_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    joined: Option<Box<Since>>,
}

impl Serialize for Members {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.set.iter().map(|packed| {
            let (person_id, company_id, name, email) = packed.parts();
            (
                person_id,
                MemberOut {
                    person_id,
                    company_id,
                    name,
                    email,
                    joined: packed.joined.as_deref(),
                },
            )
        }))
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of person id to member")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut packed = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        // One member at a time; the key is the member's id (as the map was always built).
        while let Some((person_id, read)) = map.next_entry::<String, MemberIn>()? {
            let member = Member {
                person_id,
                company_id: read.company_id,
                name: read.name,
                email: read.email,
            };
            packed.push(Packed::new(&member, read.joined));
        }
        Ok(Members::build(packed))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn member(id: &str, company: &str, name: Option<&str>, email: Option<&str>) -> Member {
        Member {
            person_id: id.into(),
            company_id: company.into(),
            name: name.map(Into::into),
            email: email.map(Into::into),
        }
    }

    fn sample() -> Vec<Member> {
        vec![
            member("u2", "acme", Some("Bo"), None),
            member("x9", "globex", Some("Xï \"9\""), Some("xi@globex")),
            member("u1", "acme", None, None),
            member("", "", Some(""), Some("")),
            member("é🚀", "b", None, Some("e@b")),
        ]
    }

    #[test]
    fn keeps_each_member_whole_in_id_order() {
        let mut members: Members = sample().iter().collect();
        assert_eq!(
            members.keys().collect::<Vec<_>>(),
            ["", "u1", "u2", "x9", "é🚀"]
        );
        for m in sample() {
            assert_eq!(members.get(&m.person_id), Some(m));
        }
        // A member added again: what is known of them is replaced.
        members.insert(&member("u1", "acme", Some("Ann"), Some("ann@acme")));
        assert_eq!(members.len(), 5);
        assert_eq!(members.get("u1").unwrap().name.as_deref(), Some("Ann"));
        assert!(members.remove("u2"));
        assert!(!members.remove("u2"));
        assert!(!members.contains("u2"));
        assert_eq!(members.iter().count(), 4);
        // Equality looks at whole members, not only ids.
        let mut renamed = members.clone();
        assert_eq!(renamed, members);
        renamed.insert(&member("u1", "acme", Some("Other"), Some("ann@acme")));
        assert_ne!(renamed, members);
    }

    #[test]
    fn of_members_listed_twice_the_last_wins() {
        let listed = [
            member("b", "acme", Some("first b"), None),
            member("a", "acme", Some("first a"), None),
            member("b", "acme", Some("second b"), None),
            member("c", "acme", None, None),
            member("b", "acme", Some("third b"), None),
        ];
        let built: Members = listed.iter().collect();
        let mut inserted = Members::default();
        listed.iter().for_each(|m| inserted.insert(m));
        assert_eq!(built, inserted);
        assert_eq!(built.len(), 3);
        assert_eq!(built.get("b").unwrap().name.as_deref(), Some("third b"));
        let read: Members = serde_json::from_str(
            r#"{"a": {"person_id": "a", "company_id": "x", "name": "one"},
                "a": {"person_id": "a", "company_id": "x", "name": "two"}}"#,
        )
        .unwrap();
        assert_eq!(read.get("a").unwrap().name.as_deref(), Some("two"));
    }

    #[test]
    fn serialises_as_the_map_it_always_was() {
        let old: BTreeMap<String, Member> = sample()
            .into_iter()
            .map(|m| (m.person_id.clone(), m))
            .collect();
        let new: Members = sample().iter().collect();
        let old_text = serde_json::to_string(&old).unwrap();
        assert_eq!(serde_json::to_string(&new).unwrap(), old_text);
        assert_eq!(
            serde_json::to_string_pretty(&new).unwrap(),
            serde_json::to_string_pretty(&old).unwrap()
        );
        // Read back, from either.
        assert_eq!(serde_json::from_str::<Members>(&old_text).unwrap(), new);
        let back: BTreeMap<String, Member> =
            serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, old);
        // Members without the optional fields, as older snapshots may hold them.
        let sparse: Members =
            serde_json::from_str(r#"{"a": {"person_id": "a", "company_id": "c"}}"#).unwrap();
        assert_eq!(sparse.get("a"), Some(member("a", "c", None, None)));
    }
}
