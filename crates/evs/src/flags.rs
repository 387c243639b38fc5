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
    /// Run the archiver outside Lambda: read the table's DynamoDB stream
    /// (every shard, a parent before its children) and archive each batch
    /// with the Lambda's own handler.
    ///
    /// Prints one JSON line per batch (shard, key, counts) and a summary line
    /// at the end. The position is checkpointed in a file after every batch,
    /// so a restart resumes where the last run stopped. A failed or overdue
    /// write is retried under a new key; a batch that keeps failing stops the
    /// pump with an error, without committing it. Without --once it polls
    /// until Ctrl-C or SIGTERM, then stops after the current batch.
    Pump(PumpArgs),
    /// Replay the archive: every event once, each stream in EventId order,
    /// as NDJSON on stdout (the line shape of `evs read`).
    ///
    /// Order is archive order (objects by key, i.e. by the time the archiver
    /// sealed them, then line order). Duplicates from retried batches are
    /// dropped; an event archived before its predecessor is held until the
    /// predecessor arrives. With --table (or EVS_TABLE), events missing from
    /// the archive are read from the table and delivered in place. Without
    /// it, a replay that ends with a stream still missing an event exits
    /// with code 4 and names the stream and event. Progress goes to stderr
    /// on a terminal.
    Replay(ReplayArgs),
    /// Prove the archive complete: every stream contiguous from event 1, no
    /// event archived twice with different contents and, with --table, every
    /// stream's last event equal to the table's (a parallel scan).
    ///
    /// Prints a report naming each stream and range that is missing; exits
    /// 0 only when the archive is complete, 4 when it is not.
    Verify(VerifyArgs),
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
    /// The stream to append to (1 to 2048 bytes).
    #[arg(long, value_name = "ID")]
    pub stream: evs_core::StreamId,

    /// What the stream's version must be: a number (0 = no stream yet), `none`
    /// (the stream must not exist) or `any`.
    #[arg(long, value_name = "N|none|any", default_value = "any")]
    pub expected_version: evs_core::ExpectedVersion,

    /// Name of the single event to append.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "events",
        conflicts_with = "events"
    )]
    pub event_name: Option<String>,

    /// JSON payload of the single event (numbers are kept exactly);
    /// `@FILE` reads it from a file, `-` from stdin.
    #[arg(
        long,
        value_name = "JSON|@FILE|-",
        requires = "event_name",
        default_value = "{}"
    )]
    pub payload: String,

    /// JSON metadata of the single event; `@FILE` reads it from a file, `-`
    /// from stdin.
    #[arg(long, value_name = "JSON|@FILE|-", requires = "event_name")]
    pub metadata: Option<String>,

    /// The single event's id, a UUID (default: a new random one). Re-sending
    /// an append with the same id is recognised as a retry
    /// (`alreadyAppended`) instead of appending the event twice.
    #[arg(long, value_name = "UUID", conflicts_with = "events")]
    pub id: Option<uuid::Uuid>,

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

/// `evs pump`
#[derive(Debug, Args)]
pub struct PumpArgs {
    /// Where the archive goes: a local directory or `s3://BUCKET/PREFIX/`
    /// (default: `./archive`). Other settings come from the archiver's
    /// environment variables (`EVS_ARCHIVE_PREFIX`, `EVS_COMPRESSION`, …).
    #[arg(long, env = "EVS_ARCHIVE", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub archive: Option<String>,

    /// Most records per batch: one GetRecords call, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch_size: u64,

    /// Stop once every shard is caught up, instead of polling for more.
    #[arg(long)]
    pub once: bool,

    /// Hard deadline in seconds on each batch's object writes (the Lambda
    /// function timeout; readers' `--archiver-timeout` must be at least this).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// Where the pump keeps its position in the stream (JSON, rewritten
    /// atomically after every batch; created on the first). Default:
    /// `evs-pump-<TABLE>.json` in the working directory. A file written for
    /// another stream is refused.
    #[arg(long, env = "EVS_PUMP_CHECKPOINT", value_name = "FILE")]
    pub checkpoint_file: Option<PathBuf>,
}

/// Where to read an archive, shared by `replay` and `verify`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The archive: a local directory or `s3://BUCKET/PREFIX/` (default:
    /// `./archive`). The key prefix is EVS_ARCHIVE_PREFIX (default
    /// `events/`) unless the S3 URL names one.
    #[arg(long, env = "EVS_ARCHIVE", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub archive: Option<String>,

    /// Objects fetched and decoded ahead of the one being read.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub read_ahead: usize,
}

/// `evs replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,

    /// Start with the objects sealed at or after this time (RFC 3339, e.g.
    /// `2026-11-24T08:00:00Z`): the archive's own clock, a convenience for
    /// inspection, not a substitute for a checkpoint. Ignored when resuming
    /// from --checkpoint-file.
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<String>,

    /// Resume from this checkpoint if it exists, and keep it up to date
    /// (written atomically, at most every --checkpoint-interval and when the
    /// replay stops). A resumed replay repeats no event and skips none.
    #[arg(long, value_name = "FILE")]
    pub checkpoint_file: Option<PathBuf>,

    /// Seconds between checkpoint writes.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub checkpoint_interval: f64,

    /// After the history, keep following the archive as it grows, never
    /// past the settled frontier (now - archiver timeout - clock margin).
    /// Stop with Ctrl-C (the checkpoint is written first).
    #[arg(long)]
    pub follow: bool,

    /// The archiver's function timeout in seconds (the Lambda's Timeout,
    /// `FunctionTimeout` in template.yaml; `evs pump --timeout`). An object
    /// can appear up to this long after the time in its key.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    pub archiver_timeout: u64,

    /// Clock margin in seconds added to the archiver timeout: clock
    /// differences between archiver and reader, late uploads.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub clock_margin: u64,

    /// Follow mode with --table: back-fill a stream from the table once its
    /// gap has been visible this many seconds (default: archiver timeout +
    /// clock margin).
    #[arg(long, value_name = "SECONDS")]
    pub gap_timeout: Option<u64>,

    /// Follow mode: longest wait between listings, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub poll_interval: f64,

    /// No progress line on stderr, even on a terminal.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `evs verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,

    /// Parallel segments of the table scan (with --table).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub segments: u32,

    /// No progress bar on stderr, even on a terminal.
    #[arg(long, short)]
    pub quiet: bool,
}
