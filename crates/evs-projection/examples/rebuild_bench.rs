//! The replay driver's rebuild speed (`make bench`; not a test): a local
//! archive (`evs-replay`'s `gen_archive` makes one) replayed into an
//! in-memory read model, all streams or one `--partition i/N` of them.
//!
//! ```text
//! rebuild_bench ARCHIVE_DIR [--partition i/N]
//! ```
//!
//! Prints one JSON line: events applied, seconds, events/s. Run N of them at
//! once, one per part, to see the rebuild scale out.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use evs_archive::store::LocalDir;
use evs_archive::Prefix;
use evs_core::RecordedEvent;
use evs_projection::replay::{rebuild, replayer_for, RebuildOptions};
use evs_projection::{Applier, MemoryRowStore, Partition, Projection, RowKey};
use evs_replay::{Archive, ReplayOptions};
use serde_json::json;

/// Counts each stream's events and sums their payload sizes, one row per
/// stream: cheap, so the figure is the driver's own cost.
struct Counts;

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Projection for Counts {
    type Row = (u64, u64);
    type Error = Never;

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, Never> {
        Ok(vec![RowKey::of_stream("counts", event)])
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        _key: &RowKey,
        row: &mut Option<(u64, u64)>,
    ) -> Result<(), Never> {
        let state = row.get_or_insert((0, 0));
        state.0 += 1;
        state.1 += event.payload.as_object().map_or(0, |o| o.len() as u64);
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let usage = "usage: rebuild_bench ARCHIVE_DIR [--partition i/N]";
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect(usage);
    let partition: Partition = match (args.next().as_deref(), args.next()) {
        (Some("--partition"), Some(p)) => p.parse().unwrap(),
        (None, _) => Partition::ALL,
        _ => panic!("{usage}"),
    };
    let archive = Archive::new(
        Arc::new(LocalDir::new(dir)),
        Prefix::new("events/").unwrap(),
    );
    let store = MemoryRowStore::new();
    let clock = evs_core::system_clock();
    let replay_options = ReplayOptions {
        partition,
        ..ReplayOptions::default()
    };
    let mut replayer = replayer_for(archive, replay_options, clock.clone(), &store)
        .await
        .unwrap();
    let mut applier = Applier::new(Counts, store.clone());
    let options = RebuildOptions::default();
    let started = Instant::now();
    let report = rebuild(&mut applier, &mut replayer, &options, &clock, |_| {})
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "partition": partition.to_string(),
            "applied": report.applied,
            "otherPartitions": report.other_partitions,
            "streams": store.ledger().len(),
            "objects": report.objects,
            "seconds": (seconds * 100.0).round() / 100.0,
            "eventsPerSecond": (report.applied as f64 / seconds).round(),
        })
    );
}
