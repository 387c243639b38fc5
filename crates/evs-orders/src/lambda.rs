//! Both Lambda functions of the stack, one bootstrap: an invocation of SQS
//! messages is the reconciler's (the on-failure queue), any other the live
//! driver's (the events table's stream). The configuration is read once,
//! the stores built once; one invocation at a time per process.
//!
//! Environment: `EVS_READ_MODEL` (`dynamodb:TABLE`) and `EVS_EVENTS_TABLE`
//! (read to fill a stream's holes and to catch streams up).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use evs_core::EventStore;
use evs_dynamodb::DynamoStore;
use evs_orders::{invocation, Invocation, Orders, ReadModel, StreamRanges, NAMESPACE};
use evs_projection::{Applier, DynamoLayout, DynamoRowStore};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::Mutex;

pub(crate) fn main() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the function stopped");
            ExitCode::FAILURE
        }
    }
}

type Store = Arc<DynamoRowStore>;

async fn run() -> Result<(), lambda_runtime::Error> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let read_model: ReadModel = var("EVS_READ_MODEL")?.parse().context("EVS_READ_MODEL")?;
    let ReadModel::DynamoDb(table) = read_model else {
        return Err(anyhow!(
            "EVS_READ_MODEL must be dynamodb:TABLE under Lambda (a memory: read model is lost between invocations)"
        )
        .into());
    };
    let events_table = var("EVS_EVENTS_TABLE")?;
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&shared);
    let events: Arc<dyn EventStore> = Arc::new(DynamoStore::new(client.clone(), events_table));
    let store: Store = Arc::new(DynamoRowStore::new(
        client,
        table.clone(),
        DynamoLayout::Rows,
    ));
    let streams = StreamRanges(evs_pump::dynamodb::client_for(&shared));
    tracing::info!(table, "orders functions ready");
    // One invocation at a time per process: the lock is never contended; it
    // keeps the applier's cache of committed rows and ledger across invocations.
    let applier = &Mutex::new(Applier::new(Orders, store).with_table(events));
    let streams = &streams;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let mut applier = applier.lock().await;
            let text = event.payload.get();
            match invocation(text) {
                Invocation::Stream => live(&mut applier, text).await,
                Invocation::Queue => reconcile(&mut applier, streams, text).await,
            }
        },
    ))
    .await
}

/// The live driver: one batch of stream records.
async fn live(
    applier: &mut Applier<Orders, Store>,
    text: &str,
) -> Result<Value, lambda_runtime::Error> {
    let report = evs_orders::handle_stream(applier, text, evs_core::now_ms())
        .await
        .inspect_err(|err| tracing::error!(error = %err, "not a batch of stream records"))?;
    for (stream, event_id, error) in report.batch.failures() {
        tracing::warn!(stream, event_id, error = %evs_core::describe_chain(error), "stream not applied; retried from here");
    }
    for (stream, parked) in report.batch.parked() {
        tracing::error!(stream, event_id = parked.event_id, event_name = %parked.event_name, reason = %parked.reason, "stream parked: its later events wait until `evs-orders resume`");
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
    applier: &mut Applier<Orders, Store>,
    streams: &StreamRanges,
    text: &str,
) -> Result<Value, lambda_runtime::Error> {
    let report = evs_orders::reconcile(applier, streams, text)
        .await
        .inspect_err(|err| tracing::error!(error = %err, "not a batch of SQS messages"))?;
    report.log("run `evs-orders rebuild` (it skips every event already applied)");
    println!("{}", report.emf_line(NAMESPACE, evs_core::now_ms()));
    Ok(report.response())
}
