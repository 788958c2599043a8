//! The behaviour every [`RecordLog`] must show. Run against [`super::MemoryLog`] in unit tests and
//! against Kafka (tansu) in the integration tests, so the fake cannot drift from the real thing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::{Entry, RecordLog};

/// Exercises `log`, which must be empty and kept forever; `other` is a second handle on the same
/// log (another replica). Panics on the first difference from the contract.
pub async fn run(log: &dyn RecordLog, other: &dyn RecordLog) {
    log.check_kept_forever().await.unwrap();
    assert_eq!(log.end().await.unwrap(), 0, "a new log is empty");

    // Appends get increasing offsets; the end follows the last one.
    let mut offsets = Vec::new();
    for i in 0..5u8 {
        let offset = log
            .append(
                &format!("company-{}", i % 2),
                vec![b'a' + i; usize::from(i) + 1],
            )
            .await
            .unwrap();
        offsets.push(offset);
    }
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert_eq!(offsets[0], 0, "the first record is at offset 0");
    let end = log.end().await.unwrap();
    assert_eq!(end, offsets[4] + 1);
    assert_eq!(
        other.end().await.unwrap(),
        end,
        "another handle sees the same end"
    );

    // Reading from the start gives every record, in order, with its offset and bytes.
    let mut reader = other.reader(0).await.unwrap();
    for (i, offset) in offsets.iter().enumerate() {
        let entry = next(reader.as_mut()).await;
        let byte = b'a' + u8::try_from(i).unwrap();
        assert_eq!(
            entry,
            Entry {
                offset: *offset,
                payload: vec![byte; i + 1]
            }
        );
    }
    // Reading from the middle starts there.
    let mut middle = log.reader(offsets[3]).await.unwrap();
    assert_eq!(next(middle.as_mut()).await.offset, offsets[3]);
    assert_eq!(next(middle.as_mut()).await.offset, offsets[4]);

    // A reader at the end waits for the next append, by any handle.
    let waiting = tokio::spawn(async move {
        let entry = reader.next().await.unwrap();
        (entry, reader)
    });
    let appended = other.append("company-0", b"later".to_vec()).await.unwrap();
    let (entry, mut reader) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("a waiting reader sees a new record within 30 s")
        .unwrap();
    assert_eq!(
        entry,
        Entry {
            offset: appended,
            payload: b"later".to_vec()
        }
    );
    assert_eq!(next(middle.as_mut()).await.offset, appended);
    assert_eq!(log.end().await.unwrap(), appended + 1);

    // Many appends in a row arrive complete and in order (no batch lost or reordered).
    let many: Vec<u64> = {
        let mut offsets = Vec::new();
        for i in 0..200u32 {
            offsets.push(
                log.append("company-1", i.to_be_bytes().to_vec())
                    .await
                    .unwrap(),
            );
        }
        offsets
    };
    for (i, offset) in many.iter().enumerate() {
        let entry = next(reader.as_mut()).await;
        assert_eq!(entry.offset, *offset);
        assert_eq!(entry.payload, u32::try_from(i).unwrap().to_be_bytes());
    }
}

async fn next(reader: &mut dyn super::LogReader) -> Entry {
    tokio::time::timeout(Duration::from_secs(30), reader.next())
        .await
        .expect("a record within 30 s")
        .unwrap()
}
