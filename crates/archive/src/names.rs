//! Safe, unique folder names from user-chosen conversation names.
//!
//! A folder name is `<name>__<id>`: the sanitised name (for people) and the sanitised id (for
//! uniqueness). Sanitising removes path separators, control and bidi-override characters,
//! leading dots and trailing spaces or dots, and bounds the length.
//!
//! Folders must be unique also where file systems ignore case and Unicode normalisation
//! (Windows, macOS): `C1` and `c1` are one folder there. So an id is used as it is only when it
//! is *plain* — sanitising leaves it alone, it is ASCII without capitals (nothing else folds to
//! it), it has no `__` (the separator) and does not end like a hash suffix. Any other id gets
//! `-` and the first 8 hex digits of the SHA-256 of the original id appended, so two ids never
//! share a folder, whatever case or normalisation a file system ignores: plain ids equal
//! under folding are equal, and the others differ in their suffix. A pure function of the id:
//! every part of an export names a conversation's folder alike without coordinating.

use sha2::{Digest, Sha256};

const MAX_NAME_CHARS: usize = 60;
const MAX_ID_CHARS: usize = 80;
/// Byte bounds as well (characters take up to 4 bytes): a folder is at most
/// 150 + `__` + 90 + a 9-byte suffix = 251 bytes, under the 255 that ext4, APFS and NTFS take
/// (a 60-character name and an 80-character id of 4-byte characters made 562, found by the
/// `folder_names` fuzz target). ASCII names and ids are bounded by their characters first, so
/// their folders are unchanged.
const MAX_NAME_BYTES: usize = 150;
const MAX_ID_BYTES: usize = 90;

/// Replaces anything unsafe in a path segment and bounds its length to `max_chars` characters
/// (and 4 bytes per character); never empty.
pub fn sanitize(raw: &str, max_chars: usize) -> String {
    sanitize_within(raw, max_chars, max_chars.saturating_mul(4))
}

/// [`sanitize`], also bounded to `max_bytes` bytes (cut at a character's boundary).
fn sanitize_within(raw: &str, max_chars: usize, max_bytes: usize) -> String {
    let mut bytes = 0;
    let mut out: String = raw
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            // Bidi overrides and isolates can make a name display as something it is not.
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' => '_',
            c => c,
        })
        .take(max_chars)
        .take_while(|c| {
            bytes += c.len_utf8();
            bytes <= max_bytes
        })
        .collect();
    out = out
        .trim_start_matches(['.', ' ', '_'])
        .trim_end_matches(['.', ' '])
        .to_owned();
    // Windows device names stay unusable even with an extension.
    // Windows ignores spaces at the end of the stem too: `COM1 .txt` is the device as well
    // (found by the `folder_names` fuzz target).
    let stem = out.split('.').next().unwrap_or("").to_ascii_uppercase();
    let stem = stem.trim_end_matches(' ');
    let reserved = matches!(stem, "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        out.insert(0, '_');
    }
    if out.is_empty() { "_".to_owned() } else { out }
}

/// Whether `id` may be its folder's id part as it is (see the module's documentation).
fn is_plain(id: &str, sanitized: &str) -> bool {
    sanitized == id
        && id.chars().all(|c| c.is_ascii() && !c.is_ascii_uppercase())
        && !id.contains("__")
        && !ends_like_a_hash_suffix(id)
}

/// `-` and 8 lowercase hex digits at the end, as [`conversation_folder`] appends.
fn ends_like_a_hash_suffix(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() >= 9
        && bytes[bytes.len() - 9] == b'-'
        && bytes[bytes.len() - 8..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// A name as a case-insensitive file system compares it (lower case, Unicode-aware); what
/// `verify` uses to find folders and files that would share one place when extracted.
pub fn case_folded(name: &str) -> String {
    name.chars().flat_map(char::to_lowercase).collect()
}

/// The folder of a conversation: unique per id, also where case is ignored, readable, safe on
/// every file system.
pub fn conversation_folder(id: &str, name: Option<&str>) -> String {
    let mut id_part = sanitize_within(id, MAX_ID_CHARS, MAX_ID_BYTES);
    if !is_plain(id, &id_part) {
        let hash = hex::encode(Sha256::digest(id.as_bytes()));
        id_part = format!("{id_part}-{}", &hash[..8]);
    }
    match name
        .map(|n| sanitize_within(n, MAX_NAME_CHARS, MAX_NAME_BYTES))
        .filter(|n| n != "_")
    {
        Some(name) => format!("{name}__{id_part}"),
        None => id_part,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn hostile_names_become_safe_segments() {
        let cases = [
            ("../../etc/passwd", "etc_passwd"),
            ("Team/With/Slashes", "Team_With_Slashes"),
            ("back\\slash", "back_slash"),
            ("CON", "_CON"),
            ("con.txt", "_con.txt"),
            ("COM1", "_COM1"),
            ("com1  .txt", "_com1  .txt"),
            (".", "_"),
            ("..", "_"),
            ("", "_"),
            ("nul\u{0}byte", "nul_byte"),
            ("\u{202E}gnp.exe", "gnp.exe"),
            ("tab\there", "tab_here"),
            ("  spaced  ", "spaced"),
            ("🚀 Launch", "🚀 Launch"),
            ("名前のチーム", "名前のチーム"),
        ];
        for (raw, want) in cases {
            let got = sanitize(raw, 60);
            assert_eq!(got, want, "{raw:?}");
            assert!(!got.contains('/') && !got.contains('\\') && got != "." && got != "..");
        }
        assert_eq!(sanitize(&"x".repeat(500), 60).chars().count(), 60);
        assert_eq!(sanitize(&"é".repeat(500), 60).chars().count(), 60);
    }

    #[test]
    fn folders_are_unique_per_conversation_even_when_names_and_sanitised_ids_collide() {
        let ids = ["a/b", "a_b", "a\\b", "a:b", "c1", "C1"];
        let folders: HashSet<String> = ids
            .iter()
            .map(|id| conversation_folder(id, Some("Same name")))
            .collect();
        assert_eq!(folders.len(), ids.len(), "{folders:?}");
        assert_eq!(
            conversation_folder("c1", Some("../Trading Desk")),
            "Trading Desk__c1"
        );
        assert_eq!(conversation_folder("c1", None), "c1");
        assert_eq!(conversation_folder("c1", Some("..")), "c1");
    }

    #[test]
    fn folders_are_unique_where_case_and_normalisation_are_ignored() {
        // Ids that a case-insensitive or normalising file system takes for one another, ids
        // that look like a suffixed one, and ids whose `__` could move the name/id boundary.
        let hash_of_upper_c1 = &hex::encode(Sha256::digest(b"C1"))[..8];
        let lookalike = format!("c1-{hash_of_upper_c1}");
        let ids = [
            "c1",
            "C1",
            "c1\u{212a}",
            "c1k",
            "c1K",
            "caf\u{e9}",
            "cafe\u{301}",
            "CAF\u{c9}",
            "stra\u{df}e",
            "STRASSE",
            "strasse",
            lookalike.as_str(),
            "b__c",
            "c",
            "team-00000000",
        ];
        for name in [None, Some("Same name"), Some("Same__name")] {
            let mut folded: HashSet<String> = HashSet::new();
            for id in ids {
                let folder = conversation_folder(id, name);
                assert!(
                    folded.insert(case_folded(&folder)),
                    "{id:?} ({name:?}) shares folder {folder:?}"
                );
            }
        }
        // Plain ids are kept as they are; the others are suffixed, deterministically.
        assert_eq!(conversation_folder("team1", Some("Desk")), "Desk__team1");
        let upper = conversation_folder("C1", None);
        assert_eq!(upper, format!("C1-{hash_of_upper_c1}"));
        assert_eq!(conversation_folder("C1", None), upper);
        assert_ne!(conversation_folder(&lookalike, None), lookalike);
        // The name and id boundary: "a__b" + "c" and "a" + "b__c" differ.
        assert_ne!(
            conversation_folder("c", Some("a__b")),
            conversation_folder("b__c", Some("a"))
        );
    }
}
