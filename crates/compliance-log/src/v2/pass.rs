//! The compaction pass record (`docs/log-format.md`, "Compaction pass"): what a pass read and
//! wrote, and how far it got — the state the next pass starts from and every reader follows.
//!
//! The record is written last, after every object of the pass is durable, so a pass killed at
//! any point leaves either no record (its objects are then ignored or rewritten identically by
//! the next attempt) or a complete pass. Its name and bytes are functions of its inputs:
//! `hash = sha256(previous hash, horizon, cuts)`.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::ObjectStore;

use crate::format::FORMAT_NAME;
use crate::v2::keys;
use crate::v2::segment::FORMAT_VERSION;
use crate::{LogError, Result};

const KIND: &str = "pass";

/// A pass, by its sequence number and hash (16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PassRef {
    pub seq: u64,
    pub hash: String,
}

/// How far one partition, in one epoch, is compacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassPartition {
    pub partition: i32,
    pub epoch: u32,
    /// Every record with an offset below it was read by this pass or an earlier one; records of
    /// closed days below it are in the compacted parts. `i64::MAX` for a closed epoch.
    pub cut: i64,
    /// The first segment that may hold a record of a day at or after the horizon (such records
    /// stay in segments until their day closes); equals `cut` when there is none.
    pub scan_from: i64,
}

/// The cut of one partition in one epoch, as compacted objects name it in their header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cut {
    pub partition: i32,
    pub epoch: u32,
    pub cut: i64,
}

/// What a pass read from segments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadTally {
    /// Segments whose header was read.
    pub segments: u64,
    /// Company slices fetched.
    pub slices: u64,
    /// Records taken as input (a record of two companies counts twice).
    pub records: u64,
    /// sha256 over `<segment key> <company> <slice sha256>` lines of the slices read, in order.
    pub sha256: String,
}

/// What a pass wrote; reconciles with [`ReadTally`]: `records = carried + read.records -
/// duplicates`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WroteTally {
    /// Content part objects (chunks) written.
    pub parts: u64,
    /// Metadata day objects written.
    pub meta_days: u64,
    /// Records in the objects written (content and metadata changes).
    pub records: u64,
    /// Of those, records taken over from the objects they supersede.
    pub carried: u64,
    /// Copies collapsed while merging (the same event twice in one partition).
    pub duplicates: u64,
    /// sha256 over `<key> <body sha256>` lines of the objects written, in key order.
    pub sha256: String,
}

impl WroteTally {
    /// Whether what was written accounts for every record read, no more and no fewer.
    pub fn reconciles(&self, read: &ReadTally) -> bool {
        self.carried.checked_add(read.records) == self.records.checked_add(self.duplicates)
    }
}

/// The record of one compaction pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRecord {
    pub format: String,
    pub version: u32,
    pub kind: String,
    pub topic: String,
    pub seq: u64,
    pub hash: String,
    pub previous: Option<PassRef>,
    /// Every day before it is closed and compacted.
    pub horizon: DateTime<Utc>,
    /// By (partition, epoch).
    pub partitions: Vec<PassPartition>,
    pub read: ReadTally,
    pub wrote: WroteTally,
    /// sha256 of this record's JSON with this field empty.
    #[serde(default)]
    pub record_sha256: String,
}

/// The hash that names a pass: a function of where it starts and what it covers only, so two
/// compactors that run the same pass produce the same names and bytes.
pub fn pass_hash(previous: Option<&PassRef>, horizon: DateTime<Utc>, cuts: &[Cut]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.map_or("-", |p| p.hash.as_str()).as_bytes());
    hasher.update(b"\n");
    hasher.update(horizon.to_rfc3339().as_bytes());
    for cut in cuts {
        hasher.update(format!("\n{} {} {}", cut.partition, cut.epoch, cut.cut).as_bytes());
    }
    hex::encode(hasher.finalize())[..16].to_owned()
}

impl PassRecord {
    /// A record with the fixed fields filled in.
    pub fn new(
        topic: &str,
        previous: Option<PassRef>,
        horizon: DateTime<Utc>,
        partitions: Vec<PassPartition>,
    ) -> Self {
        let seq = previous.as_ref().map_or(1, |p| p.seq + 1);
        let mut record = Self {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            kind: KIND.to_owned(),
            topic: topic.to_owned(),
            seq,
            hash: String::new(),
            previous,
            horizon,
            partitions,
            read: ReadTally::default(),
            wrote: WroteTally::default(),
            record_sha256: String::new(),
        };
        record.hash = pass_hash(record.previous.as_ref(), horizon, &record.cuts());
        record
    }

    pub fn key(&self) -> String {
        keys::pass_key(&self.topic, self.seq, &self.hash)
    }

    pub fn reference(&self) -> PassRef {
        PassRef {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }

    /// The cuts, by (partition, epoch).
    pub fn cuts(&self) -> Vec<Cut> {
        let mut cuts: Vec<Cut> = self
            .partitions
            .iter()
            .map(|p| Cut {
                partition: p.partition,
                epoch: p.epoch,
                cut: p.cut,
            })
            .collect();
        cuts.sort();
        cuts
    }

    /// How far `(partition, epoch)` is compacted, if this pass knows it.
    pub fn partition(&self, partition: i32, epoch: u32) -> Option<&PassPartition> {
        self.partitions
            .iter()
            .find(|p| p.partition == partition && p.epoch == epoch)
    }

    fn checksum(&self) -> Result<String> {
        let mut bare = self.clone();
        bare.record_sha256 = String::new();
        let bytes = serde_json::to_vec(&bare).map_err(|e| LogError::Encode {
            company_id: String::new(),
            reason: format!("pass record: {e}"),
        })?;
        Ok(hex::encode(Sha256::digest(bytes)))
    }

    pub fn encode(&self) -> Result<Bytes> {
        let mut sealed = self.clone();
        sealed.record_sha256 = self.checksum()?;
        let mut bytes = serde_json::to_vec(&sealed).map_err(|e| LogError::Encode {
            company_id: String::new(),
            reason: format!("pass record: {e}"),
        })?;
        bytes.push(b'\n');
        Ok(Bytes::from(bytes))
    }

    /// Decodes and verifies a pass record: format, checksum, name, and that its counts
    /// reconcile.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| LogError::Corrupt {
            key: key.to_owned(),
            reason,
        };
        let record: Self =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("bad pass record: {e}")))?;
        if record.format != FORMAT_NAME || record.version != FORMAT_VERSION || record.kind != KIND {
            return Err(corrupt(format!(
                "format {} version {} kind {} is not a {FORMAT_NAME} version {FORMAT_VERSION} pass",
                record.format, record.version, record.kind
            )));
        }
        let actual = record.checksum()?;
        if actual != record.record_sha256 {
            return Err(corrupt(format!(
                "checksum {actual} does not match the record's {}",
                record.record_sha256
            )));
        }
        if record.key() != key {
            return Err(corrupt(format!(
                "it names pass {} {} of topic {}, not this key",
                record.seq, record.hash, record.topic
            )));
        }
        if record.hash != pass_hash(record.previous.as_ref(), record.horizon, &record.cuts()) {
            return Err(corrupt("its hash does not follow from its inputs".into()));
        }
        if !record.wrote.reconciles(&record.read) {
            return Err(corrupt(format!(
                "it wrote {} records ({} carried, {} duplicates) for {} read",
                record.wrote.records,
                record.wrote.carried,
                record.wrote.duplicates,
                record.read.records
            )));
        }
        Ok(record)
    }

    /// The head pass of a topic (highest seq, then smallest hash: the first key a listing
    /// returns), or `None` before the first pass.
    pub async fn head(store: &dyn ObjectStore, topic: &str) -> Result<Option<Self>> {
        let page = store
            .list_page(&keys::passes_prefix(topic), None, 1)
            .await?;
        let Some(object) = page.objects.into_iter().next() else {
            return Ok(None);
        };
        let bytes = store.get(&object.key).await?;
        Ok(Some(Self::decode(&object.key, &bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PassRecord {
        let mut record = PassRecord::new(
            "t",
            Some(PassRef {
                seq: 6,
                hash: "00112233aabbccdd".into(),
            }),
            "2026-11-25T00:00:00Z".parse().unwrap(),
            vec![PassPartition {
                partition: 0,
                epoch: 1,
                cut: 5000,
                scan_from: 4200,
            }],
        );
        record.read.records = 10;
        record.wrote = WroteTally {
            parts: 2,
            records: 12,
            carried: 3,
            duplicates: 1,
            ..WroteTally::default()
        };
        record
    }

    #[test]
    fn a_pass_record_round_trips_and_its_name_follows_its_inputs() {
        let record = record();
        assert_eq!(record.seq, 7);
        let bytes = record.encode().unwrap();
        assert_eq!(bytes, record.encode().unwrap());
        let back = PassRecord::decode(&record.key(), &bytes).unwrap();
        assert_eq!(back.hash, record.hash);
        assert_eq!(back.partitions, record.partitions);
        let other = PassRecord::new("t", record.previous.clone(), record.horizon, vec![]);
        assert_ne!(other.hash, record.hash);
    }

    #[test]
    fn a_tampered_or_unreconciled_record_is_refused() {
        let record = record();
        let text = String::from_utf8(record.encode().unwrap().to_vec()).unwrap();
        let tampered = text.replace("\"cut\":5000", "\"cut\":5001");
        let error = PassRecord::decode(&record.key(), tampered.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        let mut short = record.clone();
        short.wrote.records = 11;
        let error = PassRecord::decode(&short.key(), &short.encode().unwrap()).unwrap_err();
        assert!(error.to_string().contains("read"), "{error}");
    }
}
