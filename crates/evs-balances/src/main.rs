//! The balances live driver as a Lambda on the events table's stream: read
//! the configuration once, build the stores once, and hand every invocation
//! to [`evs_balances::handle`].
//!
//! Environment: `EVS_BALANCES_TABLE` (the read model's table) and
//! `EVS_EVENTS_TABLE` (the events table, read to fill a stream's holes).

use std::sync::Arc;

use anyhow::Context;
use evs_balances::{Balances, NAMESPACE};
use evs_core::EventStore;
use evs_dynamodb::DynamoStore;
use evs_projection::{Applier, DynamoLayout, DynamoRowStore};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;
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
    tracing::info!(table = store.table(), "balances live driver ready");
    // One invocation at a time per process: the lock is never contended; it
    // keeps the applier's cache of committed states across invocations.
    let applier = &Mutex::new(Applier::new(Balances, store).with_table(events));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let mut applier = applier.lock().await;
            let report = evs_balances::handle(&mut applier, event.payload.get(), evs_core::now_ms())
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
            Ok::<_, Error>(report.response())
        },
    ))
    .await
}
