//! The orders example's handoff offline, in one process (`make run`): a
//! cross-stream read model (orders per customer and per day, from every
//! `order-<id>` stream) rebuilt from the archive, then kept live from the
//! table's change feed (docs/design.md §9).
//!
//! 1. History: orders placed, paid and cancelled in the in-memory table (and
//!    events of other names, which the read model ignores); the archiver
//!    (the pump and the real handler) archives its change feed into a local
//!    directory.
//! 2. The live driver starts reading the change feed at its end (as
//!    `LATEST` does) at time S, and applies every batch of stream records
//!    through `live::apply_records`; one batch in five is delivered again,
//!    as Lambda does after a failure.
//! 3. The replay driver rebuilds from the archive, starting from the ledger
//!    in the same row store, and follows it until its settled frontier
//!    passes the handoff time H = S + the archiver's lag + T + e.
//! 4. Writers keep writing through the handoff, on new orders too. Both
//!    drivers apply some of the same events; the ledger makes that harmless.
//!    Every stream touches the day's row: the hot row both drivers race on.
//!
//! The read model is a SQLite file, `orders.db` in the current folder
//! (`EVS_ORDERS_DB` to change it; an earlier demo's file is replaced): rows,
//! ledger, and the projection's own tables `customers` and `daily`. At the
//! end every row is checked against a fold of the table (each event once),
//! the example exits non-zero if one differs, and it prints a query to run
//! with `sqlite3`, and its answer.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evs_archive::store::LocalDir;
use evs_archiver::config::Config;
use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, ReadRequest, StreamId};
use evs_orders::{dump_line, Orders, OrdersRow, OrdersTables};
use evs_projection::live::apply_records;
use evs_projection::replay::{rebuild, replayer_for, RebuildOptions, RebuildReport};
use evs_projection::{Applier, MemoryRowStore, RowStore, SqliteRowStore};
use evs_pump::{self as pump, MemorySource, PumpError, PumpSummary, Stop, StopHandle};
use evs_replay::{Archive, Frontier, ReplayOptions};
use serde_json::json;
use tokio::task::JoinHandle;

type AnyError = Box<dyn Error + Send + Sync>;

/// The read model both drivers share: one SQLite file.
type States = Arc<SqliteRowStore<OrdersTables>>;

/// The query the demo prints, and runs.
const QUERY: &str = "select customer_id, placed, cancelled, paid_cents from customers order by paid_cents desc limit 3";

/// Opens a new read model at `path`, replacing an earlier demo's (a file
/// that is not an orders read model is left alone: an error).
fn fresh_read_model(path: &std::path::Path) -> Result<States, AnyError> {
    if path.exists() {
        drop(SqliteRowStore::open(path, evs_orders::PROJECTION)?);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
    Ok(Arc::new(
        SqliteRowStore::open(path, evs_orders::PROJECTION)?.with_tables(OrdersTables)?,
    ))
}

/// The archiver's hard deadline per write: the `T` of the settled frontier.
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// The clock margin `e` (one process, one clock: small).
const CLOCK_MARGIN_MS: i64 = 100;
/// The most the archiver lags the table here (it polls every 20 ms).
const ARCHIVER_LAG_MS: i64 = 300;

/// Appends `count` order events; `new_orders` of them place an order never
/// seen before. One in ten is an event of another name (ignored).
async fn write(
    table: &MemoryStore,
    rng: &mut fastrand::Rng,
    orders: &AtomicU64,
    count: usize,
    new_orders: usize,
) -> Result<(), AnyError> {
    for n in 0..count {
        let (order, placed) = if n < new_orders {
            (orders.fetch_add(1, Ordering::SeqCst), true)
        } else {
            (rng.u64(0..orders.load(Ordering::SeqCst)), false)
        };
        let customer = format!("c-{:02}", order % 40);
        let (name, payload) = match (placed, rng.u8(0..10)) {
            (true, _) => (
                "OrderPlaced",
                json!({"customerId": customer, "totalCents": rng.i64(100..20_000)}),
            ),
            (false, 0) => ("OrderNoted", json!({"note": "gift wrap"})),
            (false, 1..=2) => ("OrderCancelled", json!({"customerId": customer})),
            (false, _) => (
                "OrderPaid",
                json!({"customerId": customer, "amountCents": rng.i64(100..20_000)}),
            ),
        };
        table
            .append(
                &StreamId::new(format!("order-{order:05}"))?,
                ExpectedVersion::Any,
                &[NewEvent::new(name, payload)],
            )
            .await?;
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

/// The archiver's task and the handle that stops it.
struct Archiver {
    stop: StopHandle,
    /// Records of the feed the archiver has committed.
    committed: Arc<AtomicU64>,
    task: JoinHandle<Result<PumpSummary, PumpError>>,
}

/// The live driver's task and the flag that tells it to stop once drained.
struct LiveDriver {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<LiveCounts, AnyError>>,
}

/// What the live driver did.
#[derive(Debug, Default)]
struct LiveCounts {
    /// Batches of records applied.
    batches: u64,
    /// Events applied.
    applied: u64,
    /// Events read from the table to fill a stream's hole first.
    filled: u64,
    /// Events skipped as applied already.
    skipped: u64,
    /// Batches delivered again whole, as after a failure.
    redelivered: u64,
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("evs-orders-{}", std::process::id()));
    let table = MemoryStore::new();
    let config = Config::local(dir.clone());
    let archive_dir = Arc::new(LocalDir::new(dir.clone()));
    let db = std::path::PathBuf::from(
        std::env::var("EVS_ORDERS_DB").unwrap_or_else(|_| "orders.db".to_owned()),
    );
    let states = fresh_read_model(&db)?;
    let events_table: Arc<dyn EventStore> = Arc::new(table.clone());
    let mut rng = fastrand::Rng::with_seed(7);
    let orders = Arc::new(AtomicU64::new(0));
    println!("evs orders: table -> archive -> replay driver | change feed -> live driver -> one cross-stream read model");

    let archiver = spawn_archiver(&table, &archive_dir, &config);

    // 1. History.
    write(&table, &mut rng, &orders, 3_000, 400).await?;
    let history = table.changes(0, usize::MAX).1;
    // The handoff time below counts on the archiver lagging the table by at
    // most ARCHIVER_LAG_MS; a slow (debug) build archiving the history's
    // burst can lag more, so the live driver starts once it has caught up.
    while archiver.committed.load(Ordering::SeqCst) < history as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 2. The live driver, from the feed's end (LATEST) at time S.
    let live_start_ms = evs_core::now_ms();
    let handoff_ms =
        live_start_ms + ARCHIVER_LAG_MS + WRITE_TIMEOUT.as_millis() as i64 + CLOCK_MARGIN_MS;
    let live = spawn_live(&table, &states, &events_table, history);

    // 3. The replay driver, from the archive, with the store's versions.
    let replay = spawn_replay(&archive_dir, &config, &states, &events_table, handoff_ms);

    // 4. Writers go on through the handoff, opening accounts too.
    let during_start = orders.load(Ordering::SeqCst);
    for _ in 0..10 {
        write(&table, &mut rng, &orders, 150, 10).await?;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let written = table.changes(0, usize::MAX).1;
    let (rebuilt, replay_stopped_ms) = replay.await??;
    // The live driver drains what is left, then stops.
    live.stop.store(true, Ordering::SeqCst);
    let live = live.task.await??;
    archiver.stop.stop();
    let archived = archiver.task.await??;

    println!(
        "writers:    {written} events on {} order streams; {} orders placed during the handoff",
        table.last_versions().len(),
        orders.load(Ordering::SeqCst) - during_start,
    );
    println!(
        "archiver:   {} batches archived under {}",
        archived.batches,
        dir.join(config.prefix.as_str()).display()
    );
    println!(
        "replay:     {} objects read, {} events applied, {} skipped as applied; stopped {} ms after the handoff time",
        rebuilt.objects,
        rebuilt.applied,
        rebuilt.skipped,
        replay_stopped_ms - handoff_ms,
    );
    println!(
        "live:       from event {history} of the feed on: {} batches ({} delivered again), {} events applied ({} of them read from the table to fill a stream's hole first), {} skipped as applied",
        live.batches, live.redelivered, live.applied, live.filled, live.skipped,
    );

    let (wrong, checked) = check_read_model(&table, &states).await?;
    let applied = rebuilt.applied + live.applied;
    println!(
        "read model: {} of {checked} rows equal the fold of the table; {applied} events applied once each by the two drivers together ({written} written)",
        checked - wrong.len(),
    );
    let rows = states.rows().await?;
    for (key, row) in rows
        .iter()
        .filter(|(k, _)| k.model == "daily")
        .chain(rows.iter().take(3))
    {
        println!("  {}", dump_line(key, row));
    }
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    let ledger: std::collections::HashMap<String, u64> =
        states.versions().await?.into_iter().collect();
    let short: Vec<String> = table
        .last_versions()
        .iter()
        .filter(|(s, v)| ledger.get(*s).copied().unwrap_or(0) != **v)
        .map(|(s, v)| format!("{s}: table at {v}, ledger {:?}", ledger.get(s)))
        .collect();
    for line in short.iter().take(5) {
        eprintln!("short: {line}");
    }
    if !short.is_empty() {
        return Err(format!("{} streams are short of the table (see above)", short.len()).into());
    }
    if !wrong.is_empty() || applied != written as u64 {
        for line in wrong.iter().take(5) {
            eprintln!("mismatch: {line}");
        }
        return Err("the read model does not equal the table (see above)".into());
    }
    show_query(&db)?;
    Ok(())
}

/// Prints the query to run against the read model, and its answer.
fn show_query(db: &std::path::Path) -> Result<(), AnyError> {
    println!(
        "read model: {} (SQLite; tables customers and daily), e.g.",
        db.display()
    );
    println!("  sqlite3 {} '{QUERY}'", db.display());
    let conn = evs_projection::rusqlite::Connection::open(db)?;
    let mut stmt = conn.prepare(QUERY)?;
    let rows = stmt.query_map([], |r| {
        Ok(format!(
            "  {}|{}|{}|{}",
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?
        ))
    })?;
    for row in rows {
        println!("{}", row?);
    }
    Ok(())
}

/// Starts the archiver, outside Lambda: the pump on the table's change feed.
fn spawn_archiver(table: &MemoryStore, archive_dir: &Arc<LocalDir>, config: &Config) -> Archiver {
    let (stop, pump_stop) = Stop::channel();
    let committed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&committed);
    let (table, archive_dir, config) = (table.clone(), Arc::clone(archive_dir), config.clone());
    let task = tokio::spawn(async move {
        let options = pump::Options {
            batch_size: 50,
            write_timeout: WRITE_TIMEOUT,
            idle: Duration::from_millis(20),
            ..pump::Options::default()
        };
        let mut source = MemorySource::new(table);
        pump::run(
            &mut source,
            archive_dir.as_ref(),
            &config,
            &options,
            pump_stop,
            &mut |report| {
                counter.fetch_add(report.committed as u64, Ordering::SeqCst);
            },
        )
        .await
    });
    Archiver {
        stop,
        committed,
        task,
    }
}

/// Starts the live driver on the change feed from record `history` on.
fn spawn_live(
    table: &MemoryStore,
    states: &States,
    events_table: &Arc<dyn EventStore>,
    history: usize,
) -> LiveDriver {
    let stop = Arc::new(AtomicBool::new(false));
    let (table, states) = (table.clone(), Arc::clone(states));
    let events_table = Arc::clone(events_table);
    let task = tokio::spawn(drive_live(
        table,
        states,
        events_table,
        history,
        Arc::clone(&stop),
    ));
    LiveDriver { stop, task }
}

/// The live driver: applies every batch of the feed from record `at` on
/// through `live::apply_records`, one batch in five delivered again whole,
/// until the feed is drained after `stop` is raised.
async fn drive_live(
    table: MemoryStore,
    states: States,
    events_table: Arc<dyn EventStore>,
    mut at: usize,
    stop: Arc<AtomicBool>,
) -> Result<LiveCounts, AnyError> {
    let mut applier = Applier::new(Orders, states).with_table(events_table);
    let mut counts = LiveCounts::default();
    let mut rng = fastrand::Rng::with_seed(8);
    loop {
        let (records, _) = table.changes(at, 100);
        if records.is_empty() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let report = apply_records(&mut applier, &records, evs_core::now_ms()).await;
        if let Some((stream, id, error)) = report.batch.failures().next() {
            return Err(format!("live: {stream} event {id}: {error}").into());
        }
        counts.batches += 1;
        counts.applied += report.batch.applied();
        counts.filled += report.batch.streams.iter().map(|s| s.filled).sum::<u64>();
        counts.skipped += report.batch.skipped();
        if rng.u32(0..5) == 0 {
            counts.redelivered += 1; // delivered again whole, as after a failure
        } else {
            at += report.first_retry;
        }
    }
    Ok(counts)
}

/// Starts the replay driver: rebuilds from the archive, starting from the
/// store's versions, until its settled frontier passes `handoff_ms`; its
/// task returns the rebuild's report and when it stopped.
fn spawn_replay(
    archive_dir: &Arc<LocalDir>,
    config: &Config,
    states: &States,
    events_table: &Arc<dyn EventStore>,
    handoff_ms: i64,
) -> JoinHandle<Result<(RebuildReport, i64), AnyError>> {
    let archive = Archive::new(archive_dir.clone(), config.prefix.clone());
    let (states, events_table) = (Arc::clone(states), Arc::clone(events_table));
    tokio::spawn(async move {
        let options = ReplayOptions {
            follow: true,
            frontier: Frontier::new(WRITE_TIMEOUT.as_millis() as i64, CLOCK_MARGIN_MS),
            poll_ms: 50,
            ..ReplayOptions::default()
        };
        let clock = evs_core::system_clock();
        let mut replayer = replayer_for(archive, options, clock.clone(), &states).await?;
        let mut applier = Applier::new(Orders, states).with_table(events_table);
        let rebuild_options = RebuildOptions {
            until_ms: Some(handoff_ms),
            ..RebuildOptions::default()
        };
        let report = rebuild(
            &mut applier,
            &mut replayer,
            &rebuild_options,
            &clock,
            |_| {},
        )
        .await?;
        Ok::<_, AnyError>((report, evs_core::now_ms()))
    })
}

/// Every row: the fold of the table's events, each once, against the read
/// model. Returns a line for each row that differs, and how many rows the
/// fold has.
async fn check_read_model(
    table: &MemoryStore,
    states: &States,
) -> Result<(Vec<String>, usize), AnyError> {
    let mut events = Vec::new();
    for stream in table.last_versions().keys() {
        events.extend(
            table
                .read(&StreamId::new(stream.clone())?, ReadRequest::after(0))
                .await?,
        );
    }
    let folded = MemoryRowStore::<OrdersRow>::new();
    let report = Applier::new(Orders, folded.clone())
        .apply_batch(&events)
        .await;
    if let Some((stream, id, error)) = report.failures().next() {
        return Err(format!("fold: {stream} event {id}: {error}").into());
    }
    let want = folded.snapshot();
    let got: std::collections::BTreeMap<_, _> = states.rows().await?.into_iter().collect();
    let mut wrong = Vec::new();
    for key in want
        .keys()
        .chain(got.keys().filter(|k| !want.contains_key(*k)))
    {
        let (w, g) = (want.get(key), got.get(key));
        if w != g {
            wrong.push(format!("{key}: table {w:?}, read model {g:?}"));
        }
    }
    Ok((wrong, want.len()))
}
