//! Format 1 as a source of the cursor's merge: objects per company-hour, listed day by day and
//! fetched by a background task through one window of `concurrency` GETs that runs across day
//! boundaries, handed over an hour at a time. A sparse log (a few small objects per day, as a
//! long all-history export reads) keeps the window full instead of waiting on each day's LIST
//! and its last GET in turn. Memory: the hour being assembled, up to `concurrency` objects past
//! it, and [`HOURS_AHEAD`] hours in the channel (format-1 objects are per company-hour and
//! flush, so small).

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::{TryFutureExt, TryStreamExt};
use storage::{ObjectStore, list_all};
use tokio::sync::mpsc;

use super::merge::{Ctx, Task, merge_key, weight};
use super::read_object;
use crate::format::{self, floor_hour, hour_of_events_key};
use crate::{LogRecord, Result};

/// Hours fetched ahead of the merge.
const HOURS_AHEAD: usize = 24;

/// The company's format-1 records of the range, an hour at a time, in merge order.
#[derive(Debug)]
pub(super) struct V1Source {
    rx: mpsc::Receiver<Result<Vec<LogRecord>>>,
    /// The current hour's records not merged yet (their weights held in the budget).
    queue: VecDeque<LogRecord>,
    done: bool,
    _task: Task<()>,
}

impl V1Source {
    /// Starts listing and fetching the range's format-1 objects.
    pub fn start(ctx: Arc<Ctx>) -> Self {
        let (tx, rx) = mpsc::channel(HOURS_AHEAD);
        let task = Task::spawn(async move {
            if let Err(error) = fetch_hours(ctx, &tx).await {
                // The merge may be gone (a cancelled export): nothing more to do then.
                let _ = tx.send(Err(error)).await;
            }
        });
        Self {
            rx,
            queue: VecDeque::new(),
            done: false,
            _task: task,
        }
    }

    /// Receives hours until one has a record inside the range and position, or none is left.
    pub async fn fill(&mut self, ctx: &Ctx) -> Result<()> {
        while self.queue.is_empty() && !self.done {
            match self.rx.recv().await {
                None => self.done = true,
                Some(Err(error)) => return Err(error),
                Some(Ok(records)) => {
                    let (mut kept, dropped): (Vec<LogRecord>, Vec<LogRecord>) =
                        records.into_iter().partition(|r| ctx.keeps(r));
                    ctx.shared.release(dropped.iter().map(weight).sum());
                    kept.sort_by(|a, b| merge_key(a).cmp(&merge_key(b)));
                    self.queue = kept.into();
                }
            }
        }
        Ok(())
    }

    pub fn head(&self) -> Option<&LogRecord> {
        self.queue.front()
    }

    pub fn pop(&mut self) -> Option<LogRecord> {
        self.queue.pop_front()
    }
}

/// Lists the range's days in order and fetches their objects, sending each hour when its last
/// object is in.
async fn fetch_hours(ctx: Arc<Ctx>, tx: &mpsc::Sender<Result<Vec<LogRecord>>>) -> Result<()> {
    let loader = DayLoader {
        ctx: Arc::clone(&ctx),
        next_day: ctx.from.date_naive(),
        last_day: (ctx.to - Duration::nanoseconds(1)).date_naive(),
    };
    let keys = futures::stream::try_unfold(loader, |mut loader| async move {
        Ok::<_, crate::LogError>(loader.next_day_keys().await?.map(|keys| (keys, loader)))
    })
    .map_ok(|wanted| futures::stream::iter(wanted.into_iter().map(Ok::<_, crate::LogError>)))
    .try_flatten();
    let fetched = keys
        .map_ok(|(hour, key, size)| {
            let ctx = Arc::clone(&ctx);
            read_object(Arc::clone(&ctx.store), key, ctx.company_id.clone()).map_ok(
                move |records| {
                    ctx.shared.add_read(size);
                    ctx.shared.hold(records.iter().map(weight).sum());
                    (hour, records)
                },
            )
        })
        .try_buffered(ctx.concurrency);
    let mut fetched = std::pin::pin!(fetched);
    let mut assembling: Option<(DateTime<Utc>, Vec<LogRecord>)> = None;
    while let Some((hour, records)) = fetched.try_next().await? {
        match &mut assembling {
            Some((current, pending)) if *current == hour => pending.extend(records),
            _ => {
                if let Some((_, done)) = assembling.replace((hour, records))
                    && tx.send(Ok(done)).await.is_err()
                {
                    return Ok(());
                }
            }
        }
    }
    if let Some((_, done)) = assembling {
        let _ = tx.send(Ok(done)).await;
    }
    Ok(())
}

/// Lists a range's format-1 days in order.
#[derive(Debug)]
struct DayLoader {
    ctx: Arc<Ctx>,
    next_day: NaiveDate,
    last_day: NaiveDate,
}

impl DayLoader {
    /// The keys (with their hour and size) to read from the next day with objects in the
    /// range, in key (so hour) order; `None` when there is none. Their sizes join the total.
    async fn next_day_keys(&mut self) -> Result<Option<Vec<(DateTime<Utc>, String, u64)>>> {
        if self.ctx.from >= self.ctx.to || self.next_day > self.last_day {
            return Ok(None);
        }
        // Skip days with nothing logged at one LIST each, so an all-history read costs in
        // proportion to the days that have events, not to the calendar.
        let Some(day) = self.next_logged_day().await? else {
            return Ok(None);
        };
        if day > self.last_day {
            return Ok(None);
        }
        self.next_day = day.succ_opt().unwrap_or(NaiveDate::MAX);
        let keys = self.day_keys(day).await?;
        self.ctx
            .shared
            .add_total(keys.iter().map(|(_, _, size)| size).sum());
        Ok(Some(keys))
    }

    /// The first day on or after `next_day` that has any object.
    async fn next_logged_day(&self) -> Result<Option<NaiveDate>> {
        let prefix = format::events_prefix(&self.ctx.company_id);
        // Keys of day D start with "<prefix>D/", which sorts right after "<prefix>D".
        let start_after = format!("{prefix}{}", self.next_day.format("%Y-%m-%d"));
        let page = self
            .ctx
            .store
            .list_page(&prefix, Some(&start_after), 1)
            .await?;
        Ok(page.objects.first().and_then(|o| {
            let day = o.key.strip_prefix(&prefix)?.split('/').next()?;
            NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
        }))
    }

    /// Lists one day: its objects in the range's hours, in key (so hour) order.
    async fn day_keys(&self, day: NaiveDate) -> Result<Vec<(DateTime<Utc>, String, u64)>> {
        let prefix = format::events_day_prefix(&self.ctx.company_id, day);
        let store: &dyn ObjectStore = self.ctx.store.as_ref();
        let objects = list_all(store, &prefix).await?;
        let Some(midnight) = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) else {
            return Ok(Vec::new());
        };
        let (first_hour, to) = (floor_hour(self.ctx.from), self.ctx.to);
        let mut wanted = Vec::new();
        for object in objects {
            let Some(hour) = hour_of_events_key(&object.key) else {
                tracing::warn!(key = %object.key, "ignoring an object outside the log layout");
                continue;
            };
            let start = midnight + Duration::hours(i64::from(hour));
            if start >= first_hour && start < to {
                wanted.push((start, object.key, object.size));
            }
        }
        Ok(wanted)
    }
}
