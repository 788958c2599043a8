//! The directory path at scale (run by hand; `--release` for the times):
//!
//! ```text
//! cargo test -p archive --release --lib directories::scale -- --ignored --nocapture
//! ```
//!
//! A company of 50,000 people and 20,000 conversations, ten of them teams of 50,000 members:
//! what the `Directory` holds in memory, what decoding its snapshot (what `LogReader::metadata`
//! does with a v2 meta day) peaks at, and what writing `users.json` and `teams.json` costs in
//! time and memory. Memory is resident memory (Linux `/proc/self/status`), phase by phase.
//!
//! Measured 2026-11-26 (2 shared cores; archive, event-model and serde_json at opt-level 3):
//! 673,269 memberships; the `Directory` 92 MiB resident (193 MiB before members were held
//! compactly); its snapshot 80 MiB of JSON, decoded in 0.5–0.7 s with a peak of 88 MiB above
//! the snapshot's bytes; `users.json` (21 MiB) and `teams.json` (105 MiB) streamed in 0.3 s and
//! 0.6–1.1 s with a peak under 0.5 MiB — built as `Value` trees (the `value-tree` phase, the
//! implementation before) they took 9.9 s and a peak of 1,104 MiB.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, FixedOffset};
use event_model::ConversationKind;
use event_model::directory::{ConversationState, Directory, PersonState};
use event_model::event::Member;

use super::{Scope, Section, write_listing};
use crate::DiskBudget;

/// As the export service and `cce-archive` run: mimalloc gives freed memory back, so resident
/// memory follows what is live.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A `/proc/self/status` field in MiB (Linux).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Starts a phase: resets the peak resident memory to the current (Linux `clear_refs`), and
/// returns the current.
fn phase() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_mib("VmRSS:")
}

/// The phase's peak resident memory above its start, in MiB.
fn peak_above(start: f64) -> f64 {
    status_mib("VmHWM:") - start
}

fn person_id(n: usize) -> String {
    format!("person-{n:06}")
}

/// 50,000 people; 20,000 conversations: ten teams of 50,000 members, the rest of 2 to 20.
fn company() -> Directory {
    let mut directory = Directory::default();
    for n in 0..50_000 {
        let id = person_id(n);
        directory.people.insert(
            id.clone(),
            PersonState {
                id,
                company_id: "acme".into(),
                name: Some(format!("Person Number {n}")),
                email: Some(format!("person.number.{n}@acme.example.com")),
                active: true,
            },
        );
    }
    let at: DateTime<FixedOffset> = "2025-06-01T12:00:00Z".parse().unwrap_or_default();
    for c in 0..20_000usize {
        let (kind, size) = match c {
            0..10 => (ConversationKind::Team, 50_000),
            _ if c % 3 == 0 => (ConversationKind::Direct, 2),
            _ if c % 3 == 1 => (ConversationKind::Group, 3 + c % 18),
            _ => (ConversationKind::Team, 3 + c % 18),
        };
        let members: Vec<Member> = (0..size)
            .map(|m| Member {
                person_id: person_id((c * 7919 + m * 13) % 50_000),
                company_id: "acme".into(),
                name: Some(format!("Person Number {m}")),
                email: None,
            })
            .collect();
        let id = format!("conversation-{c:06}");
        directory.conversations.insert(
            id.clone(),
            ConversationState {
                id,
                kind,
                owner_company_id: "acme".into(),
                name: Some(format!("Conversation {c}")),
                created_at: Some(at),
                created_by: Some(person_id(c % 50_000)),
                archived_at: None,
                members: members.iter().collect(),
                named: None,
            },
        );
    }
    directory
}

const PHASE: &str = "CCE_DIRECTORY_SCALE_PHASE";
const SNAPSHOT: &str = "CCE_DIRECTORY_SCALE_SNAPSHOT";

/// Each phase runs in a process of its own (this test, run again), so that memory one phase
/// freed does not hide what the next one needs.
#[test]
#[ignore = "a measurement at scale, run by hand"]
fn the_directory_path_at_scale() {
    match std::env::var(PHASE).as_deref() {
        Ok("build") => return build_phase(),
        Ok("decode") => return decode_phase(),
        Ok("listings") => return listings_phase(false),
        Ok("value-tree") => return listings_phase(true),
        _ => {}
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let snapshot = dir.path().join("snapshot.json");
    let started = Instant::now();
    let bytes = serde_json::to_vec(&company()).unwrap_or_default();
    println!(
        "snapshot: {:.1} MiB of JSON, built and encoded in {:.2?}",
        bytes.len() as f64 / f64::from(1 << 20),
        started.elapsed()
    );
    std::fs::write(&snapshot, bytes).unwrap_or_else(|e| panic!("{e}"));
    for phase in ["build", "decode", "listings", "value-tree"] {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let out = std::process::Command::new(exe)
            .args([
                "directories::scale::the_directory_path_at_scale",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(PHASE, phase)
            .env(SNAPSHOT, &snapshot)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{phase}: {stdout}");
        let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with(phase)).collect();
        assert!(!lines.is_empty(), "{phase} reported nothing: {stdout}");
        lines.iter().for_each(|l| println!("{l}"));
    }
}

fn build_phase() {
    let base = phase();
    let started = Instant::now();
    let directory = company();
    let members: usize = directory
        .conversations
        .values()
        .map(|c| c.members.len())
        .sum();
    println!(
        "build: {} people, {} conversations, {members} memberships: {:.1} MiB resident \
         (peak {:.1} MiB) in {:.2?}",
        directory.people.len(),
        directory.conversations.len(),
        status_mib("VmRSS:") - base,
        peak_above(base),
        started.elapsed()
    );
}

fn read_snapshot() -> Vec<u8> {
    let path = std::env::var(SNAPSHOT).unwrap_or_default();
    std::fs::read(path).unwrap_or_else(|e| panic!("{e}"))
}

fn decode_phase() {
    let bytes = read_snapshot();
    let base = phase();
    let started = Instant::now();
    let directory: Directory = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "decode (LogReader::metadata's part): {:.1} MiB resident after, peak {:.1} MiB above \
         the snapshot's {:.1} MiB, in {:.2?} ({} conversations)",
        status_mib("VmRSS:") - base,
        peak_above(base),
        bytes.len() as f64 / f64::from(1 << 20),
        started.elapsed(),
        directory.conversations.len()
    );
}

/// The listings streamed, or (`value_tree`) built as before streaming, for comparison.
fn listings_phase(value_tree: bool) {
    let bytes = read_snapshot();
    let directory: Directory = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
    drop(bytes);
    let seen: BTreeSet<String> = directory
        .conversations
        .keys()
        .step_by(10)
        .cloned()
        .collect();
    let folder = |id: &str| {
        let state = directory.conversations.get(id);
        let kind = state.map_or(ConversationKind::Group, |c| c.kind);
        let name = state.and_then(|c| c.name.as_deref());
        let section = if kind == ConversationKind::Team {
            "Team_Chats"
        } else {
            "People_Chats"
        };
        (
            format!("{section}/{}", crate::names::conversation_folder(id, name)),
            kind,
        )
    };
    let history = super::history::MembershipHistory::new(
        "2026-01-01T00:00:00Z".parse().unwrap(),
        &DiskBudget::unlimited(),
    );
    let scope = Scope {
        directory: &directory,
        history: &history,
        seen: &seen,
        in_scope: &|_| true,
        folder_of: &folder,
    };
    if value_tree {
        let base = phase();
        let started = Instant::now();
        let [people, teams] = super::tests::reference(&scope);
        println!(
            "value-tree: both listings ({:.1} MiB) built as Value trees in {:.2?}, peak {:.1} MiB \
             above before",
            (people.len() + teams.len()) as f64 / f64::from(1 << 20),
            started.elapsed(),
            peak_above(base)
        );
        return;
    }
    let disk = DiskBudget::unlimited();
    for section in [Section::People, Section::Teams] {
        let base = phase();
        let started = Instant::now();
        let spill = write_listing(&scope, section, &disk).unwrap_or_else(|e| panic!("{e}"));
        println!(
            "listings: {section:?}: {:.1} MiB written in {:.2?}, peak {:.2} MiB above before",
            spill.len() as f64 / f64::from(1 << 20),
            started.elapsed(),
            peak_above(base)
        );
    }
}
