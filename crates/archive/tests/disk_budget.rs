//! An export's temporary disk is bounded: past its budget it fails with a message that says
//! what to do; within it, the budget changes nothing in the archive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use archive::{ArchiveError, ExportLimits, export_to_sink};
use serde_json::{Value, json};

/// A few hundred posts over the two days of the range, with edits and deletes.
fn history() -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..400 {
        let at = format!("2026-02-0{}T{:02}:{:02}:00Z", 1 + i % 2, i % 24, i % 60);
        events.push(support::ev(
            &format!("e{i:04}"),
            &at,
            "post.created",
            json!({"post_id": format!("p{i}"), "author_id": "ann", "text": format!("post {i} {}", "x".repeat(i % 50))}),
        ));
        if i % 5 == 0 {
            events.push(support::ev(
                &format!("f{i:04}"),
                "2026-02-02T23:00:00Z",
                "post.edited",
                json!({"post_id": format!("p{i}"), "editor_id": "ann", "text": "edited"}),
            ));
        }
    }
    events
}

async fn export(disk_bytes: u64) -> Result<Vec<u8>, ArchiveError> {
    let reader = support::log_of(&history()).await;
    let mut request = support::request("");
    request.limits = ExportLimits {
        disk_bytes,
        ..ExportLimits::default()
    };
    export_to_sink(&request, &reader, Vec::new(), |_| {})
        .await
        .map(|(bytes, _, _)| bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_disk_budget_an_export_fails_and_within_it_the_bytes_are_the_same() {
    // The manifest's lines of its five files alone need more than 256 bytes.
    let Err(error) = export(256).await else {
        panic!("an export cannot fit in 256 bytes of temporary disk");
    };
    assert!(matches!(error, ArchiveError::DiskBudget { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("temporary disk") && message.contains("CCE_EXPORT_DISK_BUDGET_MIB"),
        "{message}"
    );
    let unlimited = export(u64::MAX).await.unwrap();
    let default = export(ExportLimits::default().disk_bytes).await.unwrap();
    let tight = export(1 << 20).await.unwrap();
    assert_eq!(default, unlimited);
    assert_eq!(tight, unlimited);
    let report = archive::verify::verify(&mut std::io::Cursor::new(&tight)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// The export service runs exports on a multi-threaded runtime: the export's future must be
/// `Send` (a borrow held across an await, such as the listings' scope, would break it).
#[tokio::test]
async fn the_export_future_can_move_between_threads() {
    fn send<T: Send>(future: T) -> T {
        future
    }
    let reader = support::log_of(&history()).await;
    let request = support::request("");
    let (bytes, _, _) = send(export_to_sink(&request, &reader, Vec::new(), |_| {}))
        .await
        .unwrap();
    assert!(!bytes.is_empty());
}
