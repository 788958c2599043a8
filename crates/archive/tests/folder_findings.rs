//! The inputs on which the `folder_names` fuzz target found folder naming wrong
//! (`fuzz/findings/folder_names/`), replayed with the target's properties on every test run:
//! every folder safe and at most 255 bytes, and distinct ids never sharing a folder, compared
//! exactly or ignoring case. (The fuzz target itself needs the fuzz build; see
//! `deploy/local/fuzz.sh`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use archive::names::{case_folded, conversation_folder};

/// `id \0 name \0 id \0 name …`, as the fuzz target reads its input; an empty name is none.
fn conversations(data: &[u8]) -> BTreeMap<String, Option<String>> {
    let parts: Vec<String> = data
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let mut out = BTreeMap::new();
    for pair in parts.chunks(2) {
        let name = pair.get(1).filter(|n| !n.is_empty()).cloned();
        out.entry(pair[0].clone()).or_insert(name);
    }
    out
}

#[test]
fn every_folder_naming_finding_of_the_fuzzer_is_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/findings/folder_names");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the findings are in {}", dir.display());
    for file in files {
        let conversations = conversations(&std::fs::read(&file).unwrap());
        let (mut exact, mut folded) = (HashMap::new(), HashMap::new());
        for (id, name) in &conversations {
            let folder = conversation_folder(id, name.as_deref());
            assert!(
                !folder.is_empty() && folder != "." && folder != ".." && folder.len() <= 255,
                "{}: the folder {folder:?} of {id:?} is unsafe ({} bytes)",
                file.display(),
                folder.len()
            );
            assert!(
                !folder.contains(['/', '\\']) && !folder.chars().any(char::is_control),
                "{}: {folder:?}",
                file.display()
            );
            assert!(
                !is_device_name(&folder),
                "{}: the folder {folder:?} of {id:?} is a Windows device name",
                file.display()
            );
            if let Some(other) = exact.insert(folder.clone(), id) {
                panic!("{}: {other:?} and {id:?} share {folder:?}", file.display());
            }
            if let Some(other) = folded.insert(case_folded(&folder), id) {
                panic!(
                    "{}: {other:?} and {id:?} share a folder where case is ignored",
                    file.display()
                );
            }
        }
    }
}

/// Whether Windows reads the name as a device, extension or not (as the fuzz target checks).
fn is_device_name(folder: &str) -> bool {
    let stem = folder.split('.').next().unwrap_or("").to_ascii_uppercase();
    let stem = stem.trim_end_matches(' ');
    matches!(stem, "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit())
}
