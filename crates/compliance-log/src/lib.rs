//! The per-company compliance log on object storage: the object layout, the writer the ingestion
//! service appends through, and the reader the export service replays from.
//! The format lands with Step 2 (`docs/log-format.md`).
