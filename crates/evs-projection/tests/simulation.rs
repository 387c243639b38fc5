//! The projection guarantee under simulation: replay drivers (one, or one
//! per partition) and two copies of the live driver (the second applying
//! batches the first was already given) run at once over one store, their
//! store calls interleaved at random (each call yields first), any call
//! failing before or after its effect (a lost acknowledgement) and the
//! driver then crashing at random (its memory lost); the live driver gets
//! Lambda's delivery (records spread over shards, so a stream's events can
//! cross shards; batches retried from the first reported failure,
//! redelivered whole); some records are unreadable (dead letters); streams
//! are created during the handoff; some events are refused (their stream is
//! parked); commits are cut to a small item limit. Rows span streams: a
//! row per stream, a row per group that many streams touch, one global row,
//! and a row created and deleted in turn. After all drain, every row equals
//! the fold of the table's events, each event counted exactly once, each
//! stream in order, and the parked streams are exactly those with a refused
//! event, parked at it.
//!
//! 400 cases unless `PROPTEST_CASES` says otherwise (`make soak`: more).

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, RecordedEvent, StreamId};
use evs_projection::live::apply_records;
use evs_projection::{
    stream_hash, Applier, Commit, Ledger, MemoryRowStore, Projection, RowKey, RowStore, StoreError,
    Stored, Unit,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A row: the events counted into it, as (stream, event id), in the order
/// applied, and the sum of their amounts.
#[derive(Debug, Clone, Default, PartialEq)]
struct Row {
    events: Vec<(String, u64)>,
    sum: i64,
}

struct Groups;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl Projection for Groups {
    type Row = Row;
    type Error = Refused;

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, Refused> {
        if event.payload["bad"] == true {
            return Err(Refused(format!("event {} is bad", event.event_id)));
        }
        let group = event.payload["group"].as_u64().unwrap_or(0);
        Ok(vec![
            RowKey::of_stream("stream", event),
            RowKey::new("group", format!("g{group}")),
            RowKey::new("total", "all"),
            RowKey::new("toggle", event.stream_id.as_str()),
        ])
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        key: &RowKey,
        row: &mut Option<Row>,
    ) -> Result<(), Refused> {
        if key.model == "toggle" {
            // created by odd events, deleted by even ones
            *row = (event.event_id % 2 == 1).then(Row::default);
            return Ok(());
        }
        let state = row.get_or_insert_with(Row::default);
        if key.model == "stream" {
            let last = state.events.last().map_or(0, |(_, id)| *id);
            if event.event_id != last + 1 {
                return Err(Refused(format!(
                    "out of order: event {} after {last}",
                    event.event_id
                )));
            }
        }
        state
            .events
            .push((event.stream_id.as_str().to_owned(), event.event_id));
        state.sum += event.payload["amount"].as_i64().unwrap_or(0);
        Ok(())
    }
}

/// A driver's view of the shared store: each call yields first (so the
/// drivers' calls interleave), fails at random before its effect or after
/// it (a lost acknowledgement) while `faults` is on, and commits are
/// limited to `max_items`.
struct Faulty {
    inner: MemoryRowStore<Row>,
    rng: std::sync::Mutex<fastrand::Rng>,
    faults: AtomicBool,
    injected: AtomicU64,
    max_items: usize,
}

impl Faulty {
    fn new(inner: MemoryRowStore<Row>, seed: u64, max_items: usize) -> Self {
        Self {
            inner,
            rng: std::sync::Mutex::new(fastrand::Rng::with_seed(seed)),
            faults: true.into(),
            injected: AtomicU64::new(0),
            max_items,
        }
    }

    async fn roll(&self) -> u32 {
        tokio::task::yield_now().await;
        if !self.faults.load(Ordering::Relaxed) {
            return 100;
        }
        self.rng.lock().unwrap().u32(0..100)
    }

    fn fault(&self) -> StoreError {
        self.injected.fetch_add(1, Ordering::Relaxed);
        StoreError::Backend {
            message: "injected".into(),
            transient: true,
            source: None,
        }
    }
}

#[async_trait]
impl RowStore<Row> for Faulty {
    fn max_items(&self) -> usize {
        self.max_items
    }

    fn check_row(&self, key: &RowKey, row: &Row) -> Result<(), StoreError> {
        self.inner.check_row(key, row)
    }

    async fn load_ledger(&self, streams: &[String]) -> Result<Vec<Ledger>, StoreError> {
        if self.roll().await < 3 {
            return Err(self.fault());
        }
        self.inner.load_ledger(streams).await
    }

    async fn load_rows(&self, keys: &[RowKey]) -> Result<Vec<Stored<Row>>, StoreError> {
        if self.roll().await < 3 {
            return Err(self.fault());
        }
        self.inner.load_rows(keys).await
    }

    async fn commit(&self, unit: &Unit<Row>) -> Result<Commit, StoreError> {
        if unit.items() > self.max_items {
            return Err(StoreError::UnitTooLarge {
                items: unit.items(),
                reason: format!("at most {}", self.max_items),
            });
        }
        match self.roll().await {
            0..=4 => Err(self.fault()),
            5..=9 => {
                // written (or not: a conflict), but the answer is lost
                self.inner.commit(unit).await?;
                tokio::task::yield_now().await;
                Err(self.fault())
            }
            _ => self.inner.commit(unit).await,
        }
    }

    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.versions().await
    }

    async fn parked(&self) -> Result<Vec<(String, Ledger)>, StoreError> {
        self.inner.parked().await
    }

    async fn rows(&self) -> Result<Vec<(RowKey, Row)>, StoreError> {
        self.inner.rows().await
    }
}

/// One simulated run, from a seed.
#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    events: usize,
    streams: usize,
    shards: usize,
    partitions: u64,
    max_items: usize,
}

fn plans() -> impl Strategy<Value = Plan> {
    (
        any::<u64>(),
        1usize..40,
        1usize..7,
        1usize..4,
        1u64..=2,
        prop_oneof![Just(usize::MAX), 5usize..12],
    )
        .prop_map(
            |(seed, events, streams, shards, partitions, max_items)| Plan {
                seed,
                events,
                streams,
                shards,
                partitions,
                max_items,
            },
        )
}

/// Lambda's view of a shard: a position, batches from it.
struct Shard {
    records: Vec<Value>,
    position: usize,
}

/// A replay driver: its applier, its events (its partition's, in archive
/// order) and its position.
struct Replay {
    applier: Applier<Groups, Faulty>,
    events: Vec<RecordedEvent>,
    at: usize,
}

impl Replay {
    fn done(&self) -> bool {
        self.at >= self.events.len()
    }
}

/// The table: events on streams opened over time, some refused (`bad`).
async fn write_table(plan: &Plan, rng: &mut fastrand::Rng) -> MemoryStore {
    let table = MemoryStore::new();
    for n in 0..plan.events {
        // later streams open later: streams are created during the run
        let open = (1 + n * plan.streams / plan.events.max(1)).min(plan.streams);
        let stream = StreamId::new(format!("acct-{}", rng.usize(0..open))).unwrap();
        let payload = json!({
            "amount": rng.i64(-50..100),
            "group": rng.u64(0..3),
            "bad": rng.u32(0..40) == 0,
            "n": n,
        });
        table
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new("Moved", payload)],
            )
            .await
            .unwrap();
    }
    table
}

async fn run(plan: Plan) -> Result<(), TestCaseError> {
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let table = write_table(&plan, &mut rng).await;
    let (feed, _) = table.changes(0, usize::MAX);
    let table: Arc<dyn EventStore> = Arc::new(table);
    let written: Vec<RecordedEvent> = feed.iter().map(event_of).collect();
    // the handoff: live from `live_start` on, replay up to `replay_end` ≥ it
    let live_start = rng.usize(0..=feed.len());
    let replay_end = rng.usize(live_start..=feed.len());
    let store = MemoryRowStore::<Row>::new();
    let faulty = |rng: &mut fastrand::Rng| Faulty::new(store.clone(), rng.u64(..), plan.max_items);
    // the archive up to there, in archive order (close to write order, with
    // duplicates), split among the replay drivers by partition
    let mut replays: Vec<Replay> = (0..plan.partitions)
        .map(|_| Replay {
            applier: Applier::new(Groups, faulty(&mut rng)).with_table(Arc::clone(&table)),
            events: Vec::new(),
            at: 0,
        })
        .collect();
    for event in &written[..replay_end] {
        let part = (stream_hash(event.stream_id.as_str()) % plan.partitions) as usize;
        replays[part].events.push(event.clone());
        if rng.u32(0..10) == 0 {
            replays[part].events.push(event.clone());
        }
    }
    // live records over shards (a stream's events may cross shards); some
    // unreadable (only where the replay covers them)
    let mut shards: Vec<Shard> = (0..plan.shards)
        .map(|_| Shard {
            records: Vec::new(),
            position: 0,
        })
        .collect();
    for (index, record) in feed.iter().enumerate().skip(live_start) {
        let mut record = record.clone();
        if index < replay_end && rng.u32(0..8) == 0 {
            record["dynamodb"]
                .as_object_mut()
                .unwrap()
                .remove("NewImage");
        }
        let shard = rng.usize(0..plan.shards);
        shards[shard].records.push(record);
    }
    let mut live = Applier::new(Groups, faulty(&mut rng)).with_table(Arc::clone(&table));
    // a second copy of the live driver (a duplicate invocation, a zombie
    // container) applying batches the first was given, at the same time
    let mut copy = Applier::new(Groups, faulty(&mut rng)).with_table(Arc::clone(&table));
    let mut steps = 0;
    let mut quiet = false;
    loop {
        steps += 1;
        if steps == 150 {
            // the faults stop; every driver drains
            for replay in &replays {
                replay
                    .applier
                    .store()
                    .faults
                    .store(false, Ordering::Relaxed);
            }
            live.store().faults.store(false, Ordering::Relaxed);
            copy.store().faults.store(false, Ordering::Relaxed);
            quiet = true;
        }
        prop_assert!(steps < 5_000, "no progress: {plan:?}");
        let live_done = shards.iter().all(|s| s.position >= s.records.len());
        if replays.iter().all(Replay::done) && live_done {
            break;
        }
        let which = rng.usize(0..replays.len());
        let replay = &mut replays[which];
        // a crash loses a driver's memory (and, for a replay driver, its
        // place: it starts from the archive's start again)
        if !quiet && rng.u32(0..12) == 0 {
            replay.applier.forget();
            if rng.bool() {
                replay.at = 0;
            }
        }
        if !quiet && rng.u32(0..12) == 0 {
            live.forget();
        }
        let replay_size = rng.usize(1..=8);
        let live_size = rng.usize(1..=6);
        let redeliver = !quiet && rng.u32(0..10) == 0;
        let open: Vec<usize> = (0..shards.len())
            .filter(|&i| shards[i].position < shards[i].records.len())
            .collect();
        let shard = (!open.is_empty()).then(|| open[rng.usize(0..open.len())]);
        let copied = {
            let s = &shards[rng.usize(0..shards.len())];
            let from = rng.usize(0..=s.position);
            let to = (from + rng.usize(1..=6)).min(s.position);
            (rng.u32(0..3) == 0 && from < to).then(|| s.records[from..to].to_vec())
        };
        // both drivers at once: their store calls interleave
        let replay_step = async {
            if replay.done() {
                return Ok(());
            }
            let end = (replay.at + replay_size).min(replay.events.len());
            let report = replay
                .applier
                .apply_batch(&replay.events[replay.at..end])
                .await;
            for (stream, id, error) in report.failures() {
                prop_assert!(error.is_transient(), "{stream} {id}: {error}");
            }
            if report.failures().next().is_none() {
                replay.at = end;
            }
            Ok(())
        };
        let live_step = async {
            let Some(shard) = shard else { return Ok(()) };
            let shard = &mut shards[shard];
            let end = (shard.position + live_size).min(shard.records.len());
            let batch = &shard.records[shard.position..end];
            let report = apply_records(&mut live, batch, 0).await;
            for (stream, id, error) in report.batch.failures() {
                prop_assert!(error.is_transient(), "{stream} {id}: {error}");
            }
            if !redeliver {
                // retried from the first reported record (all of it when none)
                shard.position += report.first_retry;
            }
            Ok(())
        };
        let copy_step = async {
            let Some(batch) = copied else { return Ok(()) };
            let report = apply_records(&mut copy, &batch, 0).await;
            for (stream, id, error) in report.batch.failures() {
                prop_assert!(error.is_transient(), "{stream} {id}: {error}");
            }
            Ok(())
        };
        let (a, b, c) = tokio::join!(replay_step, live_step, copy_step);
        a?;
        b?;
        c?;
    }
    check(&store, &written, &plan).await
}

/// Every row and ledger entry against the fold of the table: each stream
/// up to its first refused event, every event counted once.
async fn check(
    store: &MemoryRowStore<Row>,
    written: &[RecordedEvent],
    plan: &Plan,
) -> Result<(), TestCaseError> {
    let mut expected: BTreeMap<RowKey, Option<Row>> = BTreeMap::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut parked: BTreeMap<String, u64> = BTreeMap::new();
    for event in written {
        let stream = event.stream_id.as_str().to_owned();
        if parked.contains_key(&stream) {
            continue;
        }
        let Ok(keys) = Groups.keys(event) else {
            parked.insert(stream, event.event_id);
            continue;
        };
        for key in keys {
            let row = expected.entry(key.clone()).or_default();
            Groups.apply(event, &key, row).unwrap();
        }
        versions.insert(stream, event.event_id);
    }
    let mut expected: BTreeMap<RowKey, Row> = expected
        .into_iter()
        .filter_map(|(k, r)| r.map(|r| (k, r)))
        .collect();
    let mut got = store.snapshot();
    // rows many streams touch hold their events in the order applied,
    // which differs between drivers: compare them as sets (the count
    // catches an event counted twice)
    for rows in [&mut expected, &mut got] {
        for row in rows.values_mut() {
            row.events.sort();
        }
    }
    prop_assert_eq!(&got, &expected, "{:?}", plan);
    let ledger = store.ledger();
    for (stream, version) in &versions {
        prop_assert_eq!(
            ledger.get(stream).map(|l| l.version),
            Some(*version),
            "{} {:?}",
            stream,
            plan
        );
    }
    let got_parked: BTreeMap<String, u64> = ledger
        .iter()
        .filter_map(|(s, l)| l.parked.as_ref().map(|p| (s.clone(), p.event_id)))
        .collect();
    prop_assert_eq!(got_parked, parked, "{:?}", plan);
    Ok(())
}

/// The event a (well-formed) feed record holds.
fn event_of(record: &Value) -> RecordedEvent {
    match evs_archiver::record::classify(record) {
        evs_archiver::record::Classified::Event(event) => event.into_table_event().unwrap(),
        evs_archiver::record::Classified::DeadLetter(dead) => panic!("{dead:?}"),
    }
}

/// 400 cases unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 400;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn replays_and_live_together_apply_every_event_exactly_once(plan in plans()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(run(plan))?;
    }
}
