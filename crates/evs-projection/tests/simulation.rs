//! The projection guarantee under simulation: a replay driver and a live
//! driver run at once over one projection (random interleavings), either
//! crashes at random points (its memory lost; its last commit done or not,
//! acknowledged or not), the live driver gets Lambda's delivery (records
//! spread over shards, so a stream's events can cross shards; batches
//! retried from the first reported failure, redelivered whole, bisected),
//! some records are unreadable (dead letters), and streams are created
//! during the handoff. After both drain, every stream's state is the fold
//! of its events in the table, each event applied exactly once, in order.
//!
//! 10,000 cases unless `PROPTEST_CASES` says otherwise (`make soak`: more).

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, RecordedEvent, StreamId};
use evs_projection::live::apply_records;
use evs_projection::{
    Applier, Commit, MemoryStateStore, Projection, StateStore, StoreError, Versioned,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A balance per account, and every event id it counted (to prove each
/// counted once, in order).
#[derive(Debug, Clone, Default, PartialEq)]
struct Account {
    balance: i64,
    applied: Vec<u64>,
}

struct Balances;

#[derive(Debug, thiserror::Error)]
#[error("event {got} applied after {last}")]
struct OutOfOrder {
    got: u64,
    last: u64,
}

impl Projection for Balances {
    type State = Account;
    type Error = OutOfOrder;

    fn apply(&self, state: &mut Account, event: &RecordedEvent) -> Result<(), OutOfOrder> {
        let last = state.applied.last().copied().unwrap_or(0);
        if event.event_id != last + 1 {
            return Err(OutOfOrder {
                got: event.event_id,
                last,
            });
        }
        state.balance += event.payload["amount"].as_i64().unwrap_or(0);
        state.applied.push(event.event_id);
        Ok(())
    }
}

/// A driver's view of the shared store: fails at random, before the write
/// or after it (a lost acknowledgement), while `faults` is on.
struct Faulty {
    inner: MemoryStateStore<Account>,
    rng: std::sync::Mutex<fastrand::Rng>,
    faults: std::sync::atomic::AtomicBool,
    injected: AtomicU64,
}

impl Faulty {
    fn new(inner: MemoryStateStore<Account>, seed: u64) -> Self {
        Self {
            inner,
            rng: std::sync::Mutex::new(fastrand::Rng::with_seed(seed)),
            faults: true.into(),
            injected: AtomicU64::new(0),
        }
    }

    fn roll(&self) -> u32 {
        if !self.faults.load(Ordering::Relaxed) {
            return 100;
        }
        self.rng.lock().unwrap().u32(0..100)
    }

    fn fault() -> StoreError {
        StoreError::Backend {
            message: "injected".into(),
            transient: true,
            source: None,
        }
    }
}

#[async_trait]
impl StateStore<Account> for Faulty {
    async fn load(&self, stream: &str) -> Result<Option<Versioned<Account>>, StoreError> {
        if self.roll() < 3 {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(Self::fault());
        }
        self.inner.load(stream).await
    }

    async fn commit(
        &self,
        stream: &str,
        expected: u64,
        next: &Versioned<Account>,
    ) -> Result<Commit, StoreError> {
        match self.roll() {
            0..=4 => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                Err(Self::fault())
            }
            5..=9 => {
                // written, but the answer is lost
                self.injected.fetch_add(1, Ordering::Relaxed);
                self.inner.commit(stream, expected, next).await?;
                Err(Self::fault())
            }
            _ => self.inner.commit(stream, expected, next).await,
        }
    }

    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.versions().await
    }
}

/// One simulated run, from a seed.
#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    events: usize,
    streams: usize,
    shards: usize,
}

fn plans() -> impl Strategy<Value = Plan> {
    (any::<u64>(), 1usize..40, 1usize..7, 1usize..4).prop_map(|(seed, events, streams, shards)| {
        Plan {
            seed,
            events,
            streams,
            shards,
        }
    })
}

/// Lambda's view of a shard: a position, batches from it.
struct Shard {
    records: Vec<Value>,
    position: usize,
}

async fn run(plan: Plan) -> Result<(), TestCaseError> {
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let table = MemoryStore::new();
    for n in 0..plan.events {
        // later streams open later: streams are created during the run
        let open = (1 + n * plan.streams / plan.events.max(1)).min(plan.streams);
        let stream = StreamId::new(format!("acct-{}", rng.usize(0..open))).unwrap();
        let amount = rng.i64(-50..100);
        table
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new("Moved", json!({ "amount": amount, "n": n }))],
            )
            .await
            .unwrap();
    }
    let (feed, _) = table.changes(0, usize::MAX);
    let table: Arc<dyn EventStore> = Arc::new(table);
    let written: Vec<RecordedEvent> = feed.iter().map(event_of).collect();
    // the handoff: live from `live_start` on, replay up to `replay_end` ≥ it
    let live_start = rng.usize(0..=feed.len());
    let replay_end = rng.usize(live_start..=feed.len());
    // the archive up to there, in archive order: close to write order, with
    // duplicates
    let mut replay_events: Vec<RecordedEvent> = Vec::new();
    for event in &written[..replay_end] {
        replay_events.push(event.clone());
        if rng.u32(0..10) == 0 {
            replay_events.push(event.clone());
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

    let states = MemoryStateStore::<Account>::new();
    let replay_store = Faulty::new(states.clone(), rng.u64(..));
    let live_store = Faulty::new(states.clone(), rng.u64(..));
    let mut replay = Applier::new(Balances, replay_store).with_table(Arc::clone(&table));
    let mut live = Applier::new(Balances, live_store).with_table(Arc::clone(&table));
    let mut replay_at = 0usize;
    let mut steps = 0;
    let mut quiet = false;
    loop {
        steps += 1;
        if steps == 150 {
            // the faults stop; both drivers drain
            replay.store().faults.store(false, Ordering::Relaxed);
            live.store().faults.store(false, Ordering::Relaxed);
            quiet = true;
        }
        prop_assert!(steps < 5_000, "no progress: {plan:?}");
        let replay_done = replay_at >= replay_events.len();
        let live_done = shards.iter().all(|s| s.position >= s.records.len());
        if replay_done && live_done {
            break;
        }
        match rng.u32(0..24) {
            0 if !quiet => replay.forget(),
            1 if !quiet => {
                // the replay driver restarts from the archive's start
                replay.forget();
                replay_at = 0;
            }
            2 if !quiet => live.forget(),
            3..=12 if !replay_done => {
                let size = rng.usize(1..=8);
                let end = (replay_at + size).min(replay_events.len());
                let report = replay.apply_batch(&replay_events[replay_at..end]).await;
                for (stream, id, error) in report.failures() {
                    prop_assert!(error.is_transient(), "{stream} {id}: {error}");
                }
                if report.failures().next().is_none() {
                    replay_at = end;
                }
            }
            _ if !live_done => {
                let open: Vec<usize> = (0..shards.len())
                    .filter(|&i| shards[i].position < shards[i].records.len())
                    .collect();
                let shard = &mut shards[open[rng.usize(0..open.len())]];
                let size = rng.usize(1..=6);
                let end = (shard.position + size).min(shard.records.len());
                let batch = &shard.records[shard.position..end];
                let report = apply_records(&mut live, batch, 0).await;
                for (stream, id, error) in report.batch.failures() {
                    prop_assert!(error.is_transient(), "{stream} {id}: {error}");
                }
                match rng.u32(0..10) {
                    // delivered again whole (at least once)
                    0 if !quiet => {}
                    // a failure: retried from the first reported record
                    _ => shard.position += report.first_retry,
                }
            }
            _ => {}
        }
    }
    // every stream: the fold of the table, each event once, in order
    let snapshot = states.snapshot();
    let mut expected: BTreeMap<String, Account> = BTreeMap::new();
    for event in &written {
        let account = expected.entry(event.stream_id.to_string()).or_default();
        Balances.apply(account, event).unwrap();
    }
    prop_assert_eq!(snapshot.len(), expected.len(), "{:?}", plan);
    for (stream, account) in expected {
        let got = &snapshot[&stream];
        prop_assert_eq!(
            got.version,
            account.applied.len() as u64,
            "{} {:?}",
            stream,
            plan
        );
        prop_assert_eq!(&got.state, &account, "{} {:?}", stream, plan);
    }
    Ok(())
}

/// The event a (well-formed) feed record holds.
fn event_of(record: &Value) -> RecordedEvent {
    match evs_archiver::record::classify(record) {
        evs_archiver::record::Classified::Event(event) => event.into_table_event().unwrap(),
        evs_archiver::record::Classified::DeadLetter(dead) => panic!("{dead:?}"),
    }
}

/// 10,000 cases unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 10_000;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn replay_and_live_together_apply_every_event_exactly_once(plan in plans()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(run(plan))?;
    }
}
