//! Checks of the API's requests, each failure a message that says what to do.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use proto::v1 as pb;
use tonic::Status;

use crate::convert::from_timestamp;
use crate::state::JobSpec;

/// The most ids a filter may list.
const MAX_FILTER_IDS: usize = 1000;
const MAX_PAGE_SIZE: u32 = 250;
const DEFAULT_PAGE_SIZE: u32 = 50;

pub(crate) fn page_size(requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n <= MAX_PAGE_SIZE => Ok(n as usize),
        n => Err(Status::invalid_argument(format!(
            "page_size {n} is too large: ask for at most {MAX_PAGE_SIZE} and follow \
             next_page_token"
        ))),
    }
}

/// Page tokens are `<prefix><position>`; anything else was not issued by this service.
pub(crate) fn page_start(token: &str, prefix: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(
                "page_token is not one this service issued: start again without it",
            )
        })
}

fn check_ids(field: &str, ids: &[String]) -> Result<(), Status> {
    if ids.len() > MAX_FILTER_IDS {
        return Err(Status::invalid_argument(format!(
            "{field} lists {} ids; at most {MAX_FILTER_IDS} are allowed — export without the \
             filter or split the request",
            ids.len()
        )));
    }
    if let Some(bad) = ids.iter().find(|id| !event_model::is_safe_id(id)) {
        return Err(Status::invalid_argument(format!(
            "{field} contains {bad:?}, which is not a valid id (ASCII letters, digits, '-', '_' \
             and '.', at most 128 characters)"
        )));
    }
    Ok(())
}

/// Validates a create request into the job's spec; `now` closes open ranges.
pub(crate) fn spec_from_request(
    company_id: &str,
    request: &pb::CreateExportRequest,
    now: DateTime<Utc>,
) -> Result<JobSpec, Status> {
    let from = request
        .from
        .as_ref()
        .map(|t| from_timestamp("from", t))
        .transpose()?;
    let to = request
        .to
        .as_ref()
        .map(|t| from_timestamp("to", t))
        .transpose()?
        .unwrap_or(now);
    if to > now + chrono::Duration::minutes(1) {
        return Err(Status::invalid_argument(format!(
            "to ({}) is in the future: the log holds nothing after now; leave `to` unset to \
             export up to now",
            to.to_rfc3339()
        )));
    }
    // Within a minute of now (clock skew): now, so the range is fixed when the job is accepted.
    let to = to.min(now);
    let format = match pb::ExportFormat::try_from(request.format) {
        Ok(pb::ExportFormat::Unspecified | pb::ExportFormat::Json) => archive::DataFormat::Json,
        Ok(pb::ExportFormat::Eml) => archive::DataFormat::Eml,
        Ok(pb::ExportFormat::Csv) => archive::DataFormat::Csv,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "format {} is unknown: use EXPORT_FORMAT_JSON (or leave it unset), \
                 EXPORT_FORMAT_EML or EXPORT_FORMAT_CSV",
                request.format
            )));
        }
    };
    check_ids("person_ids", &request.person_ids)?;
    check_ids("conversation_ids", &request.conversation_ids)?;
    if request.request_id.len() > 128 || request.request_id.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "request_id must be at most 128 printable characters",
        ));
    }
    let unique = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let spec = JobSpec {
        from,
        to,
        person_ids: unique(&request.person_ids),
        conversation_ids: unique(&request.conversation_ids),
        time_zone: request.time_zone.trim().to_owned(),
        format: format.name().into(),
        schedule: None,
    };
    crate::runner::export_request(company_id, &spec)
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::timestamp;

    fn now() -> DateTime<Utc> {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn ts(s: &str) -> Option<prost_types::Timestamp> {
        Some(timestamp(s.parse().unwrap()))
    }

    #[test]
    fn create_requests_are_checked_with_messages_a_person_can_act_on() {
        let ok = pb::CreateExportRequest {
            from: ts("2026-11-01T00:00:00Z"),
            to: ts("2026-11-02T00:00:00Z"),
            ..Default::default()
        };
        let spec = spec_from_request("acme", &ok, now()).unwrap();
        assert_eq!(spec.from, Some("2026-11-01T00:00:00Z".parse().unwrap()));
        let all = spec_from_request("acme", &pb::CreateExportRequest::default(), now()).unwrap();
        assert_eq!((all.from, all.to), (None, now()));
        assert_eq!(all.format, "json");
        for (format, name) in [
            (pb::ExportFormat::Json, "json"),
            (pb::ExportFormat::Eml, "eml"),
            (pb::ExportFormat::Csv, "csv"),
        ] {
            let request = pb::CreateExportRequest {
                format: format.into(),
                ..ok.clone()
            };
            let spec = spec_from_request("acme", &request, now()).unwrap();
            assert_eq!(spec.format, name);
            let engine = crate::runner::export_request("acme", &spec);
            assert_eq!(
                engine.format.name(),
                name,
                "the runner exports in the format asked"
            );
        }

        let cases: Vec<(&str, pb::CreateExportRequest, &str)> = vec![
            (
                "reversed range",
                pb::CreateExportRequest {
                    from: ts("2026-11-02T00:00:00Z"),
                    to: ts("2026-11-01T00:00:00Z"),
                    ..Default::default()
                },
                "is not before",
            ),
            (
                "future end",
                pb::CreateExportRequest {
                    to: ts("2027-01-01T00:00:00Z"),
                    ..Default::default()
                },
                "in the future",
            ),
            (
                "unknown zone",
                pb::CreateExportRequest {
                    time_zone: "Mars/Olympus".into(),
                    ..Default::default()
                },
                "unknown time zone",
            ),
            (
                "unknown format",
                pb::CreateExportRequest {
                    format: 42,
                    ..Default::default()
                },
                "format 42 is unknown",
            ),
            (
                "bad person id",
                pb::CreateExportRequest {
                    person_ids: vec!["../etc".into()],
                    ..Default::default()
                },
                "person_ids contains",
            ),
            (
                "bad timestamp",
                pb::CreateExportRequest {
                    from: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: -1,
                    }),
                    ..Default::default()
                },
                "from is not a valid timestamp",
            ),
        ];
        for (name, request, expected) in cases {
            let status = spec_from_request("acme", &request, now()).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name}");
            assert!(
                status.message().contains(expected),
                "{name}: {:?} lacks {expected:?}",
                status.message()
            );
        }
    }

    #[test]
    fn page_arguments_are_checked() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(250).unwrap(), 250);
        assert_eq!(
            page_size(251).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(page_start("", "j").unwrap(), None);
        assert_eq!(page_start("j7", "j").unwrap(), Some(7));
        for bad in ["x", "j", "a7", "j-1"] {
            assert_eq!(
                page_start(bad, "j").unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad}"
            );
        }
    }
}
