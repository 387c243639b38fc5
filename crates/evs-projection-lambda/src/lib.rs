//! Any projection as a Lambda, from a main of a few lines: one bootstrap for
//! both functions of a projection's stack. An invocation of SQS messages is
//! the reconciler's (the live mapping's on-failure queue:
//! [`evs_pump::reconcile`]), any other the live driver's (a batch of the
//! events table's stream records: [`evs_projection::live::apply_event`],
//! answered with `batchItemFailures`). The stores are built once; the
//! applier keeps its cache of committed rows and ledger across invocations
//! (one at a time per process); each invocation prints its metrics as one
//! CloudWatch Embedded Metric Format line and logs what failed, parked or
//! was not an event.
//!
//! ```no_run
//! # use evs_projection::{DynamoLayout, Projection};
//! # fn example<P: Projection + 'static>(projection: P) -> Result<(), lambda_runtime::Error>
//! # where P::Row: serde::Serialize + serde::de::DeserializeOwned + 'static {
//! let function = evs_projection_lambda::Function {
//!     projection,
//!     table: evs_projection_lambda::env("MY_READ_MODEL_TABLE")?,
//!     layout: DynamoLayout::Rows,
//!     events_table: evs_projection_lambda::env("EVS_EVENTS_TABLE")?,
//!     namespace: "my/read-model",
//!     rebuild: "rebuild the read model from the archive",
//! };
//! evs_projection_lambda::main(function)
//! # }
//! ```

use std::sync::Arc;

use anyhow::Context;
use evs_core::EventStore;
use evs_dynamodb::DynamoStore;
use evs_projection::live::apply_event;
use evs_projection::{Applier, DynamoLayout, DynamoRowStore, Projection};
use evs_pump::reconcile::{invocation, reconcile, Invocation, StreamRanges};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::Mutex;

/// What a projection's functions need.
#[derive(Debug, Clone)]
pub struct Function<P> {
    /// The projection.
    pub projection: P,
    /// The read model's DynamoDB table.
    pub table: String,
    /// The table's layout.
    pub layout: DynamoLayout,
    /// The events table: read to fill a stream's holes and to catch streams
    /// up.
    pub events_table: String,
    /// The CloudWatch namespace of the metrics (`Parked` alarms there).
    pub namespace: &'static str,
    /// What an operator does for streams whose range the stream no longer
    /// holds (the reconciler logs it), e.g. "run `my-cli rebuild`".
    pub rebuild: &'static str,
}

/// The environment variable `name`, or an error naming it.
pub fn env(name: &str) -> Result<String, Error> {
    Ok(std::env::var(name).with_context(|| format!("{name} is not set"))?)
}

/// Starts the logging and an async runtime and serves `function` until the
/// runtime stops (a Lambda's `main`).
pub fn main<P>(function: Function<P>) -> Result<(), Error>
where
    P: Projection + 'static,
    P::Row: Serialize + DeserializeOwned + 'static,
{
    lambda_runtime::tracing::init_default_subscriber();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(function))
}

/// Serves `function` on the Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`).
pub async fn run<P>(function: Function<P>) -> Result<(), Error>
where
    P: Projection + 'static,
    P::Row: Serialize + DeserializeOwned + 'static,
{
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&shared);
    let events: Arc<dyn EventStore> =
        Arc::new(DynamoStore::new(client.clone(), function.events_table));
    let store = Arc::new(DynamoRowStore::new(client, function.table, function.layout));
    let ranges = &StreamRanges(evs_pump::dynamodb::client_for(&shared));
    tracing::info!(table = store.table(), layout = ?store.layout(), "projection functions ready");
    let (namespace, rebuild) = (function.namespace, function.rebuild);
    // One invocation at a time per process: the lock is never contended; it
    // keeps the applier's cache across invocations.
    let applier = &Mutex::new(Applier::new(function.projection, store).with_table(events));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let mut applier = applier.lock().await;
            let text = event.payload.get();
            match invocation(text) {
                Invocation::Stream => live(&mut applier, text, namespace).await,
                Invocation::Queue => queue(&mut applier, ranges, text, namespace, rebuild).await,
            }
        },
    ))
    .await
}

/// The live driver: one batch of stream records.
async fn live<P>(
    applier: &mut Applier<P, Arc<DynamoRowStore>>,
    text: &str,
    namespace: &str,
) -> Result<Value, Error>
where
    P: Projection,
    P::Row: Serialize + DeserializeOwned + 'static,
{
    let report = apply_event(applier, text, evs_core::now_ms())
        .await
        .inspect_err(|err| tracing::error!(error = %err, "not a batch of stream records"))?;
    for (stream, event_id, error) in report.batch.failures() {
        tracing::warn!(stream, event_id, error = %evs_core::describe_chain(error), "stream not applied; retried from here");
    }
    for (stream, parked) in report.batch.parked() {
        tracing::error!(stream, event_id = parked.event_id, event_name = %parked.event_name, reason = %parked.reason, "stream parked: its later events wait until it is resumed");
    }
    for dead in &report.dead_letters {
        tracing::warn!(reason = ?dead.reason, detail = %dead.detail, "record is not an event; skipped");
    }
    tracing::info!(
        records_in = report.records_in,
        applied = report.batch.applied(),
        skipped = report.batch.skipped(),
        commits = report.batch.commits,
        conflicts = report.batch.conflicts,
        batch_item_failures = report.retry.len(),
        "batch applied"
    );
    println!("{}", report.emf_line(namespace, evs_core::now_ms()));
    Ok(report.response())
}

/// The reconciler: one batch of on-failure messages.
async fn queue<P>(
    applier: &mut Applier<P, Arc<DynamoRowStore>>,
    ranges: &StreamRanges,
    text: &str,
    namespace: &str,
    rebuild: &str,
) -> Result<Value, Error>
where
    P: Projection,
    P::Row: Serialize + DeserializeOwned + 'static,
{
    let report = reconcile(applier, ranges, text)
        .await
        .inspect_err(|err| tracing::error!(error = %err, "not a batch of SQS messages"))?;
    report.log(rebuild);
    println!("{}", report.emf_line(namespace, evs_core::now_ms()));
    Ok(report.response())
}
