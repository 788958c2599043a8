//! The state log: appending commands and folding every record into the shared [`State`].
//!
//! The records live in a [`RecordLog`] — one Kafka partition in production ([`KafkaLog`]), a
//! vector in unit tests ([`MemoryLog`]); both pass the same [`conformance`] suite. Each replica
//! starts from the newest [snapshot](snapshot) of the folded state (S3, with the offset it
//! covers) and folds every record after it, in order. An append waits until this replica's fold
//! has reached the record, and returns the fold's [`Outcome`] for it — so a caller learns what
//! the log decided, not what it hoped. [`StateLog::sync`] waits until the fold has reached the
//! log's end as of the call, so a read after another replica's write sees it ("revoked at
//! once").
//!
//! Start-up never gives up on a timer: [`StateLog::caught_up`] resolves once the fold has reached
//! the end, however long the history; the service reports not-ready until then. A record of a
//! version this build does not know stops the fold for good ([`StateLog::halted`]): skipping it
//! would let replicas of different versions diverge during a rolling upgrade.

#[cfg(feature = "conformance")]
pub mod conformance;
mod kafka;
mod memory;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use telemetry::CancellationToken;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::state::{Command, Outcome, RECORD_VERSION, Record, State, is_known_version};

pub use kafka::KafkaLog;
pub use memory::MemoryLog;
pub use snapshot::Snapshots;

/// Why the state log cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The broker (or the store behind it) cannot be reached or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The log exists but is set up so that the service must not use it (missing topic,
    /// retention that would drop history, several partitions): a person has to act.
    #[error("{0}")]
    Misconfigured(String),
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// An ordered, append-only log of records that is kept forever (one Kafka partition).
///
/// Offsets increase with every append but need not be dense (Kafka may leave gaps); the end is
/// the offset after the last record.
#[async_trait]
pub trait RecordLog: Send + Sync + std::fmt::Debug + 'static {
    /// The log's name in messages (the topic).
    fn name(&self) -> &str;
    /// Refuses a log whose settings would drop records: history must be kept forever.
    async fn check_kept_forever(&self) -> Result<(), LogError>;
    /// Appends a record under `key`; returns its offset once it is durable.
    async fn append(&self, key: &str, payload: Vec<u8>) -> Result<u64, LogError>;
    /// The offset after the last record, as of now (0 when empty).
    async fn end(&self) -> Result<u64, LogError>;
    /// A reader of the records at and after `from`, in order.
    async fn reader(&self, from: u64) -> Result<Box<dyn LogReader>, LogError>;
}

/// Reads a [`RecordLog`] in order.
#[async_trait]
pub trait LogReader: Send {
    /// The next record; waits until one is appended.
    async fn next(&mut self) -> Result<Entry, LogError>;
}

/// The state log cannot be reached or did not confirm in time.
#[derive(Debug, thiserror::Error)]
#[error("the export service's state log is unavailable: {0}")]
pub struct Unavailable(pub String);

impl From<Unavailable> for tonic::Status {
    fn from(error: Unavailable) -> Self {
        tonic::Status::unavailable(format!("{error}; retry shortly"))
    }
}

/// The folded state and the offset it has reached, kept together so a snapshot is consistent.
#[derive(Debug, Default)]
struct Folded {
    state: State,
    /// The next offset to fold.
    next: u64,
}

#[derive(Debug)]
struct Shared {
    folded: RwLock<Folded>,
    waiters: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// Bumped whenever a record is folded (or the fold halts).
    version: watch::Sender<u64>,
    /// Why the fold stopped for good (a record it must not skip).
    halted: Mutex<Option<String>>,
}

/// A replica's handle on the state log.
#[derive(Clone)]
pub struct StateLog {
    log: Arc<dyn RecordLog>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

impl std::fmt::Debug for StateLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateLog")
            .field("log", &self.log.name())
            .finish_non_exhaustive()
    }
}

/// How a replica keeps snapshots of its fold.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    pub snapshots: Snapshots,
    /// Write one when the fold is this many offsets past the newest snapshot…
    pub every: u64,
    /// …checking this often.
    pub interval: Duration,
}

impl StateLog {
    /// Checks that the log keeps its history, loads the newest snapshot (if any) and starts
    /// folding after it in the background. Returns at once: await [`Self::caught_up`].
    pub async fn open(
        log: Arc<dyn RecordLog>,
        snapshots: Option<SnapshotPolicy>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        log.check_kept_forever().await?;
        let mut folded = Folded::default();
        if let Some(policy) = &snapshots
            && let Some((next, state)) = policy.snapshots.newest().await?
        {
            let end = log.end().await?;
            anyhow::ensure!(
                next <= end,
                "the newest state snapshot ({}) covers the topic {} up to offset {next}, but the \
                 topic ends at {end}: the topic was recreated or truncated. Restore the topic, or \
                 move the snapshots under {} away if the new topic is meant to start empty",
                policy.snapshots.key(next),
                log.name(),
                policy.snapshots.prefix()
            );
            tracing::info!(
                topic = log.name(),
                offset = next,
                "starting from a state snapshot"
            );
            folded = Folded { state, next };
        }
        let from = folded.next;
        let (version, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            folded: RwLock::new(folded),
            waiters: Mutex::default(),
            version,
            halted: Mutex::default(),
        });
        tokio::spawn(fold(log.clone(), shared.clone(), from, shutdown.clone()));
        if let Some(policy) = snapshots {
            tokio::spawn(write_snapshots(
                log.name().to_owned(),
                shared.clone(),
                policy,
                from,
                shutdown,
            ));
        }
        Ok(Self {
            log,
            shared,
            clock,
            timeout: Duration::from_secs(15),
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Runs `f` over the folded state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.folded().state)
    }

    /// The next offset the fold will apply.
    pub fn folded_to(&self) -> u64 {
        self.folded().next
    }

    /// Changes whenever a record is folded.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// Why the fold has stopped for good, if it has.
    pub fn halted(&self) -> Option<String> {
        self.shared
            .halted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once the fold has reached the log's end as it was when this was called (or
    /// the end as retried while the broker was unreachable); logs its progress every few
    /// seconds. Never gives up on a timer; fails only when the fold has halted.
    pub async fn caught_up(&self) -> Result<(), Unavailable> {
        let started = tokio::time::Instant::now();
        let end = loop {
            match self.log.end().await {
                Ok(end) => break end,
                Err(error) => {
                    tracing::warn!(topic = self.log.name(), %error, "reading the end of the state topic; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let from = self.folded_to();
        let mut changes = self.subscribe();
        let mut report = tokio::time::interval(Duration::from_secs(5));
        report.tick().await;
        loop {
            if let Some(why) = self.halted() {
                return Err(Unavailable(why));
            }
            let next = self.folded_to();
            if next >= end {
                tracing::info!(
                    topic = self.log.name(),
                    records = next.saturating_sub(from),
                    offset = next,
                    seconds = started.elapsed().as_secs_f64(),
                    "export state folded"
                );
                return Ok(());
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = report.tick() => tracing::info!(
                    topic = self.log.name(),
                    folded = next.saturating_sub(from),
                    left = end - next,
                    "reading the export state"
                ),
            }
        }
    }

    /// Appends a command and returns what the fold made of it.
    pub async fn submit(
        &self,
        company_id: &str,
        actor: &str,
        command: Command,
    ) -> Result<Outcome, Unavailable> {
        if let Some(why) = self.halted() {
            return Err(Unavailable(why));
        }
        let record = Record {
            v: RECORD_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            at: self.clock.now(),
            company_id: company_id.to_owned(),
            actor: actor.to_owned(),
            command,
        };
        let payload = serde_json::to_vec(&record).map_err(|e| Unavailable(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(record.id.clone(), tx);
        let appended =
            tokio::time::timeout(self.timeout, self.log.append(company_id, payload)).await;
        let error = match appended {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no confirmation within {:?}", self.timeout)),
        };
        if let Some(error) = error {
            self.waiters().remove(&record.id);
            return Err(Unavailable(format!(
                "writing to the state topic {}: {error}",
                self.log.name()
            )));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => {
                self.waiters().remove(&record.id);
                Err(Unavailable(self.halted().unwrap_or_else(|| {
                    format!(
                        "the record was written to {} but not read back within {:?}",
                        self.log.name(),
                        self.timeout
                    )
                })))
            }
        }
    }

    /// Waits until everything written to the log before this call has been folded.
    pub async fn sync(&self) -> Result<(), Unavailable> {
        let end = tokio::time::timeout(self.timeout, self.log.end())
            .await
            .map_err(|_| Unavailable(format!("reading the end of {}", self.log.name())))?
            .map_err(|e| Unavailable(format!("reading the end of {}: {e}", self.log.name())))?;
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(why) = self.halted() {
                return Err(Unavailable(why));
            }
            let next = self.folded_to();
            if next >= end {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(Unavailable(format!(
                    "still reading the state topic {} ({} records to go)",
                    self.log.name(),
                    end - self.folded_to()
                )));
            }
        }
    }

    fn folded(&self) -> std::sync::RwLockReadGuard<'_, Folded> {
        self.shared.folded.read().unwrap_or_else(|e| e.into_inner())
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Outcome>>> {
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// What a record's bytes turned out to be.
#[derive(Debug)]
enum Decoded {
    Record(Box<Record>),
    /// A record of a version this build does not know: the fold must stop.
    UnknownVersion(u32),
    /// A record of a known version that does not parse: also stop (a newer writer that forgot
    /// to bump the version, or a bug) — skipping it could make replicas diverge.
    Unreadable {
        version: u32,
        error: String,
    },
    /// Not a record of ours at all (no version): every replica skips it alike.
    Foreign(String),
}

fn decode(payload: &[u8]) -> Decoded {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        v: Option<serde_json::Value>,
    }
    let v = match serde_json::from_slice::<Version>(payload) {
        Err(error) => return Decoded::Foreign(error.to_string()),
        Ok(Version { v: None }) => return Decoded::Foreign("no version".into()),
        // A version that is not a whole number is a writer's mistake, not a foreign record:
        // stop rather than skip it.
        Ok(Version { v: Some(value) }) => {
            match value.as_u64().and_then(|v| u32::try_from(v).ok()) {
                Some(v) => v,
                None => {
                    return Decoded::Unreadable {
                        version: 0,
                        error: format!("its version {value} is not a whole number"),
                    };
                }
            }
        }
    };
    match v {
        v if !is_known_version(v) => Decoded::UnknownVersion(v),
        v => match serde_json::from_slice::<Record>(payload) {
            Ok(record) => Decoded::Record(Box::new(record)),
            Err(error) => Decoded::Unreadable {
                version: v,
                error: error.to_string(),
            },
        },
    }
}

async fn fold(
    log: Arc<dyn RecordLog>,
    shared: Arc<Shared>,
    from: u64,
    shutdown: CancellationToken,
) {
    let mut reader = loop {
        match log.reader(from).await {
            Ok(reader) => break reader,
            Err(error) => {
                tracing::warn!(topic = log.name(), %error, "opening the state topic; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        let entry = tokio::select! {
            () = shutdown.cancelled() => return,
            entry = reader.next() => entry,
        };
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(topic = log.name(), %error, "reading the state topic; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let halt = |why: String| {
            tracing::error!(topic = log.name(), offset = entry.offset, "{why}");
            *shared.halted.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            shared.version.send_modify(|v| *v += 1);
        };
        let decided = match decode(&entry.payload) {
            Decoded::Record(record) => {
                let mut folded = shared.folded.write().unwrap_or_else(|e| e.into_inner());
                let outcome = folded.state.apply(&record);
                folded.next = entry.offset + 1;
                drop(folded);
                if let Outcome::Rejected(reason) = &outcome {
                    tracing::debug!(id = %record.id, %reason, "state command refused");
                }
                Some((record.id, outcome))
            }
            Decoded::UnknownVersion(version) => {
                halt(format!(
                    "stopped reading the state topic {} at offset {}: its record has version \
                     {version}, this build knows versions 1 to {RECORD_VERSION}; upgrade this \
                     replica (it stays not-ready and refuses commands until then)",
                    log.name(),
                    entry.offset
                ));
                return;
            }
            Decoded::Unreadable { version, error } => {
                halt(format!(
                    "stopped reading the state topic {} at offset {}: a version {version} record \
                     that this build cannot read ({error}); a newer or faulty writer wrote it — \
                     find it, then upgrade or fix the writer (never skip it: replicas would \
                     diverge)",
                    log.name(),
                    entry.offset
                ));
                return;
            }
            Decoded::Foreign(error) => {
                // Deterministic: every replica skips the same bytes the same way.
                tracing::error!(topic = log.name(), offset = entry.offset, %error, "not a state record (no version); skipped");
                shared
                    .folded
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .next = entry.offset + 1;
                None
            }
        };
        if let Some((id, outcome)) = decided
            && let Some(waiter) = shared
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id)
        {
            let _ = waiter.send(outcome);
        }
        shared.version.send_modify(|v| *v += 1);
    }
}

/// Every `policy.interval`, writes a snapshot when the fold is `policy.every` offsets or more
/// past the newest one this replica knows of.
async fn write_snapshots(
    topic: String,
    shared: Arc<Shared>,
    policy: SnapshotPolicy,
    mut last: u64,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(policy.interval) => {}
        }
        // Copy under the lock, encode outside it (on the blocking pool): the fold and the
        // API's reads never wait for a large state to be serialised.
        let (next, state) = {
            let folded = shared.folded.read().unwrap_or_else(|e| e.into_inner());
            if folded.next < last + policy.every {
                continue;
            }
            (folded.next, folded.state.clone())
        };
        let name = topic.clone();
        let encoded =
            tokio::task::spawn_blocking(move || snapshot::encode(&name, next, &state)).await;
        let bytes = match encoded {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => {
                tracing::error!(%error, "encoding a state snapshot");
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "encoding a state snapshot: the task failed");
                continue;
            }
        };
        match policy.snapshots.write(next, bytes).await {
            Ok(()) => last = next,
            Err(error) => {
                tracing::warn!(%topic, offset = next, error = format!("{error:#}"), "writing a state snapshot; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;
    use crate::state::{Command, JobSpec};

    fn open(log: &MemoryLog, snapshots: Option<SnapshotPolicy>) -> impl Future<Output = StateLog> {
        let log: Arc<dyn RecordLog> = Arc::new(log.clone());
        async move {
            let state = StateLog::open(
                log,
                snapshots,
                Arc::new(SystemClock),
                CancellationToken::new(),
            )
            .await
            .unwrap();
            state.caught_up().await.unwrap();
            state
        }
    }

    async fn enable_and_create(state: &StateLog, jobs: usize) {
        assert_eq!(
            state.submit("acme", "ann", Command::Enable).await.unwrap(),
            Outcome::Applied
        );
        for i in 0..jobs {
            let create = Command::CreateExport {
                job_id: format!("j{i}"),
                spec: JobSpec::all_history(),
                requester_email: None,
                request_id: None,
                max_queued: None,
            };
            assert_eq!(
                state.submit("acme", "ann", create).await.unwrap(),
                Outcome::Applied
            );
        }
    }

    #[tokio::test]
    async fn two_replicas_fold_the_same_state_and_see_each_others_writes() {
        let log = MemoryLog::new("export-state");
        let a = open(&log, None).await;
        let b = open(&log, None).await;
        enable_and_create(&a, 3).await;
        b.sync().await.unwrap();
        assert_eq!(a.read(State::clone), b.read(State::clone));
        assert_eq!(b.read(|s| s.company("acme").unwrap().jobs().count()), 3);
        // A replica started later folds the same history.
        let c = open(&log, None).await;
        assert_eq!(c.read(State::clone), a.read(State::clone));
    }

    #[tokio::test]
    async fn a_replica_starts_from_the_newest_snapshot_and_folds_only_what_follows() {
        let log = MemoryLog::new("export-state");
        let store: Arc<dyn storage::ObjectStore> = Arc::new(storage::MemoryStore::new());
        let policy = SnapshotPolicy {
            snapshots: Snapshots::new(store.clone(), "state-snapshots/", "export-state"),
            every: 1,
            interval: Duration::from_millis(20),
        };
        let a = open(&log, Some(policy.clone())).await;
        enable_and_create(&a, 4).await;
        let wanted = a.read(State::clone);
        // The snapshot task gets to offset 5 (the end); any replica would write the same bytes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while policy.snapshots.newest().await.unwrap().map(|s| s.0) != Some(5) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no snapshot at offset 5"
            );
            tokio::time::sleep(Duration::from_millis(20)).await; // polling a condition
        }
        let (offset, state) = policy.snapshots.newest().await.unwrap().unwrap();
        assert_eq!((offset, &state), (5, &wanted));
        // Proof that a new replica does not read what the snapshot covers: those records are
        // replaced by garbage a fold would stop at.
        let tampered = MemoryLog::new("export-state");
        for _ in 0..5 {
            tampered
                .append("acme", br#"{"v":99}"#.to_vec())
                .await
                .unwrap();
        }
        let b = open(&tampered, Some(policy.clone())).await;
        assert_eq!(b.read(State::clone), wanted);
        assert_eq!(b.folded_to(), 5);
        assert!(b.halted().is_none());
    }

    #[tokio::test]
    async fn an_unknown_record_version_stops_the_fold_and_says_so() {
        let log = MemoryLog::new("export-state");
        let a = open(&log, None).await;
        enable_and_create(&a, 1).await;
        log.append("acme", br#"{"v":4,"id":"x"}"#.to_vec())
            .await
            .unwrap();
        let err = a.caught_up().await.unwrap_err();
        assert!(err.to_string().contains("offset 2"), "{err}");
        assert!(err.to_string().contains("version 4"), "{err}");
        // Nothing after it is applied, and commands are refused with the reason.
        let refused = a.submit("acme", "ann", Command::Enable).await.unwrap_err();
        assert!(refused.to_string().contains("upgrade"), "{refused}");
        assert_eq!(a.folded_to(), 2);
        // A record of a known version that does not parse stops it too.
        let other = MemoryLog::new("other");
        other
            .append("acme", br#"{"v":2,"command":{"type":"launch"}}"#.to_vec())
            .await
            .unwrap();
        let b = StateLog::open(
            Arc::new(other.clone()),
            None,
            Arc::new(SystemClock),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(b.caught_up().await.is_err());
        assert!(b.halted().unwrap().contains("offset 0"));
    }

    #[tokio::test]
    async fn a_log_that_would_drop_history_is_refused() {
        let log = MemoryLog::new("export-state");
        log.set_retention(Some(Duration::from_secs(7 * 86_400)));
        let err = StateLog::open(
            Arc::new(log),
            None,
            Arc::new(SystemClock),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("retention"), "{err:#}");
    }

    #[test]
    fn records_decode_by_version() {
        assert!(matches!(decode(b"not json"), Decoded::Foreign(_)));
        assert!(matches!(decode(br#"{"v":7}"#), Decoded::UnknownVersion(7)));
        assert!(matches!(
            decode(br#"{"v":1}"#),
            Decoded::Unreadable { version: 1, .. }
        ));
        // Only a payload with no version at all is foreign; a malformed one stops the fold.
        assert!(matches!(decode(br#"{"x":1}"#), Decoded::Foreign(_)));
        for malformed in [&br#"{"v":"2"}"#[..], br#"{"v":-1}"#, br#"{"v":2.5}"#] {
            assert!(
                matches!(decode(malformed), Decoded::Unreadable { .. }),
                "{}",
                String::from_utf8_lossy(malformed)
            );
        }
    }
}
