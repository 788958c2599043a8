//! A company-day's compacted parts read as streams in log order, in pieces: each chunk with
//! ranged GETs of at most a piece, decoded line by line across the pieces' boundaries
//! ([`ChunkDecoder`]), one piece fetched ahead while the current one is decoded. Which parts of
//! the day are read follows the rule of `v2::view` (newest complete candidate, plus any complete
//! one it does not list as `merged`), decided from each candidate's first piece.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use storage::ObjectMeta;

use super::merge::{Ctx, Task, merge_key, weight};
use crate::v2::part::{ChunkDecoder, PartHeader};
use crate::v2::pass::PassRef;
use crate::v2::view;
use crate::{LogError, LogRecord, Result};

/// Records decoded from a piece at a time: enough to amortise the checks, few enough that a
/// stream holds little decoded data beyond its raw pieces.
const GROUP_RECORDS: usize = 256;

/// The most a decoded record whose line has `line_bytes` can weigh ([`weight`]): its raw event
/// is part of its line.
fn weight_bound(line_bytes: usize) -> usize {
    2 * line_bytes + std::mem::size_of::<LogRecord>()
}

/// One candidate part of a company-day: its chunk objects (as listed, with sizes) by number.
#[derive(Debug, Clone)]
pub(super) struct PartObjects {
    pub pass: PassRef,
    pub chunks: BTreeMap<u32, ObjectMeta>,
}

impl PartObjects {
    fn bytes(&self) -> u64 {
        self.chunks.values().map(|o| o.size).sum()
    }
}

/// A company-day's parts as one topic's head sees them, in preference order.
#[derive(Debug, Clone)]
pub(super) struct DayParts {
    pub day: NaiveDate,
    pub candidates: Vec<PartObjects>,
}

impl DayParts {
    /// Groups a day's listed chunk objects into the candidates up to `head` (`view::candidates`).
    pub fn new(day: NaiveDate, head: &PassRef, objects: &[ObjectMeta]) -> Self {
        let sizes: BTreeMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
        let candidates = view::candidates(objects.iter().map(|o| o.key.as_str()), head)
            .into_iter()
            .map(|c| PartObjects {
                pass: c.pass,
                chunks: c
                    .chunks
                    .into_iter()
                    .map(|(n, key)| {
                        let size = sizes.get(key.as_str()).copied().unwrap_or(0);
                        (n, ObjectMeta { key, size })
                    })
                    .collect(),
            })
            .collect();
        Self { day, candidates }
    }

    /// The bytes a read of the day will fetch unless compactors raced or one was killed: every
    /// chunk of the first candidate that has a first chunk ([`open_day`] corrects the total
    /// otherwise). The first candidate opened is that one: nothing is covered before it.
    pub fn expected_bytes(&self) -> u64 {
        self.candidates
            .iter()
            .find(|c| c.chunks.contains_key(&0))
            .map_or(0, PartObjects::bytes)
    }

    /// The day's first instant: no record of its parts is earlier.
    pub fn start(&self) -> DateTime<Utc> {
        self.day
            .and_hms_opt(0, 0, 0)
            .map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc())
    }
}

/// Opens a day's parts per the candidate rule: the first piece of each candidate not covered by
/// one already chosen tells its header (pass, chunk count, `merged`); a candidate missing a
/// chunk is skipped (a pass killed while writing it). The cursor's total counted the first
/// candidate ([`DayParts::expected_bytes`]): another one read adds its bytes before any is read,
/// and a skipped one keeps only what was read of it, so the total never falls below what is read.
pub(super) async fn open_day(ctx: Arc<Ctx>, day: DayParts) -> Result<Vec<PartStream>> {
    let mut covered: BTreeSet<PassRef> = BTreeSet::new();
    let mut streams = Vec::new();
    let mut expected = true;
    for candidate in day.candidates {
        if covered.contains(&candidate.pass) || !candidate.chunks.contains_key(&0) {
            continue;
        }
        let listed = candidate.bytes();
        if !std::mem::take(&mut expected) {
            ctx.shared.add_total(listed);
        }
        match PartStream::open(Arc::clone(&ctx), &candidate).await? {
            Opened::Part(stream, merged) => {
                covered.insert(candidate.pass.clone());
                covered.extend(merged);
                streams.push(*stream);
            }
            Opened::Incomplete { read } => ctx.shared.correct_total(listed, read),
        }
    }
    Ok(streams)
}

/// What opening a candidate found.
enum Opened {
    /// A complete part, and the earlier parts it `merged`.
    Part(Box<PartStream>, Vec<PassRef>),
    /// A part missing a chunk, after reading `read` bytes of its first one.
    Incomplete { read: u64 },
}

/// A record's merge key, owned.
type OwnedKey = (DateTime<Utc>, String, (u32, i32, i64));

/// A piece being fetched: the bytes it reserved in the cursor's budget until decoded.
#[derive(Debug)]
struct Fetch {
    task: Task<Result<Bytes>>,
    len: u64,
}

/// One part read in log order: its chunks one after another, each in pieces.
#[derive(Debug)]
pub(super) struct PartStream {
    ctx: Arc<Ctx>,
    /// Its chunks, in order (only the first until its header is read).
    chunks: Vec<ObjectMeta>,
    /// The first chunk's header: every later chunk's must name the same pass and count.
    first: Option<PartHeader>,
    chunk: usize,
    /// Bytes of the current chunk requested so far.
    requested: u64,
    /// Bytes fetched in all (for an incomplete part's share of the progress).
    read: u64,
    decoder: ChunkDecoder,
    /// Bytes of the piece in the decoder, held in the budget until it is decoded.
    holding: usize,
    ahead: Option<Fetch>,
    /// Decoded records the merge has not taken yet (their weights held in the budget).
    queue: VecDeque<LogRecord>,
    /// The last record decoded, to check that the part is in log order.
    last: Option<OwnedKey>,
    /// Whether the merge reads it (only then is a piece fetched ahead).
    active: bool,
    done: bool,
}

impl PartStream {
    /// Reads the candidate's first chunk up to its header and checks that every chunk the
    /// header counts is listed.
    async fn open(ctx: Arc<Ctx>, candidate: &PartObjects) -> Result<Opened> {
        let Some(first) = candidate.chunks.get(&0) else {
            return Ok(Opened::Incomplete { read: 0 });
        };
        let company_id = ctx.company_id.clone();
        let mut stream = Self {
            ctx,
            chunks: vec![first.clone()],
            first: None,
            chunk: 0,
            requested: 0,
            read: 0,
            decoder: ChunkDecoder::new(&first.key, &company_id),
            holding: 0,
            ahead: None,
            queue: VecDeque::new(),
            last: None,
            active: false,
            done: false,
        };
        while stream.decoder.header().is_none() {
            if !stream.next_piece().await? {
                // The whole object without a header line: `finish` names the fault.
                stream.decoder.finish()?;
            }
        }
        let Some(header) = stream.first.clone() else {
            return Err(LogError::Corrupt {
                key: first.key.clone(),
                reason: "no header line".into(),
            });
        };
        let mut chunks = Vec::new();
        for n in 0..header.chunks {
            match candidate.chunks.get(&n) {
                Some(object) => chunks.push(object.clone()),
                None => {
                    let read = stream.read;
                    stream.release();
                    return Ok(Opened::Incomplete { read });
                }
            }
        }
        stream.chunks = chunks;
        Ok(Opened::Part(Box::new(stream), header.merged))
    }

    /// From now on the merge reads it: fetch ahead.
    pub fn activate(&mut self) {
        self.active = true;
        self.fetch_ahead();
    }

    /// The next record in log order, if decoded ([`fill`](Self::fill) first).
    pub fn head(&self) -> Option<&LogRecord> {
        self.queue.front()
    }

    pub fn pop(&mut self) -> Option<LogRecord> {
        self.queue.pop_front()
    }

    /// Whether every record has been taken.
    pub fn is_finished(&self) -> bool {
        self.done && self.queue.is_empty()
    }

    /// Decodes until a record is ready or the part is done; at the end of each chunk, checks
    /// its record count and checksum.
    pub async fn fill(&mut self) -> Result<()> {
        while self.queue.is_empty() && !self.done {
            if !self.decoder.wants_piece() {
                // A group's records weigh about twice their lines: they are held in the budget
                // (a bound of them, settled once decoded) before they are decoded, or batches
                // the caller has not taken yet plus decoding would go past it.
                let group_bytes = (self.ctx.piece / 4) as usize;
                let reserved = GROUP_RECORDS * weight_bound(0) + 2 * group_bytes;
                self.ctx.shared.hold_needed(reserved).await;
                let records = self.decoder.next_records(GROUP_RECORDS, group_bytes);
                self.take(records, reserved)?;
                continue;
            }
            if self.next_piece().await? {
                continue;
            }
            // The chunk is read to its end (a last line without a newline may be decoded).
            let reserved = weight_bound(self.decoder.carried());
            self.ctx.shared.hold_needed(reserved).await;
            let records = self.decoder.finish();
            self.take(records, reserved)?;
            self.chunk += 1;
            match self.chunks.get(self.chunk) {
                Some(next) => {
                    self.decoder = ChunkDecoder::new(&next.key, &self.ctx.company_id);
                    self.requested = 0;
                    self.fetch_ahead();
                }
                None => self.done = true,
            }
        }
        Ok(())
    }

    /// Checks the order of decoded records and queues those inside the range and position,
    /// their weights held in place of the `reserved` bytes held for them before decoding.
    fn take(&mut self, records: Result<Vec<LogRecord>>, reserved: usize) -> Result<()> {
        let records = match records {
            Ok(records) => records,
            Err(error) => {
                self.ctx.shared.release(reserved);
                return Err(error);
            }
        };
        let Some(last) = records.last() else {
            self.ctx.shared.release(reserved);
            return Ok(());
        };
        let after_previous = self.last.as_ref().is_none_or(|(at, id, position)| {
            (*at, id.as_str(), *position) <= merge_key(&records[0])
        });
        if let Some(stray) = (!after_previous).then_some(&records[0]).or_else(|| {
            records
                .windows(2)
                .find(|w| merge_key(&w[0]) > merge_key(&w[1]))
                .map(|w| &w[1])
        }) {
            self.ctx.shared.release(reserved);
            return Err(LogError::Corrupt {
                key: self.decoder.key().to_owned(),
                reason: format!(
                    "event {} is out of log order (time, event_id)",
                    stray.event.event_id
                ),
            });
        }
        let key = merge_key(last);
        self.last = Some((key.0, key.1.to_owned(), key.2));
        let before = self.queue.len();
        self.queue
            .extend(records.into_iter().filter(|r| self.ctx.keeps(r)));
        let kept: usize = self.queue.range(before..).map(weight).sum();
        // Only a single line longer than a group's bytes weighs more than its reservation (it
        // is decoded alone: the merge cannot go on without it).
        if kept > reserved {
            self.ctx.shared.hold(kept - reserved);
        } else {
            self.ctx.shared.release(reserved - kept);
        }
        Ok(())
    }

    /// Moves the next piece of the current chunk into the decoder (waiting for room in the
    /// budget when the piece was not fetched ahead); `false` when the chunk is fetched whole.
    async fn next_piece(&mut self) -> Result<bool> {
        // The decoder let go of its piece once it was decoded.
        self.ctx.shared.release(self.holding);
        self.holding = 0;
        let fetch = match self.ahead.take() {
            Some(fetch) => fetch,
            None => {
                let len = self.next_len();
                if len == 0 {
                    return Ok(false);
                }
                self.ctx.shared.hold_needed(len as usize).await;
                match self.start_fetch() {
                    Some(fetch) => fetch,
                    None => {
                        self.ctx.shared.release(len as usize);
                        return Ok(false);
                    }
                }
            }
        };
        let bytes = fetch.task.join().await?;
        let key = &self.chunks[self.chunk].key;
        if bytes.len() as u64 != fetch.len {
            return Err(LogError::Corrupt {
                key: key.clone(),
                reason: format!(
                    "it is shorter than the {} bytes its listing shows",
                    self.chunks[self.chunk].size
                ),
            });
        }
        self.ctx.shared.add_read(fetch.len);
        self.read += fetch.len;
        self.holding = fetch.len as usize;
        self.decoder.push(bytes)?;
        self.check_chunk_header()?;
        self.fetch_ahead();
        Ok(true)
    }

    /// A later chunk's header must name the first one's pass and chunk count.
    fn check_chunk_header(&mut self) -> Result<()> {
        let Some(header) = self.decoder.header() else {
            return Ok(());
        };
        match &self.first {
            None => self.first = Some(header.clone()),
            Some(first) if header.pass != first.pass || header.chunks != first.chunks => {
                return Err(LogError::Corrupt {
                    key: self.decoder.key().to_owned(),
                    reason: "its chunks disagree on their pass".into(),
                });
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Bytes of the current chunk's next piece (0 when it is fetched whole).
    fn next_len(&self) -> u64 {
        let size = self.chunks.get(self.chunk).map_or(0, |c| c.size);
        size.saturating_sub(self.requested).min(self.ctx.piece)
    }

    /// Starts fetching the next piece of the current chunk (its bytes already held in the
    /// budget).
    fn start_fetch(&mut self) -> Option<Fetch> {
        let len = self.next_len();
        let chunk = self.chunks.get(self.chunk)?;
        if len == 0 {
            return None;
        }
        let (start, end) = (self.requested, self.requested + len);
        self.requested = end;
        let (store, key) = (Arc::clone(&self.ctx.store), chunk.key.clone());
        let task = Task::spawn(async move { Ok(store.get_range(&key, start, end).await?) });
        Some(Fetch { task, len })
    }

    /// Fetches the next piece ahead when the merge reads this part and the budget has room.
    fn fetch_ahead(&mut self) {
        let len = self.next_len();
        if self.active
            && self.ahead.is_none()
            && len > 0
            && self.ctx.shared.try_hold_ahead(len as usize)
        {
            self.ahead = self.start_fetch();
            if self.ahead.is_none() {
                self.ctx.shared.release(len as usize);
            }
        }
    }

    /// Gives back to the budget everything it holds (it is dropped unread).
    fn release(&mut self) {
        let queued: usize = self.queue.drain(..).map(|r| weight(&r)).sum();
        let ahead = self.ahead.take().map_or(0, |f| f.len as usize);
        self.ctx.shared.release(queued + ahead + self.holding);
        self.holding = 0;
    }
}

impl Drop for PartStream {
    fn drop(&mut self) {
        self.release();
    }
}
