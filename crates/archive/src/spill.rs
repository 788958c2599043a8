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

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use bytes::{Bytes, BytesMut};

use crate::ArchiveError;

const BUFFER: usize = 64 * 1024;

/// An append-only temporary file.
#[derive(Debug)]
pub struct Spill {
    file: BufWriter<File>,
    len: u64,
}

impl Spill {
    pub fn new() -> Result<Self, ArchiveError> {
        let file = tempfile::tempfile().map_err(spill_error)?;
        Ok(Self {
            file: BufWriter::with_capacity(BUFFER, file),
            len: 0,
        })
    }

    pub fn append(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
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
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| spill_error(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(spill_error)?;
        Ok(SpillReader {
            file,
            left: self.len,
        })
    }
}

impl Write for Spill {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.len += n as u64;
        Ok(n)
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

fn spill_error(error: std::io::Error) -> ArchiveError {
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
    fn an_empty_spill_reads_nothing() {
        let mut reader = Spill::new().unwrap().into_reader().unwrap();
        assert!(reader.next_chunk(10).unwrap().is_none());
    }
}
