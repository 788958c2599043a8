//! The CSV format (`docs/export-format.md`, "CSV"): one row per event — post, edit, deletion,
//! note, note edit, note deletion, file shared — in log order, one file per local day (all
//! conversations, split into parts like day files), RFC 4180: CRLF line ends, a header row,
//! fields with a comma, quote, CR or LF quoted and quotes doubled, UTF-8 with a byte-order mark
//! (so spreadsheets read it as UTF-8).
//!
//! Formula injection: a cell that starts with `=`, `+`, `-`, `@`, TAB or CR would run as a
//! formula in a spreadsheet, so it gets a `'` in front, as OWASP recommends and as spreadsheet
//! users expect (it shows the text as typed). So that the original stays recoverable without
//! guessing, a cell that starts with `'` gets one more too: every cell starting with `'` had
//! exactly one added, and removing it gives the original.
//!
//! Rows are made from each event as the renderer applies it (not from the day file's items), so
//! a row is exactly one event and nothing is folded; memory holds one part at a time.

use crate::ArchiveError;
use crate::dayfiles::MAX_PART_BYTES;
use crate::items::{Change, Item, Person, PersonRef};
use crate::manifest::Counts;

/// The folder of the CSV files, under the archive's top-level folder.
pub(crate) const FOLDER: &str = "Events";

/// The columns, in order (`docs/export-format.md`, "CSV").
pub(crate) const COLUMNS: [&str; 20] = [
    "event_id",
    "event_time",
    "local_date",
    "event_kind",
    "conversation_id",
    "conversation_kind",
    "conversation_name",
    "item_id",
    "parent_post_id",
    "actor_id",
    "actor_name",
    "actor_email",
    "title",
    "text",
    "previous_text",
    "previous_text_known",
    "file_name",
    "file_size",
    "file_content_type",
    "file_sha256",
];

/// Rows per file before the next row starts a new part: spreadsheets take about a million.
pub(crate) const MAX_ROWS_PER_PART: usize = 100_000;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What an event row says of its conversation.
pub(crate) struct Conversation<'a> {
    pub(crate) id: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) name: Option<&'a str>,
}

/// The row of one event (the change it makes, as the renderer built it), in [`COLUMNS`] order.
pub(crate) fn event_row(
    event_id: &str,
    local_date: &str,
    conversation: &Conversation<'_>,
    item_id: &str,
    actor: &PersonRef,
    change: &Change,
) -> Vec<String> {
    let mut row = vec![String::new(); COLUMNS.len()];
    row[0] = event_id.to_owned();
    row[2] = local_date.to_owned();
    row[4] = conversation.id.to_owned();
    row[5] = conversation.kind.to_owned();
    row[6] = conversation.name.unwrap_or_default().to_owned();
    row[7] = item_id.to_owned();
    let (id, name, email) = match &*actor.0 {
        Person::Known {
            id, name, email, ..
        } => (id.as_str(), name.as_deref(), email.as_deref()),
        Person::Unknown { id } => (id.as_str(), None, None),
    };
    row[9] = id.to_owned();
    row[10] = name.unwrap_or_default().to_owned();
    row[11] = email.unwrap_or_default().to_owned();
    let known = |text: &Option<String>| if text.is_some() { "yes" } else { "no" }.to_owned();
    let (at, kind) = match change {
        Change::Create(Item::Post(post)) => {
            row[8] = post.parent_post_id.clone().unwrap_or_default();
            row[13] = post.text.clone().unwrap_or_default();
            (post.created_at.clone().unwrap_or_default(), "post")
        }
        Change::PostEdit(edit) => {
            row[13] = edit.text.clone();
            row[14] = edit.text_before.clone().unwrap_or_default();
            row[15] = known(&edit.text_before);
            (edit.at.clone(), "edit")
        }
        Change::PostDelete(deleted) => {
            row[14] = deleted.text_before.clone().unwrap_or_default();
            row[15] = known(&deleted.text_before);
            (deleted.at.clone(), "delete")
        }
        Change::Create(Item::Note(note)) => {
            row[12] = note.title.clone().unwrap_or_default();
            row[13] = note.text.clone().unwrap_or_default();
            (note.created_at.clone().unwrap_or_default(), "note")
        }
        Change::NoteEdit { title, text, at } => {
            row[12] = title.clone().unwrap_or_default();
            row[13] = text.clone();
            (at.clone(), "note_edit")
        }
        Change::NoteDelete(deleted) => (deleted.at.clone(), "note_delete"),
        Change::Create(Item::File(file)) => {
            row[8] = file.post_id.clone().unwrap_or_default();
            row[16] = file.name.clone();
            row[17] = file.size.to_string();
            row[18] = file.content_type.clone();
            row[19] = file.sha256.clone();
            (file.shared_at.clone(), "file")
        }
    };
    row[1] = at;
    row[3] = kind.to_owned();
    row
}

/// Counts one event of `kind` (a row's `event_kind`); false for a kind that is not one.
pub(crate) fn count_kind(kind: &str, counts: &mut Counts) -> bool {
    match kind {
        "post" => counts.posts += 1,
        "edit" => counts.edits += 1,
        "delete" => counts.deletes += 1,
        "note" | "note_edit" | "note_delete" => counts.notes += 1,
        "file" => counts.files_shared += 1,
        _ => return false,
    }
    counts.events += 1;
    true
}

/// A cell as written: guarded against formula injection, then quoted if it needs to be.
pub(crate) fn write_cell(value: &str, out: &mut Vec<u8>) {
    let guarded = matches!(
        value.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'')
    );
    let quoted = value.contains([',', '"', '\r', '\n']);
    if quoted {
        out.push(b'"');
    }
    if guarded {
        out.push(b'\'');
    }
    for byte in value.bytes() {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    if quoted {
        out.push(b'"');
    }
}

/// The original of a cell read back (the `'` the guard added removed).
pub(crate) fn unguard(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

fn write_row(row: &[impl AsRef<str>], out: &mut Vec<u8>) {
    for (index, cell) in row.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_cell(cell.as_ref(), out);
    }
    out.extend_from_slice(b"\r\n");
}

/// The open day's CSV file: rows are appended as events come; a part is handed out when it is
/// full or the day ends.
#[derive(Debug, Default)]
pub(crate) struct CsvDays {
    date: String,
    /// The part being filled (1-based), and its rows so far.
    part: usize,
    rows: usize,
    buffer: Vec<u8>,
}

/// A finished CSV file: its path under the top-level folder and its bytes.
pub(crate) type CsvPart = (String, Vec<u8>);

impl CsvDays {
    /// Appends `row` to day `date`'s file; returns the part it filled, if the row did not fit
    /// (the row starts the next part).
    pub(crate) fn push(&mut self, date: &str, row: &[String]) -> Option<CsvPart> {
        let mut line = Vec::with_capacity(256);
        write_row(row, &mut line);
        let mut done = None;
        if self.date != date {
            done = self.finish_day();
            self.date = date.to_owned();
        } else if self.rows > 0
            && (self.rows == MAX_ROWS_PER_PART || self.buffer.len() + line.len() > MAX_PART_BYTES)
        {
            done = self.take_part();
        }
        if self.rows == 0 {
            self.part += 1;
            self.buffer.extend_from_slice(BOM);
            write_row(&COLUMNS, &mut self.buffer);
        }
        self.buffer.extend_from_slice(&line);
        self.rows += 1;
        done
    }

    /// The open day's last part, if it has rows; the next row starts a new day.
    pub(crate) fn finish_day(&mut self) -> Option<CsvPart> {
        let done = self.take_part();
        self.part = 0;
        done
    }

    fn take_part(&mut self) -> Option<CsvPart> {
        if self.rows == 0 {
            return None;
        }
        let name = if self.part == 1 {
            format!("{FOLDER}/{}.csv", self.date)
        } else {
            format!("{FOLDER}/{}_part-{}.csv", self.date, self.part)
        };
        self.rows = 0;
        Some((name, std::mem::take(&mut self.buffer)))
    }
}

/// Parses a whole CSV file (RFC 4180, as written here); fails on a quote out of place or an
/// unterminated quoted field.
pub(crate) fn parse(content: &[u8]) -> Result<Vec<Vec<String>>, ArchiveError> {
    let text = std::str::from_utf8(content.strip_prefix(BOM).unwrap_or(content))
        .map_err(|e| ArchiveError::Invalid(format!("not UTF-8: {e}")))?;
    let bad = |why: &str| ArchiveError::Invalid(format!("not RFC 4180 CSV: {why}"));
    let mut rows = Vec::new();
    let (mut row, mut cell) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => in_quotes = false,
                c => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() && !was_quoted => {
                in_quotes = true;
                was_quoted = true;
            }
            '"' => return Err(bad("a quote inside an unquoted field")),
            ',' => {
                row.push(std::mem::take(&mut cell));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
                was_quoted = false;
            }
            '\r' | '\n' => return Err(bad("a line break outside quotes that is not CRLF")),
            c if was_quoted => return Err(bad(&format!("{c:?} after a closing quote"))),
            c => cell.push(c),
        }
    }
    if in_quotes {
        return Err(bad("a quoted field is not closed"));
    }
    if !cell.is_empty() || !row.is_empty() {
        return Err(bad("the last row does not end with CRLF"));
    }
    Ok(rows)
}

/// Events of a conversation's day: ((conversation id, local date), counts).
pub(crate) type DayEvents = ((String, String), Counts);

/// Recounts a CSV file: events by (conversation id, local date), checking the header row.
pub(crate) fn recount(content: &[u8]) -> Result<Vec<DayEvents>, ArchiveError> {
    let rows = parse(content)?;
    let Some((header, rows)) = rows.split_first() else {
        return Err(ArchiveError::Invalid("no header row".into()));
    };
    if header.iter().map(String::as_str).ne(COLUMNS) {
        return Err(ArchiveError::Invalid(format!(
            "the header row is {header:?}, not the format's columns"
        )));
    }
    let mut counts: std::collections::BTreeMap<(String, String), Counts> = Default::default();
    for (number, row) in rows.iter().enumerate() {
        if row.len() != COLUMNS.len() {
            return Err(ArchiveError::Invalid(format!(
                "row {} has {} fields, not {}",
                number + 2,
                row.len(),
                COLUMNS.len()
            )));
        }
        let key = (unguard(&row[4]).to_owned(), unguard(&row[2]).to_owned());
        if !count_kind(&row[3], counts.entry(key).or_default()) {
            return Err(ArchiveError::Invalid(format!(
                "row {}: event_kind {:?} is not one of the format's",
                number + 2,
                row[3]
            )));
        }
    }
    Ok(counts.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::items::{Edit, PostDeletion};

    fn cell(value: &str) -> String {
        let mut out = Vec::new();
        write_cell(value, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_are_quoted_and_guarded_as_rfc_4180_and_owasp_say() {
        let cases = [
            ("", ""),
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\r\nlines", "\"two\r\nlines\""),
            ("lf\nonly", "\"lf\nonly\""),
            ("cr\ronly", "\"cr\ronly\""),
            ("=SUM(A1:A9)", "'=SUM(A1:A9)"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@cmd", "'@cmd"),
            ("\tTAB", "'\tTAB"),
            ("\rCR", "\"'\rCR\""),
            ("'quoted", "''quoted"),
            ("=1,2", "\"'=1,2\""),
            ("héllo 🚀 名前", "héllo 🚀 名前"),
            (" spaced ", " spaced "),
        ];
        for (value, want) in cases {
            assert_eq!(cell(value), want, "{value:?}");
            // Read back, the original is recovered.
            let mut line = Vec::new();
            write_row(&[value, "x"], &mut line);
            let rows = parse(&line).unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(unguard(&rows[0][0]), value, "{value:?}");
            assert_eq!(rows[0][1], "x");
        }
    }

    #[test]
    fn malformed_csv_is_refused() {
        for bad in [
            &b"a\"b\r\n"[..],
            b"\"open\r\n",
            b"a,b\n",
            b"a,b",
            b"\"x\"y\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"").unwrap(), Vec::<Vec<String>>::new());
        assert_eq!(parse(b"\r\n").unwrap(), vec![vec![String::new()]]);
    }

    fn ann() -> PersonRef {
        PersonRef(Arc::new(Person::Known {
            company_id: "acme".into(),
            email: Some("ann@example.com".into()),
            id: "ann".into(),
            name: Some("Ann, \"the\" Lee".into()),
        }))
    }

    #[test]
    fn parts_split_by_rows_and_days_each_with_its_header() {
        let conversation = Conversation {
            id: "c1",
            kind: "team",
            name: Some("=Desk"),
        };
        let edit = Change::PostEdit(Edit {
            at: "2026-02-01T10:00:00Z".into(),
            editor: ann(),
            out_of_order: false,
            text: "new\r\ntext, \"quoted\"".into(),
            text_before: None,
        });
        let row = event_row("e1", "2026-02-01", &conversation, "p1", &ann(), &edit);
        // Short rows, so the row count splits before the byte bound.
        let nobody = PersonRef(Arc::new(Person::Unknown { id: "u".into() }));
        let short = Change::NoteDelete(crate::items::NoteDeletion {
            at: "t".into(),
            by: nobody.clone(),
            out_of_order: false,
        });
        let short = event_row("e", "2026-02-01", &conversation, "n", &nobody, &short);
        let mut days = CsvDays::default();
        let mut parts = Vec::new();
        parts.extend(days.push("2026-02-01", &row));
        for _ in 0..MAX_ROWS_PER_PART {
            parts.extend(days.push("2026-02-01", &short));
        }
        let delete = Change::PostDelete(PostDeletion {
            at: "2026-02-02T10:00:00Z".into(),
            by: ann(),
            out_of_order: false,
            text_before: Some(String::new()),
        });
        let row2 = event_row("e2", "2026-02-02", &conversation, "p1", &ann(), &delete);
        parts.extend(days.push("2026-02-02", &row2));
        parts.extend(days.finish_day());
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Events/2026-02-01.csv",
                "Events/2026-02-01_part-2.csv",
                "Events/2026-02-02.csv"
            ]
        );
        let first = parse(&parts[0].1).unwrap();
        assert_eq!(first.len(), MAX_ROWS_PER_PART + 1, "a header and the rows");
        assert_eq!(first[1][13], "new\r\ntext, \"quoted\"");
        assert_eq!(first[1][15], "no");
        assert_eq!(unguard(&first[1][6]), "=Desk");
        assert_eq!(first[1][10], "Ann, \"the\" Lee");
        let counted = recount(&parts[0].1).unwrap();
        assert_eq!(counted.len(), 1);
        let counts = &counted[0].1;
        assert_eq!(
            (counts.edits, counts.notes),
            (1, MAX_ROWS_PER_PART as u64 - 1)
        );
        assert_eq!(recount(&parts[1].1).unwrap()[0].1.notes, 1);
        let last = recount(&parts[2].1).unwrap();
        assert_eq!(last[0].0, ("c1".into(), "2026-02-02".into()));
        assert_eq!(last[0].1.deletes, 1);
        assert!(parts.iter().all(|(_, b)| b.starts_with(BOM)));
    }
}
