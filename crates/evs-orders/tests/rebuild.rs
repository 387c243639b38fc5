//! `evs-orders rebuild --read-model memory:` on a local archive made by the
//! archiver (the pump on an in-memory table's change feed): the rows printed
//! equal the fold of the table; an archive that ends short of a stream fails
//! naming it.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use evs_archive::store::LocalDir;
use evs_archiver::config::Config;
use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, ReadRequest, StreamId};
use std::sync::Arc;

use evs_orders::{dump_line, Orders, OrdersRow, OrdersTables};
use evs_projection::live::apply_records;
use evs_projection::tokio_postgres;
use evs_projection::{Applier, MemoryRowStore, PostgresRowStore, RowStore, SqliteRowStore};
use evs_pump::{MemorySource, Options, Stop};
use serde_json::json;

async fn archive(table: &MemoryStore, dir: &Path, batch_size: usize) {
    let options = Options {
        batch_size,
        once: true,
        write_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let mut source = MemorySource::new(table.clone());
    evs_pump::run(
        &mut source,
        &LocalDir::new(dir.to_path_buf()),
        &Config::local(dir.to_path_buf()),
        &options,
        Stop::never(),
        &mut |_| {},
    )
    .await
    .unwrap();
}

async fn fold(table: &MemoryStore) -> String {
    let mut events = Vec::new();
    for stream in table.last_versions().keys() {
        let id = StreamId::new(stream.clone()).unwrap();
        events.extend(table.read(&id, ReadRequest::after(0)).await.unwrap());
    }
    let store = MemoryRowStore::<OrdersRow>::new();
    Applier::new(Orders, store.clone())
        .apply_batch(&events)
        .await;
    store
        .snapshot()
        .iter()
        .map(|(k, r)| dump_line(k, r) + "\n")
        .collect()
}

fn rebuild(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evs-orders"))
        .args(["rebuild", "--read-model", "memory:", "--archive"])
        .arg(dir)
        .env_remove("EVS_EVENTS_TABLE")
        .env_remove("EVS_ARCHIVE_PREFIX")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_rebuild_into_memory_prints_the_fold_of_the_table() {
    let dir = std::env::temp_dir().join(format!("evs-orders-rebuild-{}", std::process::id()));
    let table = MemoryStore::new();
    let mut rng = fastrand::Rng::with_seed(5);
    println!("seed 5");
    for n in 0..200 {
        let customer = format!("c-{}", rng.u8(0..5));
        let (name, payload) = match rng.u8(0..4) {
            0 => (
                "OrderPlaced",
                json!({"customerId": customer, "totalCents": 10}),
            ),
            1 => (
                "OrderPaid",
                json!({"customerId": customer, "amountCents": rng.i64(1..999)}),
            ),
            2 => ("OrderCancelled", json!({"customerId": customer})),
            _ => ("OrderNoted", json!({"n": n})),
        };
        let stream = StreamId::new(format!("order-{}", rng.u8(0..20))).unwrap();
        table
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new(name, payload)],
            )
            .await
            .unwrap();
    }
    archive(&table, &dir, 7).await;
    let out = rebuild(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("rebuilt: 200 events applied"), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), fold(&table).await);

    let _ = std::fs::remove_dir_all(&dir);
}

/// Every archive object under `dir`.
fn objects(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            objects(&path, out);
        } else if path.to_string_lossy().ends_with(".ndjson.gz") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn a_rebuild_the_archive_leaves_short_fails_naming_the_stream() {
    let dir = std::env::temp_dir().join(format!("evs-orders-gap-{}", std::process::id()));
    let table = MemoryStore::new();
    let placed = json!({"customerId": "c-1", "totalCents": 10});
    for stream in ["order-7", "order-7", "order-8", "order-7"] {
        let id = StreamId::new(stream).unwrap();
        table
            .append(
                &id,
                ExpectedVersion::Any,
                &[NewEvent::new("OrderPlaced", placed.clone())],
            )
            .await
            .unwrap();
    }
    // one object per event
    archive(&table, &dir, 1).await;
    // lose the object holding order-7's event 2
    let mut all = Vec::new();
    objects(&dir, &mut all);
    let lost = all
        .iter()
        .find(|path| {
            let bytes = std::fs::read(path).unwrap();
            evs_archive::decode_events(&bytes, evs_archive::Compression::Gzip)
                .unwrap()
                .iter()
                .any(|e| e.event.stream_id.as_str() == "order-7" && e.event.event_id == 2)
        })
        .unwrap();
    std::fs::remove_file(lost).unwrap();
    let out = rebuild(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("order-7 waits for event 2"), "{stderr}");
    assert!(!stderr.contains("order-8 waits"), "{stderr}");
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` order events over `streams` streams and 40 customers (seeded).
async fn orders_table(seed: u64, n: usize, streams: u32) -> MemoryStore {
    let table = MemoryStore::new();
    append_orders(&table, seed, n, streams).await;
    table
}

/// Appends `n` order events to `table` (see `orders_table`).
async fn append_orders(table: &MemoryStore, seed: u64, n: usize, streams: u32) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..n {
        let customer = format!("c-{}", rng.u8(0..40));
        let (name, payload) = match rng.u8(0..3) {
            0 => (
                "OrderPlaced",
                json!({"customerId": customer, "totalCents": 10}),
            ),
            1 => (
                "OrderPaid",
                json!({"customerId": customer, "amountCents": rng.i64(1..999)}),
            ),
            _ => ("OrderCancelled", json!({"customerId": customer, "n": i})),
        };
        let stream = StreamId::new(format!("order-{}", rng.u32(0..streams))).unwrap();
        table
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new(name, payload)],
            )
            .await
            .unwrap();
    }
}

fn orders_cli(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evs-orders"));
    command
        .args(args)
        .env_remove("EVS_EVENTS_TABLE")
        .env_remove("EVS_ARCHIVE_PREFIX")
        .env_remove("EVS_READ_MODEL");
    command
}

/// The `customers` and `daily` tables as dump lines, to compare with the
/// rows.
fn tables_as_lines(db: &Path) -> String {
    use evs_orders::{Customer, Daily, CUSTOMERS, DAILY};
    use evs_projection::RowKey;
    let conn = evs_projection::rusqlite::Connection::open(db).unwrap();
    let mut lines = Vec::new();
    let mut stmt = conn
        .prepare("select customer_id, placed, cancelled, paid_cents from customers")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            let c = Customer {
                placed: r.get(1)?,
                cancelled: r.get(2)?,
                paid_cents: r.get(3)?,
            };
            Ok((
                RowKey::new(CUSTOMERS, r.get::<_, String>(0)?),
                OrdersRow::Customer(c),
            ))
        })
        .unwrap();
    lines.extend(rows.map(|r| r.unwrap()));
    let mut stmt = conn
        .prepare("select day, orders, revenue_cents from daily")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            let d = Daily {
                orders: r.get(1)?,
                revenue_cents: r.get(2)?,
            };
            Ok((
                RowKey::new(DAILY, r.get::<_, String>(0)?),
                OrdersRow::Day(d),
            ))
        })
        .unwrap();
    lines.extend(rows.map(|r| r.unwrap()));
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    lines.iter().map(|(k, r)| dump_line(k, r) + "\n").collect()
}

/// Events applied by the ledger of the SQLite read model at `db`.
fn applied_in(db: &Path) -> i64 {
    let Ok(conn) = evs_projection::rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row(
        "select coalesce(sum(version), 0) from evs_ledger",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// A rebuild into SQLite killed (SIGKILL) at seeded moments, then run to
/// its end: the rows, and the projection's own tables, equal the fold of
/// the table; nothing is applied twice (the sums would show it).
#[tokio::test]
async fn a_rebuild_into_sqlite_killed_midway_then_rerun_equals_the_fold() {
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let dir = evs_testkit::TempDir::new("evs-orders-kill");
    let archive_dir = dir.join("archive");
    let table = orders_table(seed, 20_000, 500).await;
    archive(&table, &archive_dir, 400).await;
    let db = dir.join("orders.db");
    let model = format!("sqlite:{}", db.display());
    let archive_arg = archive_dir.display().to_string();
    let args = [
        "rebuild",
        "--quiet",
        "--read-model",
        &model,
        "--archive",
        &archive_arg,
    ];
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut killed_running = 0;
    for k in 0..4 {
        let mut child = orders_cli(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // later each time: a rerun first skips what is applied
        tokio::time::sleep(Duration::from_millis(rng.u64(20..300) + 250 * k)).await;
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        println!("applied so far: {}", applied_in(&db));
    }
    println!("{killed_running} of 4 rebuilds killed while running");
    let out = orders_cli(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let dump = orders_cli(&["dump", "--read-model", &model])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let want = fold(&table).await;
    assert_eq!(String::from_utf8(dump.stdout).unwrap(), want);
    assert_eq!(tables_as_lines(&db), want);
}

/// The handoff on a SQL read model: `evs-orders rebuild` (its own process)
/// from an archive of the history, while a live driver in this process
/// applies the change feed from before the history's end (the two overlap
/// by 500 events; one live batch in four is delivered again). The rows
/// equal the fold of the table, and so do the projection's own tables.
async fn handoff_into(model: &str, store: Arc<dyn RowStore<OrdersRow>>, seed: u64) {
    println!("seed {seed}");
    let dir = evs_testkit::TempDir::new("evs-orders-handoff");
    let archive_dir = dir.join("archive");
    let table = orders_table(seed, 3_000, 300).await;
    archive(&table, &archive_dir, 100).await;
    let history = table.changes(0, usize::MAX).1;
    // more writes after the archive's end: the live driver's alone
    append_orders(&table, seed + 1, 1_000, 300).await;
    let archive_arg = archive_dir.display().to_string();
    let rebuild = orders_cli(&[
        "rebuild",
        "--quiet",
        "--read-model",
        model,
        "--archive",
        &archive_arg,
    ])
    .output();
    let live = async {
        let mut applier =
            Applier::new(Orders, Arc::clone(&store)).with_table(Arc::new(table.clone()));
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut at = history - 500;
        loop {
            let (records, _) = table.changes(at, 100);
            if records.is_empty() {
                break;
            }
            let report = apply_records(&mut applier, &records, 0).await;
            assert!(report.batch.failures().next().is_none(), "{report:?}");
            if rng.u8(0..4) != 0 {
                at += report.first_retry;
            }
        }
    };
    let (out, ()) = tokio::join!(tokio::task::spawn_blocking(move || rebuild), live);
    let out = out.unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = orders_cli(&["dump", "--read-model", model])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert_eq!(String::from_utf8(dump.stdout).unwrap(), fold(&table).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handoff_on_sqlite_equals_the_fold() {
    let dir = evs_testkit::TempDir::new("evs-orders-handoff-db");
    let db = dir.join("orders.db");
    let store = SqliteRowStore::open(&db, evs_orders::PROJECTION)
        .unwrap()
        .with_tables(OrdersTables)
        .unwrap();
    let model = format!("sqlite:{}", db.display());
    handoff_into(&model, Arc::new(store), fastrand::u64(..)).await;
    let dump = orders_cli(&["dump", "--read-model", &model])
        .output()
        .unwrap();
    assert_eq!(
        tables_as_lines(&db),
        String::from_utf8(dump.stdout).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handoff_on_postgres_equals_the_fold() {
    let Some(pg) = evs_testkit::postgres::Postgres::shared() else {
        return;
    };
    let url = pg.fresh_database();
    let store = PostgresRowStore::connect(&url, evs_orders::PROJECTION)
        .await
        .unwrap()
        .with_tables(OrdersTables)
        .await
        .unwrap();
    handoff_into(&url, Arc::new(store), fastrand::u64(..)).await;
    // the orders tables hold what the rows hold
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut lines = Vec::new();
    for row in client
        .query(
            "select customer_id, placed, cancelled, paid_cents from customers",
            &[],
        )
        .await
        .unwrap()
    {
        let c = evs_orders::Customer {
            placed: row.get::<_, i64>(1) as u64,
            cancelled: row.get::<_, i64>(2) as u64,
            paid_cents: row.get(3),
        };
        let key = evs_projection::RowKey::new(evs_orders::CUSTOMERS, row.get::<_, String>(0));
        lines.push((key, OrdersRow::Customer(c)));
    }
    for row in client
        .query("select day, orders, revenue_cents from daily", &[])
        .await
        .unwrap()
    {
        let d = evs_orders::Daily {
            orders: row.get::<_, i64>(1) as u64,
            revenue_cents: row.get(2),
        };
        let key = evs_projection::RowKey::new(evs_orders::DAILY, row.get::<_, String>(0));
        lines.push((key, OrdersRow::Day(d)));
    }
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let tables: String = lines.iter().map(|(k, r)| dump_line(k, r) + "\n").collect();
    let dump = orders_cli(&["dump", "--read-model", &url])
        .output()
        .unwrap();
    assert_eq!(tables, String::from_utf8(dump.stdout).unwrap());
}
