//! What only concerns the PostgreSQL store: the views, the database's
//! projection, connection failures, appliers on connections of their own,
//! and connections killed mid-commit.

use evs_projection::PostgresRowStore;
use evs_testkit::postgres::Postgres;

use super::*;

/// A store of projection `test` on a fresh database; `None` when
/// PostgreSQL is missing (outside CI).
pub(crate) async fn store() -> Option<Store> {
    let pg = Postgres::shared()?;
    Some(Arc::new(connect(&pg.fresh_database(), "test").await))
}

async fn connect(url: &str, projection: &str) -> PostgresRowStore {
    PostgresRowStore::connect(url, projection).await.unwrap()
}

/// A plain client on `url`, as a person reading the read model would use.
async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The database's name in `url`.
fn database(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn a_view_reads_a_models_rows_as_columns() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.fresh_database();
    let store = connect(&url, "shop")
        .await
        .with_view("customers", &["orders", "tier"])
        .await
        .unwrap()
        .with_view("daily.totals", &[])
        .await
        .unwrap();
    let store: Store = Arc::new(store);
    let u = unit(
        vec![
            row(
                key("customers", "c'1"),
                0,
                Some(json!({"orders": 2, "tier": "gold"})),
            ),
            row(key("customers", "c2"), 0, Some(json!({"orders": 1}))),
            row(key("customers", "gone"), 0, None),
            row(key("daily.totals", "d1"), 0, Some(json!({"orders": 3}))),
        ],
        vec![ledger("s", 0, 1)],
    );
    assert_eq!(store.commit(&u).await.unwrap(), Commit::Done);
    let sql = client(&url).await;
    let rows: Vec<(String, i64, Option<String>, Option<String>)> = sql
        .query(
            "select key, revision, orders, tier from customers order by key",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("c'1".into(), 1, Some("2".into()), Some("gold".into())),
            ("c2".into(), 1, Some("1".into()), None),
        ]
    );
    let total: i64 = sql
        .query_one("select sum(orders::bigint)::bigint from customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 3);
    let days: i64 = sql
        .query_one("select count(*) from \"daily.totals\"", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(days, 1);

    // names that could inject SQL are refused, nothing created
    let store = connect(&url, "shop").await;
    for (model, columns) in [
        ("customers\"; drop table evs_rows; --", &["x"][..]),
        ("m", &["x') from evs_rows; drop table evs_rows; --"]),
        ("evs_ledger", &[]),
        ("m", &["key"]),
    ] {
        let err = PostgresRowStore::connect(&url, "shop")
            .await
            .unwrap()
            .with_view(model, columns)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend { .. }), "{err}");
        assert!(!err.is_transient(), "{err}");
    }
    let views: i64 = sql
        .query_one(
            "select count(*) from pg_views where schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 2);
    // a view gains a column when created again
    let _store = store
        .with_view("customers", &["orders", "tier", "since"])
        .await
        .unwrap();
    let n = sql
        .query("select since from customers", &[])
        .await
        .unwrap()
        .len();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_database_of_another_projection_is_refused_with_nothing_written() {
    let Some(pg) = Postgres::shared() else { return };
    // the password is not asked for (trust): it must not show in an error
    let url = pg
        .fresh_database()
        .replace("postgres://evs@", "postgres://evs:s3cr3t@");
    let orders: Store = Arc::new(connect(&url, "orders").await);
    orders
        .commit(&stream_unit("o-1", 0, 0, 1, Some(json!({"n": 1}))))
        .await
        .unwrap();
    let sql = client(&url).await;
    let meta = |sql: tokio_postgres::Client| async move {
        sql.query("select name, value from evs_meta order by name", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<Vec<(String, String)>>()
    };
    let want_meta = vec![
        ("format".to_owned(), "1".to_owned()),
        ("projection".to_owned(), "orders".to_owned()),
    ];
    assert_eq!(meta(client(&url).await).await, want_meta);

    let err = PostgresRowStore::connect(&url, "balances")
        .await
        .unwrap_err();
    let StoreError::OtherProjection {
        location,
        found,
        expected,
    } = &err
    else {
        panic!("{err}");
    };
    let db = database(&url);
    assert_eq!(location, &format!("127.0.0.1:{}/{db}", pg.port()));
    assert_eq!((found.as_str(), expected.as_str()), ("orders", "balances"));
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert_eq!(meta(client(&url).await).await, want_meta);
    assert_eq!(
        orders.rows().await.unwrap(),
        vec![(key("m", "o-1"), json!({"n": 1}))]
    );

    // a database with only the other projection's meta table: no table is
    // created either
    let url = pg.fresh_database();
    pg.psql(
        database(&url),
        "create table evs_meta (name text primary key, value text not null); \
         insert into evs_meta values ('projection', 'orders'), ('format', '1')",
    );
    let err = PostgresRowStore::connect(&url, "balances")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OtherProjection { .. }), "{err}");
    let tables = pg.psql(
        database(&url),
        "select string_agg(tablename, ',') from pg_tables where schemaname = 'public'",
    );
    assert_eq!(tables, "evs_meta");
    drop(sql);
}

/// A user who may read `evs_meta` and write rows and ledger, but create
/// nothing, opens a read model that is in place and commits to it.
#[tokio::test]
async fn a_user_without_rights_to_create_opens_a_read_model_in_place() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.fresh_database();
    drop(connect(&url, "orders").await);
    let (db, role) = (database(&url), format!("writer_{}", database(&url)));
    pg.psql(
        db,
        &format!(
            "create role {role} login; grant select on evs_meta to {role}; \
             grant select, insert, update on evs_rows, evs_ledger to {role}"
        ),
    );
    let as_role = url.replace("postgres://evs@", &format!("postgres://{role}@"));
    let store: Store = Arc::new(connect(&as_role, "orders").await);
    let u = stream_unit("o-1", 0, 0, 1, Some(json!({"n": 1})));
    assert_eq!(store.commit(&u).await.unwrap(), Commit::Done);
    // and another projection is still refused
    let err = PostgresRowStore::connect(&as_role, "balances")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OtherProjection { .. }), "{err}");
}

#[tokio::test]
async fn connection_failures_are_one_clear_line() {
    let Some(pg) = Postgres::shared() else { return };
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("postgres://evs:s3cr3t@127.0.0.1:{free}/orders");
    let missing_db = pg.url("no_such_database");
    for (url, transient, says) in [
        (
            unreachable.as_str(),
            true,
            format!("127.0.0.1:{free}/orders"),
        ),
        (
            "postgres://evs:s3cr3t@127.0.0.1:notaport/orders",
            false,
            "does not parse".to_owned(),
        ),
        (missing_db.as_str(), false, "does not exist".to_owned()),
    ] {
        let err = PostgresRowStore::connect(url, "orders").await.unwrap_err();
        let text = err.to_string();
        eprintln!("{text}");
        assert!(matches!(err, StoreError::Backend { .. }), "{text}");
        assert_eq!(err.is_transient(), transient, "{text}");
        assert!(text.contains(&says), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}

/// A typed row (an untagged enum of structs, camelCase fields, as the
/// orders example's; floats) reads back from `jsonb`, whose key order is
/// its own.
#[tokio::test]
async fn typed_rows_read_back() {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Customer {
        placed: u64,
        paid_cents: i64,
        a_much_longer_name: Option<String>,
    }
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(untagged)]
    enum Typed {
        Customer(Customer),
        Other(BTreeMap<String, f64>),
    }
    let Some(pg) = Postgres::shared() else { return };
    let store = connect(&pg.fresh_database(), "typed").await;
    let c = Typed::Customer(Customer {
        placed: u64::MAX,
        paid_cents: -12,
        a_much_longer_name: None,
    });
    let o = Typed::Other([("x".to_owned(), 0.1 + 0.2), ("y".to_owned(), -2.5)].into());
    let u = Unit {
        rows: vec![
            RowWrite {
                key: key("customers", "c1"),
                expected: 0,
                row: Some(c.clone()),
            },
            RowWrite {
                key: key("other", "o1"),
                expected: 0,
                row: Some(o.clone()),
            },
        ],
        ledger: vec![],
    };
    assert_eq!(store.commit(&u).await.unwrap(), Commit::Done);
    let loaded = store
        .load_rows(&[key("customers", "c1"), key("other", "o1")])
        .await
        .unwrap();
    assert_eq!(loaded[0].row, Some(c.clone()));
    assert_eq!(loaded[1].row, Some(o.clone()));
    assert_eq!(
        RowStore::<Typed>::rows(&store).await.unwrap(),
        vec![(key("customers", "c1"), c), (key("other", "o1"), o)]
    );
}

/// Rows PostgreSQL cannot hold, keys it cannot index, units past the
/// limit: refused before anything is written.
#[tokio::test]
async fn what_postgresql_cannot_hold_is_refused_before_any_write() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.fresh_database();
    let direct = connect(&url, "test").await;
    let store: Store = Arc::new(connect(&url, "test").await);
    let good = row(key("m", "s"), 0, Some(json!({"n": 1})));
    for (what, bad_key, bad) in [
        ("NUL in a value", key("m", "t"), json!({"s": "a\u{0}b"})),
        ("NUL in a field name", key("m", "t"), json!({"a\u{0}": 1})),
        ("NUL in the key", key("m", "t\u{0}"), json!({})),
        ("a long key", key("m", &"k".repeat(2049)), json!({})),
        ("a bad model name", key("a#b", "t"), json!({})),
    ] {
        assert!(
            matches!(store.check_row(&bad_key, &bad), Err(StoreError::Row { .. })),
            "{what}"
        );
        let u = unit(
            vec![good.clone(), row(bad_key, 0, Some(bad))],
            vec![ledger("s", 0, 1)],
        );
        let err = store.commit(&u).await.unwrap_err();
        assert!(matches!(err, StoreError::Row { .. }), "{what}: {err}");
        assert!(store.rows().await.unwrap().is_empty(), "{what}");
        assert!(store.versions().await.unwrap().is_empty(), "{what}");
    }
    // a row that does not encode as JSON (a map with non-text keys)
    let odd: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    assert!(matches!(
        RowStore::<BTreeMap<(u8, u8), u8>>::check_row(&direct, &key("m", "x"), &odd),
        Err(StoreError::Row { .. })
    ));
    // a text that looks like the escape is stored
    let lookalike = json!({"s": "\\u0000"});
    store
        .commit(&unit(
            vec![row(key("m", "l"), 0, Some(lookalike.clone()))],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(load(&store, &key("m", "l")).await.row, Some(lookalike));
    // keys that cannot be stored are not found, without failing the others
    let loaded = store
        .load_rows(&[
            key("m", "t\u{0}"),
            key("m", "l"),
            key("m", &"k".repeat(3000)),
        ])
        .await
        .unwrap();
    assert_eq!(loaded[0], Stored::default());
    assert_eq!(loaded[1].revision, 1);
    assert_eq!(loaded[2], Stored::default());
    let ledgers = store
        .load_ledger(&["s\u{0}".to_owned(), "x".repeat(5000)])
        .await
        .unwrap();
    assert_eq!(ledgers, vec![Ledger::default(), Ledger::default()]);
    let err = store
        .commit(&unit(vec![], vec![ledger("s\u{0}", 0, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");

    // past the item limit
    let max = PostgresRowStore::MAX_ITEMS;
    assert_eq!(store.max_items(), max);
    let many = unit(
        (0..max / 2 + 1)
            .map(|i| row(key("m", &format!("r{i}")), 0, Some(json!({"n": i}))))
            .collect(),
        (0..max / 2)
            .map(|i| ledger(&format!("s{i}"), 0, 1))
            .collect(),
    );
    let err = store.commit(&many).await.unwrap_err();
    assert!(matches!(err, StoreError::UnitTooLarge { .. }), "{err}");
    assert_eq!(store.rows().await.unwrap().len(), 1);
    assert!(store.versions().await.unwrap().is_empty());
}

/// Eight appliers, each on a connection of its own, counting on one row:
/// their transactions wait on each other's row locks and none loses an
/// update.
#[tokio::test]
async fn appliers_on_their_own_connections_lose_no_update() {
    let Some(pg) = Postgres::shared() else { return };
    let url = pg.fresh_database();
    let mut stores: Vec<Store> = Vec::new();
    for _ in 0..8 {
        stores.push(Arc::new(connect(&url, "test").await));
    }
    appliers_on_one_row(stores).await;
}

/// The backends of `url`'s database other than `sql`'s own that wait for a
/// lock.
async fn waiting(sql: &tokio_postgres::Client) -> Vec<i32> {
    sql.query(
        "select pid from pg_stat_activity where datname = current_database() \
         and pid <> pg_backend_pid() and wait_event_type = 'Lock'",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Terminates the backend `only`, or every backend of the database but
/// `sql`'s own and `keep`; how many.
async fn terminate(sql: &tokio_postgres::Client, keep: i32, only: Option<i32>) -> usize {
    sql.query(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = current_database() and pid not in (pg_backend_pid(), $1) \
         and ($2::int is null or pid = $2)",
        &[&keep, &only],
    )
    .await
    .unwrap()
    .len()
}

/// One applier fed every event in batches, its connection killed at
/// seeded points: idle between commits, or in the middle of a commit (held
/// on a lock of the ledger table after its rows were written, then
/// terminated). The store connects again; a rerun of what failed ends with
/// the rows of the fold, nothing applied twice.
#[tokio::test]
async fn connections_killed_mid_commit_lose_nothing_and_apply_nothing_twice() {
    let Some(pg) = Postgres::shared() else { return };
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let url = pg.fresh_database();
    let store = Arc::new(connect(&url, "shop").await);
    let (locker, watcher) = (client(&url).await, client(&url).await);
    let locker_pid: i32 = locker
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let table = evs_core::MemoryStore::new();
    let written = written_orders(&table, &mut rng, 80 * evs_testkit::soak(), 6).await;
    let table: Arc<dyn evs_core::EventStore> = Arc::new(table);
    let mut applier = Some(Applier::new(Shop, Arc::clone(&store)).with_table(table));
    let (mut at, mut rounds, mut killed_idle, mut killed_mid_commit) = (0, 0, 0, 0);
    while at < written.len() {
        rounds += 1;
        assert!(rounds < 1_000, "no progress, seed {seed}");
        let end = (at + 1 + rng.usize(0..8)).min(written.len());
        let batch = written[at..end].to_vec();
        let mut running = applier.take().unwrap();
        let report = match rng.u32(0..3) {
            0 => {
                killed_idle += terminate(&watcher, locker_pid, None).await;
                running.apply_batch(&batch).await
            }
            1 => {
                locker
                    .batch_execute("begin; lock table evs_ledger in exclusive mode")
                    .await
                    .unwrap();
                let task = tokio::spawn(async move {
                    let report = running.apply_batch(&batch).await;
                    (running, report)
                });
                while !task.is_finished() {
                    if let Some(pid) = waiting(&watcher).await.first() {
                        killed_mid_commit += terminate(&watcher, locker_pid, Some(*pid)).await;
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                locker.batch_execute("rollback").await.unwrap();
                let (back, report) = task.await.unwrap();
                running = back;
                report
            }
            _ => running.apply_batch(&batch).await,
        };
        applier = Some(running);
        for (stream, id, error) in report.failures() {
            assert!(error.is_transient(), "{stream} {id}: {error}, seed {seed}");
        }
        if report.failures().next().is_none() {
            at = end;
        }
    }
    eprintln!(
        "{rounds} batches; killed {killed_idle} idle connections and {killed_mid_commit} in a commit"
    );
    assert!(killed_mid_commit > 0, "seed {seed}");
    let (rows, versions) = shop_fold(&written);
    let store: Store = store;
    assert_eq!(store.versions().await.unwrap(), versions, "seed {seed}");
    assert_eq!(store.rows().await.unwrap(), rows, "seed {seed}");
    assert!(store.parked().await.unwrap().is_empty());
}
