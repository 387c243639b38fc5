//! The DynamoDB row store on the emulator (`make bench`; not a test): what a
//! commit carries and what a hot row costs.
//!
//! 1. A rebuild's shape: one applier, `EVENTS` events over 1,000 order
//!    streams in batches of 1,000, each event touching its customer's row and
//!    its day's row (the orders example's shape): commits, events a commit,
//!    commits/s and events/s.
//! 2. The hot row: 8 appliers at once (8 concurrent live batches of 100
//!    events, each on streams of its own), every event also touching one
//!    global row: commits, commits lost to another applier and retried, and
//!    the global row checked against the number of events (none lost).
//!
//! ```text
//! EVS_MOTO_SERVER=.venv/bin/moto_server cargo run --release -p evs-projection --example dynamo_bench [EVENTS]
//! ```
//!
//! The emulator serialises requests, so absolute rates are the emulator's;
//! the counts (events a commit, conflicts, nothing lost) are the store's.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use evs_core::{RecordedEvent, StreamId};
use evs_projection::{
    Applier, ApplyOptions, DynamoLayout, DynamoRowStore, Projection, RowKey, RowStore,
};
use evs_testkit::{unique_name, Moto};
use serde_json::json;

/// Counts events per customer, per day and (with `global`) in one row.
struct Counts {
    global: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Count {
    events: u64,
}

impl Projection for Counts {
    type Row = Count;
    type Error = Never;

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, Never> {
        let customer = event.payload["customerId"].as_str().unwrap_or("none");
        let mut keys = vec![
            RowKey::new("customers", customer),
            RowKey::new("daily", "2026-12-07"),
        ];
        if self.global {
            keys.push(RowKey::new("all", "orders"));
        }
        Ok(keys)
    }

    fn apply(&self, _: &RecordedEvent, _: &RowKey, row: &mut Option<Count>) -> Result<(), Never> {
        row.get_or_insert_with(Count::default).events += 1;
        Ok(())
    }
}

/// `count` events of streams `order-<prefix>-<n>`, each stream's in order.
fn events(prefix: &str, streams: u64, count: u64) -> Vec<RecordedEvent> {
    let mut next = vec![0u64; streams as usize];
    (0..count)
        .map(|i| {
            let s = i % streams;
            next[s as usize] += 1;
            RecordedEvent {
                stream_id: StreamId::new(format!("order-{prefix}-{s}")).unwrap(),
                event_id: next[s as usize],
                name: "OrderPlaced".into(),
                payload: json!({"customerId": format!("c-{}", i % 200)}),
                timestamp_ms: 1_796_000_000_000,
                id: None,
                metadata: None,
                attributes: Default::default(),
            }
        })
        .collect()
}

async fn store(moto: &Moto, name: &str) -> Arc<DynamoRowStore> {
    let store = DynamoRowStore::new(moto.dynamodb().await, unique_name(name), DynamoLayout::Rows);
    store.create_table().await.unwrap();
    Arc::new(store)
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .map_or(5_000, |n| n.parse().unwrap());
    let moto = Moto::start().expect("the emulator (EVS_MOTO_SERVER)");

    // 1. a rebuild's shape
    let rebuild = store(&moto, "rebuild").await;
    let mut applier = Applier::new(Counts { global: false }, Arc::clone(&rebuild));
    let all = events("r", 1_000, total);
    let started = Instant::now();
    let (mut commits, mut conflicts) = (0, 0);
    for batch in all.chunks(1_000) {
        let report = applier.apply_batch(batch).await;
        assert!(report.failures().next().is_none(), "{report:?}");
        commits += report.commits;
        conflicts += report.conflicts;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "case": "rebuild: batches of 1,000 events over 1,000 streams, customer and day rows",
            "events": total,
            "commits": commits,
            "conflicts": conflicts,
            "eventsPerCommit": (total as f64 / commits as f64 * 10.0).round() / 10.0,
            "commitsPerSecond": (commits as f64 / seconds * 10.0).round() / 10.0,
            "eventsPerSecond": (total as f64 / seconds).round(),
        })
    );

    // 2. the hot row under 8 concurrent live batches
    let hot = store(&moto, "hot").await;
    let per_task = total / 8;
    let started = Instant::now();
    let tasks = (0..8).map(|t| {
        let hot = Arc::clone(&hot);
        tokio::spawn(async move {
            let options = ApplyOptions {
                max_conflicts: 1_000,
                ..ApplyOptions::default()
            };
            let mut applier = Applier::new(Counts { global: true }, hot).with_options(options);
            let (mut commits, mut conflicts) = (0, 0);
            for batch in events(&format!("t{t}"), 50, per_task).chunks(100) {
                let report = applier.apply_batch(batch).await;
                assert!(report.failures().next().is_none(), "{report:?}");
                commits += report.commits;
                conflicts += report.conflicts;
            }
            (commits, conflicts)
        })
    });
    let (mut commits, mut conflicts) = (0, 0);
    for task in futures_util::future::join_all(tasks).await {
        let (c, x) = task.unwrap();
        commits += c;
        conflicts += x;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows = RowStore::<Count>::rows(hot.as_ref()).await.unwrap();
    let global = rows
        .iter()
        .find(|(k, _)| k.model == "all")
        .map_or(0, |(_, r)| r.events);
    println!(
        "{}",
        json!({
            "case": "hot row: 8 concurrent live batches of 100 events, every event on one global row",
            "events": per_task * 8,
            "commits": commits,
            "conflictsRetried": conflicts,
            "globalRow": global,
            "lost": per_task * 8 - global,
            "eventsPerSecond": ((per_task * 8) as f64 / seconds).round(),
        })
    );
    assert_eq!(global, per_task * 8, "the global row lost updates");
}
