//! The latest text of every post the export has seen, for `text_before` on edits and deletes.
//!
//! A compliance export must say what a post said before it was changed, even when the post is
//! years older than its edit, so nothing may be forgotten — and memory must not grow with the
//! export. Recent texts live in memory in two generations of at most `budget` bytes each; when
//! the newer one fills, the older one moves to an on-disk B-tree (redb, in an anonymous
//! temporary file with a bounded page cache) in one write transaction, off the async threads.
//! Lookups go newest first: the current generation, the previous one, then the disk. Most
//! edits follow their post within hours, so they never touch the disk.
//!
//! The table's file counts against the export's [`DiskBudget`]: each batch's bytes before it
//! is written, then the file's real length after its commit (redb's pages, free space and
//! growth), so an export whose texts would pass the budget fails with
//! [`ArchiveError::DiskBudget`]; the file is deleted when the export ends.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::spill::DiskUse;
use crate::{ArchiveError, DiskBudget};

const TABLE: TableDefinition<&str, &str> = TableDefinition::new("post_texts");
/// The on-disk table's page cache.
const DISK_CACHE_BYTES: usize = 4 << 20;
/// Texts per write transaction when a generation moves to disk: redb holds a transaction's
/// pages in memory until it commits.
const TEXTS_PER_COMMIT: usize = 4_096;

#[derive(Debug)]
pub(crate) struct PostTexts {
    budget: usize,
    current: Generation,
    previous: Generation,
    disk_budget: DiskBudget,
    disk: Option<Arc<DiskTable>>,
}

/// The on-disk table, its file (to measure) and what the file counts against the budget.
#[derive(Debug)]
struct DiskTable {
    db: Database,
    file: File,
    used: Mutex<DiskUse>,
}

impl DiskTable {
    fn create(budget: &DiskBudget) -> Result<Self, ArchiveError> {
        let file = tempfile::tempfile().map_err(|e| disk_error(e.to_string()))?;
        let measured = file.try_clone().map_err(|e| disk_error(e.to_string()))?;
        let db = redb::Builder::new()
            .set_cache_size(DISK_CACHE_BYTES)
            .create_with_backend(FileBackend::new(file).map_err(disk_error)?)
            .map_err(disk_error)?;
        let table = Self {
            db,
            file: measured,
            used: Mutex::new(DiskUse::new(budget)),
        };
        table.measure()?;
        Ok(table)
    }

    /// Counts `bytes` more before they are written.
    fn reserve(&self, bytes: u64) -> Result<(), ArchiveError> {
        self.lock().grow(bytes)
    }

    /// Makes the count the file's length now.
    fn measure(&self) -> Result<(), ArchiveError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| disk_error(e.to_string()))?
            .len();
        self.lock().set(len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskUse> {
        // The count stays right whatever a panicking holder did: it is one number.
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One in-memory generation: the latest text of each post it has seen, or a tombstone (`None`)
/// for a post forgotten since (deleted), which hides any older copy in an older generation or
/// on disk — so what a lookup finds never depends on where the budget happened to put a copy.
#[derive(Debug, Default)]
struct Generation {
    texts: HashMap<String, Option<String>>,
    bytes: usize,
}

fn slot_len(text: &Option<String>) -> usize {
    text.as_ref().map_or(0, String::len)
}

impl Generation {
    /// Sets the post's slot; returns what the slot held, if this generation had one.
    fn insert(&mut self, id: &str, text: Option<String>) -> Option<Option<String>> {
        let added = slot_len(&text);
        match self.texts.get_mut(id) {
            Some(slot) => {
                self.bytes = self.bytes + added - slot_len(slot);
                Some(std::mem::replace(slot, text))
            }
            None => {
                self.bytes += id.len() + added + 48;
                self.texts.insert(id.to_owned(), text);
                None
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Option<String>> {
        let text = self.texts.remove(id)?;
        self.bytes -= id.len() + slot_len(&text) + 48;
        Some(text)
    }
}

impl PostTexts {
    /// `budget`: bytes of texts (and ids) each in-memory generation holds before it rotates;
    /// `disk`: the export's temporary disk, which the on-disk table counts against.
    pub(crate) fn new(budget: usize, disk: DiskBudget) -> Self {
        Self {
            budget: budget.max(1),
            current: Generation::default(),
            previous: Generation::default(),
            disk_budget: disk,
            disk: None,
        }
    }

    /// Records `text` as the post's latest text; returns the text it had before, if known.
    pub(crate) async fn replace(
        &mut self,
        id: &str,
        text: String,
    ) -> Result<Option<String>, ArchiveError> {
        let before = match self.current.insert(id, Some(text)) {
            Some(before) => before,
            None => match self.previous.remove(id) {
                Some(before) => before,
                None => self.on_disk(id)?,
            },
        };
        self.rotate_if_full().await?;
        Ok(before)
    }

    /// Records `text` as a new post's text without looking for an earlier one (a creation
    /// needs none): no disk read per post once older texts have moved to disk. An older copy
    /// of the same id stays where it is, behind this newer one.
    pub(crate) async fn record(&mut self, id: &str, text: String) -> Result<(), ArchiveError> {
        self.current.insert(id, Some(text));
        self.rotate_if_full().await
    }

    /// Forgets a deleted post; returns its last text, if known. Where an older copy may remain
    /// (the previous generation or the disk), a tombstone hides it, so a later lookup finds
    /// nothing whether or not the budget moved the text to disk.
    pub(crate) async fn take(&mut self, id: &str) -> Result<Option<String>, ArchiveError> {
        let found = match self.current.remove(id) {
            Some(text) => Some(text),
            None => self.previous.remove(id),
        };
        let text = match found {
            Some(text) => text,
            None => self.on_disk(id)?,
        };
        if self.disk.is_some() || self.previous.texts.contains_key(id) {
            self.current.insert(id, None);
            self.rotate_if_full().await?;
        }
        Ok(text)
    }

    async fn rotate_if_full(&mut self) -> Result<(), ArchiveError> {
        if self.current.bytes > self.budget {
            self.rotate().await?;
        }
        Ok(())
    }

    fn on_disk(&self, id: &str) -> Result<Option<String>, ArchiveError> {
        let Some(disk) = &self.disk else {
            return Ok(None);
        };
        let read = disk.db.begin_read().map_err(disk_error)?;
        let table = read.open_table(TABLE).map_err(disk_error)?;
        Ok(table
            .get(id)
            .map_err(disk_error)?
            .map(|text| text.value().to_owned()))
    }

    /// The previous generation goes to disk; the current one becomes the previous.
    async fn rotate(&mut self) -> Result<(), ArchiveError> {
        let older = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
        if older.texts.is_empty() {
            return Ok(());
        }
        let disk = match &self.disk {
            Some(disk) => disk.clone(),
            None => {
                let table = DiskTable::create(&self.disk_budget)?;
                self.disk.insert(Arc::new(table)).clone()
            }
        };
        tokio::task::spawn_blocking(move || -> Result<(), ArchiveError> {
            let mut entries: Vec<(String, Option<String>)> = older.texts.into_iter().collect();
            // Sorted keys fill the B-tree's pages in order.
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for batch in entries.chunks(TEXTS_PER_COMMIT) {
                // Refuse a batch that cannot fit before writing it; the commit then says
                // what the file really grew by.
                let bytes: usize = batch
                    .iter()
                    .map(|(id, text)| id.len() + slot_len(text))
                    .sum();
                disk.reserve(bytes as u64)?;
                let write = disk.db.begin_write().map_err(disk_error)?;
                {
                    let mut table = write.open_table(TABLE).map_err(disk_error)?;
                    for (id, text) in batch {
                        match text {
                            Some(text) => table.insert(id.as_str(), text.as_str()),
                            // A tombstone: the post was forgotten after a copy reached disk.
                            None => table.remove(id.as_str()),
                        }
                        .map_err(disk_error)?;
                    }
                }
                write.commit().map_err(disk_error)?;
                disk.measure()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ArchiveError::Internal(format!("post text spill task: {e}")))?
    }

    /// Whether any text has moved to disk (for tests).
    #[cfg(test)]
    fn spilled(&self) -> bool {
        self.disk.is_some()
    }
}

fn disk_error(error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Internal(format!(
        "the export's temporary post-text table in {} failed: {error} (point TMPDIR at a disk \
         with free space)",
        std::env::temp_dir().display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_every_text_across_generations_and_disk() {
        // A tiny budget: almost every insert rotates a generation to disk.
        let mut texts = PostTexts::new(2_000, DiskBudget::unlimited());
        for i in 0..5_000 {
            assert_eq!(
                texts
                    .replace(&format!("p{i}"), format!("text {i}"))
                    .await
                    .unwrap(),
                None
            );
        }
        assert!(texts.spilled());
        // The oldest post, long on disk, is edited: the text before is its creation's.
        assert_eq!(
            texts.replace("p0", "p0 edited".into()).await.unwrap(),
            Some("text 0".into())
        );
        // Its newest text wins over the older copy still on disk.
        for i in 5_000..7_000 {
            texts
                .replace(&format!("p{i}"), format!("text {i}"))
                .await
                .unwrap();
        }
        assert_eq!(
            texts.replace("p0", "p0 again".into()).await.unwrap(),
            Some("p0 edited".into())
        );
        assert_eq!(texts.take("p1").await.unwrap(), Some("text 1".into()));
        assert_eq!(texts.take("p6999").await.unwrap(), Some("text 6999".into()));
        assert_eq!(texts.take("never").await.unwrap(), None);
    }

    /// What a lookup finds does not depend on where the budget put a copy: a post forgotten
    /// (deleted) after its text reached disk is forgotten there too, as it is in memory.
    #[tokio::test]
    async fn a_forgotten_post_stays_forgotten_whatever_the_budget() {
        let mut answers = Vec::new();
        for budget in [1 << 20, 64] {
            let mut texts = PostTexts::new(budget, DiskBudget::unlimited());
            let mut seen = Vec::new();
            for i in 0..300 {
                texts
                    .record(&format!("p{i}"), format!("text {i}"))
                    .await
                    .unwrap();
            }
            seen.push(texts.take("p3").await.unwrap());
            for i in 300..600 {
                texts
                    .record(&format!("p{i}"), format!("text {i}"))
                    .await
                    .unwrap();
            }
            // Changed again after its deletion (clocks that disagree): nothing before it.
            seen.push(texts.replace("p3", "again".into()).await.unwrap());
            seen.push(texts.take("p3").await.unwrap());
            seen.push(texts.take("p3").await.unwrap());
            seen.push(texts.replace("p4", "edited".into()).await.unwrap());
            assert_eq!(texts.spilled(), budget == 64);
            answers.push(seen);
        }
        assert_eq!(
            answers[0],
            vec![
                Some("text 3".into()),
                None,
                Some("again".into()),
                None,
                Some("text 4".into())
            ]
        );
        assert_eq!(answers[0], answers[1]);
    }

    #[tokio::test]
    async fn small_exports_never_touch_the_disk() {
        let mut texts = PostTexts::new(1 << 20, DiskBudget::unlimited());
        for i in 0..1_000 {
            texts
                .replace(&format!("p{i}"), "hello".into())
                .await
                .unwrap();
        }
        assert_eq!(
            texts.replace("p7", "bye".into()).await.unwrap(),
            Some("hello".into())
        );
        assert!(!texts.spilled());
    }

    #[tokio::test]
    async fn the_table_counts_its_file_against_the_disk_budget() {
        let budget = DiskBudget::unlimited();
        let mut texts = PostTexts::new(2_000, budget.clone());
        for i in 0..5_000 {
            texts
                .replace(&format!("p{i}"), format!("text {i}"))
                .await
                .unwrap();
        }
        let file = texts.disk.as_ref().unwrap().file.metadata().unwrap().len();
        assert!(file > 0);
        assert_eq!(budget.used(), file, "the count is the file's length");
        drop(texts);
        assert_eq!(budget.used(), 0, "given back with the file");
    }

    #[tokio::test]
    async fn texts_past_the_disk_budget_fail_the_export_with_the_budget_error() {
        let budget = DiskBudget::new(64 * 1024);
        let mut texts = PostTexts::new(2_000, budget.clone());
        let mut failed = None;
        for i in 0..20_000 {
            if let Err(error) = texts.replace(&format!("p{i}"), "x".repeat(100)).await {
                failed = Some(error);
                break;
            }
        }
        let error = failed.expect("2 MB of texts cannot fit in 64 KiB");
        assert!(matches!(error, ArchiveError::DiskBudget { .. }), "{error}");
        assert!(budget.used() <= budget.limit());
        drop(texts);
        assert_eq!(budget.used(), 0);
    }
}
