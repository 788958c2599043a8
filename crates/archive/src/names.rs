//! Safe, unique folder names from user-chosen conversation names.
//!
//! A folder name is `<name>__<id>`: the sanitised name (for people) and the sanitised id (for
//! uniqueness). Sanitising removes path separators, control and bidi-override characters,
//! leading dots and trailing spaces or dots, and bounds the length. When sanitising changed the
//! id, a short hash of the original id is appended, so two ids can never share a folder.

use sha2::{Digest, Sha256};

const MAX_NAME_CHARS: usize = 60;
const MAX_ID_CHARS: usize = 80;

/// Replaces anything unsafe in a path segment and bounds its length; never empty.
pub fn sanitize(raw: &str, max_chars: usize) -> String {
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
        .collect();
    out = out
        .trim_start_matches(['.', ' ', '_'])
        .trim_end_matches(['.', ' '])
        .to_owned();
    // Windows device names stay unusable even with an extension.
    let stem = out.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        out.insert(0, '_');
    }
    if out.is_empty() { "_".to_owned() } else { out }
}

/// The folder of a conversation: unique per id, readable, safe on every file system.
pub fn conversation_folder(id: &str, name: Option<&str>) -> String {
    let mut id_part = sanitize(id, MAX_ID_CHARS);
    if id_part != id {
        let hash = hex::encode(Sha256::digest(id.as_bytes()));
        id_part = format!("{id_part}-{}", &hash[..8]);
    }
    match name
        .map(|n| sanitize(n, MAX_NAME_CHARS))
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
}
