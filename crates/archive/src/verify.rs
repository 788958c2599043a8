//! Reading an archive back and checking it against its `manifest.json`: every listed file
//! present with its size and SHA-256, nothing unlisted, every CRC right, and the manifest's
//! counts borne out by the day files' content (`reconcile.rs`).
//!
//! The reader handles what [`crate::zip`] writes (deflated or stored entries, sizes in the
//! central directory, ZIP64 where present); it reads entry by entry from a file, so verifying
//! a large archive does not load it whole.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use flate2::read::DeflateDecoder;
use sha2::{Digest, Sha256};

use crate::ArchiveError;
use crate::manifest::Manifest;
use crate::reconcile::{Reconciler, is_day_file};

/// One central-directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub method: u16,
    pub crc: u32,
    pub compressed: u64,
    pub size: u64,
    pub offset: u64,
}

fn bad(reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(reason.into())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Lists the entries of a ZIP archive from its central directory.
pub fn entries<R: Read + Seek>(reader: &mut R) -> Result<Vec<Entry>, ArchiveError> {
    let io = |e: std::io::Error| bad(format!("read: {e}"));
    let len = reader.seek(SeekFrom::End(0)).map_err(io)?;
    let tail_len = len.min(66_000);
    reader.seek(SeekFrom::Start(len - tail_len)).map_err(io)?;
    let mut tail = vec![0u8; tail_len as usize];
    reader.read_exact(&mut tail).map_err(io)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(&tail, i) == 0x0605_4b50)
        .ok_or_else(|| bad("no end of central directory record"))?;
    let mut count = u64::from(u16_at(&tail, eocd + 10));
    let mut cd_size = u64::from(u32_at(&tail, eocd + 12));
    let mut cd_offset = u64::from(u32_at(&tail, eocd + 16));
    if eocd >= 20 && u32_at(&tail, eocd - 20) == 0x0706_4b50 {
        let zip64_at = u64_at(&tail, eocd - 20 + 8);
        reader.seek(SeekFrom::Start(zip64_at)).map_err(io)?;
        let mut record = [0u8; 56];
        reader.read_exact(&mut record).map_err(io)?;
        if u32_at(&record, 0) != 0x0606_4b50 {
            return Err(bad("ZIP64 locator points at no ZIP64 end record"));
        }
        count = u64_at(&record, 32);
        cd_size = u64_at(&record, 40);
        cd_offset = u64_at(&record, 48);
    }
    reader.seek(SeekFrom::Start(cd_offset)).map_err(io)?;
    let mut cd =
        vec![0u8; usize::try_from(cd_size).map_err(|_| bad("central directory too large"))?];
    reader.read_exact(&mut cd).map_err(io)?;
    let mut at = 0usize;
    let mut out = Vec::new();
    for _ in 0..count {
        if at + 46 > cd.len() || u32_at(&cd, at) != 0x0201_4b50 {
            return Err(bad(format!("bad central directory record at {at}")));
        }
        let name_len = usize::from(u16_at(&cd, at + 28));
        let extra_len = usize::from(u16_at(&cd, at + 30));
        let comment_len = usize::from(u16_at(&cd, at + 32));
        let name_end = at + 46 + name_len;
        let name = String::from_utf8(
            cd.get(at + 46..name_end)
                .ok_or_else(|| bad("truncated name"))?
                .to_vec(),
        )
        .map_err(|_| bad("entry name is not UTF-8"))?;
        let mut entry = Entry {
            name,
            method: u16_at(&cd, at + 10),
            crc: u32_at(&cd, at + 16),
            compressed: u64::from(u32_at(&cd, at + 20)),
            size: u64::from(u32_at(&cd, at + 24)),
            offset: u64::from(u32_at(&cd, at + 42)),
        };
        // ZIP64 extra: the fields that are all ones, in order size, compressed, offset.
        let extra = cd
            .get(name_end..name_end + extra_len)
            .ok_or_else(|| bad("truncated extra"))?;
        let mut e = 0;
        while e + 4 <= extra.len() {
            let (id, len) = (u16_at(extra, e), usize::from(u16_at(extra, e + 2)));
            if id == 0x0001 {
                let mut f = e + 4;
                for field in [&mut entry.size, &mut entry.compressed, &mut entry.offset] {
                    if *field == u64::from(u32::MAX) && f + 8 <= e + 4 + len {
                        *field = u64_at(extra, f);
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        out.push(entry);
        at = name_end + extra_len + comment_len;
    }
    Ok(out)
}

/// Reads one entry's content, checking its CRC, and returns (size, SHA-256 hex) after feeding
/// every byte to `sink`.
pub fn read_entry<R: Read + Seek>(
    reader: &mut R,
    entry: &Entry,
    mut sink: impl FnMut(&[u8]),
) -> Result<(u64, String), ArchiveError> {
    let io = |e: std::io::Error| bad(format!("{}: {e}", entry.name));
    reader.seek(SeekFrom::Start(entry.offset)).map_err(io)?;
    let mut local = [0u8; 30];
    reader.read_exact(&mut local).map_err(io)?;
    if u32_at(&local, 0) != 0x0403_4b50 {
        return Err(bad(format!(
            "{}: no local header at {}",
            entry.name, entry.offset
        )));
    }
    let skip = u64::from(u16_at(&local, 26)) + u64::from(u16_at(&local, 28));
    reader.seek(SeekFrom::Current(skip as i64)).map_err(io)?;
    let raw = reader.take(entry.compressed);
    let mut content: Box<dyn Read + '_> = match entry.method {
        8 => Box::new(DeflateDecoder::new(raw)),
        0 => Box::new(raw),
        other => return Err(bad(format!("{}: compression method {other}", entry.name))),
    };
    let (mut crc, mut sha, mut size) = (crc32fast::Hasher::new(), Sha256::new(), 0u64);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = content.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        crc.update(&buffer[..n]);
        sha.update(&buffer[..n]);
        sink(&buffer[..n]);
        size += n as u64;
    }
    if crc.finalize() != entry.crc || size != entry.size {
        return Err(bad(format!(
            "{}: CRC or size does not match the central directory",
            entry.name
        )));
    }
    Ok((size, hex::encode(sha.finalize())))
}

/// Every entry's name and content, for tests of small archives.
pub fn read_entries(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let mut cursor = std::io::Cursor::new(bytes);
    let mut out = Vec::new();
    for entry in entries(&mut cursor)? {
        let mut content = Vec::new();
        read_entry(&mut cursor, &entry, |b| content.extend_from_slice(b))?;
        out.push((entry.name, content));
    }
    Ok(out)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// Day files recounted and reconciled with the manifest's counts.
    pub day_files_counted: usize,
    pub problems: Vec<String>,
}

/// Checks an archive against the `manifest.json` inside it: files, sizes, hashes, CRCs, and
/// that each day file holds the events the manifest counts for it.
pub fn verify<R: Read + Seek>(reader: &mut R) -> Result<Report, ArchiveError> {
    let all = entries(reader)?;
    let manifest_entry = all
        .iter()
        .find(|e| e.name.ends_with("/manifest.json") && e.name.matches('/').count() == 1)
        .ok_or_else(|| bad("no manifest.json in the archive's top-level folder"))?
        .clone();
    let mut manifest_bytes = Vec::new();
    read_entry(reader, &manifest_entry, |b| {
        manifest_bytes.extend_from_slice(b)
    })?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| bad(format!("manifest.json is not a manifest: {e}")))?;
    let root = manifest_entry.name.trim_end_matches("manifest.json");
    let mut listed: BTreeMap<String, (u64, String)> = manifest
        .files
        .iter()
        .map(|f| (format!("{root}{}", f.path), (f.size, f.sha256.clone())))
        .collect();
    let mut report = Report {
        files_checked: 0,
        bytes_checked: 0,
        day_files_counted: 0,
        problems: Vec::new(),
    };
    let mut reconciler = Reconciler::new(&manifest);
    for entry in all.iter().filter(|e| e.name != manifest_entry.name) {
        let path = entry.name.strip_prefix(root).unwrap_or(&entry.name);
        let day_file = is_day_file(path);
        let mut content = Vec::new();
        let read = read_entry(reader, entry, |b| {
            if day_file {
                content.extend_from_slice(b);
            }
        });
        if read.is_ok() && day_file {
            reconciler.add(path, &content, &mut report.problems);
            report.day_files_counted += 1;
        }
        match read {
            Err(error) => report.problems.push(error.to_string()),
            Ok((size, sha)) => match listed.remove(&entry.name) {
                None => report
                    .problems
                    .push(format!("{}: not listed in the manifest", entry.name)),
                Some((want_size, want_sha)) if want_size != size || want_sha != sha => {
                    report.problems.push(format!(
                        "{}: size or SHA-256 differs from the manifest",
                        entry.name
                    ))
                }
                Some(_) => {
                    report.files_checked += 1;
                    report.bytes_checked += size;
                }
            },
        }
    }
    for missing in listed.keys() {
        report
            .problems
            .push(format!("{missing}: listed in the manifest but missing"));
    }
    reconciler.finish(&manifest, &mut report.problems);
    Ok(report)
}
