//! A company's people and conversations, folded from its metadata events in log order.
//!
//! The export lists conversations with their names, owners and members from this; people of
//! other companies (the other side of a direct chat, guests) are known from the member lists
//! conversation events carry.

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
}

impl Directory {
    /// Applies one event. Events must come in log order (time, then id).
    pub fn apply(&mut self, event: &Event) {
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
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    state.name.clone_from(name);
                    state.created_at = Some(event.occurred_at);
                    state.created_by = Some(created_by.clone());
                    state.members = members.iter().collect();
                }
            }
            EventBody::ConversationRenamed {
                conversation, name, ..
            } => {
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    state.name = Some(name.clone());
                }
            }
            EventBody::MembersAdded {
                conversation,
                members,
                ..
            } => {
                self.learn_people(members);
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    for member in members {
                        state.members.insert(member);
                    }
                }
            }
            EventBody::MembersRemoved {
                conversation,
                members,
                ..
            } => {
                if let Some(state) = self.conversations.get_mut(&conversation.id) {
                    for member in members {
                        state.members.remove(&member.person_id);
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
}
