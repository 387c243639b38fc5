//! One behaviour suite for every object store: a local directory, memory,
//! and S3 (on the emulator).

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evs_archive::store::{LocalDir, MemoryStore, Object, ObjectStore, S3Store, StoreError};
use evs_testkit::{unique_name, Moto};

fn object(body: &str) -> Object {
    Object {
        bytes: body.as_bytes().to_vec(),
        content_type: "application/x-ndjson".into(),
        content_encoding: None,
        metadata: [("evs-count".to_owned(), "1".to_owned())].into(),
    }
}

async fn behaviour(sink: &dyn ObjectStore) {
    // Written out of order; listed in UTF-8 byte order, like S3.
    let keys = [
        "events/2026/11/23/22/20261123T220732123Z-b.ndjson",
        "events/2026/11/23/22/20261123T220732123Z-a.ndjson",
        "events/2026/11/23/23/20261123T230000000Z-a.ndjson",
        "events/2027/01/01/00/20270101T000000000Z-a.ndjson",
        "events/2026/11/23/22/20261123T220731999Z-z.ndjson",
        "dead-letter/2026/11/23/22/20261123T220732123Z-a.json",
    ];
    for (i, k) in keys.iter().enumerate() {
        let stored = sink.put(k, &object(&format!("body {i}"))).await.unwrap();
        // A store with a clock of its own says its time, within a few
        // seconds of this host's (whole seconds, truncated); the others say
        // nothing.
        if let Some(server) = stored.server_time_ms {
            let now = evs_core::now_ms();
            assert!(
                (now - 5_000..=now + 1_000).contains(&server),
                "{server} vs {now}"
            );
        }
    }
    let mut expected: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| k.starts_with("events/"))
        .collect();
    expected.sort();
    assert_eq!(sink.list("events/", None, 100).await.unwrap(), expected);
    assert_eq!(
        sink.list("events/", Some(expected[1]), 100).await.unwrap(),
        expected[2..]
    );
    assert_eq!(
        sink.list("events/", Some(expected[0]), 2).await.unwrap(),
        expected[1..3]
    );
    // StartAfter accepts any string, not just existing keys.
    assert_eq!(
        sink.list("events/", Some("events/2026/11/23/23/"), 100)
            .await
            .unwrap(),
        expected[3..]
    );
    assert!(sink
        .list("events/", Some("events/9"), 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(sink.list("dead-letter/", None, 100).await.unwrap().len(), 1);
    assert_eq!(sink.list("", None, 100).await.unwrap().len(), keys.len());

    assert_eq!(sink.get(keys[1]).await.unwrap(), b"body 1");
    // Never an overwrite.
    let again = sink.put(keys[1], &object("other")).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "{again:?}"
    );
    assert_eq!(sink.get(keys[1]).await.unwrap(), b"body 1");
    assert!(matches!(
        sink.get("events/nope").await,
        Err(StoreError::NotFound { .. })
    ));
    // `replace` writes a new key or overwrites an existing one; `put` still
    // refuses the key afterwards.
    let marker = "events.backfill/export-1.json";
    sink.replace(marker, &object("first")).await.unwrap();
    assert_eq!(sink.get(marker).await.unwrap(), b"first");
    sink.replace(marker, &object("second")).await.unwrap();
    assert_eq!(sink.get(marker).await.unwrap(), b"second");
    assert!(matches!(
        sink.put(marker, &object("third")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(sink.get(marker).await.unwrap(), b"second");
    // Nothing else was left beside it (no temporary file under a key).
    assert_eq!(
        sink.list("", None, 100).await.unwrap().len(),
        keys.len() + 1
    );
}

#[tokio::test]
async fn memory() {
    let store = MemoryStore::default();
    behaviour(&store).await;
    assert!(store
        .remove("events/2027/01/01/00/20270101T000000000Z-a.ndjson")
        .is_some());
    assert_eq!(
        store.list("events/2027/", None, 10).await.unwrap(),
        Vec::<String>::new()
    );
    // The metadata is kept with the body.
    let kept = store
        .remove("events/2026/11/23/23/20261123T230000000Z-a.ndjson")
        .unwrap();
    assert_eq!(
        kept.metadata.get("evs-count").map(String::as_str),
        Some("1")
    );
}

#[tokio::test]
async fn local_directory() {
    let dir = std::env::temp_dir().join(unique_name("evs-sink"));
    let sink = LocalDir::new(&dir);
    behaviour(&sink).await;
    assert_eq!(
        sink.put("clock", &object("x"))
            .await
            .unwrap()
            .server_time_ms,
        None
    );
    // The layout is the key: a key is a path under the root.
    assert!(dir
        .join("events/2027/01/01/00/20270101T000000000Z-a.ndjson")
        .is_file());
    for bad in ["", "a/../b", "/abs", "a//b", "dir/"] {
        assert!(
            matches!(
                sink.put(bad, &object("x")).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "{bad}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn s3_bucket() {
    let Some(moto) = Moto::shared() else { return };
    let client = evs_archive::store::s3::client_for(&moto.sdk_config().await);
    let bucket = unique_name("sink");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let sink = S3Store::new(client.clone(), &bucket);
    behaviour(&sink).await;
    // S3 says its time (its `Date` header); a local directory and memory
    // have no clock but this host's.
    let stored = sink.put("clock", &object("x")).await.unwrap();
    assert!(stored.server_time_ms.is_some(), "{stored:?}");
    // Listing pages past 1000 keys.
    for i in 0..1005 {
        sink.put(&format!("many/{i:05}"), &object("x"))
            .await
            .unwrap();
    }
    let all = sink.list("many/", None, 5000).await.unwrap();
    assert_eq!(all.len(), 1005);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    let missing = S3Store::new(client, unique_name("no-such-bucket"));
    let err = missing.put("k", &object("x")).await.unwrap_err();
    assert!(matches!(err, StoreError::S3 { .. }), "{err:?}");
}
