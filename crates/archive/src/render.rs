//! Replays a company's log for a range into the seed's layout (`docs/export-format.md`).
//!
//! One pass, in log order (time, then id), one local day at a time: a day's files are written
//! when the next day starts. Memory holds the open day's items up to their share of the budget
//! (the largest day files move to disk past it, `dayfiles.rs`), the company's directory, one
//! count per conversation, recent post texts (for "text before" on edits and deletes; older
//! texts move to disk, `texts.rs`), and recent keys of items that a day file held without their
//! creation (so a creation read later can name those days; older keys move to disk the same
//! way). Everything else the end of the archive needs — the manifest's per-day and per-file
//! lines, the ZIP central directory — is spilled to temporary files as it is made, so memory
//! does not grow with the range or the number of files. How each event changes its item, in or
//! out of order: `items.rs`.
//!
//! Both cores: this task applies events to typed items; each day file's parts are serialised
//! and deflated on the ZIP writer's blocking threads (`ZipWriter::add_with`), a bounded number
//! and bytes at a time, and written in the order added — so the bytes are the same whatever the
//! threads or the budget.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use compliance_log::{LogReader, LogRecord, ReadProgress};
use event_model::directory::Directory;
use event_model::{ConversationKind, EventBody};

use crate::csv::CsvDays;
use crate::dayfiles::OpenDays;
use crate::directories;
use crate::directories::history::MembershipHistory;
use crate::items::{
    Change, Edit, FileItem, Item, ItemKind, NoteDeletion, NoteItem, Person, PersonRef,
    PostDeletion, PostItem, item_key,
};
use crate::manifest::{
    ConversationCounts, Counts, DayCounts, EXPORT_FORMAT_VERSION, ExportSummary, FileRecord,
    LogPosition, ManifestHead, PartitionPosition, RequestRecord,
};
use crate::names::{conversation_folder, sanitize};
use crate::spill::Spill;
use crate::texts::PostTexts;
use crate::zip::{Part, Sink, ZipWriter};
use crate::{ArchiveError, DataFormat, DiskBudget, ExportRequest, Progress};

pub use crate::dayfiles::{MAX_ITEMS_PER_FILE, MAX_PART_BYTES};
/// Placeholder keys of a day file on disk handed out at a time (a day of deletions of old posts
/// can hold millions).
const PLACEHOLDER_BATCH: usize = 10_000;
/// Bytes of placeholder keys held in memory per generation before older ones move to disk.
const UNBORN_MEMORY_BUDGET: usize = 1 << 20;

pub(crate) struct Renderer<'a, S: Sink> {
    request: &'a ExportRequest,
    tz: Tz,
    root: String,
    /// The directory at the range's end.
    directory: Directory,
    /// Membership and names over the range (`directories::history`).
    history: MembershipHistory,
    zip: ZipWriter<S>,
    day: Option<NaiveDate>,
    /// The open day's files, in memory or spilled to disk.
    open: OpenDays,
    texts: PostTexts,
    /// Items with a change in a flushed day file whose creation that file did not hold, keyed
    /// by [`unborn_key`], with the dates of those files (comma-separated): when a creation
    /// comes later, its item names those dates (`changed_before_creation_on`).
    unborn: PostTexts,
    /// The open day's counts, per conversation.
    day_counts: BTreeMap<String, Counts>,
    /// Per conversation, over the whole archive.
    conversation_counts: BTreeMap<String, Counts>,
    seen_conversations: BTreeSet<String>,
    /// The people items name, built once each from the directory.
    people: HashMap<String, PersonRef>,
    events_read: u64,
    /// The manifest's `days` and `files` lines, as they are made.
    manifest_days: ManifestLines,
    manifest_files: ManifestLines,
    json_bytes: u64,
    /// The open day's CSV file, in the CSV format (`csv.rs`).
    csv: Option<CsvDays>,
}

/// JSON array elements, one per line, spilled to a temporary file.
struct ManifestLines {
    spill: Spill,
    count: u64,
}

impl ManifestLines {
    fn new(disk: &DiskBudget) -> Result<Self, ArchiveError> {
        Ok(Self {
            spill: Spill::with_budget(disk)?,
            count: 0,
        })
    }

    fn push(&mut self, value: &impl serde::Serialize) -> Result<(), ArchiveError> {
        let mut line = Vec::with_capacity(160);
        line.extend_from_slice(if self.count == 0 { b"    " } else { b",\n    " });
        serde_json::to_writer(&mut line, value)
            .map_err(|e| ArchiveError::Internal(e.to_string()))?;
        self.count += 1;
        self.spill.append(&line)
    }
}

impl<'a, S: Sink> Renderer<'a, S> {
    pub(crate) fn new(
        request: &'a ExportRequest,
        tz: Tz,
        directory: Directory,
        history: MembershipHistory,
        zip: ZipWriter<S>,
    ) -> Result<Self, ArchiveError> {
        let root = sanitize(
            &format!(
                "compliance_export_{}_{}",
                request.company_id,
                request.label()
            ),
            120,
        );
        // The export's temporary disk, shared by every temporary file it makes.
        let disk = zip.disk_budget().clone();
        Ok(Self {
            request,
            tz,
            root,
            directory,
            history,
            zip,
            day: None,
            open: OpenDays::new(request.limits.items_bytes(), disk.clone()),
            texts: PostTexts::new(request.limits.texts_bytes(), disk.clone()),
            unborn: PostTexts::new(UNBORN_MEMORY_BUDGET, disk.clone()),
            day_counts: BTreeMap::new(),
            conversation_counts: BTreeMap::new(),
            seen_conversations: BTreeSet::new(),
            people: HashMap::new(),
            events_read: 0,
            manifest_days: ManifestLines::new(&disk)?,
            manifest_files: ManifestLines::new(&disk)?,
            json_bytes: 0,
            csv: (request.format == DataFormat::Csv).then(CsvDays::default),
        })
    }

    /// Renders the whole range and finishes the archive; returns the sink, its size and a
    /// summary of what it holds.
    pub(crate) async fn run(
        mut self,
        reader: &LogReader,
        mut progress: impl FnMut(Progress),
    ) -> Result<(S, u64, ExportSummary), ArchiveError> {
        let (from, to) = (self.request.start(), self.request.to);
        let mut cursor = reader.events(&self.request.company_id, from, to);
        // Progress runs from the first event found (all history starts in 2000, which would
        // make the first real day look like 96 %).
        let mut origin = None;
        // What a person watching sees never goes back: a format-1 log's total grows as its
        // days are listed, and the share switches from time to data once the total is known.
        let mut shown = 0;
        while let Some(batch) = cursor.next_batch().await? {
            let origin =
                *origin.get_or_insert_with(|| batch.first().map_or(from, |r| r.sort_key().0));
            for record in batch {
                self.events_read += 1;
                self.apply(&record).await?;
            }
            let span = (to - origin).num_seconds().max(1) as f64;
            let time_share = (cursor.position() - origin).num_seconds().max(0) as f64 / span;
            shown = percent(cursor.read_progress(), time_share).max(shown);
            progress(Progress {
                events_read: self.events_read,
                files_written: self.zip.entry_count(),
                bytes_written: self.zip.bytes_written(),
                percent: shown,
            });
        }
        self.flush_day().await?;
        self.write_directories().await?;
        // The manifest lists every other entry with its hash: wait for all to be written.
        self.zip.flush().await?;
        self.record_written()?;
        let summary = ExportSummary {
            events_read: self.events_read,
            totals: self.totals(),
            files: self.manifest_files.count,
            json_bytes: self.json_bytes,
        };
        let name = format!("{}/manifest.json", self.root);
        let signature_name = format!("{}/{}", self.root, crate::signing::SIGNATURE_ENTRY);
        let signer = self.request.signer.clone();
        let head = self.manifest_head()?;
        let events_read = self.events_read;
        let Self {
            mut zip,
            manifest_days,
            manifest_files,
            ..
        } = self;
        // The head, then the spilled `days` and `files` lines (`docs/export-format.md`).
        let parts = vec![
            Part::Bytes(head),
            Part::Spill(manifest_days.spill),
            Part::Bytes(Bytes::from_static(b"\n  ],\n  \"files\": [\n")),
            Part::Spill(manifest_files.spill),
            Part::Bytes(Bytes::from_static(b"\n  ]\n}\n")),
        ];
        zip.add_parts(name, parts).await?;
        if let Some(signer) = signer {
            crate::signing::add_signature(&mut zip, &signer, signature_name).await?;
        }
        let (sink, size, entries) = zip.finish().await?;
        progress(Progress {
            events_read,
            files_written: entries,
            bytes_written: size,
            percent: 100,
        });
        Ok((sink, size, summary))
    }

    /// Lists the entries written since the last call in the manifest.
    fn record_written(&mut self) -> Result<(), ArchiveError> {
        let prefix = format!("{}/", self.root);
        for entry in self.zip.take_written() {
            self.json_bytes += entry.size;
            self.manifest_files.push(&FileRecord {
                path: entry
                    .name
                    .strip_prefix(&prefix)
                    .unwrap_or(&entry.name)
                    .to_owned(),
                size: entry.size,
                sha256: entry.sha256,
            })?;
        }
        Ok(())
    }

    fn included(&self, conversation_id: &str, actor: &str) -> bool {
        let request = self.request;
        if !request.conversation_ids.is_empty()
            && !request.conversation_ids.contains(conversation_id)
        {
            return false;
        }
        if request.person_ids.is_empty() || request.person_ids.contains(actor) {
            return true;
        }
        self.directory
            .conversations
            .get(conversation_id)
            .is_some_and(|c| c.members.keys().any(|m| request.person_ids.contains(m)))
    }

    /// The person `id` as items name them, shared by every item that does.
    fn person_ref(&mut self, id: &str) -> PersonRef {
        if let Some(person) = self.people.get(id) {
            return person.clone();
        }
        let person = match self.directory.people.get(id) {
            Some(p) => Person::Known {
                company_id: p.company_id.clone(),
                email: p.email.clone(),
                id: id.to_owned(),
                name: p.name.clone(),
            },
            None => Person::Unknown { id: id.to_owned() },
        };
        let person = PersonRef(Arc::new(person));
        self.people.insert(id.to_owned(), person.clone());
        person
    }

    fn at(&self, record: &LogRecord) -> String {
        record
            .event
            .occurred_at
            .with_timezone(&Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    async fn apply(&mut self, record: &LogRecord) -> Result<(), ArchiveError> {
        let Some(conversation) = record.event.conversation() else {
            return Ok(());
        };
        let actor = actor_of(&record.event.body);
        if !self.included(&conversation.id, actor) {
            return Ok(());
        }
        let day = record
            .event
            .occurred_at
            .with_timezone(&self.tz)
            .date_naive();
        if self.day != Some(day) {
            self.flush_day().await?;
            self.day = Some(day);
        }
        let conversation_id = conversation.id.clone();
        self.seen_conversations.insert(conversation_id.clone());
        let at = self.at(record);
        // The post's text before this event, and its latest text from now on.
        let before = match &record.event.body {
            EventBody::PostCreated { post_id, text, .. } => {
                self.texts.record(post_id, text.clone()).await?;
                None
            }
            EventBody::PostEdited { post_id, text, .. } => {
                self.texts.replace(post_id, text.clone()).await?
            }
            EventBody::PostDeleted { post_id, .. } => self.texts.take(post_id).await?,
            _ => None,
        };
        let who = self.person_ref(actor);
        let (id, mut change, count): (&str, Change, fn(&mut Counts)) = match &record.event.body {
            EventBody::PostCreated {
                post_id,
                text,
                parent_post_id,
                ..
            } => (
                post_id,
                Change::Create(Item::Post(PostItem {
                    author: Some(who),
                    changed_before_creation_on: None,
                    created_at: Some(at),
                    created_elsewhere: false,
                    deleted: None,
                    edits: Vec::new(),
                    id: post_id.clone(),
                    kind: ItemKind::Post,
                    parent_post_id: parent_post_id.clone(),
                    text: Some(text.clone()),
                })),
                |c| c.posts += 1,
            ),
            EventBody::PostEdited { post_id, text, .. } => (
                post_id,
                Change::PostEdit(Edit {
                    at,
                    editor: who,
                    out_of_order: false,
                    text: text.clone(),
                    text_before: before,
                }),
                |c| c.edits += 1,
            ),
            EventBody::PostDeleted { post_id, .. } => (
                post_id,
                Change::PostDelete(PostDeletion {
                    at,
                    by: who,
                    out_of_order: false,
                    text_before: before,
                }),
                |c| c.deletes += 1,
            ),
            EventBody::NoteCreated {
                note_id,
                title,
                text,
                ..
            } => (
                note_id,
                Change::Create(Item::Note(NoteItem {
                    author: Some(who),
                    changed_before_creation_on: None,
                    created_at: Some(at),
                    created_elsewhere: false,
                    deleted: None,
                    edit_count: 0,
                    id: note_id.clone(),
                    kind: ItemKind::Note,
                    last_edit_out_of_order: false,
                    last_edited_at: None,
                    text: Some(text.clone()),
                    title: title.clone(),
                })),
                |c| c.notes += 1,
            ),
            // Notes are exported in their final state without an edit log (the seed's
            // rule); `edit_count` says how many edits the day had.
            EventBody::NoteEdited {
                note_id,
                title,
                text,
                ..
            } => (
                note_id,
                Change::NoteEdit {
                    title: title.clone(),
                    text: text.clone(),
                    at,
                },
                |c| c.notes += 1,
            ),
            EventBody::NoteDeleted { note_id, .. } => (
                note_id,
                Change::NoteDelete(NoteDeletion {
                    at,
                    by: who,
                    out_of_order: false,
                }),
                |c| c.notes += 1,
            ),
            EventBody::FileShared {
                file_id,
                name,
                size,
                content_type,
                sha256,
                post_id,
                ..
            } => (
                file_id,
                Change::Create(Item::File(FileItem {
                    author: who,
                    content_included: false,
                    content_type: content_type.clone(),
                    id: file_id.clone(),
                    kind: ItemKind::File,
                    name: name.clone(),
                    post_id: post_id.clone(),
                    sha256: sha256.clone(),
                    shared_at: at,
                    size: *size,
                })),
                |c| c.files_shared += 1,
            ),
            _ => return Ok(()),
        };
        if let Change::Create(created) = &mut change
            && created.kind() != ItemKind::File
        {
            // Changes of this item on earlier days, timed before this creation (clocks that
            // disagree): those days' files hold them on placeholders.
            let key = unborn_key(&conversation_id, &item_key(created.kind(), id));
            if let Some(dates) = self.unborn.take(&key).await? {
                created
                    .set_changed_before_creation_on(dates.split(',').map(str::to_owned).collect());
            }
        }
        let counts = self.day_counts.entry(conversation_id.clone()).or_default();
        counts.events += 1;
        count(counts);
        if self.csv.is_some() {
            return self
                .csv_row(record, &conversation_id, day, id, actor, &change)
                .await;
        }
        self.open.apply(&conversation_id, id, change)
    }

    /// The CSV format: the event's row, straight into the day's file (`csv.rs`).
    async fn csv_row(
        &mut self,
        record: &LogRecord,
        conversation_id: &str,
        day: NaiveDate,
        id: &str,
        actor: &str,
        change: &Change,
    ) -> Result<(), ArchiveError> {
        let who = self.person_ref(actor);
        let (_, kind) = self.folder_of(conversation_id);
        let name = self
            .directory
            .conversations
            .get(conversation_id)
            .and_then(|c| c.name.as_deref());
        let conversation = crate::csv::Conversation {
            id: conversation_id,
            kind: kind.as_str(),
            name,
        };
        let date = day.format("%Y-%m-%d").to_string();
        let row = crate::csv::event_row(
            &record.event.event_id,
            &date,
            &conversation,
            id,
            &who,
            change,
        );
        let full = self.csv.as_mut().and_then(|csv| csv.push(&date, &row));
        self.write_csv_part(full).await
    }

    async fn write_csv_part(
        &mut self,
        part: Option<crate::csv::CsvPart>,
    ) -> Result<(), ArchiveError> {
        if let Some((path, bytes)) = part {
            self.zip
                .add(format!("{}/{path}", self.root), Bytes::from(bytes))
                .await?;
            self.record_written()?;
        }
        Ok(())
    }

    fn folder_of(&self, conversation_id: &str) -> (String, ConversationKind) {
        let state = self.directory.conversations.get(conversation_id);
        let kind = state.map_or(ConversationKind::Group, |c| c.kind);
        let section = if kind == ConversationKind::Team {
            "Team_Chats"
        } else {
            "People_Chats"
        };
        let folder = conversation_folder(conversation_id, state.and_then(|c| c.name.as_deref()));
        (format!("{section}/{folder}"), kind)
    }

    async fn flush_day(&mut self) -> Result<(), ArchiveError> {
        let Some(day) = self.day.take() else {
            return Ok(());
        };
        let date = day.format("%Y-%m-%d").to_string();
        for (conversation_id, counts) in std::mem::take(&mut self.day_counts) {
            self.conversation_counts
                .entry(conversation_id.clone())
                .or_default()
                .add(&counts);
            self.manifest_days.push(&DayCounts {
                date: date.clone(),
                conversation_id,
                counts,
            })?;
        }
        let csv = self.csv.as_mut().and_then(CsvDays::finish_day);
        self.write_csv_part(csv).await?;
        for (conversation_id, mut file) in self.open.take() {
            let (folder, kind) = self.folder_of(&conversation_id);
            let name = self
                .directory
                .conversations
                .get(&conversation_id)
                .and_then(|c| c.name.clone());
            // Remember the items this file holds without their creation, in case it comes on a
            // later day (clocks that disagree).
            let mut after: Option<String> = None;
            loop {
                let keys = file.placeholders_after(after.as_deref(), PLACEHOLDER_BATCH)?;
                let Some(last) = keys.last().cloned() else {
                    break;
                };
                for key in keys {
                    let key = unborn_key(&conversation_id, &key);
                    if let Some(dates) = self.unborn.replace(&key, date.clone()).await? {
                        self.unborn.replace(&key, format!("{dates},{date}")).await?;
                    }
                }
                after = Some(last);
            }
            let parts = file.into_parts()?;
            let count = parts.len();
            let eml = (self.request.format == DataFormat::Eml)
                .then(|| Arc::new(self.eml_context(&conversation_id, &folder, kind, &date)));
            let mut position = 0;
            for (index, (items, estimate)) in parts.into_iter().enumerate() {
                if let Some(context) = &eml {
                    position =
                        crate::eml::write_part(&mut self.zip, context, items, position).await?;
                    self.record_written()?;
                    continue;
                }
                let part = index + 1;
                let file_name = if part == 1 {
                    format!("{date}.json")
                } else {
                    format!("{date}_part-{part}.json")
                };
                let head = DayFileHead {
                    conversation_id: conversation_id.clone(),
                    kind: kind.as_str(),
                    name: name.clone(),
                    date: date.clone(),
                    part,
                    parts: count,
                    time_zone: self.tz.name(),
                };
                // Serialised on the compression thread: the renderer goes on with the next
                // day while the writer keeps the entries in the order added.
                self.zip
                    .add_with(
                        format!("{}/{folder}/{file_name}", self.root),
                        estimate,
                        move || head.render(&items.load()?),
                    )
                    .await?;
                self.record_written()?;
            }
        }
        Ok(())
    }

    /// What every message of a conversation's day shares, in the EML format (`eml.rs`).
    fn eml_context(
        &self,
        conversation_id: &str,
        folder: &str,
        kind: ConversationKind,
        date: &str,
    ) -> crate::eml::Context {
        let company_id = &self.request.company_id;
        let state = self.directory.conversations.get(conversation_id);
        let members = state.map_or(0, |c| c.members.len());
        // Each member at their own company's domain (a direct chat's other side is another
        // company's person).
        let mut member_companies = HashMap::new();
        let to = state
            .into_iter()
            .flat_map(|c| c.members.iter())
            .take(crate::eml::MAX_RECIPIENTS)
            .map(|member| {
                let person = self.directory.people.get(&member.person_id);
                let name = person.and_then(|p| p.name.clone()).or(member.name);
                let address = crate::mime::address(&member.person_id, &member.company_id);
                member_companies.insert(member.person_id, member.company_id);
                (name, address)
            })
            .collect::<Vec<_>>();
        crate::eml::Context {
            company_id: company_id.clone(),
            conversation_id: conversation_id.to_owned(),
            kind: kind.as_str(),
            name: state.and_then(|c| c.name.clone()),
            date: date.to_owned(),
            dir: format!("{}/{folder}/{date}", self.root),
            omitted: members - to.len(),
            to,
            member_companies,
        }
    }

    /// `users.json` and `teams.json`, streamed (`directories.rs`).
    async fn write_directories(&mut self) -> Result<(), ArchiveError> {
        for (path, section) in directories::LISTINGS {
            // The scope borrows the renderer: it ends before the next await (the future must
            // stay `Send`).
            let spill = {
                let scope = directories::Scope {
                    directory: &self.directory,
                    history: &self.history,
                    seen: &self.seen_conversations,
                    in_scope: &|id| self.included(id, ""),
                    folder_of: &|id| self.folder_of(id),
                };
                directories::write_listing(&scope, section, self.zip.disk_budget())?
            };
            self.zip
                .add_parts(format!("{}/{path}", self.root), vec![Part::Spill(spill)])
                .await?;
            self.record_written()?;
        }
        Ok(())
    }

    fn totals(&self) -> Counts {
        let mut totals = Counts::default();
        self.conversation_counts
            .values()
            .for_each(|c| totals.add(c));
        totals
    }

    /// The start of `manifest.json`: everything but the `days` and `files` lines, left open for
    /// them.
    fn manifest_head(&self) -> Result<Bytes, ArchiveError> {
        let conversations = self
            .conversation_counts
            .iter()
            .map(|(id, counts)| {
                let (folder, kind) = self.folder_of(id);
                ConversationCounts {
                    conversation_id: id.clone(),
                    kind: kind.as_str().into(),
                    folder,
                    counts: counts.clone(),
                }
            })
            .collect();
        let request = self.request;
        let head = ManifestHead {
            format: request.format.manifest_format().into(),
            format_version: EXPORT_FORMAT_VERSION,
            request: RequestRecord {
                company_id: request.company_id.clone(),
                from: request.from,
                to: request.to,
                all_history: request.from.is_none(),
                person_ids: request.person_ids.iter().cloned().collect(),
                conversation_ids: request.conversation_ids.iter().cloned().collect(),
                time_zone: self.tz.name().to_owned(),
            },
            log_position: log_position(request, self.events_read),
            conversations,
            totals: self.totals(),
            schedule: request.schedule.clone(),
            signature: request
                .signer
                .as_ref()
                .map(|signer| crate::manifest::SignatureInfo {
                    algorithm: "Ed25519".into(),
                    key_id: signer.key_id().to_owned(),
                }),
        };
        let mut head = serde_json::to_string_pretty(&head)
            .map_err(|e| ArchiveError::Internal(e.to_string()))?;
        // An object pretty-printed ends with "\n}": reopen it for the two lists.
        head.truncate(head.trim_end_matches('}').trim_end().len());
        head.push_str(",\n  \"days\": [\n");
        Ok(Bytes::from(head))
    }
}

/// What a day file's part says besides its items.
struct DayFileHead {
    conversation_id: String,
    kind: &'static str,
    name: Option<String>,
    date: String,
    part: usize,
    parts: usize,
    time_zone: &'static str,
}

impl DayFileHead {
    /// The part's JSON, pretty-printed.
    fn render(&self, items: &[Item]) -> Result<Vec<u8>, ArchiveError> {
        let body = DayFileOut {
            conversation: ConversationOut {
                id: &self.conversation_id,
                kind: self.kind,
                name: self.name.as_deref(),
            },
            date: &self.date,
            items,
            part: self.part,
            parts: self.parts,
            time_zone: self.time_zone,
        };
        let mut bytes = Vec::with_capacity(items.iter().map(Item::estimate).sum::<usize>() + 256);
        serde_json::to_writer_pretty(&mut bytes, &body)
            .map_err(|e| ArchiveError::Internal(e.to_string()))?;
        Ok(bytes)
    }
}

/// A day file. Fields in alphabetical order, as the format has always had them.
#[derive(serde::Serialize)]
struct DayFileOut<'a> {
    conversation: ConversationOut<'a>,
    date: &'a str,
    items: &'a [Item],
    part: usize,
    parts: usize,
    time_zone: &'a str,
}

#[derive(serde::Serialize)]
struct ConversationOut<'a> {
    id: &'a str,
    kind: &'a str,
    name: Option<&'a str>,
}

/// Percent done before the end (0–99): the share of the log's data read when the log can say
/// how much there is, else `time_share`, the share of the range's time read.
fn percent(read: ReadProgress, time_share: f64) -> u32 {
    let share = if read.bytes_total > 0 {
        read.bytes_read as f64 / read.bytes_total as f64
    } else {
        time_share
    };
    (share * 100.0).clamp(0.0, 99.0) as u32
}

/// The key of an item in [`Renderer::unborn`]; ids never hold control characters.
fn unborn_key(conversation_id: &str, item_key: &str) -> String {
    format!("{conversation_id}\u{1f}{item_key}")
}

fn actor_of(body: &EventBody) -> &str {
    match body {
        EventBody::PostCreated { author_id, .. }
        | EventBody::NoteCreated { author_id, .. }
        | EventBody::FileShared { author_id, .. } => author_id,
        EventBody::PostEdited { editor_id, .. } | EventBody::NoteEdited { editor_id, .. } => {
            editor_id
        }
        EventBody::PostDeleted { deleted_by, .. } | EventBody::NoteDeleted { deleted_by, .. } => {
            deleted_by
        }
        _ => "",
    }
}

/// Parses an IANA zone name; empty means UTC.
pub fn parse_time_zone(name: &str) -> Result<Tz, ArchiveError> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| {
        ArchiveError::InvalidRequest(format!(
            "unknown time zone {name:?}: use an IANA name such as \"Europe/London\""
        ))
    })
}

/// The manifest's `log_position`: the range's end, what was read, and the position of the log
/// it was read at.
fn log_position(request: &ExportRequest, events_read: u64) -> LogPosition {
    let position = request.position.as_ref();
    LogPosition {
        log_format_version: 2,
        events_before: request.to,
        events_read,
        topic: position.map(|p| p.topic.clone()),
        durable_until: position.and_then(|p| p.min_time_watermark()),
        partitions: position
            .map(|p| {
                p.partitions
                    .iter()
                    .map(|q| PartitionPosition {
                        partition: q.partition,
                        epoch: q.epoch,
                        durable_offset: q.durable_offset,
                        time_watermark: q.time_watermark,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_follows_the_data_when_the_log_knows_its_size() {
        let read = |bytes_read, bytes_total| ReadProgress {
            bytes_read,
            bytes_total,
        };
        let cases = [
            (read(0, 0), 0.42, 42, "no size known: by time"),
            (read(0, 0), 1.0, 99, "by time, 100 only at the end"),
            (read(250, 1_000), 0.9, 25, "by data, whatever the time"),
            (read(1_000, 1_000), 0.1, 99, "all read: 100 only at the end"),
            (read(2_000, 1_000), 0.1, 99, "more read than announced"),
        ];
        for (progress, time_share, want, name) in cases {
            assert_eq!(percent(progress, time_share), want, "{name}");
        }
    }
}
