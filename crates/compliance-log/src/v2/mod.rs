//! Log format version 2 (`docs/log-format.md`): one multi-company segment per partition flush,
//! compacted per company and day, epochs in every name, a durable watermark per partition.
//!
//! - [`keys`]: object names.
//! - [`segment`]: the segment a flush writes, with an index for ranged reads of one company.
//! - [`pointer`]: the durable watermark per partition and the [`pointer::LogPosition`] an export
//!   reads at.
//! - [`epoch`]: epoch markers.
//! - [`part`]: compacted objects: a company's content of a closed day, and its metadata day.
//! - [`pass`]: the record of a compaction pass.
//! - [`view`]: which compacted objects hold a company-day, as of a head pass.
//! - [`isolation`]: the one check that a record handed to a company is that company's.

pub mod epoch;
pub mod isolation;
pub mod keys;
pub mod part;
pub mod pass;
pub mod pointer;
pub mod segment;
pub mod view;

use bytes::Bytes;

use crate::{LogError, Result};

/// Encodes one of the small JSON objects of the log (a pointer, an epoch marker).
pub(crate) fn encode_json<T: serde::Serialize>(value: &T) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| LogError::Encode {
            company_id: String::new(),
            reason: e.to_string(),
        })
}

/// Decodes one of the small JSON objects of the log and checks it is a format-2 object of
/// `kind` (its `format`, `version` and `kind` fields, given by `header`).
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
    kind: &str,
    header: impl Fn(&T) -> (&str, u32, &str),
) -> Result<T> {
    let value: T = serde_json::from_slice(bytes).map_err(|e| LogError::Corrupt {
        key: key.to_owned(),
        reason: format!("bad {kind}: {e}"),
    })?;
    if header(&value) != (crate::format::FORMAT_NAME, segment::FORMAT_VERSION, kind) {
        return Err(LogError::Corrupt {
            key: key.to_owned(),
            reason: format!("not a version 2 {kind}"),
        });
    }
    Ok(value)
}
