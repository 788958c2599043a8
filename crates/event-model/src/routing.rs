//! Scope routing: which companies' compliance logs an event belongs to.
//!
//! The seed's rules, applied to the conversation as each event describes it (the routing facts
//! state the conversation once the event has taken effect, `docs/events.md`):
//! - a one-on-one (direct) chat belongs to every company with a participant, whoever owns it;
//! - a multi-person chat (3+ people) or a team belongs to its owning company only (the company of
//!   the person who started it), even when people of other companies (guests) take part;
//! - a person event belongs to the person's company.

use std::collections::BTreeSet;

use crate::event::{ConversationKind, Event, EventBody};

/// The companies whose logs `event` belongs to: sorted, without duplicates, never empty for a
/// valid event.
pub fn route(event: &Event) -> BTreeSet<String> {
    if let Some(conversation) = event.conversation() {
        let mut companies = BTreeSet::from([conversation.owner_company_id.clone()]);
        if conversation.kind == ConversationKind::Direct {
            companies.extend(conversation.member_company_ids.iter().cloned());
        }
        return companies;
    }
    match &event.body {
        EventBody::PersonCreated { person } | EventBody::PersonUpdated { person } => {
            BTreeSet::from([person.company_id.clone()])
        }
        EventBody::PersonDeactivated { person } => BTreeSet::from([person.company_id.clone()]),
        // Every other type is a conversation event, handled above.
        _ => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ConversationRef, Member, Person};

    fn conversation(kind: ConversationKind, owner: &str, members: &[&str]) -> ConversationRef {
        ConversationRef {
            id: "c1".into(),
            kind,
            owner_company_id: owner.into(),
            member_company_ids: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    fn post_in(conversation: ConversationRef) -> Event {
        event(EventBody::PostCreated {
            conversation,
            post_id: "p1".into(),
            author_id: "u1".into(),
            text: "hi".into(),
            parent_post_id: None,
        })
    }

    fn event(body: EventBody) -> Event {
        Event {
            event_id: "e".into(),
            occurred_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            body,
        }
    }

    fn member(company: &str) -> Member {
        Member {
            person_id: format!("{company}-p"),
            company_id: company.into(),
            name: None,
            email: None,
        }
    }

    #[test]
    fn routes_by_the_seed_scope_rules() {
        use ConversationKind::*;
        let cases: Vec<(&str, Event, &[&str])> = vec![
            (
                "direct chat inside one company",
                post_in(conversation(Direct, "a", &["a"])),
                &["a"],
            ),
            (
                "direct chat between two companies lands in both",
                post_in(conversation(Direct, "a", &["a", "b"])),
                &["a", "b"],
            ),
            (
                "direct chat owned by B with a person of A lands in A too",
                post_in(conversation(Direct, "b", &["b", "a"])),
                &["a", "b"],
            ),
            (
                "group chat owned by B with people of A does not land in A",
                post_in(conversation(Group, "b", &["a", "b"])),
                &["b"],
            ),
            (
                "group chat owned by A",
                post_in(conversation(Group, "a", &[])),
                &["a"],
            ),
            (
                "team owned by A with a guest from C",
                post_in(conversation(Team, "a", &["a", "c"])),
                &["a"],
            ),
            (
                "a direct chat's third member turns it into a group: the event that adds them goes to the owner only",
                event(EventBody::MembersAdded {
                    conversation: conversation(Group, "a", &["a", "b"]),
                    members: vec![member("c")],
                    added_by: "a-p".into(),
                }),
                &["a"],
            ),
            (
                "while still two people, the chat's posts go to both companies",
                post_in(conversation(Direct, "a", &["a", "b"])),
                &["a", "b"],
            ),
            (
                "a guest joining a team of A goes to A only",
                event(EventBody::MembersAdded {
                    conversation: conversation(Team, "a", &[]),
                    members: vec![member("c")],
                    added_by: "a-p".into(),
                }),
                &["a"],
            ),
            (
                "a person event goes to the person's company",
                event(EventBody::PersonCreated {
                    person: Person {
                        id: "u".into(),
                        company_id: "b".into(),
                        name: "N".into(),
                        email: "n@b".into(),
                    },
                }),
                &["b"],
            ),
        ];
        for (name, event, expected) in cases {
            let got: Vec<String> = route(&event).into_iter().collect();
            assert_eq!(got, expected.to_vec(), "{name}");
        }
    }
}
