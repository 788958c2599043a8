//! Folder naming (`archive::names`): any list of conversations (id, optional name) → folder
//! names that are safe on every file system and unique, also where file systems ignore case
//! (Windows, macOS): two conversations must never share a folder when the archive is unpacked.
//!
//! The input is `id \0 name \0 id \0 name …`, each lossily UTF-8; an empty name is no name.
//! Properties, for every folder: not empty, not `.` or `..`, no `/`, `\`, control character or
//! character Windows forbids (`:*?"<>|`), no leading dot, no trailing dot or space, no Windows
//! device name (`CON`, `com1.txt`, …) as its stem, at most 255 bytes (the longest name ext4,
//! APFS and NTFS take); and the folders of distinct ids are distinct, compared exactly and
//! compared lowercased.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use archive::names::conversation_folder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts: Vec<String> = data
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    // One name per id: a conversation has one folder.
    let mut conversations: BTreeMap<String, Option<String>> = BTreeMap::new();
    for pair in parts.chunks(2) {
        let name = pair.get(1).filter(|n| !n.is_empty()).cloned();
        conversations.entry(pair[0].clone()).or_insert(name);
    }
    let mut exact: HashMap<String, &str> = HashMap::new();
    let mut folded: HashMap<String, &str> = HashMap::new();
    for (id, name) in &conversations {
        let folder = conversation_folder(id, name.as_deref());
        assert_safe(&folder, id);
        if let Some(other) = exact.insert(folder.clone(), id) {
            panic!("ids {other:?} and {id:?} share the folder {folder:?}");
        }
        let key = folder.to_lowercase();
        if let Some(other) = folded.insert(key, id) {
            panic!(
                "ids {other:?} and {id:?} share a folder where case is ignored ({folder:?} and \
                 {:?})",
                conversation_folder(other, conversations[other].as_deref())
            );
        }
    }
});

fn assert_safe(folder: &str, id: &str) {
    let why = if folder.is_empty() {
        Some("empty")
    } else if folder == "." || folder == ".." {
        Some("a relative path component")
    } else if folder.chars().any(|c| {
        c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
    }) {
        Some("a separator, control or forbidden character")
    } else if folder.starts_with('.') {
        Some("a leading dot (hidden)")
    } else if folder.ends_with('.') || folder.ends_with(' ') {
        Some("a trailing dot or space (dropped by Windows)")
    } else if folder.len() > 255 {
        Some("longer than 255 bytes")
    } else if is_device_name(folder) {
        Some("a Windows device name")
    } else {
        None
    };
    if let Some(why) = why {
        panic!("the folder {folder:?} of id {id:?} is unsafe: {why}");
    }
}

/// Whether Windows reads the name as a device, extension or not.
fn is_device_name(folder: &str) -> bool {
    let stem = folder.split('.').next().unwrap_or("").to_ascii_uppercase();
    let stem = stem.trim_end_matches(' ');
    matches!(stem, "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit())
}
