//! The EML format (`docs/export-format.md`, "EML"): one RFC 5322 message per item of a
//! conversation's day — a post with its edits and deletion, a note, a file shared — as
//! archiving services such as Global Relay ingest them (`X-GlobalRelay-MsgType`, the chat's
//! ids in `X-` fields, the thread in `In-Reply-To`/`References`).
//!
//! The items are the JSON format's (`items.rs`), made the same way and within the same memory
//! (`dayfiles.rs`); only the last step differs: each part of a day file becomes one `.eml`
//! entry per item, `<conversation folder>/<date>/<position>_<kind>-<id>.eml`, rendered on the
//! compression threads. Bodies are base64 (every byte of a text — CR, LF, trailing spaces —
//! survives), header fields are folded, non-ASCII ones as RFC 2047 encoded-words (`mime.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::ArchiveError;
use crate::dayfiles::PartItems;
use crate::items::{Item, Person, PersonRef, item_key};
use crate::manifest::Counts;
use crate::mime;
use crate::names::sanitize;
use crate::zip::{Sink, ZipWriter};

/// `X-GlobalRelay-MsgType`: the message type Global Relay files these messages under.
pub(crate) const MSG_TYPE: &str = "ChatComplianceExport";
/// Members named in `To` at most; the rest are counted in `X-CCE-Recipients-Omitted` (the
/// conversation's members are all in `teams.json`/`users.json`).
pub(crate) const MAX_RECIPIENTS: usize = 100;
/// Parts are separated by this; bodies are base64 and header lines never start with `--`, so
/// it cannot occur in a message otherwise.
const BOUNDARY: &str = "=_cce_part";

/// What every message of a conversation's day shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) company_id: String,
    pub(crate) conversation_id: String,
    pub(crate) kind: &'static str,
    pub(crate) name: Option<String>,
    /// Local date of the day file (`YYYY-MM-DD`).
    pub(crate) date: String,
    /// The entries' folder: `<top>/<section>/<conversation folder>/<date>`.
    pub(crate) dir: String,
    /// `To`: (display name, address) of the first members.
    pub(crate) to: Vec<(Option<String>, String)>,
    /// Members known but not in `to`.
    pub(crate) omitted: usize,
    /// The companies of the members in `to`, by person id: the domain of a sender the
    /// directory knows only as a member.
    pub(crate) member_companies: HashMap<String, String>,
}

/// Writes one part of a day file as one message per item; `position` is the number of items
/// of the day file before this part. Returns the number after it.
pub(crate) async fn write_part<S: Sink>(
    zip: &mut ZipWriter<S>,
    context: &Arc<Context>,
    items: PartItems,
    mut position: usize,
) -> Result<usize, ArchiveError> {
    // A part on disk is read off the async threads.
    let items = tokio::task::spawn_blocking(move || items.load())
        .await
        .map_err(|e| ArchiveError::Internal(format!("reading a day file's part: {e}")))??;
    // Items of one id twice in a day (a producer's mistake, `items.rs`) get distinct ids.
    let mut seen: HashMap<String, u32> = HashMap::new();
    for item in items {
        position += 1;
        let (kind, id) = kind_and_id(&item);
        let repeat = {
            let count = seen.entry(item_key(item.kind(), id)).or_insert(0);
            *count += 1;
            *count
        };
        let name = format!(
            "{}/{position:06}_{kind}-{}.eml",
            context.dir,
            sanitize(id, 60)
        );
        let estimate = item.estimate() * 2 + 2_048;
        let context = context.clone();
        zip.add_with(name, estimate, move || {
            Ok(render(&context, &item, repeat).into_bytes())
        })
        .await?;
    }
    Ok(position)
}

fn kind_and_id(item: &Item) -> (&'static str, &str) {
    match item {
        Item::Post(i) => ("post", &i.id),
        Item::Note(i) => ("note", &i.id),
        Item::File(i) => ("file", &i.id),
    }
}

/// The message id of item `id` of `kind` in the conversation: `<kind.item.conversation@company
/// domain>`, the same in every export, so a reply names its parent's and an archive that
/// already holds a message recognises it.
pub(crate) fn message_id(context: &Context, kind: &str, id: &str, suffix: &str) -> String {
    format!(
        "<{kind}.{}.{}{suffix}@{}>",
        mime::atom(id),
        mime::atom(&context.conversation_id),
        mime::domain(&context.company_id)
    )
}

fn person(who: &PersonRef) -> (&str, Option<&str>) {
    match &*who.0 {
        Person::Known { id, name, .. } => (id, name.as_deref()),
        Person::Unknown { id } => (id, None),
    }
}

fn parse_time(at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A short one-line preview of a text for `Subject`.
fn preview(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    let mut out: String = line.chars().take(60).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// One body part: base64 UTF-8 text with its headers.
struct Part<'a> {
    headers: Vec<(&'static str, String)>,
    text: &'a str,
}

/// What one event in a part says: its kind, time, who, and how it is described.
fn event_headers(
    part: &str,
    at: &str,
    who: &PersonRef,
    out_of_order: bool,
    description: String,
) -> Vec<(&'static str, String)> {
    let (id, name) = person(who);
    let mut headers = vec![
        ("Content-Description", description),
        ("X-CCE-Part", part.to_owned()),
        ("X-CCE-Event-At", at.to_owned()),
        ("X-CCE-Actor-Id", id.to_owned()),
    ];
    if let Some(name) = name {
        headers.push(("X-CCE-Actor-Name", name.to_owned()));
    }
    if out_of_order {
        headers.push(("X-CCE-Out-Of-Order", "yes".into()));
    }
    headers
}

fn who_text(who: &PersonRef) -> String {
    match person(who) {
        (id, Some(name)) => format!("{name} ({id})"),
        (id, None) => id.to_owned(),
    }
}

/// The message of one item.
pub(crate) fn render(context: &Context, item: &Item, repeat: u32) -> String {
    let conversation = context.name.as_deref().unwrap_or(&context.conversation_id);
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    let mut parts: Vec<Part<'_>> = Vec::new();
    let suffix = |created: bool| {
        let mut suffix = String::new();
        if !created {
            suffix.push_str(&format!(".changes-{}", context.date));
        }
        if repeat > 1 {
            suffix.push_str(&format!(".{repeat}"));
        }
        suffix
    };
    // (first event time, sender, message id, parent message id, subject)
    let (kind, id) = kind_and_id(item);
    let (first_at, from, own_id, parent, subject) = match item {
        Item::Post(post) => {
            let created = post.created_at.is_some();
            let first_at = post
                .created_at
                .clone()
                .or_else(|| post.edits.first().map(|e| e.at.clone()))
                .or_else(|| post.deleted.as_ref().map(|d| d.at.clone()))
                .unwrap_or_default();
            let from = post
                .author
                .clone()
                .or_else(|| post.edits.first().map(|e| e.editor.clone()))
                .or_else(|| post.deleted.as_ref().map(|d| d.by.clone()));
            let parent = if created {
                post.parent_post_id
                    .as_deref()
                    .map(|p| message_id(context, "post", p, ""))
            } else {
                Some(message_id(context, "post", &post.id, ""))
            };
            let what = match (created, post.deleted.is_some()) {
                (true, _) => String::new(),
                (false, false) => "(edited) ".into(),
                (false, true) => "(deleted) ".into(),
            };
            let text = post.text.as_deref().unwrap_or_default();
            let subject = format!("[{conversation}] {what}{}", preview(text));
            if let Some(at) = &post.created_at {
                headers.push(("X-CCE-Created-At", at.clone()));
            } else {
                headers.push(("X-CCE-Created-Elsewhere", "yes".into()));
            }
            if let Some(parent) = &post.parent_post_id {
                headers.push(("X-CCE-Parent-Post-Id", parent.clone()));
            }
            headers.push(("X-CCE-Edit-Count", post.edits.len().to_string()));
            let mut text_part = vec![
                ("Content-Description", "The post's text".to_owned()),
                ("X-CCE-Part", "text".to_owned()),
            ];
            if post.text.is_none() {
                text_part.push(("X-CCE-Text", "unknown".into()));
            }
            parts.push(Part {
                headers: text_part,
                text,
            });
            let count = post.edits.len();
            for (index, edit) in post.edits.iter().enumerate() {
                let n = index + 1;
                let by = who_text(&edit.editor);
                let mut before = event_headers(
                    "edit-before",
                    &edit.at,
                    &edit.editor,
                    edit.out_of_order,
                    format!(
                        "Edit {n} of {count}, at {} by {by}: the text before",
                        edit.at
                    ),
                );
                before.push(("X-CCE-Edit", n.to_string()));
                if edit.text_before.is_none() {
                    before.push(("X-CCE-Text-Before", "unknown".into()));
                }
                parts.push(Part {
                    headers: before,
                    text: edit.text_before.as_deref().unwrap_or_default(),
                });
                parts.push(Part {
                    headers: vec![
                        (
                            "Content-Description",
                            format!(
                                "Edit {n} of {count}, at {} by {by}: the text after",
                                edit.at
                            ),
                        ),
                        ("X-CCE-Part", "edit-after".into()),
                        ("X-CCE-Edit", n.to_string()),
                    ],
                    text: &edit.text,
                });
            }
            if let Some(deleted) = &post.deleted {
                headers.push(("X-CCE-Deleted-At", deleted.at.clone()));
                headers.push(("X-CCE-Deleted-By", person(&deleted.by).0.to_owned()));
                let mut part = event_headers(
                    "delete",
                    &deleted.at,
                    &deleted.by,
                    deleted.out_of_order,
                    format!(
                        "Deleted at {} by {}: the text before",
                        deleted.at,
                        who_text(&deleted.by)
                    ),
                );
                if deleted.text_before.is_none() {
                    part.push(("X-CCE-Text-Before", "unknown".into()));
                }
                parts.push(Part {
                    headers: part,
                    text: deleted.text_before.as_deref().unwrap_or_default(),
                });
            }
            if let Some(dates) = &post.changed_before_creation_on {
                headers.push(("X-CCE-Changed-Before-Creation-On", dates.join(", ")));
            }
            (
                first_at,
                from,
                message_id(context, "post", &post.id, &suffix(created)),
                parent,
                subject,
            )
        }
        Item::Note(note) => {
            let created = note.created_at.is_some();
            let first_at = note
                .created_at
                .clone()
                .or_else(|| note.last_edited_at.clone())
                .or_else(|| note.deleted.as_ref().map(|d| d.at.clone()))
                .unwrap_or_default();
            let from = note
                .author
                .clone()
                .or_else(|| note.deleted.as_ref().map(|d| d.by.clone()));
            let title = note.title.as_deref().unwrap_or_default();
            let subject = format!("[{conversation}] Note: {}", preview(title));
            if let Some(at) = &note.created_at {
                headers.push(("X-CCE-Created-At", at.clone()));
            } else {
                headers.push(("X-CCE-Created-Elsewhere", "yes".into()));
            }
            if let Some(title) = &note.title {
                headers.push(("X-CCE-Note-Title", title.clone()));
            }
            // Notes keep no edit log (the JSON format's rule): how many, and the last.
            headers.push(("X-CCE-Edit-Count", note.edit_count.to_string()));
            if let Some(at) = &note.last_edited_at {
                headers.push(("X-CCE-Last-Edited-At", at.clone()));
            }
            if note.last_edit_out_of_order {
                headers.push(("X-CCE-Last-Edit-Out-Of-Order", "yes".into()));
            }
            let mut text_part = vec![
                ("Content-Description", "The note's text".to_owned()),
                ("X-CCE-Part", "text".to_owned()),
            ];
            if note.text.is_none() {
                text_part.push(("X-CCE-Text", "unknown".into()));
            }
            parts.push(Part {
                headers: text_part,
                text: note.text.as_deref().unwrap_or_default(),
            });
            if let Some(deleted) = &note.deleted {
                headers.push(("X-CCE-Deleted-At", deleted.at.clone()));
                headers.push(("X-CCE-Deleted-By", person(&deleted.by).0.to_owned()));
                parts.push(Part {
                    headers: event_headers(
                        "delete",
                        &deleted.at,
                        &deleted.by,
                        deleted.out_of_order,
                        format!("Deleted at {} by {}", deleted.at, who_text(&deleted.by)),
                    ),
                    text: "",
                });
            }
            if let Some(dates) = &note.changed_before_creation_on {
                headers.push(("X-CCE-Changed-Before-Creation-On", dates.join(", ")));
            }
            let parent = (!created).then(|| message_id(context, "note", &note.id, ""));
            (
                first_at,
                from,
                message_id(context, "note", &note.id, &suffix(created)),
                parent,
                subject,
            )
        }
        Item::File(file) => {
            let subject = format!("[{conversation}] File: {}", preview(&file.name));
            headers.push(("X-CCE-Created-At", file.shared_at.clone()));
            headers.push(("X-CCE-File-Name", file.name.clone()));
            headers.push(("X-CCE-File-Size", file.size.to_string()));
            headers.push(("X-CCE-File-Content-Type", file.content_type.clone()));
            headers.push(("X-CCE-File-Sha256", file.sha256.clone()));
            headers.push(("X-CCE-File-Content", "not included".into()));
            if let Some(post) = &file.post_id {
                headers.push(("X-CCE-Post-Id", post.clone()));
            }
            let parent = file
                .post_id
                .as_deref()
                .map(|p| message_id(context, "post", p, ""));
            (
                file.shared_at.clone(),
                Some(file.author.clone()),
                message_id(context, "file", &file.id, &suffix(true)),
                parent,
                subject,
            )
        }
    };
    // A file's body describes it (its content is not in the export).
    let file_text;
    if let Item::File(file) = item {
        file_text = format!(
            "Shared file: {}\r\nSize: {} bytes\r\nType: {}\r\nSHA-256: {}\r\nThe file's \
             content is not included in this export.\r\n",
            mime::one_line(&file.name),
            file.size,
            mime::one_line(&file.content_type),
            file.sha256
        );
        parts.push(Part {
            headers: vec![
                ("Content-Description", "The file shared".to_owned()),
                ("X-CCE-Part", "file".to_owned()),
            ],
            text: &file_text,
        });
    }

    let mut out = String::with_capacity(2_048 + item.estimate() * 2);
    let date = parse_time(&first_at).map_or_else(|| mime::date(DateTime::UNIX_EPOCH), mime::date);
    out.push_str(&format!("Date: {date}\r\n"));
    let (from_id, from_name) = from.as_ref().map_or(("unknown", None), |p| person(p));
    // A person at their own company's domain; one the directory does not know at the
    // exporting company's.
    let from_company = match from.as_ref().map(|p| &*p.0) {
        Some(Person::Known { company_id, .. }) => company_id.as_str(),
        Some(Person::Unknown { id }) => context
            .member_companies
            .get(id)
            .map_or(context.company_id.as_str(), String::as_str),
        None => context.company_id.as_str(),
    };
    mime::addresses(
        "From",
        &[(
            from_name.map(str::to_owned),
            mime::address(from_id, from_company),
        )],
        &mut out,
    );
    if !context.to.is_empty() {
        mime::addresses("To", &context.to, &mut out);
    }
    mime::unstructured("Subject", &subject, &mut out);
    out.push_str(&format!("Message-ID: {own_id}\r\n"));
    if let Some(parent) = &parent {
        out.push_str(&format!(
            "In-Reply-To: {parent}\r\nReferences: {parent}\r\n"
        ));
    }
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\r\n"
    ));
    out.push_str("Precedence: bulk\r\nAuto-Submitted: auto-generated\r\n");
    out.push_str(&format!("X-GlobalRelay-MsgType: {MSG_TYPE}\r\n"));
    let mut common = vec![
        ("X-CCE-Company-Id", context.company_id.clone()),
        ("X-CCE-Conversation-Id", context.conversation_id.clone()),
        ("X-CCE-Conversation-Kind", context.kind.to_owned()),
    ];
    if let Some(name) = &context.name {
        common.push(("X-CCE-Conversation-Name", name.clone()));
    }
    common.push(("X-CCE-Local-Date", context.date.clone()));
    common.push(("X-CCE-Item-Kind", kind.to_owned()));
    common.push(("X-CCE-Item-Id", id.to_owned()));
    if let Some(from) = &from {
        common.push(("X-CCE-From-Id", person(from).0.to_owned()));
    }
    if context.omitted > 0 {
        common.push(("X-CCE-Recipients-Omitted", context.omitted.to_string()));
    }
    for (name, value) in common.into_iter().chain(headers) {
        mime::unstructured(name, &value, &mut out);
    }
    out.push_str("\r\nThis is a multi-part message in MIME format.\r\n");
    for part in parts {
        out.push_str(&format!("--{BOUNDARY}\r\n"));
        out.push_str("Content-Type: text/plain; charset=\"utf-8\"\r\n");
        out.push_str("Content-Transfer-Encoding: base64\r\nContent-Disposition: inline\r\n");
        for (name, value) in &part.headers {
            mime::unstructured(name, value, &mut out);
        }
        out.push_str("\r\n");
        mime::base64_body(part.text.as_bytes(), &mut out);
    }
    out.push_str(&format!("--{BOUNDARY}--\r\n"));
    out
}

/// Recounts one message (`verify`): the events it shows, by its item kind, creation header,
/// note edit count and its edit and deletion parts; an error says why it is not a message
/// of this format.
pub(crate) fn recount(message: &[u8]) -> Result<Counts, String> {
    let text = std::str::from_utf8(message).map_err(|_| "not UTF-8 (the format is ASCII)")?;
    if !text.is_ascii() {
        return Err("not ASCII: header fields must be encoded".into());
    }
    if text.contains('\n') && text.replace("\r\n", "").contains(['\r', '\n']) {
        return Err("a line does not end with CRLF".into());
    }
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("no blank line after the header fields")?;
    let field = |name: &str| {
        head.split("\r\n")
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
    };
    let kind = field("X-CCE-Item-Kind").ok_or("no X-CCE-Item-Kind")?;
    let created = u64::from(field("X-CCE-Created-At").is_some());
    let lines = |value: &str| {
        body.split("\r\n")
            .filter(|line| line.strip_prefix("X-CCE-Part: ") == Some(value))
            .count() as u64
    };
    let (edits, deletes) = (lines("edit-before"), lines("delete"));
    let mut counts = Counts::default();
    match kind {
        "post" => {
            counts.posts = created;
            counts.edits = edits;
            counts.deletes = deletes;
        }
        "note" => {
            let edit_count = field("X-CCE-Edit-Count")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or("a note without a numeric X-CCE-Edit-Count")?;
            counts.notes = created + edit_count + deletes;
        }
        "file" => counts.files_shared = 1,
        other => {
            return Err(format!(
                "X-CCE-Item-Kind {other:?} is not one of the format's"
            ));
        }
    }
    counts.events =
        counts.posts + counts.edits + counts.deletes + counts.notes + counts.files_shared;
    if counts.events == 0 {
        return Err("shows no event".into());
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{Edit, FileItem, ItemKind, PostDeletion, PostItem};

    fn person(id: &str, name: Option<&str>) -> PersonRef {
        PersonRef(Arc::new(Person::Known {
            company_id: "acme".into(),
            email: None,
            id: id.into(),
            name: name.map(str::to_owned),
        }))
    }

    fn context() -> Context {
        Context {
            company_id: "acme".into(),
            conversation_id: "c1".into(),
            kind: "team",
            name: Some("Desk «Zürich» 🚀".into()),
            date: "2026-02-01".into(),
            dir: "top/Team_Chats/c1/2026-02-01".into(),
            to: vec![(Some("Ann".into()), mime::address("ann", "acme"))],
            omitted: 0,
            member_companies: HashMap::from([("gus".into(), "globex".into())]),
        }
    }

    fn post(text: &str) -> PostItem {
        PostItem {
            author: Some(person("ann", Some("Ann Lee"))),
            changed_before_creation_on: None,
            created_at: Some("2026-02-01T10:00:00Z".into()),
            created_elsewhere: false,
            deleted: None,
            edits: vec![],
            id: "p1".into(),
            kind: ItemKind::Post,
            parent_post_id: Some("p0".into()),
            text: Some(text.into()),
        }
    }

    #[test]
    fn a_post_with_edits_and_deletion_is_one_message_that_recounts() {
        let mut item = post("héllo\r\nworld, \"quoted\" 🚀");
        item.edits.push(Edit {
            at: "2026-02-01T10:05:00Z".into(),
            editor: person("ann", Some("Ann Lee")),
            out_of_order: false,
            text: "second".into(),
            text_before: Some("first".into()),
        });
        item.deleted = Some(PostDeletion {
            at: "2026-02-01T11:00:00Z".into(),
            by: person("bob", None),
            out_of_order: false,
            text_before: Some("second".into()),
        });
        let message = render(&context(), &Item::Post(item), 1);
        assert!(message.is_ascii());
        assert!(
            !message.replace("\r\n", "").contains(['\r', '\n']),
            "CRLF only"
        );
        assert!(message.contains("Message-ID: <post.p1.c1@acme.chat.invalid>\r\n"));
        assert!(message.contains("In-Reply-To: <post.p0.c1@acme.chat.invalid>\r\n"));
        assert!(message.contains("Date: Sun, 01 Feb 2026 10:00:00 +0000\r\n"));
        assert!(message.contains("From: \"Ann Lee\" <ann@acme.chat.invalid>\r\n"));
        assert!(message.contains("X-CCE-Conversation-Name: =?UTF-8?B?"));
        for line in message.split("\r\n") {
            assert!(line.len() <= 998, "{line}");
        }
        let counts = recount(message.as_bytes()).unwrap();
        assert_eq!(
            (counts.posts, counts.edits, counts.deletes, counts.events),
            (1, 1, 1, 3)
        );
    }

    #[test]
    fn changes_of_a_post_created_elsewhere_reply_to_it() {
        let mut item = post("");
        item.created_at = None;
        item.created_elsewhere = true;
        item.author = None;
        item.text = None;
        item.deleted = Some(PostDeletion {
            at: "2026-02-01T11:00:00Z".into(),
            by: person("bob", None),
            out_of_order: false,
            text_before: None,
        });
        let message = render(&context(), &Item::Post(item), 2);
        assert!(
            message.contains("Message-ID: <post.p1.c1.changes-2026-02-01.2@acme.chat.invalid>")
        );
        assert!(message.contains("In-Reply-To: <post.p1.c1@acme.chat.invalid>"));
        assert!(message.contains("From: <bob@acme.chat.invalid>"));
        assert!(message.contains("X-CCE-Text-Before: unknown"));
        let counts = recount(message.as_bytes()).unwrap();
        assert_eq!((counts.posts, counts.deletes, counts.events), (0, 1, 1));
        // Someone the directory knows only as a member: at their company's domain.
        let mut by_member = post("hi");
        by_member.author = Some(PersonRef(Arc::new(Person::Unknown { id: "gus".into() })));
        let message = render(&context(), &Item::Post(by_member), 1);
        assert!(
            message.contains("From: <gus@globex.chat.invalid>"),
            "{message}"
        );
    }

    #[test]
    fn empty_long_and_odd_texts_and_files_render() {
        for text in [
            "",
            &"x".repeat(100_000),
            "=?UTF-8?B?Zm9v?=",
            "\r\n--=_cce_part\r\n",
        ] {
            let message = render(&context(), &Item::Post(post(text)), 1);
            assert!(message.split("\r\n").all(|l| l.len() <= 998));
            assert_eq!(message.matches("--=_cce_part\r\n").count(), 1, "one part");
            assert_eq!(recount(message.as_bytes()).unwrap().posts, 1);
        }
        let file = Item::File(FileItem {
            author: person("ann", None),
            content_included: false,
            content_type: "application/pdf".into(),
            id: "f1".into(),
            kind: ItemKind::File,
            name: "Q1 report — final.pdf".into(),
            post_id: Some("p1".into()),
            sha256: "ab".repeat(32),
            shared_at: "2026-02-01T10:00:00Z".into(),
            size: 1234,
        });
        let message = render(&context(), &file, 1);
        assert!(message.contains("X-CCE-File-Size: 1234\r\n"));
        assert!(message.contains("In-Reply-To: <post.p1.c1@acme.chat.invalid>"));
        assert_eq!(recount(message.as_bytes()).unwrap().files_shared, 1);
    }
}
