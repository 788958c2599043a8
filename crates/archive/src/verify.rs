//! Reading an archive back and checking it against its `manifest.json`: every entry's CRC-32,
//! every listed file present once with its size and SHA-256, nothing unlisted, every name safe
//! and inside the archive's top-level folder, no two folders or files that are one where case
//! is ignored (Windows, macOS), and the manifest's counts borne out by the day files' content
//! (`reconcile.rs`) — or, in the EML and CSV formats, by the messages' and rows' (`eml.rs`,
//! `csv.rs`).
//!
//! The signature entry (`manifest.json.sig`) is the one file the manifest cannot list; its
//! content is handed back in the [`Report`] with the manifest's SHA-256, for
//! [`Report::check_signature`] against the public keys a verifier holds, and the manifest's
//! head with it for [`chain`], which checks scheduled archives follow one another.
//!
//! The archive is read with the zip-rs reader (the `zip` crate), which shares no code and no
//! assumptions with our writer (`crate::zip`): a writer bug that our own reader would mirror
//! (a wrong ZIP64 field, a local header that disagrees with the central directory) is caught
//! here, not read back as written. Entries are read one at a time from a `Read + Seek`, to
//! their end (zip-rs checks the CRC-32 there), so verifying an archive never holds it whole:
//! only the central directory, the manifest and one day file (a bounded part) at a time.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek};

use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::manifest::{EXPORT_FORMAT_VERSION, Manifest, ManifestHead};
use crate::reconcile::{Reconciler, is_day_file};
use crate::signing::{PublicKey, SIGNATURE_ENTRY, SigningError};
use crate::{ArchiveError, DataFormat};

pub mod chain;

const MANIFEST: &str = "manifest.json";

fn bad(reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(reason.into())
}

/// What reading one entry to its end found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRead {
    /// Uncompressed bytes read.
    pub size: u64,
    /// SHA-256 of those bytes, lowercase hex.
    pub sha256: String,
}

/// A ZIP archive opened with the zip-rs reader, read entry by entry in archive order.
///
/// Opening checks the whole structure: the central directory, no duplicate names, every local
/// header agreeing with its central-directory record, no overlapping entries and no local
/// header the central directory does not list.
pub struct ArchiveReader<R: Read + Seek> {
    zip: ZipArchive<R>,
}

impl<R: Read + Seek> std::fmt::Debug for ArchiveReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("entries", &self.zip.len())
            .finish_non_exhaustive()
    }
}

impl<R: Read + Seek> ArchiveReader<R> {
    /// Opens an archive; fails with [`ArchiveError::Invalid`] saying what is wrong with its
    /// structure.
    pub fn new(reader: R) -> Result<Self, ArchiveError> {
        let mut zip =
            ZipArchive::new(reader).map_err(|e| bad(format!("not a readable ZIP archive: {e}")))?;
        if zip.offset() != 0 {
            return Err(bad(format!(
                "{} bytes before the archive's first entry",
                zip.offset()
            )));
        }
        // zip-rs keeps one record per name; a second entry of the same name would be hidden
        // from everything below, so it fails the archive whole.
        if zip.has_duplicate_names() {
            return Err(bad(
                "duplicate entry names: the central directory lists the same name twice",
            ));
        }
        zip.validate_header_consistency().map_err(|e| {
            bad(format!(
                "local headers disagree with the central directory: {e}"
            ))
        })?;
        Ok(Self { zip })
    }

    /// How many entries the archive has.
    pub fn len(&self) -> usize {
        self.zip.len()
    }

    /// Whether the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.zip.is_empty()
    }

    /// The name of entry `index` (archive order); fails unless it is UTF-8.
    pub fn name(&self, index: usize) -> Result<String, ArchiveError> {
        let entry = self
            .zip
            .by_index_data(index)
            .map_err(|e| bad(format!("entry {index}: {e}")))?;
        String::from_utf8(entry.name_raw().to_vec()).map_err(|e| {
            bad(format!(
                "entry {index} ({}): its name is not UTF-8",
                shown(&String::from_utf8_lossy(e.as_bytes()))
            ))
        })
    }

    /// The name of entry `index` for messages: lossily decoded if it is not UTF-8.
    fn shown_name(&self, index: usize) -> String {
        self.zip.by_index_data(index).map_or_else(
            |_| format!("entry {index}"),
            |entry| shown(&String::from_utf8_lossy(entry.name_raw())),
        )
    }

    /// Reads entry `index` to its end, feeding every byte to `sink`; fails, naming the entry,
    /// when its CRC-32 or size disagrees with its content or its data cannot be inflated.
    pub fn read(
        &mut self,
        index: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<EntryRead, ArchiveError> {
        let name = self.shown_name(index);
        let mut file = self
            .zip
            .by_index(index)
            .map_err(|e| bad(format!("{name}: cannot be read: {e}")))?;
        let declared = file.size();
        let (mut sha, mut size) = (Sha256::new(), 0u64);
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // zip-rs checks the CRC-32 when the entry's data ends (a read of 0 bytes), and
            // fails a read that passes the declared size.
            let n = file.read(&mut buffer).map_err(|e| {
                if e.to_string().contains("checksum") {
                    bad(format!(
                        "{name}: CRC-32 mismatch, the content is not what was written"
                    ))
                } else {
                    bad(format!("{name}: content cannot be read: {e}"))
                }
            })?;
            if n == 0 {
                break;
            }
            sha.update(&buffer[..n]);
            sink(&buffer[..n]);
            size += n as u64;
        }
        if size != declared {
            return Err(bad(format!(
                "{name}: {size} bytes, the central directory says {declared}"
            )));
        }
        Ok(EntryRead {
            size,
            sha256: hex::encode(sha.finalize()),
        })
    }
}

/// Every entry's name and content, in archive order, for tests of small archives.
pub fn read_entries(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let mut archive = ArchiveReader::new(Cursor::new(bytes))?;
    let mut out = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let name = archive.name(index)?;
        let mut content = Vec::new();
        archive.read(index, |b| content.extend_from_slice(b))?;
        out.push((name, content));
    }
    Ok(out)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// Day files (JSON), messages (EML) or event files (CSV) recounted and reconciled with the
    /// manifest's counts.
    pub day_files_counted: usize,
    pub problems: Vec<String>,
    /// The manifest's head: the request, the schedule link and the signing key's id.
    pub head: ManifestHead,
    /// SHA-256 of `manifest.json` as read (lowercase hex): what the signature commits to.
    pub manifest_sha256: String,
    /// The content of `manifest.json.sig` when the archive has one (the first 64 bytes and
    /// one more at most: enough to tell a signature from something else).
    pub signature: Option<Vec<u8>>,
}

impl Report {
    /// Checks the manifest's signature with the key it names, picked from `keys`; returns that
    /// key's id. The archive's other files are covered through the manifest's hashes, which
    /// `verify` checked (see [`Report::problems`]).
    pub fn check_signature(&self, keys: &[PublicKey]) -> Result<String, SigningError> {
        crate::signing::check(
            self.head.signature.as_ref(),
            &self.manifest_sha256,
            self.signature.as_deref(),
            keys,
        )
    }
}

/// Why an entry's name is unsafe to extract, if it is: `..` or `.` or empty components, an
/// absolute path, a backslash or a control character.
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.starts_with('/') {
        return Some("an absolute path");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Some("an absolute path (drive letter)");
    }
    if name.contains('\\') {
        return Some("a backslash in the name");
    }
    if name.chars().any(char::is_control) {
        return Some("a control character in the name");
    }
    if name.split('/').any(|c| c == "..") {
        return Some("a `..` component");
    }
    if name.split('/').any(|c| c.is_empty() || c == ".") {
        return Some("an empty or `.` component");
    }
    None
}

/// Entries and folders whose names differ only in case: extracted where case is ignored
/// (Windows, macOS), they would be one folder or one file, mixing conversations or overwriting
/// a file. One problem per entry, for the shortest of its paths (folders first) that collides.
fn case_collisions(names: &[String], problems: &mut Vec<String>) {
    // Folded path → the path as first seen.
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for name in names {
        let ends = name
            .match_indices('/')
            .map(|(i, _)| i + 1)
            .chain(std::iter::once(name.len()));
        for end in ends {
            let path = &name[..end];
            let first = *seen.entry(crate::names::case_folded(path)).or_insert(path);
            if first != path {
                problems.push(format!(
                    "{}: {} and {} are one {} where case is ignored (Windows, macOS)",
                    shown(name),
                    shown(first),
                    shown(path),
                    if path.ends_with('/') {
                        "folder"
                    } else {
                        "file"
                    }
                ));
                break;
            }
        }
    }
}

/// A name as messages show it: control characters escaped, so a hostile name cannot rewrite
/// the terminal that prints the report.
fn shown(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What is wrong with the signature's form, whatever key checks it: a manifest naming a key
/// without the signature, or a signature the manifest does not name.
fn signature_problems(head: &ManifestHead, signature: Option<&[u8]>, problems: &mut Vec<String>) {
    // No key is needed to see these; a wrong signature needs the key (`check_signature`). A
    // signature of the wrong size was named when it was read.
    let error = match (&head.signature, signature) {
        (Some(info), None) => SigningError::MissingSignature {
            key_id: info.key_id.clone(),
        },
        (None, Some(_)) => SigningError::UnnamedKey,
        _ => return,
    };
    problems.push(error.to_string());
}

/// The reason of an `Invalid` error, without the "invalid archive: " every problem would share.
fn reason(error: ArchiveError) -> String {
    match error {
        ArchiveError::Invalid(reason) => reason,
        other => other.to_string(),
    }
}

/// The index of `<root>/manifest.json` and its root folder (with the trailing `/`).
fn find_manifest<R: Read + Seek>(
    archive: &ArchiveReader<R>,
) -> Result<(usize, String), ArchiveError> {
    let mut found: Vec<(usize, String)> = Vec::new();
    for index in 0..archive.len() {
        let Ok(name) = archive.name(index) else {
            continue;
        };
        if let Some((root, MANIFEST)) = name.split_once('/')
            && !root.is_empty()
        {
            found.push((index, format!("{root}/")));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(bad(format!(
            "no {MANIFEST} in a top-level folder of the archive"
        ))),
        _ => Err(bad(format!(
            "{MANIFEST} in several top-level folders: {}",
            found
                .iter()
                .map(|(_, root)| shown(root))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Checks an archive against the `manifest.json` inside it: names, CRCs, files, sizes, hashes,
/// and that each day file holds the events the manifest counts for it, and the manifest's
/// counts add up. A structure that cannot be read (not a ZIP, duplicate names, no manifest, a
/// manifest that is not one) is an error; everything else found is in the report's `problems`.
pub fn verify<R: Read + Seek>(reader: &mut R) -> Result<Report, ArchiveError> {
    let mut archive = ArchiveReader::new(reader)?;
    let (manifest_index, root) = find_manifest(&archive)?;
    let mut manifest_bytes = Vec::new();
    let manifest_read = archive.read(manifest_index, |b| manifest_bytes.extend_from_slice(b))?;
    let shown_root = shown(&root);
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| bad(format!("{shown_root}{MANIFEST} is not a manifest: {e}")))?;
    drop(manifest_bytes);

    let mut report = Report {
        files_checked: 0,
        bytes_checked: 0,
        day_files_counted: 0,
        problems: Vec::new(),
        head: manifest.head.clone(),
        manifest_sha256: manifest_read.sha256,
        signature: None,
    };
    let signature_name = format!("{root}{SIGNATURE_ENTRY}");
    let problems = &mut report.problems;
    if let Some(why) = unsafe_name(&format!("{root}{MANIFEST}")) {
        problems.push(format!("{shown_root}{MANIFEST}: unsafe entry name ({why})"));
    }
    let format = DataFormat::from_manifest_format(&manifest.head.format).unwrap_or_else(|| {
        problems.push(format!(
            "{MANIFEST}: format {:?}, not one of {:?}, {:?} or {:?}",
            manifest.head.format,
            DataFormat::Json.manifest_format(),
            DataFormat::Eml.manifest_format(),
            DataFormat::Csv.manifest_format(),
        ));
        DataFormat::Json
    });
    if !(1..=EXPORT_FORMAT_VERSION).contains(&manifest.head.format_version) {
        problems.push(format!(
            "{MANIFEST}: format_version {} is not one this verifier knows (1 to \
             {EXPORT_FORMAT_VERSION})",
            manifest.head.format_version
        ));
    }
    let mut listed: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for file in &manifest.files {
        if listed
            .insert(&file.path, (file.size, &file.sha256))
            .is_some()
        {
            problems.push(format!(
                "{MANIFEST}: lists {} twice in files",
                shown(&file.path)
            ));
        }
    }

    let names: Vec<String> = (0..archive.len())
        .filter_map(|i| archive.name(i).ok())
        .collect();
    case_collisions(&names, problems);
    drop(names);

    let mut reconciler = Reconciler::new(&manifest);
    // Folders by conversation, to find an EML message's conversation from its path.
    let folders: BTreeMap<String, String> = manifest
        .head
        .conversations
        .iter()
        .map(|c| (c.folder.clone(), c.conversation_id.clone()))
        .collect();
    for index in (0..archive.len()).filter(|&i| i != manifest_index) {
        let name = match archive.name(index) {
            Ok(name) => name,
            Err(error) => {
                problems.push(reason(error));
                archive.shown_name(index)
            }
        };
        // Names go into messages escaped; a name that needs it is a problem of its own.
        let (raw_name, name) = (name.clone(), shown(&name));
        let safe = match unsafe_name(&raw_name) {
            Some(why) => {
                problems.push(format!("{name}: unsafe entry name ({why})"));
                false
            }
            None => true,
        };
        let path = match raw_name.strip_prefix(&root) {
            Some(path) => path,
            None => {
                problems.push(format!(
                    "{name}: outside the archive's top-level folder {shown_root}"
                ));
                ""
            }
        };
        if raw_name == signature_name {
            // Not listed (the manifest cannot list its own signature): kept for
            // `check_signature`, a hostile size never held whole.
            let mut signature = Vec::new();
            match archive.read(index, |b| {
                let room = 65usize.saturating_sub(signature.len());
                signature.extend_from_slice(&b[..b.len().min(room)]);
            }) {
                Ok(read) => {
                    if read.size != 64 {
                        let size = usize::try_from(read.size).unwrap_or(usize::MAX);
                        problems.push(SigningError::Malformed(size).to_string());
                    }
                    report.signature = Some(signature);
                }
                Err(error) => problems.push(reason(error)),
            }
            continue;
        }
        // Only a safe name is recounted: the reconciler's messages show paths as they are.
        let day_file = safe && !path.is_empty() && counted_file(format, path);
        let mut content = Vec::new();
        let read = match archive.read(index, |b| {
            if day_file {
                content.extend_from_slice(b);
            }
        }) {
            Ok(read) => read,
            Err(error) => {
                problems.push(reason(error));
                // Listed or not, this entry was looked at: do not also call it missing, nor
                // its day's counts unborne.
                listed.remove(path);
                if day_file {
                    match (format, eml_day(path)) {
                        (DataFormat::Eml, Some((folder, date, _))) => {
                            reconciler.unreadable_day(folder, date);
                        }
                        _ => reconciler.unreadable(path),
                    }
                }
                continue;
            }
        };
        if day_file {
            match format {
                DataFormat::Json => reconciler.add(path, &content, problems),
                DataFormat::Eml => recount_eml(&mut reconciler, &folders, path, &content, problems),
                DataFormat::Csv => match crate::csv::recount(&content) {
                    Ok(days) => {
                        for ((conversation_id, date), counts) in days {
                            reconciler.add_counted(&conversation_id, &date, path, &counts);
                        }
                    }
                    Err(error) => problems.push(format!("{path}: {}", reason(error))),
                },
            }
            report.day_files_counted += 1;
        }
        match listed.remove(path) {
            None => problems.push(format!("{name}: not listed in {MANIFEST}")),
            Some((want, _)) if want != read.size => problems.push(format!(
                "{name}: {} bytes, but {MANIFEST} lists {want}",
                read.size
            )),
            Some((_, want)) if want != read.sha256 => problems.push(format!(
                "{name}: SHA-256 {}, but {MANIFEST} lists {want}",
                read.sha256
            )),
            Some(_) => {
                report.files_checked += 1;
                report.bytes_checked += read.size;
            }
        }
    }
    for missing in listed.keys() {
        problems.push(format!(
            "{shown_root}{}: listed in {MANIFEST} but not in the archive",
            shown(missing)
        ));
    }
    reconciler.finish(&manifest, problems);
    signature_problems(&manifest.head, report.signature.as_deref(), problems);
    // The manifest's own strings (conversation ids, folders, hashes) reach messages too.
    for problem in problems.iter_mut() {
        if problem.chars().any(char::is_control) {
            *problem = shown(problem);
        }
    }
    Ok(report)
}

/// Whether `path` (under the top-level folder) holds events that `verify` recounts, in
/// `format`: day files (JSON), messages (EML) or event files (CSV).
fn counted_file(format: DataFormat, path: &str) -> bool {
    match format {
        DataFormat::Json => is_day_file(path),
        DataFormat::Eml => eml_day(path).is_some(),
        DataFormat::Csv => {
            path.strip_prefix(crate::csv::FOLDER)
                .and_then(|p| p.strip_prefix('/'))
                .is_some_and(|name| !name.contains('/'))
                && path.ends_with(".csv")
        }
    }
}

/// An EML message's conversation folder, date and file name:
/// `<People_Chats|Team_Chats>/<folder>/<date>/<file>.eml`.
fn eml_day(path: &str) -> Option<(&str, &str, &str)> {
    if !(path.starts_with("People_Chats/") || path.starts_with("Team_Chats/"))
        || !path.ends_with(".eml")
    {
        return None;
    }
    let (dir, file) = path.rsplit_once('/')?;
    let (folder, date) = dir.rsplit_once('/')?;
    folder.contains('/').then_some((folder, date, file))
}

/// Recounts one EML message and adds it to its conversation's day.
fn recount_eml(
    reconciler: &mut Reconciler,
    folders: &BTreeMap<String, String>,
    path: &str,
    content: &[u8],
    problems: &mut Vec<String>,
) {
    let Some((folder, date, _)) = eml_day(path) else {
        return;
    };
    let Some(conversation_id) = folders.get(folder) else {
        problems.push(format!(
            "{path}: its folder is no conversation's in the manifest's conversations"
        ));
        return;
    };
    match crate::eml::recount(content) {
        // One path per conversation's day in messages: the day's folder.
        Ok(counts) => {
            reconciler.add_counted(conversation_id, date, &format!("{folder}/{date}/"), &counts)
        }
        Err(why) => problems.push(format!("{path}: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unsafe_to_extract_say_why() {
        for (name, why) in [
            ("top/People_Chats/dm1/2026-02-01.json", None),
            ("top/Team_Chats/Q1..Q2__t1/2026-02-01.json", None),
            ("top/../etc/passwd", Some("a `..` component")),
            ("..", Some("a `..` component")),
            ("/top/x.json", Some("an absolute path")),
            ("C:/top/x.json", Some("an absolute path (drive letter)")),
            ("top\\x.json", Some("a backslash in the name")),
            ("top/x\u{0}.json", Some("a control character in the name")),
            ("top/x\u{85}.json", Some("a control character in the name")),
            ("top/./x.json", Some("an empty or `.` component")),
            ("top//x.json", Some("an empty or `.` component")),
            ("top/dir/", Some("an empty or `.` component")),
        ] {
            assert_eq!(unsafe_name(name), why, "{name}");
        }
    }

    #[test]
    fn names_that_are_one_where_case_is_ignored_are_named() {
        let names: Vec<String> = [
            "top/Team_Chats/Desk__C1/2026-02-01.json",
            "top/Team_Chats/Desk__c1/2026-02-02.json",
            "top/Team_Chats/Desk__c1/2026-02-03.json",
            "top/users.json",
            "top/USERS.json",
            "top/Team_Chats/Desk__d1/2026-02-01.json",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut problems = Vec::new();
        case_collisions(&names, &mut problems);
        assert_eq!(
            problems,
            [
                "top/Team_Chats/Desk__c1/2026-02-02.json: top/Team_Chats/Desk__C1/ and \
                 top/Team_Chats/Desk__c1/ are one folder where case is ignored (Windows, macOS)",
                "top/Team_Chats/Desk__c1/2026-02-03.json: top/Team_Chats/Desk__C1/ and \
                 top/Team_Chats/Desk__c1/ are one folder where case is ignored (Windows, macOS)",
                "top/USERS.json: top/users.json and top/USERS.json are one file where case is \
                 ignored (Windows, macOS)",
            ]
        );
    }

    #[test]
    fn bytes_that_are_not_a_zip_are_an_invalid_archive() {
        for bytes in [&b""[..], b"PK\x05\x06", b"not a zip at all"] {
            match verify(&mut Cursor::new(bytes)) {
                Err(ArchiveError::Invalid(reason)) => {
                    assert!(reason.starts_with("not a readable ZIP archive"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
