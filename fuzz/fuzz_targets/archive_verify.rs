//! The archive verifier (`archive::verify::verify`) on arbitrary bytes: whatever a store hands
//! back, verifying it must end in a report or an `Invalid` error, never a panic or a hang.
//!
//! The first byte picks the mode: odd, the rest is the archive's bytes as they are; even, the
//! rest is a list of entries (`name \0 content \0 name \0 content …`) that the target packs
//! into a stored ZIP, with the sizes and SHA-256s of a `*/manifest.json`'s `files` filled in
//! from the entries, so the fuzzer reaches the manifest's checks and the day files' recount
//! instead of stopping at a checksum.
//!
//! Properties: a clean report (no problems) means every entry's name is safe to extract (no
//! `..`, `.` or empty component, no absolute path, no backslash, no control character) and
//! every entry but the manifest was checked; no problem message carries a control character
//! (messages reach terminals and mails).
#![no_main]

use std::io::Cursor;

use archive::verify::{ArchiveReader, verify};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 1 {
        rest.to_vec()
    } else {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = rest
            .split(|b| *b == 0)
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|pair| {
                (
                    pair[0].to_vec(),
                    pair.get(1).copied().unwrap_or_default().to_vec(),
                )
            })
            .collect();
        seal_manifest(&mut entries);
        stored_zip(&entries)
    };
    check(&bytes);
});

fn check(bytes: &[u8]) {
    let Ok(report) = verify(&mut Cursor::new(bytes)) else {
        return;
    };
    for problem in &report.problems {
        assert!(
            !problem.chars().any(char::is_control),
            "a problem message carries a control character: {problem:?}"
        );
    }
    if !report.problems.is_empty() {
        return;
    }
    let archive = ArchiveReader::new(Cursor::new(bytes)).expect("verified, so it opens");
    assert_eq!(report.files_checked + 1, archive.len(), "{report:?}");
    for index in 0..archive.len() {
        let name = archive.name(index).expect("verified, so names are UTF-8");
        assert!(
            !name.starts_with('/')
                && !name.contains('\\')
                && !name.chars().any(char::is_control)
                && !name
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".."),
            "a clean report for an unsafe name {name:?}"
        );
    }
}

/// Fills in the size and SHA-256 of every file a `*/manifest.json` entry lists that is among
/// the entries (by its path under the manifest's folder).
fn seal_manifest(entries: &mut [(Vec<u8>, Vec<u8>)]) {
    let Some(at) = entries
        .iter()
        .position(|(n, _)| n.ends_with(b"/manifest.json"))
    else {
        return;
    };
    let root = entries[at].0[..entries[at].0.len() - "manifest.json".len()].to_vec();
    let Ok(mut manifest) = serde_json::from_slice::<serde_json::Value>(&entries[at].1) else {
        return;
    };
    let Some(files) = manifest.get_mut("files").and_then(|f| f.as_array_mut()) else {
        return;
    };
    for file in files {
        let Some(path) = file.get("path").and_then(|p| p.as_str()) else {
            continue;
        };
        let mut name = root.clone();
        name.extend_from_slice(path.as_bytes());
        if let Some((_, content)) = entries.iter().find(|(n, _)| *n == name) {
            file["size"] = content.len().into();
            file["sha256"] = hex::encode(Sha256::digest(content)).into();
        }
    }
    if let Ok(sealed) = serde_json::to_vec(&manifest) {
        entries[at].1 = sealed;
    }
}

/// A ZIP of stored (uncompressed) entries with UTF-8 names: local headers, central directory,
/// end record. Sizes are truncated to the 32-bit fields; fuzz inputs are far smaller.
fn stored_zip(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, content) in entries {
        let offset = out.len() as u32;
        let crc = crc32fast::hash(content);
        let size = content.len() as u32;
        let name_len = name.len() as u16;
        // Local file header: version 2.0, UTF-8 names, stored, 1980-01-01.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        for field in [20u16, 0x0800, 0, 0, 0x21] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, size, size] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(content);
        // Its central-directory record.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        for field in [20u16, 20, 0x0800, 0, 0, 0x21] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, size, size] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        for field in [name_len, 0, 0, 0, 0] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        central.extend_from_slice(&0u32.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let (cd_offset, cd_size) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    let count = entries.len() as u16;
    for field in [0u16, 0, count, count] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
