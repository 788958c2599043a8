//! From the bytes of a Kafka message to a valid [`Event`], or the reason it is rejected.
//!
//! A rejected message goes to the dead-letter topic with its original bytes; the reason's
//! [`RejectReason::as_str`] names it in a header and in the metric label.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::Value;

use crate::event::{ConversationKind, EVENT_TYPES, Event, EventBody};
use crate::is_safe_id;

/// Why an event was rejected. The set is closed so metrics have bounded labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Larger than the configured maximum.
    Oversized,
    InvalidUtf8,
    /// Not JSON, or JSON that is not an object.
    InvalidJson,
    /// `type` is not one the contract defines.
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or an impossible value.
    InvalidField,
    /// `occurred_at` is before 2000 or too far in the future.
    TimestampOutOfRange,
}

impl RejectReason {
    pub const ALL: [Self; 7] = [
        Self::Oversized,
        Self::InvalidUtf8,
        Self::InvalidJson,
        Self::UnknownType,
        Self::MissingField,
        Self::InvalidField,
        Self::TimestampOutOfRange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
        }
    }
}

/// A rejected event: the reason, and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// Bounds on acceptable input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted message, in bytes.
    pub max_bytes: usize,
    /// How far in the future `occurred_at` may be (clock skew between producers and us).
    pub max_future_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_future_skew: Duration::hours(24),
        }
    }
}

/// The earliest `occurred_at` accepted: 2000-01-01T00:00:00Z. Anything earlier is a producer bug.
pub fn earliest_accepted() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Validates one message's bytes. Returns the typed event and the JSON as received (which the
/// log keeps, unknown fields included).
pub fn parse_event(
    bytes: &[u8],
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<(Event, Value), Rejection> {
    if bytes.len() > limits.max_bytes {
        return Err(reject(
            RejectReason::Oversized,
            format!(
                "{} bytes, over the limit of {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        reject(
            RejectReason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| reject(RejectReason::InvalidJson, e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| reject(RejectReason::InvalidJson, "the event is not a JSON object"))?;
    match object.get("type") {
        None => return Err(reject(RejectReason::MissingField, "missing field `type`")),
        Some(Value::String(t)) if EVENT_TYPES.contains(&t.as_str()) => {}
        Some(Value::String(t)) => {
            return Err(reject(
                RejectReason::UnknownType,
                format!("unknown event type {t:?}"),
            ));
        }
        Some(other) => {
            return Err(reject(
                RejectReason::InvalidField,
                format!("`type` is not a string: {other}"),
            ));
        }
    }
    let event: Event = serde_json::from_value(value.clone()).map_err(|e| {
        let message = e.to_string();
        let reason = if message.starts_with("missing field") {
            RejectReason::MissingField
        } else {
            RejectReason::InvalidField
        };
        reject(reason, message)
    })?;
    check_semantics(&event)?;
    let at = event.occurred_at.with_timezone(&Utc);
    if at < earliest_accepted() || at > now + limits.max_future_skew {
        return Err(reject(
            RejectReason::TimestampOutOfRange,
            format!(
                "occurred_at {} is outside {} .. now + {}h",
                event.occurred_at.to_rfc3339(),
                earliest_accepted().to_rfc3339(),
                limits.max_future_skew.num_hours()
            ),
        ));
    }
    Ok((event, value))
}

/// Rules the types cannot state: non-empty ids, safe company ids, routing facts present.
fn check_semantics(event: &Event) -> Result<(), Rejection> {
    let invalid = |detail: String| Err(reject(RejectReason::InvalidField, detail));
    if event.event_id.is_empty() || event.event_id.len() > 256 {
        return invalid("`event_id` must be 1 to 256 characters".into());
    }
    let mut companies: Vec<&str> = Vec::new();
    let mut ids: Vec<(&str, &str)> = Vec::new();
    match &event.body {
        EventBody::PersonCreated { person } | EventBody::PersonUpdated { person } => {
            companies.push(&person.company_id);
            ids.push(("person.id", &person.id));
        }
        EventBody::PersonDeactivated { person } => {
            companies.push(&person.company_id);
            ids.push(("person.id", &person.id));
        }
        EventBody::ConversationCreated { members, .. }
        | EventBody::MembersAdded { members, .. }
        | EventBody::MembersRemoved { members, .. } => {
            for member in members {
                companies.push(&member.company_id);
                ids.push(("members[].person_id", &member.person_id));
            }
        }
        _ => {}
    }
    if let Some(conversation) = event.conversation() {
        ids.push(("conversation.id", &conversation.id));
        companies.push(&conversation.owner_company_id);
        companies.extend(conversation.member_company_ids.iter().map(String::as_str));
        if conversation.kind == ConversationKind::Direct
            && !(1..=2).contains(&conversation.member_company_ids.len())
        {
            return invalid(
                "a direct conversation must list the companies of its participants in \
                 `conversation.member_company_ids` (one or two entries)"
                    .into(),
            );
        }
    }
    if let Some((field, _)) = ids.iter().find(|(_, id)| id.is_empty() || id.len() > 256) {
        return invalid(format!("`{field}` must be 1 to 256 characters"));
    }
    if let Some(bad) = companies.iter().find(|c| !is_safe_id(c)) {
        return invalid(format!(
            "company id {bad:?} is not 1-128 characters of letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn post() -> Value {
        json!({
            "event_id": "e1", "type": "post.created", "occurred_at": "2026-11-25T10:00:00+01:00",
            "conversation": {"id": "c1", "kind": "group", "owner_company_id": "acme"},
            "post_id": "p1", "author_id": "u1", "text": "hello", "future_field": [1, 2]
        })
    }

    fn check(bytes: &[u8]) -> Result<(Event, Value), Rejection> {
        parse_event(
            bytes,
            &Limits {
                max_bytes: 2048,
                ..Limits::default()
            },
            now(),
        )
    }

    fn with(mut v: Value, path: &[&str], new: Option<Value>) -> Vec<u8> {
        let mut target = &mut v;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        let last = path[path.len() - 1];
        match new {
            Some(n) => target[last] = n,
            None => {
                target.as_object_mut().unwrap().remove(last);
            }
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn accepts_a_valid_event_and_keeps_unknown_fields() {
        let (event, raw) = check(&serde_json::to_vec(&post()).unwrap()).unwrap();
        assert_eq!(event.type_name(), "post.created");
        assert_eq!(raw["future_field"], json!([1, 2]));
    }

    #[test]
    fn rejects_each_kind_of_bad_input_with_its_reason() {
        use RejectReason::*;
        let cases: Vec<(&str, Vec<u8>, RejectReason)> = vec![
            ("oversized", vec![b' '; 4096], Oversized),
            ("invalid utf-8", b"{\"a\": \"\xff\"}".to_vec(), InvalidUtf8),
            ("not json", b"{not json".to_vec(), InvalidJson),
            ("json array", b"[1, 2]".to_vec(), InvalidJson),
            (
                "unknown type",
                with(post(), &["type"], Some(json!("post.liked"))),
                UnknownType,
            ),
            (
                "type not a string",
                with(post(), &["type"], Some(json!(7))),
                InvalidField,
            ),
            ("no type", with(post(), &["type"], None), MissingField),
            (
                "no event_id",
                with(post(), &["event_id"], None),
                MissingField,
            ),
            ("no text", with(post(), &["text"], None), MissingField),
            (
                "text is a number",
                with(post(), &["text"], Some(json!(5))),
                InvalidField,
            ),
            (
                "empty event_id",
                with(post(), &["event_id"], Some(json!(""))),
                InvalidField,
            ),
            (
                "bad kind",
                with(post(), &["conversation", "kind"], Some(json!("channel"))),
                InvalidField,
            ),
            (
                "no offset in timestamp",
                with(post(), &["occurred_at"], Some(json!("2026-11-25T10:00:00"))),
                InvalidField,
            ),
            (
                "not a timestamp",
                with(post(), &["occurred_at"], Some(json!("yesterday"))),
                InvalidField,
            ),
            (
                "before 2000",
                with(
                    post(),
                    &["occurred_at"],
                    Some(json!("1999-12-31T23:59:59Z")),
                ),
                TimestampOutOfRange,
            ),
            (
                "two days ahead",
                with(
                    post(),
                    &["occurred_at"],
                    Some(json!("2026-11-27T12:00:01Z")),
                ),
                TimestampOutOfRange,
            ),
            (
                "path-like company id",
                with(
                    post(),
                    &["conversation", "owner_company_id"],
                    Some(json!("../other")),
                ),
                InvalidField,
            ),
            (
                "direct chat without participant companies",
                with(post(), &["conversation", "kind"], Some(json!("direct"))),
                InvalidField,
            ),
        ];
        for (name, bytes, expected) in cases {
            let rejection = check(&bytes).expect_err(name);
            assert_eq!(rejection.reason, expected, "{name}: {rejection}");
            assert!(!rejection.detail.is_empty(), "{name}");
        }
    }

    #[test]
    fn accepts_the_edges_of_the_time_window() {
        for at in [
            "2000-01-01T00:00:00Z",
            "2026-11-26T12:00:00Z",
            "2026-11-26T13:00:00+01:00",
        ] {
            let bytes = with(post(), &["occurred_at"], Some(json!(at)));
            assert!(check(&bytes).is_ok(), "{at}");
        }
    }
}
