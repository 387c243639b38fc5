//! Offline demo of the write path: concurrent writers on the in-memory store
//! go through the decide loop; every command lands once, in order, and a
//! refused command writes nothing. Run with
//! `cargo run -p evs-core --example write_path`.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use evs_core::{
    decide, Aggregate, DecideError, EventStore, EventStoreExt, MemoryStore, NewEvent, RetryPolicy,
    StreamId,
};
use serde_json::json;

#[derive(Debug, Default, Clone)]
struct Account {
    balance: i64,
}

fn fold(account: &mut Account, event: &evs_core::RecordedEvent) {
    account.balance = event.payload["balance"].as_i64().unwrap_or(account.balance);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(MemoryStore::new());
    let writers = 8;
    let streams = 20;
    let deposits_per_writer = 50;
    let started = Instant::now();

    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for i in 0..deposits_per_writer {
                let stream = StreamId::new(format!("account-{}", (w * 7 + i) % streams))?;
                let mut account = Aggregate::new(Account::default());
                let done = decide(
                    store.as_ref(),
                    &stream,
                    &mut account,
                    fold,
                    |a: &Account| -> Result<_, String> {
                        Ok(vec![NewEvent::new(
                            "Deposited",
                            json!({ "amount": 10, "balance": a.balance + 10 }),
                        )])
                    },
                    &RetryPolicy::default(),
                )
                .await?;
                conflicts += done.attempts - 1;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(conflicts)
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await?.map_err(|e| e.to_string())?;
    }
    let total = writers * deposits_per_writer;
    println!("{writers} writers made {total} deposits on {streams} accounts in {:?} ({conflicts} conflicts retried by the decide loop)", started.elapsed());

    let mut sum = 0;
    for id in store.stream_ids() {
        let events = store.read_all(&id).await?;
        let contiguous = events.iter().zip(1..).all(|(e, n)| e.event_id == n);
        let balance = events
            .last()
            .map_or(0, |e| e.payload["balance"].as_i64().unwrap_or(0));
        assert!(contiguous, "stream {id} has a gap");
        sum += balance;
    }
    println!(
        "every stream is contiguous from EventId 1; balances add up to {sum} (expected {})",
        total * 10
    );

    // A refused command writes nothing.
    let stream = StreamId::new("account-0")?;
    let before = store.version(&stream).await?;
    let refused = decide(
        store.as_ref(),
        &stream,
        &mut Aggregate::new(Account::default()),
        fold,
        |a: &Account| -> Result<Vec<NewEvent>, String> {
            Err(format!(
                "cannot withdraw 1000000 from a balance of {}",
                a.balance
            ))
        },
        &RetryPolicy::default(),
    )
    .await;
    if let Err(DecideError::Rejected(why)) = refused {
        let after = store.version(&stream).await?;
        assert_eq!(before, after, "a refused command wrote");
        println!("refused: {why}; {stream} stays at version {after}");
    }
    let (feed, _) = store.changes(0, usize::MAX);
    println!(
        "the change feed holds {} INSERT records shaped like DynamoDB Streams records",
        feed.len()
    );
    let _ = store
        .append(
            &stream,
            evs_core::ExpectedVersion::NoStream,
            &[NewEvent::new("Opened", json!({}))],
        )
        .await
        .map_err(|e| println!("a stale writer is refused: {e}"));
    Ok(())
}
