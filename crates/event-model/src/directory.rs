//! A company's people and conversations, folded from its metadata events in log order.
//!
//! The export lists conversations with their names, owners and members from this; people of
//! other companies (the other side of a direct chat, guests) are known from the member lists
//! conversation events carry.
//!
//! Membership over time: the directory keeps when each member joined and who added them, and
//! when the current name was set and by whom ([`Since`]; unknown for what a snapshot written
//! before they were kept holds). What a change ends — a membership, a name — is handed to the
//! caller of [`Directory::apply_recording`] as an [`Ended`] period, so an export can list every
//! period of its range without keeping them all.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::event::{ConversationKind, ConversationRef, Event, EventBody, Member};

mod members;

pub use members::Members;

/// Serialisable both ways: compaction stores a company's directory as of the end of each day
/// (a snapshot) so that a reader starts from it instead of folding the whole history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Directory {
    pub people: BTreeMap<String, PersonState>,
    pub conversations: BTreeMap<String, ConversationState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonState {
    pub id: String,
    pub company_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationState {
    pub id: String,
    pub kind: ConversationKind,
    pub owner_company_id: String,
    pub name: Option<String>,
    pub created_at: Option<DateTime<FixedOffset>>,
    pub created_by: Option<String>,
    pub archived_at: Option<DateTime<FixedOffset>>,
    /// Current members by person id (compact: a large team's members are most of a
    /// directory's memory).
    pub members: Members,
    /// When the current name was set and by whom (creation or rename); `None` when the
    /// directory did not see it. Absent from snapshots that lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named: Option<Since>,
}

/// When something began and who did it: a member's joining (the person who added them, or who
/// created the conversation), a name's setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// The event's time, with the offset it carried.
    pub at: DateTime<FixedOffset>,
    /// The person who did it (`added_by`, `created_by`, `removed_by`, `renamed_by`).
    pub by: String,
}

/// A period an event ended, as [`Directory::apply_recording`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A member left or was removed (`left.by` is themselves when they left).
    Membership {
        conversation_id: String,
        member: Member,
        /// When they joined, if the directory saw it.
        joined: Option<Since>,
        left: Since,
    },
    /// A name was replaced (by a rename, or a creation seen after it).
    Name {
        conversation_id: String,
        name: Option<String>,
        /// When it was set, if the directory saw it.
        named: Option<Since>,
        until: Since,
    },
}

impl Ended {
    /// The conversation whose period ended.
    pub fn conversation_id(&self) -> &str {
        match self {
            Self::Membership {
                conversation_id, ..
            }
            | Self::Name {
                conversation_id, ..
            } => conversation_id,
        }
    }
}

impl Directory {
    /// Applies one event. Events must come in log order (time, then id).
    pub fn apply(&mut self, event: &Event) {
        self.apply_recording(event, &mut |_| {});
    }

    /// Applies one event as [`apply`](Self::apply) does, and hands `ended` each period it
    /// ends: memberships it removes, the name it replaces.
    pub fn apply_recording(&mut self, event: &Event, ended: &mut dyn FnMut(Ended)) {
        if let Some(conversation) = event.conversation() {
            self.touch(conversation);
        }
        match &event.body {
            EventBody::PersonCreated { person } | EventBody::PersonUpdated { person } => {
                let active = self.people.get(&person.id).is_none_or(|p| p.active);
                self.people.insert(
                    person.id.clone(),
                    PersonState {
                        id: person.id.clone(),
                        company_id: person.company_id.clone(),
                        name: Some(person.name.clone()),
                        email: Some(person.email.clone()),
                        active,
                    },
                );
            }
            EventBody::PersonDeactivated { person } => {
                self.people
                    .entry(person.id.clone())
                    .or_insert_with(|| PersonState {
                        id: person.id.clone(),
                        company_id: person.company_id.clone(),
                        name: None,
                        email: None,
                        active: true,
                    })
                    .active = false;
            }
            EventBody::ConversationCreated {
                conversation,
                name,
                created_by,
                members,
            } => {
                self.learn_people(members);
                let since = Since {
                    at: event.occurred_at,
                    by: created_by.clone(),
                };
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    // Seen again (a platform that re-sends it): whoever it no longer lists has
                    // left; whoever it still lists has been a member since they joined.
                    let mut fresh = Members::joined_together(members, &since);
                    for (id, joined) in state.members.entries() {
                        if let Some(joined) = joined
                            && fresh.contains(id)
                        {
                            fresh.set_joined(id, joined.clone());
                        }
                    }
                    let old = std::mem::replace(&mut state.members, fresh);
                    for member in old.iter() {
                        if !state.members.contains(&member.person_id) {
                            ended(Ended::Membership {
                                conversation_id: conversation.id.clone(),
                                joined: old.joined(&member.person_id).cloned(),
                                member,
                                left: since.clone(),
                            });
                        }
                    }
                    if state.name.is_some() || state.named.is_some() {
                        ended(Ended::Name {
                            conversation_id: conversation.id.clone(),
                            name: state.name.take(),
                            named: state.named.take(),
                            until: since.clone(),
                        });
                    }
                    state.name.clone_from(name);
                    // A conversation created without a name (a direct chat) has no name period.
                    state.named = name.is_some().then_some(since);
                    state.created_at = Some(event.occurred_at);
                    state.created_by = Some(created_by.clone());
                }
            }
            EventBody::ConversationRenamed {
                conversation,
                name,
                renamed_by,
            } => {
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    let since = Since {
                        at: event.occurred_at,
                        by: renamed_by.clone(),
                    };
                    if state.name.is_some() || state.named.is_some() {
                        ended(Ended::Name {
                            conversation_id: conversation.id.clone(),
                            name: state.name.take(),
                            named: state.named.take(),
                            until: since.clone(),
                        });
                    }
                    state.name = Some(name.clone());
                    state.named = Some(since);
                }
            }
            EventBody::MembersAdded {
                conversation,
                members,
                added_by,
            } => {
                self.learn_people(members);
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    let since = Since {
                        at: event.occurred_at,
                        by: added_by.clone(),
                    };
                    for member in members {
                        state.members.join(member, &since);
                    }
                }
            }
            EventBody::MembersRemoved {
                conversation,
                members,
                removed_by,
            } => {
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    for member in members {
                        if let Some((member, joined)) = state.members.take(&member.person_id) {
                            ended(Ended::Membership {
                                conversation_id: conversation.id.clone(),
                                member,
                                joined,
                                left: Since {
                                    at: event.occurred_at,
                                    by: removed_by.clone(),
                                },
                            });
                        }
                    }
                }
            }
            EventBody::ConversationArchived { conversation, .. } => {
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    state.archived_at = Some(event.occurred_at);
                }
            }
            _ => {}
        }
    }

    /// Records the routing facts: a conversation seen first through a later event still
    /// appears, and its kind follows the latest event (a direct chat that grew is a group).
    fn touch(&mut self, conversation: &ConversationRef) {
        let state = self
            .conversations
            .entry(conversation.id.clone())
            .or_insert_with(|| ConversationState {
                id: conversation.id.clone(),
                kind: conversation.kind,
                owner_company_id: conversation.owner_company_id.clone(),
                name: None,
                created_at: None,
                created_by: None,
                archived_at: None,
                members: Members::default(),
                named: None,
            });
        state.kind = conversation.kind;
        state
            .owner_company_id
            .clone_from(&conversation.owner_company_id);
    }

    /// People of other companies are known only through member lists; a person event of our
    /// own company, when there is one, wins.
    fn learn_people(&mut self, members: &[Member]) {
        for member in members {
            let person = self
                .people
                .entry(member.person_id.clone())
                .or_insert_with(|| PersonState {
                    id: member.person_id.clone(),
                    company_id: member.company_id.clone(),
                    name: None,
                    email: None,
                    active: true,
                });
            if person.name.is_none() {
                person.name.clone_from(&member.name);
            }
            if person.email.is_none() {
                person.email.clone_from(&member.email);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> Event {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn folds_people_conversations_and_membership() {
        let conv = json!({"id": "c1", "kind": "direct", "owner_company_id": "a", "member_company_ids": ["a", "b"]});
        let grown = json!({"id": "c1", "kind": "group", "owner_company_id": "a"});
        let events = [
            json!({"event_id": "1", "type": "person.created", "occurred_at": "2026-01-01T00:00:00Z",
                   "person": {"id": "u1", "company_id": "a", "name": "Ann", "email": "ann@a"}}),
            json!({"event_id": "2", "type": "conversation.created", "occurred_at": "2026-01-01T00:01:00Z",
                   "conversation": conv, "created_by": "u1",
                   "members": [{"person_id": "u1", "company_id": "a"},
                               {"person_id": "x9", "company_id": "b", "name": "Xi", "email": "xi@b"}]}),
            json!({"event_id": "3", "type": "conversation.members_added", "occurred_at": "2026-01-02T00:00:00Z",
                   "conversation": grown, "added_by": "u1",
                   "members": [{"person_id": "u2", "company_id": "a", "name": "Bo"}]}),
            json!({"event_id": "4", "type": "conversation.renamed", "occurred_at": "2026-01-03T00:00:00Z",
                   "conversation": grown, "name": "Project ../x", "renamed_by": "u1"}),
            json!({"event_id": "5", "type": "person.deactivated", "occurred_at": "2026-01-04T00:00:00Z",
                   "person": {"id": "u1", "company_id": "a"}}),
        ];
        let mut directory = Directory::default();
        for e in &events {
            directory.apply(&event(e.clone()));
        }
        let c1 = &directory.conversations["c1"];
        assert_eq!(c1.kind, ConversationKind::Group);
        assert_eq!(c1.name.as_deref(), Some("Project ../x"));
        assert_eq!(c1.members.keys().collect::<Vec<_>>(), ["u1", "u2", "x9"]);
        assert_eq!(c1.created_by.as_deref(), Some("u1"));
        assert_eq!(directory.people["x9"].email.as_deref(), Some("xi@b"));
        assert_eq!(directory.people["u1"].name.as_deref(), Some("Ann"));
        assert!(!directory.people["u1"].active);
        // A snapshot read back is the same directory (compaction stores it).
        let text = serde_json::to_string(&directory).unwrap();
        assert_eq!(serde_json::from_str::<Directory>(&text).unwrap(), directory);
    }

    fn since(at: &str, by: &str) -> Since {
        Since {
            at: at.parse().unwrap(),
            by: by.into(),
        }
    }

    fn member(id: &str) -> Member {
        Member {
            person_id: id.into(),
            company_id: "a".into(),
            name: None,
            email: None,
        }
    }

    /// Joins, leaves, removals, re-additions and renames: when each began and who did it, and
    /// the periods each change ends, handed over in order.
    #[test]
    fn keeps_when_members_joined_and_reports_what_ends() {
        let team = json!({"id": "t", "kind": "team", "owner_company_id": "a"});
        let events = [
            json!({"event_id": "1", "type": "conversation.created", "occurred_at": "2026-01-01T00:00:00Z",
                   "conversation": team, "created_by": "ann", "name": "Desk",
                   "members": [{"person_id": "ann", "company_id": "a"}, {"person_id": "bo", "company_id": "a"}]}),
            json!({"event_id": "2", "type": "conversation.members_added", "occurred_at": "2026-01-02T00:00:00+02:00",
                   "conversation": team, "added_by": "ann", "members": [{"person_id": "cy", "company_id": "a"}]}),
            // Added again while a member: still a member since the first time.
            json!({"event_id": "3", "type": "conversation.members_added", "occurred_at": "2026-01-03T00:00:00Z",
                   "conversation": team, "added_by": "bo", "members": [{"person_id": "cy", "company_id": "a", "name": "Cy"}]}),
            // Bo leaves; Cy is removed by Ann; a removal of someone not a member ends nothing.
            json!({"event_id": "4", "type": "conversation.members_removed", "occurred_at": "2026-01-04T00:00:00Z",
                   "conversation": team, "removed_by": "bo", "members": [{"person_id": "bo", "company_id": "a"}]}),
            json!({"event_id": "5", "type": "conversation.members_removed", "occurred_at": "2026-01-05T00:00:00Z",
                   "conversation": team, "removed_by": "ann", "members": [{"person_id": "cy", "company_id": "a"}, {"person_id": "zed", "company_id": "a"}]}),
            json!({"event_id": "6", "type": "conversation.renamed", "occurred_at": "2026-01-06T00:00:00Z",
                   "conversation": team, "name": "Trading", "renamed_by": "ann"}),
            // Bo comes back: a new membership.
            json!({"event_id": "7", "type": "conversation.members_added", "occurred_at": "2026-01-07T00:00:00Z",
                   "conversation": team, "added_by": "ann", "members": [{"person_id": "bo", "company_id": "a"}]}),
        ];
        let mut directory = Directory::default();
        let mut ended = Vec::new();
        for e in &events {
            directory.apply_recording(&event(e.clone()), &mut |period| ended.push(period));
        }
        let t = &directory.conversations["t"];
        assert_eq!(t.name.as_deref(), Some("Trading"));
        assert_eq!(t.named, Some(since("2026-01-06T00:00:00Z", "ann")));
        assert_eq!(
            t.members.entries().collect::<Vec<_>>(),
            [
                ("ann", Some(&since("2026-01-01T00:00:00Z", "ann"))),
                ("bo", Some(&since("2026-01-07T00:00:00Z", "ann"))),
            ]
        );
        assert_eq!(
            ended,
            [
                Ended::Membership {
                    conversation_id: "t".into(),
                    member: member("bo"),
                    joined: Some(since("2026-01-01T00:00:00Z", "ann")),
                    left: since("2026-01-04T00:00:00Z", "bo"),
                },
                Ended::Membership {
                    conversation_id: "t".into(),
                    member: Member {
                        name: Some("Cy".into()),
                        ..member("cy")
                    },
                    // The first addition, at its own offset.
                    joined: Some(since("2026-01-02T00:00:00+02:00", "ann")),
                    left: since("2026-01-05T00:00:00Z", "ann"),
                },
                Ended::Name {
                    conversation_id: "t".into(),
                    name: Some("Desk".into()),
                    named: Some(since("2026-01-01T00:00:00Z", "ann")),
                    until: since("2026-01-06T00:00:00Z", "ann"),
                },
            ]
        );
        // `apply` folds the same directory.
        let mut plain = Directory::default();
        for e in &events {
            plain.apply(&event(e.clone()));
        }
        assert_eq!(plain, directory);
        // Join and naming times survive a snapshot; one written before they were kept reads
        // with them unknown.
        let text = serde_json::to_string(&directory).unwrap();
        assert!(
            text.contains(r#""joined":{"at":"2026-01-07T00:00:00Z","by":"ann"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Directory>(&text).unwrap(), directory);
        let old: Directory = serde_json::from_value(json!({"people": {}, "conversations": {"t": {
            "id": "t", "kind": "team", "owner_company_id": "a", "name": "Desk", "created_at": null,
            "created_by": null, "archived_at": null,
            "members": {"ann": {"person_id": "ann", "company_id": "a", "name": null, "email": null}}}}}))
        .unwrap();
        let t = &old.conversations["t"];
        assert_eq!((t.named.as_ref(), t.members.joined("ann")), (None, None));
        assert!(t.members.contains("ann"));
        // And a directory without them writes the bytes it always did.
        assert!(!serde_json::to_string(&old).unwrap().contains("joined"));
        assert!(!serde_json::to_string(&old).unwrap().contains("named"));
    }

    /// A creation seen for a conversation the directory already holds members of: who it no
    /// longer lists has left, who it still lists keeps their joining, and the name it
    /// replaces ends.
    #[test]
    fn a_creation_seen_again_ends_what_it_replaces() {
        let group = json!({"id": "g", "kind": "group", "owner_company_id": "a"});
        let created = |id: &str, at: &str, members: serde_json::Value, name: &str| {
            event(
                json!({"event_id": id, "type": "conversation.created", "occurred_at": at,
                         "conversation": group, "created_by": "ann", "name": name, "members": members}),
            )
        };
        let mut directory = Directory::default();
        let mut ended = Vec::new();
        directory.apply_recording(
            &created(
                "1",
                "2026-01-01T00:00:00Z",
                json!([{"person_id": "ann", "company_id": "a"}, {"person_id": "bo", "company_id": "a"}]),
                "One",
            ),
            &mut |p| ended.push(p),
        );
        assert!(ended.is_empty(), "a first creation ends nothing");
        directory.apply_recording(
            &created(
                "2",
                "2026-01-02T00:00:00Z",
                json!([{"person_id": "ann", "company_id": "a"}, {"person_id": "cy", "company_id": "a"}]),
                "Two",
            ),
            &mut |p| ended.push(p),
        );
        let g = &directory.conversations["g"];
        assert_eq!(
            g.members.entries().collect::<Vec<_>>(),
            [
                ("ann", Some(&since("2026-01-01T00:00:00Z", "ann"))),
                ("cy", Some(&since("2026-01-02T00:00:00Z", "ann"))),
            ]
        );
        assert_eq!(
            ended,
            [
                Ended::Membership {
                    conversation_id: "g".into(),
                    member: member("bo"),
                    joined: Some(since("2026-01-01T00:00:00Z", "ann")),
                    left: since("2026-01-02T00:00:00Z", "ann"),
                },
                Ended::Name {
                    conversation_id: "g".into(),
                    name: Some("One".into()),
                    named: Some(since("2026-01-01T00:00:00Z", "ann")),
                    until: since("2026-01-02T00:00:00Z", "ann"),
                },
            ]
        );
    }
}
