//! A streaming ZIP writer built for what readers accept, not for generality.
//!
//! Each entry is compressed whole in memory (entries are bounded: day files are split into
//! parts), so its sizes and CRC are known before its local header is written: no data
//! descriptors, which Java's `ZipInputStream` mishandles, and every entry deflated. Entries are
//! made — serialised by the caller's closure ([`ZipWriter::add_with`]) and compressed — on
//! blocking threads, one per configured thread at a time, queued within a count and a byte
//! bound, and written in the order added, so rendering uses every core while the output stays a
//! single ordered stream. ZIP64 records are written only
//! where needed: a central-directory offset past 4 GiB, or more than 65,535 entries.
//!
//! Determinism: names, contents and their order decide the bytes; every timestamp is fixed at
//! 1980-01-01 00:00, the DOS epoch.
//!
//! Memory: only the entries queued and being made (bounded). Central-directory records go to a spill file as
//! entries are written and are streamed back by `finish`, and an entry too large for memory (the
//! manifest of a many-file export) is compressed from spill files into a spill file, so memory
//! does not grow with the number of entries.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::write::DeflateEncoder;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::spill::{Spill, SpillReader};
use crate::{ArchiveError, DiskBudget};

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

/// Where an entry's deflated bytes are.
enum Deflated {
    Memory(Vec<u8>),
    Spilled(SpillReader),
}

impl Deflated {
    fn len(&self) -> u64 {
        match self {
            Self::Memory(bytes) => bytes.len() as u64,
            Self::Spilled(reader) => reader.remaining(),
        }
    }
}

/// One part of an entry assembled from pieces (see [`ZipWriter::add_parts`]).
#[derive(Debug)]
pub enum Part {
    Bytes(Bytes),
    Spill(Spill),
}

/// Entries queued per compression thread, beyond those being made.
pub const QUEUED_PER_THREAD: usize = 16;

/// Spill files are copied and read back in chunks of this size.
const CHUNK: usize = 1 << 20;

const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1; // 1980-01-01
const FLAG_UTF8: u16 = 1 << 11;
const DEFLATE: u16 = 8;

pub struct ZipWriter<S: Sink> {
    sink: S,
    offset: u64,
    /// Central-directory records, spilled as entries are written (created with the first).
    central: Option<Spill>,
    entries: u64,
    /// Entries being made, in the order added, with the bytes each is counted for.
    pending: VecDeque<(JoinHandle<Result<Compressed, ArchiveError>>, usize)>,
    /// Entries queued at most (made as threads free up).
    max_pending: usize,
    /// One permit per thread that may make an entry at once; taken in the order added.
    workers: Arc<Semaphore>,
    /// Bytes counted for the pending entries, and the most they may be counted for.
    pending_bytes: usize,
    max_pending_bytes: usize,
    level: u32,
    written: Vec<EntryInfo>,
    /// What the writer's spill files count against.
    disk: DiskBudget,
}

impl<S: Sink> std::fmt::Debug for ZipWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipWriter")
            .field("offset", &self.offset)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl<S: Sink> ZipWriter<S> {
    /// `level` is the deflate level (0–9); `threads` how many entries are made (serialised,
    /// compressed) at once. Up to [`QUEUED_PER_THREAD`] entries per thread wait their turn, so
    /// the caller goes on while a burst of entries is made (bound their bytes with
    /// [`with_bytes_in_flight`](Self::with_bytes_in_flight)).
    pub fn new(sink: S, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        Self {
            sink,
            offset: 0,
            central: None,
            entries: 0,
            pending: VecDeque::new(),
            max_pending: threads * QUEUED_PER_THREAD,
            workers: Arc::new(Semaphore::new(threads)),
            pending_bytes: 0,
            max_pending_bytes: usize::MAX,
            level: level.min(9),
            written: Vec::new(),
            disk: DiskBudget::unlimited(),
        }
    }

    /// Counts the writer's temporary files (central directory, entries compressed from spill
    /// files) against `budget`, the export's; unlimited without it.
    pub fn with_disk_budget(mut self, budget: DiskBudget) -> Self {
        self.disk = budget;
        self
    }

    /// The budget the writer's temporary files count against (for the export's others).
    pub fn disk_budget(&self) -> &DiskBudget {
        &self.disk
    }

    /// Bounds the bytes of entries being made at once (an entry made alone may pass it).
    #[must_use]
    pub fn with_bytes_in_flight(mut self, bytes: usize) -> Self {
        self.max_pending_bytes = bytes.max(1);
        self
    }

    /// Bytes written to the sink so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Entries written to the sink so far.
    pub fn entry_count(&self) -> u64 {
        self.entries
    }

    /// The entries written since the last call, in order, with their sizes and SHA-256.
    pub fn take_written(&mut self) -> Vec<EntryInfo> {
        std::mem::take(&mut self.written)
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
        let bytes = data.len();
        self.make_room(bytes).await?;
        let task = self.spawn(move || compress(name, &data, level));
        self.pending.push_back((task, bytes));
        self.pending_bytes += bytes;
        Ok(())
    }

    /// Queues an entry whose content `make` produces on the compression thread (serialising
    /// it there, off the caller's task). `estimate` is about its size; an entry in flight
    /// holds its content and its deflated bytes, so it is counted twice that against
    /// [`with_bytes_in_flight`](Self::with_bytes_in_flight). Written in the order added.
    pub async fn add_with<F>(
        &mut self,
        name: String,
        estimate: usize,
        make: F,
    ) -> Result<(), ArchiveError>
    where
        F: FnOnce() -> Result<Vec<u8>, ArchiveError> + Send + 'static,
    {
        let level = self.level;
        let bytes = estimate.saturating_mul(2);
        self.make_room(bytes).await?;
        let task = self.spawn(move || {
            let data = make()?;
            if data.len() > MAX_ENTRY_BYTES {
                return Err(ArchiveError::EntryTooLarge {
                    name,
                    size: data.len() as u64,
                });
            }
            compress(name, &data, level)
        });
        self.pending.push_back((task, bytes));
        self.pending_bytes += bytes;
        Ok(())
    }

    /// Runs `job` on a blocking thread once a worker permit is free (at once when one is).
    fn spawn<F>(&self, job: F) -> JoinHandle<Result<Compressed, ArchiveError>>
    where
        F: FnOnce() -> Result<Compressed, ArchiveError> + Send + 'static,
    {
        let joined = |task: Result<Result<Compressed, ArchiveError>, tokio::task::JoinError>| {
            task.map_err(|e| ArchiveError::Internal(format!("compression task: {e}")))?
        };
        if let Ok(permit) = self.workers.clone().try_acquire_owned() {
            return tokio::task::spawn_blocking(move || {
                let _permit = permit;
                job()
            });
        }
        let workers = self.workers.clone();
        tokio::spawn(async move {
            let permit = workers
                .acquire_owned()
                .await
                .map_err(|e| ArchiveError::Internal(format!("compression workers: {e}")))?;
            joined(
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    job()
                })
                .await,
            )
        })
    }

    /// Writes queued entries until one more of `bytes` fits the bounds.
    async fn make_room(&mut self, bytes: usize) -> Result<(), ArchiveError> {
        while !self.pending.is_empty()
            && (self.pending.len() >= self.max_pending
                || self.pending_bytes.saturating_add(bytes) > self.max_pending_bytes)
        {
            self.write_next().await?;
        }
        Ok(())
    }

    async fn write_next(&mut self) -> Result<(), ArchiveError> {
        let Some((task, bytes)) = self.pending.pop_front() else {
            return Ok(());
        };
        self.pending_bytes -= bytes;
        let entry = task
            .await
            .map_err(|e| ArchiveError::Internal(format!("compression task: {e}")))??;
        let info = EntryInfo {
            name: entry.name,
            size: entry.size,
            sha256: entry.sha256,
        };
        self.write_entry(info, entry.crc, Deflated::Memory(entry.deflated))
            .await
    }

    /// Adds an entry assembled from `parts` in order, after every queued entry. It is compressed
    /// from and into spill files on a blocking thread, so its size does not count against memory.
    pub async fn add_parts(&mut self, name: String, parts: Vec<Part>) -> Result<(), ArchiveError> {
        self.flush().await?;
        let (level, disk) = (self.level, self.disk.clone());
        let (crc, size, sha256, deflated) =
            tokio::task::spawn_blocking(move || compress_parts(parts, level, &disk))
                .await
                .map_err(|e| ArchiveError::Internal(format!("compression task: {e}")))??;
        if size > MAX_ENTRY_BYTES as u64 {
            return Err(ArchiveError::EntryTooLarge { name, size });
        }
        let info = EntryInfo { name, size, sha256 };
        self.write_entry(info, crc, Deflated::Spilled(deflated))
            .await
    }

    async fn write_entry(
        &mut self,
        info: EntryInfo,
        crc: u32,
        deflated: Deflated,
    ) -> Result<(), ArchiveError> {
        let too_large = || ArchiveError::EntryTooLarge {
            name: info.name.clone(),
            size: info.size,
        };
        let compressed = u32::try_from(deflated.len()).map_err(|_| too_large())?;
        let size = u32::try_from(info.size).map_err(|_| too_large())?;
        let mut header = BytesMut::with_capacity(30 + info.name.len());
        header.put_u32_le(0x0403_4b50);
        header.put_u16_le(20); // version needed: 2.0 (deflate)
        header.put_u16_le(FLAG_UTF8);
        header.put_u16_le(DEFLATE);
        header.put_u16_le(DOS_TIME);
        header.put_u16_le(DOS_DATE);
        header.put_u32_le(crc);
        header.put_u32_le(compressed);
        header.put_u32_le(size);
        header.put_u16_le(name_len(&info.name)?);
        header.put_u16_le(0);
        header.put_slice(info.name.as_bytes());
        let local_offset = self.offset;
        self.offset += header.len() as u64 + u64::from(compressed);
        self.sink.write(header.freeze()).await?;
        match deflated {
            Deflated::Memory(bytes) => self.sink.write(Bytes::from(bytes)).await?,
            Deflated::Spilled(mut reader) => {
                while let Some(chunk) = reader.next_chunk(CHUNK)? {
                    self.sink.write(chunk).await?;
                }
            }
        }
        let record = central_record(&info.name, crc, compressed, size, local_offset)?;
        let central = match &mut self.central {
            Some(spill) => spill,
            None => self.central.insert(Spill::with_budget(&self.disk)?),
        };
        central.append(&record)?;
        self.entries += 1;
        self.written.push(info);
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
    /// the archive's size and its number of entries.
    pub async fn finish(mut self) -> Result<(S, u64, u64), ArchiveError> {
        self.flush().await?;
        let cd_offset = self.offset;
        if let Some(central) = self.central.take() {
            let mut reader = central.into_reader()?;
            while let Some(chunk) = reader.next_chunk(CHUNK)? {
                self.offset += chunk.len() as u64;
                self.sink.write(chunk).await?;
            }
        }
        let cd_size = self.offset - cd_offset;
        let entries = self.entries;

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
        Ok((self.sink, self.offset, entries))
    }
}

/// One central-directory record; ZIP64 extra field only for an offset past 4 GiB.
fn central_record(
    name: &str,
    crc: u32,
    compressed: u32,
    size: u32,
    offset: u64,
) -> Result<BytesMut, ArchiveError> {
    let zip64 = offset >= u64::from(u32::MAX);
    let mut cd = BytesMut::with_capacity(46 + name.len() + 12);
    cd.put_u32_le(0x0201_4b50);
    cd.put_u16_le((3 << 8) | 45); // made by: Unix, spec 4.5
    cd.put_u16_le(if zip64 { 45 } else { 20 });
    cd.put_u16_le(FLAG_UTF8);
    cd.put_u16_le(DEFLATE);
    cd.put_u16_le(DOS_TIME);
    cd.put_u16_le(DOS_DATE);
    cd.put_u32_le(crc);
    cd.put_u32_le(compressed);
    cd.put_u32_le(size);
    cd.put_u16_le(name_len(name)?);
    cd.put_u16_le(if zip64 { 12 } else { 0 });
    cd.put_u16_le(0); // comment
    cd.put_u16_le(0); // disk
    cd.put_u16_le(0); // internal attributes
    cd.put_u32_le(0o100_644 << 16); // a regular file, rw-r--r--
    cd.put_u32_le(if zip64 { u32::MAX } else { offset as u32 });
    cd.put_slice(name.as_bytes());
    if zip64 {
        cd.put_u16_le(0x0001); // ZIP64 extended information
        cd.put_u16_le(8);
        cd.put_u64_le(offset);
    }
    Ok(cd)
}

/// Deflates `parts`, in order, into a spill file; returns the CRC, the uncompressed size, its
/// SHA-256 and the deflated bytes to read back.
fn compress_parts(
    parts: Vec<Part>,
    level: u32,
    disk: &DiskBudget,
) -> Result<(u32, u64, String, SpillReader), ArchiveError> {
    let deflate_error = |e: std::io::Error| {
        crate::spill::from_io(e, |e| ArchiveError::Internal(format!("deflate: {e}")))
    };
    let mut encoder = DeflateEncoder::new(Spill::with_budget(disk)?, Compression::new(level));
    let (mut crc, mut sha, mut size) = (crc32fast::Hasher::new(), Sha256::new(), 0u64);
    let mut take = |bytes: &[u8], encoder: &mut DeflateEncoder<Spill>| {
        crc.update(bytes);
        sha.update(bytes);
        size += bytes.len() as u64;
        encoder.write_all(bytes).map_err(deflate_error)
    };
    for part in parts {
        match part {
            Part::Bytes(bytes) => take(&bytes, &mut encoder)?,
            Part::Spill(spill) => {
                let mut reader = spill.into_reader()?;
                while let Some(chunk) = reader.next_chunk(CHUNK)? {
                    take(&chunk, &mut encoder)?;
                }
            }
        }
    }
    let deflated = encoder.finish().map_err(deflate_error)?.into_reader()?;
    Ok((crc.finalize(), size, hex::encode(sha.finalize()), deflated))
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
        let written = writer.take_written();
        let (bytes, size, entries) = writer.finish().await.unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(entries, 20);
        assert!(
            written.len() < 20,
            "the last queued entries are written by finish: {}",
            written.len()
        );
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
    async fn an_entry_assembled_from_spill_files_round_trips_in_order() {
        let mut writer = ZipWriter::new(Vec::new(), 6, 2);
        writer
            .add("first.json".into(), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let mut middle = Spill::new().unwrap();
        let mut expected = b"head,".to_vec();
        for i in 0..50_000 {
            let line = format!("line {i},");
            middle.append(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        expected.extend_from_slice(b"tail");
        writer
            .add_parts(
                "big.txt".into(),
                vec![
                    Part::Bytes(Bytes::from_static(b"head,")),
                    Part::Spill(middle),
                    Part::Bytes(Bytes::from_static(b"tail")),
                ],
            )
            .await
            .unwrap();
        let written = writer.take_written();
        assert_eq!(written.len(), 2, "queued entries are written first");
        assert_eq!(written[1].size, expected.len() as u64);
        assert_eq!(written[1].sha256, hex::encode(Sha256::digest(&expected)));
        let (bytes, _, entries) = writer.finish().await.unwrap();
        assert_eq!(entries, 2);
        let read = crate::verify::read_entries(&bytes).unwrap();
        assert_eq!(read[0].0, "first.json");
        assert_eq!(read[1].0, "big.txt");
        assert_eq!(read[1].1, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_in_flight_are_bounded_by_bytes_and_made_on_the_workers() {
        // Room for one entry of 600 bytes (counted twice) at a time, whatever the threads.
        let mut writer = ZipWriter::new(Vec::new(), 6, 4).with_bytes_in_flight(1_500);
        let mut expected = Vec::new();
        for i in 0..10 {
            let body = format!("{i:03}").repeat(200);
            expected.push(body.clone());
            writer
                .add_with(format!("f{i}"), 600, move || Ok(body.into_bytes()))
                .await
                .unwrap();
            assert_eq!(writer.pending.len(), 1, "one entry of its bytes in flight");
            assert_eq!(writer.take_written().len(), usize::from(i > 0));
        }
        let (bytes, _, entries) = writer.finish().await.unwrap();
        assert_eq!(entries, 10);
        let read = crate::verify::read_entries(&bytes).unwrap();
        let bodies: Vec<String> = read
            .into_iter()
            .map(|(_, body)| String::from_utf8(body).unwrap())
            .collect();
        assert_eq!(bodies, expected, "in the order added");
    }

    #[tokio::test]
    async fn an_error_making_an_entry_fails_the_archive() {
        let mut writer = ZipWriter::new(Vec::new(), 6, 1);
        writer
            .add_with("big".into(), 1, || {
                Err(ArchiveError::EntryTooLarge {
                    name: "big".into(),
                    size: u64::MAX,
                })
            })
            .await
            .unwrap();
        let error = writer.finish().await.unwrap_err();
        assert!(error.to_string().contains("big"), "{error}");
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
