//! The open day's files, within the items' share of the memory budget whatever the day.
//!
//! Each conversation's day file keeps its items in memory ([`DayFile`]) until the open files'
//! items pass their budget ([`crate::ExportLimits::items_bytes`]); then the file holding the
//! most memory moves to disk: its items go to tables of a B-tree (redb, in an anonymous
//! temporary file shared by the export's spilled files), keyed by position, with a key → latest
//! position index. Later events change a spilled file's items through a write-back cache,
//! which counts as that file's memory and is written back when it is the largest holder. At
//! the day's end the items stream back in order, one part at a time, read on the compression
//! threads. The items — and so the parts' split and the archive's bytes — are the same whether
//! a file stayed in memory or not. The temporary file's growth is counted against the export's
//! [`DiskBudget`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::items::{Change, DayFile, Item, ItemStore, Stored, StoredRef, apply_change, item_key};
use crate::{ArchiveError, DiskBudget};

/// Items per day file before it is split into numbered parts (as RingCentral does).
pub const MAX_ITEMS_PER_FILE: usize = 10_000;
/// Estimated bytes of a part's items before the next item starts a new part, so one entry's
/// memory is bounded whatever its texts' sizes ([`Item::estimate`]).
pub const MAX_PART_BYTES: usize = 8 << 20;
/// The temporary database's page cache.
const DISK_CACHE_BYTES: usize = 4 << 20;
/// Items per write transaction when a file moves to disk (redb holds a transaction's pages in
/// memory until it commits).
const ITEMS_PER_COMMIT: usize = 4_096;
/// Bytes written between durable commits (see [`DayDb::commit`]).
const DURABLE_BYTES: u64 = 64 << 20;

/// The parts of a day file: positions of items and their estimated bytes, split at
/// [`MAX_ITEMS_PER_FILE`] items and about [`MAX_PART_BYTES`] (from the content alone).
pub(crate) fn split(estimates: impl IntoIterator<Item = usize>) -> Vec<(Range<usize>, usize)> {
    let mut parts = Vec::new();
    let (mut start, mut end, mut bytes) = (0, 0, 0usize);
    for estimate in estimates {
        if end > start && (end - start == MAX_ITEMS_PER_FILE || bytes + estimate > MAX_PART_BYTES) {
            parts.push((start..end, bytes));
            (start, bytes) = (end, 0);
        }
        bytes += estimate;
        end += 1;
    }
    if end > start {
        parts.push((start..end, bytes));
    }
    parts
}

/// One part's items, ready to be read where it is serialised.
pub(crate) enum PartItems {
    Memory(Vec<Item>),
    Disk {
        table: Arc<SpilledTable>,
        positions: Range<usize>,
    },
}

impl PartItems {
    /// The items, in order (read from disk for a spilled file: call off the async threads).
    pub(crate) fn load(self) -> Result<Vec<Item>, ArchiveError> {
        match self {
            Self::Memory(items) => Ok(items),
            Self::Disk { table, positions } => table.read(positions),
        }
    }
}

/// The temporary database of the spilled day files; its disk is counted until it is dropped.
struct DayDb {
    db: Database,
    /// The same file, to watch its size.
    file: File,
    disk: DiskBudget,
    counted: AtomicU64,
    /// Bytes written since the last durable commit.
    since_durable: AtomicU64,
}

impl DayDb {
    fn create(disk: DiskBudget) -> Result<Self, ArchiveError> {
        let file = tempfile::tempfile().map_err(disk_error)?;
        let watched = file.try_clone().map_err(disk_error)?;
        let db = redb::Builder::new()
            .set_cache_size(DISK_CACHE_BYTES)
            .create_with_backend(FileBackend::new(file).map_err(disk_error)?)
            .map_err(disk_error)?;
        let db = Self {
            db,
            file: watched,
            disk,
            counted: AtomicU64::new(0),
            since_durable: AtomicU64::new(0),
        };
        db.count_growth()?;
        Ok(db)
    }

    /// Commits `write`, which wrote about `bytes`. Nothing here must survive a crash, so
    /// commits skip the sync to disk, except one per [`DURABLE_BYTES`] written: redb reuses the
    /// pages that non-durable commits free only after a durable one, and the file would grow.
    fn commit(&self, mut write: redb::WriteTransaction, bytes: u64) -> Result<(), ArchiveError> {
        let since = self.since_durable.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if since < DURABLE_BYTES {
            write
                .set_durability(redb::Durability::None)
                .map_err(disk_error)?;
        } else {
            self.since_durable.store(0, Ordering::Relaxed);
        }
        write.commit().map_err(disk_error)
    }

    /// Counts the file's growth since the last call against the disk budget.
    fn count_growth(&self) -> Result<(), ArchiveError> {
        let len = self.file.metadata().map_err(disk_error)?.len();
        let counted = self.counted.load(Ordering::Relaxed);
        if len > counted {
            self.disk.reserve(len - counted)?;
            self.counted.store(len, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Drop for DayDb {
    fn drop(&mut self) {
        self.disk.release(self.counted.load(Ordering::Relaxed));
    }
}

/// The tables of one spilled day file: items (`Stored` JSON) and their estimates by position,
/// and each key's latest position (shifted left one bit, the low bit set while that item is a
/// placeholder). Dropped — and its tables deleted — when the file's last part has been read.
pub(crate) struct SpilledTable {
    db: Arc<DayDb>,
    items: String,
    sizes: String,
    keys: String,
}

impl SpilledTable {
    fn items(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.items)
    }
    fn sizes(&self) -> TableDefinition<'_, u64, u64> {
        TableDefinition::new(&self.sizes)
    }
    fn keys(&self) -> TableDefinition<'_, &'static str, u64> {
        TableDefinition::new(&self.keys)
    }

    /// Writes items, their estimates and keys, a bounded number per transaction; counts the
    /// file's growth.
    fn write(
        &self,
        items: &[(u64, &Item, usize)],
        keys: &[(&str, u64, bool)],
    ) -> Result<(), ArchiveError> {
        for chunk in items.chunks(ITEMS_PER_COMMIT) {
            self.write_batch(chunk, &[])?;
        }
        for chunk in keys.chunks(ITEMS_PER_COMMIT) {
            self.write_batch(&[], chunk)?;
        }
        Ok(())
    }

    fn write_batch(
        &self,
        items: &[(u64, &Item, usize)],
        keys: &[(&str, u64, bool)],
    ) -> Result<(), ArchiveError> {
        let write = self.db.db.begin_write().map_err(disk_error)?;
        let mut bytes = 0u64;
        {
            let mut table = write.open_table(self.items()).map_err(disk_error)?;
            let mut sizes = write.open_table(self.sizes()).map_err(disk_error)?;
            let mut json = Vec::new();
            for &(position, item, estimate) in items {
                json.clear();
                serde_json::to_writer(&mut json, &StoredRef::from(item))
                    .map_err(|e| ArchiveError::Internal(format!("spilled item: {e}")))?;
                table
                    .insert(position, json.as_slice())
                    .map_err(disk_error)?;
                bytes += json.len() as u64 + 32;
                sizes
                    .insert(position, estimate as u64)
                    .map_err(disk_error)?;
            }
            let mut index = write.open_table(self.keys()).map_err(disk_error)?;
            for &(key, position, placeholder) in keys {
                index
                    .insert(key, position << 1 | u64::from(placeholder))
                    .map_err(disk_error)?;
                bytes += key.len() as u64 + 16;
            }
        }
        self.db.commit(write, bytes)?;
        self.db.count_growth()
    }

    fn position(&self, key: &str) -> Result<Option<u64>, ArchiveError> {
        let read = self.db.db.begin_read().map_err(disk_error)?;
        let table = read.open_table(self.keys()).map_err(disk_error)?;
        Ok(table.get(key).map_err(disk_error)?.map(|v| v.value() >> 1))
    }

    fn item(&self, position: u64) -> Result<Item, ArchiveError> {
        let read = self.db.db.begin_read().map_err(disk_error)?;
        let table = read.open_table(self.items()).map_err(disk_error)?;
        let bytes = table
            .get(position)
            .map_err(disk_error)?
            .ok_or_else(|| ArchiveError::Internal(format!("spilled item {position} missing")))?;
        decode(bytes.value())
    }

    /// The items at `positions`, in order.
    fn read(&self, positions: Range<usize>) -> Result<Vec<Item>, ArchiveError> {
        let read = self.db.db.begin_read().map_err(disk_error)?;
        let table = read.open_table(self.items()).map_err(disk_error)?;
        let range = table
            .range(positions.start as u64..positions.end as u64)
            .map_err(disk_error)?;
        let mut items = Vec::with_capacity(positions.len());
        for entry in range {
            let (_, bytes) = entry.map_err(disk_error)?;
            items.push(decode(bytes.value())?);
        }
        Ok(items)
    }

    /// Every item's estimate, in order.
    fn estimates(&self) -> Result<Vec<usize>, ArchiveError> {
        let read = self.db.db.begin_read().map_err(disk_error)?;
        let table = read.open_table(self.sizes()).map_err(disk_error)?;
        table
            .iter()
            .map_err(disk_error)?
            .map(|entry| {
                let (_, size) = entry.map_err(disk_error)?;
                Ok(size.value() as usize)
            })
            .collect()
    }

    /// Up to `limit` keys after `after` (all keys when `None`) whose latest item is a
    /// placeholder, sorted: a day of millions of placeholders is handed out in bounded batches.
    fn placeholders_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, ArchiveError> {
        let read = self.db.db.begin_read().map_err(disk_error)?;
        let table = read.open_table(self.keys()).map_err(disk_error)?;
        let entries = match after {
            Some(after) => table.range::<&str>(after..).map_err(disk_error)?,
            None => table.range::<&str>(..).map_err(disk_error)?,
        };
        let mut keys = Vec::new();
        for entry in entries {
            let (key, value) = entry.map_err(disk_error)?;
            let key = key.value();
            if value.value() & 1 == 1 && Some(key) != after {
                keys.push(key.to_owned());
                if keys.len() >= limit {
                    break;
                }
            }
        }
        Ok(keys)
    }
}

impl Drop for SpilledTable {
    fn drop(&mut self) {
        // Frees the pages for the next spilled file; on failure they only stay used until the
        // export ends and the file vanishes.
        let deleted = self
            .db
            .db
            .begin_write()
            .map_err(disk_error)
            .and_then(|write| {
                let _ = write.delete_table(self.items());
                let _ = write.delete_table(self.sizes());
                let _ = write.delete_table(self.keys());
                self.db.commit(write, 0)
            });
        if let Err(error) = deleted {
            tracing::warn!(%error, "failed to delete a spilled day file's tables");
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Item, ArchiveError> {
    serde_json::from_slice::<Stored>(bytes)
        .map(Item::from)
        .map_err(|e| ArchiveError::Internal(format!("spilled item: {e}")))
}

/// A day file on disk, with a write-back cache of the items its recent events touched.
pub(crate) struct SpilledDay {
    table: Arc<SpilledTable>,
    len: u64,
    /// Items read or changed since the last write-back, by position, with their estimates.
    cache: HashMap<u64, (Item, usize)>,
    /// Keys touched since then, with their latest item's position.
    keys: HashMap<String, u64>,
    cache_bytes: usize,
    touched: u64,
}

impl ItemStore for SpilledDay {
    fn latest(&mut self, key: &str) -> Result<Option<&mut Item>, ArchiveError> {
        let position = match self.keys.get(key) {
            Some(&position) => position,
            None => match self.table.position(key)? {
                Some(position) => position,
                None => return Ok(None),
            },
        };
        if !self.cache.contains_key(&position) {
            let item = self.table.item(position)?;
            let estimate = item.estimate();
            self.cache_bytes += estimate;
            self.cache.insert(position, (item, estimate));
        }
        self.touched = position;
        Ok(self.cache.get_mut(&position).map(|(item, _)| item))
    }

    fn push(&mut self, _key: String, item: Item) -> Result<&mut Item, ArchiveError> {
        let position = self.len;
        self.len += 1;
        self.touched = position;
        Ok(&mut self.cache.entry(position).or_insert((item, 0)).0)
    }
}

impl SpilledDay {
    /// Moves `file` to disk, in new tables of `db`.
    fn create(db: Arc<DayDb>, number: u64, file: DayFile) -> Result<Self, ArchiveError> {
        let table = Arc::new(SpilledTable {
            db,
            items: format!("items_{number}"),
            sizes: format!("sizes_{number}"),
            keys: format!("keys_{number}"),
        });
        let (items, by_key) = file.into_parts();
        let rows: Vec<(u64, &Item, usize)> = items
            .iter()
            .enumerate()
            .map(|(i, (item, estimate))| (i as u64, item, *estimate))
            .collect();
        let keys: Vec<(&str, u64, bool)> = by_key
            .iter()
            .map(|(key, &index)| (key.as_str(), index as u64, items[index].0.is_placeholder()))
            .collect();
        table.write(&rows, &keys)?;
        Ok(Self {
            table,
            len: items.len() as u64,
            cache: HashMap::new(),
            keys: HashMap::new(),
            cache_bytes: 0,
            touched: 0,
        })
    }

    fn apply(&mut self, id: &str, change: Change) -> Result<(), ArchiveError> {
        let key = item_key(change.kind(), id);
        apply_change(self, id, change)?;
        let position = self.touched;
        if let Some((item, estimate)) = self.cache.get_mut(&position) {
            let now = item.estimate();
            self.cache_bytes = self.cache_bytes + now - *estimate;
            *estimate = now;
        }
        if !self.keys.contains_key(&key) {
            self.cache_bytes += key.len() + 32;
        }
        self.keys.insert(key, position);
        Ok(())
    }

    /// Writes the cache back to disk and empties it.
    fn write_back(&mut self) -> Result<(), ArchiveError> {
        if self.cache.is_empty() {
            return Ok(());
        }
        let mut items: Vec<(u64, &Item, usize)> = self
            .cache
            .iter()
            .map(|(&position, (item, estimate))| (position, item, *estimate))
            .collect();
        items.sort_unstable_by_key(|row| row.0);
        let keys: Vec<(&str, u64, bool)> = self
            .keys
            .iter()
            .map(|(key, &position)| {
                let placeholder = self
                    .cache
                    .get(&position)
                    .is_some_and(|(item, _)| item.is_placeholder());
                (key.as_str(), position, placeholder)
            })
            .collect();
        self.table.write(&items, &keys)?;
        self.cache.clear();
        self.keys.clear();
        self.cache_bytes = 0;
        Ok(())
    }
}

/// One open day file, in memory or on disk.
pub(crate) enum OpenFile {
    Memory(DayFile),
    Disk(SpilledDay),
}

impl OpenFile {
    /// Bytes of items it holds in memory (estimated).
    fn resident(&self) -> usize {
        match self {
            Self::Memory(file) => file.bytes(),
            Self::Disk(file) => file.cache_bytes,
        }
    }

    /// The keys (`kind:id`) of items whose creation is not in this file, sorted, after
    /// `after` (from the first when `None`): at most `limit` at a time for a file on disk (a
    /// file in memory, within its budget, hands out the rest at once).
    pub(crate) fn placeholders_after(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, ArchiveError> {
        match self {
            Self::Memory(file) => {
                let mut keys: Vec<String> = file
                    .placeholders()
                    .filter(|key| after.is_none_or(|after| *key > after))
                    .map(str::to_owned)
                    .collect();
                keys.sort_unstable();
                Ok(keys)
            }
            Self::Disk(file) => {
                file.write_back()?;
                file.table.placeholders_after(after, limit)
            }
        }
    }

    /// The file's parts, in order, each with its estimated bytes.
    pub(crate) fn into_parts(self) -> Result<Vec<(PartItems, usize)>, ArchiveError> {
        match self {
            Self::Memory(file) => {
                let (items, _) = file.into_parts();
                let parts = split(items.iter().map(|(_, estimate)| *estimate));
                let mut items = items.into_iter().map(|(item, _)| item);
                Ok(parts
                    .into_iter()
                    .map(|(range, bytes)| {
                        let part = items.by_ref().take(range.len()).collect();
                        (PartItems::Memory(part), bytes)
                    })
                    .collect())
            }
            Self::Disk(mut file) => {
                file.write_back()?;
                let parts = split(file.table.estimates()?);
                Ok(parts
                    .into_iter()
                    .map(|(positions, bytes)| {
                        let table = file.table.clone();
                        (PartItems::Disk { table, positions }, bytes)
                    })
                    .collect())
            }
        }
    }
}

/// The open day's files by conversation, within the items' memory budget.
pub(crate) struct OpenDays {
    files: BTreeMap<String, OpenFile>,
    /// The files' [`OpenFile::resident`] bytes, summed.
    resident: usize,
    budget: usize,
    disk: DiskBudget,
    db: Option<Arc<DayDb>>,
    spilled: u64,
}

impl OpenDays {
    /// `budget`: bytes of items held in memory; `disk` counts the temporary file.
    pub(crate) fn new(budget: usize, disk: DiskBudget) -> Self {
        Self {
            files: BTreeMap::new(),
            resident: 0,
            budget: budget.max(1),
            disk,
            db: None,
            spilled: 0,
        }
    }

    /// Applies one event to conversation `conversation_id`'s file.
    pub(crate) fn apply(
        &mut self,
        conversation_id: &str,
        id: &str,
        change: Change,
    ) -> Result<(), ArchiveError> {
        if !self.files.contains_key(conversation_id) {
            self.files.insert(
                conversation_id.to_owned(),
                OpenFile::Memory(DayFile::default()),
            );
        }
        let Some(file) = self.files.get_mut(conversation_id) else {
            return Ok(());
        };
        let before = file.resident();
        match file {
            OpenFile::Memory(day) => day.apply(id, change),
            OpenFile::Disk(day) => day.apply(id, change)?,
        }
        self.resident = self.resident + file.resident() - before;
        if self.resident > self.budget {
            self.relieve()?;
        }
        Ok(())
    }

    /// Moves the largest holders of memory to disk (or writes their caches back) until the
    /// files hold three quarters of the budget, so the next events do not spill again at once.
    fn relieve(&mut self) -> Result<(), ArchiveError> {
        while self.resident > self.budget / 4 * 3 {
            let Some((id, _)) = self
                .files
                .iter()
                .map(|(id, file)| (id, file.resident()))
                .max_by_key(|(id, resident)| (*resident, std::cmp::Reverse(*id)))
                .filter(|(_, resident)| *resident > 0)
            else {
                return Ok(());
            };
            let id = id.clone();
            let Some(file) = self.files.remove(&id) else {
                return Ok(());
            };
            let before = file.resident();
            let file = match file {
                OpenFile::Memory(day) => {
                    let db = match &self.db {
                        Some(db) => db.clone(),
                        None => self
                            .db
                            .insert(Arc::new(DayDb::create(self.disk.clone())?))
                            .clone(),
                    };
                    self.spilled += 1;
                    OpenFile::Disk(SpilledDay::create(db, self.spilled, day)?)
                }
                OpenFile::Disk(mut day) => {
                    day.write_back()?;
                    OpenFile::Disk(day)
                }
            };
            self.resident = self.resident + file.resident() - before;
            self.files.insert(id, file);
        }
        Ok(())
    }

    /// The day's files, leaving none open.
    pub(crate) fn take(&mut self) -> BTreeMap<String, OpenFile> {
        self.resident = 0;
        std::mem::take(&mut self.files)
    }

    /// How many day files have moved to disk (for tests).
    #[cfg(test)]
    pub(crate) fn spilled(&self) -> u64 {
        self.spilled
    }
}

fn disk_error(error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Internal(format!(
        "the export's temporary day-file table in {} failed: {error} (point TMPDIR at a disk \
         with free space)",
        std::env::temp_dir().display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::PostItem;
    use crate::items::{Edit, ItemKind, NoteDeletion, NoteItem, Person, PersonRef, PostDeletion};

    fn ann() -> PersonRef {
        PersonRef(Arc::new(Person::Unknown { id: "ann".into() }))
    }

    /// A day of events over a few conversations, in and out of order: creations, edits,
    /// deletions (some twice), notes, placeholders.
    fn events() -> Vec<(String, String, Change)> {
        let mut all = Vec::new();
        let mut state = 17u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % n
        };
        for i in 0..3_000 {
            let conversation = format!("c{}", next(4));
            let id = format!("x{}", next(400));
            let at = format!("t{i:05}");
            let text = "y".repeat(next(300) as usize);
            let change = match next(7) {
                0..=2 => Change::Create(Item::Post(PostItem {
                    author: Some(ann()),
                    changed_before_creation_on: None,
                    created_at: Some(at),
                    created_elsewhere: false,
                    deleted: None,
                    edits: vec![],
                    id: id.clone(),
                    kind: ItemKind::Post,
                    parent_post_id: None,
                    text: Some(text),
                })),
                3 => Change::PostEdit(Edit {
                    at,
                    editor: ann(),
                    out_of_order: false,
                    text,
                    text_before: None,
                }),
                4 => Change::PostDelete(PostDeletion {
                    at,
                    by: ann(),
                    out_of_order: false,
                    text_before: Some(text),
                }),
                5 => Change::NoteEdit {
                    title: None,
                    text,
                    at,
                },
                _ => Change::NoteDelete(NoteDeletion {
                    at,
                    by: ann(),
                    out_of_order: false,
                }),
            };
            all.push((conversation, id, change));
        }
        all.push((
            "c0".into(),
            "x1".into(),
            Change::Create(Item::Note(NoteItem {
                author: Some(ann()),
                changed_before_creation_on: None,
                created_at: Some("late".into()),
                created_elsewhere: false,
                deleted: None,
                edit_count: 0,
                id: "x1".into(),
                kind: ItemKind::Note,
                last_edit_out_of_order: false,
                last_edited_at: None,
                text: Some("n".into()),
                title: None,
            })),
        ));
        all
    }

    /// A conversation's file: its placeholders and its parts (items as JSON, estimate).
    type Replayed = (String, Vec<String>, Vec<(String, usize)>);

    /// Every file, in conversation order; how many files spilled, and the disk they used.
    fn replay(budget: usize) -> (Vec<Replayed>, u64, u64) {
        let disk = DiskBudget::unlimited();
        let mut days = OpenDays::new(budget, disk.clone());
        for (conversation, id, change) in events() {
            days.apply(&conversation, &id, change).unwrap();
        }
        let spilled = days.spilled();
        let used = disk.used();
        let files = days
            .take()
            .into_iter()
            .map(|(conversation, mut file)| {
                // In batches of 3, as the renderer asks for them in batches.
                let mut placeholders: Vec<String> = Vec::new();
                loop {
                    let batch = file.placeholders_after(placeholders.last().map(String::as_str), 3);
                    let batch = batch.unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    placeholders.extend(batch);
                }
                let parts = file
                    .into_parts()
                    .unwrap()
                    .into_iter()
                    .map(|(items, bytes)| {
                        let items = items.load().unwrap();
                        (serde_json::to_string(&items).unwrap(), bytes)
                    })
                    .collect();
                (conversation, placeholders, parts)
            })
            .collect();
        (files, spilled, used)
    }

    #[test]
    fn spilled_day_files_hold_the_same_items_as_in_memory() {
        let (in_memory, spilled, used) = replay(usize::MAX);
        assert_eq!((spilled, used), (0, 0));
        // Enough placeholders in one file for the batches of 3 to take several rounds.
        assert!(
            in_memory
                .iter()
                .any(|(_, placeholders, _)| placeholders.len() > 6)
        );
        for budget in [1, 20_000, 200_000] {
            let (on_disk, spilled, used) = replay(budget);
            assert!(spilled > 0, "budget {budget}: nothing spilled");
            assert!(used > 0, "budget {budget}: the temporary file is counted");
            assert_eq!(on_disk, in_memory, "budget {budget}");
        }
    }

    #[test]
    fn a_spill_past_the_disk_budget_fails_saying_so() {
        let mut days = OpenDays::new(1, DiskBudget::new(64 << 10));
        let error = events()
            .into_iter()
            .try_for_each(|(conversation, id, change)| days.apply(&conversation, &id, change))
            .unwrap_err();
        assert!(matches!(error, ArchiveError::DiskBudget { .. }), "{error}");
    }

    #[test]
    fn parts_split_at_the_item_count_and_the_byte_bound() {
        assert_eq!(split([]), vec![]);
        assert_eq!(split([10, 20]), vec![(0..2, 30)]);
        let many = split(std::iter::repeat_n(1, MAX_ITEMS_PER_FILE + 1));
        assert_eq!(
            many,
            vec![
                (0..MAX_ITEMS_PER_FILE, MAX_ITEMS_PER_FILE),
                (MAX_ITEMS_PER_FILE..MAX_ITEMS_PER_FILE + 1, 1)
            ]
        );
        let half = MAX_PART_BYTES / 2;
        assert_eq!(
            split([half, half, 1, MAX_PART_BYTES * 2, 5]),
            vec![
                (0..2, MAX_PART_BYTES),
                (2..3, 1),
                (3..4, MAX_PART_BYTES * 2),
                (4..5, 5)
            ],
            "an item larger than the bound is a part of its own"
        );
    }
}
