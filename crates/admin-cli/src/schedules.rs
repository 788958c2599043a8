//! `cce-admin schedule …`: scheduled exports (create, list, get, pause, resume, delete).
//!
//!   cce-admin schedule create --cadence daily --hour 6 --time-zone Europe/London
//!   cce-admin schedule list
//!   cce-admin schedule pause <id>
//!
//! Each prints the schedule as one line: id, state, cadence, start, how far its completed runs
//! cover, the next run, runs completed, the newest run's export and its error if it failed.

use clap::Subcommand;
use proto::v1 as pb;

use super::{Client, explain, parse_time, show_time};

// Parsed once per process from the command line: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Creates a schedule: one export per period, each from where the previous ended.
    Create {
        /// daily, weekly or monthly.
        #[arg(long)]
        cadence: String,
        /// 0..=23: each run's range ends at this hour, local time in --time-zone.
        #[arg(long)]
        hour: u32,
        /// IANA zone of --hour and of the day files, e.g. Europe/London. Default UTC.
        #[arg(long, default_value = "")]
        time_zone: String,
        /// Weekly: 1 (Monday) ..= 7 (Sunday), or mon … sun.
        #[arg(long)]
        weekday: Option<String>,
        /// Monthly: 1..=28.
        #[arg(long)]
        day_of_month: Option<u32>,
        /// Start of the first run (RFC 3339 or YYYY-MM-DD). Default: the last boundary.
        #[arg(long)]
        start: Option<String>,
        /// A label for people.
        #[arg(long, default_value = "")]
        name: String,
        /// Only conversations with this person (repeatable).
        #[arg(long = "person")]
        person_ids: Vec<String>,
        /// Only this conversation (repeatable).
        #[arg(long = "conversation")]
        conversation_ids: Vec<String>,
        /// Each run's format: json, eml or csv (as `create --format`).
        #[arg(long, default_value = "json", value_parser = ["json", "eml", "csv"])]
        format: String,
        /// Idempotency key: repeating the command with it returns the same schedule.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Lists the company's schedules (deleted ones too), newest first.
    List,
    /// Shows one schedule.
    Get { id: String },
    /// Stops new runs until resumed (a run already made finishes).
    Pause { id: String },
    /// Continues a paused schedule from where its last run ended.
    Resume { id: String },
    /// Ends a schedule for good (its archives stay for their 30 days).
    Delete { id: String },
}

fn cadence(raw: &str) -> anyhow::Result<pb::ScheduleCadence> {
    Ok(match raw.to_ascii_lowercase().as_str() {
        "daily" => pb::ScheduleCadence::Daily,
        "weekly" => pb::ScheduleCadence::Weekly,
        "monthly" => pb::ScheduleCadence::Monthly,
        _ => anyhow::bail!("--cadence {raw:?}: use daily, weekly or monthly"),
    })
}

fn weekday(raw: &str) -> anyhow::Result<u32> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let lower = raw.to_ascii_lowercase();
    if let Some(i) = NAMES.iter().position(|n| lower.starts_with(n)) {
        return Ok(u32::try_from(i).unwrap_or(0) + 1);
    }
    raw.parse().map_err(|_| {
        anyhow::anyhow!("--weekday {raw:?}: use 1 (Monday) ..= 7 (Sunday) or mon … sun")
    })
}

fn cadence_text(schedule: &pb::Schedule) -> String {
    let zone = if schedule.time_zone.is_empty() {
        "UTC"
    } else {
        &schedule.time_zone
    };
    let at = format!("{:02}:00 {zone}", schedule.hour);
    match pb::ScheduleCadence::try_from(schedule.cadence) {
        Ok(pb::ScheduleCadence::Daily) => format!("daily at {at}"),
        Ok(pb::ScheduleCadence::Weekly) => format!("weekly on day {} at {at}", schedule.weekday),
        Ok(pb::ScheduleCadence::Monthly) => {
            format!("monthly on day {} at {at}", schedule.day_of_month)
        }
        _ => format!("unknown cadence at {at}"),
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::ScheduleState::try_from(state) {
        Ok(pb::ScheduleState::Active) => "ACTIVE",
        Ok(pb::ScheduleState::Paused) => "PAUSED",
        Ok(pb::ScheduleState::Deleted) => "DELETED",
        _ => "UNKNOWN",
    }
}

/// One schedule as a line of tab-separated fields, id first.
pub fn schedule_line(schedule: &pb::Schedule) -> String {
    let mut line = format!(
        "{}\t{}\t{}\tstart {}\tcovered until {}\tnext run {}\truns {}",
        schedule.id,
        state_name(schedule.state),
        cadence_text(schedule),
        show_time(schedule.start.as_ref()),
        show_time(schedule.covered_until.as_ref()),
        show_time(schedule.next_run_at.as_ref()),
        schedule.runs_completed,
    );
    if schedule.format() != pb::ExportFormat::Json
        && schedule.format() != pb::ExportFormat::Unspecified
    {
        line.push_str(&format!(
            "\tformat {}",
            schedule
                .format()
                .as_str_name()
                .trim_start_matches("EXPORT_FORMAT_")
                .to_lowercase()
        ));
    }
    if !schedule.name.is_empty() {
        line.push_str(&format!("\tname {}", schedule.name));
    }
    if !schedule.last_job_id.is_empty() {
        line.push_str(&format!("\tlast export {}", schedule.last_job_id));
    }
    if !schedule.last_error.is_empty() {
        line.push_str(&format!("\terror: {}", schedule.last_error));
    }
    line
}

/// Runs one `schedule` subcommand, printing its result.
#[allow(clippy::print_stdout)]
pub async fn run(command: ScheduleCmd, client: &mut Client) -> anyhow::Result<()> {
    let schedules = match command {
        ScheduleCmd::Create {
            cadence: raw_cadence,
            hour,
            time_zone,
            weekday: raw_weekday,
            day_of_month,
            start,
            name,
            person_ids,
            conversation_ids,
            format,
            request_id,
        } => {
            let request = pb::CreateScheduleRequest {
                cadence: cadence(&raw_cadence)?.into(),
                hour,
                time_zone,
                weekday: raw_weekday
                    .as_deref()
                    .map(weekday)
                    .transpose()?
                    .unwrap_or(0),
                day_of_month: day_of_month.unwrap_or(0),
                person_ids,
                conversation_ids,
                format: crate::export_format(&format).into(),
                start: start
                    .as_deref()
                    .map(|s| parse_time("start", s))
                    .transpose()?,
                name,
                request_id,
            };
            let request = client.request(request);
            vec![
                client
                    .inner
                    .create_schedule(request)
                    .await
                    .map_err(explain)?
                    .into_inner(),
            ]
        }
        ScheduleCmd::List => {
            let request = client.request(pb::ListSchedulesRequest {});
            client
                .inner
                .list_schedules(request)
                .await
                .map_err(explain)?
                .into_inner()
                .schedules
        }
        ScheduleCmd::Get { id } => {
            let request = client.request(pb::GetScheduleRequest { schedule_id: id });
            vec![
                client
                    .inner
                    .get_schedule(request)
                    .await
                    .map_err(explain)?
                    .into_inner(),
            ]
        }
        ScheduleCmd::Pause { id } => {
            let request = client.request(pb::PauseScheduleRequest { schedule_id: id });
            vec![
                client
                    .inner
                    .pause_schedule(request)
                    .await
                    .map_err(explain)?
                    .into_inner(),
            ]
        }
        ScheduleCmd::Resume { id } => {
            let request = client.request(pb::ResumeScheduleRequest { schedule_id: id });
            vec![
                client
                    .inner
                    .resume_schedule(request)
                    .await
                    .map_err(explain)?
                    .into_inner(),
            ]
        }
        ScheduleCmd::Delete { id } => {
            let request = client.request(pb::DeleteScheduleRequest { schedule_id: id });
            vec![
                client
                    .inner
                    .delete_schedule(request)
                    .await
                    .map_err(explain)?
                    .into_inner(),
            ]
        }
    };
    for schedule in &schedules {
        println!("{}", schedule_line(schedule));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadences_and_weekdays_parse_or_say_what_to_use() {
        assert_eq!(cadence("Weekly").unwrap(), pb::ScheduleCadence::Weekly);
        assert!(
            cadence("hourly")
                .unwrap_err()
                .to_string()
                .contains("daily, weekly")
        );
        assert_eq!(weekday("sunday").unwrap(), 7);
        assert_eq!(weekday("Mon").unwrap(), 1);
        assert_eq!(weekday("3").unwrap(), 3);
        assert!(
            weekday("someday")
                .unwrap_err()
                .to_string()
                .contains("mon … sun")
        );
    }

    #[test]
    fn a_schedule_line_names_its_state_chain_and_error() {
        let schedule = pb::Schedule {
            id: "s1".into(),
            state: pb::ScheduleState::Paused.into(),
            cadence: pb::ScheduleCadence::Weekly.into(),
            hour: 6,
            weekday: 1,
            time_zone: "Europe/London".into(),
            runs_completed: 3,
            last_job_id: "j3".into(),
            last_error: "boom".into(),
            ..Default::default()
        };
        let line = schedule_line(&schedule);
        assert!(
            line.starts_with("s1\tPAUSED\tweekly on day 1 at 06:00 Europe/London"),
            "{line}"
        );
        assert!(
            line.contains("runs 3") && line.contains("last export j3"),
            "{line}"
        );
        assert!(line.ends_with("error: boom"), "{line}");
    }
}
