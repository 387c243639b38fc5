//! The pump on the emulator: a real table's DynamoDB stream, read through the
//! SDK, archived into S3 and into a local directory, checkpointed.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use evs_archive::store::{LocalDir, ObjectStore, S3Store};
use evs_archive::{decode_events, Compression};
use evs_archiver::config::{Config, Location};
use evs_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use evs_dynamodb::DynamoStore;
use evs_projection::RowKey;
use evs_pump::{self as pump, BatchReport, DynamoDbSource, Options, PumpSummary, Stop};
use evs_testkit::{unique_name, Moto};
use serde_json::json;

fn options() -> Options {
    Options {
        batch_size: 4,
        once: true,
        write_timeout: Duration::from_secs(30),
        backoff: Duration::from_millis(50),
        ..Options::default()
    }
}

/// Every archived event as (stream, event id) → how many times it was archived.
async fn archived(sink: &dyn ObjectStore) -> BTreeMap<(String, u64), usize> {
    let mut out = BTreeMap::new();
    for key in sink.list("events/", None, 100_000).await.unwrap() {
        let bytes = sink.get(&key).await.unwrap();
        for e in decode_events(&bytes, Compression::Gzip).unwrap() {
            *out.entry((e.event.stream_id.as_str().to_owned(), e.event.event_id))
                .or_insert(0) += 1;
        }
    }
    out
}

async fn append(store: &DynamoStore, stream: &str, names: &[&str]) {
    let events: Vec<NewEvent> = names
        .iter()
        .map(|n| {
            NewEvent::new(
                *n,
                json!({ "name": n, "big": 12345678901234567890123_u128 }),
            )
        })
        .collect();
    store
        .append(
            &StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            &events,
        )
        .await
        .unwrap();
}

async fn pump_once(
    moto: &Moto,
    arn: &str,
    checkpoint: &Path,
    sink: &dyn ObjectStore,
    config: &Config,
) -> PumpSummary {
    let client = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
    let mut source = DynamoDbSource::open(client, arn, Some(checkpoint.to_path_buf())).unwrap();
    let mut reports: Vec<BatchReport> = Vec::new();
    let summary = pump::run(
        &mut source,
        sink,
        config,
        &options(),
        Stop::never(),
        &mut |r: &BatchReport| reports.push(r.clone()),
    )
    .await
    .unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(reports.len(), summary.batches);
    summary
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(unique_name("evs-pump"))
}

fn expected(streams: &[(&str, u64)]) -> BTreeMap<(String, u64), usize> {
    streams
        .iter()
        .flat_map(|(s, n)| (1..=*n).map(move |i| ((s.to_string(), i), 1)))
        .collect()
}

#[tokio::test]
async fn pump_archives_the_stream_once_and_resumes_from_its_checkpoint() {
    let Some(moto) = Moto::shared() else { return };
    let store = DynamoStore::new(moto.dynamodb().await, unique_name("pump"));
    store.create_table().await.unwrap();
    let arn = store
        .stream_arn()
        .await
        .unwrap()
        .expect("the table has a stream");

    // Several streams; single appends and multi-event transactions.
    append(&store, "order-1", &["Opened"]).await;
    append(&store, "order-2", &["Opened", "Paid", "Shipped"]).await;
    append(&store, "order-1", &["Paid"]).await;
    append(
        &store,
        "cart-9",
        &["Added", "Added", "Removed", "Added", "Paid"],
    )
    .await;
    let first = expected(&[("order-1", 2), ("order-2", 3), ("cart-9", 5)]);

    // Into S3.
    let s3 = evs_archive::store::s3::client_for(&moto.sdk_config().await);
    let bucket = unique_name("pump");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let s3_sink = S3Store::new(s3, &bucket);
    let mut s3_config = Config::local("unused");
    s3_config.location = Location::S3 {
        bucket: bucket.clone(),
    };
    // Into a local directory, with its own checkpoint.
    let dir = temp_dir();
    let local = LocalDir::new(dir.join("archive"));
    let local_config = Config::local(dir.join("archive"));
    let s3_checkpoint = dir.join("s3-checkpoint.json");
    let local_checkpoint = dir.join("local-checkpoint.json");

    for (sink, config, cp) in [
        (&s3_sink as &dyn ObjectStore, &s3_config, &s3_checkpoint),
        (&local as &dyn ObjectStore, &local_config, &local_checkpoint),
    ] {
        let summary = pump_once(moto, &arn, cp, sink, config).await;
        assert_eq!(summary.records, 10, "{}", sink.location());
        assert_eq!(summary.archived, 10);
        assert_eq!(summary.batches, 3); // 4 + 4 + 2 records
        assert!(!summary.stopped);
        assert_eq!(archived(sink).await, first, "{}", sink.location());

        // The checkpoint names the stream and the last record of its shard.
        let text = std::fs::read_to_string(cp).unwrap();
        let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(saved["streamArn"], json!(arn));
        let shards = saved["shards"].as_object().unwrap();
        assert_eq!(shards.len(), 1, "moto has a single shard: {text}");

        // Again from the checkpoint: nothing new, nothing written.
        let keys_before = sink.list("events/", None, 1000).await.unwrap();
        let again = pump_once(moto, &arn, cp, sink, config).await;
        assert_eq!(again, PumpSummary::default());
        assert_eq!(sink.list("events/", None, 1000).await.unwrap(), keys_before);
    }

    // More events: a resumed pump archives only them.
    append(&store, "order-2", &["Delivered"]).await;
    append(&store, "order-3", &["Opened", "Cancelled"]).await;
    let mut all = first.clone();
    all.extend(expected(&[("order-2", 4), ("order-3", 2)]));
    for (sink, config, cp) in [
        (&s3_sink as &dyn ObjectStore, &s3_config, &s3_checkpoint),
        (&local as &dyn ObjectStore, &local_config, &local_checkpoint),
    ] {
        let summary = pump_once(moto, &arn, cp, sink, config).await;
        assert_eq!((summary.records, summary.batches), (3, 1));
        assert_eq!(archived(sink).await, all, "{}", sink.location());
    }

    // A checkpoint of this stream is refused for another table's stream.
    let other = DynamoStore::new(moto.dynamodb().await, unique_name("pump-other"));
    other.create_table().await.unwrap();
    let other_arn = other.stream_arn().await.unwrap().unwrap();
    let client = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
    let err = DynamoDbSource::open(client, &other_arn, Some(s3_checkpoint.clone())).unwrap_err();
    assert!(err.to_string().contains("belongs to stream"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn follow_mode_archives_appends_as_they_come_and_stops_cleanly() {
    let Some(moto) = Moto::shared() else { return };
    let store = DynamoStore::new(moto.dynamodb().await, unique_name("pump-follow"));
    store.create_table().await.unwrap();
    let arn = store.stream_arn().await.unwrap().unwrap();
    let dir = temp_dir();
    let sink = LocalDir::new(dir.join("archive"));
    let config = Config::local(dir.join("archive"));
    let client = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
    let mut source = DynamoDbSource::open(client, &arn, Some(dir.join("cp.json"))).unwrap();
    let (handle, stop) = Stop::channel();
    let pump = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let options = Options {
                once: false,
                idle: Duration::from_millis(100),
                ..options()
            };
            pump::run(
                &mut source,
                &sink,
                &config,
                &options,
                stop,
                &mut |_: &BatchReport| {},
            )
            .await
        })
    };
    append(&store, "live-1", &["A", "B"]).await;
    append(&store, "live-2", &["C"]).await;
    let want = expected(&[("live-1", 2), ("live-2", 1)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while archived(&sink).await != want {
        assert!(std::time::Instant::now() < deadline, "not archived in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.stop();
    let summary = tokio::time::timeout(Duration::from_secs(30), pump)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.records, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A projection for the live driver's tests: each stream's sum and count
/// (a row keyed by the stream) and, when `global`, the sum and count of
/// every event in one row that every stream's events touch.
#[derive(Clone, Copy)]
struct Sums {
    global: bool,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Sum {
    sum: i64,
    count: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("no amount")]
struct NoAmount;

impl evs_projection::Projection for Sums {
    type Row = Sum;
    type Error = NoAmount;

    fn keys(&self, event: &evs_core::RecordedEvent) -> Result<Vec<RowKey>, NoAmount> {
        let mut keys = vec![RowKey::of_stream("sums", event)];
        if self.global {
            keys.push(RowKey::new("total", "all"));
        }
        Ok(keys)
    }

    fn apply(
        &self,
        event: &evs_core::RecordedEvent,
        _: &RowKey,
        row: &mut Option<Sum>,
    ) -> Result<(), NoAmount> {
        let sum = row.get_or_insert_with(Sum::default);
        sum.sum += event.payload["amount"].as_i64().ok_or(NoAmount)?;
        sum.count += 1;
        Ok(())
    }
}

/// Appends `writes` events of one `Moved` each, spread over streams that
/// keep appearing (stream `acct-k` for k up to `n / 6`), with short pauses.
fn spawn_writer(events: &DynamoStore, writes: usize, seed: u64) -> tokio::task::JoinHandle<()> {
    let events = events.clone();
    tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        for n in 0..writes {
            let stream = format!("acct-{}", rng.usize(0..=n / 6));
            let amount = rng.i64(-50..100);
            events
                .append(
                    &StreamId::new(stream).unwrap(),
                    ExpectedVersion::Any,
                    &[NewEvent::new("Moved", json!({ "amount": amount }))],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(rng.u64(0..8))).await;
        }
    })
}

/// Runs the live driver through the stream reader, dropping it (a kill: a
/// commit may be in flight) after a random time and restarting it from its
/// checkpoint while `writer` runs; then once more to the stream's end.
/// Returns the kills and what the last run applied.
async fn live_with_kills(
    moto: &Moto,
    arn: &str,
    checkpoint: &Path,
    applier: impl Fn() -> evs_projection::Applier<Sums, evs_projection::DynamoRowStore>,
    writer: &tokio::task::JoinHandle<()>,
    seed: u64,
) -> (usize, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills = 0;
    loop {
        let writing = !writer.is_finished();
        let client = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
        let mut source = DynamoDbSource::open(client, arn, Some(checkpoint.to_path_buf())).unwrap();
        let mut applier = applier();
        let options = Options {
            batch_size: 7,
            once: !writing,
            idle: Duration::from_millis(20),
            backoff: Duration::from_millis(20),
            ..Options::default()
        };
        let mut report = |_: &evs_projection::live::LiveReport| {};
        let run = pump::run_live(
            &mut source,
            &mut applier,
            &options,
            Stop::never(),
            &mut report,
        );
        if !writing {
            return (kills, run.await.unwrap().applied);
        }
        let killed_after = Duration::from_millis(rng.u64(30..300));
        if let Ok(done) = tokio::time::timeout(killed_after, run).await {
            panic!("a polling driver only ends on a stop: {done:?}");
        }
        kills += 1;
    }
}

/// Every stream's row is the fold of its events in the table, each once,
/// and its ledger its last event; so is the global row when `global`.
/// Returns the number of streams.
async fn assert_folds(
    events: &DynamoStore,
    states: &evs_projection::DynamoRowStore,
    global: bool,
) -> usize {
    use evs_projection::{RowStore, Stored};

    let mut total = Sum::default();
    let versions = events.last_versions(1, &|_| {}).await.unwrap();
    for (stream, version) in &versions {
        let stored = events
            .read(
                &StreamId::new(stream.clone()).unwrap(),
                evs_core::ReadRequest::after(0),
            )
            .await
            .unwrap();
        let sum: i64 = stored
            .iter()
            .map(|e| e.payload["amount"].as_i64().unwrap())
            .sum();
        let key = RowKey::new("sums", stream.as_str());
        let got: Vec<Stored<Sum>> = states.load_rows(&[key]).await.unwrap();
        let expected = Sum {
            sum,
            count: *version,
        };
        assert_eq!(got[0].row, Some(expected), "{stream}");
        let ledger = RowStore::<Sum>::load_ledger(states, std::slice::from_ref(stream))
            .await
            .unwrap();
        assert_eq!(ledger[0].version, *version, "{stream}");
        total.sum += sum;
        total.count += *version;
    }
    if global {
        let got: Vec<Stored<Sum>> = states
            .load_rows(&[RowKey::new("total", "all")])
            .await
            .unwrap();
        assert_eq!(got[0].row, Some(total));
    }
    versions.len()
}

/// The live projection driver through the stream reader, end to end:
/// writers on many streams (some opened while it runs) → the table's
/// DynamoDB stream → `run_live` → a read model in DynamoDB (the per-stream
/// layout). The driver is killed (its future dropped, a commit perhaps in
/// flight) at random moments and restarted from its checkpoint; at the end
/// every stream's row is the fold of its events in the table, each counted
/// once.
#[tokio::test]
async fn the_live_driver_applies_the_stream_exactly_once_across_kills() {
    use std::sync::Arc;

    use evs_projection::{Applier, DynamoLayout, DynamoRowStore};

    let Some(moto) = Moto::shared() else { return };
    let events = DynamoStore::new(moto.dynamodb().await, unique_name("live"));
    events.create_table().await.unwrap();
    let arn = events.stream_arn().await.unwrap().unwrap();
    let states = DynamoRowStore::new(
        moto.dynamodb().await,
        unique_name("sums"),
        DynamoLayout::PerStream,
    );
    states.create_table().await.unwrap();
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let table: Arc<dyn EventStore> = Arc::new(events.clone());
    let writes = 60 * evs_testkit::soak();
    let writer = spawn_writer(&events, writes, 3);
    let sums = Sums { global: false };
    let applier = || Applier::new(sums, states.clone()).with_table(Arc::clone(&table));
    let checkpoint = dir.join("live-checkpoint.json");
    let (kills, applied) = live_with_kills(moto, &arn, &checkpoint, applier, &writer, 4).await;
    writer.await.unwrap();
    assert!(kills > 2, "{kills} kills");
    let streams = assert_folds(&events, &states, false).await;
    eprintln!(
        "{writes} events on {streams} streams; the driver was killed {kills} times; the last run applied {applied}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Both drivers at once, both killed at random moments, on the emulator:
/// writers → the table → the pump archives the history into a local
/// archive → the replay driver rebuilds the read model (a DynamoDB table)
/// from it (the rows layout, with a row every event touches), killed and
/// restarted with the store's versions as its only checkpoint, while the
/// live driver runs from the stream's start (killed and restarted too) and
/// the writers go on, opening new streams. At the end every stream's row
/// and the global row are the fold of the table's events, each once.
#[tokio::test]
async fn replay_and_live_drivers_overlap_exactly_once_across_kills() {
    use std::sync::Arc;

    use evs_projection::replay::{rebuild, replayer_for, RebuildOptions};
    use evs_projection::{Applier, DynamoLayout, DynamoRowStore};
    use evs_replay::{Archive, ReplayOptions};

    let Some(moto) = Moto::shared() else { return };
    let events = DynamoStore::new(moto.dynamodb().await, unique_name("handoff"));
    events.create_table().await.unwrap();
    let arn = events.stream_arn().await.unwrap().unwrap();
    let states = DynamoRowStore::new(
        moto.dynamodb().await,
        unique_name("sums"),
        DynamoLayout::Rows,
    );
    states.create_table().await.unwrap();
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let table: Arc<dyn EventStore> = Arc::new(events.clone());
    let sums = Sums { global: true };

    // The history, archived.
    let history = 120 * evs_testkit::soak();
    spawn_writer(&events, history, 5).await.unwrap();
    let local = LocalDir::new(dir.join("archive"));
    let config = Config::local(dir.join("archive"));
    pump_once(moto, &arn, &dir.join("pump.json"), &local, &config).await;

    // The writers go on while both drivers run.
    let writer = spawn_writer(&events, 60 * evs_testkit::soak(), 6);
    let replay = {
        let (states, table, archive_dir) =
            (states.clone(), Arc::clone(&table), dir.join("archive"));
        let prefix = config.prefix.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(7);
            let clock = evs_core::system_clock();
            for kills in 0.. {
                let archive = Archive::new(Arc::new(LocalDir::new(&archive_dir)), prefix.clone());
                let mut replayer = replayer_for::<Sum, _>(
                    archive,
                    ReplayOptions::default(),
                    clock.clone(),
                    &states,
                )
                .await
                .unwrap();
                let mut applier = Applier::new(sums, states.clone()).with_table(Arc::clone(&table));
                let options = RebuildOptions {
                    batch_events: 16,
                    ..RebuildOptions::default()
                };
                let run = rebuild(&mut applier, &mut replayer, &options, &clock, |_| {});
                // Killed early at first, later given longer to finish.
                let span = 20 + 40 * kills;
                match tokio::time::timeout(Duration::from_millis(rng.u64(5..span)), run).await {
                    Ok(done) => return (kills, done.unwrap()),
                    Err(_) => continue,
                }
            }
            unreachable!()
        })
    };
    let applier = || Applier::new(sums, states.clone()).with_table(Arc::clone(&table));
    let checkpoint = dir.join("live-checkpoint.json");
    let (live_kills, _) = live_with_kills(moto, &arn, &checkpoint, applier, &writer, 8).await;
    writer.await.unwrap();
    let (replay_kills, report) = replay.await.unwrap();
    assert!(
        replay_kills > 0 && live_kills > 0,
        "{replay_kills} / {live_kills} kills"
    );
    let streams = assert_folds(&events, &states, true).await;
    eprintln!(
        "{history} archived events, then more on {streams} streams in all; the replay driver was \
         killed {replay_kills} times (its last run applied {} and skipped {}), the live driver \
         {live_kills} times",
        report.applied, report.skipped
    );
    let _ = std::fs::remove_dir_all(&dir);
}
