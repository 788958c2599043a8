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
