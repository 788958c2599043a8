//! [`V1Writer`] writes format version 1 (one object per company, stream and hour); it is kept
//! so tests can build version-1 logs and check they stay readable.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use event_model::route;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use storage::ObjectStore;

use super::PendingRecord;
use crate::Result;
use crate::format::{self, SourceRange, Stream, floor_hour};

/// What one write did, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub objects: u64,
    pub bytes: u64,
    /// Appends per event type (an event routed to two companies counts twice).
    pub appended: BTreeMap<&'static str, u64>,
}

/// Writes format-1 log objects. Cheap to clone; safe to share.
#[derive(Debug, Clone)]
pub struct V1Writer {
    store: Arc<dyn ObjectStore>,
    concurrency: usize,
}

type Group = (String, Stream, Option<DateTime<Utc>>);

impl V1Writer {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            concurrency: 16,
        }
    }

    /// Writes every record of `source` (in offset order) to the log of each company entitled to
    /// it. Returns once every object is durable. Idempotent: the same `source` and records give
    /// the same keys and bytes, so a retry after a failure or a replay after a crash is safe.
    pub async fn write(
        &self,
        source: &SourceRange,
        records: &[PendingRecord],
    ) -> Result<WriteStats> {
        let mut groups: BTreeMap<Group, Vec<&PendingRecord>> = BTreeMap::new();
        let mut stats = WriteStats::default();
        for record in records {
            let stream = Stream::of(&record.event);
            let hour = match stream {
                Stream::Events => Some(floor_hour(record.event.occurred_at.with_timezone(&Utc))),
                Stream::Meta => None,
            };
            for company in route(&record.event) {
                *stats.appended.entry(record.event.type_name()).or_default() += 1;
                groups
                    .entry((company, stream, hour))
                    .or_default()
                    .push(record);
            }
        }
        let mut objects = Vec::with_capacity(groups.len());
        for ((company, stream, hour), members) in &groups {
            let lines: Vec<(i32, i64, &Value)> = members
                .iter()
                .map(|r| (source.partition, r.offset, &r.raw))
                .collect();
            let bytes = format::encode(company, *stream, *hour, source, &lines)?;
            let key = match (stream, hour) {
                (Stream::Events, Some(hour)) => format::events_key(company, *hour, source),
                _ => format::meta_key(company, source),
            };
            objects.push((key, bytes));
        }
        stats.objects = objects.len() as u64;
        stats.bytes = objects.iter().map(|(_, b)| b.len() as u64).sum();
        futures::stream::iter(objects)
            .map(|(key, bytes)| {
                let store = Arc::clone(&self.store);
                async move { store.put(&key, bytes).await }
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<()>()
            .await?;
        Ok(stats)
    }
}
