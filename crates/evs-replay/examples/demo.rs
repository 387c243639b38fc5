//! The whole pipeline offline, in one process (`make run`):
//!
//! concurrent writers (the decide loop) → the in-memory table → its change
//! feed → the pump → the archiver's real handler → a local archive → a replay
//! that follows the archive live and builds a projection → verify.
//!
//! Streams keep being created while the replay runs, and one PUT in nine
//! "loses its acknowledgement" (the object is written, the pump is told it
//! failed and writes the batch again under a new key), so the archive holds
//! duplicates, as it does after Lambda retries. Every claim printed at the
//! end is checked; the demo exits non-zero if one does not hold.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use evs_archive::store::{LocalDir, Object, ObjectStore, StoreError, Stored};
use evs_archiver::config::Config;
use evs_core::{
    decide, Aggregate, EventStore, MemoryStore, NewEvent, RecordedEvent, RetryPolicy, StreamId,
};
use evs_pump::{self as pump, MemorySource, PumpError, PumpSummary, Stop, StopHandle};
use evs_replay::{
    verify, Archive, Frontier, ReplayEvent, ReplayOptions, ReplayStats, Replayer, Step,
};
use serde_json::json;
use tokio::task::JoinHandle;

type AnyError = Box<dyn Error + Send + Sync>;

const WRITERS: usize = 8;
const COMMANDS_PER_WRITER: usize = 60;
/// The pump's hard deadline per write: the `T` of the settled frontier.
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// The clock margin `e` (one process, one clock: small).
const CLOCK_MARGIN_MS: i64 = 100;

/// A local directory whose every ninth PUT lands but reports a failure.
#[derive(Debug)]
struct LostAcks {
    dir: LocalDir,
    puts: AtomicU64,
    lost: AtomicU64,
}

#[async_trait]
impl ObjectStore for LostAcks {
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError> {
        let stored = self.dir.put(key, object).await?;
        if self.puts.fetch_add(1, Ordering::SeqCst) % 9 == 8 {
            self.lost.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Io {
                doing: "acknowledging",
                path: key.to_owned(),
                source: std::io::Error::other("connection reset after the write landed"),
            });
        }
        Ok(stored)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.dir.get(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.dir.list(prefix, start_after, limit).await
    }

    fn location(&self) -> String {
        self.dir.location()
    }
}

#[derive(Debug, Default, Clone)]
struct Account {
    balance: i64,
}

fn fold(account: &mut Account, event: &RecordedEvent) {
    account.balance = event.payload["balance"].as_i64().unwrap_or(account.balance);
}

/// What the replay builds: every account's last event id and balance.
#[derive(Debug, Default)]
struct Projection {
    accounts: BTreeMap<String, (u64, i64)>,
    delivered: u64,
    out_of_order: u64,
    created_while_following: u64,
}

/// The flags and the counter `main` shares with the replay task.
#[derive(Debug, Default, Clone)]
struct Shared {
    /// Raised once the replay has reached the archive's end and follows it.
    following: Arc<AtomicBool>,
    /// Raised by `main` to stop the replay.
    stop: Arc<AtomicBool>,
    /// Events the replay has delivered so far.
    delivered: Arc<AtomicU64>,
}

/// The archiver's task and the handle that stops it.
struct Archiver {
    stop: StopHandle,
    task: JoinHandle<Result<PumpSummary, PumpError>>,
}

/// The replay's task and what it shares with `main`.
struct LiveReplay {
    shared: Shared,
    task: JoinHandle<Result<(Projection, ReplayStats), AnyError>>,
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let dir: PathBuf = std::env::temp_dir().join(format!("evs-demo-{}", std::process::id()));
    let started = Instant::now();
    let store = MemoryStore::new();
    let config = Config::local(dir.clone());
    let sink = Arc::new(LostAcks {
        dir: LocalDir::new(dir.clone()),
        puts: AtomicU64::new(0),
        lost: AtomicU64::new(0),
    });
    println!("evs demo: in-memory table -> change feed -> archiver handler -> local archive -> live replay -> verify");

    let archiver = spawn_archiver(&store, &sink, &config);
    let replay = spawn_replay(&store, &sink, &config);
    wait_until_following(&replay.shared, started).await;

    let conflicts = write(&store).await?;
    let versions = store.last_versions();
    let total: u64 = versions.values().sum();
    println!(
        "writers:    {WRITERS} concurrent writers made {total} deposits on {} accounts through the decide loop ({conflicts} conflicts reloaded and retried)",
        versions.len()
    );

    let (summary, projection, stats) = stop_when_delivered(archiver, replay, total).await?;
    println!(
        "archiver:   {} batches -> {} objects under {} ({} PUTs lost their acknowledgement and were written again: duplicates in the archive)",
        summary.batches,
        count_objects(&dir)?,
        dir.join(config.prefix.as_str()).display(),
        sink.lost.load(Ordering::SeqCst),
    );
    println!(
        "replay:     followed the archive live: {} events delivered, {} duplicate lines dropped, {} out of order; {} of {} accounts were created after the replay started",
        projection.delivered,
        stats.duplicates,
        projection.out_of_order,
        projection.created_while_following,
        versions.len(),
    );
    let wrong = check_projection(&store, &versions, &projection).await?;
    let report = verify_archive(&sink, &config, &versions).await?;
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);

    let ok = projection.delivered == total
        && projection.out_of_order == 0
        && wrong == 0
        && report.is_complete()
        && projection.created_while_following > 0;
    if !ok {
        return Err("the demo's checks failed (see above)".into());
    }
    Ok(())
}

/// Starts the archiver, outside Lambda: the pump on the table's change feed.
fn spawn_archiver(store: &MemoryStore, sink: &Arc<LostAcks>, config: &Config) -> Archiver {
    let (stop, pump_stop) = Stop::channel();
    let (store, sink, config) = (store.clone(), Arc::clone(sink), config.clone());
    let task = tokio::spawn(async move {
        let mut source = MemorySource::new(store);
        let options = pump::Options {
            batch_size: 25,
            write_timeout: WRITE_TIMEOUT,
            backoff: Duration::from_millis(5),
            idle: Duration::from_millis(20),
            ..pump::Options::default()
        };
        pump::run(
            &mut source,
            sink.as_ref(),
            &config,
            &options,
            pump_stop,
            &mut |_| {},
        )
        .await
    });
    Archiver { stop, task }
}

/// Starts the replay: it follows the archive from its start, back-fills from
/// the table, and projects every account's balance, checking order as it goes.
fn spawn_replay(store: &MemoryStore, sink: &Arc<LostAcks>, config: &Config) -> LiveReplay {
    let shared = Shared::default();
    let archive = Archive::new(sink.clone(), config.prefix.clone());
    let table: Arc<dyn EventStore> = Arc::new(store.clone());
    let task = tokio::spawn(follow(archive, table, shared.clone()));
    LiveReplay { shared, task }
}

/// The replay task: follows the archive until stopped, projecting every
/// event it delivers; returns the projection and the replayer's counts.
async fn follow(
    archive: Archive,
    table: Arc<dyn EventStore>,
    shared: Shared,
) -> Result<(Projection, ReplayStats), AnyError> {
    let options = ReplayOptions {
        follow: true,
        frontier: Frontier::new(WRITE_TIMEOUT.as_millis() as i64, CLOCK_MARGIN_MS),
        gap_bound_ms: 2_000,
        poll_ms: 50,
        ..ReplayOptions::default()
    };
    let mut replayer = Replayer::new(archive, options, evs_core::system_clock()).with_table(table);
    let mut projection = Projection::default();
    while !shared.stop.load(Ordering::SeqCst) {
        match replayer.next().await? {
            Step::Object { events, .. } | Step::Backfill { events, .. } => {
                for event in events {
                    project(&mut projection, &event, &shared)?;
                }
            }
            Step::Idle { until_ms } => {
                shared.following.store(true, Ordering::SeqCst);
                let wait = (until_ms - evs_core::now_ms()).clamp(1, 50);
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            Step::End => break,
            Step::Skipped { key, reason } => {
                return Err(format!("object {key} skipped: {reason}").into())
            }
        }
    }
    Ok((projection, replayer.stats().clone()))
}

/// Applies one delivered event to the projection, counting it, a break in
/// its stream's order, and an account first seen while following.
fn project(
    projection: &mut Projection,
    event: &ReplayEvent,
    shared: &Shared,
) -> Result<(), AnyError> {
    let line = event.line_value()?;
    let seen_before = projection.accounts.contains_key(&event.stream_id);
    let entry = projection
        .accounts
        .entry(event.stream_id.clone())
        .or_insert((0, 0));
    if event.event_id != entry.0 + 1 {
        projection.out_of_order += 1;
    }
    *entry = (
        event.event_id,
        line["payload"]["balance"].as_i64().unwrap_or(entry.1),
    );
    projection.delivered += 1;
    shared.delivered.fetch_add(1, Ordering::SeqCst);
    if !seen_before && shared.following.load(Ordering::SeqCst) {
        projection.created_while_following += 1;
    }
    Ok(())
}

/// Lets the replay reach the (empty) archive's end and start following, so
/// that every stream the writers create is created while it runs.
async fn wait_until_following(shared: &Shared, started: Instant) {
    while !shared.following.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the concurrent writers to their end: deposits through the decide
/// loop, on a growing set of accounts (new streams appear all the time), so
/// writers collide. Returns the conflicts they reloaded and retried.
async fn write(store: &MemoryStore) -> Result<u32, AnyError> {
    let created = Arc::new(AtomicU64::new(1));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, created) = (store.clone(), Arc::clone(&created));
        writers.push(tokio::spawn(writer(w, store, created)));
    }
    let mut conflicts = 0;
    for writer in writers {
        conflicts += writer.await??;
    }
    Ok(conflicts)
}

/// Writer `w`: `COMMANDS_PER_WRITER` deposits, new accounts among them;
/// returns its conflicts.
async fn writer(w: usize, store: MemoryStore, created: Arc<AtomicU64>) -> Result<u32, AnyError> {
    let mut rng = fastrand::Rng::with_seed(w as u64);
    let mut conflicts = 0;
    for _ in 0..COMMANDS_PER_WRITER {
        let known = created.load(Ordering::SeqCst);
        let n = match rng.u8(..) {
            // A new account: a stream created while the replay runs.
            0..40 => created.fetch_add(1, Ordering::SeqCst),
            // The newest accounts are hot: writers collide there.
            40..160 => rng.u64(known.saturating_sub(4)..known),
            _ => rng.u64(0..known),
        };
        let stream = StreamId::new(format!("account-{n:04}"))?;
        let mut account = Aggregate::new(Account::default());
        let amount = rng.i64(1..=100);
        let done = decide(
            &store,
            &stream,
            &mut account,
            fold,
            |a: &Account| -> Result<_, String> {
                Ok(vec![NewEvent::new(
                    "Deposited",
                    json!({ "amount": amount, "balance": a.balance + amount }),
                )])
            },
            &RetryPolicy::default(),
        )
        .await?;
        conflicts += done.attempts - 1;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..4))).await;
    }
    Ok(conflicts)
}

/// Waits for the live replay to deliver all `total` events the table holds
/// (at most a minute), a little longer for a duplicate or a stray event to
/// show up, then stops the replay and the pump and collects what they did.
async fn stop_when_delivered(
    archiver: Archiver,
    replay: LiveReplay,
    total: u64,
) -> Result<(PumpSummary, Projection, ReplayStats), AnyError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while replay.shared.delivered.load(Ordering::SeqCst) < total
        && Instant::now() < deadline
        && !replay.task.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A little longer: a duplicate or a stray event would show up now.
    tokio::time::sleep(WRITE_TIMEOUT + Duration::from_millis(CLOCK_MARGIN_MS as u64)).await;
    replay.shared.stop.store(true, Ordering::SeqCst);
    archiver.stop.stop();
    let summary = archiver.task.await??;
    let (projection, stats) = replay.task.await??;
    Ok((summary, projection, stats))
}

/// Checks every account's projected version and balance against the
/// table's last event; prints the tally and returns how many differ.
async fn check_projection(
    store: &MemoryStore,
    versions: &BTreeMap<String, u64>,
    projection: &Projection,
) -> Result<usize, AnyError> {
    let mut wrong = 0;
    for (stream, &version) in versions {
        let table_balance = store
            .read(
                &StreamId::new(stream.clone())?,
                evs_core::ReadRequest::last(1),
            )
            .await?
            .first()
            .and_then(|e| e.payload["balance"].as_i64())
            .unwrap_or(0);
        if projection.accounts.get(stream) != Some(&(version, table_balance)) {
            wrong += 1;
        }
    }
    println!(
        "projection: {} of {} account balances match the table",
        versions.len() - wrong,
        versions.len()
    );
    Ok(wrong)
}

/// Reads the whole archive back, checks it against the table's versions and
/// prints the report.
async fn verify_archive(
    sink: &Arc<LostAcks>,
    config: &Config,
    versions: &BTreeMap<String, u64>,
) -> Result<verify::Report, AnyError> {
    let archive = Archive::new(sink.clone(), config.prefix.clone());
    let report = verify::read_archive(archive, 4, |_| {})
        .await?
        .report(Some(versions));
    println!(
        "verify:     {}",
        report.to_string().lines().collect::<Vec<_>>().join("; ")
    );
    Ok(report)
}

/// Objects under the archive directory.
fn count_objects(dir: &std::path::Path) -> std::io::Result<usize> {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".ndjson.gz") {
                count += 1;
            }
        }
    }
    Ok(count)
}
