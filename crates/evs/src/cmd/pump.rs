//! `evs pump`: the archiver outside Lambda, reading the table's stream itself.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use evs_archiver::pump::{self, BatchReport, DynamoDbSource, Options, Stop, StopHandle};
use evs_core::DynamoStore;
use serde_json::{json, Value};

use crate::flags::PumpArgs;

/// The checkpoint file when none is given: one per table, in the working directory.
fn default_checkpoint(table: &str) -> PathBuf {
    PathBuf::from(format!("evs-pump-{table}.json"))
}

/// One JSON object line: `fields` merged into `head`.
fn line(mut head: Value, fields: serde_json::Result<Value>) -> Value {
    if let (Value::Object(out), Ok(Value::Object(f))) = (&mut head, fields) {
        out.extend(f);
    }
    head
}

pub async fn run(table: Option<String>, args: PumpArgs) -> Result<()> {
    let table = table.context("no table given: pass --table NAME or set EVS_TABLE")?;
    let config = super::location::config(args.archive.clone())?;
    let options = Options {
        batch_size: usize::try_from(args.batch_size).unwrap_or(usize::MAX),
        once: args.once,
        write_timeout: Duration::from_secs(args.timeout),
        ..Options::default()
    };
    options.validate()?;

    let store = DynamoStore::new(crate::aws::dynamodb().await?, table.clone());
    let arn = store.stream_arn().await?.with_context(|| {
        format!(
            "table {table} has no DynamoDB stream: create it with `evs table create` (NEW_IMAGE)"
        )
    })?;
    let sink = super::location::sink(&config).await?;
    let checkpoint = args
        .checkpoint_file
        .clone()
        .unwrap_or_else(|| default_checkpoint(&table));
    let mut source = DynamoDbSource::open(
        crate::aws::dynamodbstreams().await?,
        &arn,
        Some(checkpoint.clone()),
    )?;

    let (handle, stop) = Stop::channel();
    let handle: Arc<StopHandle> = Arc::new(handle);
    let on_signal = handle.clone();
    let signals = tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::warn!("stopping after the current batch");
        on_signal.stop();
    });

    // Progress lines; if stdout goes away, stop the pump cleanly and report it.
    let location = sink.location();
    let write_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let mut report = {
        let write_error = write_error.clone();
        let handle = handle.clone();
        move |r: &BatchReport| {
            let text = line(json!({ "archive": location }), serde_json::to_value(r)).to_string();
            let mut out = std::io::stdout().lock();
            if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
                if let Ok(mut slot) = write_error.lock() {
                    slot.get_or_insert(e);
                }
                handle.stop();
            }
        }
    };
    let result = pump::run(
        &mut source,
        sink.as_ref(),
        &config,
        &options,
        stop,
        &mut report,
    )
    .await;
    signals.abort();
    if let Some(e) = write_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e).context("cannot write progress to stdout");
    }
    let summary = result.with_context(|| {
        format!(
            "pump of stream {arn} failed (checkpoint {} keeps what was archived)",
            checkpoint.display()
        )
    })?;
    let done = line(
        json!({
            "stream": arn,
            "archive": sink.location(),
            "checkpointFile": checkpoint.display().to_string(),
        }),
        serde_json::to_value(&summary),
    );
    println!("{done}");
    Ok(())
}
