//! The behaviour every [`ObjectStore`] must show. Run against [`crate::MemoryStore`] in unit
//! tests and against a real S3-API server in the integration tests, so the fake cannot drift
//! from the real thing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;

use crate::{CompletedPart, ObjectStore, list_all};

/// Exercises `store` under `prefix` (which should be unique to the run). Panics on the first
/// difference from the contract. `real_s3` enables checks only a real server can make (the
/// 5 MiB minimum part size).
pub async fn run(store: &dyn ObjectStore, prefix: &str, real_s3: bool) {
    // put / get / head / overwrite
    let key = format!("{prefix}a/one.json");
    store.put(&key, Bytes::from_static(b"first")).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Bytes::from_static(b"first"));
    store
        .put(&key, Bytes::from_static(b"second!"))
        .await
        .unwrap();
    assert_eq!(
        store.get(&key).await.unwrap(),
        Bytes::from_static(b"second!")
    );
    assert_eq!(store.head(&key).await.unwrap().map(|m| m.size), Some(7));

    // ranged reads
    assert_eq!(
        store.get_range(&key, 1, 4).await.unwrap(),
        Bytes::from_static(b"eco")
    );
    assert_eq!(
        store.get_range(&key, 3, 100).await.unwrap(),
        Bytes::from_static(b"ond!")
    );
    assert!(store.get_range(&key, 2, 2).await.unwrap().is_empty());

    // create-only writes: a retry with the same bytes is fine, other bytes never replace
    let once = format!("{prefix}a/once.json");
    assert_eq!(
        crate::put_new(store, &once, Bytes::from_static(b"v1"))
            .await
            .unwrap(),
        crate::PutNew::Created
    );
    assert_eq!(
        crate::put_new(store, &once, Bytes::from_static(b"v1"))
            .await
            .unwrap(),
        crate::PutNew::AlreadyIdentical
    );
    let refused = crate::put_new(store, &once, Bytes::from_static(b"v2"))
        .await
        .unwrap_err();
    assert_eq!(refused.kind, crate::ErrorKind::Conflict, "{refused}");
    assert_eq!(store.get(&once).await.unwrap(), Bytes::from_static(b"v1"));

    // missing keys
    let missing = format!("{prefix}missing");
    assert!(store.get(&missing).await.unwrap_err().is_not_found());
    assert_eq!(store.head(&missing).await.unwrap(), None);
    store.delete(&missing).await.unwrap();

    // listing: ordered, paged, prefix-bounded
    for i in 0..5 {
        store
            .put(&format!("{prefix}b/{i:02}"), Bytes::from(vec![b'x'; i]))
            .await
            .unwrap();
    }
    store
        .put(&format!("{prefix}bb"), Bytes::from_static(b"outside b/"))
        .await
        .unwrap();
    let page = store
        .list_page(&format!("{prefix}b/"), None, 2)
        .await
        .unwrap();
    let keys: Vec<_> = page.objects.iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys, vec![format!("{prefix}b/00"), format!("{prefix}b/01")]);
    let next = page.next_start_after.expect("more pages");
    let rest = store
        .list_page(&format!("{prefix}b/"), Some(&next), 10)
        .await
        .unwrap();
    assert_eq!(rest.objects.len(), 3);
    assert_eq!(rest.objects[2].size, 4);
    assert!(rest.next_start_after.is_none());
    assert_eq!(
        list_all(store, &format!("{prefix}b/")).await.unwrap().len(),
        5
    );

    // delete
    store.delete(&format!("{prefix}bb")).await.unwrap();
    assert_eq!(store.head(&format!("{prefix}bb")).await.unwrap(), None);

    // multipart: invisible until complete, parts concatenated in order
    let big = format!("{prefix}archive.zip");
    let part_size = if real_s3 { 5 * 1024 * 1024 } else { 16 };
    let upload = store.create_multipart(&big).await.unwrap();
    let first = Bytes::from(vec![b'1'; part_size]);
    let second = Bytes::from_static(b"tail");
    let e1 = store
        .upload_part(&big, &upload, 1, first.clone())
        .await
        .unwrap();
    let e2 = store
        .upload_part(&big, &upload, 2, second.clone())
        .await
        .unwrap();
    assert_eq!(
        store.head(&big).await.unwrap(),
        None,
        "visible before completion"
    );
    store
        .complete_multipart(
            &big,
            &upload,
            vec![
                CompletedPart {
                    number: 1,
                    etag: e1,
                },
                CompletedPart {
                    number: 2,
                    etag: e2,
                },
            ],
        )
        .await
        .unwrap();
    let whole = store.get(&big).await.unwrap();
    assert_eq!(whole.len(), part_size + 4);
    assert_eq!(&whole[..part_size], &first[..]);
    assert_eq!(&whole[part_size..], &second[..]);

    // an aborted upload leaves nothing behind
    let aborted = format!("{prefix}aborted.zip");
    let upload = store.create_multipart(&aborted).await.unwrap();
    store
        .upload_part(&aborted, &upload, 1, Bytes::from_static(b"partial"))
        .await
        .unwrap();
    store.abort_multipart(&aborted, &upload).await.unwrap();
    assert_eq!(store.head(&aborted).await.unwrap(), None);

    // presigning produces a URL naming the key
    let url = store
        .presign_get(&key, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert!(url.contains("one.json"), "{url}");
}
