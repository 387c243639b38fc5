//! The replayer on a real archive: the in-memory store's change feed goes
//! through the archiver's real handler into a local directory, and the
//! replayer reads it back through the same sink code the CLI uses.
//!
//! Seal times come from a test clock, so objects can be sealed out of order
//! (a slow shard), twice (a retried batch) or late (after a follower listed
//! past their time), exactly as DESIGN's failure modes describe.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use evs_archive::store::{LocalDir, ObjectStore};
use evs_archive::Compression;
use evs_archiver::config::Config;
use evs_archiver::handler;
use evs_core::{EventStore, EventStoreExt, ExpectedVersion, MemoryStore, NewEvent, StreamId};
use evs_replay::{
    verify, Archive, Checkpoint, Frontier, ReplayEvent, ReplayOptions, Replayer, Step,
};
use serde_json::{json, Value};

/// A directory of its own under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "evs-replay-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Fixture<S: ObjectStore = LocalDir> {
    store: MemoryStore,
    /// The local directory, when the sink is one.
    dir: Option<PathBuf>,
    sink: Arc<S>,
    config: Config,
    /// Position in the store's change feed.
    fed: usize,
}

impl Fixture<LocalDir> {
    /// On a local directory of its own.
    fn new(name: &str) -> Self {
        let dir = scratch(name);
        Self {
            store: MemoryStore::new(),
            sink: Arc::new(LocalDir::new(dir.clone())),
            config: Config::local(dir.clone()),
            dir: Some(dir),
            fed: 0,
        }
    }
}

impl Fixture<common::MemorySink> {
    /// On an in-memory bucket with faults on demand.
    fn memory() -> Self {
        Self {
            store: MemoryStore::new(),
            sink: Arc::new(common::MemorySink::default()),
            config: Config::local("unused"),
            dir: None,
            fed: 0,
        }
    }

    /// A key that is not an archive object.
    fn stray(&self, key: &str) {
        self.sink.insert(key.to_owned(), b"hello".to_vec());
    }
}

impl Fixture<common::MemorySink> {
    /// On an in-memory bucket, the table's clock (events' timestamps) at `ms`.
    fn memory_at(ms: &Arc<AtomicI64>) -> Self {
        Self {
            store: MemoryStore::with_clock(clock_at(ms)),
            sink: Arc::new(common::MemorySink::default()),
            config: Config::local("unused"),
            dir: None,
            fed: 0,
        }
    }
}

impl<S: ObjectStore + 'static> Fixture<S> {
    /// `count` events on `stream`.
    async fn append(&self, stream: &str, count: usize) {
        for _ in 0..count {
            self.append_one(
                stream,
                json!({"big": 12345678901234567890123u128, "s": "caf\u{e9}"}),
            )
            .await;
        }
    }

    async fn append_one(&self, stream: &str, payload: Value) {
        let stream = StreamId::new(stream).unwrap();
        let version = self.store.version(&stream).await.unwrap();
        self.store
            .append(
                &stream,
                ExpectedVersion::Exact(version),
                &[NewEvent::new("Counted", payload)],
            )
            .await
            .unwrap();
    }

    /// The next `n` stream records of the feed (not yet archived).
    fn take(&mut self, n: usize) -> Vec<Value> {
        let (records, next) = self.store.changes(self.fed, n);
        self.fed = next;
        records
    }

    /// Archives `records` as one batch sealed at `sealed_at_ms`.
    async fn archive(&self, records: &[Value], sealed_at_ms: i64) -> Option<String> {
        let event = json!({ "Records": records });
        let now = move || sealed_at_ms;
        let summary = handler::handle(
            &event.to_string(),
            self.sink.as_ref(),
            &self.config,
            &now,
            None,
        )
        .await
        .unwrap();
        summary.key
    }

    fn archive_handle(&self) -> Archive {
        Archive::new(self.sink.clone(), self.config.prefix.clone())
    }

    /// What `evs read` prints for every stream, by stream.
    async fn table(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for stream in self.store.stream_ids() {
            let lines = self
                .store
                .read_all(&stream)
                .await
                .unwrap()
                .iter()
                .map(|e| serde_json::to_string(&evs_archive::event_line(e)).unwrap())
                .collect();
            out.insert(stream.to_string(), lines);
        }
        out
    }
}

impl<S: ObjectStore> Drop for Fixture<S> {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn by_stream(events: &[ReplayEvent]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        out.entry(e.stream_id.clone())
            .or_default()
            .push(e.line().to_owned());
    }
    out
}

/// 2026-01-01T00:00:00Z: every seal time in these tests is long settled
/// unless a test clock says otherwise.
const T0: i64 = 1_767_225_600_000;

fn clock_at(ms: &Arc<AtomicI64>) -> evs_core::Clock {
    let ms = Arc::clone(ms);
    Arc::new(move || ms.load(Ordering::SeqCst))
}

fn options() -> ReplayOptions {
    ReplayOptions {
        read_ahead: 3,
        page_size: 4,
        ..ReplayOptions::default()
    }
}

/// Runs a replay to its end; returns the delivered events.
async fn replay_all(replayer: &mut Replayer) -> Vec<ReplayEvent> {
    let mut out = Vec::new();
    loop {
        match replayer.next().await.unwrap() {
            Step::Object { events, .. } | Step::Backfill { events, .. } => out.extend(events),
            Step::End => return out,
            Step::Idle { .. } => panic!("not following: no idle step"),
            Step::Skipped { key, .. } => panic!("nothing is skipped by default: {key}"),
        }
    }
}

/// A messy archive: many streams, batches archived twice, a slow "shard"
/// whose objects are sealed after later events', and objects of every
/// compression (the setting may change over an archive's life).
async fn messy(fx: &mut Fixture) {
    for (i, stream) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
        fx.append(stream, 3 + i * 2).await;
    }
    let mut seal = T0;
    let mut slow = Vec::new();
    let mut batch = 0;
    loop {
        let records = fx.take(5);
        if records.is_empty() {
            break;
        }
        batch += 1;
        fx.config.compression = [Compression::Zstd, Compression::None][batch % 2];
        if batch % 3 == 0 {
            // A slow shard: archived later, under a later key.
            slow.push(records);
            continue;
        }
        seal += 1_000;
        fx.archive(&records, seal).await;
        if batch % 4 == 0 {
            // The mapping retried a batch whose PUT had landed.
            seal += 7;
            fx.archive(&records, seal).await;
        }
    }
    fx.config.compression = Compression::Gzip;
    for records in slow {
        seal += 1_000;
        fx.archive(&records, seal).await;
    }
}

#[tokio::test]
async fn replay_delivers_exactly_what_the_table_holds() {
    let mut fx = Fixture::new("exact");
    messy(&mut fx).await;
    let keys = fx.sink.list("", None, 1_000).await.unwrap();
    for extension in [".ndjson.gz", ".ndjson.zst", ".ndjson"] {
        assert!(
            keys.iter().any(|k| k.ends_with(extension)),
            "{extension}: {keys:?}"
        );
    }
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    let events = replay_all(&mut replayer).await;
    assert!(replayer.gaps().is_empty(), "{:?}", replayer.gaps());
    assert_eq!(by_stream(&events), fx.table().await);
    let stats = replayer.stats().clone();
    assert_eq!(stats.delivered, events.len() as u64);
    assert!(stats.duplicates > 0, "the retried batches were dropped");
    assert_eq!(stats.lines, stats.delivered + stats.duplicates);

    let index = verify::read_archive(fx.archive_handle(), 2, |_| {})
        .await
        .unwrap();
    let report = index.report(Some(&fx.store.last_versions()));
    assert!(report.is_complete(), "{report}");
}

#[tokio::test]
async fn a_resumed_replay_repeats_nothing_and_skips_nothing() {
    let mut fx = Fixture::new("resume");
    messy(&mut fx).await;
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let full = replay_all(&mut Replayer::new(
        fx.archive_handle(),
        options(),
        clock_at(&now),
    ))
    .await;
    for stop_after in [1, 2, 5, 9] {
        let mut first = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
        let mut out = Vec::new();
        for _ in 0..stop_after {
            match first.next().await.unwrap() {
                Step::Object { events, .. } | Step::Backfill { events, .. } => out.extend(events),
                _ => break,
            }
        }
        let json = first.checkpoint().unwrap().to_json().unwrap();
        drop(first);
        let checkpoint = Checkpoint::from_json(&json).unwrap();
        let mut second =
            Replayer::resume(fx.archive_handle(), checkpoint, options(), clock_at(&now)).unwrap();
        out.extend(replay_all(&mut second).await);
        assert_eq!(out, full, "stopped after {stop_after} steps");
    }
}

#[tokio::test]
async fn a_lost_object_is_reported_then_back_filled_from_the_table() {
    let mut fx = Fixture::new("gap");
    fx.append("s", 3).await;
    let first = fx.take(1);
    let k1 = fx.archive(&first, T0).await.unwrap();
    let rest = fx.take(10);
    fx.archive(&rest, T0 + 1_000).await.unwrap();
    std::fs::remove_file(fx.sink.key_path(&k1).unwrap()).unwrap();

    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    assert!(replay_all(&mut replayer).await.is_empty());
    let gaps = replayer.gaps();
    assert_eq!(gaps.len(), 1);
    assert_eq!(
        (gaps[0].stream_id.as_str(), gaps[0].expected, gaps[0].held),
        ("s", 1, 2)
    );

    let index = verify::read_archive(fx.archive_handle(), 2, |_| {})
        .await
        .unwrap();
    let report = index.report(Some(&fx.store.last_versions()));
    assert!(!report.is_complete());
    assert!(
        report.to_string().contains("missing: stream \"s\" event 1"),
        "{report}"
    );

    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer =
        Replayer::new(fx.archive_handle(), options(), clock_at(&now)).with_table(table);
    let events = replay_all(&mut replayer).await;
    assert!(replayer.gaps().is_empty());
    assert_eq!(by_stream(&events), fx.table().await);
    assert_eq!(replayer.stats().backfilled, 1);
}

#[tokio::test]
async fn following_never_passes_the_settled_frontier() {
    let mut fx = Fixture::new("follow");
    fx.append("a", 2).await;
    fx.append("b", 2).await;
    let frontier = Frontier::new(10_000, 1_000); // T + e = 11 s
    let follow = ReplayOptions {
        follow: true,
        frontier,
        poll_ms: 500,
        ..options()
    };
    let now = Arc::new(AtomicI64::new(T0 + 20_000));
    let b1 = fx.take(1); // a/1
    let b2 = fx.take(1); // a/2
    let b3 = fx.take(2); // b/1, b/2
    fx.archive(&b1, T0).await.unwrap(); // settled at T0 + 20 s
    fx.archive(&b3, T0 + 12_000).await.unwrap(); // not settled before T0 + 23 s
    let mut replayer = Replayer::new(fx.archive_handle(), follow.clone(), clock_at(&now));
    let mut out = Vec::new();
    let until = loop {
        match replayer.next().await.unwrap() {
            Step::Object { events, .. } => out.extend(events),
            Step::Idle { until_ms } => break until_ms,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(out.len(), 1, "only the settled object was read");
    assert!(
        until <= T0 + 20_500,
        "idle until the next poll at the latest"
    );
    // A slow invocation sealed b2 at T0 + 9 s and its PUT lands now, after
    // the follower listed: it sorts between the consumed key and b3.
    fx.archive(&b2, T0 + 9_000).await.unwrap();
    now.store(T0 + 30_000, Ordering::SeqCst);
    loop {
        match replayer.next().await.unwrap() {
            Step::Object { events, .. } => out.extend(events),
            Step::Idle { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(by_stream(&out), fx.table().await, "nothing skipped");
    let checkpoint = replayer.checkpoint().unwrap();
    assert_eq!(checkpoint.last_delivered.len(), 2);
}

#[tokio::test]
async fn a_replay_checkpoint_never_passes_the_settled_frontier() {
    let mut fx = Fixture::new("frontier");
    fx.append("a", 3).await;
    let now = Arc::new(AtomicI64::new(T0 + 100_000));
    let opts = ReplayOptions {
        frontier: Frontier::new(10_000, 1_000),
        ..options()
    };
    let b1 = fx.take(1);
    let b2 = fx.take(1);
    let b3 = fx.take(1);
    let k1 = fx.archive(&b1, T0).await.unwrap(); // settled
    fx.archive(&b3, T0 + 95_000).await.unwrap(); // young: not settled at T0 + 100 s
    let mut replayer = Replayer::new(fx.archive_handle(), opts.clone(), clock_at(&now));
    let first = replay_all(&mut replayer).await;
    assert_eq!(first.len(), 1, "a/3 waits for a/2");
    let checkpoint = replayer.checkpoint().unwrap();
    assert_eq!(checkpoint.cursor.as_deref(), Some(k1.as_str()));
    // a/2's batch was sealed before a/3's but lands only now.
    fx.archive(&b2, T0 + 94_000).await.unwrap();
    let mut resumed =
        Replayer::resume(fx.archive_handle(), checkpoint, opts, clock_at(&now)).unwrap();
    let mut all = first;
    all.extend(replay_all(&mut resumed).await);
    assert_eq!(by_stream(&all), fx.table().await);
}

#[tokio::test]
async fn since_starts_at_the_first_object_sealed_then() {
    let mut fx = Fixture::new("since");
    fx.append("a", 1).await;
    fx.append("b", 1).await;
    let b1 = fx.take(1);
    let b2 = fx.take(1);
    fx.archive(&b1, T0).await.unwrap();
    fx.archive(&b2, T0 + 60_000).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let opts = ReplayOptions {
        since_ms: Some(T0 + 60_000),
        ..options()
    };
    let events = replay_all(&mut Replayer::new(
        fx.archive_handle(),
        opts,
        clock_at(&now),
    ))
    .await;
    let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["b"]);
}

#[tokio::test]
async fn stray_keys_are_skipped_and_a_corrupt_object_is_named() {
    let mut fx = Fixture::new("stray");
    fx.append("a", 1).await;
    let b1 = fx.take(1);
    let key = fx.archive(&b1, T0).await.unwrap();
    // Dead letters and other files beside the archive are not events.
    let stray = fx.dir.clone().unwrap().join("events/2026/notes.txt");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, "hello").unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    assert_eq!(replay_all(&mut replayer).await.len(), 1);
    assert_eq!(replayer.stats().skipped_keys, 1);

    std::fs::write(fx.sink.key_path(&key).unwrap(), b"not gzip").unwrap();
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    let err = replayer.next().await.unwrap_err().to_string();
    assert!(err.contains(&key) && err.contains("decompress"), "{err}");
    let _ = fx.sink.location();
}

#[tokio::test]
async fn a_projection_can_supply_its_own_versions() {
    let mut fx = Fixture::new("versions");
    messy(&mut fx).await;
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let versions = [("a".to_owned(), 2), ("c".to_owned(), 7)];
    let mut replayer =
        Replayer::with_versions(fx.archive_handle(), options(), clock_at(&now), versions);
    let events = replay_all(&mut replayer).await;
    let mut expected = fx.table().await;
    expected.get_mut("a").unwrap().drain(..2);
    expected.get_mut("c").unwrap().drain(..7);
    expected.retain(|_, lines| !lines.is_empty());
    assert_eq!(by_stream(&events), expected);
}

// ---------------------------------------------------------------------------
// Regressions found in review: each scenario lost or misreported an event.

fn ids(events: &[ReplayEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{}/{}", e.stream_id, e.event_id))
        .collect()
}

/// Everything until the end or the first idle step.
async fn drain(replayer: &mut Replayer) -> Vec<ReplayEvent> {
    let mut out = Vec::new();
    while let Step::Object { events, .. } | Step::Backfill { events, .. } =
        replayer.next().await.unwrap()
    {
        out.extend(events);
    }
    out
}

#[tokio::test]
async fn a_stray_key_never_moves_a_follower_past_an_unsettled_object() {
    let mut fx = Fixture::memory();
    fx.append_one("a", json!(1)).await;
    fx.append_one("a", json!(2)).await;
    let (b1, b2) = (fx.take(1), fx.take(1));
    fx.archive(&b1, T0).await.unwrap();
    fx.stray("events/2026/01/01/00/notes.txt");
    let now = Arc::new(AtomicI64::new(T0 + 20_000));
    let opts = ReplayOptions {
        follow: true,
        frontier: Frontier::new(10_000, 1_000),
        ..ReplayOptions::default()
    };
    let mut replayer = Replayer::new(fx.archive_handle(), opts, clock_at(&now));
    let mut got = drain(&mut replayer).await;
    // Sealed at T0 + 15 s (after the follower listed), landing within T.
    fx.archive(&b2, T0 + 15_000).await.unwrap();
    now.store(T0 + 3_600_000, Ordering::SeqCst);
    for _ in 0..3 {
        got.extend(drain(&mut replayer).await);
    }
    assert_eq!(ids(&got), ["a/1", "a/2"]);
    assert_eq!(replayer.stats().skipped_keys, 1, "warned once");
}

#[tokio::test]
async fn a_stray_key_at_a_page_end_never_moves_a_checkpoint_past_a_late_object() {
    let t0 = T0 + 3_590_000; // 00:59:50Z
    let mut fx = Fixture::memory();
    for s in ["a", "b", "c"] {
        fx.append_one(s, json!(1)).await;
    }
    let (ba, bb, bc) = (fx.take(1), fx.take(1), fx.take(1));
    fx.archive(&ba, t0).await.unwrap();
    fx.stray("events/2026/01/01/00/notes.txt");
    let now = Arc::new(AtomicI64::new(t0 + 12_000));
    let opts = ReplayOptions {
        frontier: Frontier::new(10_000, 1_000),
        page_size: 2,
        read_ahead: 1,
        ..ReplayOptions::default()
    };
    let mut replayer = Replayer::new(fx.archive_handle(), opts.clone(), clock_at(&now));
    let mut got = Vec::new();
    if let Step::Object { events, .. } = replayer.next().await.unwrap() {
        got.extend(events); // page 1: [A, notes.txt]
    }
    fx.archive(&bc, t0 + 12_000).await.unwrap();
    fx.archive(&bb, t0 + 5_000).await.unwrap(); // sealed before C, lands after the page
    now.store(t0 + 24_000, Ordering::SeqCst);
    got.extend(drain(&mut replayer).await);
    let checkpoint = replayer.checkpoint().unwrap();
    let mut resumed =
        Replayer::resume(fx.archive_handle(), checkpoint, opts, clock_at(&now)).unwrap();
    got.extend(drain(&mut resumed).await);
    let mut got = ids(&got);
    got.sort();
    assert_eq!(got, ["a/1", "b/1", "c/1"]);
}

/// The archive of the `--since` tests, `SINCE` being the time: stream `a`
/// written before it (a/1, a/2 archived before it), then a/3 after it;
/// `b/1` written just before it and archived after it; a new stream `n`
/// written after it whose n/2 is archived before n/1 (another shard); `c`
/// with c/1 before it and c/2..c/4 after it, c/2 and c/3 never archived.
async fn since_archive() -> Fixture<common::MemorySink> {
    let written = Arc::new(AtomicI64::new(T0));
    let mut fx = Fixture::memory_at(&written);
    fx.append("a", 2).await;
    fx.append("c", 1).await;
    let old = fx.take(3);
    fx.archive(&old, T0 + 1_000).await.unwrap();
    written.store(SINCE - 1_000, Ordering::SeqCst);
    fx.append("b", 1).await;
    let b = fx.take(1);
    fx.archive(&b, SINCE + 1_000).await.unwrap();
    written.store(SINCE + 10_000, Ordering::SeqCst);
    fx.append("a", 1).await;
    fx.append("c", 3).await;
    let a3 = fx.take(1);
    let _lost = fx.take(2); // c/2, c/3
    let c4 = fx.take(1);
    fx.archive(&a3, SINCE + 11_000).await.unwrap();
    fx.archive(&c4, SINCE + 12_000).await.unwrap();
    written.store(SINCE + 20_000, Ordering::SeqCst);
    fx.append("n", 2).await;
    let (n1, n2) = (fx.take(1), fx.take(1));
    fx.archive(&n2, SINCE + 21_000).await.unwrap();
    fx.archive(&n1, SINCE + 30_000).await.unwrap();
    fx
}

/// The `--since` of [`since_archive`].
const SINCE: i64 = T0 + 3_600_000;

/// The delivered ids by stream.
fn per_stream(events: &[ReplayEvent]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events {
        out.entry(e.stream_id.clone()).or_default().push(e.event_id);
    }
    out
}

fn expect(pairs: &[(&str, &[u64])]) -> BTreeMap<String, Vec<u64>> {
    pairs
        .iter()
        .map(|(s, ids)| ((*s).to_owned(), ids.to_vec()))
        .collect()
}

#[tokio::test]
async fn since_delivers_every_event_written_at_or_after_it() {
    // Every event written at or after --since, each stream from its first
    // such event: a new stream's first event archived after its second is
    // delivered (before it); an event written before --since is not, even
    // when archived after it. Without a table, c's c/2 and c/3 (never
    // archived) cannot be known; with one, they are read from it.
    let fx = since_archive().await;
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let opts = ReplayOptions {
        since_ms: Some(SINCE),
        ..options()
    };
    let mut replayer = Replayer::new(fx.archive_handle(), opts.clone(), clock_at(&now));
    assert_eq!(
        per_stream(&replay_all(&mut replayer).await),
        expect(&[("a", &[3]), ("c", &[4]), ("n", &[1, 2])])
    );
    assert!(replayer.gaps().is_empty());
    assert_eq!(replayer.before_start(), 1, "b/1");
    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer = Replayer::new(fx.archive_handle(), opts, clock_at(&now)).with_table(table);
    assert_eq!(
        per_stream(&replay_all(&mut replayer).await),
        expect(&[("a", &[3]), ("c", &[2, 3, 4]), ("n", &[1, 2])])
    );
    assert!(replayer.gaps().is_empty());
}

#[tokio::test]
async fn since_resumed_at_every_step_loses_nothing() {
    // The same, resumed from a checkpoint (through JSON) after every step:
    // what decides each stream's start is in the checkpoint.
    let fx = since_archive().await;
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let opts = ReplayOptions {
        since_ms: Some(SINCE),
        ..options()
    };
    for table in [
        None,
        Some(Arc::new(fx.store.clone()) as Arc<dyn EventStore>),
    ] {
        let with_table = |r: Replayer| match &table {
            Some(t) => r.with_table(Arc::clone(t)),
            None => r,
        };
        let mut replayer = with_table(Replayer::new(
            fx.archive_handle(),
            opts.clone(),
            clock_at(&now),
        ));
        let mut got = Vec::new();
        loop {
            match replayer.next().await.unwrap() {
                Step::Object { events, .. } | Step::Backfill { events, .. } => got.extend(events),
                Step::End => break,
                other => panic!("unexpected {other:?}"),
            }
            let json = replayer.checkpoint().unwrap().to_json().unwrap();
            let checkpoint = Checkpoint::from_json(&json).unwrap();
            replayer = with_table(
                Replayer::resume(fx.archive_handle(), checkpoint, options(), clock_at(&now))
                    .unwrap(),
            );
        }
        let c: &[u64] = if table.is_some() { &[2, 3, 4] } else { &[4] };
        assert_eq!(
            per_stream(&got),
            expect(&[("a", &[3]), ("c", c), ("n", &[1, 2])]),
            "table: {}",
            table.is_some()
        );
    }
}

#[tokio::test]
async fn since_a_stream_found_before_it_then_after_a_hole_is_not_held_for_ever() {
    // p/1 and p/2 written before --since, p/3 after. p/2's object was sealed
    // long before the time (not read), p/1's after it (a slow shard): the
    // replay passes over p/1, then finds p/3, and whether p/2 was written
    // before the time is unknown. Without a table p is taken to start at
    // p/3; with one, p/2 is read from it. Either way p/3 is delivered, not
    // held behind a hole nothing closes; resumed at every step too.
    let written = Arc::new(AtomicI64::new(T0));
    let mut fx = Fixture::memory_at(&written);
    fx.append("p", 2).await;
    let (p1, p2) = (fx.take(1), fx.take(1));
    fx.archive(&p2, T0 + 1_000).await.unwrap();
    fx.archive(&p1, SINCE + 1_000).await.unwrap();
    written.store(SINCE + 10_000, Ordering::SeqCst);
    fx.append("p", 1).await;
    let p3 = fx.take(1);
    fx.archive(&p3, SINCE + 11_000).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let opts = ReplayOptions {
        since_ms: Some(SINCE),
        ..options()
    };
    for table in [
        None,
        Some(Arc::new(fx.store.clone()) as Arc<dyn EventStore>),
    ] {
        let with_table = |r: Replayer| match &table {
            Some(t) => r.with_table(Arc::clone(t)),
            None => r,
        };
        let mut replayer = with_table(Replayer::new(
            fx.archive_handle(),
            opts.clone(),
            clock_at(&now),
        ));
        let mut got = Vec::new();
        let mut assumed = 0;
        loop {
            match replayer.next().await.unwrap() {
                Step::Object { events, .. } | Step::Backfill { events, .. } => got.extend(events),
                Step::End => break,
                other => panic!("unexpected {other:?}"),
            }
            assumed += replayer.stats().assumed_starts;
            let json = replayer.checkpoint().unwrap().to_json().unwrap();
            let checkpoint = Checkpoint::from_json(&json).unwrap();
            replayer = with_table(
                Replayer::resume(fx.archive_handle(), checkpoint, options(), clock_at(&now))
                    .unwrap(),
            );
        }
        assert_eq!(per_stream(&got), expect(&[("p", &[3])]));
        assert!(replayer.gaps().is_empty());
        assert_eq!(assumed, u64::from(table.is_none()));
    }
}

#[tokio::test]
async fn since_without_a_table_stops_when_an_assumed_start_turns_out_wrong() {
    // n/2 is found, then for longer than the gap bound (by the archive's
    // clock) nothing earlier of n: without a table, n is taken to start at
    // n/2. When n/1, written after --since, turns up after all, the replay
    // stops (resumed from a checkpoint too) rather than drop it; with the
    // table, n/1 is read from it in time.
    let written = Arc::new(AtomicI64::new(SINCE + 20_000));
    let mut fx = Fixture::memory_at(&written);
    fx.append("n", 2).await;
    fx.append("x", 1).await;
    let (n1, n2, x1) = (fx.take(1), fx.take(1), fx.take(1));
    fx.archive(&n2, SINCE + 21_000).await.unwrap();
    fx.archive(&x1, SINCE + 50_000).await.unwrap();
    fx.archive(&n1, SINCE + 71_000).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let opts = ReplayOptions {
        since_ms: Some(SINCE),
        gap_bound_ms: 10_000,
        ..options()
    };
    let mut replayer = Replayer::new(fx.archive_handle(), opts.clone(), clock_at(&now));
    let mut got = Vec::new();
    let mut checkpoint = None;
    let err = loop {
        match replayer.next().await {
            Ok(Step::Object { events, .. } | Step::Backfill { events, .. }) => {
                got.extend(events);
                checkpoint = Some(replayer.checkpoint().unwrap());
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("\"n\"") && text.contains("table"), "{text}");
    assert_eq!(per_stream(&got), expect(&[("n", &[2]), ("x", &[1])]));
    assert_eq!(replayer.stats().assumed_starts, 1);

    // Resumed from the checkpoint before n/1's object: the same stop.
    let checkpoint = checkpoint.unwrap();
    let since = checkpoint.since.as_ref().unwrap();
    assert_eq!(since.assumed_starts.get("n"), Some(&2));
    assert_eq!(checkpoint.format, evs_replay::SINCE_FORMAT);
    let json = checkpoint.to_json().unwrap();
    let mut resumed = Replayer::resume(
        fx.archive_handle(),
        Checkpoint::from_json(&json).unwrap(),
        options(),
        clock_at(&now),
    )
    .unwrap();
    let (_, again) = until_error(&mut resumed).await;
    assert_eq!(again, text);

    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer = Replayer::new(fx.archive_handle(), opts, clock_at(&now)).with_table(table);
    assert_eq!(
        per_stream(&replay_all(&mut replayer).await),
        expect(&[("n", &[1, 2]), ("x", &[1])])
    );
    assert_eq!(replayer.stats().assumed_starts, 0);
}

#[tokio::test]
async fn since_starts_each_stream_at_its_first_event_after_it() {
    let written = Arc::new(AtomicI64::new(T0));
    let mut fx = Fixture::memory_at(&written);
    for _ in 0..2 {
        fx.append_one("a", json!(1)).await;
    }
    written.store(T0 + 60_000, Ordering::SeqCst);
    fx.append_one("a", json!(1)).await;
    let (old, new) = (fx.take(2), fx.take(1));
    fx.archive(&old, T0).await.unwrap();
    fx.archive(&new, T0 + 60_000).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let opts = ReplayOptions {
        since_ms: Some(T0 + 60_000),
        ..ReplayOptions::default()
    };
    let mut replayer = Replayer::new(fx.archive_handle(), opts.clone(), clock_at(&now));
    assert_eq!(ids(&drain(&mut replayer).await), ["a/3"]);
    assert!(replayer.gaps().is_empty());
    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer = Replayer::new(fx.archive_handle(), opts, clock_at(&now)).with_table(table);
    assert_eq!(
        ids(&drain(&mut replayer).await),
        ["a/3"],
        "no back-fill before --since"
    );
}

/// The events a replayer delivers before it fails, and its error.
async fn until_error(replayer: &mut Replayer) -> (Vec<ReplayEvent>, String) {
    let mut got = Vec::new();
    loop {
        match replayer.next().await {
            Ok(Step::Object { events, .. }) => got.extend(events),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => return (got, e.to_string()),
        }
    }
}

#[tokio::test]
async fn an_object_of_a_kind_this_version_cannot_read_stops_the_replay() {
    // A newer archiver's object (an extension of the events family this
    // version does not know) must not be skipped as a stray key: its events
    // would be lost without a trace.
    let mut fx = Fixture::memory();
    fx.append("a", 2).await;
    let b1 = fx.take(1);
    let k1 = fx.archive(&b1, T0).await.unwrap();
    let b2 = fx.take(1);
    let k2 = fx.archive(&b2, T0 + 1_000).await.unwrap();
    let newer = k2.replace(".ndjson.gz", ".ndjson.br");
    fx.sink.rename(&k2, newer.clone());
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    let (got, err) = until_error(&mut replayer).await;
    assert!(err.contains(&newer) && err.contains("upgrade"), "{err}");
    assert!(
        got.len() <= 1,
        "nothing past the unreadable object: {got:?}"
    );
    let index = verify::read_archive(fx.archive_handle(), 2, |_| {}).await;
    assert!(index.is_err(), "verify refuses it too");
    assert!(k1 < newer);
}

/// Three objects of stream `a`, one event each; returns the second's key.
async fn three_objects(fx: &mut Fixture<common::MemorySink>) -> String {
    for _ in 0..3 {
        fx.append_one("a", json!(1)).await;
    }
    let b1 = fx.take(1);
    fx.archive(&b1, T0).await.unwrap();
    let b2 = fx.take(1);
    let k2 = fx.archive(&b2, T0 + 1_000).await.unwrap();
    let b3 = fx.take(1);
    fx.archive(&b3, T0 + 2_000).await.unwrap();
    k2
}

#[tokio::test]
async fn after_a_transient_error_the_replayer_goes_on_without_a_loss() {
    let mut fx = Fixture::memory();
    let k2 = three_objects(&mut fx).await;
    fx.sink.fail_once.lock().unwrap().insert(k2.clone());
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    let (mut got, err) = until_error(&mut replayer).await;
    assert!(err.contains("503") && err.contains(&k2), "{err}");
    assert_eq!(ids(&got), ["a/1"], "what came before the failed object");
    // The same replayer, asked again (as a follower retrying an outage
    // does): the failed object is read again, nothing is lost or repeated.
    got.extend(drain(&mut replayer).await);
    assert_eq!(ids(&got), ["a/1", "a/2", "a/3"]);
    assert!(replayer.checkpoint().is_ok());
}

#[tokio::test]
async fn after_an_error_that_does_not_heal_the_replayer_refuses_to_go_on() {
    let mut fx = Fixture::memory();
    let k2 = three_objects(&mut fx).await;
    fx.sink.fail_always.lock().unwrap().insert(k2.clone());
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    let saved = replayer.checkpoint().unwrap();
    let (got, err) = until_error(&mut replayer).await;
    assert!(err.contains("AccessDenied"), "{err}");
    assert_eq!(ids(&got), ["a/1"], "what came before the failed object");
    let again = replayer.next().await.unwrap_err().to_string();
    assert!(
        again.contains("resume from the last saved checkpoint"),
        "{again}"
    );
    assert!(replayer.checkpoint().is_err());
    // From the last checkpoint saved, once the object can be read, nothing
    // is lost.
    fx.sink.fail_always.lock().unwrap().clear();
    let mut resumed =
        Replayer::resume(fx.archive_handle(), saved, options(), clock_at(&now)).unwrap();
    assert_eq!(ids(&drain(&mut resumed).await), ["a/1", "a/2", "a/3"]);
}

#[tokio::test]
async fn a_next_dropped_while_it_fetches_loses_nothing() {
    let mut fx = Fixture::memory();
    for _ in 0..3 {
        fx.append_one("a", json!(1)).await;
    }
    fx.append_one("b", json!(1)).await;
    let b1 = fx.take(1);
    fx.archive(&b1, T0).await.unwrap();
    let b2 = fx.take(1);
    let k2 = fx.archive(&b2, T0 + 1_000).await.unwrap();
    let b3 = fx.take(2);
    fx.archive(&b3, T0 + 2_000).await.unwrap();
    fx.sink.slow.lock().unwrap().insert(k2);
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let opts = ReplayOptions {
        read_ahead: 1,
        ..ReplayOptions::default()
    };
    let mut replayer = Replayer::new(fx.archive_handle(), opts, clock_at(&now));
    let mut got = Vec::new();
    let mut timeouts = 0;
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(50), replayer.next()).await {
            Err(_) => timeouts += 1,
            Ok(Ok(Step::Object { events, .. })) => got.extend(events),
            Ok(Ok(Step::End)) => break,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(timeouts > 0, "the slow fetch was interrupted");
    assert_eq!(ids(&got), ["a/1", "a/2", "a/3", "b/1"]);
}

#[tokio::test]
async fn a_follower_does_not_back_fill_what_the_next_object_brings() {
    let mut fx = Fixture::memory();
    fx.append_one("a", json!(1)).await;
    fx.append_one("a", json!(2)).await;
    let (b1, b2) = (fx.take(1), fx.take(1));
    fx.archive(&b2, T0).await.unwrap();
    fx.archive(&b1, T0 + 1).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 20_000));
    let opts = ReplayOptions {
        follow: true,
        frontier: Frontier::new(10_000, 1_000),
        gap_bound_ms: 11_000,
        ..ReplayOptions::default()
    };
    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer = Replayer::new(fx.archive_handle(), opts, clock_at(&now)).with_table(table);
    assert_eq!(ids(&drain(&mut replayer).await), ["a/1", "a/2"]);
    assert_eq!(replayer.stats().backfilled, 0);
}

#[tokio::test]
async fn a_full_buffer_is_an_error_without_a_table_and_a_back_fill_with_one() {
    let mut fx = Fixture::memory();
    for _ in 0..3 {
        fx.append_one("a", json!(1)).await;
    }
    fx.append_one("0b", json!(1)).await;
    let _lost = fx.take(1); // a/1 never archived
    let rest = fx.take(10);
    fx.archive(&rest, T0).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut opts = options();
    opts.sequencer.max_held_per_stream = 1;
    let mut replayer = Replayer::new(fx.archive_handle(), opts.clone(), clock_at(&now));
    let err = replayer.next().await.unwrap_err().to_string();
    assert!(err.contains("back-fill"), "{err}");
    assert!(
        replayer.checkpoint().is_err(),
        "no checkpoint of a half-consumed object"
    );

    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer = Replayer::new(fx.archive_handle(), opts, clock_at(&now)).with_table(table);
    let got = drain(&mut replayer).await;
    let mut sorted = ids(&got);
    sorted.sort();
    assert_eq!(sorted, ["0b/1", "a/1", "a/2", "a/3"]);
    assert_eq!(replayer.stats().delivered, got.len() as u64);
    assert_eq!(replayer.stats().backfilled, 1);
}

#[tokio::test]
async fn string_payloads_replay_exactly_as_the_table_reads_them() {
    let mut fx = Fixture::new("strings");
    let stream = StreamId::new("s").unwrap();
    for (v, payload) in [
        json!("{\"a\":1}"),
        json!("{\"a\": 1,  \"b\": [true]}"),
        json!("not json {"),
        json!("42"),
    ]
    .into_iter()
    .enumerate()
    {
        fx.store
            .append(
                &stream,
                ExpectedVersion::Exact(v as u64),
                &[NewEvent::new("S", payload)],
            )
            .await
            .unwrap();
    }
    let records = fx.take(10);
    fx.archive(&records, T0).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let events = replay_all(&mut Replayer::new(
        fx.archive_handle(),
        options(),
        clock_at(&now),
    ))
    .await;
    assert_eq!(by_stream(&events), fx.table().await);
}

#[tokio::test]
async fn a_corrupt_object_stops_the_replay_unless_skipped_and_its_gap_is_named_or_filled() {
    let mut fx = Fixture::new("quarantine");
    fx.append("a", 3).await;
    fx.append("b", 1).await;
    let b1 = fx.take(1); // a/1
    fx.archive(&b1, T0).await.unwrap();
    let b2 = fx.take(1); // a/2
    let bad = fx.archive(&b2, T0 + 1_000).await.unwrap();
    let b3 = fx.take(2); // a/3, b/1
    fx.archive(&b3, T0 + 2_000).await.unwrap();
    std::fs::write(fx.sink.key_path(&bad).unwrap(), b"not gzip").unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));

    // The default: the replay stops, naming the object.
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    let (got, err) = until_error(&mut replayer).await;
    assert!(err.contains(&bad), "{err}");
    assert_eq!(ids(&got), ["a/1"]);

    // Skipping unreadable objects: the skip is a step of its own, and the
    // stream it leaves with a gap is named at the end.
    let skipping = ReplayOptions {
        skip_unreadable: true,
        ..options()
    };
    let mut replayer = Replayer::new(fx.archive_handle(), skipping.clone(), clock_at(&now));
    let mut got = Vec::new();
    let mut skipped = Vec::new();
    loop {
        match replayer.next().await.unwrap() {
            Step::Object { events, .. } | Step::Backfill { events, .. } => got.extend(events),
            Step::Skipped { key, reason } => skipped.push((key, reason)),
            Step::End => break,
            Step::Idle { .. } => panic!("not following"),
        }
    }
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, bad);
    assert!(skipped[0].1.contains("decompress"), "{skipped:?}");
    assert_eq!(ids(&got), ["a/1", "b/1"], "a/3 waits for a/2");
    assert_eq!(replayer.stats().skipped_objects, 1);
    let gaps = replayer.gaps();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].stream_id, "a");

    // With the table, the skipped object's events are read from it.
    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer =
        Replayer::new(fx.archive_handle(), skipping, clock_at(&now)).with_table(table.clone());
    let mut got = Vec::new();
    loop {
        match replayer.next().await.unwrap() {
            Step::Object { events, .. } | Step::Backfill { events, .. } => got.extend(events),
            Step::Skipped { .. } => {}
            Step::End => break,
            Step::Idle { .. } => panic!("not following"),
        }
    }
    let mut sorted = ids(&got);
    sorted.sort();
    assert_eq!(sorted, ["a/1", "a/2", "a/3", "b/1"]);
    assert!(replayer.gaps().is_empty());

    // A key named to be skipped is skipped even when it can be read.
    let b4 = {
        fx.append("b", 1).await;
        fx.take(1)
    };
    let readable = fx.archive(&b4, T0 + 3_000).await.unwrap();
    let named = ReplayOptions {
        skip_keys: [bad.clone(), readable.clone()].into_iter().collect(),
        ..options()
    };
    let mut replayer = Replayer::new(fx.archive_handle(), named, clock_at(&now)).with_table(table);
    let mut skipped = Vec::new();
    let mut got = Vec::new();
    loop {
        match replayer.next().await.unwrap() {
            Step::Object { events, .. } | Step::Backfill { events, .. } => got.extend(events),
            Step::Skipped { key, .. } => skipped.push(key),
            Step::End => break,
            Step::Idle { .. } => panic!("not following"),
        }
    }
    assert_eq!(skipped, [bad, readable]);
    let mut sorted = ids(&got);
    sorted.sort();
    // a/2 is back-filled (a/3 reveals the gap); b/2, the last event of
    // its stream, leaves no trace in the archive: nothing can tell it is
    // missing but a comparison with the table (`evs verify --table`).
    assert_eq!(sorted, ["a/1", "a/2", "a/3", "b/1"]);
    assert!(replayer.gaps().is_empty());
}

/// The table, whose reads fail with a transient error (an outage,
/// throttling) at seeded random moments, never more than `max_in_a_row`
/// times in a row.
#[derive(Debug)]
struct FlakyTable {
    inner: MemoryStore,
    rng: std::sync::Mutex<fastrand::Rng>,
    in_a_row: std::sync::atomic::AtomicUsize,
    max_in_a_row: usize,
    /// Reads that failed.
    failed: std::sync::atomic::AtomicUsize,
    /// Reads take this long (a caller may give up waiting).
    latency: std::time::Duration,
}

#[async_trait::async_trait]
impl EventStore for FlakyTable {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> evs_core::Result<evs_core::AppendOutcome> {
        self.inner.append(stream, expected, events).await
    }

    async fn read(
        &self,
        stream: &StreamId,
        request: evs_core::ReadRequest,
    ) -> evs_core::Result<Vec<evs_core::RecordedEvent>> {
        let fail = self.rng.lock().unwrap().bool()
            && self.in_a_row.load(Ordering::SeqCst) < self.max_in_a_row;
        if fail {
            self.in_a_row.fetch_add(1, Ordering::SeqCst);
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(evs_core::Error::Backend {
                message: "DynamoDB Query: 503 ServiceUnavailable".into(),
                transient: true,
                source: None,
            });
        }
        self.in_a_row.store(0, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        self.inner.read(stream, request).await
    }
}

#[tokio::test]
async fn a_table_outage_during_a_back_fill_is_retried_in_place() {
    // Streams with events that never reached the archive, in objects whose
    // streams' hold-back buffers fill (a back-fill in the middle of an
    // object) or that are still missing at the end; every table read may
    // fail transiently, and some calls of next() are dropped while they
    // wait for a read. Calling next() again after each failure delivers
    // every event exactly once, in order: nothing lost, repeated or
    // reordered, and the replayer is never poisoned.
    for seed in 0..60u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut fx = Fixture::memory();
        for s in 0..1 + rng.usize(..4) {
            fx.append(&format!("s{s}"), 1 + rng.usize(..8)).await;
        }
        // The feed stream by stream, in batches of random size, some lost.
        // A stream's last event archived is the last one anything can
        // show missing before it.
        let mut archived: BTreeMap<String, u64> = BTreeMap::new();
        let mut seal = T0;
        loop {
            let records = fx.take(1 + rng.usize(..4));
            if records.is_empty() {
                break;
            }
            if rng.u8(..100) < 25 {
                continue; // never archived
            }
            for r in &records {
                let image = &r["dynamodb"]["NewImage"];
                let stream = image["StreamId"]["S"].as_str().unwrap().to_owned();
                let id: u64 = image["EventId"]["N"].as_str().unwrap().parse().unwrap();
                let last = archived.entry(stream).or_insert(0);
                *last = (*last).max(id);
            }
            seal += 1_000;
            fx.archive(&records, seal).await;
        }
        let table = Arc::new(FlakyTable {
            inner: fx.store.clone(),
            rng: std::sync::Mutex::new(fastrand::Rng::with_seed(seed ^ 0x5eed)),
            in_a_row: Default::default(),
            max_in_a_row: 1 + rng.usize(..4),
            failed: Default::default(),
            latency: std::time::Duration::from_millis(rng.u64(..3)),
        });
        let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
        let mut opts = options();
        opts.sequencer.max_held_per_stream = 1 + rng.usize(..2);
        let mut replayer = Replayer::new(fx.archive_handle(), opts, clock_at(&now))
            .with_table(table.clone() as Arc<dyn EventStore>);
        let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let (mut errors, mut dropped) = (0, 0);
        loop {
            let step = if rng.bool() {
                let wait = std::time::Duration::from_millis(rng.u64(..3));
                match tokio::time::timeout(wait, replayer.next()).await {
                    Ok(step) => step,
                    Err(_) => {
                        dropped += 1;
                        assert!(dropped < 10_000, "seed {seed}: no progress");
                        continue;
                    }
                }
            } else {
                replayer.next().await
            };
            match step {
                Ok(Step::Object { events, .. } | Step::Backfill { events, .. }) => {
                    for e in events {
                        got.entry(e.stream_id).or_default().push(e.event_id);
                    }
                    assert!(replayer.checkpoint().is_ok(), "seed {seed}");
                }
                Ok(Step::End) => break,
                Ok(other) => panic!("seed {seed}: unexpected {other:?}"),
                Err(e) => {
                    assert!(e.is_transient(), "seed {seed}: {e}");
                    if let Err(refused) = replayer.checkpoint() {
                        assert!(
                            matches!(refused, evs_replay::ReplayError::HalfConsumed { .. }),
                            "seed {seed}: {refused}"
                        );
                    }
                    errors += 1;
                    assert!(errors < 1_000, "seed {seed}: no progress");
                }
            }
        }
        let want: BTreeMap<String, Vec<u64>> = archived
            .iter()
            .map(|(s, &n)| (s.clone(), (1..=n).collect()))
            .collect();
        assert_eq!(got, want, "seed {seed}");
        assert!(errors <= table.failed.load(Ordering::SeqCst), "seed {seed}");
    }
}

/// The first stream name `prefix-<n>` in partition `index` of `count`.
fn stream_in(prefix: &str, index: u64, count: u64) -> String {
    let partition = evs_replay::Partition::new(index, count).unwrap();
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|s| partition.contains(s))
        .unwrap()
}

#[tokio::test]
async fn another_partitions_gap_neither_stops_nor_delays_a_partition() {
    // Stream `mine` is in partition 0/2, `theirs` in 1/2; theirs lost its
    // first event and holds more than its buffer takes. Replaying 0/2 reads
    // only mine: no full buffer, no gap, no back-fill, and a checkpoint of
    // mine alone.
    let mut fx = Fixture::memory();
    let (mine, theirs) = (stream_in("mine", 0, 2), stream_in("theirs", 1, 2));
    fx.append(&theirs, 4).await;
    fx.append(&mine, 3).await;
    let _lost = fx.take(1); // theirs/1
    let rest = fx.take(10);
    fx.archive(&rest, T0).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut opts = options();
    opts.sequencer.max_held_per_stream = 1;
    opts.partition = evs_replay::Partition::new(0, 2).unwrap();
    let want = [
        format!("{mine}/1"),
        format!("{mine}/2"),
        format!("{mine}/3"),
    ];

    let mut replayer = Replayer::new(fx.archive_handle(), opts.clone(), clock_at(&now));
    assert_eq!(ids(&replay_all(&mut replayer).await), want);
    assert!(replayer.gaps().is_empty());
    assert_eq!(replayer.stats().other_partitions, 3);
    let checkpoint = replayer.checkpoint().unwrap();
    assert_eq!(
        checkpoint.last_delivered.keys().collect::<Vec<_>>(),
        [&mine]
    );
    assert!(checkpoint.held.is_empty());
    assert_eq!(checkpoint.partition.as_deref(), Some("0/2"));
    assert_eq!(checkpoint.format, evs_replay::PARTITIONED_FORMAT);

    // Following, with a table: theirs is never back-filled.
    let follow = ReplayOptions {
        follow: true,
        frontier: Frontier::new(10_000, 1_000),
        gap_bound_ms: 0,
        ..opts.clone()
    };
    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer = Replayer::new(fx.archive_handle(), follow, clock_at(&now)).with_table(table);
    assert_eq!(ids(&drain(&mut replayer).await), want);
    assert_eq!(replayer.stats().backfilled, 0);
    assert!(replayer.gaps().is_empty());

    // Resumed: only that partition's checkpoint, and only for it.
    let json = checkpoint.to_json().unwrap();
    let other = ReplayOptions {
        partition: evs_replay::Partition::new(1, 2).unwrap(),
        ..opts.clone()
    };
    let refused = Replayer::resume(
        fx.archive_handle(),
        Checkpoint::from_json(&json).unwrap(),
        other,
        clock_at(&now),
    );
    assert!(refused.is_err(), "another partition's checkpoint");
    let refused = Replayer::resume(
        fx.archive_handle(),
        Checkpoint::from_json(&json).unwrap(),
        options(),
        clock_at(&now),
    );
    assert!(
        refused.is_err(),
        "a partition's checkpoint for every stream"
    );
    fx.append(&mine, 1).await;
    fx.append(&theirs, 1).await;
    let more = fx.take(10);
    fx.archive(&more, T0 + 1_000).await.unwrap();
    let mut resumed = Replayer::resume(
        fx.archive_handle(),
        Checkpoint::from_json(&json).unwrap(),
        opts,
        clock_at(&now),
    )
    .unwrap();
    assert_eq!(ids(&replay_all(&mut resumed).await), [format!("{mine}/4")]);
}

#[tokio::test]
async fn an_older_partition_checkpoint_with_every_stream_resumes_only_its_own() {
    // A partition's checkpoint written when partitions only filtered the
    // output: it holds every stream, held events of other partitions too.
    let mut fx = Fixture::memory();
    let (mine, theirs) = (stream_in("mine", 0, 2), stream_in("theirs", 1, 2));
    fx.append(&theirs, 3).await;
    fx.append(&mine, 2).await;
    let _lost = fx.take(1); // theirs/1
    let rest = fx.take(10);
    fx.archive(&rest, T0).await.unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let mut replayer = Replayer::new(fx.archive_handle(), options(), clock_at(&now));
    replay_all(&mut replayer).await;
    let old = replayer.checkpoint().unwrap().for_partition("0/2".into());
    assert_eq!(old.held.len(), 2, "theirs/2 and theirs/3 held");
    let opts = ReplayOptions {
        partition: evs_replay::Partition::new(0, 2).unwrap(),
        ..options()
    };
    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut resumed = Replayer::resume(fx.archive_handle(), old, opts, clock_at(&now))
        .unwrap()
        .with_table(table);
    assert!(resumed.gaps().is_empty(), "{:?}", resumed.gaps());
    assert!(replay_all(&mut resumed).await.is_empty());
    assert_eq!(resumed.stats().backfilled, 0);
    let checkpoint = resumed.checkpoint().unwrap();
    assert_eq!(
        checkpoint.last_delivered.keys().collect::<Vec<_>>(),
        [&mine]
    );
    assert!(checkpoint.held.is_empty());
}

#[tokio::test]
async fn a_since_checkpoint_of_every_stream_resumes_one_partition() {
    // A replay from a time of every stream assumed where two streams start
    // and passed over a third's last event; one partition resumes from its
    // checkpoint, keeping only its own streams' entries.
    let fx = Fixture::memory();
    let (mine, theirs) = (stream_in("mine", 0, 2), stream_in("theirs", 1, 2));
    let passed = stream_in("passed", 1, 2);
    let json = json!({
        "format": evs_replay::PASSED_OVER_FORMAT,
        "since": {
            "atMs": SINCE,
            "assumedStarts": {&mine: 3, &theirs: 3},
            "passedOver": [&passed],
        },
        "cursor": null,
        "lastDelivered": {&mine: 4, &theirs: 3, &passed: 2},
        "held": [],
    });
    let checkpoint = Checkpoint::from_json(&json.to_string()).unwrap();
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let opts = ReplayOptions {
        partition: evs_replay::Partition::new(0, 2).unwrap(),
        ..options()
    };
    let resumed = Replayer::resume(fx.archive_handle(), checkpoint, opts, clock_at(&now)).unwrap();
    let checkpoint = resumed.checkpoint().unwrap();
    let since = checkpoint.since.unwrap();
    assert_eq!(since.assumed_starts.keys().collect::<Vec<_>>(), [&mine]);
    assert!(since.passed_over.is_empty());
    assert_eq!(
        checkpoint.last_delivered.keys().collect::<Vec<_>>(),
        [&mine]
    );
}

#[tokio::test]
async fn a_back_fill_that_reveals_the_next_hole_fills_it_too() {
    // a/2 and a/4 never reached the archive: filling a/2 releases a/3 and
    // leaves a/4 missing, a hole of its own, also read from the table.
    let mut fx = Fixture::memory();
    fx.append("a", 5).await;
    for n in 1..=5 {
        let record = fx.take(1);
        if n % 2 == 1 {
            fx.archive(&record, T0 + n * 1_000).await.unwrap();
        }
    }
    let now = Arc::new(AtomicI64::new(T0 + 86_400_000));
    let table: Arc<dyn EventStore> = Arc::new(fx.store.clone());
    let mut replayer =
        Replayer::new(fx.archive_handle(), options(), clock_at(&now)).with_table(table);
    assert_eq!(
        per_stream(&replay_all(&mut replayer).await),
        expect(&[("a", &[1, 2, 3, 4, 5])])
    );
    assert!(replayer.gaps().is_empty());
}
