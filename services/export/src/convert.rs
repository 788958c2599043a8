//! Conversions between the state's types and the API's messages.

use chrono::{DateTime, Utc};
use proto::v1 as pb;
use tonic::Status;

use crate::cadence::Cadence;
use crate::state::{CompanyState, Job, JobProgress, JobStatus, Schedule, ScheduleStatus};

/// A time as the API's timestamp.
/// Where the job's completion mail stands.
fn notification_status(job: &Job) -> pb::NotificationStatus {
    if job.notified {
        pb::NotificationStatus::Sent
    } else if job.notify_given_up {
        pb::NotificationStatus::GivenUp
    } else if job.awaits_notification() {
        pb::NotificationStatus::Pending
    } else {
        pb::NotificationStatus::Unspecified
    }
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub(crate) fn from_timestamp(
    field: &str,
    t: &prost_types::Timestamp,
) -> Result<DateTime<Utc>, Status> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or_else(|| Status::invalid_argument(format!("{field} is not a valid timestamp")))
}

pub(crate) fn status_to_proto(status: JobStatus) -> pb::ExportStatus {
    match status {
        JobStatus::Accepted => pb::ExportStatus::Accepted,
        JobStatus::InProgress => pb::ExportStatus::InProgress,
        JobStatus::Completed => pb::ExportStatus::Completed,
        JobStatus::Failed => pb::ExportStatus::Failed,
        JobStatus::Cancelled => pb::ExportStatus::Cancelled,
        JobStatus::Expired => pb::ExportStatus::Expired,
    }
}

pub(crate) fn job_to_proto(
    company: &CompanyState,
    job: &Job,
    progress: JobProgress,
    now: DateTime<Utc>,
) -> pb::ExportJob {
    let status = job.status_at(now);
    pb::ExportJob {
        id: job.id.clone(),
        status: status_to_proto(status).into(),
        requested_by: job.requested_by.clone(),
        created_at: Some(timestamp(job.created_at)),
        started_at: job.started_at.map(timestamp),
        finished_at: job.finished_at.map(timestamp),
        expires_at: job.archive.as_ref().map(|a| timestamp(a.expires_at)),
        request: Some(pb::ExportRequestSummary {
            from: job.spec.from.map(timestamp),
            to: Some(timestamp(job.spec.to)),
            person_ids: job.spec.person_ids.clone(),
            conversation_ids: job.spec.conversation_ids.clone(),
            format: format_to_proto(&job.spec.format).into(),
            time_zone: job.spec.time_zone.clone(),
            all_history: job.spec.from.is_none(),
        }),
        progress: Some(progress.to_proto()),
        archive_size: job.archive.as_ref().map_or(0, |a| a.size),
        archive_sha256: job
            .archive
            .as_ref()
            .map_or_else(String::new, |a| a.sha256.clone()),
        error: job.error.clone().unwrap_or_default(),
        notification: notification_status(job).into(),
        notification_failures: job.notify_failures,
        queue_position: company.queue_position(&job.id),
        schedule_id: job
            .spec
            .schedule
            .as_ref()
            .map_or_else(String::new, |link| link.schedule_id.clone()),
        schedule_run: job.spec.schedule.as_ref().map_or(0, |link| link.run),
    }
}

/// A format as the state names it (`DataFormat::name`; records from before EML and CSV say
/// `json`), as the API's enum.
fn format_to_proto(format: &str) -> pb::ExportFormat {
    match archive::DataFormat::from_name(format).unwrap_or_default() {
        archive::DataFormat::Json => pb::ExportFormat::Json,
        archive::DataFormat::Eml => pb::ExportFormat::Eml,
        archive::DataFormat::Csv => pb::ExportFormat::Csv,
    }
}

pub(crate) fn schedule_to_proto(company: &CompanyState, schedule: &Schedule) -> pb::Schedule {
    let (cadence, weekday, day_of_month) = match schedule.spec.cadence {
        Cadence::Daily => (pb::ScheduleCadence::Daily, 0, 0),
        Cadence::Weekly { weekday } => (pb::ScheduleCadence::Weekly, weekday, 0),
        Cadence::Monthly { day_of_month } => (pb::ScheduleCadence::Monthly, 0, day_of_month),
    };
    let state = match schedule.status {
        ScheduleStatus::Active => pb::ScheduleState::Active,
        ScheduleStatus::Paused => pb::ScheduleState::Paused,
        ScheduleStatus::Deleted => pb::ScheduleState::Deleted,
    };
    let progress = company.schedule_progress(schedule);
    pb::Schedule {
        id: schedule.id.clone(),
        state: state.into(),
        cadence: cadence.into(),
        hour: schedule.spec.hour,
        time_zone: schedule.spec.time_zone.clone(),
        weekday,
        day_of_month,
        person_ids: schedule.spec.person_ids.clone(),
        conversation_ids: schedule.spec.conversation_ids.clone(),
        format: format_to_proto(&schedule.spec.format).into(),
        name: schedule.spec.name.clone(),
        created_by: schedule.created_by.clone(),
        created_at: Some(timestamp(schedule.created_at)),
        start: Some(timestamp(schedule.start)),
        covered_until: progress.covered_until.map(timestamp),
        next_run_at: progress.next_run_at.map(timestamp),
        runs_completed: progress.runs_completed,
        last_job_id: progress.last_job_id.unwrap_or_default(),
        last_error: progress.last_error.unwrap_or_default(),
    }
}
