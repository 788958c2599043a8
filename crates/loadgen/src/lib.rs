//! A deterministic generator of realistic chat events (`docs/events.md`).
//!
//! From a seed it produces several companies with people, every kind of conversation (direct
//! chats inside and across companies, multi-person chats, teams with guests), posts with threads,
//! edits and deletes, notes, shared files, renames, membership changes (including a direct chat
//! that grows into a group), archiving, unicode text and hostile names. Metadata comes first;
//! content follows in time order over the configured span, with deliberate equal timestamps.
//! The same options always give the same events, byte for byte.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Prepended to every company, conversation and event id, so runs can share a broker.
    pub id_prefix: String,
    pub companies: usize,
    pub people_per_company: usize,
    pub conversations_per_company: usize,
    /// How many content events (posts, edits, notes, files, membership changes) follow the
    /// initial people and conversations.
    pub content_events: u64,
    pub start: DateTime<Utc>,
    pub span: Duration,
    /// Extra team conversations per company, created after the others, each with this many of
    /// the company's own people (capped at `people_per_company`): an all-company team of
    /// 50,000 people, say. Their members arrive in events of at most [`MEMBERS_PER_EVENT`]
    /// (the creation, then `conversation.members_added`), so every message stays under the
    /// 1 MiB limit. Empty by default (then the stream is what it always was).
    pub large_teams: Vec<usize>,
    /// Which kinds of content events follow.
    pub mix: Mix,
}

/// Which kinds of content events the generator makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mix {
    /// Every kind: posts, replies, edits, deletes, notes, files, membership changes, renames,
    /// archiving.
    #[default]
    Chat,
    /// Only posts and their replies (85 %), edits (10 %) and deletes (5 %) of recent posts: one
    /// busy conversation's traffic, which no membership change can archive or shrink.
    Posts,
}

/// The most members one generated event lists (a large team's creation and each addition).
pub const MEMBERS_PER_EVENT: usize = 400;

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 42,
            id_prefix: String::new(),
            companies: 3,
            people_per_company: 12,
            conversations_per_company: 10,
            content_events: 1_000,
            start: DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default(), // 2026-01-01
            span: Duration::days(30),
            large_teams: Vec::new(),
            mix: Mix::Chat,
        }
    }
}

/// One Kafka message: key and JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: String,
    pub payload: Vec<u8>,
}

/// SplitMix64: tiny, fast, and stable forever (unlike a library RNG whose stream may change
/// between versions), which is what "deterministic from a seed" needs.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const COMPANY_NAMES: &[&str] = &[
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
];
const PEOPLE: &[&str] = &[
    "Ada Lovelace",
    "Zoë Ångström",
    "李雷",
    "Øyvind Ås",
    "José Núñez",
    "محمد علي",
    "O'Brien, Seán",
    "Анна Каренина",
    "Nguyễn Văn An",
    "Grace Hopper",
    "山田 太郎",
    "Émilie du Châtelet",
    "Robert'); DROP TABLE people;--",
    "ধ্রুব",
    "Ola Nordmann",
];
const CONVERSATION_NAMES: &[&str] = &[
    "Trading Desk",
    "../../etc/passwd",
    "Team/With/Slashes",
    "back\\slash",
    "CON",
    ".",
    "..",
    "🚀 Launch",
    "Compliance ✓",
    "名前のチーム",
    "\u{202E}gnp.exe",
    "tab\there",
    "  spaced  ",
    "Quarterly: Q1/Q2 <review>",
    "nul\u{0}byte",
    "",
];
const TEXTS: &[&str] = &[
    "Quarterly numbers look good 📈",
    "Привет, как дела?",
    "会议改到明天上午十点",
    "مرحبا بالجميع",
    "Can you send me the deck?",
    "<script>alert('x')</script>",
    "line one\nline two\ttabbed",
    "\"quoted\" and \\backslashed\\",
    "Let's move this to the compliance channel.",
    "👍",
    "Please delete the previous message",
    "Ünïcödé everywhere ✓ ∑ ∞",
];

#[derive(Debug, Clone)]
struct Person {
    id: String,
    company: String,
    name: String,
    email: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Group,
    Team,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Group => "group",
            Self::Team => "team",
        }
    }
}

#[derive(Debug, Clone)]
struct Conversation {
    id: String,
    kind: Kind,
    owner: String,
    members: Vec<usize>,
    posts: Vec<String>,
    notes: Vec<String>,
    archived: bool,
}

/// The event stream. An iterator: memory stays small however many events are asked for.
#[derive(Debug)]
pub struct Generator {
    options: Options,
    rng: Rng,
    people: Vec<Person>,
    conversations: Vec<Conversation>,
    queued: VecDeque<Message>,
    content_emitted: u64,
    clock: DateTime<Utc>,
    step: Duration,
    next_id: u64,
}

impl Generator {
    pub fn new(options: Options) -> Self {
        let step = options.span / i32::try_from(options.content_events.max(1)).unwrap_or(i32::MAX);
        let mut generator = Self {
            rng: Rng(options.seed),
            clock: options.start,
            step,
            options,
            people: Vec::new(),
            conversations: Vec::new(),
            queued: VecDeque::new(),
            content_emitted: 0,
            next_id: 0,
        };
        generator.create_people_and_conversations();
        generator
    }

    fn id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{}{kind}{}", self.options.id_prefix, self.next_id)
    }

    fn company_id(&self, index: usize) -> String {
        let base = COMPANY_NAMES[index % COMPANY_NAMES.len()];
        match index / COMPANY_NAMES.len() {
            0 => format!("{}{base}", self.options.id_prefix),
            n => format!("{}{base}{n}", self.options.id_prefix),
        }
    }

    fn emit(&mut self, key: String, mut event: Value, at: DateTime<Utc>) {
        event["event_id"] = json!(self.id("e"));
        event["occurred_at"] = json!(at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        self.queued.push_back(Message { key, payload });
    }

    fn member(&self, index: usize) -> Value {
        let p = &self.people[index];
        json!({"person_id": p.id, "company_id": p.company, "name": p.name, "email": p.email})
    }

    fn routing(&self, c: &Conversation) -> Value {
        let mut routing = json!({"id": c.id, "kind": c.kind.as_str(), "owner_company_id": c.owner});
        if c.kind == Kind::Direct {
            let mut companies: Vec<&str> = c
                .members
                .iter()
                .map(|m| self.people[*m].company.as_str())
                .collect();
            companies.sort_unstable();
            companies.dedup();
            routing["member_company_ids"] = json!(companies);
        }
        routing
    }

    fn create_people_and_conversations(&mut self) {
        let at = self.options.start;
        for company in 0..self.options.companies {
            let company_id = self.company_id(company);
            for i in 0..self.options.people_per_company {
                let name = (*self.rng.pick(PEOPLE)).to_owned();
                let id = format!("{company_id}-u{i}");
                let email = format!("u{i}@{company_id}.example");
                let person = Person {
                    id: id.clone(),
                    company: company_id.clone(),
                    name,
                    email,
                };
                let event = json!({"type": "person.created", "person": {
                    "id": person.id, "company_id": person.company, "name": person.name, "email": person.email}});
                self.people.push(person);
                self.emit(id, event, at);
            }
        }
        let per = self.options.people_per_company.max(1);
        for company in 0..self.options.companies {
            let own: Vec<usize> = (company * per..(company + 1) * per).collect();
            for n in 0..self.options.conversations_per_company {
                let kind = match n % 3 {
                    0 => Kind::Direct,
                    1 => Kind::Group,
                    _ => Kind::Team,
                };
                let mut members = Vec::new();
                let first = *self.rng.pick(&own);
                members.push(first);
                let others = if self.options.companies > 1 && self.rng.chance(40) {
                    // Someone from another company: the other side of a direct chat, or a guest.
                    let other = (company + 1 + self.rng.below(self.options.companies - 1))
                        % self.options.companies;
                    Some(other * per + self.rng.below(per))
                } else {
                    None
                };
                let want = match kind {
                    Kind::Direct => 2,
                    Kind::Group => 3 + self.rng.below(3),
                    Kind::Team => 3 + self.rng.below(6),
                };
                if let Some(guest) = others {
                    members.push(guest);
                }
                while members.len() < want.min(own.len() + usize::from(others.is_some())) {
                    let candidate = *self.rng.pick(&own);
                    if !members.contains(&candidate) {
                        members.push(candidate);
                    }
                }
                let conversation = Conversation {
                    id: self.id("c"),
                    kind,
                    owner: self.company_id(company),
                    members,
                    posts: Vec::new(),
                    notes: Vec::new(),
                    archived: false,
                };
                let name = match kind {
                    Kind::Direct => Value::Null,
                    _ => json!(*self.rng.pick(CONVERSATION_NAMES)),
                };
                let event = json!({"type": "conversation.created",
                    "conversation": self.routing(&conversation), "name": name,
                    "created_by": self.people[first].id,
                    "members": conversation.members.iter().map(|m| self.member(*m)).collect::<Vec<_>>()});
                self.emit(conversation.id.clone(), event, at);
                self.conversations.push(conversation);
            }
        }
        for company in 0..self.options.companies {
            for size in self.options.large_teams.clone() {
                self.create_large_team(company, size.min(per), at);
            }
        }
    }

    /// A team of the company's first `size` people, no randomness (so the rest of the stream
    /// does not depend on it): created with the first [`MEMBERS_PER_EVENT`], the others added
    /// in events of that many.
    fn create_large_team(&mut self, company: usize, size: usize, at: DateTime<Utc>) {
        let per = self.options.people_per_company.max(1);
        let members: Vec<usize> = (company * per..company * per + size).collect();
        let Some(&first) = members.first() else {
            return;
        };
        let conversation = Conversation {
            id: self.id("c"),
            kind: Kind::Team,
            owner: self.company_id(company),
            members,
            posts: Vec::new(),
            notes: Vec::new(),
            archived: false,
        };
        let routing = self.routing(&conversation);
        let creator = self.people[first].id.clone();
        let mut batches = conversation.members.chunks(MEMBERS_PER_EVENT);
        let founders = batches.next().unwrap_or_default();
        let event = json!({"type": "conversation.created", "conversation": routing,
            "name": format!("Everyone ({size})"), "created_by": creator,
            "members": founders.iter().map(|m| self.member(*m)).collect::<Vec<_>>()});
        self.emit(conversation.id.clone(), event, at);
        for batch in batches {
            let event = json!({"type": "conversation.members_added", "conversation": routing,
                "members": batch.iter().map(|m| self.member(*m)).collect::<Vec<_>>(),
                "added_by": creator});
            self.emit(conversation.id.clone(), event, at);
        }
        self.conversations.push(conversation);
    }

    fn text(&mut self) -> String {
        if self.rng.chance(2) {
            return "long message ".repeat(150);
        }
        (*self.rng.pick(TEXTS)).to_owned()
    }

    fn content_event(&mut self) {
        // Every 17th event shares its predecessor's timestamp, to exercise equal-time ordering.
        if !self.content_emitted.is_multiple_of(17) {
            self.clock += self.step;
        }
        self.content_emitted += 1;
        let at = self.clock;
        let live: Vec<usize> = (0..self.conversations.len())
            .filter(|c| !self.conversations[*c].archived)
            .collect();
        if live.is_empty() {
            return;
        }
        let ci = *self.rng.pick(&live);
        let author = {
            let c = &self.conversations[ci];
            self.people[*self.rng.pick(&c.members)].id.clone()
        };
        let has_posts = !self.conversations[ci].posts.is_empty();
        let has_notes = !self.conversations[ci].notes.is_empty();
        let roll = match self.options.mix {
            Mix::Chat => self.rng.below(100),
            // 0..=81 are the post kinds below; before the conversation's first post, a post.
            Mix::Posts => match self.rng.below(82) {
                roll if has_posts => roll,
                roll => roll % 60,
            },
        };
        let conversation = self.routing(&self.conversations[ci]);
        let key = self.conversations[ci].id.clone();
        let event = match roll {
            0..=59 => {
                let post_id = self.id("p");
                let text = self.text();
                self.conversations[ci].posts.push(post_id.clone());
                json!({"type": "post.created", "conversation": conversation, "post_id": post_id,
                       "author_id": author, "text": text})
            }
            60..=69 if has_posts => {
                let parent = self.rng.pick(&self.conversations[ci].posts).clone();
                let post_id = self.id("p");
                let text = self.text();
                self.conversations[ci].posts.push(post_id.clone());
                json!({"type": "post.created", "conversation": conversation, "post_id": post_id,
                       "author_id": author, "text": text, "parent_post_id": parent})
            }
            70..=77 if has_posts => {
                let post_id = self.rng.pick(&self.conversations[ci].posts).clone();
                let text = format!("{} (edited)", self.text());
                json!({"type": "post.edited", "conversation": conversation, "post_id": post_id,
                       "editor_id": author, "text": text})
            }
            78..=81 if has_posts => {
                let index = self.rng.below(self.conversations[ci].posts.len());
                let post_id = self.conversations[ci].posts.swap_remove(index);
                json!({"type": "post.deleted", "conversation": conversation, "post_id": post_id,
                       "deleted_by": author})
            }
            82..=85 => {
                let note_id = self.id("n");
                self.conversations[ci].notes.push(note_id.clone());
                json!({"type": "note.created", "conversation": conversation, "note_id": note_id,
                       "author_id": author, "title": "Meeting notes", "text": self.text()})
            }
            86..=88 if has_notes => {
                let note_id = self.rng.pick(&self.conversations[ci].notes).clone();
                json!({"type": "note.edited", "conversation": conversation, "note_id": note_id,
                       "editor_id": author, "title": "Meeting notes (v2)", "text": self.text()})
            }
            89 if has_notes => {
                let index = self.rng.below(self.conversations[ci].notes.len());
                let note_id = self.conversations[ci].notes.swap_remove(index);
                json!({"type": "note.deleted", "conversation": conversation, "note_id": note_id,
                       "deleted_by": author})
            }
            90..=95 => {
                let file_id = self.id("f");
                let size = 1_000 + self.rng.below(50_000_000);
                json!({"type": "file.shared", "conversation": conversation, "file_id": file_id,
                       "author_id": author, "name": "report ../final (2).pdf", "size": size,
                       "content_type": "application/pdf",
                       "sha256": format!("{:016x}{:016x}{:016x}{:016x}", self.rng.next(), self.rng.next(), self.rng.next(), self.rng.next())})
            }
            _ => return self.membership_change(ci, author, at),
        };
        self.emit(key, event, at);
        // Keep per-conversation memory bounded on long runs.
        let c = &mut self.conversations[ci];
        if c.posts.len() > 64 {
            c.posts.drain(..32);
        }
        if c.notes.len() > 16 {
            c.notes.drain(..8);
        }
    }

    fn membership_change(&mut self, ci: usize, actor: String, at: DateTime<Utc>) {
        let key = self.conversations[ci].id.clone();
        let kind = self.conversations[ci].kind;
        let roll = self.rng.below(6);
        if roll >= 4 {
            // A person changes name, or (rarely) leaves.
            let index = self.rng.below(self.people.len());
            let person = self.people[index].clone();
            let event = if roll == 5 && self.rng.chance(30) {
                json!({"type": "person.deactivated", "person": {"id": person.id, "company_id": person.company}})
            } else {
                let name = format!("{} ({})", self.rng.pick(PEOPLE), self.rng.below(100));
                self.people[index].name.clone_from(&name);
                json!({"type": "person.updated", "person": {"id": person.id, "company_id": person.company,
                       "name": name, "email": person.email}})
            };
            return self.emit(person.id, event, at);
        }
        let event = if roll == 0 && kind != Kind::Direct {
            let name = (*self.rng.pick(CONVERSATION_NAMES)).to_owned();
            json!({"type": "conversation.renamed", "conversation": self.routing(&self.conversations[ci]),
                   "name": name, "renamed_by": actor})
        } else if roll == 1 && self.conversations[ci].members.len() > 3 {
            let removed = self.conversations[ci].members.pop().unwrap_or_default();
            json!({"type": "conversation.members_removed", "conversation": self.routing(&self.conversations[ci]),
                   "members": [self.member(removed)], "removed_by": actor})
        } else if roll == 2
            && self.rng.chance(10)
            && self.live_conversations() > self.conversations.len() / 2
        {
            // Archive some, never most: a long run must keep having conversations to talk in.
            self.conversations[ci].archived = true;
            json!({"type": "conversation.archived", "conversation": self.routing(&self.conversations[ci]),
                   "archived_by": actor})
        } else {
            let candidate = self.rng.below(self.people.len());
            if self.conversations[ci].members.contains(&candidate) {
                return;
            }
            self.conversations[ci].members.push(candidate);
            // A direct chat that gains a third person becomes a group from this event on.
            if kind == Kind::Direct {
                self.conversations[ci].kind = Kind::Group;
            }
            json!({"type": "conversation.members_added", "conversation": self.routing(&self.conversations[ci]),
                   "members": [self.member(candidate)], "added_by": actor})
        };
        self.emit(key, event, at);
    }
}

impl Generator {
    fn live_conversations(&self) -> usize {
        self.conversations.iter().filter(|c| !c.archived).count()
    }
}

impl Iterator for Generator {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.queued.pop_front() {
                return Some(message);
            }
            if self.content_emitted >= self.options.content_events {
                return None;
            }
            self.content_event();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn small(seed: u64) -> Vec<Message> {
        Generator::new(Options {
            seed,
            content_events: 3_000,
            ..Options::default()
        })
        .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        assert_eq!(small(7), small(7));
        assert_ne!(small(7), small(8));
    }

    #[test]
    fn every_event_is_valid_and_every_type_and_scope_case_occurs() {
        let now = "2030-01-01T00:00:00Z".parse().unwrap();
        let mut types = std::collections::BTreeSet::new();
        let (mut cross_company_direct, mut guest_in_team, mut grown) = (0, 0, 0);
        for message in small(1) {
            let (event, _) =
                event_model::parse_event(&message.payload, &event_model::Limits::default(), now)
                    .unwrap_or_else(|r| {
                        panic!("{r}: {}", String::from_utf8_lossy(&message.payload))
                    });
            types.insert(event.type_name());
            if let Some(c) = event.conversation() {
                assert_eq!(message.key, c.id);
                if c.kind == event_model::ConversationKind::Direct
                    && c.member_company_ids.len() == 2
                {
                    cross_company_direct += 1;
                }
            }
            if let event_model::EventBody::ConversationCreated {
                conversation,
                members,
                ..
            } = &event.body
                && conversation.kind == event_model::ConversationKind::Team
                && members
                    .iter()
                    .any(|m| m.company_id != conversation.owner_company_id)
            {
                guest_in_team += 1;
            }
            if let event_model::EventBody::MembersAdded { conversation, .. } = &event.body
                && conversation.kind == event_model::ConversationKind::Group
            {
                grown += 1;
            }
        }
        assert_eq!(
            types.len(),
            event_model::event::EVENT_TYPES.len(),
            "{types:?}"
        );
        assert!(cross_company_direct > 0 && guest_in_team > 0 && grown > 0);
    }

    /// FNV-1a over every key and payload: a fingerprint of a whole stream.
    fn fingerprint(messages: &[Message]) -> u64 {
        messages
            .iter()
            .flat_map(|m| m.key.bytes().chain(m.payload.iter().copied()))
            .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    #[test]
    fn the_default_options_give_the_stream_they_always_gave() {
        // Benchmarks compare figures across versions: new options must not move the default
        // stream. The value is the fingerprint of this stream before they existed.
        assert_eq!(fingerprint(&small(7)), GOLDEN_SMALL_7);
    }

    const GOLDEN_SMALL_7: u64 = 115_141_244_555_927_967;

    fn parse(message: &Message) -> event_model::Event {
        let now = "2030-01-01T00:00:00Z".parse().unwrap();
        event_model::parse_event(&message.payload, &event_model::Limits::default(), now)
            .unwrap_or_else(|r| panic!("{r}"))
            .0
    }

    #[test]
    fn a_large_team_gets_every_member_in_events_under_the_size_limit() {
        let messages: Vec<Message> = Generator::new(Options {
            companies: 1,
            people_per_company: 1_000,
            conversations_per_company: 0,
            large_teams: vec![1_000, 10],
            content_events: 0,
            ..Options::default()
        })
        .collect();
        let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut membership_events = 0;
        for message in &messages {
            let event = parse(message);
            let listed = match &event.body {
                event_model::EventBody::ConversationCreated { members, .. }
                | event_model::EventBody::MembersAdded { members, .. } => members,
                _ => continue,
            };
            membership_events += 1;
            assert!(listed.len() <= MEMBERS_PER_EVENT);
            let conversation = event.conversation().unwrap().id.clone();
            let set = members.entry(conversation).or_default();
            set.extend(listed.iter().map(|m| m.person_id.clone()));
        }
        let mut sizes: Vec<usize> = members.values().map(BTreeSet::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [10, 1_000]);
        // 1,000 = 400 + 400 + 200 in three events, then the team of 10 in one.
        assert_eq!(membership_events, 4);
    }

    #[test]
    fn the_posts_mix_is_posts_edits_and_deletes_of_one_conversation() {
        let messages: Vec<Message> = Generator::new(Options {
            companies: 1,
            people_per_company: 20,
            conversations_per_company: 0,
            large_teams: vec![20],
            content_events: 20_000,
            mix: Mix::Posts,
            ..Options::default()
        })
        .collect();
        let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
        let mut conversations = BTreeSet::new();
        for message in &messages {
            let event = parse(message);
            if let Some(c) = event.conversation() {
                conversations.insert(c.id.clone());
            }
            *by_type.entry(event.type_name()).or_default() += 1;
        }
        assert_eq!(conversations.len(), 1);
        let content: usize = ["post.created", "post.edited", "post.deleted"]
            .iter()
            .map(|t| by_type.get(t).copied().unwrap_or(0))
            .sum();
        assert_eq!(content, 20_000, "{by_type:?}");
        let posts = by_type["post.created"];
        assert!((16_500..17_700).contains(&posts), "{by_type:?}");
        assert!(by_type["post.edited"] > 1_500 && by_type["post.deleted"] > 700);
    }
}
