//! One behaviour suite for every [`RowStore`]: the memory store, the
//! DynamoDB store in both layouts (on the emulator, see `evs_testkit`; under
//! CI a missing emulator fails) and the PostgreSQL store (on a throwaway
//! cluster, `evs_testkit::postgres`), plus what only concerns DynamoDB: the
//! item a read model exposes, the old per-stream format, the table's key,
//! and [`Applier`]s racing on one row; and what only concerns PostgreSQL
//! (`store/postgres.rs`).

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use evs_core::{RecordedEvent, StreamId};
use evs_dynamodb::TableStatus;
use evs_projection::{
    Applier, Commit, DynamoLayout, DynamoRowStore, Ledger, LedgerWrite, MemoryRowStore, Parked,
    Projection, RowKey, RowStore, RowWrite, SqliteRowStore, StoreError, Stored, Unit,
};
use evs_testkit::{unique_name, Moto, TempDir};
use serde_json::{json, Value};

/// The stores under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Rows,
    PerStream,
    Sqlite,
    Postgres,
}

type Store = Arc<dyn RowStore<Value>>;

async fn dynamo(moto: &Moto, layout: DynamoLayout) -> DynamoRowStore {
    let store = DynamoRowStore::new(moto.dynamodb().await, unique_name("rows"), layout);
    assert_eq!(store.create_table().await.unwrap(), TableStatus::Created);
    store
}

/// A fresh store of `kind` (and the folder of a file store); `None` when
/// its server is missing (outside CI).
async fn store(kind: Kind) -> Option<(Store, Option<TempDir>)> {
    Some(match kind {
        Kind::Memory => (Arc::new(MemoryRowStore::<Value>::new()), None),
        Kind::Rows => (
            Arc::new(dynamo(Moto::shared()?, DynamoLayout::Rows).await),
            None,
        ),
        Kind::PerStream => (
            Arc::new(dynamo(Moto::shared()?, DynamoLayout::PerStream).await),
            None,
        ),
        Kind::Sqlite => {
            let dir = TempDir::new("rows");
            let store = SqliteRowStore::open(dir.join("rows.db"), "suite").unwrap();
            (Arc::new(store), Some(dir))
        }
        Kind::Postgres => (postgres::store().await?, None),
    })
}

#[cfg(feature = "postgres")]
#[path = "store/postgres.rs"]
mod postgres;

#[cfg(not(feature = "postgres"))]
mod postgres {
    pub(crate) async fn store() -> Option<super::Store> {
        eprintln!("SKIPPED: evs-projection is built without its postgres feature");
        None
    }
}

/// Runs `case` on every store of `kinds`.
macro_rules! on_stores {
    ($name:ident, $case:ident, [$($kind:ident),*]) => {
        mod $name {
            use super::*;
            $(
                #[tokio::test]
                #[allow(non_snake_case)]
                async fn $kind() {
                    let Some((store, _dir)) = store(Kind::$kind).await else { return };
                    $case(store, Kind::$kind).await;
                }
            )*
        }
    };
}

fn key(model: &str, key: &str) -> RowKey {
    RowKey::new(model.to_owned(), key)
}

fn row(key: RowKey, expected: u64, row: Option<Value>) -> RowWrite<Value> {
    RowWrite { key, expected, row }
}

fn ledger(stream: &str, expected: u64, version: u64) -> LedgerWrite {
    LedgerWrite {
        stream: stream.to_owned(),
        expected,
        ledger: Ledger {
            version,
            parked: None,
        },
    }
}

fn unit(rows: Vec<RowWrite<Value>>, ledger: Vec<LedgerWrite>) -> Unit<Value> {
    Unit { rows, ledger }
}

async fn load(store: &Store, k: &RowKey) -> Stored<Value> {
    store
        .load_rows(std::slice::from_ref(k))
        .await
        .unwrap()
        .remove(0)
}

async fn version(store: &Store, stream: &str) -> u64 {
    store.load_ledger(&[stream.to_owned()]).await.unwrap()[0].version
}

/// A per-stream row (model `m`, keyed by its stream) with its stream's
/// ledger: what every layout stores.
fn stream_unit(
    stream: &str,
    revision: u64,
    from: u64,
    to: u64,
    state: Option<Value>,
) -> Unit<Value> {
    unit(
        vec![row(key("m", stream), revision, state)],
        vec![ledger(stream, from, to)],
    )
}

async fn absent_loads(store: Store, _: Kind) {
    assert_eq!(load(&store, &key("m", "a")).await, Stored::default());
    assert_eq!(
        store.load_ledger(&["a".to_owned()]).await.unwrap(),
        vec![Ledger::default()]
    );
    assert!(store.versions().await.unwrap().is_empty());
    assert!(store.parked().await.unwrap().is_empty());
    assert!(store.rows().await.unwrap().is_empty());
}
on_stores!(
    absent,
    absent_loads,
    [Memory, Rows, PerStream, Sqlite, Postgres]
);

/// Create, update, delete, with exact values (numbers past 64 bits, nested
/// values, odd keys).
async fn create_update_delete(store: Store, _: Kind) {
    let odd = "acct/\u{1f600} #1 \"q\"";
    let k = key("m", odd);
    let first = json!({"n": 1, "big": 123456789012345678901234567890u128, "tags": ["a", "b \u{e9}"], "nested": {"x": [1, {"y": null}]}});
    assert_eq!(
        store
            .commit(&stream_unit(odd, 0, 0, 3, Some(first.clone())))
            .await
            .unwrap(),
        Commit::Done
    );
    let got = load(&store, &k).await;
    assert_eq!(got.row, Some(first));
    assert!(got.revision > 0);
    assert_eq!(version(&store, odd).await, 3);

    let second = json!({"n": 2});
    assert_eq!(
        store
            .commit(&stream_unit(odd, got.revision, 3, 4, Some(second.clone())))
            .await
            .unwrap(),
        Commit::Done
    );
    let got = load(&store, &k).await;
    assert_eq!(got.row, Some(second.clone()));
    assert_eq!(store.rows().await.unwrap(), vec![(k.clone(), second)]);

    assert_eq!(
        store
            .commit(&stream_unit(odd, got.revision, 4, 5, None))
            .await
            .unwrap(),
        Commit::Done
    );
    assert_eq!(load(&store, &k).await.row, None);
    assert_eq!(version(&store, odd).await, 5);
    assert!(store.rows().await.unwrap().is_empty());
    // created again after the delete
    let got = load(&store, &k).await;
    assert_eq!(
        store
            .commit(&stream_unit(odd, got.revision, 5, 6, Some(json!({"n": 3}))))
            .await
            .unwrap(),
        Commit::Done
    );
    assert_eq!(load(&store, &k).await.row, Some(json!({"n": 3})));
}
on_stores!(
    crud,
    create_update_delete,
    [Memory, Rows, PerStream, Sqlite, Postgres]
);

/// A stale ledger version anywhere in a unit of many items: nothing of it
/// is written.
async fn stale_ledger_writes_nothing(store: Store, _: Kind) {
    let streams: Vec<String> = (0..30).map(|i| format!("s{i:02}")).collect();
    let first = unit(
        streams
            .iter()
            .map(|s| row(key("m", s), 0, Some(json!({"n": 1}))))
            .collect(),
        streams.iter().map(|s| ledger(s, 0, 1)).collect(),
    );
    assert_eq!(store.commit(&first).await.unwrap(), Commit::Done);
    let revisions: Vec<u64> = store
        .load_rows(&streams.iter().map(|s| key("m", s)).collect::<Vec<_>>())
        .await
        .unwrap()
        .iter()
        .map(|s| s.revision)
        .collect();
    for stale in [0, 2] {
        // every stream right but the last, which expects `stale`
        let second = unit(
            streams
                .iter()
                .zip(&revisions)
                .map(|(s, r)| row(key("m", s), *r, Some(json!({"n": 2}))))
                .collect(),
            streams
                .iter()
                .enumerate()
                .map(|(i, s)| ledger(s, if i == 29 { stale } else { 1 }, 2))
                .collect(),
        );
        assert_eq!(
            store.commit(&second).await.unwrap(),
            Commit::Conflict,
            "{stale}"
        );
    }
    let rows = store.rows().await.unwrap();
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|(_, r)| *r == json!({"n": 1})), "{rows:?}");
    let versions = store.versions().await.unwrap();
    assert_eq!(
        versions,
        streams.iter().map(|s| (s.clone(), 1)).collect::<Vec<_>>()
    );
}
on_stores!(
    stale_ledger,
    stale_ledger_writes_nothing,
    [Memory, Rows, PerStream, Sqlite, Postgres]
);

/// A stale row revision anywhere in a unit of many items: nothing of it is
/// written (the layouts that check row revisions).
async fn stale_row_writes_nothing(store: Store, _: Kind) {
    let keys: Vec<RowKey> = (0..40)
        .map(|i| key(if i % 2 == 0 { "a" } else { "b" }, &format!("k{i}")))
        .collect();
    let first = unit(
        keys.iter()
            .map(|k| row(k.clone(), 0, Some(json!({"n": 1}))))
            .collect(),
        vec![ledger("s", 0, 1)],
    );
    assert_eq!(store.commit(&first).await.unwrap(), Commit::Done);
    let loaded = store.load_rows(&keys).await.unwrap();
    for (bad, stale) in [(0, 0), (39, 7), (17, 2)] {
        let second = unit(
            keys.iter()
                .zip(&loaded)
                .enumerate()
                .map(|(i, (k, s))| {
                    let expected = if i == bad { stale } else { s.revision };
                    row(
                        k.clone(),
                        expected,
                        if i % 3 == 0 {
                            None
                        } else {
                            Some(json!({"n": 2}))
                        },
                    )
                })
                .collect(),
            vec![ledger("s", 1, 2)],
        );
        assert_eq!(store.commit(&second).await.unwrap(), Commit::Conflict);
    }
    assert_eq!(store.load_rows(&keys).await.unwrap(), loaded);
    assert_eq!(version(&store, "s").await, 1);
    // a row expected absent that exists conflicts too
    let again = unit(vec![row(keys[3].clone(), 0, Some(json!({"n": 9})))], vec![]);
    assert_eq!(store.commit(&again).await.unwrap(), Commit::Conflict);
    assert_eq!(store.load_rows(&keys).await.unwrap(), loaded);
    // a copy one revision behind (read before the last commit) conflicts
    let r = loaded[1].revision;
    let next = unit(
        vec![row(keys[1].clone(), r, Some(json!({"n": 3})))],
        vec![ledger("s", 1, 2)],
    );
    assert_eq!(store.commit(&next).await.unwrap(), Commit::Done);
    let behind = unit(vec![row(keys[1].clone(), r, Some(json!({"n": 4})))], vec![]);
    assert_eq!(store.commit(&behind).await.unwrap(), Commit::Conflict);
    assert_eq!(load(&store, &keys[1]).await.row, Some(json!({"n": 3})));
}
on_stores!(
    stale_row,
    stale_row_writes_nothing,
    [Memory, Rows, Sqlite, Postgres]
);

fn parked(event_id: u64) -> Parked {
    Parked {
        event_id,
        event_name: "Refused \u{e9}".into(),
        reason: "the amount is \"not a number\"".into(),
        at_ms: 1_765_000_000_123,
    }
}

/// A stream parked at its first event has a ledger at version 0: it parks,
/// lists, resumes and moves on (an item at version 0 does not conflict for
/// ever with "expect 0").
async fn parked_round_trip(store: Store, _: Kind) {
    let park = |expected, version, event_id| LedgerWrite {
        stream: "p".into(),
        expected,
        ledger: Ledger {
            version,
            parked: Some(parked(event_id)),
        },
    };
    assert_eq!(
        store
            .commit(&unit(vec![], vec![park(0, 0, 1)]))
            .await
            .unwrap(),
        Commit::Done
    );
    let expected = Ledger {
        version: 0,
        parked: Some(parked(1)),
    };
    assert_eq!(
        store.parked().await.unwrap(),
        vec![("p".to_owned(), expected.clone())]
    );
    assert_eq!(
        store.load_ledger(&["p".to_owned()]).await.unwrap(),
        vec![expected]
    );
    assert_eq!(store.versions().await.unwrap(), vec![("p".to_owned(), 0)]);
    // resumed: expects 0, stays at 0
    assert_eq!(
        store
            .commit(&unit(vec![], vec![ledger("p", 0, 0)]))
            .await
            .unwrap(),
        Commit::Done
    );
    assert!(store.parked().await.unwrap().is_empty());
    assert_eq!(
        store.load_ledger(&["p".to_owned()]).await.unwrap(),
        vec![Ledger::default()]
    );
    // and moves on from 0, with its row
    let first = stream_unit("p", 0, 0, 2, Some(json!({"n": 2})));
    assert_eq!(store.commit(&first).await.unwrap(), Commit::Done);
    assert_eq!(version(&store, "p").await, 2);
    // parked later with its row in the same commit; cleared again
    let revision = load(&store, &key("m", "p")).await.revision;
    let mut with_row = stream_unit("p", revision, 2, 3, Some(json!({"n": 3})));
    with_row.ledger[0].ledger.parked = Some(parked(4));
    assert_eq!(store.commit(&with_row).await.unwrap(), Commit::Done);
    assert_eq!(store.parked().await.unwrap()[0].1.parked, Some(parked(4)));
    assert_eq!(
        load(&store, &key("m", "p")).await.row,
        Some(json!({"n": 3}))
    );
    assert_eq!(
        store
            .commit(&unit(vec![], vec![ledger("p", 3, 3)]))
            .await
            .unwrap(),
        Commit::Done
    );
    assert!(store.parked().await.unwrap().is_empty());
    // the row is kept when only the ledger moves
    assert_eq!(
        load(&store, &key("m", "p")).await.row,
        Some(json!({"n": 3}))
    );
    assert_eq!(
        store
            .commit(&unit(vec![], vec![ledger("p", 3, 4)]))
            .await
            .unwrap(),
        Commit::Done
    );
    assert_eq!(
        load(&store, &key("m", "p")).await.row,
        Some(json!({"n": 3}))
    );
    assert_eq!(version(&store, "p").await, 4);
}
on_stores!(
    parked,
    parked_round_trip,
    [Memory, Rows, PerStream, Sqlite, Postgres]
);

/// A driver that has not seen a park must not move the stream on (clearing
/// the park by writing over it): a ledger write that applies events to a
/// parked stream is a conflict; the park and the resume themselves pass.
async fn a_parked_stream_is_not_moved_on_by_a_driver_that_missed_the_park(store: Store, _: Kind) {
    let park = LedgerWrite {
        stream: "q".into(),
        expected: 0,
        ledger: Ledger {
            version: 0,
            parked: Some(parked(1)),
        },
    };
    let applied = stream_unit("q", 0, 0, 1, Some(json!({"n": 1})));
    assert_eq!(
        store.commit(&unit(vec![], vec![park])).await.unwrap(),
        Commit::Done
    );
    assert_eq!(store.commit(&applied).await.unwrap(), Commit::Conflict);
    let listed = store.parked().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(version(&store, "q").await, 0);
    // resumed (version unchanged, no park): then the events apply
    assert_eq!(
        store
            .commit(&unit(vec![], vec![ledger("q", 0, 0)]))
            .await
            .unwrap(),
        Commit::Done
    );
    assert_eq!(store.commit(&applied).await.unwrap(), Commit::Done);
    assert_eq!(version(&store, "q").await, 1);
}
on_stores!(
    missed_park,
    a_parked_stream_is_not_moved_on_by_a_driver_that_missed_the_park,
    [Memory, Rows, PerStream, Sqlite, Postgres]
);

/// `versions()` by stream, `rows()` by model then key.
async fn listings_are_sorted(store: Store, kind: Kind) {
    let streams = ["b", "a", "c/\u{1f600}", "A", "a#b"];
    for (i, s) in streams.iter().enumerate() {
        let v = i as u64 + 1;
        store
            .commit(&stream_unit(s, 0, 0, v, Some(json!({"n": v}))))
            .await
            .unwrap();
    }
    let mut sorted: Vec<&str> = streams.to_vec();
    sorted.sort_unstable();
    let versions = store.versions().await.unwrap();
    let expected: Vec<(String, u64)> = sorted
        .iter()
        .map(|s| {
            let v = streams.iter().position(|x| x == s).unwrap() as u64 + 1;
            ((*s).to_owned(), v)
        })
        .collect();
    assert_eq!(versions, expected);
    if kind != Kind::PerStream {
        for (m, k) in [("z", "1"), ("a.b", "z"), ("a.b", "a"), ("a-b", "q")] {
            store
                .commit(&unit(
                    vec![row(key(m, k), 0, Some(json!({"m": m})))],
                    vec![],
                ))
                .await
                .unwrap();
        }
    }
    let rows: Vec<RowKey> = store
        .rows()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut want = rows.clone();
    want.sort();
    assert_eq!(rows, want);
    assert_eq!(rows.len(), if kind == Kind::PerStream { 5 } else { 9 });
}
on_stores!(
    sorted,
    listings_are_sorted,
    [Memory, Rows, PerStream, Sqlite, Postgres]
);

/// What a DynamoDB store cannot hold is refused before anything is written.
async fn refused_before_any_write(store: Store, kind: Kind) {
    let good = row(key("m", "s"), 0, Some(json!({"n": 1})));
    let mut bad_rows = vec![
        ("oversize", json!({"blob": "x".repeat(410 * 1024)})),
        (
            "bad number",
            json!({"n": Value::from(serde_json::Number::from_string_unchecked("1".repeat(40)))}),
        ),
    ];
    if kind == Kind::Rows {
        bad_rows.extend([
            ("reserved Id", json!({"Id": 1})),
            ("reserved Model", json!({"Model": "x"})),
            ("reserved Key", json!({"Key": "x"})),
            ("reserved Revision", json!({"Revision": 1})),
            ("not an object", json!([1, 2])),
            ("a number", json!(7)),
        ]);
    }
    for (what, bad) in bad_rows {
        let bad_key = key("m", "t");
        assert!(
            matches!(store.check_row(&bad_key, &bad), Err(StoreError::Row { .. })),
            "{what}"
        );
        let u = unit(
            vec![good.clone(), row(bad_key, 0, Some(bad))],
            vec![ledger("s", 0, 1), ledger("t", 0, 1)],
        );
        let err = store.commit(&u).await.unwrap_err();
        assert!(matches!(err, StoreError::Row { .. }), "{what}: {err}");
        assert!(!err.is_transient(), "{what}");
        if what == "oversize" {
            assert!(err.to_string().contains("400 KB"), "{err}");
        }
        assert_eq!(
            load(&store, &key("m", "s")).await,
            Stored::default(),
            "{what}"
        );
        assert!(store.versions().await.unwrap().is_empty(), "{what}");
    }
    // a model name the key rules refuse
    let bad = key("a#b", "k");
    assert!(matches!(
        store.check_row(&bad, &json!({})),
        Err(StoreError::Row { .. })
    ));
}
on_stores!(refused, refused_before_any_write, [Rows, PerStream]);

/// Past 100 items or 4 MB: `UnitTooLarge`, nothing written.
async fn too_large_units(store: Store, kind: Kind) {
    assert_eq!(store.max_items(), 100);
    let many = unit(
        (0..51)
            .map(|i| row(key("m", &format!("s{i}")), 0, Some(json!({"n": i}))))
            .collect(),
        (0..51).map(|i| ledger(&format!("s{i}"), 0, 1)).collect(),
    );
    let per_stream_many = unit(
        (0..101)
            .map(|i| row(key("m", &format!("s{i}")), 0, Some(json!({"n": i}))))
            .collect(),
        (0..101).map(|i| ledger(&format!("s{i}"), 0, 1)).collect(),
    );
    let blob = "x".repeat(350 * 1024);
    let heavy = unit(
        (0..12)
            .map(|i| row(key("m", &format!("s{i}")), 0, Some(json!({"blob": blob}))))
            .collect(),
        (0..12).map(|i| ledger(&format!("s{i}"), 0, 1)).collect(),
    );
    let mut units = vec![per_stream_many, heavy];
    if kind == Kind::Rows {
        // the per-stream layout holds a row and its ledger in one item
        units.push(many);
    }
    for u in units {
        let err = store.commit(&u).await.unwrap_err();
        assert!(matches!(err, StoreError::UnitTooLarge { .. }), "{err}");
        assert!(store.versions().await.unwrap().is_empty());
        assert!(store.rows().await.unwrap().is_empty());
    }
    // 100 items exactly pass
    let full = unit(
        (0..50)
            .map(|i| row(key("m", &format!("s{i}")), 0, Some(json!({"n": i}))))
            .collect(),
        (0..50).map(|i| ledger(&format!("s{i}"), 0, 1)).collect(),
    );
    assert_eq!(store.commit(&full).await.unwrap(), Commit::Done);
    assert_eq!(store.versions().await.unwrap().len(), 50);
}
on_stores!(too_large, too_large_units, [Rows, PerStream]);

// ---- through the Applier ----

/// The events of `streams` (name, payloads), event ids from 1, a day apart
/// every 3 events.
fn events(spec: &[(&str, Vec<Value>)]) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    for (stream, payloads) in spec {
        for (i, payload) in payloads.iter().enumerate() {
            out.push(RecordedEvent {
                stream_id: StreamId::new(*stream).unwrap(),
                event_id: i as u64 + 1,
                name: "Ordered".into(),
                payload: payload.clone(),
                timestamp_ms: 1_764_547_200_000 + (i as i64 / 3) * 86_400_000,
                id: None,
                metadata: None,
                attributes: BTreeMap::new(),
            });
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("no amount")]
struct NoAmount;

/// Orders: a row per customer (keyed by a payload field) and per day.
struct Shop;

fn day(event: &RecordedEvent) -> String {
    format!("day-{}", event.timestamp_ms / 86_400_000)
}

fn bump(row: &mut Option<Value>, amount: i64) {
    let (orders, total) = match row {
        Some(r) => (
            r["orders"].as_i64().unwrap_or(0),
            r["total"].as_i64().unwrap_or(0),
        ),
        None => (0, 0),
    };
    *row = Some(json!({"orders": orders + 1, "total": total + amount}));
}

impl Projection for Shop {
    type Row = Value;
    type Error = NoAmount;

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, NoAmount> {
        let customer = event.payload["customer"].as_str().ok_or(NoAmount)?;
        Ok(vec![key("customers", customer), key("daily", &day(event))])
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        _: &RowKey,
        row: &mut Option<Value>,
    ) -> Result<(), NoAmount> {
        bump(row, event.payload["amount"].as_i64().ok_or(NoAmount)?);
        Ok(())
    }
}

/// A per-stream balance.
struct Balances;

impl Projection for Balances {
    type Row = Value;
    type Error = NoAmount;

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, NoAmount> {
        Ok(vec![RowKey::of_stream("balances", event)])
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        _: &RowKey,
        row: &mut Option<Value>,
    ) -> Result<(), NoAmount> {
        bump(row, event.payload["amount"].as_i64().ok_or(NoAmount)?);
        Ok(())
    }
}

fn order(customer: &str, amount: i64) -> Value {
    json!({"customer": customer, "amount": amount})
}

fn shop_events() -> Vec<RecordedEvent> {
    events(&[
        (
            "order-1",
            vec![
                order("ann", 5),
                order("bo", 7),
                order("ann", 1),
                order("ann", 2),
            ],
        ),
        ("order-2", vec![order("bo", 10), order("cy", 3)]),
        ("order-3", vec![order("ann", 4)]),
    ])
}

/// Applies, then applies the same events again (a redelivery): skipped.
async fn applier_end_to_end(store: Store, kind: Kind) {
    let events = shop_events();
    if kind == Kind::PerStream {
        let mut applier = Applier::new(Balances, Arc::clone(&store));
        let report = applier.apply_batch(&events).await;
        assert_eq!(
            (report.applied(), report.failures().count()),
            (7, 0),
            "{report:?}"
        );
        let rows = store.rows().await.unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    key("balances", "order-1"),
                    json!({"orders": 4, "total": 15})
                ),
                (
                    key("balances", "order-2"),
                    json!({"orders": 2, "total": 13})
                ),
                (key("balances", "order-3"), json!({"orders": 1, "total": 4})),
            ]
        );
        let mut fresh = Applier::new(Balances, Arc::clone(&store));
        let again = fresh.apply_batch(&events).await;
        assert_eq!((again.applied(), again.skipped()), (0, 7), "{again:?}");
        assert_eq!(store.rows().await.unwrap(), rows);
        return;
    }
    let mut applier = Applier::new(Shop, Arc::clone(&store));
    let report = applier.apply_batch(&events).await;
    assert_eq!(
        (report.applied(), report.failures().count()),
        (7, 0),
        "{report:?}"
    );
    let rows = store.rows().await.unwrap();
    let want = vec![
        (key("customers", "ann"), json!({"orders": 4, "total": 12})),
        (key("customers", "bo"), json!({"orders": 2, "total": 17})),
        (key("customers", "cy"), json!({"orders": 1, "total": 3})),
        (
            key("daily", &day(&events[0])),
            json!({"orders": 6, "total": 30}),
        ),
        (
            key("daily", &day(&events[3])),
            json!({"orders": 1, "total": 2}),
        ),
    ];
    assert_eq!(rows, want);
    // redelivered: to the same applier, and to a fresh one (nothing cached)
    let again = applier.apply_batch(&events).await;
    assert_eq!((again.applied(), again.skipped()), (0, 7), "{again:?}");
    let mut fresh = Applier::new(Shop, Arc::clone(&store));
    let again = fresh.apply_batch(&events[2..]).await;
    assert_eq!((again.applied(), again.skipped()), (0, 5), "{again:?}");
    assert_eq!(store.rows().await.unwrap(), want);
    assert_eq!(
        store.versions().await.unwrap(),
        vec![
            ("order-1".into(), 4),
            ("order-2".into(), 2),
            ("order-3".into(), 1)
        ]
    );
}
on_stores!(
    end_to_end,
    applier_end_to_end,
    [Memory, Rows, PerStream, Sqlite, Postgres]
);

/// Counts every event on one global row.
struct Counter;

impl Projection for Counter {
    type Row = Value;
    type Error = NoAmount;

    fn keys(&self, _: &RecordedEvent) -> Result<Vec<RowKey>, NoAmount> {
        Ok(vec![key("total", "all")])
    }

    fn apply(
        &self,
        _: &RecordedEvent,
        _: &RowKey,
        row: &mut Option<Value>,
    ) -> Result<(), NoAmount> {
        bump(row, 1);
        Ok(())
    }
}

/// Eight appliers, each with its own streams, all counting on one row:
/// nothing lost.
async fn hot_row_race(store: Store, _: Kind) {
    appliers_on_one_row((0..8).map(|_| Arc::clone(&store)).collect()).await;
}

/// An applier on each of `stores` (each with its own streams), all counting
/// on one row: nothing lost.
async fn appliers_on_one_row(stores: Vec<Store>) {
    let (tasks_count, check) = (stores.len(), Arc::clone(&stores[0]));
    let per_task = 12 * evs_testkit::soak();
    let tasks = stores.into_iter().enumerate().map(|(t, store)| {
        tokio::spawn(async move {
            let payloads = vec![json!({}); per_task / 2];
            let events = events(&[
                (&format!("t{t}-a"), payloads.clone()),
                (&format!("t{t}-b"), payloads),
            ]);
            let mut applier = Applier::new(Counter, store);
            for chunk in events.chunks(3) {
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(tries < 100, "no progress");
                    let report = applier.apply_batch(chunk).await;
                    if report.failures().next().is_none() {
                        break;
                    }
                    assert!(report.only_transient_failures(), "{report:?}");
                }
            }
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.unwrap();
    }
    let total = (tasks_count * (per_task / 2) * 2) as i64;
    assert_eq!(
        check.rows().await.unwrap(),
        vec![(
            key("total", "all"),
            json!({"orders": total, "total": total})
        )]
    );
}
on_stores!(hot_row, hot_row_race, [Memory, Rows, Sqlite, Postgres]);

// ---- DynamoDB only ----

async fn raw_item(
    store: &DynamoRowStore,
    client: &aws_sdk_dynamodb::Client,
    key_attr: &str,
    id: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(store.table())
        .key(key_attr, AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
        .unwrap_or_default()
}

/// The rows layout's items: the row's fields at the top level (an index can
/// be put on them), the ledger beside.
#[tokio::test]
async fn the_rows_layout_items_are_a_readable_read_model() {
    let Some(moto) = Moto::shared() else { return };
    let store = dynamo(moto, DynamoLayout::Rows).await;
    let client = moto.dynamodb().await;
    let mut u = unit(
        vec![row(
            key("customers", "c#1"),
            0,
            Some(json!({"orders": 2, "tier": "gold"})),
        )],
        vec![ledger("order-9", 0, 4)],
    );
    u.ledger[0].ledger.parked = Some(parked(5));
    assert_eq!(
        RowStore::<Value>::commit(&store, &u).await.unwrap(),
        Commit::Done
    );
    let item = raw_item(&store, &client, "Id", "customers#c#1").await;
    assert_eq!(item["Model"].as_s().unwrap(), "customers");
    assert_eq!(item["Key"].as_s().unwrap(), "c#1");
    assert_eq!(item["Revision"].as_n().unwrap(), "1");
    assert_eq!(item["orders"].as_n().unwrap(), "2");
    assert_eq!(item["tier"].as_s().unwrap(), "gold");
    assert_eq!(item.len(), 6);
    let item = raw_item(&store, &client, "Id", "#ledger#order-9").await;
    assert_eq!(item["Stream"].as_s().unwrap(), "order-9");
    assert_eq!(item["Version"].as_n().unwrap(), "4");
    let p = item["Parked"].as_m().unwrap();
    assert_eq!(p["EventId"].as_n().unwrap(), "5");
    assert_eq!(p["EventName"].as_s().unwrap(), "Refused \u{e9}");
    assert_eq!(p["At"].as_n().unwrap(), "1765000000123");
    assert!(p["Reason"].as_s().unwrap().contains("not a number"));
}

/// A table the old per-stream store wrote (`StreamId`, `Version`, `State`)
/// reads and commits on; attributes are only added.
#[tokio::test]
async fn the_per_stream_layout_reads_the_old_format() {
    let Some(moto) = Moto::shared() else { return };
    let store = dynamo(moto, DynamoLayout::PerStream).await;
    let client = moto.dynamodb().await;
    client
        .put_item()
        .table_name(store.table())
        .item("StreamId", AttributeValue::S("acct-1".into()))
        .item("Version", AttributeValue::N("4".into()))
        .item(
            "State",
            AttributeValue::M([("balance".to_owned(), AttributeValue::N("250".into()))].into()),
        )
        .send()
        .await
        .unwrap();
    let direct = store.clone();
    let store: Store = Arc::new(store);
    assert_eq!(version(&store, "acct-1").await, 4);
    let got = load(&store, &key("balances", "acct-1")).await;
    assert_eq!(
        got,
        Stored {
            revision: 4,
            row: Some(json!({"balance": 250}))
        }
    );
    assert_eq!(
        store.rows().await.unwrap(),
        vec![(
            key(DynamoRowStore::PER_STREAM_UNNAMED_MODEL, "acct-1"),
            json!({"balance": 250})
        )]
    );
    let u = unit(
        vec![row(
            key("balances", "acct-1"),
            4,
            Some(json!({"balance": 300})),
        )],
        vec![ledger("acct-1", 4, 5)],
    );
    assert_eq!(store.commit(&u).await.unwrap(), Commit::Done);
    assert_eq!(store.commit(&u).await.unwrap(), Commit::Conflict);
    let raw = raw_item(&direct, &client, "StreamId", "acct-1").await;
    assert_eq!(raw["Version"].as_n().unwrap(), "5");
    assert_eq!(
        raw["State"].as_m().unwrap()["balance"].as_n().unwrap(),
        "300"
    );
    assert_eq!(raw["Model"].as_s().unwrap(), "balances");
    assert_eq!(
        store.rows().await.unwrap(),
        vec![(key("balances", "acct-1"), json!({"balance": 300}))]
    );
    // another model's row on the same stream is refused, not mixed up
    let err = store
        .load_rows(&[key("other", "acct-1")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Row { .. }), "{err}");
    // a row keyed by another stream, or without its stream's ledger
    for u in [
        unit(
            vec![row(key("balances", "x"), 0, Some(json!({})))],
            vec![ledger("acct-1", 5, 6)],
        ),
        unit(
            vec![row(key("balances", "acct-1"), 5, Some(json!({})))],
            vec![],
        ),
        unit(
            vec![
                row(key("a", "acct-1"), 5, Some(json!({}))),
                row(key("b", "acct-1"), 5, Some(json!({}))),
            ],
            vec![ledger("acct-1", 5, 6)],
        ),
    ] {
        let err = store.commit(&u).await.unwrap_err();
        assert!(matches!(err, StoreError::Row { .. }), "{err}");
    }
    assert_eq!(version(&store, "acct-1").await, 5);
}

/// `create_table` is idempotent on the right key and refuses a table with
/// another key; a missing table is a clear error that waiting does not heal.
#[tokio::test]
async fn create_table_checks_the_key_and_a_missing_table_is_clear() {
    let Some(moto) = Moto::shared() else { return };
    let rows = dynamo(moto, DynamoLayout::Rows).await;
    assert_eq!(
        rows.create_table().await.unwrap(),
        TableStatus::AlreadyExists
    );
    let client = moto.dynamodb().await;
    let wrong = DynamoRowStore::new(client.clone(), rows.table(), DynamoLayout::PerStream);
    let err = wrong.create_table().await.unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("StreamId"), "{err}");
    assert_eq!(wrong.layout(), DynamoLayout::PerStream);

    let missing = DynamoRowStore::new(client, unique_name("missing"), DynamoLayout::Rows);
    let err = RowStore::<Value>::load_ledger(&missing, &["a".into()])
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("not found") || err.to_string().contains("missing"),
        "{err}"
    );
}

/// Loads of more than 100 keys (one `BatchGetItem` each 100), repeated
/// keys included.
#[tokio::test]
async fn loads_past_one_batch() {
    let Some(moto) = Moto::shared() else { return };
    let store: Store = Arc::new(dynamo(moto, DynamoLayout::Rows).await);
    for chunk in (0..250).collect::<Vec<u32>>().chunks(50) {
        let u = unit(
            chunk
                .iter()
                .map(|i| row(key("m", &i.to_string()), 0, Some(json!({"n": i}))))
                .collect(),
            chunk
                .iter()
                .map(|i| ledger(&i.to_string(), 0, u64::from(*i) + 1))
                .collect(),
        );
        assert_eq!(store.commit(&u).await.unwrap(), Commit::Done);
    }
    let mut keys: Vec<RowKey> = (0..260).map(|i| key("m", &i.to_string())).collect();
    keys.push(key("m", "7"));
    let rows = store.load_rows(&keys).await.unwrap();
    for (k, s) in keys.iter().zip(&rows) {
        let i: u32 = k.key.parse().unwrap();
        assert_eq!(s.row, (i < 250).then(|| json!({"n": i})), "{k}");
    }
    let streams: Vec<String> = (0..260).map(|i| i.to_string()).collect();
    let ledger = store.load_ledger(&streams).await.unwrap();
    for (i, l) in ledger.iter().enumerate() {
        assert_eq!(l.version, if i < 250 { i as u64 + 1 } else { 0 });
    }
}

// ---- faults ----

/// The events of `streams` streams appended to an events table in a random
/// interleaving: orders of a few customers.
async fn written_orders(
    table: &evs_core::MemoryStore,
    rng: &mut fastrand::Rng,
    count: usize,
    streams: usize,
) -> Vec<RecordedEvent> {
    use evs_core::{EventStore, ExpectedVersion, NewEvent, ReadRequest};
    let mut order = Vec::new();
    for n in 0..count {
        let stream = StreamId::new(format!("order-{}", rng.usize(0..streams))).unwrap();
        let payload = order_with(&format!("c{}", rng.usize(0..6)), rng.i64(-20..50), n);
        table
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new("Ordered", payload)],
            )
            .await
            .unwrap();
        order.push(stream);
    }
    let mut by_stream: BTreeMap<StreamId, std::vec::IntoIter<RecordedEvent>> = BTreeMap::new();
    for stream in &order {
        if !by_stream.contains_key(stream) {
            let events = table.read(stream, ReadRequest::after(0)).await.unwrap();
            by_stream.insert(stream.clone(), events.into_iter());
        }
    }
    order
        .iter()
        .map(|s| by_stream.get_mut(s).unwrap().next().unwrap())
        .collect()
}

fn order_with(customer: &str, amount: i64, n: usize) -> Value {
    json!({"customer": customer, "amount": amount, "n": n})
}

/// The rows and versions `Shop` folds `events` to.
/// Rows by key, versions by stream: what `rows()` and `versions()` list.
type Folded = (Vec<(RowKey, Value)>, Vec<(String, u64)>);

fn shop_fold(events: &[RecordedEvent]) -> Folded {
    let mut rows: BTreeMap<RowKey, Option<Value>> = BTreeMap::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for event in events {
        for k in Shop.keys(event).unwrap() {
            Shop.apply(event, &k, rows.entry(k.clone()).or_default())
                .unwrap();
        }
        versions.insert(event.stream_id.to_string(), event.event_id);
    }
    (
        rows.into_iter()
            .filter_map(|(k, r)| Some((k, r?)))
            .collect(),
        versions.into_iter().collect(),
    )
}

/// Feeds `written` to `applier` in batches with duplicates and left-out
/// events (filled from the events table), retrying what failed as a driver
/// does; the number of batches.
async fn drive(
    mut applier: Applier<Shop, DynamoRowStore>,
    written: &[RecordedEvent],
    mut rng: fastrand::Rng,
) -> usize {
    let (mut at, mut rounds) = (0, 0);
    while at < written.len() {
        rounds += 1;
        assert!(rounds < 10_000, "no progress");
        let end = (at + 1 + rng.usize(0..25)).min(written.len());
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
    rounds
}

/// Two [`Applier`]s (a rebuild and a live driver, say) on the rows layout
/// through a proxy that injects `faults`, each fed every event in its own
/// batches: the rows are the fold of every event once, and each stream's
/// ledger is its last event.
async fn exactly_once_through(faults: &str) {
    let Some(moto) = Moto::shared() else { return };
    let Some(proxy) = evs_testkit::FaultProxy::start(moto, faults) else {
        return;
    };
    let seed = fastrand::u64(..);
    eprintln!("faults {faults}, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let direct = dynamo(moto, DynamoLayout::Rows).await;
    let faulty = DynamoRowStore::new(proxy.dynamodb().await, direct.table(), DynamoLayout::Rows);
    let table = evs_core::MemoryStore::new();
    let written = written_orders(&table, &mut rng, 150 * evs_testkit::soak(), 10).await;
    let table: Arc<dyn evs_core::EventStore> = Arc::new(table);
    let applier = || {
        let options = evs_projection::ApplyOptions {
            max_conflicts: 1_000,
            ..evs_projection::ApplyOptions::default()
        };
        Applier::new(Shop, faulty.clone())
            .with_table(Arc::clone(&table))
            .with_options(options)
    };
    let (a, b) = futures_util::future::join(
        drive(applier(), &written, rng.fork()),
        drive(applier(), &written, rng.fork()),
    )
    .await;
    let (rows, versions) = shop_fold(&written);
    // streams whose last events were left out are completed by a last pass
    let streams: Vec<String> = versions.iter().map(|(s, _)| s.clone()).collect();
    let mut last = Applier::new(Shop, direct.clone()).with_table(table);
    let report = last.catch_up(&streams).await;
    assert!(report.failures().next().is_none(), "{report:?}");
    let direct: Store = Arc::new(direct);
    assert_eq!(direct.versions().await.unwrap(), versions, "seed {seed}");
    assert_eq!(direct.rows().await.unwrap(), rows, "seed {seed}");
    assert!(direct.parked().await.unwrap().is_empty());
    eprintln!("{a} and {b} batches; faults: {}", proxy.report());
}

#[tokio::test]
async fn exactly_once_under_lost_acknowledgements() {
    exactly_once_through(r#"{"lost_ack": 0.2, "seed": 11}"#).await;
}

#[tokio::test]
async fn exactly_once_under_errors_and_drops() {
    exactly_once_through(r#"{"error": 0.15, "drop": 0.05, "drop_after": 0.05, "seed": 12}"#).await;
}

/// Keys past DynamoDB's 2048 bytes: a row key is refused as a row (the
/// applier parks its stream), a stream id too long for the rows layout's
/// ledger is a clear error; loads of either find nothing, without failing
/// the other keys read with them.
#[tokio::test]
async fn keys_past_dynamodbs_limit_are_refused_clearly() {
    let Some(moto) = Moto::shared() else { return };
    let store: Store = Arc::new(dynamo(moto, DynamoLayout::Rows).await);
    store
        .commit(&stream_unit("s", 0, 0, 1, Some(json!({"n": 1}))))
        .await
        .unwrap();
    let long_row = key("m", &"k".repeat(2047));
    assert!(matches!(
        store.check_row(&long_row, &json!({})),
        Err(StoreError::Row { .. })
    ));
    let err = store
        .commit(&unit(
            vec![row(long_row.clone(), 0, Some(json!({})))],
            vec![],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Row { .. }), "{err}");
    let loaded = store.load_rows(&[long_row, key("m", "s")]).await.unwrap();
    assert_eq!(loaded[0], Stored::default());
    assert_eq!(loaded[1].row, Some(json!({"n": 1})));

    let long_stream = "s".repeat(2045);
    let err = store
        .commit(&unit(vec![], vec![ledger(&long_stream, 0, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("2048"), "{err}");
    let ledgers = store
        .load_ledger(&[long_stream, "s".to_owned()])
        .await
        .unwrap();
    assert_eq!(ledgers[0], Ledger::default());
    assert_eq!(ledgers[1].version, 1);
}
