//! The behaviour suite of `evs_core::suite` against DynamoDB (the emulator,
//! see `evs_testkit`), and what only concerns DynamoDB: lost
//! acknowledgements, the race of plain moto, table creation, answers the SDK
//! cannot read, pagination. Without the emulator installed, every test
//! passes without running.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use evs_core::suite::{self, concurrent_decide_loses_no_update, ev, ids, sid, WriterTally};
use evs_core::{
    Clock, Error, EventStore, EventStoreExt, ExpectedVersion, NewEvent, ReadRequest, StreamId,
};
use evs_dynamodb::{DynamoStore, TableStatus};
use evs_testkit::{unique_name, Moto};
use serde_json::json;

async fn store_with_clock(clock: Option<Clock>) -> Option<DynamoStore> {
    let moto = Moto::shared()?;
    let mut store = DynamoStore::new(moto.dynamodb().await, unique_name("events"));
    if let Some(c) = clock {
        store = store.with_clock(c);
    }
    assert_eq!(store.create_table().await.unwrap(), TableStatus::Created);
    Some(store)
}

async fn store() -> Option<DynamoStore> {
    store_with_clock(None).await
}

/// Appends through a proxy that loses acknowledgements (the write is
/// done, the answer is a 500 or a dropped connection), fails requests
/// and throttles: each append is retried with the same event ids and
/// expected version until it succeeds, and every event is stored once.
#[tokio::test]
async fn appends_with_ids_are_exactly_once_under_lost_acknowledgements() {
    let Some(moto) = Moto::shared() else { return };
    let faults = r#"{"lost_ack": 0.2, "drop_after": 0.05, "error": 0.1, "drop": 0.05, "seed": 20}"#;
    let Some(proxy) = evs_testkit::FaultProxy::start(moto, faults) else {
        return;
    };
    let table = unique_name("faults");
    let direct = DynamoStore::new(moto.dynamodb().await, table.clone());
    direct.create_table().await.unwrap();
    let faulty = DynamoStore::new(proxy.dynamodb().await, table);
    let streams: Vec<StreamId> = (0..3).map(|i| sid(&format!("f-{i}"))).collect();
    let mut versions = [0_u64; 3];
    let mut sent: Vec<Vec<uuid::Uuid>> = vec![Vec::new(); 3];
    let (mut retries, mut recognised) = (0, 0);
    for i in 0..90 * evs_testkit::soak() {
        let k = i % 3;
        let events: Vec<NewEvent> = (0..1 + i % 4)
            .map(|j| ev("Faulted", json!({ "i": i, "j": j })))
            .collect();
        let expected = match versions[k] {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        loop {
            match faulty.append(&streams[k], expected, &events).await {
                Ok(outcome) => {
                    recognised += usize::from(outcome.already_appended);
                    break;
                }
                Err(e) => {
                    assert!(e.is_transient(), "only injected faults: {e}");
                    retries += 1;
                    assert!(retries < 10_000, "never succeeds: {e}");
                }
            }
        }
        versions[k] += events.len() as u64;
        sent[k].extend(events.iter().map(|e| e.id));
    }
    let report = proxy.report();
    eprintln!("{retries} retries, {recognised} recognised; faults: {report}");
    for (k, stream) in streams.iter().enumerate() {
        let stored = direct.read_all(stream).await.unwrap();
        let ids_stored: Vec<uuid::Uuid> = stored.iter().filter_map(|e| e.id).collect();
        assert_eq!(ids_stored, sent[k], "{stream}: each event once, in order");
        assert_eq!(
            ids(&stored),
            (1..=versions[k]).collect::<Vec<_>>(),
            "{stream}"
        );
    }
    assert!(recognised > 0, "some acknowledgements were lost: {report}");
    assert!(retries > 0);
}

evs_core::backend_suite!(store_with_clock);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decide() {
    // A server of its own: the emulator copies all its tables on every
    // transaction, so sharing it would slow every other test down. And
    // 400 updates, not 1,600: each transaction copies the whole table,
    // one request at a time (see `evs_testkit`), so the cost grows with
    // the square of the count; 16 writers on one stream collide as much.
    let Some(moto) = Moto::start() else { return };
    let s = DynamoStore::new(moto.dynamodb().await, unique_name("counter"));
    s.create_table().await.unwrap();
    concurrent_decide_loses_no_update(Arc::new(s), 25).await;
}
async fn concurrent_writers_on(moto: &Moto) -> WriterTally {
    let s = DynamoStore::new(moto.dynamodb().await, unique_name("writers"));
    s.create_table().await.unwrap();
    suite::concurrent_writers_lose_nothing(Arc::new(s), 8, 25).await
}

/// Concurrent writers with exact expected versions lose no acknowledged
/// event: this needs the linearizable emulator (see `evs_testkit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_nothing() {
    let Some(moto) = Moto::start() else { return };
    concurrent_writers_on(&moto).await;
}

/// The same writers on plain `moto_server`, whose cancelled transactions
/// undo other requests' writes: this test FAILS there, showing why the
/// fixture serialises the emulator. Run it with
/// `cargo test -p evs-dynamodb --test suite concurrent_writers_on_plain_moto -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "demonstrates the race of plain moto: expected to fail"]
async fn concurrent_writers_on_plain_moto() {
    let Some(moto) = Moto::start_plain() else {
        return;
    };
    concurrent_writers_on(&moto).await;
}

#[tokio::test]
async fn create_table_twice_and_missing_table() {
    let Some(s) = store().await else { return };
    assert_eq!(s.create_table().await.unwrap(), TableStatus::AlreadyExists);
    assert!(s.stream_arn().await.unwrap().is_some());
    let Some(moto) = Moto::shared() else { return };
    let missing = DynamoStore::new(moto.dynamodb().await, unique_name("missing"));
    let err = missing.read_all(&sid("x")).await.unwrap_err();
    assert!(matches!(err, Error::TableNotFound { .. }), "{err:?}");
    let err = missing
        .append(&sid("x"), ExpectedVersion::Any, &[ev("E", json!({}))])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TableNotFound { .. }), "{err:?}");
}

/// The emulator stores an item with an empty map key (DynamoDB itself
/// refuses it, and so does the append) and then answers a Query with a
/// body the SDK cannot parse: the error says which call and why, not
/// "unhandled error".
#[tokio::test]
async fn an_answer_the_sdk_cannot_read_is_described() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let Some(s) = store().await else { return };
    let Some(moto) = Moto::shared() else { return };
    moto.dynamodb()
        .await
        .put_item()
        .table_name(s.table())
        .item("StreamId", AttributeValue::S("unreadable-1".into()))
        .item("EventId", AttributeValue::N("1".into()))
        .item(
            "Payload",
            AttributeValue::M([(String::new(), AttributeValue::N("1".into()))].into()),
        )
        .send()
        .await
        .unwrap();
    let err = s.read_all(&sid("unreadable-1")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("DynamoDB Query: HTTP 200, unreadable response: "),
        "{text}"
    );
    assert!(!text.contains("unhandled error"), "{text}");
}

#[tokio::test]
async fn reads_follow_pagination_past_one_megabyte() {
    let Some(s) = store().await else { return };
    let stream = sid("paged-1");
    // 30 events of ~60 KB: about 1.8 MB, so a query needs two pages.
    let mut version = 0;
    for chunk in 0..3 {
        let events: Vec<_> = (0..10)
            .map(|i| {
                ev(
                    "Chunk",
                    json!({ "i": chunk * 10 + i, "blob": "y".repeat(60 * 1024) }),
                )
            })
            .collect();
        version = s
            .append(&stream, ExpectedVersion::Exact(version), &events)
            .await
            .unwrap()
            .version;
    }
    let all = s.read_all(&stream).await.unwrap();
    assert_eq!(ids(&all), (1..=30).collect::<Vec<_>>());
    let back = s.read(&stream, ReadRequest::last(25)).await.unwrap();
    assert_eq!(back.len(), 25);
    assert_eq!(back[0].event_id, 30);
}
