//! The archive as a data lake: a real query engine on a real archive.
//!
//! The archiver's handler writes an archive into a local directory from the
//! in-memory store's change feed (several streams, gzip, zstd and plain
//! objects over several hour folders, a batch archived twice as a retried
//! batch is); DuckDB then runs the recipe the README documents,
//! `docs/lake/duckdb.sql`, over the documented glob, and every answer (counts
//! per stream, each stream's events in EventId order, the events of a type
//! in a time window, counts per hour, completeness) must be what the
//! replayer delivers from the same archive.
//!
//! DuckDB runs in the test venv's Python (`make venv`): `EVS_PYTHON`, or the
//! `python` beside `EVS_MOTO_SERVER`. Without it the test says so and
//! passes, except under `CI=true`, where it fails.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use evs_archive::store::{LocalDir, ObjectStore};
use evs_archive::Compression;
use evs_archiver::config::Config;
use evs_archiver::handler;
use evs_core::{EventStore, EventStoreExt, ExpectedVersion, MemoryStore, NewEvent, StreamId};
use evs_replay::{Archive, ReplayEvent, ReplayOptions, Replayer, Step};
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
/// Time between two appends: the events spread over several hours.
const STEP_MS: i64 = 7 * 60_000;
/// The exit code of the harness when duckdb cannot be imported.
const NO_DUCKDB: i32 = 3;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's Python: `EVS_PYTHON`, else the `python` beside `EVS_MOTO_SERVER`.
fn python() -> Option<PathBuf> {
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let path = match from_env("EVS_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(&from_env("EVS_MOTO_SERVER")?).with_file_name("python"),
    };
    path.is_file().then_some(path)
}

/// Under CI a missing engine is a failure; elsewhere the test is skipped.
fn skip(why: &str) {
    if evs_testkit::in_ci() {
        panic!("{why} (CI=true: the lake test must run; `make venv` installs DuckDB)");
    }
    eprintln!("skipped: {why} (run `make venv`, then `make test`, to run it)");
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "evs-replay-lake-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes the scratch directory however the test ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const STREAMS: [&str; 4] = ["order-1", "order-2", "cart-7", "customer-zoë"];
const NAMES: [&str; 3] = ["Placed", "Paid", "Shipped"];

/// Appends events round-robin over the streams (stream `i` gets `3 + 2i`),
/// the store's clock moving `STEP_MS` per append.
async fn append_events(store: &MemoryStore, clock: &AtomicI64) {
    for round in 0..10u64 {
        for (i, stream) in STREAMS.iter().enumerate() {
            if round >= 3 + 2 * i as u64 {
                continue;
            }
            let id = StreamId::new(*stream).unwrap();
            let version = store.version(&id).await.unwrap();
            let name = NAMES[(round as usize + i) % NAMES.len()];
            let payload = json!({
                "round": round,
                "big": 12345678901234567890123u128,
                "price": 19.99,
                "text": "café 東京 👋",
                "nested": {"list": [1, 2.5, null, true], "empty": {}},
            });
            let mut event = NewEvent::new(name, payload);
            if round % 2 == 0 {
                event = event.with_metadata(json!({"user": "zoë", "round": round}));
            }
            store
                .append(&id, ExpectedVersion::Exact(version), &[event])
                .await
                .unwrap();
            clock.fetch_add(STEP_MS, Ordering::SeqCst);
        }
    }
}

/// Archives the whole change feed with the archiver's handler, 4 records a
/// batch, each sealed 30 s after its last event, cycling gzip, zstd and no
/// compression; the third batch is archived a second time, as the mapping
/// does when a batch's PUT landed but the invocation failed.
async fn archive_feed(store: &MemoryStore, sink: &LocalDir, config: &mut Config) {
    let codecs = [Compression::Gzip, Compression::Zstd, Compression::None];
    let mut fed = 0;
    let mut batch = 0;
    loop {
        let (records, next) = store.changes(fed, 4);
        if records.is_empty() {
            break;
        }
        fed = next;
        config.compression = codecs[batch % codecs.len()];
        let event = json!({ "Records": records }).to_string();
        let last_ms = T0 + (fed as i64) * STEP_MS;
        let seal = last_ms + 30_000;
        let now = move || seal;
        handler::handle(&event, sink, config, &now, None)
            .await
            .unwrap();
        if batch == 2 {
            let again = move || seal + 5_000;
            handler::handle(&event, sink, config, &again, None)
                .await
                .unwrap();
        }
        batch += 1;
    }
}

async fn replay(sink: Arc<LocalDir>, config: &Config) -> (Vec<ReplayEvent>, u64) {
    let later = T0 + 30 * 86_400_000;
    let clock: evs_core::Clock = Arc::new(move || later);
    let archive = Archive::new(sink, config.prefix.clone());
    let mut replayer = Replayer::new(archive, ReplayOptions::default(), clock);
    let mut out = Vec::new();
    loop {
        match replayer.next().await.unwrap() {
            Step::Object { events, .. } | Step::Backfill { events, .. } => out.extend(events),
            Step::End => break,
            other => panic!("unexpected step {other:?}"),
        }
    }
    assert!(replayer.gaps().is_empty(), "{:?}", replayer.gaps());
    (out, replayer.stats().duplicates)
}

/// Runs the recipe through the harness; `None` when DuckDB is missing.
fn duckdb(
    python: &Path,
    archive_prefix: &Path,
    stream: &str,
    event_type: &str,
    window: (&str, &str),
) -> Option<Value> {
    let root = repo_root();
    let output = Command::new(python)
        .arg(root.join("crates/evs-replay/tests/lake/duckdb_queries.py"))
        .arg(root.join("docs/lake/duckdb.sql"))
        .arg(format!("{}/", archive_prefix.display()))
        .args([stream, event_type, window.0, window.1])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(NO_DUCKDB) {
        skip(&format!("{}: {}", python.display(), stderr.trim()));
        return None;
    }
    assert!(output.status.success(), "duckdb recipe failed: {stderr}");
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

fn rows<'a>(answer: &'a Value, query: &str) -> &'a Vec<Value> {
    answer[query]
        .as_array()
        .unwrap_or_else(|| panic!("no answer for {query}: {answer}"))
}

fn text<'a>(row: &'a Value, column: &str) -> &'a str {
    row[column]
        .as_str()
        .unwrap_or_else(|| panic!("{column} in {row}"))
}

/// A JSON column (its text), or null when the line has no such field.
fn json_column(row: &Value, column: &str) -> Value {
    match &row[column] {
        Value::Null => Value::Null,
        Value::String(t) => serde_json::from_str(t).unwrap_or_else(|e| panic!("{t}: {e}")),
        other => panic!("{column}: {other}"),
    }
}

/// What the replayer delivered, each line parsed.
fn lines(events: &[ReplayEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(e.line()).unwrap())
        .collect()
}

#[tokio::test]
async fn duckdb_answers_from_the_archive_what_the_replayer_delivers() {
    let Some(python) = python() else {
        skip("no Python found through EVS_PYTHON or EVS_MOTO_SERVER");
        return;
    };
    let dir = scratch();
    let _cleanup = Cleanup(dir.clone());
    let (store, sink, config) = write_archive(&dir).await;
    let keys = sink.list("", None, 1_000).await.unwrap();
    let hours = hour_folders(&keys);

    let (replayed, duplicates) = replay(sink.clone(), &config).await;
    assert!(duplicates > 0, "the retried batch is in the archive twice");
    let replayed = lines(&replayed);
    let by_stream = group_by_stream(&replayed);
    let window = time_window(&replayed);
    let event_type = "Paid";
    let archive_prefix = dir.join(config.prefix.as_str().trim_end_matches('/'));

    let query = |stream: &str| duckdb(&python, &archive_prefix, stream, event_type, window);
    let Some(answer) = check_stream_events(&by_stream, query) else {
        return;
    };
    println!("DuckDB {}: {answer}", answer["duckdb"]);
    check_counts_per_stream(&answer, &by_stream, &store.last_versions());
    check_type_in_window(&answer, &replayed, event_type, window);
    check_counts_per_hour(&answer, &replayed);
    check_completeness(&answer, &store.last_versions());

    // The query finds a hole: without the first hour's objects, the streams
    // that go on after it lack their first events.
    let first_hour = hours.iter().next().expect("an hour folder").to_string();
    for key in keys.iter().filter(|k| k.starts_with(&first_hour)) {
        std::fs::remove_file(dir.join(key)).unwrap();
    }
    let (stream, _) = by_stream.iter().next().expect("a stream");
    let Some(answer) = query(stream) else {
        return;
    };
    check_holes_found(&answer);
}

/// Appends the events and archives the store's change feed into `dir`;
/// returns the store, the archive's directory and the archiver's config.
async fn write_archive(dir: &Path) -> (MemoryStore, Arc<LocalDir>, Config) {
    let clock = Arc::new(AtomicI64::new(T0));
    let store_clock = Arc::clone(&clock);
    let store = MemoryStore::with_clock(Arc::new(move || store_clock.load(Ordering::SeqCst)));
    append_events(&store, &clock).await;
    let sink = Arc::new(LocalDir::new(dir.to_path_buf()));
    let mut config = Config::local(dir.to_path_buf());
    archive_feed(&store, &sink, &mut config).await;
    (store, sink, config)
}

/// Checks the archive holds objects of every compression, and returns its
/// hour folders (several of them).
fn hour_folders(keys: &[String]) -> BTreeSet<&str> {
    for extension in [".ndjson.gz", ".ndjson.zst", ".ndjson"] {
        assert!(
            keys.iter().any(|k| k.ends_with(extension)),
            "{extension}: {keys:?}"
        );
    }
    let hours: BTreeSet<_> = keys.iter().map(|k| &k[..21]).collect();
    assert!(hours.len() > 2, "several hour folders: {hours:?}");
    hours
}

/// The replayed lines by stream, each stream's in delivery order.
fn group_by_stream(replayed: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut by_stream: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for line in replayed {
        by_stream
            .entry(line["streamId"].as_str().unwrap().to_owned())
            .or_default()
            .push(line);
    }
    by_stream
}

/// The window: from the 6th event's time to the 19th's, exclusive.
fn time_window(replayed: &[Value]) -> (&str, &str) {
    let mut times: Vec<&str> = replayed
        .iter()
        .map(|l| l["timestamp"].as_str().unwrap())
        .collect();
    times.sort_unstable();
    (times[5], times[18])
}

/// Queries each stream through `query` and checks its events against the
/// replayer's; returns the first answer, or `None` when DuckDB is missing.
fn check_stream_events(
    by_stream: &BTreeMap<String, Vec<&Value>>,
    query: impl Fn(&str) -> Option<Value>,
) -> Option<Value> {
    let mut first: Option<Value> = None;
    for (stream, expected) in by_stream {
        let answer = query(stream)?;
        // Each stream's events, once each, in EventId order, as the replayer
        // delivers them (payloads and metadata compared as JSON, numbers by
        // their digits).
        let got = rows(&answer, "stream_events");
        assert_eq!(got.len(), expected.len(), "{stream}");
        for (row, line) in got.iter().zip(expected) {
            assert_eq!(text(row, "stream_id"), stream);
            assert_eq!(text(row, "event_id"), line["eventId"].to_string());
            assert_eq!(text(row, "event_name"), line["eventName"]);
            assert_eq!(text(row, "timestamp"), line["timestamp"]);
            assert_eq!(text(row, "id"), line["id"]);
            assert_eq!(json_column(row, "payload"), line["payload"], "{stream}");
            let metadata = line.get("metadata").cloned().unwrap_or(Value::Null);
            assert_eq!(json_column(row, "metadata"), metadata, "{stream}");
        }
        first.get_or_insert(answer);
    }
    Some(first.expect("at least one stream"))
}

/// Counts per stream: the replayer's, and the table's last EventIds.
fn check_counts_per_stream(
    answer: &Value,
    by_stream: &BTreeMap<String, Vec<&Value>>,
    last: &BTreeMap<String, u64>,
) {
    let counts: BTreeMap<String, u64> = rows(answer, "counts_per_stream")
        .iter()
        .map(|r| {
            (
                text(r, "stream_id").to_owned(),
                text(r, "events").parse().unwrap(),
            )
        })
        .collect();
    let replay_counts: BTreeMap<String, u64> = by_stream
        .iter()
        .map(|(s, l)| (s.clone(), l.len() as u64))
        .collect();
    assert_eq!(counts, replay_counts);
    assert_eq!(&counts, last);
}

/// Events of a type in a time window, ordered by time, stream, EventId.
fn check_type_in_window(
    answer: &Value,
    replayed: &[Value],
    event_type: &str,
    window: (&str, &str),
) {
    let got: Vec<(String, u64)> = rows(answer, "type_in_window")
        .iter()
        .map(|r| {
            assert_eq!(text(r, "event_name"), event_type);
            (
                text(r, "stream_id").to_owned(),
                text(r, "event_id").parse().unwrap(),
            )
        })
        .collect();
    let mut expected: Vec<(&str, &str, u64)> = replayed
        .iter()
        .filter(|l| l["eventName"] == event_type)
        .map(|l| {
            (
                l["timestamp"].as_str().unwrap(),
                l["streamId"].as_str().unwrap(),
                l["eventId"].as_u64().unwrap(),
            )
        })
        .filter(|(t, _, _)| *t >= window.0 && *t < window.1)
        .collect();
    expected.sort_unstable();
    let expected: Vec<(String, u64)> = expected
        .into_iter()
        .map(|(_, s, e)| (s.to_owned(), e))
        .collect();
    assert!(!expected.is_empty(), "the window holds events of the type");
    assert_eq!(got, expected);
}

/// Counts per hour of the events' own time and per type.
fn check_counts_per_hour(answer: &Value, replayed: &[Value]) {
    let got: BTreeMap<(String, String), u64> = rows(answer, "counts_per_hour")
        .iter()
        .map(|r| {
            (
                (text(r, "hour").to_owned(), text(r, "event_name").to_owned()),
                text(r, "events").parse().unwrap(),
            )
        })
        .collect();
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in replayed {
        let hour = format!("{}:00:00Z", &l["timestamp"].as_str().unwrap()[..13]);
        let name = l["eventName"].as_str().unwrap().to_owned();
        *expected.entry((hour, name)).or_default() += 1;
    }
    assert!(expected.len() > 3, "several hours: {expected:?}");
    assert_eq!(got, expected);
}

/// Completeness: no stream has a hole, and each one's highest EventId is
/// the table's last (the store stands in for a table export).
fn check_completeness(answer: &Value, last: &BTreeMap<String, u64>) {
    let got = rows(answer, "completeness");
    assert_eq!(got.len(), last.len());
    for r in got {
        let stream = text(r, "stream_id");
        assert_eq!(text(r, "has_hole"), "False", "{r}");
        assert_eq!(text(r, "max_event_id"), last[stream].to_string(), "{r}");
        assert_eq!(text(r, "distinct_events"), last[stream].to_string(), "{r}");
    }
}

/// The completeness query reports holes: streams with fewer distinct
/// events than their highest EventId.
fn check_holes_found(answer: &Value) {
    let holed: Vec<&Value> = rows(answer, "completeness")
        .iter()
        .filter(|r| text(r, "has_hole") == "True")
        .collect();
    assert!(!holed.is_empty(), "{answer}");
    for r in holed {
        let distinct: u64 = text(r, "distinct_events").parse().unwrap();
        let max: u64 = text(r, "max_event_id").parse().unwrap();
        assert!(distinct < max, "{r}");
    }
}
