//! The fault suite's short version (what `deploy/local/faults.sh --short` runs), against the
//! stack `deploy/local/test.sh` started: ingestion SIGKILLed at random moments, the store
//! stopped and killed, the network to the store cut and blackholed, under continuous
//! production; nothing lost or doubled in the log or the archives, and every recovery within
//! 60 s. One test: it stops the shared store, which cargo runs no other test binary beside.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::Stack;
use tests::faults::{self, Outcome, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_fault_suite_loses_and_doubles_nothing() {
    let stack = Stack::from_env();
    let log_dir = tempfile::Builder::new()
        .prefix("cce-faults-logs.")
        .tempdir()
        .unwrap()
        .keep();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    eprintln!(
        "fault suite seed {seed}, ingestion logs in {}",
        log_dir.display()
    );
    let settings = Settings {
        kills: 20,
        companies: 10,
        rate: 60,
        session_timeout: Duration::from_secs(6),
        seed,
        log_dir,
        archive_sample: Some(4),
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    outcomes.push(faults::ingest::kills(&stack, &settings, 2).await.unwrap());
    // Not the broker group: tansu 0.6.0 (the test broker) sometimes stops answering the
    // group's offset commits after a restart or a pause, even after a SIGTERM, and then nothing
    // is consumed until the group's membership changes (docs/servers.md, docs/reliability.md).
    // `deploy/local/faults.sh` runs it and reports it.
    outcomes.push(
        faults::ingest::store(&stack, &settings, true)
            .await
            .unwrap(),
    );
    outcomes.push(
        faults::ingest::network(&stack, &settings, true)
            .await
            .unwrap(),
    );
    for outcome in &outcomes {
        eprintln!("{}", outcome.summary());
    }
    for outcome in &outcomes {
        assert!(
            outcome.verdict.acked > 0,
            "{}: nothing was produced",
            outcome.scenario
        );
        assert!(
            outcome.verdict.archives_checked > 0,
            "{}: no archive checked",
            outcome.scenario
        );
        assert!(outcome.passed(), "{}", outcome.summary());
    }
}
