//! The chat platform's events and the rules that decide where they belong.
//!
//! Pure data and pure functions: no I/O, so every rule is tested with tables of cases.
//! - [`event`]: the event contract (`docs/events.md`) and its types.
//! - [`validate`]: bytes → [`Event`], or the reason it must go to the dead-letter topic.
//! - [`routing`]: which companies' logs an event belongs to.

pub mod directory;
pub mod event;
pub mod routing;
pub mod validate;

pub use event::{ConversationKind, ConversationRef, Event, EventBody, Member, Person, PersonRef};
pub use routing::route;
pub use validate::{Limits, RejectReason, Rejection, parse_event};

/// Checks that an id can be used as a key component: 1–128 characters of `[A-Za-z0-9._-]`,
/// not `.` or `..`. Company ids become object-key segments, so this is a safety rule.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
