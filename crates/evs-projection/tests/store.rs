//! One behaviour suite for every [`StateStore`]: the memory store and the
//! DynamoDB store (on the emulator, see `evs_testkit`), plus what only
//! concerns DynamoDB: the item limit, the item a read model exposes, and an
//! [`Applier`] through a proxy that fails requests and loses
//! acknowledgements, which still counts every event exactly once.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use evs_core::{
    EventStore, ExpectedVersion, MemoryStore, NewEvent, ReadRequest, RecordedEvent, StreamId,
};
use evs_dynamodb::TableStatus;
use evs_projection::{
    Applier, Commit, DynamoStateStore, MemoryStateStore, Projection, StateStore, StoreError,
    Versioned,
};
use evs_testkit::{unique_name, FaultProxy, Moto};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    /// A number past 64 bits, kept exact.
    #[serde(default)]
    big: Option<serde_json::Value>,
    #[serde(default)]
    owners: Vec<String>,
}

fn at(version: u64, balance: i64) -> Versioned<Account> {
    Versioned {
        version,
        state: Account {
            balance,
            ..Account::default()
        },
    }
}

/// The suite: every store keeps these rules.
async fn suite(store: &dyn StateStore<Account>) {
    // nothing stored
    assert_eq!(store.load("a").await.unwrap(), None);
    assert!(store.versions().await.unwrap().is_empty());

    // the first commit expects version 0; a second one expecting 0 conflicts
    assert_eq!(
        store.commit("a", 0, &at(1, 10)).await.unwrap(),
        Commit::Done
    );
    assert_eq!(
        store.commit("a", 0, &at(1, 99)).await.unwrap(),
        Commit::Conflict { actual: Some(1) }
    );
    assert_eq!(store.load("a").await.unwrap(), Some(at(1, 10)));

    // a stale or a future expected version conflicts and changes nothing
    assert_eq!(
        store.commit("a", 1, &at(3, 30)).await.unwrap(),
        Commit::Done
    );
    for stale in [1, 2, 4] {
        assert_eq!(
            store.commit("a", stale, &at(9, 0)).await.unwrap(),
            Commit::Conflict { actual: Some(3) },
            "expected {stale}"
        );
    }
    assert_eq!(store.load("a").await.unwrap(), Some(at(3, 30)));

    // states are exact: numbers past 64 bits, nested values, odd stream ids
    let exact = Versioned {
        version: 7,
        state: Account {
            balance: i64::MIN,
            big: Some(json!(123456789012345678901234567890u128)),
            owners: vec!["ann".into(), "bo \u{e9} \"q\"".into()],
        },
    };
    let odd = "acct/\u{1f600} #1";
    assert_eq!(store.commit(odd, 0, &exact).await.unwrap(), Commit::Done);
    assert_eq!(store.load(odd).await.unwrap(), Some(exact));

    // every stream's version
    let mut versions = store.versions().await.unwrap();
    versions.sort();
    assert_eq!(versions, vec![("a".to_owned(), 3), (odd.to_owned(), 7)]);

    // concurrent commits on one version: exactly one wins
    let tries = (0..8).map(|i| async move { store.commit("race", 0, &at(1, i)).await });
    let outcomes = futures_util::future::join_all(tries).await;
    let done = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Commit::Done)))
        .count();
    assert_eq!(done, 1, "{outcomes:?}");
    let winner = store.load("race").await.unwrap().unwrap();
    assert_eq!(winner.version, 1);
}

async fn dynamo_store(moto: &Moto) -> DynamoStateStore {
    let store = DynamoStateStore::new(moto.dynamodb().await, unique_name("balances"));
    assert_eq!(store.create_table().await.unwrap(), TableStatus::Created);
    store
}

#[tokio::test]
async fn the_memory_store_keeps_the_rules() {
    suite(&MemoryStateStore::<Account>::new()).await;
}

#[tokio::test]
async fn the_dynamodb_store_keeps_the_rules() {
    let Some(moto) = Moto::shared() else { return };
    let store = dynamo_store(moto).await;
    suite(&store).await;
    assert_eq!(
        store.create_table().await.unwrap(),
        TableStatus::AlreadyExists
    );
}

#[tokio::test]
async fn the_dynamodb_item_is_a_readable_read_model_and_within_limits() {
    let Some(moto) = Moto::shared() else { return };
    let store = dynamo_store(moto).await;
    store.commit("acct-1", 0, &at(4, 250)).await.unwrap();
    let client = moto.dynamodb().await;
    let item = client
        .get_item()
        .table_name(store.table())
        .key(
            "StreamId",
            aws_sdk_dynamodb::types::AttributeValue::S("acct-1".into()),
        )
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    assert_eq!(item["Version"].as_n().unwrap(), "4");
    assert_eq!(
        item["State"].as_m().unwrap()["balance"].as_n().unwrap(),
        "250"
    );

    // a state past DynamoDB's 400 KB item limit is refused before the call
    let huge = Versioned {
        version: 5,
        state: Account {
            owners: vec!["x".repeat(410 * 1024)],
            ..Account::default()
        },
    };
    let err = store.commit("acct-1", 4, &huge).await.unwrap_err();
    assert!(matches!(err, StoreError::State { .. }), "{err}");
    assert!(
        evs_core::describe_chain(&err).contains("400"),
        "{}",
        evs_core::describe_chain(&err)
    );
    assert_eq!(store.load("acct-1").await.unwrap(), Some(at(4, 250)));

    // a missing table is a clear error that waiting does not heal
    let missing = DynamoStateStore::new(client, unique_name("missing"));
    let err = StateStore::<Account>::load(&missing, "a")
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("not found") || err.to_string().contains("missing"),
        "{err}"
    );
}

struct Balances;

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Projection for Balances {
    type State = Account;
    type Error = Never;

    fn apply(&self, state: &mut Account, event: &RecordedEvent) -> Result<(), Never> {
        state.balance += event.payload["amount"].as_i64().unwrap_or(0);
        Ok(())
    }
}

/// Requests fail, are throttled or lose their acknowledgement (the commit
/// is done, the answer is an error); the driver retries what failed, as the
/// live and replay drivers do, and every balance is exact.
#[tokio::test]
async fn an_applier_on_dynamodb_is_exactly_once_under_faults() {
    let Some(moto) = Moto::shared() else { return };
    let faults = r#"{"lost_ack": 0.15, "error": 0.1, "drop_after": 0.05, "seed": 11}"#;
    let Some(proxy) = FaultProxy::start(moto, faults) else {
        return;
    };
    let direct = dynamo_store(moto).await;
    let faulty = DynamoStateStore::new(proxy.dynamodb().await, direct.table());
    let table = MemoryStore::new();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut order = Vec::new();
    for n in 0..120 * evs_testkit::soak() {
        let stream = StreamId::new(format!("acct-{}", rng.usize(0..8))).unwrap();
        let amount = rng.i64(-20..50);
        table
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new("Moved", json!({ "amount": amount, "n": n }))],
            )
            .await
            .unwrap();
        order.push(stream);
    }
    // every event, in the order written
    let mut streams: BTreeMap<StreamId, std::vec::IntoIter<RecordedEvent>> = BTreeMap::new();
    for stream in &order {
        if !streams.contains_key(stream) {
            let events = table.read(stream, ReadRequest::after(0)).await.unwrap();
            streams.insert(stream.clone(), events.into_iter());
        }
    }
    let written: Vec<RecordedEvent> = order
        .iter()
        .map(|s| streams.get_mut(s).unwrap().next().unwrap())
        .collect();
    let table: Arc<dyn EventStore> = Arc::new(table);
    let mut applier = Applier::new(Balances, faulty).with_table(Arc::clone(&table));
    let mut at = 0;
    let mut rounds = 0;
    while at < written.len() {
        rounds += 1;
        assert!(rounds < 10_000, "no progress");
        let end = (at + 1 + rng.usize(0..20)).min(written.len());
        // delivered with duplicates and some events left out (holes are read from the table)
        let mut batch: Vec<RecordedEvent> = Vec::new();
        for event in &written[at..end] {
            match rng.u32(0..10) {
                0 => {}
                1 | 2 => batch.extend([event.clone(), event.clone()]),
                _ => batch.push(event.clone()),
            }
        }
        let report = applier.apply_batch(&batch).await;
        for (stream, id, error) in report.failures() {
            assert!(error.is_transient(), "{stream} {id}: {error}");
        }
        if report.failures().next().is_none() {
            at = end;
        } else if rng.bool() {
            applier.forget();
        }
    }
    let mut expected: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for event in &written {
        let entry = expected.entry(event.stream_id.to_string()).or_default();
        entry.0 = event.event_id;
        entry.1 += event.payload["amount"].as_i64().unwrap();
    }
    // streams whose last events were left out are completed by a last pass
    let tails: Vec<RecordedEvent> = expected
        .keys()
        .map(|stream| {
            written
                .iter()
                .rev()
                .find(|e| e.stream_id.as_str() == stream)
                .unwrap()
                .clone()
        })
        .collect();
    let mut direct_applier = Applier::new(Balances, direct.clone()).with_table(table);
    let report = direct_applier.apply_batch(&tails).await;
    assert!(report.failures().next().is_none(), "{report:?}");
    for (stream, (version, balance)) in expected {
        let got: Versioned<Account> = direct.load(&stream).await.unwrap().unwrap();
        assert_eq!(
            (got.version, got.state.balance),
            (version, balance),
            "{stream}"
        );
    }
    eprintln!("{rounds} batches; faults: {}", proxy.report());
}
