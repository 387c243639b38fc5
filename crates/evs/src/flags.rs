//! Every flag of `evs`, with its help text, in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Event store on DynamoDB: create the table, append events, read streams.
///
/// AWS settings come from the standard environment (AWS_REGION,
/// AWS_ENDPOINT_URL, AWS_PROFILE, credentials), so the same binary talks to
/// AWS or to a local emulator.
#[derive(Debug, Parser)]
#[command(name = "evs", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// The events table.
    #[arg(long, global = true, env = "EVS_TABLE", value_name = "NAME")]
    pub table: Option<String>,

    /// Log filter for diagnostics on stderr (e.g. `debug`, `evs_core=trace`).
    #[arg(
        long,
        global = true,
        env = "EVS_LOG",
        default_value = "warn",
        value_name = "FILTER"
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the events table.
    #[command(subcommand)]
    Table(TableCommand),
    /// Append events to a stream, atomically, with an expected version.
    ///
    /// Prints the stream's new version as JSON. Exits with code 3 on a version
    /// conflict, naming the stream's actual version.
    Append(AppendArgs),
    /// Read a stream as NDJSON, one event a line.
    Read(ReadArgs),
    /// Run the archiver's handler on DynamoDB Streams event files, in turn,
    /// as the Lambda event source mapping would.
    ///
    /// Prints one JSON summary per invocation (key, counts,
    /// batchItemFailures). Stops at the first failed invocation, which the
    /// mapping would retry.
    Invoke(InvokeArgs),
}

/// `evs table …`
#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create the events table: on-demand, `StreamId` (S) / `EventId` (N) keys,
    /// a DynamoDB stream with NEW_IMAGE. Says so if it exists already.
    Create,
}

/// `evs append`
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The stream to append to.
    #[arg(long, value_name = "ID")]
    pub stream: String,

    /// What the stream's version must be: a number (0 = no stream yet), `none`
    /// (the stream must not exist) or `any`.
    #[arg(long, value_name = "N|none|any", default_value = "any")]
    pub expected_version: String,

    /// Name of the single event to append.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "events",
        conflicts_with = "events"
    )]
    pub event_name: Option<String>,

    /// JSON payload of the single event (numbers are kept exactly).
    #[arg(
        long,
        value_name = "JSON",
        requires = "event_name",
        default_value = "{}"
    )]
    pub payload: String,

    /// JSON metadata of the single event.
    #[arg(long, value_name = "JSON", requires = "event_name")]
    pub metadata: Option<String>,

    /// NDJSON file (or `-` for stdin) of events appended in one atomic
    /// transaction, one `{"eventName": …, "payload": …}` a line (optional
    /// `metadata`, and `id`, a UUID that makes the append idempotent).
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<PathBuf>,
}

/// `evs read`
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The stream to read.
    #[arg(long, value_name = "ID")]
    pub stream: String,

    /// First EventId to print (the highest one with --backward).
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,

    /// Newest first.
    #[arg(long)]
    pub backward: bool,

    /// Print at most K events.
    #[arg(long, value_name = "K")]
    pub limit: Option<usize>,
}

/// `evs invoke`
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Where the archive goes: a local directory or `s3://BUCKET/PREFIX/`
    /// (default: `./archive`). Other settings come from the archiver's
    /// environment variables (`EVS_ARCHIVE_PREFIX`, `EVS_COMPRESSION`, …).
    #[arg(long, env = "EVS_ARCHIVE", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub archive: Option<String>,

    /// Seconds each invocation may take to write its objects (the Lambda
    /// function timeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,

    /// Lambda event files (JSON, `{"Records": [...]}`).
    #[arg(value_name = "EVENT.json", required = true)]
    pub files: Vec<PathBuf>,
}
