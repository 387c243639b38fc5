//! A simulation of the whole archive path, checked against the sequencer.
//!
//! Random streams are written in a random interleaving; their events land on
//! random simulated shards (mostly a stream's home shard, sometimes another:
//! partitions split). Each shard is delivered by a simulated Lambda in
//! batches of random size, with every failure mode DESIGN names: invocations
//! that die before the PUT (retried, no object), PUTs whose acknowledgement is
//! lost (the same batch archived twice), bisected batches (the same records
//! again with different boundaries), partial failures (`batchItemFailures`:
//! the tail of a batch redelivered), and shards blocked for a while, so
//! objects of different shards are sealed out of order. The archive is the
//! objects sorted by key; inside an object the lines are sorted by event
//! timestamp, stream id, event id.
//!
//! The replay stops at random points (also in the middle of an object),
//! checkpoints, goes through JSON, and resumes — or restarts from the start of
//! the archive with versions supplied as a projection would. On every run:
//! every event is delivered exactly once, in `eventId` order per stream, and
//! none is lost; with one object removed, the gap is reported with the stream
//! and the missing id, and a back-fill from the "table" completes the replay.
//!
//! A third property follows a growing archive with [`Frontier`] and checks no
//! object is ever skipped. Each of these runs 10,000 cases (`make test`).
//!
//! A fourth runs the real [`evs_replay::Replayer`] (listing in small pages,
//! read-ahead, follow mode, checkpoints through JSON) on the same scenarios
//! over an in-memory bucket in which each object appears at a random moment
//! within the archiver timeout of its seal time: sometimes a plain replay
//! first, then following; restarts at random steps; a reader that wakes
//! early. Every archived event is delivered exactly once, in order, and no
//! checkpoint cursor is ever past the settled frontier. 1,000 cases. So do
//! 1 to 4 partitions, each replayed by its own follower: each delivers and
//! checkpoints only its streams, and together exactly every archived event.
//! And a replay from a random time (`--since`), with a table (and then maybe
//! a lost object) or without: every event written at or after the time
//! exactly once, in order, none before it; without a table, at worst a stop
//! naming the stream whose start was guessed wrong, never a loss.
//! `PROPTEST_CASES` sets another count for all (`make soak` runs 100,000).

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use evs_replay::{ArchivePosition, Checkpoint, Frontier, ReplayEvent, Sequencer, SequencerConfig};
use proptest::prelude::*;
use serde_json::json;

/// A deterministic generator driven by proptest's seed.
struct Rng(fastrand::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.u64(..)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
struct Record {
    stream: String,
    id: u64,
    ts: u64,
}

impl Record {
    fn event(&self) -> ReplayEvent {
        ReplayEvent::new(
            self.stream.clone(),
            self.id,
            &json!({"streamId": self.stream, "eventId": self.id, "timestamp": evs_core::format_timestamp_ms(T0 + self.ts as i64)}),
        )
    }
}

#[derive(Debug, Clone)]
struct Object {
    pos: ArchivePosition,
    lines: Vec<ReplayEvent>,
}

/// 2026-01-01T00:00:00Z: seal times and event timestamps (both relative to
/// it in a scenario) are after it.
const T0: i64 = 1_767_225_600_000;

#[derive(Debug)]
struct Scenario {
    /// Every stream and its number of events (the "table").
    counts: BTreeMap<String, u64>,
    /// Every write, in the order they were made (`ts` = its index).
    writes: Vec<Record>,
    /// The archive, sorted by key.
    objects: Vec<Object>,
}

fn scenario(rng: &mut Rng) -> Scenario {
    let n_streams = 1 + rng.index(6);
    let counts: BTreeMap<String, u64> = (0..n_streams)
        .map(|i| (format!("stream-{i}"), rng.below(13)))
        .collect();
    // Random interleaving of the writes, per-stream order kept.
    let mut next: BTreeMap<&str, u64> = counts.keys().map(|s| (s.as_str(), 1)).collect();
    let mut writes = Vec::new();
    loop {
        let open: Vec<&str> = next
            .iter()
            .filter(|(s, &n)| n <= counts[**s])
            .map(|(s, _)| *s)
            .collect();
        if open.is_empty() {
            break;
        }
        let stream = open[rng.index(open.len())];
        let id = next[stream];
        next.insert(stream, id + 1);
        writes.push(Record {
            stream: stream.to_owned(),
            id,
            ts: writes.len() as u64,
        });
    }
    // Shards: mostly the stream's home shard, sometimes another one.
    let n_shards = 1 + rng.index(3);
    let home: BTreeMap<&str, usize> = counts
        .keys()
        .map(|s| (s.as_str(), rng.index(n_shards)))
        .collect();
    let mut shards: Vec<Vec<Record>> = vec![Vec::new(); n_shards];
    for record in &writes {
        let record = record.clone();
        let shard = if rng.chance(80) {
            home[record.stream.as_str()]
        } else {
            rng.index(n_shards)
        };
        shards[shard].push(record);
    }
    // Lambda delivery per shard.
    let mut objects = Vec::new();
    let mut nonce = 0u64;
    for (shard, records) in shards.iter().enumerate() {
        let mut clock = rng.below(100);
        let mut p = 0;
        let mut cap = usize::MAX;
        let mut attempts = 0;
        while p < records.len() {
            let size = cap.min(1 + rng.index(6));
            let end = records.len().min(p + size);
            let batch = &records[p..end];
            cap = usize::MAX;
            if rng.chance(20) {
                clock += rng.below(1_000); // a blocked or slow shard
            }
            attempts += 1;
            let mut write = |clock: u64| {
                // A batch is sealed after its records were written.
                let clock = clock.max(batch.iter().map(|r| r.ts).max().unwrap_or(0));
                let mut lines = batch.to_vec();
                lines.sort_by(|a, b| (a.ts, &a.stream, a.id).cmp(&(b.ts, &b.stream, b.id)));
                nonce += 1;
                objects.push(Object {
                    pos: ArchivePosition::new(
                        format!("{clock:012}-{shard}-{nonce:06}.ndjson"),
                        clock as i64,
                    ),
                    lines: lines.iter().map(Record::event).collect(),
                });
            };
            let roll = rng.below(100);
            if attempts > 6 || roll < 55 {
                write(clock); // success
                p = end;
                attempts = 0;
            } else if roll < 65 {
                // the invocation died before its PUT: no object, retried
            } else if roll < 78 {
                write(clock); // PUT done, acknowledgement lost: retried whole
            } else if roll < 90 {
                // bisect on error: maybe written, then retried in halves
                if rng.chance(50) {
                    write(clock);
                }
                cap = (batch.len() / 2).max(1);
            } else {
                // partial failure: batchItemFailures from record k on
                write(clock);
                p += 1 + rng.index(batch.len());
                if p >= end {
                    attempts = 0;
                }
            }
            clock += 1 + rng.below(30);
        }
    }
    objects.sort_by(|a, b| a.pos.key.cmp(&b.pos.key));
    Scenario {
        counts,
        writes,
        objects,
    }
}

/// Replays `objects`, stopping before the pushes numbered in `stops` to
/// restart: from a checkpoint through JSON, or (when `from_versions`) from the
/// start of the archive with the delivered versions supplied as a projection
/// would. Returns the sequencer and everything it delivered.
fn replay(objects: &[Object], stops: &[(u64, bool)]) -> (Sequencer, Vec<ReplayEvent>) {
    let mut seq = Sequencer::new();
    let mut out = Vec::new();
    let mut stops = stops.iter().copied().peekable();
    let mut step = 0u64;
    'run: loop {
        let start = match seq.cursor() {
            None => 0,
            Some(cursor) => objects.partition_point(|o| o.pos.key.as_str() <= cursor),
        };
        for object in &objects[start..] {
            for line in &object.lines {
                if let Some((at, from_versions)) = stops.next_if(|&(at, _)| at <= step) {
                    debug_assert!(at <= step);
                    let json = seq.checkpoint().to_json().unwrap();
                    let checkpoint = Checkpoint::from_json(&json).unwrap();
                    seq = if from_versions {
                        Sequencer::with_versions(
                            SequencerConfig::default(),
                            None,
                            checkpoint.last_delivered,
                        )
                    } else {
                        Sequencer::resume(checkpoint).unwrap()
                    };
                    continue 'run;
                }
                step += 1;
                seq.push(&object.pos, line.clone(), &mut out).unwrap();
            }
            seq.finish_object(&object.pos).unwrap();
        }
        break;
    }
    (seq, out)
}

/// Per stream, the delivered ids in delivery order.
fn delivered(out: &[ReplayEvent]) -> BTreeMap<String, Vec<u64>> {
    let mut by_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in out {
        assert_eq!(
            event.line_value().unwrap()["eventId"],
            json!(event.event_id)
        );
        by_stream
            .entry(event.stream_id.clone())
            .or_default()
            .push(event.event_id);
    }
    by_stream
}

fn stops(rng: &mut Rng, total_lines: usize) -> Vec<(u64, bool)> {
    let mut stops: Vec<(u64, bool)> = (0..rng.below(4))
        .map(|_| (rng.below(total_lines as u64 + 1), rng.chance(25)))
        .collect();
    stops.sort();
    stops
}

fn table(stream: &str, ids: std::ops::RangeInclusive<u64>) -> Vec<ReplayEvent> {
    ids.map(|id| {
        Record {
            stream: stream.to_owned(),
            id,
            ts: 0,
        }
        .event()
    })
    .collect()
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
    fn complete_archive_delivers_everything_exactly_once_in_order(seed in any::<u64>()) {
        let mut rng = Rng(fastrand::Rng::with_seed(seed));
        let sc = scenario(&mut rng);
        let total_lines = sc.objects.iter().map(|o| o.lines.len()).sum();
        let stops = stops(&mut rng, total_lines);
        let (seq, out) = replay(&sc.objects, &stops);
        let got = delivered(&out);
        for (stream, &count) in &sc.counts {
            let want: Vec<u64> = (1..=count).collect();
            prop_assert_eq!(got.get(stream).cloned().unwrap_or_default(), want, "stream {}", stream);
            prop_assert_eq!(seq.last_delivered(stream), count);
        }
        prop_assert_eq!(out.len() as u64, sc.counts.values().sum::<u64>());
        prop_assert!(seq.gaps().is_empty());
        prop_assert_eq!(seq.held_count(), 0);
        prop_assert_eq!(seq.cursor(), sc.objects.last().map(|o| o.pos.key.as_str()));
    }

    #[test]
    fn a_missing_object_is_reported_and_back_filled(seed in any::<u64>()) {
        let mut rng = Rng(fastrand::Rng::with_seed(seed));
        let mut sc = scenario(&mut rng);
        prop_assume!(!sc.objects.is_empty());
        let removed = rng.index(sc.objects.len());
        sc.objects.remove(removed);
        let present: BTreeSet<(String, u64)> = sc
            .objects
            .iter()
            .flat_map(|o| o.lines.iter().map(|e| (e.stream_id.clone(), e.event_id)))
            .collect();
        let total_lines = sc.objects.iter().map(|o| o.lines.len()).sum();
        let stops = stops(&mut rng, total_lines);
        let (mut seq, mut out) = replay(&sc.objects, &stops);
        let got = delivered(&out);

        let mut want_gaps = Vec::new();
        for (stream, &count) in &sc.counts {
            let first_missing = (1..=count).find(|&id| !present.contains(&(stream.clone(), id)));
            let delivered_up_to = first_missing.map_or(count, |m| m - 1);
            let want: Vec<u64> = (1..=delivered_up_to).collect();
            prop_assert_eq!(got.get(stream).cloned().unwrap_or_default(), want, "stream {}", stream);
            if let Some(m) = first_missing {
                let first_held = (m + 1..=count).find(|&id| present.contains(&(stream.clone(), id)));
                if let Some(first_held) = first_held {
                    want_gaps.push((stream.clone(), m, first_held));
                }
            }
        }
        let gaps = seq.gaps();
        let got_gaps: Vec<(String, u64, u64)> = gaps
            .iter()
            .map(|g| (g.stream_id.clone(), g.expected, g.first_held))
            .collect();
        prop_assert_eq!(got_gaps, want_gaps);
        prop_assert!(gaps.iter().all(|g| g.since.is_some()));

        // Back-fill every stream from its next event to its end, as read from the table.
        for (stream, &count) in &sc.counts {
            let from = seq.last_delivered(stream) + 1;
            seq.fill(stream, table(stream, from..=count), &mut out).unwrap();
        }
        let got = delivered(&out);
        for (stream, &count) in &sc.counts {
            let want: Vec<u64> = (1..=count).collect();
            prop_assert_eq!(got.get(stream).cloned().unwrap_or_default(), want, "stream {}", stream);
        }
        prop_assert!(seq.gaps().is_empty());
        prop_assert_eq!(seq.held_count(), 0);
    }

    #[test]
    fn following_up_to_the_frontier_never_skips_an_object(seed in any::<u64>()) {
        let mut rng = Rng(fastrand::Rng::with_seed(seed));
        let timeout = 1 + rng.below(200) as i64;
        let margin = rng.below(50) as i64;
        let frontier = Frontier::new(timeout, margin);
        // (key, seal time by the archiver's clock, time the PUT becomes visible)
        let mut objects: Vec<(String, i64, i64)> = (0..rng.below(40))
            .map(|n| {
                let sealed_true = rng.below(2_000) as i64;
                let skew = rng.below(2 * margin as u64 + 1) as i64 - margin; // |skew| <= e
                let sealed = (sealed_true + skew).max(0);
                let visible = sealed_true + rng.below(timeout as u64 + 1) as i64;
                (format!("{sealed:012}-{n:04}"), sealed, visible)
            })
            .collect();
        objects.sort();
        let mut consumed: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut now = 0i64;
        while now < 3_000 {
            now += 1 + rng.below(120) as i64;
            // `now` is read before the listing.
            let listing: Vec<&(String, i64, i64)> = objects
                .iter()
                .filter(|(key, _, visible)| *visible <= now && cursor.as_ref().is_none_or(|c| key > c))
                .collect();
            let n = frontier.consumable(now, listing.iter().map(|o| o.1));
            for (key, sealed, _) in &listing[..n] {
                prop_assert!(frontier.is_settled(now, *sealed));
                consumed.push(key.clone());
                cursor = Some(key.clone());
            }
        }
        let all: Vec<String> = objects.iter().map(|o| o.0.clone()).collect();
        prop_assert_eq!(consumed, all);
    }
}

// ---------------------------------------------------------------------------
// The real `Replayer` (listing, read-ahead, follow mode, checkpoints) on the
// same scenarios, with objects appearing over time.

mod growing {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use evs_archive::Compression;
    use evs_archive::SequenceNumber;
    use evs_archive::{ArchiveKey, Prefix, Suffix};
    use evs_core::EventStore;
    use evs_replay::{
        Archive, Checkpoint, Frontier, Partition, ReplayError, ReplayOptions, Replayer, Step,
    };

    pub(crate) use super::common::MemorySink;
    use super::T0;

    /// What a run replays besides the archive and its timing.
    pub(crate) struct Setup {
        pub partition: Partition,
        pub since_ms: Option<i64>,
        /// The table to back-fill from.
        pub table: Option<Arc<dyn EventStore>>,
    }

    impl Setup {
        /// Every stream, from the start, no table.
        pub(crate) fn all() -> Self {
            Self {
                partition: Partition::ALL,
                since_ms: None,
                table: None,
            }
        }
    }

    pub(crate) struct Run {
        /// Every stream's delivered ids, in delivery order.
        pub delivered: BTreeMap<String, Vec<u64>>,
        pub gaps: usize,
        /// Checkpoint cursors that were past the settled frontier.
        pub cursor_violations: Vec<String>,
        /// Streams of other partitions found in a checkpoint.
        pub foreign_streams: Vec<String>,
        /// The error that stopped the replay, if one did.
        pub error: Option<ReplayError>,
    }

    /// The objects as (time they appear, key, body), the first to appear
    /// last; and the newest seal time.
    fn appearing(
        objects: &[super::Object],
        rng: &mut super::Rng,
        timeout: i64,
    ) -> (Vec<(i64, String, Vec<u8>)>, i64) {
        let prefix = Prefix::new("events/").unwrap_or_else(|_| Prefix::root());
        let mut pending: Vec<(i64, String, Vec<u8>)> = Vec::new();
        let mut last_seal = T0;
        for (i, object) in objects.iter().enumerate() {
            let sealed = T0 + object.pos.sealed_at_ms;
            last_seal = last_seal.max(sealed);
            let sequence = SequenceNumber::new(format!("{:021}", i + 1)).ok();
            let suffix = Suffix::new(sequence, uuid::Uuid::from_u128(u128::from(rng.next())));
            let key = ArchiveKey::new(&prefix, sealed, &suffix, Compression::None).unwrap();
            let mut body = String::new();
            for line in &object.lines {
                body.push_str(line.line());
                body.push('\n');
            }
            let appears = sealed + rng.below(timeout as u64 + 1) as i64;
            pending.push((appears, key.as_str().to_owned(), body.into_bytes()));
        }
        pending.sort_by_key(|p| p.0);
        pending.reverse(); // pop() yields the next to appear
        (pending, last_seal)
    }

    /// Records what is wrong with a checkpoint taken at reader time `t`: a
    /// stream of another partition, a cursor past the settled frontier.
    fn check(cp: &Checkpoint, t: i64, frontier: Frontier, setup: &Setup, run: &mut Run) {
        let streams = cp
            .last_delivered
            .keys()
            .chain(cp.held.iter().map(|h| &h.event.stream_id));
        let foreign = streams.filter(|s| !setup.partition.contains(s)).cloned();
        run.foreign_streams.extend(foreign);
        match cp.cursor.as_deref().map(ArchiveKey::parse) {
            Some(Ok(key)) if !frontier.is_settled(t, key.sealed_at_ms()) => {
                run.cursor_violations.push(key.as_str().to_owned());
            }
            // Before the first object of a replay from a time, its start
            // (objects sealed before it are not read).
            Some(Err(_)) if setup.since_ms.is_none() => {
                run.cursor_violations.push(format!("{:?}", cp.cursor));
            }
            _ => {}
        }
    }

    /// Replays `objects` (key order; seal times relative to `T0`) while they
    /// appear one by one within `timeout` of their seal time; the replay
    /// starts at a random moment, maybe first without following, and
    /// restarts from checkpoints at random steps. It stops at the first
    /// error that does not heal (kept in [`Run::error`]).
    pub(crate) fn run(objects: &[super::Object], rng: &mut super::Rng, setup: &Setup) -> Run {
        let timeout = 1 + rng.below(1_000) as i64;
        let margin = rng.below(100) as i64;
        let frontier = Frontier::new(timeout, margin);
        let gap_bound_ms = rng.below(2_000) as i64;
        let (mut pending, last_seal) = appearing(objects, rng, timeout);
        let prefix = Prefix::new("events/").unwrap_or_else(|_| Prefix::root());
        let sink = Arc::new(MemorySink::default());
        let now = Arc::new(AtomicI64::new(T0 + rng.below(2_500) as i64));
        let clock: evs_core::Clock = {
            let now = Arc::clone(&now);
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let publish = |pending: &mut Vec<(i64, String, Vec<u8>)>| {
            let t = now.load(Ordering::SeqCst);
            while pending.last().is_some_and(|p| p.0 <= t) {
                if let Some((_, key, body)) = pending.pop() {
                    sink.insert(key, body);
                }
            }
        };
        let options = |follow: bool, rng: &mut super::Rng| ReplayOptions {
            follow,
            frontier,
            gap_bound_ms,
            page_size: 1 + rng.index(4),
            read_ahead: 1 + rng.index(3),
            poll_ms: 1 + rng.below(300) as i64,
            partition: setup.partition,
            since_ms: setup.since_ms,
            ..ReplayOptions::default()
        };
        let with_table = |replayer: Replayer| match &setup.table {
            Some(table) => replayer.with_table(Arc::clone(table)),
            None => replayer,
        };
        let archive = || Archive::new(sink.clone(), prefix.clone());
        // Every object is read, and every gap is overdue, by then.
        let done_at = last_seal + 2 * (timeout + margin) + gap_bound_ms + 1;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut run = Run {
                delivered: BTreeMap::new(),
                gaps: 0,
                cursor_violations: Vec::new(),
                foreign_streams: Vec::new(),
                error: None,
            };
            let keep = |run: &mut Run, events: Vec<evs_replay::ReplayEvent>| {
                for e in events {
                    run.delivered
                        .entry(e.stream_id)
                        .or_default()
                        .push(e.event_id);
                }
            };
            publish(&mut pending);
            // Maybe a replay of what is there now, without following.
            let mut checkpoint: Option<Checkpoint> = None;
            if rng.chance(50) {
                let mut replayer =
                    with_table(Replayer::new(archive(), options(false, rng), clock.clone()));
                loop {
                    match replayer.next().await {
                        Ok(Step::Object { events, .. } | Step::Backfill { events, .. }) => {
                            keep(&mut run, events);
                        }
                        Ok(_) => break,
                        Err(e) => {
                            run.error = Some(e);
                            return run;
                        }
                    }
                }
                checkpoint = Some(replayer.checkpoint().unwrap());
            }
            let resume = |checkpoint: Option<Checkpoint>, rng: &mut super::Rng| {
                with_table(match checkpoint {
                    Some(c) => {
                        let json = c.to_json().unwrap();
                        let c = Checkpoint::from_json(&json).unwrap();
                        Replayer::resume(archive(), c, options(true, rng), clock.clone()).unwrap()
                    }
                    None => Replayer::new(archive(), options(true, rng), clock.clone()),
                })
            };
            let mut replayer = resume(checkpoint, rng);
            let mut idle_after_done = 0;
            for _ in 0..100_000 {
                let t = now.load(Ordering::SeqCst);
                let cp = replayer.checkpoint().unwrap();
                check(&cp, t, frontier, setup, &mut run);
                if rng.chance(3) {
                    replayer = resume(Some(cp), rng);
                }
                let step = match replayer.next().await {
                    Ok(step) => step,
                    Err(e) => {
                        run.error = Some(e);
                        break;
                    }
                };
                match step {
                    Step::Object { events, .. } | Step::Backfill { events, .. } => {
                        keep(&mut run, events);
                        now.fetch_add(rng.below(40) as i64, Ordering::SeqCst);
                    }
                    Step::Idle { until_ms } => {
                        if t >= done_at && pending.is_empty() {
                            idle_after_done += 1;
                            if idle_after_done >= 2 {
                                break;
                            }
                        }
                        // Wake at the time asked, or earlier.
                        let wake = t + rng.below((until_ms - t).max(1) as u64 + 1) as i64;
                        now.store(wake.max(t + 1), Ordering::SeqCst);
                    }
                    Step::End => unreachable!("following never ends"),
                    Step::Skipped { key, .. } => unreachable!("nothing is skipped: {key}"),
                }
                publish(&mut pending);
            }
            run.gaps = replayer.gaps().len();
            run
        })
    }
}

/// 1,000 cases unless `PROPTEST_CASES` says otherwise (each one runs the
/// real replayer with its own runtime).
fn io_config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 1_000;
    }
    config
}

proptest! {
    #![proptest_config(io_config())]

    #[test]
    fn the_replayer_on_a_growing_archive_delivers_every_event_once_in_order(seed in any::<u64>()) {
        let mut rng = Rng(fastrand::Rng::with_seed(seed));
        let sc = scenario(&mut rng);
        let run = growing::run(&sc.objects, &mut rng, &growing::Setup::all());
        prop_assert!(run.error.is_none(), "{:?}", run.error);
        // Every archived event reaches the archive eventually here, so all
        // are delivered: exactly once, in order, history into live.
        let archived = last_archived(&sc.objects);
        for (stream, &last) in &archived {
            let want: Vec<u64> = (1..=last).collect();
            prop_assert_eq!(run.delivered.get(stream).cloned().unwrap_or_default(), want, "stream {}", stream);
        }
        prop_assert_eq!(run.delivered.len(), archived.len());
        prop_assert_eq!(run.gaps, 0);
        prop_assert!(run.cursor_violations.is_empty(), "{:?}", run.cursor_violations);
    }

    #[test]
    fn partitions_together_deliver_the_whole_replay(seed in any::<u64>()) {
        // N workers, one per partition, each following the growing archive
        // with its own timing and restarts: each delivers only its streams
        // (and checkpoints only them), and together exactly every archived
        // event once, each stream in order.
        let mut rng = Rng(fastrand::Rng::with_seed(seed));
        let sc = scenario(&mut rng);
        let count = 1 + rng.below(4);
        let mut together: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for index in 0..count {
            let partition = evs_replay::Partition::new(index, count).unwrap();
            let setup = growing::Setup { partition, ..growing::Setup::all() };
            let run = growing::run(&sc.objects, &mut rng, &setup);
            prop_assert!(run.error.is_none(), "{:?}", run.error);
            prop_assert!(run.foreign_streams.is_empty(), "{:?}", run.foreign_streams);
            prop_assert_eq!(run.gaps, 0);
            prop_assert!(run.cursor_violations.is_empty(), "{:?}", run.cursor_violations);
            for (stream, ids) in run.delivered {
                prop_assert!(partition.contains(&stream), "{} in {}", stream, partition);
                prop_assert!(together.insert(stream, ids).is_none());
            }
        }
        let whole: BTreeMap<String, Vec<u64>> = last_archived(&sc.objects)
            .into_iter()
            .map(|(stream, last)| (stream, (1..=last).collect()))
            .collect();
        prop_assert_eq!(together, whole);
    }

    #[test]
    fn since_delivers_every_event_written_at_or_after_it(seed in any::<u64>()) {
        // A replay from a time following the growing archive, with
        // restarts: every event written at or after the time exactly once,
        // each stream in order from its first such event, and none written
        // before it. With the table, also when an object is lost (what a
        // later event shows missing is read from it); without one, a wrong
        // guess at where a stream starts stops the replay rather than lose
        // an event.
        let mut rng = Rng(fastrand::Rng::with_seed(seed));
        let mut sc = scenario(&mut rng);
        let since = rng.below(sc.writes.len() as u64 + 2);
        let table = rng.chance(50).then(|| table_of(&sc.writes));
        if table.is_some() && !sc.objects.is_empty() && rng.chance(50) {
            let lost = rng.index(sc.objects.len());
            sc.objects.remove(lost);
        }
        let setup = growing::Setup {
            since_ms: Some(T0 + since as i64),
            table: table.clone(),
            ..growing::Setup::all()
        };
        let run = growing::run(&sc.objects, &mut rng, &setup);
        let written: BTreeMap<(&str, u64), u64> = sc
            .writes
            .iter()
            .map(|w| ((w.stream.as_str(), w.id), w.ts))
            .collect();
        let want: BTreeMap<String, Vec<u64>> = last_archived(&sc.objects)
            .into_iter()
            .map(|(stream, last)| {
                let ids = (1..=last).filter(|&id| written[&(stream.as_str(), id)] >= since);
                (stream.clone(), ids.collect::<Vec<u64>>())
            })
            .filter(|(_, ids)| !ids.is_empty())
            .collect();
        match &run.error {
            None => {
                prop_assert_eq!(&run.delivered, &want);
                prop_assert_eq!(run.gaps, 0);
            }
            Some(error) => {
                prop_assert!(table.is_none(), "{}", error);
                prop_assert!(
                    matches!(
                        error,
                        evs_replay::ReplayError::Sequence(
                            evs_replay::SequenceError::SinceStartMissed { .. }
                        )
                    ),
                    "{}",
                    error
                );
                // What was delivered before the stop: in order, no repeat,
                // nothing written before the time.
                for (stream, ids) in &run.delivered {
                    prop_assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{} {:?}", stream, ids);
                    prop_assert!(ids.iter().all(|&id| written[&(stream.as_str(), id)] >= since));
                }
            }
        }
        prop_assert!(run.cursor_violations.is_empty(), "{:?}", run.cursor_violations);
    }
}

/// The table a scenario's writes make, each event's timestamp its write's.
fn table_of(writes: &[Record]) -> std::sync::Arc<dyn evs_core::EventStore> {
    use std::sync::atomic::{AtomicI64, Ordering};
    let at = std::sync::Arc::new(AtomicI64::new(T0));
    let clock: evs_core::Clock = {
        let at = std::sync::Arc::clone(&at);
        std::sync::Arc::new(move || at.load(Ordering::SeqCst))
    };
    let store = evs_core::MemoryStore::with_clock(clock);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        for write in writes {
            at.store(T0 + write.ts as i64, Ordering::SeqCst);
            let stream = evs_core::StreamId::new(write.stream.clone()).unwrap();
            let expected = evs_core::ExpectedVersion::Exact(write.id - 1);
            let event = evs_core::NewEvent::new("Written", json!({"id": write.id}));
            evs_core::EventStore::append(&store, &stream, expected, &[event])
                .await
                .unwrap();
        }
    });
    std::sync::Arc::new(store)
}

/// Every archived stream's highest archived event id.
fn last_archived(objects: &[Object]) -> BTreeMap<String, u64> {
    objects
        .iter()
        .flat_map(|o| o.lines.iter())
        .fold(BTreeMap::new(), |mut m, e| {
            let last = m.entry(e.stream_id.clone()).or_insert(0);
            *last = (*last).max(e.event_id);
            m
        })
}
