//! Tenant isolation, in one place: every record any read path returns for a company passes
//! through [`admit`], whatever object it came from (a multi-company segment, a compacted part,
//! a metadata day, a format-1 object).

use event_model::route;

use crate::{LogError, LogRecord, Result};

/// Returns the records if every one belongs to `company_id`: the object's header must name the
/// company (`header_company`), and each event must route to it (`event_model::route`, the same
/// rule the writer used). Anything else means the object is not what its name and header say,
/// so it is an error naming the object — never a record handed to the wrong tenant, and never a
/// silently dropped one.
pub fn admit(
    key: &str,
    company_id: &str,
    header_company: &str,
    records: Vec<LogRecord>,
) -> Result<Vec<LogRecord>> {
    if header_company != company_id {
        return Err(LogError::Corrupt {
            key: key.to_owned(),
            reason: format!("it holds company {header_company:?}, not {company_id:?}"),
        });
    }
    if let Some(stray) = records
        .iter()
        .find(|r| !route(&r.event).contains(company_id))
    {
        return Err(LogError::Corrupt {
            key: key.to_owned(),
            reason: format!(
                "event {} (offset {}) does not belong to company {company_id:?}",
                stray.event.event_id, stray.offset
            ),
        });
    }
    Ok(records)
}
