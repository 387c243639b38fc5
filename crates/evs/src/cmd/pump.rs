//! `evs pump`: the archiver outside Lambda, reading the table's stream itself.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use evs_core::Streak;
use evs_dynamodb::DynamoStore;
use evs_pump::{self as pump, BatchReport, DynamoDbSource, Options, Stop, StopHandle};
use serde_json::{json, Value};

use crate::flags::PumpArgs;

/// How long `--once` retries what may heal, when `--retry-for` is not given.
const DEFAULT_RETRY_FOR_ONCE: Duration = Duration::from_secs(300);

/// The checkpoint file when none is given: one per table, in the working directory.
fn default_checkpoint(table: &str) -> PathBuf {
    PathBuf::from(format!("evs-pump-{table}.json"))
}

/// The table's stream ARN; an outage is waited out as the pump's own reads
/// are ([`Options::retry_for`]).
async fn stream_arn(store: &DynamoStore, options: &Options) -> Result<Option<String>> {
    let mut streak = Streak::default();
    loop {
        match store.stream_arn().await {
            Ok(arn) => return Ok(arn),
            Err(e) => {
                let (failures, since) = streak.fail();
                if options.gives_up(failures, e.is_transient(), since) {
                    return Err(e.into());
                }
                let wait = options.backoff_policy().delay(failures);
                tracing::warn!("{e}; retrying in {wait:.1?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The lock file next to a checkpoint file.
fn lock_path(checkpoint: &Path) -> PathBuf {
    let mut name = checkpoint.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the exclusive lock of `checkpoint`: two pumps on one checkpoint
/// would both archive everything from the same position.
fn lock_checkpoint(checkpoint: &Path) -> Result<File> {
    let path = lock_path(checkpoint);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the pump's lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "another pump is running on checkpoint {} (it holds {}); stop it first, or give this \
             one its own --checkpoint-file",
            checkpoint.display(),
            path.display()
        )),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// One JSON object line: `fields` merged into `head`.
fn line(mut head: Value, fields: serde_json::Result<Value>) -> Value {
    if let (Value::Object(out), Ok(Value::Object(f))) = (&mut head, fields) {
        out.extend(f);
    }
    head
}

pub(super) async fn run(table: Option<String>, args: PumpArgs) -> Result<()> {
    let table = super::table_name(table)?;
    let config = super::location::config(args.archive.clone())?;
    let options = Options {
        batch_size: usize::try_from(args.batch_size).unwrap_or(usize::MAX),
        once: args.once,
        write_timeout: args.timeout,
        idle: args.poll_interval,
        // What cannot heal stops the pump at once; what may heal is retried
        // for --retry-for.
        max_attempts: 1,
        retry_for: match args.retry_for {
            Some(limit) if limit.is_zero() => None,
            Some(limit) => Some(limit),
            None if args.once => Some(DEFAULT_RETRY_FOR_ONCE),
            None => None,
        },
        ..Options::default()
    };
    options.validate()?;
    let checkpoint = args
        .checkpoint_file
        .clone()
        .unwrap_or_else(|| default_checkpoint(&table));
    // Held until the pump ends; the system releases it when the process
    // dies, so a crashed pump never leaves it held.
    let _lock = lock_checkpoint(&checkpoint)?;

    let store = DynamoStore::new(crate::aws::dynamodb().await?, table.clone());
    let arn = stream_arn(&store, &options).await?.with_context(|| {
        format!(
            "table {table} has no DynamoDB stream: create it with `evs table create` (NEW_IMAGE)"
        )
    })?;
    let sink = super::location::sink(&config).await?;
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
