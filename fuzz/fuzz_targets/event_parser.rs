//! The event parser: the bytes of a Kafka message → a valid event or a rejection
//! (`event_model::parse_event`, which the ingestion consumer calls for every message).
//!
//! Properties, beyond "never panics":
//! - a rejection names one of the closed set of reasons, and its message starts with it;
//! - an accepted event routes to at least one company, every one a safe id (they become
//!   object-key segments);
//! - the log's round trip: ingestion stores the accepted JSON (`raw`) re-serialised, and the
//!   reader deserialises the stored text straight into an `Event` — that must give the same
//!   event, or an export of a valid log would fail on it;
//! - parsing the stored text again accepts it with the same event and JSON (a replay of the
//!   log through ingestion decides the same);
//! - the typed event serialised is accepted again as the same event.
#![no_main]

use chrono::{TimeZone, Utc};
use event_model::{Event, Limits, RejectReason, is_safe_id, parse_event, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A fixed "now", so a run is reproducible: the docs' examples are of 2026.
    let now = Utc
        .with_ymd_and_hms(2026, 11, 26, 0, 0, 0)
        .single()
        .expect("a valid time");
    let limits = Limits::default();
    let (event, raw) = match parse_event(data, &limits, now) {
        Ok(accepted) => accepted,
        Err(rejection) => {
            assert!(RejectReason::ALL.contains(&rejection.reason));
            assert!(
                rejection.to_string().starts_with(rejection.reason.as_str()),
                "{rejection}"
            );
            return;
        }
    };
    let companies = route(&event);
    assert!(
        !companies.is_empty(),
        "an accepted event routes nowhere: {event:?}"
    );
    for company in &companies {
        assert!(
            is_safe_id(company),
            "unsafe company id {company:?} accepted"
        );
    }

    // What the log stores, and what its reader makes of it.
    let stored = serde_json::to_string(&raw).expect("a Value serialises");
    let read: Event = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("the reader cannot decode an accepted event: {e}\n{stored}"));
    assert_eq!(
        read, event,
        "the reader decodes another event from {stored}"
    );

    let (again, raw_again) = parse_event(stored.as_bytes(), &limits, now)
        .unwrap_or_else(|r| panic!("the stored text is rejected: {r}\n{stored}"));
    assert_eq!(again, event);
    assert_eq!(raw_again, raw);

    let typed = serde_json::to_vec(&event).expect("an event serialises");
    let (from_typed, _) = parse_event(&typed, &limits, now).unwrap_or_else(|r| {
        panic!(
            "the typed event serialised is rejected: {r}\n{}",
            String::from_utf8_lossy(&typed)
        )
    });
    assert_eq!(from_typed, event);
});
