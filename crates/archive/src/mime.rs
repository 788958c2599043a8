//! The pieces of an RFC 5322 / MIME message the EML format needs (`eml.rs`): header fields
//! folded at 78 characters with CRLF, RFC 2047 encoded-words for anything that is not printable
//! ASCII, quoted display names, synthetic addresses and message ids, RFC 5322 dates, and base64
//! bodies. Pure functions, so every case is a table test.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// Line length header fields are folded to where they can be (RFC 5322 2.1.1 recommends 78).
const FOLD_AT: usize = 78;
/// Bytes of text per encoded-word: 45 bytes are 60 base64 characters, and with
/// `=?UTF-8?B?` and `?=` the word is 72 characters, under RFC 2047's 75.
const WORD_BYTES: usize = 45;
/// Base64 characters per body line (RFC 2045 allows 76).
const BASE64_LINE: usize = 76;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, with padding), in one line.
pub(crate) fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A body in base64, lines of 76 characters, each ending in CRLF (nothing for an empty body).
pub(crate) fn base64_body(bytes: &[u8], out: &mut String) {
    let encoded = base64(bytes);
    for line in encoded.as_bytes().chunks(BASE64_LINE) {
        // Base64 is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push_str("\r\n");
    }
}

/// Words longer than this are encoded (encoded-words can be folded between; a plain word
/// cannot, and a line may not pass 998 characters).
const MAX_PLAIN_WORD: usize = 200;

/// Whether `value` can go into a header as it is: printable ASCII (and spaces), nothing that
/// could be read as an encoded-word, no leading, trailing or double space (folding would lose
/// it), no word too long to fold.
fn plain(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.contains("=?")
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains("  ")
        && value.split(' ').all(|word| word.len() <= MAX_PLAIN_WORD)
}

/// `value` as RFC 2047 encoded-words (`=?UTF-8?B?…?=`), each at most 75 characters, never
/// splitting a character.
pub(crate) fn encoded_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut start = 0;
    while start < value.len() {
        let mut end = (start + WORD_BYTES).min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!(
            "=?UTF-8?B?{}?=",
            base64(&value.as_bytes()[start..end])
        ));
        start = end;
    }
    words
}

/// Control characters (CR, LF, TAB, …) become spaces: a header field is one logical line. The
/// exact texts are in the message's body parts and in `users.json`/`teams.json`.
pub(crate) fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Folds `tokens` (joined by single spaces) into a header field `name: …` with CRLF, breaking
/// lines before a token where the line would pass 78 characters.
fn fold(name: &str, tokens: &[String], out: &mut String) {
    out.push_str(name);
    out.push(':');
    let mut line = name.len() + 1;
    for token in tokens {
        if line + 1 + token.len() > FOLD_AT && line > name.len() + 1 {
            out.push_str("\r\n");
            line = 0;
        }
        out.push(' ');
        out.push_str(token);
        line += 1 + token.len();
    }
    out.push_str("\r\n");
}

/// An unstructured header field (`Subject`, `X-…`): as it is when plain ASCII, else as
/// encoded-words; control characters become spaces.
pub(crate) fn unstructured(name: &str, value: &str, out: &mut String) {
    let value = one_line(value);
    let tokens: Vec<String> = if plain(&value) {
        value.split(' ').map(str::to_owned).collect()
    } else {
        encoded_words(&value)
    };
    fold(name, &tokens, out);
}

/// A display name as an RFC 5322 phrase: a quoted string when printable ASCII, else
/// encoded-words.
pub(crate) fn phrase(name: &str) -> Vec<String> {
    let name = one_line(name);
    if plain(&name) {
        let mut quoted = String::with_capacity(name.len() + 2);
        quoted.push('"');
        for c in name.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        vec![quoted]
    } else {
        encoded_words(&name)
    }
}

/// An address header field (`From`, `To`): each mailbox `phrase <address>`, comma-separated,
/// folded between words.
pub(crate) fn addresses(name: &str, mailboxes: &[(Option<String>, String)], out: &mut String) {
    let mut tokens = Vec::new();
    for (index, (display, address)) in mailboxes.iter().enumerate() {
        if let Some(display) = display.as_deref().filter(|d| !d.trim().is_empty()) {
            tokens.extend(phrase(display));
        }
        let mut address = format!("<{address}>");
        if index + 1 < mailboxes.len() {
            address.push(',');
        }
        tokens.push(address);
    }
    fold(name, &tokens, out);
}

/// Whether `value` may be an atom of a message id or address as it is: letters, digits, `-`
/// and `_`, at most 64 characters (no dots, so the parts of a composed id cannot run into one
/// another).
fn is_atom(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `value` as an atom of a message id or address: as it is when [`is_atom`], else `h` and the
/// first 24 hex digits of its SHA-256 (ids are free text; the real id is in an `X-CCE-` field).
pub(crate) fn atom(value: &str) -> String {
    if is_atom(value) {
        value.to_owned()
    } else {
        format!("h{}", &hex::encode(Sha256::digest(value.as_bytes()))[..24])
    }
}

/// The domain of a company's synthetic addresses and message ids: `<company>.chat.invalid`
/// (`.invalid` is reserved, RFC 2606: nothing is ever delivered there).
pub(crate) fn domain(company_id: &str) -> String {
    let label = company_id.to_ascii_lowercase();
    let label = if is_atom(&label) && !label.starts_with('-') && !label.ends_with('-') {
        label
    } else {
        atom(company_id)
    };
    format!("{label}.chat.invalid")
}

/// A person's synthetic address: `<person id>@<company>.chat.invalid`.
pub(crate) fn address(person_id: &str, company_id: &str) -> String {
    format!("{}@{}", atom(person_id), domain(company_id))
}

/// An RFC 5322 date (`Sun, 01 Feb 2026 10:00:00 +0000`), in UTC.
pub(crate) fn date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
        let mut body = String::new();
        base64_body(&[0xffu8; 100], &mut body);
        let lines: Vec<&str> = body.split("\r\n").collect();
        assert_eq!(lines.len(), 3, "two lines and the end: {body:?}");
        assert_eq!(lines[0].len(), 76);
        assert_eq!(lines[2], "");
    }

    #[test]
    fn headers_are_folded_and_encoded_only_when_needed() {
        let mut out = String::new();
        unstructured("Subject", "[Desk] hello world", &mut out);
        assert_eq!(out, "Subject: [Desk] hello world\r\n");

        // Long ASCII: folded at spaces, no line past 78.
        let mut out = String::new();
        unstructured("Subject", "word ".repeat(40).trim_end(), &mut out);
        assert!(out.split("\r\n").all(|l| l.len() <= 78), "{out}");
        assert!(out.contains("\r\n word"));
        assert!(out.ends_with("\r\n") && !out.ends_with("\r\n\r\n"));

        // Non-ASCII, emoji, CR/LF and lookalike encoded-words: encoded, each word ≤ 75.
        for value in [
            "Grüße aus Zürich",
            "🚀🚀🚀 launch 🚀",
            "名前のチーム".repeat(20).as_str(),
            "two\r\nlines",
            "=?UTF-8?B?Zm9v?= is not mine",
            " leading space",
        ] {
            let mut out = String::new();
            unstructured("X-CCE-Conversation-Name", value, &mut out);
            for (index, line) in out.trim_end().split("\r\n").enumerate() {
                assert!(line.is_ascii(), "{line}");
                assert!(index == 0 || line.starts_with(' '), "{out}");
                for word in line.split(' ').filter(|w| w.starts_with("=?")) {
                    assert!(word.len() <= 75, "{word}");
                }
            }
            assert!(!out.trim_end().contains("\r\n\r\n"));
        }
        // A word too long to fold is encoded, so no line passes 998 characters.
        let mut out = String::new();
        unstructured("X-CCE-File-Name", &"x".repeat(5_000), &mut out);
        assert!(out.starts_with("X-CCE-File-Name: =?UTF-8?B?"), "{out:.80}");
        assert!(out.split("\r\n").all(|l| l.len() <= 100), "{out:.80}");
        assert_eq!(
            phrase(&"y".repeat(300)).len(),
            7,
            "encoded-words, not one quoted word"
        );
        // A multi-byte character is never split between words.
        let words = encoded_words(&"é".repeat(100));
        assert!(words.len() > 1);
        assert!(words.iter().all(|w| w.len() <= 75));
    }

    #[test]
    fn display_names_are_quoted_or_encoded() {
        assert_eq!(phrase("Ann Lee"), ["\"Ann Lee\""]);
        assert_eq!(phrase(r#"Ann "the" \ Lee"#), [r#""Ann \"the\" \\ Lee""#]);
        assert!(phrase("Zoë").iter().all(|w| w.starts_with("=?UTF-8?B?")));
        let mut out = String::new();
        addresses(
            "To",
            &[
                (Some("Ann".into()), "ann@acme.chat.invalid".into()),
                (None, "bob@acme.chat.invalid".into()),
            ],
            &mut out,
        );
        assert_eq!(
            out,
            "To: \"Ann\" <ann@acme.chat.invalid>, <bob@acme.chat.invalid>\r\n"
        );
    }

    #[test]
    fn ids_become_atoms_and_domains() {
        assert_eq!(atom("u-1_x"), "u-1_x");
        for odd in ["a.b", "a b", "ü", "", &"x".repeat(65), "a@b", "<a>"] {
            let got = atom(odd);
            assert_eq!(got.len(), 25, "{odd:?}");
            assert!(is_atom(&got));
        }
        assert_ne!(atom("a.b"), atom("a_b"));
        assert_eq!(address("ann", "Acme"), "ann@acme.chat.invalid");
        assert_eq!(
            domain("acme.eu").len(),
            "h".len() + 24 + ".chat.invalid".len()
        );
    }

    #[test]
    fn dates_are_rfc_5322() {
        let at: DateTime<Utc> = "2026-02-01T10:00:05.123Z".parse().unwrap();
        assert_eq!(date(at), "Sun, 01 Feb 2026 10:00:05 +0000");
    }
}
