//! The event contract: what the chat platform publishes to Kafka (`docs/events.md`).
//!
//! Every event is a JSON object with `event_id` (producer-assigned, unique: duplicates collapse),
//! `type`, `occurred_at` (RFC 3339 with offset) and the type's fields. Unknown fields are
//! tolerated and kept in the log as received.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

/// One validated event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub occurred_at: DateTime<FixedOffset>,
    #[serde(flatten)]
    pub body: EventBody,
}

/// The event types, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventBody {
    #[serde(rename = "person.created")]
    PersonCreated { person: Person },
    /// Carries the person's full new state.
    #[serde(rename = "person.updated")]
    PersonUpdated { person: Person },
    #[serde(rename = "person.deactivated")]
    PersonDeactivated { person: PersonRef },

    #[serde(rename = "conversation.created")]
    ConversationCreated {
        conversation: ConversationRef,
        /// Teams and named groups have a name; direct chats do not.
        #[serde(default)]
        name: Option<String>,
        created_by: String,
        members: Vec<Member>,
    },
    #[serde(rename = "conversation.renamed")]
    ConversationRenamed {
        conversation: ConversationRef,
        name: String,
        renamed_by: String,
    },
    #[serde(rename = "conversation.members_added")]
    MembersAdded {
        conversation: ConversationRef,
        members: Vec<Member>,
        added_by: String,
    },
    #[serde(rename = "conversation.members_removed")]
    MembersRemoved {
        conversation: ConversationRef,
        members: Vec<Member>,
        removed_by: String,
    },
    #[serde(rename = "conversation.archived")]
    ConversationArchived {
        conversation: ConversationRef,
        archived_by: String,
    },

    #[serde(rename = "post.created")]
    PostCreated {
        conversation: ConversationRef,
        post_id: String,
        author_id: String,
        text: String,
        /// The post this one replies to, in a thread.
        #[serde(default)]
        parent_post_id: Option<String>,
    },
    #[serde(rename = "post.edited")]
    PostEdited {
        conversation: ConversationRef,
        post_id: String,
        editor_id: String,
        text: String,
    },
    #[serde(rename = "post.deleted")]
    PostDeleted {
        conversation: ConversationRef,
        post_id: String,
        deleted_by: String,
    },

    #[serde(rename = "note.created")]
    NoteCreated {
        conversation: ConversationRef,
        note_id: String,
        author_id: String,
        #[serde(default)]
        title: Option<String>,
        text: String,
    },
    #[serde(rename = "note.edited")]
    NoteEdited {
        conversation: ConversationRef,
        note_id: String,
        editor_id: String,
        #[serde(default)]
        title: Option<String>,
        text: String,
    },
    #[serde(rename = "note.deleted")]
    NoteDeleted {
        conversation: ConversationRef,
        note_id: String,
        deleted_by: String,
    },

    /// A file shared in a conversation: metadata only, never content.
    #[serde(rename = "file.shared")]
    FileShared {
        conversation: ConversationRef,
        file_id: String,
        author_id: String,
        name: String,
        /// Bytes.
        size: u64,
        content_type: String,
        /// SHA-256 of the content, hex.
        sha256: String,
        /// The post the file was attached to, if any.
        #[serde(default)]
        post_id: Option<String>,
    },
}

/// Every `type` value the contract defines.
pub const EVENT_TYPES: &[&str] = &[
    "person.created",
    "person.updated",
    "person.deactivated",
    "conversation.created",
    "conversation.renamed",
    "conversation.members_added",
    "conversation.members_removed",
    "conversation.archived",
    "post.created",
    "post.edited",
    "post.deleted",
    "note.created",
    "note.edited",
    "note.deleted",
    "file.shared",
];

/// A person's full state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: String,
    pub company_id: String,
    pub name: String,
    pub email: String,
}

/// A person named by id and company only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRef {
    pub id: String,
    pub company_id: String,
}

/// A conversation member, with enough to list them without a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub person_id: String,
    pub company_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// A one-on-one chat between two people.
    Direct,
    /// A multi-person chat (three or more people).
    Group,
    Team,
}

impl ConversationKind {
    /// The kind as events and archives spell it (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Group => "group",
            Self::Team => "team",
        }
    }
}

/// The routing facts every conversation event carries: the conversation as it stands once the
/// event has taken effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRef {
    pub id: String,
    pub kind: ConversationKind,
    /// The company of the person who started the conversation.
    pub owner_company_id: String,
    /// For a direct chat: the companies of both participants (required). Ignored otherwise.
    #[serde(default)]
    pub member_company_ids: Vec<String>,
}

impl Event {
    /// The event's `type` string.
    pub fn type_name(&self) -> &'static str {
        self.body.type_name()
    }

    /// The conversation the event concerns, if it is a conversation event.
    pub fn conversation(&self) -> Option<&ConversationRef> {
        self.body.conversation()
    }
}

impl EventBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::PersonCreated { .. } => "person.created",
            Self::PersonUpdated { .. } => "person.updated",
            Self::PersonDeactivated { .. } => "person.deactivated",
            Self::ConversationCreated { .. } => "conversation.created",
            Self::ConversationRenamed { .. } => "conversation.renamed",
            Self::MembersAdded { .. } => "conversation.members_added",
            Self::MembersRemoved { .. } => "conversation.members_removed",
            Self::ConversationArchived { .. } => "conversation.archived",
            Self::PostCreated { .. } => "post.created",
            Self::PostEdited { .. } => "post.edited",
            Self::PostDeleted { .. } => "post.deleted",
            Self::NoteCreated { .. } => "note.created",
            Self::NoteEdited { .. } => "note.edited",
            Self::NoteDeleted { .. } => "note.deleted",
            Self::FileShared { .. } => "file.shared",
        }
    }

    pub fn conversation(&self) -> Option<&ConversationRef> {
        match self {
            Self::PersonCreated { .. }
            | Self::PersonUpdated { .. }
            | Self::PersonDeactivated { .. } => None,
            Self::ConversationCreated { conversation, .. }
            | Self::ConversationRenamed { conversation, .. }
            | Self::MembersAdded { conversation, .. }
            | Self::MembersRemoved { conversation, .. }
            | Self::ConversationArchived { conversation, .. }
            | Self::PostCreated { conversation, .. }
            | Self::PostEdited { conversation, .. }
            | Self::PostDeleted { conversation, .. }
            | Self::NoteCreated { conversation, .. }
            | Self::NoteEdited { conversation, .. }
            | Self::NoteDeleted { conversation, .. }
            | Self::FileShared { conversation, .. } => Some(conversation),
        }
    }

    /// Metadata events (people, conversations, membership) are what `users.json` and
    /// `teams.json` are built from; the log keeps them readable on their own.
    pub fn is_metadata(&self) -> bool {
        self.type_name().starts_with("person.") || self.type_name().starts_with("conversation.")
    }
}

#[cfg(test)]
mod tests {
    use super::ConversationKind;

    #[test]
    fn a_kind_is_spelt_as_serde_spells_it() {
        for kind in [
            ConversationKind::Direct,
            ConversationKind::Group,
            ConversationKind::Team,
        ] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::from(kind.as_str())
            );
        }
    }
}
