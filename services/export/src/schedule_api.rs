//! The schedule RPCs (CreateSchedule, GetSchedule, ListSchedules, Pause/Resume/DeleteSchedule):
//! validation of a new schedule, and each call as a command to the state log.
//!
//! Creating, pausing, resuming and deleting a schedule need the access CreateExport needs;
//! reading schedules the access ListExports needs. Another company's schedule is NOT_FOUND,
//! exactly like an unknown id.

use chrono::{DateTime, Utc};
use proto::v1 as pb;
use tonic::{Request, Status};

use crate::access::Action;
use crate::auth::Caller;
use crate::cadence::{Boundaries, Cadence, zone};
use crate::convert::{from_timestamp, schedule_to_proto};
use crate::service::Api;
use crate::state::{Command, Outcome, ScheduleSpec};
use crate::validate::spec_from_request;

/// The longest name a schedule may have, in characters.
const MAX_NAME_CHARS: usize = 200;
/// The furthest back a schedule may start, in days: a year of catch-up runs and a margin. A start
/// further back is more likely a typo (1926 for 2026) than thousands of wanted runs.
const MAX_START_AGE_DAYS: i64 = 400;

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

/// Validates a create request into the schedule's spec and start; `now` is the default start's
/// reference (the boundary at or before it).
pub(crate) fn schedule_from_request(
    company_id: &str,
    request: &pb::CreateScheduleRequest,
    now: DateTime<Utc>,
) -> Result<(ScheduleSpec, DateTime<Utc>), Status> {
    let cadence = match pb::ScheduleCadence::try_from(request.cadence) {
        Ok(pb::ScheduleCadence::Daily) => Cadence::Daily,
        Ok(pb::ScheduleCadence::Weekly) => Cadence::Weekly {
            weekday: request.weekday,
        },
        Ok(pb::ScheduleCadence::Monthly) => Cadence::Monthly {
            day_of_month: request.day_of_month,
        },
        Ok(pb::ScheduleCadence::Unspecified) | Err(_) => {
            return Err(invalid(format!(
                "cadence {} is unset or unknown: use SCHEDULE_CADENCE_DAILY, \
                 SCHEDULE_CADENCE_WEEKLY (with weekday) or SCHEDULE_CADENCE_MONTHLY (with \
                 day_of_month)",
                request.cadence
            )));
        }
    };
    if request.hour > 23 {
        return Err(invalid(format!(
            "hour {} is not an hour of the day: give 0..=23 (runs end at that hour, local time \
             in time_zone)",
            request.hour
        )));
    }
    match cadence {
        Cadence::Weekly { weekday } if !(1..=7).contains(&weekday) => {
            return Err(invalid(format!(
                "weekday {weekday} is not a day of the week: a WEEKLY schedule needs 1 (Monday) \
                 ..= 7 (Sunday)"
            )));
        }
        Cadence::Monthly { day_of_month } if !(1..=28).contains(&day_of_month) => {
            return Err(invalid(format!(
                "day_of_month {day_of_month} is not allowed: a MONTHLY schedule needs 1..=28 \
                 (days every month has)"
            )));
        }
        _ => {}
    }
    if !matches!(cadence, Cadence::Weekly { .. }) && request.weekday != 0 {
        return Err(invalid(
            "weekday is only for WEEKLY schedules: leave it 0 or use SCHEDULE_CADENCE_WEEKLY"
                .into(),
        ));
    }
    if !matches!(cadence, Cadence::Monthly { .. }) && request.day_of_month != 0 {
        return Err(invalid(
            "day_of_month is only for MONTHLY schedules: leave it 0 or use \
             SCHEDULE_CADENCE_MONTHLY"
                .into(),
        ));
    }
    let time_zone = request.time_zone.trim().to_owned();
    let Some(tz) = zone(&time_zone) else {
        return Err(invalid(format!(
            "unknown time zone {time_zone:?}: use an IANA name such as \"Europe/London\" (or \
             leave it empty for UTC)"
        )));
    };
    if request.name.chars().count() > MAX_NAME_CHARS || request.name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "name must be at most {MAX_NAME_CHARS} printable characters"
        )));
    }
    let boundaries = Boundaries {
        cadence,
        hour: request.hour,
        zone: tz,
    };
    let start = match &request.start {
        Some(t) => from_timestamp("start", t)?,
        None => boundaries.at_or_before(now),
    };
    if start > now {
        return Err(invalid(format!(
            "start ({}) is in the future: a schedule starts at or before now (leave it unset to \
             start at the last {} boundary)",
            start.to_rfc3339(),
            match cadence {
                Cadence::Daily => "daily",
                Cadence::Weekly { .. } => "weekly",
                Cadence::Monthly { .. } => "monthly",
            }
        )));
    }
    if start < now - chrono::Duration::days(MAX_START_AGE_DAYS) {
        return Err(invalid(format!(
            "start ({}) is more than {MAX_START_AGE_DAYS} days ago: every period since would be \
             exported, one run after another; export the older history by hand (CreateExport) \
             and start the schedule where that export ends",
            start.to_rfc3339()
        )));
    }
    // Filters, format, zone and request id exactly as an export's (one set of rules and words).
    let template = spec_from_request(
        company_id,
        &pb::CreateExportRequest {
            from: None,
            to: None,
            person_ids: request.person_ids.clone(),
            conversation_ids: request.conversation_ids.clone(),
            format: request.format,
            time_zone,
            request_id: request.request_id.clone(),
        },
        now,
    )?;
    Ok((
        ScheduleSpec {
            cadence,
            hour: request.hour,
            time_zone: template.time_zone,
            person_ids: template.person_ids,
            conversation_ids: template.conversation_ids,
            format: template.format,
            name: request.name.clone(),
        },
        start,
    ))
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "no schedule {id:?} in your company: list your schedules (ListSchedules) for their ids"
    ))
}

impl Api {
    /// The schedule as the API shows it, or NOT_FOUND (also for another company's).
    fn schedule(&self, caller: &Caller, id: &str) -> Result<pb::Schedule, Status> {
        self.with_company(&caller.company_id, |company| {
            company
                .schedule(id)
                .map(|schedule| schedule_to_proto(company, schedule))
        })
        .flatten()
        .ok_or_else(|| not_found(id))
    }

    pub(crate) async fn create_schedule_rpc(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<pb::Schedule, Status> {
        let caller = self.authorize(&request, Action::CreateExport).await?;
        let body = request.get_ref();
        let (spec, start) = schedule_from_request(&caller.company_id, body, self.now())?;
        let schedule_id = uuid::Uuid::new_v4().to_string();
        let outcome = self
            .submit(
                &caller,
                Command::CreateSchedule {
                    schedule_id: schedule_id.clone(),
                    spec,
                    start,
                    requester_email: caller.email.clone(),
                    request_id: Some(body.request_id.clone()).filter(|k| !k.is_empty()),
                    max_schedules: Some(self.max_schedules_per_company),
                },
            )
            .await?;
        let id = match outcome {
            Outcome::ExistingSchedule { schedule_id } => schedule_id,
            _ => schedule_id,
        };
        tracing::info!(company = %caller.company_id, schedule = %id, by = %caller.admin_id, "schedule created");
        self.schedule(&caller, &id)
    }

    pub(crate) async fn get_schedule_rpc(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<pb::Schedule, Status> {
        let caller = self.authorize(&request, Action::ReadExports).await?;
        self.schedule(&caller, &request.get_ref().schedule_id)
    }

    pub(crate) async fn list_schedules_rpc(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<pb::ListSchedulesResponse, Status> {
        let caller = self.authorize(&request, Action::ReadExports).await?;
        let schedules = self
            .with_company(&caller.company_id, |company| {
                company
                    .schedules()
                    .into_iter()
                    .map(|schedule| schedule_to_proto(company, schedule))
                    .collect()
            })
            .unwrap_or_default();
        Ok(pb::ListSchedulesResponse { schedules })
    }

    /// Pause, resume or delete: `make` builds the command from the schedule's id.
    pub(crate) async fn change_schedule_rpc<T>(
        &self,
        request: Request<T>,
        id: &str,
        make: fn(String) -> Command,
    ) -> Result<pb::Schedule, Status> {
        let caller = self.authorize(&request, Action::CreateExport).await?;
        self.schedule(&caller, id)?;
        let command = make(id.to_owned());
        let what = format!("{command:?}");
        self.submit(&caller, command).await?;
        tracing::info!(company = %caller.company_id, schedule = %id, by = %caller.admin_id, change = %what, "schedule changed");
        self.schedule(&caller, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::timestamp;

    fn now() -> DateTime<Utc> {
        "2026-11-25T12:30:00Z".parse().unwrap()
    }

    fn daily() -> pb::CreateScheduleRequest {
        pb::CreateScheduleRequest {
            cadence: pb::ScheduleCadence::Daily.into(),
            hour: 6,
            time_zone: "Europe/London".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_schedule_starts_at_the_last_boundary_unless_given_a_start() {
        let (spec, start) = schedule_from_request("acme", &daily(), now()).unwrap();
        assert_eq!(
            start,
            "2026-11-25T06:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            (spec.cadence, spec.hour, spec.format.as_str()),
            (Cadence::Daily, 6, "json")
        );
        let given = pb::CreateScheduleRequest {
            start: Some(timestamp("2026-01-01T00:00:00Z".parse().unwrap())),
            ..daily()
        };
        let (_, start) = schedule_from_request("acme", &given, now()).unwrap();
        assert_eq!(
            start,
            "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_messages_a_person_can_act_on() {
        let cases: Vec<(&str, pb::CreateScheduleRequest, &str)> = vec![
            (
                "no cadence",
                pb::CreateScheduleRequest::default(),
                "SCHEDULE_CADENCE_DAILY",
            ),
            (
                "unknown cadence",
                pb::CreateScheduleRequest {
                    cadence: 9,
                    ..daily()
                },
                "cadence 9",
            ),
            (
                "hour",
                pb::CreateScheduleRequest {
                    hour: 24,
                    ..daily()
                },
                "0..=23",
            ),
            (
                "weekday",
                pb::CreateScheduleRequest {
                    cadence: pb::ScheduleCadence::Weekly.into(),
                    weekday: 8,
                    ..daily()
                },
                "1 (Monday)",
            ),
            (
                "no weekday",
                pb::CreateScheduleRequest {
                    cadence: pb::ScheduleCadence::Weekly.into(),
                    ..daily()
                },
                "weekday 0",
            ),
            (
                "day of month",
                pb::CreateScheduleRequest {
                    cadence: pb::ScheduleCadence::Monthly.into(),
                    day_of_month: 31,
                    ..daily()
                },
                "1..=28",
            ),
            (
                "weekday on a daily",
                pb::CreateScheduleRequest {
                    weekday: 2,
                    ..daily()
                },
                "only for WEEKLY",
            ),
            (
                "zone",
                pb::CreateScheduleRequest {
                    time_zone: "Mars/Olympus".into(),
                    ..daily()
                },
                "IANA name",
            ),
            (
                "future start",
                pb::CreateScheduleRequest {
                    start: Some(timestamp("2027-01-01T00:00:00Z".parse().unwrap())),
                    ..daily()
                },
                "in the future",
            ),
            (
                "ancient start",
                pb::CreateScheduleRequest {
                    start: Some(timestamp("1926-01-01T00:00:00Z".parse().unwrap())),
                    ..daily()
                },
                "more than 400 days ago",
            ),
            (
                "format",
                pb::CreateScheduleRequest {
                    format: 42,
                    ..daily()
                },
                "format 42 is unknown",
            ),
            (
                "filter",
                pb::CreateScheduleRequest {
                    person_ids: vec!["../x".into()],
                    ..daily()
                },
                "person_ids contains",
            ),
            (
                "name",
                pb::CreateScheduleRequest {
                    name: "x".repeat(201),
                    ..daily()
                },
                "at most 200",
            ),
        ];
        for (what, request, expected) in cases {
            let status = schedule_from_request("acme", &request, now()).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}");
            assert!(
                status.message().contains(expected),
                "{what}: {:?} lacks {expected:?}",
                status.message()
            );
        }
    }
}
