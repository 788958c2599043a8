//! A streaming ZIP writer built for what readers accept, not for generality.
//!
//! Each entry is compressed whole in memory (entries are bounded: day files are split into
//! parts), so its sizes and CRC are known before its local header is written: no data
//! descriptors, which Java's `ZipInputStream` mishandles, and every entry deflated. Entries are
//! compressed on blocking threads, a few at a time, and written in order, so compression uses
//! every core while the output stays a single ordered stream. ZIP64 records are written only
//! where needed: a central-directory offset past 4 GiB, or more than 65,535 entries.
//!
//! Determinism: names, contents and their order decide the bytes; every timestamp is fixed at
//! 1980-01-01 00:00, the DOS epoch.
//!
//! Memory: the entries being compressed, plus one central-directory record per entry (a name and
//! a few numbers) until `finish` — as with every ZIP writer, that part grows with the number of
//! entries, not with their size.

use std::collections::VecDeque;
use std::io::Write;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::write::DeflateEncoder;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::ArchiveError;

/// Where archive bytes go, in order.
#[async_trait]
pub trait Sink: Send {
    async fn write(&mut self, bytes: Bytes) -> Result<(), ArchiveError>;
}

/// A sink in memory, for tests and small archives.
#[async_trait]
impl Sink for Vec<u8> {
    async fn write(&mut self, bytes: Bytes) -> Result<(), ArchiveError> {
        self.extend_from_slice(&bytes);
        Ok(())
    }
}

/// The largest entry accepted, uncompressed (local headers carry 32-bit sizes).
pub const MAX_ENTRY_BYTES: usize = u32::MAX as usize - 1;

/// What the writer reports of each entry (for the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

struct Compressed {
    name: String,
    crc: u32,
    size: u64,
    sha256: String,
    deflated: Vec<u8>,
}

struct CentralRecord {
    name: String,
    crc: u32,
    compressed: u32,
    size: u32,
    offset: u64,
}

const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1; // 1980-01-01
const FLAG_UTF8: u16 = 1 << 11;
const DEFLATE: u16 = 8;

pub struct ZipWriter<S: Sink> {
    sink: S,
    offset: u64,
    central: Vec<CentralRecord>,
    pending: VecDeque<JoinHandle<Result<Compressed, ArchiveError>>>,
    in_flight: usize,
    level: u32,
    written: Vec<EntryInfo>,
}

impl<S: Sink> std::fmt::Debug for ZipWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipWriter")
            .field("offset", &self.offset)
            .field("entries", &self.central.len())
            .finish_non_exhaustive()
    }
}

impl<S: Sink> ZipWriter<S> {
    /// `level` is the deflate level (0–9); `in_flight` how many entries compress at once.
    pub fn new(sink: S, level: u32, in_flight: usize) -> Self {
        Self {
            sink,
            offset: 0,
            central: Vec::new(),
            pending: VecDeque::new(),
            in_flight: in_flight.max(1),
            level: level.min(9),
            written: Vec::new(),
        }
    }

    /// Bytes written to the sink so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Entries written so far, in order, with their sizes and SHA-256.
    pub fn entries(&self) -> &[EntryInfo] {
        &self.written
    }

    /// Queues an entry. It is compressed in the background and written in the order added.
    pub async fn add(&mut self, name: String, data: Bytes) -> Result<(), ArchiveError> {
        if data.len() > MAX_ENTRY_BYTES {
            return Err(ArchiveError::EntryTooLarge {
                name,
                size: data.len() as u64,
            });
        }
        let level = self.level;
        self.pending.push_back(tokio::task::spawn_blocking(move || {
            compress(name, &data, level)
        }));
        while self.pending.len() > self.in_flight {
            self.write_next().await?;
        }
        Ok(())
    }

    async fn write_next(&mut self) -> Result<(), ArchiveError> {
        let Some(task) = self.pending.pop_front() else {
            return Ok(());
        };
        let entry = task
            .await
            .map_err(|e| ArchiveError::Internal(format!("compression task: {e}")))??;
        let compressed =
            u32::try_from(entry.deflated.len()).map_err(|_| ArchiveError::EntryTooLarge {
                name: entry.name.clone(),
                size: entry.size,
            })?;
        let size = u32::try_from(entry.size).map_err(|_| ArchiveError::EntryTooLarge {
            name: entry.name.clone(),
            size: entry.size,
        })?;
        let mut header = BytesMut::with_capacity(30 + entry.name.len());
        header.put_u32_le(0x0403_4b50);
        header.put_u16_le(20); // version needed: 2.0 (deflate)
        header.put_u16_le(FLAG_UTF8);
        header.put_u16_le(DEFLATE);
        header.put_u16_le(DOS_TIME);
        header.put_u16_le(DOS_DATE);
        header.put_u32_le(entry.crc);
        header.put_u32_le(compressed);
        header.put_u32_le(size);
        header.put_u16_le(name_len(&entry.name)?);
        header.put_u16_le(0);
        header.put_slice(entry.name.as_bytes());
        let local_offset = self.offset;
        self.offset += header.len() as u64 + entry.deflated.len() as u64;
        self.sink.write(header.freeze()).await?;
        self.sink.write(Bytes::from(entry.deflated)).await?;
        self.written.push(EntryInfo {
            name: entry.name.clone(),
            size: entry.size,
            sha256: entry.sha256,
        });
        self.central.push(CentralRecord {
            name: entry.name,
            crc: entry.crc,
            compressed,
            size,
            offset: local_offset,
        });
        Ok(())
    }

    /// Writes every queued entry now, so [`entries`](Self::entries) lists everything added.
    pub async fn flush(&mut self) -> Result<(), ArchiveError> {
        while !self.pending.is_empty() {
            self.write_next().await?;
        }
        Ok(())
    }

    /// Writes every queued entry, the central directory and the end records; returns the sink,
    /// the archive's size and the entries written.
    pub async fn finish(mut self) -> Result<(S, u64, Vec<EntryInfo>), ArchiveError> {
        self.flush().await?;
        let cd_offset = self.offset;
        let mut cd = BytesMut::new();
        for record in &self.central {
            let zip64 = record.offset >= u64::from(u32::MAX);
            cd.put_u32_le(0x0201_4b50);
            cd.put_u16_le((3 << 8) | 45); // made by: Unix, spec 4.5
            cd.put_u16_le(if zip64 { 45 } else { 20 });
            cd.put_u16_le(FLAG_UTF8);
            cd.put_u16_le(DEFLATE);
            cd.put_u16_le(DOS_TIME);
            cd.put_u16_le(DOS_DATE);
            cd.put_u32_le(record.crc);
            cd.put_u32_le(record.compressed);
            cd.put_u32_le(record.size);
            cd.put_u16_le(name_len(&record.name)?);
            cd.put_u16_le(if zip64 { 12 } else { 0 });
            cd.put_u16_le(0); // comment
            cd.put_u16_le(0); // disk
            cd.put_u16_le(0); // internal attributes
            cd.put_u32_le(0o100_644 << 16); // a regular file, rw-r--r--
            cd.put_u32_le(if zip64 {
                u32::MAX
            } else {
                record.offset as u32
            });
            cd.put_slice(record.name.as_bytes());
            if zip64 {
                cd.put_u16_le(0x0001); // ZIP64 extended information
                cd.put_u16_le(8);
                cd.put_u64_le(record.offset);
            }
            if cd.len() >= 1 << 20 {
                self.offset += cd.len() as u64;
                self.sink.write(cd.split().freeze()).await?;
            }
        }
        self.offset += cd.len() as u64;
        self.sink.write(cd.split().freeze()).await?;
        let cd_size = self.offset - cd_offset;
        let entries = self.central.len() as u64;

        let mut end = BytesMut::new();
        let needs_zip64 =
            entries >= 0xFFFF || cd_offset >= u64::from(u32::MAX) || cd_size >= u64::from(u32::MAX);
        if needs_zip64 {
            let zip64_end_offset = self.offset;
            end.put_u32_le(0x0606_4b50);
            end.put_u64_le(44);
            end.put_u16_le((3 << 8) | 45);
            end.put_u16_le(45);
            end.put_u32_le(0);
            end.put_u32_le(0);
            end.put_u64_le(entries);
            end.put_u64_le(entries);
            end.put_u64_le(cd_size);
            end.put_u64_le(cd_offset);
            end.put_u32_le(0x0706_4b50); // locator
            end.put_u32_le(0);
            end.put_u64_le(zip64_end_offset);
            end.put_u32_le(1);
        }
        end.put_u32_le(0x0605_4b50);
        end.put_u16_le(0);
        end.put_u16_le(0);
        let short_entries = u16::try_from(entries)
            .ok()
            .filter(|n| *n < 0xFFFF)
            .unwrap_or(0xFFFF);
        end.put_u16_le(short_entries);
        end.put_u16_le(short_entries);
        end.put_u32_le(
            u32::try_from(cd_size)
                .ok()
                .filter(|n| *n < u32::MAX)
                .unwrap_or(u32::MAX),
        );
        end.put_u32_le(
            u32::try_from(cd_offset)
                .ok()
                .filter(|n| *n < u32::MAX)
                .unwrap_or(u32::MAX),
        );
        end.put_u16_le(0);
        self.offset += end.len() as u64;
        self.sink.write(end.freeze()).await?;
        Ok((self.sink, self.offset, self.written))
    }
}

fn name_len(name: &str) -> Result<u16, ArchiveError> {
    u16::try_from(name.len())
        .map_err(|_| ArchiveError::Internal(format!("entry name too long: {name}")))
}

fn compress(name: String, data: &[u8], level: u32) -> Result<Compressed, ArchiveError> {
    let mut encoder = DeflateEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        Compression::new(level),
    );
    encoder
        .write_all(data)
        .map_err(|e| ArchiveError::Internal(format!("deflate: {e}")))?;
    let deflated = encoder
        .finish()
        .map_err(|e| ArchiveError::Internal(format!("deflate: {e}")))?;
    Ok(Compressed {
        name,
        crc: crc32fast::hash(data),
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
        deflated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_an_archive_that_round_trips_through_our_reader() {
        let mut writer = ZipWriter::new(Vec::new(), 6, 2);
        for i in 0..20 {
            let body = format!(
                "{{\"n\": {i}, \"text\": \"héllo {}\"}}",
                "x".repeat(i * 100)
            );
            writer
                .add(format!("export/dir/{i:03}.json"), Bytes::from(body))
                .await
                .unwrap();
        }
        let (bytes, size, entries) = writer.finish().await.unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(entries.len(), 20);
        let read = crate::verify::read_entries(&bytes).unwrap();
        assert_eq!(read.len(), 20);
        assert_eq!(read[3].0, "export/dir/003.json");
        assert!(
            String::from_utf8(read[3].1.clone())
                .unwrap()
                .contains("héllo")
        );
    }

    #[tokio::test]
    async fn the_same_entries_give_the_same_bytes() {
        let build = || async {
            let mut writer = ZipWriter::new(Vec::new(), 6, 3);
            for i in 0..10 {
                writer
                    .add(format!("f{i}"), Bytes::from(vec![b'a' + i as u8; 1000 * i]))
                    .await
                    .unwrap();
            }
            writer.finish().await.unwrap().0
        };
        assert_eq!(build().await, build().await);
    }
}
