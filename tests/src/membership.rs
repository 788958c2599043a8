//! Membership over time, worked out from the produced events by a model of its own (not the
//! export's directory), and read from an archive's `users.json` and `teams.json`, so a test can
//! compare the two (`docs/export-format.md`, "Membership over time").

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use event_model::{Event, EventBody};
use serde_json::Value;

/// One membership: person, joined at (UTC, RFC 3339) and by whom, left at and by whom, whether
/// a member at the range's start.
pub type Period = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

/// One name: the name, from (UTC) and by whom, until and by whom, whether in effect at the
/// range's start.
pub type Name = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

/// Per conversation: its memberships and its names over the range, each sorted.
pub type History = BTreeMap<String, (Vec<Period>, Vec<Name>)>;

fn utc(at: &DateTime<chrono::FixedOffset>) -> String {
    at.with_timezone(&Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[derive(Default)]
struct Conversation {
    /// person → (joined at, added by)
    members: BTreeMap<String, (String, String)>,
    /// (name, set at, set by)
    name: Option<(String, String, String)>,
    ended: Vec<Period>,
    names: Vec<Name>,
}

/// The company's membership and names over `from..to`, from `payloads` (the produced events):
/// its metadata events in log order (time, then id), each once.
pub fn expected(
    payloads: &[Vec<u8>],
    company: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> History {
    let now = Utc::now();
    let mut events: Vec<Event> = payloads
        .iter()
        .filter_map(|p| event_model::parse_event(p, &event_model::Limits::default(), now).ok())
        .map(|(event, _)| event)
        .filter(|e| e.body.is_metadata() && event_model::route(e).iter().any(|c| c == company))
        .filter(|e| e.occurred_at.with_timezone(&Utc) < to)
        .collect();
    events.sort_by(|a, b| {
        (a.occurred_at.with_timezone(&Utc), &a.event_id)
            .cmp(&(b.occurred_at.with_timezone(&Utc), &b.event_id))
    });
    let mut seen = BTreeSet::new();
    events.retain(|e| seen.insert(e.event_id.clone()));
    let mut conversations: BTreeMap<String, Conversation> = BTreeMap::new();
    let at_start = |at: &str| at.parse::<DateTime<Utc>>().expect("a time we wrote") < from;
    for event in &events {
        let at = utc(&event.occurred_at);
        let in_range = event.occurred_at.with_timezone(&Utc) >= from;
        let Some(conversation) = event.body.conversation() else {
            continue;
        };
        let c = conversations.entry(conversation.id.clone()).or_default();
        let end_name = |c: &mut Conversation, by: &str| {
            if let Some((name, since, since_by)) = c.name.take()
                && in_range
            {
                c.names.push((
                    name,
                    Some(since.clone()),
                    Some(since_by),
                    Some(at.clone()),
                    Some(by.to_owned()),
                    at_start(&since),
                ));
            }
        };
        let leave = |c: &mut Conversation, person: &str, by: &str| {
            if let Some((joined, joined_by)) = c.members.remove(person)
                && in_range
            {
                c.ended.push((
                    person.to_owned(),
                    Some(joined.clone()),
                    Some(joined_by),
                    Some(at.clone()),
                    Some(by.to_owned()),
                    at_start(&joined),
                ));
            }
        };
        match &event.body {
            EventBody::ConversationCreated {
                name,
                created_by,
                members,
                ..
            } => {
                let listed: BTreeSet<&str> = members.iter().map(|m| m.person_id.as_str()).collect();
                let gone: Vec<String> = c
                    .members
                    .keys()
                    .filter(|p| !listed.contains(p.as_str()))
                    .cloned()
                    .collect();
                for person in gone {
                    leave(c, &person, created_by);
                }
                for person in listed {
                    c.members
                        .entry(person.to_owned())
                        .or_insert_with(|| (at.clone(), created_by.clone()));
                }
                end_name(c, created_by);
                c.name = name.clone().map(|n| (n, at.clone(), created_by.clone()));
            }
            EventBody::MembersAdded {
                members, added_by, ..
            } => {
                for m in members {
                    c.members
                        .entry(m.person_id.clone())
                        .or_insert_with(|| (at.clone(), added_by.clone()));
                }
            }
            EventBody::MembersRemoved {
                members,
                removed_by,
                ..
            } => {
                for m in members {
                    leave(c, &m.person_id, removed_by);
                }
            }
            EventBody::ConversationRenamed {
                name, renamed_by, ..
            } => {
                end_name(c, renamed_by);
                c.name = Some((name.clone(), at.clone(), renamed_by.clone()));
            }
            _ => {}
        }
    }
    conversations
        .into_iter()
        .map(|(id, c)| {
            let mut periods = c.ended;
            periods.extend(c.members.into_iter().map(|(person, (joined, by))| {
                let start = at_start(&joined);
                (person, Some(joined), Some(by), None, None, start)
            }));
            periods.sort();
            let mut names = c.names;
            names.extend(c.name.map(|(name, since, by)| {
                let start = at_start(&since);
                (name, Some(since), Some(by), None, None, start)
            }));
            names.sort();
            (id, (periods, names))
        })
        .filter(|(_, (periods, names))| !(periods.is_empty() && names.is_empty()))
        .collect()
}

fn time(value: &Value) -> Option<String> {
    value.as_str().map(|text| {
        let at: DateTime<chrono::FixedOffset> = text.parse().expect("an RFC 3339 time");
        utc(&at)
    })
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// What an archive's `users.json` and `teams.json` say, in the same form.
pub fn archived(bytes: &[u8]) -> History {
    let mut out = History::new();
    for (name, body) in archive::verify::read_entries(bytes).expect("a readable archive") {
        if !(name.ends_with("/users.json") || name.ends_with("/teams.json")) {
            continue;
        }
        let listing: Value = serde_json::from_slice(&body).expect("a JSON listing");
        for c in listing["conversations"].as_array().expect("conversations") {
            let mut periods: Vec<Period> = c["membership"]
                .as_array()
                .expect("membership (format version 5)")
                .iter()
                .map(|m| {
                    (
                        text(&m["person"]["id"]).unwrap_or_default(),
                        time(&m["joined_at"]),
                        text(&m["added_by"]),
                        time(&m["left_at"]),
                        text(&m["removed_by"]),
                        m["member_at_range_start"].as_bool().expect("a flag"),
                    )
                })
                .collect();
            periods.sort();
            let mut names: Vec<Name> = c["names"]
                .as_array()
                .expect("names (format version 5)")
                .iter()
                .map(|n| {
                    (
                        text(&n["name"]).unwrap_or_default(),
                        time(&n["from"]),
                        text(&n["changed_by"]),
                        time(&n["until"]),
                        text(&n["replaced_by"]),
                        n["in_effect_at_range_start"].as_bool().expect("a flag"),
                    )
                })
                .collect();
            names.sort();
            if periods.is_empty() && names.is_empty() {
                continue;
            }
            out.insert(
                c["id"].as_str().expect("an id").to_owned(),
                (periods, names),
            );
        }
    }
    out
}
