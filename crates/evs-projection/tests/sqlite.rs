//! What only concerns the SQLite store (the behaviour suite, tests/store.rs,
//! runs on it too): a model's view read with plain SQL, a projection's own
//! tables written and rolled back with the commit, and drivers racing on one
//! database file through connections of their own.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use evs_core::{RecordedEvent, StreamId};
use evs_projection::rusqlite::{self, params, Connection, Transaction};
use evs_projection::{
    Applier, Commit, Ledger, LedgerWrite, Projection, RowKey, RowStore, RowWrite, SqliteRowStore,
    SqliteSchema, SqliteTables, StoreError, Unit,
};
use evs_testkit::TempDir;
use serde_json::{json, Value};

fn event(stream: &str, id: u64, payload: Value) -> RecordedEvent {
    RecordedEvent {
        stream_id: StreamId::new(stream).unwrap(),
        event_id: id,
        name: "Counted".into(),
        payload,
        timestamp_ms: 1_700_000_000_000,
        id: None,
        metadata: None,
        attributes: Default::default(),
    }
}

/// Counts events per `group` of the payload (a row per group) and in all.
struct Groups;

#[derive(Debug, thiserror::Error)]
#[error("no group")]
struct NoGroup;

impl Projection for Groups {
    type Row = Value;
    type Error = NoGroup;

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, NoGroup> {
        let group = event.payload["group"].as_str().ok_or(NoGroup)?;
        Ok(vec![
            RowKey::new("groups", group.to_owned()),
            RowKey::new("total", "all"),
        ])
    }

    fn apply(&self, _: &RecordedEvent, _: &RowKey, row: &mut Option<Value>) -> Result<(), NoGroup> {
        let n = row.as_ref().and_then(|r| r["n"].as_i64()).unwrap_or(0);
        *row = Some(json!({"n": n + 1, "label": format!("seen {}", n + 1)}));
        Ok(())
    }
}

fn events(streams: usize, per_stream: u64) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    for id in 1..=per_stream {
        for s in 0..streams {
            let group = format!("g{}", (s as u64 + id) % 5);
            out.push(event(&format!("s{s}"), id, json!({ "group": group })));
        }
    }
    out
}

#[tokio::test]
async fn a_models_view_reads_as_columns() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("m.db");
    let store = SqliteRowStore::open(&db, "groups")
        .unwrap()
        .with_view("groups", &["n", "label"])
        .unwrap();
    let report = Applier::new(Groups, store).apply_batch(&events(3, 4)).await;
    assert_eq!(report.applied(), 12);
    let conn = Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare("select key, n, label from groups order by key")
        .unwrap();
    let rows: Vec<(String, i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let total: i64 = rows.iter().map(|r| r.1).sum();
    assert_eq!(total, 12, "{rows:?}");
    assert!(rows
        .iter()
        .all(|(_, n, label)| *label == format!("seen {n}")));
    // names that would inject SQL are refused
    let store = SqliteRowStore::open(dir.join("x.db"), "groups").unwrap();
    let err = store.with_view("groups", &["n' from x; --"]).unwrap_err();
    assert!(matches!(err, StoreError::Row { .. }), "{err}");
    let store = SqliteRowStore::open(dir.join("y.db"), "groups").unwrap();
    assert!(store.with_view("a\"b", &["n"]).is_err());
}

/// The groups as a table of the projection's own; fails on the group
/// named `poison`.
struct GroupTable;

impl SqliteSchema for GroupTable {
    fn schema(&self) -> &str {
        "create table if not exists group_counts (name text primary key, n integer not null)"
    }
}

impl SqliteTables<Value> for GroupTable {
    fn write(
        &self,
        tx: &Transaction<'_>,
        key: &RowKey,
        row: Option<&Value>,
    ) -> rusqlite::Result<()> {
        if key.model != "groups" {
            return Ok(());
        }
        if key.key == "poison" {
            // a statement that fails: the whole commit must roll back
            tx.execute("insert into no_such_table values (1)", [])?;
        }
        match row {
            Some(r) => tx.execute(
                "insert into group_counts (name, n) values (?1, ?2)
                 on conflict (name) do update set n = excluded.n",
                params![key.key, r["n"].as_i64()],
            )?,
            None => tx.execute("delete from group_counts where name = ?1", params![key.key])?,
        };
        Ok(())
    }
}

fn group_counts(db: &std::path::Path) -> Vec<(String, i64)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("select name, n from group_counts order by name")
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn the_projections_own_tables_commit_and_roll_back_with_the_rows() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("t.db");
    let store = Arc::new(
        SqliteRowStore::open(&db, "groups")
            .unwrap()
            .with_tables(GroupTable)
            .unwrap(),
    );
    let mut applier = Applier::new(Groups, Arc::clone(&store));
    let all = events(4, 6);
    // in several batches, some events twice
    for chunk in all.chunks(5) {
        applier.apply_batch(chunk).await;
        applier.apply_batch(chunk).await;
    }
    let rows = store.rows().await.unwrap();
    let want: Vec<(String, i64)> = rows
        .iter()
        .filter(|(k, _)| k.model == "groups")
        .map(|(k, r)| (k.key.clone(), r["n"].as_i64().unwrap()))
        .collect();
    assert_eq!(group_counts(&db), want);
    assert_eq!(want.iter().map(|w| w.1).sum::<i64>(), 24);

    // a table write that fails: nothing of the commit lands
    let before = (store.rows().await.unwrap(), store.versions().await.unwrap());
    let unit: Unit<Value> = Unit {
        rows: vec![
            RowWrite {
                key: RowKey::new("groups", "fresh"),
                expected: 0,
                row: Some(json!({"n": 1})),
            },
            RowWrite {
                key: RowKey::new("groups", "poison"),
                expected: 0,
                row: Some(json!({"n": 1})),
            },
        ],
        ledger: vec![LedgerWrite {
            stream: "s9".into(),
            expected: 0,
            ledger: Ledger {
                version: 1,
                parked: None,
            },
        }],
    };
    let err = store.commit(&unit).await.unwrap_err();
    assert!(
        err.to_string().contains("tables cannot be written"),
        "{err}"
    );
    assert_eq!(
        (store.rows().await.unwrap(), store.versions().await.unwrap()),
        before
    );
    assert!(!group_counts(&db).iter().any(|(g, _)| g == "fresh"));
    // and the same unit without the poison commits
    let mut good = unit.clone();
    good.rows.pop();
    assert_eq!(store.commit(&good).await.unwrap(), Commit::Done);
    assert!(group_counts(&db).contains(&("fresh".into(), 1)));
}

/// Two drivers, each with its own connection to one file, apply the same
/// events (overlapping batches, in different orders of streams): every
/// event counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_on_their_own_connections_to_one_file_apply_each_event_once() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("race.db");
    let all = events(12, 100 * evs_testkit::soak() as u64);
    let mut tasks = Vec::new();
    for d in 0..4u64 {
        let store = SqliteRowStore::open(&db, "groups").unwrap();
        let mut mine = all.clone();
        fastrand::Rng::with_seed(d).shuffle(&mut mine);
        // each stream's events back in order, streams interleaved differently
        mine.sort_by_key(|e| e.event_id);
        tasks.push(tokio::spawn(async move {
            let mut applier = Applier::new(Groups, store);
            for chunk in mine.chunks(7) {
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(tries < 200, "no progress");
                    let report = applier.apply_batch(chunk).await;
                    if report.failures().next().is_none() {
                        break;
                    }
                    assert!(report.only_transient_failures(), "{report:?}");
                }
                // let the other drivers in between batches
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let store = SqliteRowStore::open(&db, "groups").unwrap();
    let rows: Vec<(RowKey, Value)> = store.rows().await.unwrap();
    let total = rows
        .iter()
        .find(|(k, _)| k.model == "total")
        .map(|(_, r)| r["n"].as_i64().unwrap());
    assert_eq!(total, Some(all.len() as i64));
    let groups: i64 = rows
        .iter()
        .filter(|(k, _)| k.model == "groups")
        .map(|(_, r)| r["n"].as_i64().unwrap())
        .sum();
    assert_eq!(groups, all.len() as i64);
}

#[tokio::test]
async fn a_read_model_of_an_unknown_format_is_refused() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("f.db");
    drop(SqliteRowStore::open(&db, "groups").unwrap());
    let conn = Connection::open(&db).unwrap();
    conn.execute("update evs_meta set value = '2' where name = 'format'", [])
        .unwrap();
    drop(conn);
    let err = SqliteRowStore::open(&db, "groups").unwrap_err();
    assert!(err.to_string().contains("format 2"), "{err}");
}

/// A database already set up opens while another connection holds its
/// write lock (another partition's rebuild committing): opening only reads.
#[tokio::test]
async fn a_set_up_database_opens_beside_a_writer() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("busy.db");
    drop(SqliteRowStore::open(&db, "groups").unwrap());
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("begin immediate").unwrap();
    let opened = SqliteRowStore::open(&db, "groups");
    writer.execute_batch("commit").unwrap();
    opened.unwrap();
}

/// A relaxed store (a rebuild's) commits as any other and syncs on demand.
#[tokio::test]
async fn a_relaxed_store_commits_and_syncs() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("relaxed.db");
    let store = Arc::new(
        SqliteRowStore::open(&db, "groups")
            .unwrap()
            .relaxed()
            .unwrap(),
    );
    let report = Applier::new(Groups, Arc::clone(&store))
        .apply_batch(&events(3, 5))
        .await;
    assert_eq!(report.applied(), 15);
    store.sync().unwrap();
    let again = SqliteRowStore::open(&db, "groups").unwrap();
    let versions = RowStore::<Value>::versions(&again).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.1).sum::<u64>(), 15);
}

/// A rebuild's sync (the first of two partitions to finish) never holds up
/// the other partition's commits while that one reads an old snapshot: it
/// was a FULL checkpoint, which holds the write lock while it waits for
/// such readers, and the other's commits timed out behind it.
#[test]
fn a_sync_does_not_hold_up_another_writer() {
    let dir = TempDir::new("sqlite");
    let db = dir.join("sync.db");
    let store = SqliteRowStore::open(&db, "groups")
        .unwrap()
        .relaxed()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let commit = |store: SqliteRowStore, events: Vec<RecordedEvent>| {
        let store = Arc::new(store);
        let report =
            runtime.block_on(Applier::new(Groups, Arc::clone(&store)).apply_batch(&events));
        assert!(report.failures().next().is_none(), "{report:?}");
        Arc::into_inner(store).unwrap()
    };
    let store = commit(store, events(2, 2));
    // a reader on the snapshot of now (the other partition, between commits)
    let reader = Connection::open(&db).unwrap();
    reader.execute_batch("begin").unwrap();
    let _: i64 = reader
        .query_row("select count(*) from evs_ledger", [], |r| r.get(0))
        .unwrap();
    // a commit after it: the reader's snapshot is now an old one
    let store = commit(store, events(2, 3)[4..].to_vec());
    let syncing = std::thread::spawn(move || store.sync());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // the other partition commits, waiting at most a second for the lock
    let writer = Connection::open(&db).unwrap();
    writer
        .busy_timeout(std::time::Duration::from_secs(1))
        .unwrap();
    let wrote = writer.execute_batch("insert into evs_ledger (stream, version) values ('w', 1)");
    reader.execute_batch("commit").unwrap();
    syncing.join().unwrap().unwrap();
    wrote.unwrap();
}
