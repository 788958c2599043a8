//! `verify` against archives made by the crate's own writer and then tampered with: each kind of
//! damage is rejected with a message naming what is wrong, a good archive (ZIP64 too) passes,
//! and nothing panics on malformed bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Cursor;
use std::sync::OnceLock;

use archive::verify::{Report, read_entries, verify};
use archive::{ArchiveError, ZipWriter};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::Digest;
use support::{FOLDER, ev, export_bytes};

/// Two days of one team conversation: posts, an edit and a deletion.
fn events() -> Vec<Value> {
    let post = |id: &str, at: &str, post: &str| {
        ev(
            id,
            at,
            "post.created",
            json!({"post_id": post, "author_id": "ann", "text": format!("hello {post}")}),
        )
    };
    vec![
        post("e1", "2026-02-01T10:00:00Z", "p1"),
        ev(
            "e2",
            "2026-02-01T10:01:00Z",
            "post.edited",
            json!({"post_id": "p1", "editor_id": "ann", "text": "hello again"}),
        ),
        post("e3", "2026-02-02T09:00:00Z", "p2"),
        ev(
            "e4",
            "2026-02-02T09:30:00Z",
            "post.deleted",
            json!({"post_id": "p2", "deleted_by": "ann"}),
        ),
    ]
}

/// The good archive, made once (on a thread of its own: async tests call this too, and a
/// runtime cannot block inside another).
fn good() -> &'static [u8] {
    static GOOD: OnceLock<Vec<u8>> = OnceLock::new();
    GOOD.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(export_bytes(&events(), ""))
        })
        .join()
        .unwrap()
    })
}

/// The archive's top-level folder, with its trailing `/`.
fn root(entries: &[(String, Vec<u8>)]) -> String {
    let manifest = entries
        .iter()
        .find(|(name, _)| name.ends_with("/manifest.json"))
        .unwrap();
    manifest.0.trim_end_matches("manifest.json").to_owned()
}

/// Writes `entries` with the crate's writer.
async fn write(entries: Vec<(String, Vec<u8>)>) -> Vec<u8> {
    let mut zip = ZipWriter::new(Vec::new(), 6, 2);
    for (name, body) in entries {
        zip.add(name, body.into()).await.unwrap();
    }
    zip.finish().await.unwrap().0
}

/// The good archive's entries, changed by `change`, written again.
async fn rewritten(change: impl FnOnce(&mut Vec<(String, Vec<u8>)>, &str)) -> Vec<u8> {
    let mut entries = read_entries(good()).unwrap();
    let root = root(&entries);
    change(&mut entries, &root);
    write(entries).await
}

/// Changes the manifest among `entries`.
fn edit_manifest(entries: &mut [(String, Vec<u8>)], change: impl FnOnce(&mut Value)) {
    let (_, body) = entries
        .iter_mut()
        .find(|(name, _)| name.ends_with("/manifest.json"))
        .unwrap();
    let mut manifest: Value = serde_json::from_slice(body).unwrap();
    change(&mut manifest);
    *body = serde_json::to_vec_pretty(&manifest).unwrap();
}

fn verified(bytes: &[u8]) -> Report {
    verify(&mut Cursor::new(bytes)).unwrap()
}

fn rejected(bytes: &[u8]) -> String {
    match verify(&mut Cursor::new(bytes)) {
        Err(ArchiveError::Invalid(reason)) => reason,
        other => panic!("expected an invalid archive, got {other:?}"),
    }
}

/// (index, offset of the deflated data, its length, offset of the local header, offset of the
/// central-directory record) of the entry named `name`, as zip-rs sees them.
fn locate(bytes: &[u8], suffix: &str) -> (String, u64, u64, u64, u64) {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let index = (0..zip.len())
        .find(|&i| zip.name_for_index(i).unwrap().unwrap().ends_with(suffix))
        .unwrap();
    let file = zip.by_index_raw(index).unwrap();
    (
        file.name().unwrap().into_owned(),
        file.data_start().unwrap(),
        file.compressed_size(),
        file.header_start(),
        file.central_header_start(),
    )
}

#[test]
fn a_good_archive_passes() {
    let report = verified(good());
    assert_eq!(report.problems, Vec::<String>::new());
    // users.json, teams.json and two day files.
    assert_eq!(report.files_checked, 4);
    assert_eq!(report.day_files_counted, 2);
    let entries = read_entries(good()).unwrap();
    let listed: u64 = entries
        .iter()
        .filter(|(name, _)| !name.ends_with("/manifest.json"))
        .map(|(_, body)| body.len() as u64)
        .sum();
    assert_eq!(report.bytes_checked, listed);
}

#[test]
fn a_flipped_byte_in_deflated_data_names_the_entry() {
    let (name, start, len, _, _) = locate(good(), "2026-02-01.json");
    assert!(len > 8, "{len}");
    let mut bytes = good().to_vec();
    bytes[(start + len / 2) as usize] ^= 0x55;
    let report = verified(&bytes);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let problem = &report.problems[0];
    assert!(
        problem.starts_with(&format!("{name}: "))
            && (problem.contains("CRC-32 mismatch") || problem.contains("cannot be read")),
        "{problem}"
    );
}

/// Content that inflates fine but is not what the CRC-32 says: the entry's CRC changed in both
/// its local header and the central directory, so only reading the data can tell.
#[test]
fn a_crc_mismatch_is_an_invalid_archive_naming_the_entry() {
    let (name, _, _, local, central) = locate(good(), "Teams/teams.json");
    let mut bytes = good().to_vec();
    for at in [local + 14, central + 16] {
        bytes[at as usize] ^= 0x01;
    }
    assert_eq!(
        verified(&bytes).problems,
        [format!(
            "{name}: CRC-32 mismatch, the content is not what was written"
        )]
    );
    match read_entries(&bytes) {
        Err(ArchiveError::Invalid(reason)) => assert_eq!(
            reason,
            format!("{name}: CRC-32 mismatch, the content is not what was written")
        ),
        other => panic!("{other:?}"),
    }
}

/// A local header that disagrees with the central directory (its CRC changed alone).
#[test]
fn a_local_header_that_disagrees_with_the_central_directory_is_rejected() {
    let (_, _, _, local, _) = locate(good(), "Teams/teams.json");
    let mut bytes = good().to_vec();
    bytes[local as usize + 14] ^= 0x01;
    let reason = rejected(&bytes);
    assert!(
        reason.starts_with("local headers disagree with the central directory"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_changed_size_or_hash_in_the_manifest_is_named() {
    let bytes = rewritten(|entries, _| {
        edit_manifest(entries, |m| {
            let files = m["files"].as_array_mut().unwrap();
            let users = files
                .iter_mut()
                .find(|f| f["path"] == "People_And_Groups/users.json")
                .unwrap();
            users["size"] = json!(users["size"].as_u64().unwrap() + 1);
            let teams = files
                .iter_mut()
                .find(|f| f["path"] == "Teams/teams.json")
                .unwrap();
            teams["sha256"] = json!("00".repeat(32));
        })
    })
    .await;
    let entries = read_entries(&bytes).unwrap();
    let root = root(&entries);
    let body = |suffix: &str| {
        entries
            .iter()
            .find(|(n, _)| n.ends_with(suffix))
            .unwrap()
            .1
            .clone()
    };
    let users = body("users.json");
    let teams_sha = hex::encode(sha2::Sha256::digest(body("teams.json")));
    let report = verified(&bytes);
    assert_eq!(
        report.problems,
        [
            format!(
                "{root}People_And_Groups/users.json: {} bytes, but manifest.json lists {}",
                users.len(),
                users.len() + 1
            ),
            format!(
                "{root}Teams/teams.json: SHA-256 {teams_sha}, but manifest.json lists {}",
                "00".repeat(32)
            ),
        ]
    );
    assert_eq!(report.files_checked, 2);
}

#[tokio::test]
async fn an_unlisted_entry_is_named() {
    let bytes = rewritten(|entries, root| {
        entries.insert(
            1,
            (format!("{root}notes.txt"), b"not in the manifest".to_vec()),
        );
    })
    .await;
    let root = root(&read_entries(&bytes).unwrap());
    assert_eq!(
        verified(&bytes).problems,
        [format!("{root}notes.txt: not listed in manifest.json")]
    );
}

#[tokio::test]
async fn a_missing_listed_entry_is_named() {
    let bytes = rewritten(|entries, _| entries.retain(|(n, _)| !n.ends_with("teams.json"))).await;
    let root = root(&read_entries(&bytes).unwrap());
    assert_eq!(
        verified(&bytes).problems,
        [format!(
            "{root}Teams/teams.json: listed in manifest.json but not in the archive"
        )]
    );
}

#[tokio::test]
async fn a_missing_day_file_is_named_by_its_listing_and_its_counts() {
    let bytes = rewritten(|entries, _| {
        entries.retain(|(n, _)| !n.ends_with("2026-02-02.json"));
    })
    .await;
    let root = root(&read_entries(&bytes).unwrap());
    let problems = verified(&bytes).problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(
        problems[0],
        format!("{root}{FOLDER}/2026-02-02.json: listed in manifest.json but not in the archive")
    );
    assert!(
        problems[1].starts_with(&format!(
            "{FOLDER}/2026-02-02.json: missing, but manifest.json counts events 2"
        )),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_duplicate_entry_name_is_rejected() {
    let bytes = rewritten(|entries, _| {
        let users = entries
            .iter()
            .find(|(n, _)| n.ends_with("users.json"))
            .unwrap()
            .clone();
        entries.push(users);
    })
    .await;
    assert_eq!(
        rejected(&bytes),
        "duplicate entry names: the central directory lists the same name twice"
    );
    assert!(read_entries(&bytes).is_err());
}

#[tokio::test]
async fn a_file_listed_twice_is_named() {
    let bytes = rewritten(|entries, _| {
        edit_manifest(entries, |m| {
            let files = m["files"].as_array_mut().unwrap();
            let first = files[0].clone();
            files.push(first);
        })
    })
    .await;
    let manifest: Value = serde_json::from_slice(
        &read_entries(&bytes)
            .unwrap()
            .into_iter()
            .find(|(n, _)| n.ends_with("/manifest.json"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(
        verified(&bytes).problems,
        [format!(
            "manifest.json: lists {} twice in files",
            manifest["files"][0]["path"].as_str().unwrap()
        )]
    );
}

#[tokio::test]
async fn counts_that_do_not_add_up_are_named() {
    // The totals alone.
    let bytes = rewritten(|entries, _| {
        edit_manifest(entries, |m| {
            m["totals"]["posts"] = json!(m["totals"]["posts"].as_u64().unwrap() + 1);
        })
    })
    .await;
    let problems = verified(&bytes).problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("manifest.json: totals events 4, posts 3,")
            && problems[0].contains("but the conversations add up to events 4, posts 2,"),
        "{problems:?}"
    );

    // A conversation's counts that its days do not add up to (totals changed to match).
    let bytes = rewritten(|entries, _| {
        edit_manifest(entries, |m| {
            m["conversations"][0]["counts"]["edits"] = json!(5);
            m["totals"]["edits"] = json!(5);
        })
    })
    .await;
    let problems = verified(&bytes).problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .starts_with("manifest.json: conversation team1 counts events 4, posts 2, edits 5")
            && problems[0].contains("but its days add up to events 4, posts 2, edits 1"),
        "{problems:?}"
    );

    // A day line that its file does not bear out.
    let bytes = rewritten(|entries, _| {
        edit_manifest(entries, |m| {
            m["days"][0]["counts"]["deletes"] = json!(1);
            m["days"][0]["counts"]["events"] = json!(3);
        })
    })
    .await;
    let problems = verified(&bytes).problems;
    assert!(
        problems.iter().any(|p| p.starts_with(&format!(
            "{FOLDER}/2026-02-01.json: manifest.json counts events 3, posts 1, edits 1, deletes 1"
        ))),
        "{problems:?}"
    );
}

#[tokio::test]
async fn unsafe_names_and_names_outside_the_top_level_folder_are_named() {
    for (name, why) in [
        ("{root}../evil.json", "unsafe entry name (a `..` component)"),
        ("../evil.json", "unsafe entry name (a `..` component)"),
        ("/etc/evil.json", "unsafe entry name (an absolute path)"),
        (
            "{root}People_Chats\\evil.json",
            "unsafe entry name (a backslash in the name)",
        ),
        (
            "{root}evil\u{1b}[2J.json",
            "unsafe entry name (a control character in the name)",
        ),
        (
            "{root}a//evil.json",
            "unsafe entry name (an empty or `.` component)",
        ),
        ("other/evil.json", "outside the archive's top-level folder"),
    ] {
        let bytes = rewritten(|entries, root| {
            let name = name.replace("{root}", root);
            // Listed in the manifest, so that only the name is wrong where it is inside.
            let path = name.strip_prefix(root).map(str::to_owned);
            let body = b"{}".to_vec();
            if let Some(path) = path {
                edit_manifest(entries, |m| {
                    m["files"].as_array_mut().unwrap().push(json!({
                        "path": path, "size": 2,
                        "sha256": hex::encode(sha2::Sha256::digest(&body))}));
                });
            }
            entries.insert(0, (name, body));
        })
        .await;
        let problems = verified(&bytes).problems;
        let name = name
            .replace("{root}", &root(&read_entries(&bytes).unwrap()))
            .replace('\u{1b}', "\\u{1b}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("{name}: {why}"))),
            "{name}: {problems:?}"
        );
    }
}

#[tokio::test]
async fn names_that_are_one_where_case_is_ignored_are_named() {
    // A second copy of the users file in a folder that differs only in case, listed in the
    // manifest, so that only its name is wrong.
    let bytes = rewritten(|entries, root| {
        let (name, body) = entries
            .iter()
            .find(|(name, _)| name.ends_with("/users.json"))
            .cloned()
            .unwrap();
        let path = name.strip_prefix(root).unwrap().to_lowercase();
        assert_ne!(format!("{root}{path}"), name);
        edit_manifest(entries, |m| {
            m["files"].as_array_mut().unwrap().push(json!({
                "path": path, "size": body.len(),
                "sha256": hex::encode(sha2::Sha256::digest(&body))}));
        });
        entries.push((format!("{root}{path}"), body));
    })
    .await;
    let problems = verified(&bytes).problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("are one folder where case is ignored"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn no_manifest_or_a_manifest_that_is_not_one_is_rejected() {
    let bytes =
        rewritten(|entries, _| entries.retain(|(n, _)| !n.ends_with("manifest.json"))).await;
    assert_eq!(
        rejected(&bytes),
        "no manifest.json in a top-level folder of the archive"
    );
    let bytes = rewritten(|entries, _| {
        edit_manifest(entries, |m| *m = json!({"format": "something else"}));
    })
    .await;
    let reason = rejected(&bytes);
    assert!(
        reason.contains("manifest.json is not a manifest"),
        "{reason}"
    );
}

/// Past 65,535 entries the writer switches to ZIP64 end records; zip-rs must read them and
/// every entry must still be checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip64_archive_of_many_entries_passes() {
    let extra = 65_540usize;
    let mut entries = read_entries(good()).unwrap();
    let root = root(&entries);
    let mut lines = Vec::with_capacity(extra);
    let mut added = Vec::with_capacity(extra);
    for i in 0..extra {
        let body = format!("{i}\n").into_bytes();
        let path = format!("extra/{:02}/{i:06}.txt", i % 61);
        lines.push(json!({"path": path, "size": body.len(),
                          "sha256": hex::encode(sha2::Sha256::digest(&body))}));
        added.push((format!("{root}{path}"), body));
    }
    edit_manifest(&mut entries, |m| {
        m["files"].as_array_mut().unwrap().extend(lines);
    });
    let manifest = entries.pop().unwrap();
    assert!(manifest.0.ends_with("/manifest.json"));
    entries.extend(added);
    entries.push(manifest);
    let bytes = write(entries).await;
    // The end of central directory says "see ZIP64" (0xFFFF entries).
    let eocd = bytes.len() - 22;
    assert_eq!(&bytes[eocd..eocd + 4], b"PK\x05\x06");
    assert_eq!(&bytes[eocd + 10..eocd + 12], &[0xFF, 0xFF]);

    let report = verified(&bytes);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.files_checked, 4 + extra);
    assert_eq!(report.day_files_counted, 2);
}

/// What `verify` makes of `bytes`, or that it panicked.
fn outcome(bytes: &[u8]) -> Result<Option<Report>, TestCaseError> {
    std::panic::catch_unwind(|| verify(&mut Cursor::new(bytes)).ok())
        .map_err(|_| TestCaseError::fail("verify panicked"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let verified = outcome(&bytes)?;
        prop_assert!(verified.is_none_or(|r| !r.problems.is_empty()));
        let _ = read_entries(&bytes);
    }

    /// A truncated archive has lost its end records: never accepted, never a panic.
    #[test]
    fn truncated_archives_are_rejected(cut in 1usize..4096) {
        let good = good();
        let bytes = &good[..good.len().saturating_sub(cut)];
        prop_assert!(outcome(bytes)?.is_none_or(|r| !r.problems.is_empty()));
    }

    /// Bytes overwritten anywhere: never a panic (some bytes, such as the version made by,
    /// are not checked by anyone, so acceptance is not asserted).
    #[test]
    fn overwritten_bytes_never_panic(
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = good().to_vec();
        for (at, value) in changes {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        outcome(&bytes)?;
        let _ = std::panic::catch_unwind(|| read_entries(&bytes))
            .map_err(|_| TestCaseError::fail("read_entries panicked"))?;
    }
}
