//! The epoch decision: which epoch a partition's writer writes in, decided on assignment from the
//! partition's watermark pointer, its latest epoch marker and what Kafka says now
//! (`docs/log-format.md`, "Epochs").
//!
//! Offsets name log objects, and offsets restart when a topic is re-created, a cluster is
//! replaced or a second deployment writes into the same bucket. The epoch is part of every
//! segment's name, so a new epoch's objects can never take an old epoch's names. The decision is
//! a pure function ([`decide`]) of what was read, so every rule is tested with a table.

use async_trait::async_trait;

use crate::v2::epoch::{EpochMarker, PreviousEpoch};

/// What the writer needs to know about the Kafka partition it consumes, to tell whether the
/// offsets it sees continue the log's or restarted.
#[async_trait]
pub trait Lineage: Send + Sync {
    /// The Kafka cluster's id.
    async fn cluster_id(&self) -> Result<String, LineageError>;
    /// The partition's low and high watermarks: it holds offsets `[low, high)`.
    async fn watermarks(&self, partition: i32) -> Result<(i64, i64), LineageError>;
    /// The sha256 (hex) of the payload of the message at `offset`, or `None` when the partition
    /// no longer holds it (retention, compaction).
    async fn payload_sha256(
        &self,
        partition: i32,
        offset: i64,
    ) -> Result<Option<String>, LineageError>;
}

/// Kafka could not answer a lineage question.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LineageError(pub String);

/// Why an epoch began (the marker's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochReason {
    /// The partition had no epoch yet.
    First,
    /// The Kafka cluster id is not the one the current epoch was written from.
    ClusterChanged,
    /// The partition's high watermark is below the log's durable offset.
    OffsetsWentBack,
    /// The message at `durable_offset - 1` is not the one the log fingerprinted.
    RecordDiffers,
    /// The partition's low watermark is above the log's durable offset: Kafka's retention
    /// removed records before they were logged. The new epoch starts at the low watermark, and
    /// its marker's `previous.durable_offset` and `start_offset` show the gap.
    RecordsExpired,
}

impl EpochReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::ClusterChanged => "cluster changed",
            Self::OffsetsWentBack => "offsets went back",
            Self::RecordDiffers => "record differs",
            Self::RecordsExpired => "records expired",
        }
    }
}

/// What the log says about a partition: the latest marker and the watermark pointer (its epoch,
/// durable offset and the fingerprint of the record below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSide {
    pub marker: Option<EpochMarker>,
    pub pointer: Option<PointerSide>,
}

/// The parts of the watermark pointer the decision reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerSide {
    pub epoch: u32,
    pub durable_offset: i64,
    /// `(offset, payload sha256)` of the record at `durable_offset - 1`, if one was written.
    pub last_record: Option<(i64, String)>,
}

/// What Kafka says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSide {
    pub cluster_id: String,
    pub low: i64,
    pub high: i64,
    /// The sha256 of the payload at the pointer's `last_record` offset, when Kafka still holds
    /// it (`None`: not asked, or gone).
    pub last_record_sha256: Option<String>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on in the current epoch, from `durable_offset`.
    Continue { epoch: u32, durable_offset: i64 },
    /// Begin a new epoch: write this marker, then consume from its start offset.
    Begin(EpochMarker, EpochReason),
}

/// Decides the epoch (the "Epochs" rules of the design, in order). Fails only when the pointer
/// names an epoch that has no marker, which no writer produces.
pub fn decide(
    topic: &str,
    partition: i32,
    log: &LogSide,
    kafka: &KafkaSide,
) -> Result<Decision, String> {
    let begin = |epoch: u32, reason: EpochReason| {
        let previous = log.pointer.as_ref().map(|p| PreviousEpoch {
            epoch: p.epoch,
            durable_offset: p.durable_offset,
        });
        let marker = EpochMarker::new(
            topic,
            partition,
            epoch,
            Some(kafka.cluster_id.clone()),
            kafka.low,
            reason.as_str(),
            previous,
        );
        Decision::Begin(marker, reason)
    };
    let Some(marker) = &log.marker else {
        if let Some(pointer) = &log.pointer {
            return Err(format!(
                "the watermark pointer names epoch {} but no epoch marker exists",
                pointer.epoch
            ));
        }
        return Ok(begin(1, EpochReason::First));
    };
    let next = marker.epoch + 1;
    if marker.cluster_id.as_deref() != Some(kafka.cluster_id.as_str()) {
        return Ok(begin(next, EpochReason::ClusterChanged));
    }
    // The pointer of the marker's epoch; an older one (a crash between the marker and the first
    // pointer of its epoch) says nothing about this epoch, which then starts at its marker.
    let pointer = match &log.pointer {
        Some(p) if p.epoch == marker.epoch => Some(p),
        Some(p) if p.epoch > marker.epoch => {
            return Err(format!(
                "the watermark pointer names epoch {} but the latest epoch marker is {}",
                p.epoch, marker.epoch
            ));
        }
        _ => None,
    };
    let durable_offset = pointer.map_or(marker.start_offset, |p| p.durable_offset);
    if kafka.high < durable_offset {
        return Ok(begin(next, EpochReason::OffsetsWentBack));
    }
    if kafka.low > durable_offset {
        // Consuming on would silently skip [durable_offset, low): a new epoch makes the gap
        // visible in the log itself.
        return Ok(begin(next, EpochReason::RecordsExpired));
    }
    if let (Some((_, expected)), Some(actual)) = (
        pointer.and_then(|p| p.last_record.as_ref()),
        &kafka.last_record_sha256,
    ) && expected != actual
    {
        return Ok(begin(next, EpochReason::RecordDiffers));
    }
    Ok(Decision::Continue {
        epoch: marker.epoch,
        durable_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(epoch: u32, cluster: &str, start: i64) -> EpochMarker {
        EpochMarker::new("t", 2, epoch, Some(cluster.into()), start, "first", None)
    }

    fn pointer(epoch: u32, durable: i64, sha: Option<&str>) -> PointerSide {
        PointerSide {
            epoch,
            durable_offset: durable,
            last_record: sha.map(|s| (durable - 1, s.to_owned())),
        }
    }

    fn kafka(cluster: &str, low: i64, high: i64, sha: Option<&str>) -> KafkaSide {
        KafkaSide {
            cluster_id: cluster.into(),
            low,
            high,
            last_record_sha256: sha.map(str::to_owned),
        }
    }

    /// (epoch, why a new one began, where it starts or goes on).
    type Outcome = (u32, Option<EpochReason>, i64);

    fn outcome(decision: Decision) -> Outcome {
        match decision {
            Decision::Continue {
                epoch,
                durable_offset,
            } => (epoch, None, durable_offset),
            Decision::Begin(m, reason) => {
                assert_eq!(m.reason, reason.as_str());
                (m.epoch, Some(reason), m.start_offset)
            }
        }
    }

    #[test]
    fn every_epoch_rule_in_order() {
        use EpochReason::*;
        let cases: Vec<(&str, LogSide, KafkaSide, Outcome)> = vec![
            (
                "nothing yet: epoch 1 from the low watermark",
                LogSide {
                    marker: None,
                    pointer: None,
                },
                kafka("k1", 5, 9, None),
                (1, Some(First), 5),
            ),
            (
                "another cluster",
                LogSide {
                    marker: Some(marker(1, "k1", 0)),
                    pointer: Some(pointer(1, 100, Some("a"))),
                },
                kafka("k2", 0, 500, Some("a")),
                (2, Some(ClusterChanged), 0),
            ),
            (
                "high watermark below the durable offset",
                LogSide {
                    marker: Some(marker(3, "k1", 0)),
                    pointer: Some(pointer(3, 100, Some("a"))),
                },
                kafka("k1", 0, 99, None),
                (4, Some(OffsetsWentBack), 0),
            ),
            (
                "the record below the durable offset changed",
                LogSide {
                    marker: Some(marker(1, "k1", 0)),
                    pointer: Some(pointer(1, 100, Some("a"))),
                },
                kafka("k1", 0, 300, Some("b")),
                (2, Some(RecordDiffers), 0),
            ),
            (
                "same record: same epoch, from the durable offset",
                LogSide {
                    marker: Some(marker(1, "k1", 0)),
                    pointer: Some(pointer(1, 100, Some("a"))),
                },
                kafka("k1", 0, 100, Some("a")),
                (1, None, 100),
            ),
            (
                "the record is gone from Kafka, the next one is there: same epoch",
                LogSide {
                    marker: Some(marker(1, "k1", 0)),
                    pointer: Some(pointer(1, 100, Some("a"))),
                },
                kafka("k1", 100, 300, None),
                (1, None, 100),
            ),
            (
                "records expired before they were logged: a new epoch from the low watermark",
                LogSide {
                    marker: Some(marker(1, "k1", 0)),
                    pointer: Some(pointer(1, 100, Some("a"))),
                },
                kafka("k1", 150, 300, None),
                (2, Some(RecordsExpired), 150),
            ),
            (
                "a marker without its pointer: same epoch from the marker's start",
                LogSide {
                    marker: Some(marker(2, "k1", 40)),
                    pointer: Some(pointer(1, 100, Some("a"))),
                },
                kafka("k1", 40, 60, Some("zzz")),
                (2, None, 40),
            ),
            (
                "a marker without its pointer, offsets behind its start",
                LogSide {
                    marker: Some(marker(2, "k1", 40)),
                    pointer: None,
                },
                kafka("k1", 0, 10, None),
                (3, Some(OffsetsWentBack), 0),
            ),
        ];
        for (name, log, kafka, expected) in cases {
            let decision = decide("t", 2, &log, &kafka).unwrap();
            assert_eq!(outcome(decision), expected, "{name}");
        }
    }

    #[test]
    fn a_new_marker_names_the_previous_epoch_and_has_no_clock_in_it() {
        let log = LogSide {
            marker: Some(marker(1, "k1", 0)),
            pointer: Some(pointer(1, 100, Some("a"))),
        };
        let Decision::Begin(m, _) = decide("t", 2, &log, &kafka("k1", 0, 50, None)).unwrap() else {
            panic!("a new epoch");
        };
        assert_eq!(
            m.previous,
            Some(PreviousEpoch {
                epoch: 1,
                durable_offset: 100
            })
        );
        let again = decide("t", 2, &log, &kafka("k1", 0, 50, None)).unwrap();
        assert_eq!(
            Decision::Begin(m.clone(), EpochReason::OffsetsWentBack),
            again
        );
        let text = String::from_utf8(m.encode().unwrap().to_vec()).unwrap();
        assert_eq!(
            text,
            "{\"format\":\"cce-compliance-log\",\"version\":2,\"kind\":\"epoch\",\"topic\":\"t\",\
             \"partition\":2,\"epoch\":2,\"cluster_id\":\"k1\",\"start_offset\":0,\
             \"reason\":\"offsets went back\",\"previous\":{\"epoch\":1,\"durable_offset\":100}}"
        );
        assert_eq!(EpochMarker::decode("k", text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn a_pointer_without_a_marker_or_ahead_of_it_is_refused() {
        let orphan = LogSide {
            marker: None,
            pointer: Some(pointer(1, 10, None)),
        };
        assert!(decide("t", 2, &orphan, &kafka("k1", 0, 10, None)).is_err());
        let ahead = LogSide {
            marker: Some(marker(1, "k1", 0)),
            pointer: Some(pointer(2, 10, None)),
        };
        assert!(decide("t", 2, &ahead, &kafka("k1", 0, 10, None)).is_err());
    }
}
