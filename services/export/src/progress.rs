//! How far an export has got: one shape, [`JobProgress`], for the fold (a finished job's final
//! progress), the liveness channel (a running job's beats) and the runner (what the engine
//! reports), with one conversion from the engine's [`archive::Progress`] and one to the API's
//! `pb::Progress`.
//!
//! Its JSON form is part of two wire formats (state records and liveness beats, `BEAT_VERSION`
//! 1): fields may be added with a default, never renamed or removed.

use proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::watermark::LogLag;

/// A job's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub events_read: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub percent: u32,
    /// While the job waits for the log to be durable far enough for it: how far the log has
    /// got (see [`crate::watermark`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_log: Option<LogLag>,
}

impl JobProgress {
    /// A running export's progress as the engine reports it. Never 100 %: that is kept for the
    /// recorded result, so a watcher never sees 100 % on a job that may still fail.
    pub fn running(p: &archive::Progress) -> Self {
        Self {
            events_read: p.events_read,
            files_written: p.files_written,
            bytes_written: p.bytes_written,
            percent: p.percent.min(99),
            waiting_for_log: None,
        }
    }

    /// A job waiting for the log, this far behind.
    pub fn waiting(lag: LogLag) -> Self {
        Self {
            waiting_for_log: Some(lag),
            ..Self::default()
        }
    }

    /// The final progress of a completed export: its archive's size and what it holds.
    pub fn finished(stored: &archive::StoredArchive) -> Self {
        Self {
            events_read: stored.summary.events_read,
            // Every file listed, plus manifest.json itself.
            files_written: stored.summary.files + 1,
            bytes_written: stored.size,
            percent: 100,
            waiting_for_log: None,
        }
    }

    /// The API's form.
    pub fn to_proto(&self) -> pb::Progress {
        let lag = self.waiting_for_log.as_ref();
        let timestamp = crate::convert::timestamp;
        pb::Progress {
            events_read: self.events_read,
            files_written: self.files_written,
            bytes_written: self.bytes_written,
            percent: self.percent,
            detail: lag
                .map(crate::watermark::waiting_message)
                .unwrap_or_default(),
            ingest_events_behind: 0,
            ingest_partitions_behind: lag.map_or(0, |l| l.partitions_behind),
            log_durable_until: lag.and_then(|l| l.durable_until).map(timestamp),
            log_durable_needed: lag.map(|l| timestamp(l.needed.at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_export_never_shows_100_percent() {
        let p = archive::Progress {
            events_read: 7,
            files_written: 2,
            bytes_written: 300,
            percent: 100,
        };
        let running = JobProgress::running(&p);
        assert_eq!(
            (running.events_read, running.files_written, running.percent),
            (7, 2, 99)
        );
        assert_eq!(running.to_proto().percent, 99);
    }

    #[test]
    fn the_json_form_of_older_beats_and_records_still_decodes() {
        // As BEAT_VERSION 1 and record version 2 wrote it (no waiting_for_log).
        let old = r#"{"events_read":5,"files_written":1,"bytes_written":9,"percent":40}"#;
        let p: JobProgress = serde_json::from_str(old).unwrap();
        assert_eq!((p.events_read, p.percent, p.waiting_for_log), (5, 40, None));
        assert_eq!(serde_json::to_string(&p).unwrap(), old);
    }
}
