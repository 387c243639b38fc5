//! `evs-pump` (also run as `evs pump`): the archiver outside Lambda,
//! reading the table's DynamoDB stream itself. A binary of its own so that
//! `evs` compiles no DynamoDB Streams SDK; `evs` runs it with argv[0] `evs
//! pump`, and its help and errors then name it so. Exit codes: 0 success
//! (also when stopped by Ctrl-C or SIGTERM after the current batch), 1 any
//! error, 2 bad usage.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser};
use evs_cli::{duration, positive_duration};
use evs_core::Streak;
use evs_dynamodb::DynamoStore;
use evs_pump::{self as pump, BatchReport, DynamoDbSource, Options, Stop, StopHandle};
use serde_json::{json, Value};

/// Run the archiver outside Lambda: read the table's DynamoDB stream
/// (every shard, a parent before its children) and archive each batch
/// with the Lambda's own handler.
///
/// Prints one JSON line per batch (shard, key, counts) and a summary line
/// at the end. The position is checkpointed in a file after every batch,
/// so a restart resumes where the last run stopped; a second pump on the
/// same checkpoint is refused while one runs. A failed or overdue write
/// is retried under a new key; an outage (refused connections, timeouts,
/// 5xx, throttling) is waited out for --retry-for, each failure reported
/// on stderr; what cannot heal (credentials, a missing bucket or stream)
/// stops the pump at once, committing nothing unwritten. Without --once
/// it polls every --poll-interval until Ctrl-C or SIGTERM, then stops
/// after the current batch (exit 0).
///
/// AWS settings come from the standard environment (AWS_REGION,
/// AWS_ENDPOINT_URL, AWS_PROFILE, credentials). Every AWS call has a
/// connect and a call timeout (--connect-timeout, --call-timeout); a call
/// that times out is reported and retried like a refused connection.
#[derive(Debug, Parser)]
#[command(name = "evs-pump", version, max_term_width = 100)]
struct Cli {
    /// The events table.
    #[arg(long, env = "EVS_TABLE", value_name = "NAME")]
    table: Option<String>,

    /// Log filter for diagnostics on stderr (e.g. `debug`, `evs_pump=trace`).
    #[arg(
        long,
        env = "EVS_LOG",
        default_value = "warn,aws=error",
        value_name = "FILTER"
    )]
    log: String,

    #[command(flatten)]
    timeouts: evs_cli::aws::Timeouts,

    #[command(flatten)]
    pump: PumpArgs,
}

/// How this binary was run: `evs pump` when `evs` ran it (its argv[0]),
/// else `evs-pump`.
fn invoked_as() -> &'static str {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    if arg0 == "evs pump" {
        "evs pump"
    } else {
        "evs-pump"
    }
}

fn main() -> ExitCode {
    let name = invoked_as();
    let matches = Cli::command()
        .bin_name(name)
        .override_usage(format!("{name} [OPTIONS]"))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    evs_cli::aws::configure(cli.timeouts);
    let Some(runtime) = evs_cli::start(name, &cli.log) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(cli.table, cli.pump)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => evs_cli::exit(name, &err, |_| None),
    }
}

/// `evs-pump`
#[derive(Debug, Args)]
struct PumpArgs {
    /// Where the archive goes: a local directory or `s3://BUCKET/PREFIX/`
    /// (default: `./archive`). Other settings come from the archiver's
    /// environment variables (`EVS_ARCHIVE_PREFIX`, `EVS_COMPRESSION`, …).
    #[arg(long, env = "EVS_ARCHIVE", value_name = "DIR|s3://BUCKET/PREFIX")]
    archive: Option<String>,

    /// Most records per batch: one GetRecords call, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch_size: u64,

    /// Stop once every shard is caught up, instead of polling for more.
    #[arg(long)]
    once: bool,

    /// Hard deadline on each batch's object writes (the Lambda function
    /// timeout; readers' `--archiver-timeout` must be at least this).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    timeout: Duration,

    /// Polling: the wait between two reads of a caught-up stream.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    poll_interval: Duration,

    /// Give up once reading the stream or writing the archive has failed
    /// for this long in a row (a refused connection, 5xx, throttling; each
    /// failure is retried with capped, jittered backoff and reported on
    /// stderr). `0` never gives up. Default: never when polling, 5m with
    /// --once. Credentials, a missing table or bucket stop the pump at once.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    retry_for: Option<Duration>,

    /// Where the pump keeps its position in the stream (JSON, rewritten
    /// atomically after every batch; created on the first). Default:
    /// `evs-pump-<TABLE>.json` in the working directory. A file written for
    /// another stream is refused. The pump locks `<FILE>.lock` while it runs.
    #[arg(long, env = "EVS_PUMP_CHECKPOINT", value_name = "FILE")]
    checkpoint_file: Option<PathBuf>,
}

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
                tracing::warn!("{e}; {}", evs_core::retry::retrying(failures, since, wait));
                tokio::time::sleep(wait).await;
            }
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

async fn run(table: Option<String>, args: PumpArgs) -> Result<()> {
    let table = evs_cli::table_name(table)?;
    let config = evs_cli::location::config(args.archive.clone())?;
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
    let _lock = evs_cli::lock_checkpoint(&checkpoint, "pump", "--checkpoint-file")?;

    let store = DynamoStore::new(evs_cli::aws::dynamodb().await?, table.clone());
    let arn = stream_arn(&store, &options).await?.with_context(|| {
        format!(
            "table {table} has no DynamoDB stream: create it with `evs table create` (NEW_IMAGE)"
        )
    })?;
    let sink = evs_cli::location::sink(&config).await?;
    let mut source = DynamoDbSource::open(
        evs_pump::dynamodb::client_for(&evs_cli::aws::load().await?),
        &arn,
        Some(checkpoint.clone()),
    )?;

    let (handle, stop) = Stop::channel();
    let handle: Arc<StopHandle> = Arc::new(handle);
    let on_signal = handle.clone();
    let signals = tokio::spawn(async move {
        evs_cli::shutdown_signal().await;
        tracing::warn!("stopping after the current batch");
        on_signal.stop();
    });

    // Progress lines; if stdout goes away, stop the pump cleanly and report it.
    let location = evs_cli::location::describe(&config);
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
            "archive": evs_cli::location::describe(&config),
            "checkpointFile": checkpoint.display().to_string(),
        }),
        serde_json::to_value(&summary),
    );
    println!("{done}");
    Ok(())
}
