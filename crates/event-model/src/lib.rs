//! The chat platform's events and the rules that decide where they belong.
//!
//! Pure data and pure functions: no I/O, so every rule is tested with tables of cases.
//! The event types and routing rules land with Step 2 (`docs/events.md`).
