//! Spill files: what an archive needs only at its end — the ZIP central directory, the manifest's
//! per-day and per-file lines, the manifest itself before it is compressed — is appended to an
//! anonymous temporary file as it is made and streamed back at the end. An export's memory then
//! stays the same whatever its number of files; its temporary disk use is about 200 bytes per
//! file.
//!
//! The files are created with `tempfile::tempfile` in `TMPDIR` (default `/tmp`) and unlinked at
//! once, so they vanish when dropped or when the process dies, even by SIGKILL. Writes are
//! buffered (64 KiB) into the page cache; they are done inline on the async task, as each costs
//! microseconds.
//!
//! Every byte is counted against the export's [`DiskBudget`] before it is written, and given
//! back when the file (or its [`SpillReader`]) is dropped: an export that would pass its
//! temporary-disk limit fails with [`ArchiveError::DiskBudget`] instead of filling the disk.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use bytes::{Bytes, BytesMut};

use crate::{ArchiveError, DiskBudget};

const BUFFER: usize = 64 * 1024;

/// Bytes of temporary disk counted against a [`DiskBudget`], given back when dropped (the file
/// they stand for is deleted with them).
#[derive(Debug)]
pub(crate) struct DiskUse {
    budget: DiskBudget,
    bytes: u64,
}

impl DiskUse {
    pub(crate) fn new(budget: &DiskBudget) -> Self {
        Self {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Counts `bytes` more, or fails (counting nothing) past the budget.
    pub(crate) fn grow(&mut self, bytes: u64) -> Result<(), ArchiveError> {
        self.budget.reserve(bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// Makes the count `bytes` (a file's length now), growing or shrinking it.
    pub(crate) fn set(&mut self, bytes: u64) -> Result<(), ArchiveError> {
        if bytes > self.bytes {
            self.grow(bytes - self.bytes)
        } else {
            self.budget.release(self.bytes - bytes);
            self.bytes = bytes;
            Ok(())
        }
    }
}

impl Drop for DiskUse {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// An append-only temporary file.
#[derive(Debug)]
pub struct Spill {
    file: BufWriter<File>,
    len: u64,
    disk: DiskUse,
}

impl Spill {
    /// A spill counted against no budget (tools and tests).
    pub fn new() -> Result<Self, ArchiveError> {
        Self::with_budget(&DiskBudget::unlimited())
    }

    /// A spill whose bytes count against `budget` until it (or its reader) is dropped.
    pub fn with_budget(budget: &DiskBudget) -> Result<Self, ArchiveError> {
        let file = tempfile::tempfile().map_err(spill_error)?;
        Ok(Self {
            file: BufWriter::with_capacity(BUFFER, file),
            len: 0,
            disk: DiskUse::new(budget),
        })
    }

    /// Appends `bytes`, or fails with [`ArchiveError::DiskBudget`] (writing nothing) when they
    /// would pass the budget.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.disk.grow(bytes.len() as u64)?;
        self.file.write_all(bytes).map_err(spill_error)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Everything written, from the start.
    pub fn into_reader(self) -> Result<SpillReader, ArchiveError> {
        let Self { file, len, disk } = self;
        let mut file = file.into_inner().map_err(|e| spill_error(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(spill_error)?;
        Ok(SpillReader {
            file,
            left: len,
            _disk: disk,
        })
    }
}

/// For serialisers and encoders: a write past the budget fails with an `io::Error` that
/// [`from_io`] turns back into [`ArchiveError::DiskBudget`].
impl Write for Spill {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.disk
            .grow(buf.len() as u64)
            .map_err(std::io::Error::other)?;
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Reads a spill back in chunks.
#[derive(Debug)]
pub struct SpillReader {
    file: File,
    left: u64,
    /// The file's bytes stay counted until it is read and dropped.
    _disk: DiskUse,
}

impl SpillReader {
    /// The next chunk of at most `max` bytes; `None` at the end.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ArchiveError> {
        if self.left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(self.left).map_or(max, |left| left.min(max));
        let mut chunk = BytesMut::zeroed(want);
        self.file.read_exact(&mut chunk).map_err(spill_error)?;
        self.left -= want as u64;
        Ok(Some(chunk.freeze()))
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.left
    }
}

/// The [`ArchiveError`] an `io::Error` from writing a [`Spill`] carries (a budget refused), the
/// temporary-disk error for a full disk (whatever the writer was), or `otherwise` for any other
/// failure.
pub(crate) fn from_io(
    error: std::io::Error,
    otherwise: impl FnOnce(std::io::Error) -> ArchiveError,
) -> ArchiveError {
    // A full TMPDIR must say so and what to do, not read as the writer's internal error.
    if error.kind() == std::io::ErrorKind::StorageFull {
        return spill_error(error);
    }
    if !error
        .get_ref()
        .is_some_and(|inner| inner.is::<ArchiveError>())
    {
        return otherwise(error);
    }
    match error
        .into_inner()
        .map(|inner| inner.downcast::<ArchiveError>())
    {
        Some(Ok(archive)) => *archive,
        // Unreachable: checked above.
        _ => ArchiveError::Internal("a temporary file's write failed".into()),
    }
}

/// The error of a full `TMPDIR`, for any writer of temporary files: it says where and what to do.
pub(crate) fn full_disk_error(error: impl std::fmt::Display) -> ArchiveError {
    spill_error(error)
}

/// Whether `error` or one of its sources is the operating system's "no space left on device".
/// (Wrappers that do not expose their source are recognised by the OS error's own text.)
pub(crate) fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
        {
            return true;
        }
        next = error.source();
    }
    error.to_string().contains("(os error 28)")
}

fn spill_error(error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Internal(format!(
        "writing the export's temporary file in {} failed: {error} (point TMPDIR at a disk with \
         free space)",
        std::env::temp_dir().display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written_in_chunks() {
        let mut spill = Spill::new().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(777) {
            spill.append(piece).unwrap();
        }
        assert_eq!(spill.len(), data.len() as u64);
        let mut reader = spill.into_reader().unwrap();
        let mut back = Vec::new();
        while let Some(chunk) = reader.next_chunk(65_536).unwrap() {
            assert!(chunk.len() <= 65_536);
            back.extend_from_slice(&chunk);
        }
        assert_eq!(back, data);
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn counts_against_its_budget_until_dropped_and_refuses_past_it() {
        let budget = DiskBudget::new(10_000);
        let mut spill = Spill::with_budget(&budget).unwrap();
        spill.append(&[7; 6_000]).unwrap();
        assert_eq!(budget.used(), 6_000);
        let error = spill.append(&[7; 5_000]).unwrap_err();
        assert!(matches!(error, ArchiveError::DiskBudget { .. }), "{error}");
        assert_eq!(budget.used(), 6_000, "a refused append counts nothing");
        assert_eq!(spill.len(), 6_000, "and writes nothing");
        // Through `io::Write` (serialisers, encoders) the refusal comes back as the same error.
        let io = spill.write_all(&[7; 5_000]).unwrap_err();
        let error = from_io(io, |_| ArchiveError::Internal("lost".into()));
        assert!(matches!(error, ArchiveError::DiskBudget { .. }), "{error}");
        let mut reader = spill.into_reader().unwrap();
        assert_eq!(budget.used(), 6_000, "counted while it can still be read");
        assert_eq!(reader.next_chunk(100_000).unwrap().unwrap().len(), 6_000);
        drop(reader);
        assert_eq!(budget.used(), 0);
        let other = from_io(std::io::Error::other("disk"), |e| {
            ArchiveError::Internal(e.to_string())
        });
        assert!(matches!(other, ArchiveError::Internal(_)), "{other}");
    }

    #[test]
    fn a_full_disk_says_tmpdir_whatever_wrote() {
        // ENOSPC, as a serialiser or an encoder writing to a spill on a full disk sees it.
        let full = std::io::Error::from_raw_os_error(28);
        let error = from_io(full, |e| {
            ArchiveError::Internal(format!("writing a directory listing: {e}"))
        });
        let text = error.to_string();
        assert!(
            text.contains("TMPDIR") && text.contains("No space left on device"),
            "{text}"
        );
    }

    #[test]
    fn a_full_disk_is_recognised_inside_the_on_disk_tables_errors() {
        // The membership history's table (redb) wraps the OS error in its own.
        let full = redb::StorageError::from(std::io::Error::from_raw_os_error(28));
        assert!(is_disk_full(&full));
        let text = full_disk_error(&full).to_string();
        assert!(text.contains("TMPDIR"), "{text}");
        let other = redb::StorageError::from(std::io::Error::other("checksum"));
        assert!(!is_disk_full(&other));
    }

    #[test]
    fn an_empty_spill_reads_nothing() {
        let mut reader = Spill::new().unwrap().into_reader().unwrap();
        assert!(reader.next_chunk(10).unwrap().is_none());
    }
}
