//! Both Lambda functions of the balances stack, one bootstrap: an invocation
//! of SQS messages is the reconciler's (the live driver's on-failure queue,
//! [`evs_balances::reconcile`]), any other the live driver's (the events
//! table's stream, [`evs_balances::handle`]). The configuration is read
//! once, the stores built once; one invocation at a time per process.
//!
//! Environment: `EVS_BALANCES_TABLE` (the read model's table) and
//! `EVS_EVENTS_TABLE` (the events table, read to fill a stream's holes and
//! to catch streams up).

use std::sync::Arc;

use anyhow::Context;
use evs_balances::{invocation, Balances, Invocation, StreamRanges, NAMESPACE};
use evs_core::EventStore;
use evs_dynamodb::DynamoStore;
use evs_projection::{Applier, DynamoLayout, DynamoRowStore};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let (balances_table, events_table) = (var("EVS_BALANCES_TABLE")?, var("EVS_EVENTS_TABLE")?);
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&shared);
    let events: Arc<dyn EventStore> = Arc::new(DynamoStore::new(client.clone(), events_table));
    let store = DynamoRowStore::new(client, balances_table, DynamoLayout::PerStream);
    let ranges = &StreamRanges(evs_pump::dynamodb::client_for(&shared));
    tracing::info!(table = store.table(), "balances functions ready");
    // One invocation at a time per process: the lock is never contended; it
    // keeps the applier's cache of committed states across invocations.
    let applier = &Mutex::new(Applier::new(Balances, store).with_table(events));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let mut applier = applier.lock().await;
            let text = event.payload.get();
            match invocation(text) {
                Invocation::Stream => live(&mut applier, text).await,
                Invocation::Queue => reconcile(&mut applier, ranges, text).await,
            }
        },
    ))
    .await
}

/// The live driver: one batch of stream records.
async fn live(applier: &mut Applier<Balances, DynamoRowStore>, text: &str) -> Result<Value, Error> {
    let report = evs_balances::handle(applier, text, evs_core::now_ms())
        .await
        .inspect_err(|err| tracing::error!(error = %err, "not a batch of stream records"))?;
    for (stream, event_id, error) in report.batch.failures() {
        tracing::warn!(stream, event_id, error = %evs_core::describe_chain(error), "stream not applied; retried from here");
    }
    for (stream, parked) in report.batch.parked() {
        tracing::error!(stream, event_id = parked.event_id, reason = %parked.reason, "stream parked: its later events wait until it is resumed");
    }
    for dead in &report.dead_letters {
        tracing::warn!(reason = ?dead.reason, detail = %dead.detail, "record is not an event; skipped");
    }
    tracing::info!(
        records_in = report.records_in,
        applied = report.batch.applied(),
        skipped = report.batch.skipped(),
        batch_item_failures = report.retry.len(),
        "batch applied"
    );
    println!("{}", report.emf_line(NAMESPACE, evs_core::now_ms()));
    Ok(report.response())
}

/// The reconciler: one batch of on-failure messages.
async fn reconcile(
    applier: &mut Applier<Balances, DynamoRowStore>,
    ranges: &StreamRanges,
    text: &str,
) -> Result<Value, Error> {
    let report = evs_balances::reconcile(applier, ranges, text)
        .await
        .inspect_err(|err| tracing::error!(error = %err, "not a batch of SQS messages"))?;
    report.log("rebuild the balances from the archive (evs_projection::replay::rebuild; it skips every event already applied)");
    println!("{}", report.emf_line(NAMESPACE, evs_core::now_ms()));
    Ok(report.response())
}
