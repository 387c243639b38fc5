//! Every flag of `evs`, with its help text, in one place.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};
use evs_cli::{duration, positive_duration};

/// Event store on DynamoDB: create the table, append and read events,
/// archive them (invoke, pump, backfill), replay and verify the archive.
///
/// AWS settings come from the standard environment (AWS_REGION,
/// AWS_ENDPOINT_URL, AWS_PROFILE, credentials), so the same binary talks to
/// AWS or to a local emulator. Every AWS call has a connect and a call
/// timeout (--connect-timeout, --call-timeout).
#[derive(Debug, Parser)]
#[command(
    name = "evs",
    version,
    propagate_version = true,
    max_term_width = 100,
    override_usage = "evs [OPTIONS] <COMMAND>"
)]
pub(crate) struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `debug`, `evs_core=trace`).
    /// The default keeps the AWS SDK's own warnings (a region lookup that
    /// failed, …) quiet: the error line says what went wrong.
    #[arg(
        long,
        global = true,
        env = "EVS_LOG",
        default_value = "warn,aws=error",
        value_name = "FILTER"
    )]
    pub log: String,

    #[command(flatten)]
    pub timeouts: evs_cli::aws::Timeouts,

    #[command(subcommand)]
    pub command: Command,
}

/// The global flags given on the command line (not from the environment or
/// a default), as the environment variables that say the same: what `evs
/// pump` passes on to `evs-pump`, which reads those variables.
pub(crate) fn given_as_env(matches: &ArgMatches) -> Vec<(&'static str, OsString)> {
    [
        ("log", "EVS_LOG"),
        ("connect_timeout", "EVS_CONNECT_TIMEOUT"),
        ("call_timeout", "EVS_CALL_TIMEOUT"),
    ]
    .into_iter()
    .filter(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine))
    .filter_map(|(id, var)| {
        let value = matches.get_raw(id)?.next()?;
        Some((var, value.to_owned()))
    })
    .collect()
}

/// `--table`, for the subcommands that use the events table.
#[derive(Debug, Args)]
pub(crate) struct TableArg {
    /// The events table.
    #[arg(long, env = "EVS_TABLE", value_name = "NAME")]
    pub table: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage the events table.
    #[command(subcommand, override_usage = "evs table <COMMAND>")]
    Table(TableCommand),
    /// Append events to a stream, atomically, with an expected version.
    ///
    /// Prints the stream's new version as JSON. Exits with code 3 on a version
    /// conflict, naming the stream's actual version.
    #[command(
        override_usage = "evs append [OPTIONS] --stream <ID> --event-name <NAME>\n       \
                                evs append [OPTIONS] --stream <ID> --events <FILE|->"
    )]
    Append {
        #[command(flatten)]
        table: TableArg,
        #[command(flatten)]
        args: AppendArgs,
    },
    /// Read a stream as NDJSON, one event a line.
    #[command(override_usage = "evs read [OPTIONS] --stream <ID>")]
    Read {
        #[command(flatten)]
        table: TableArg,
        #[command(flatten)]
        args: ReadArgs,
    },
    /// Run the archiver's handler on DynamoDB Streams event files, in turn,
    /// as the Lambda event source mapping would.
    ///
    /// Prints one JSON summary per invocation (key, counts,
    /// batchItemFailures). Stops at the first failed invocation, which the
    /// mapping would retry.
    #[command(override_usage = "evs invoke [OPTIONS] <EVENT.json>...")]
    Invoke(InvokeArgs),
    /// Run the archiver outside Lambda: read the table's DynamoDB stream
    /// (every shard, a parent before its children) and archive each batch
    /// with the Lambda's own handler.
    ///
    /// Prints one JSON line per batch (shard, key, counts) and a summary line
    /// at the end. The position is checkpointed in a file after every batch,
    /// so a restart resumes where the last run stopped; a second pump on the
    /// same checkpoint is refused while one runs. A failed or overdue write
    /// is retried under a new key; an outage (refused connections,
    /// timeouts, 5xx, throttling) is waited out for --retry-for, each
    /// failure reported on stderr; what cannot heal (credentials, a missing
    /// bucket or stream) stops the pump at once, committing nothing
    /// unwritten. Without --once it polls every --poll-interval until
    /// Ctrl-C or SIGTERM, then stops after the current batch (exit 0).
    ///
    /// It is the `evs-pump` binary (installed beside `evs`), so that `evs`
    /// compiles no DynamoDB Streams SDK: `evs pump --help` shows its flags.
    #[command(disable_help_flag = true, override_usage = "evs pump [OPTIONS]")]
    Pump {
        /// The pump's flags (`evs pump --help`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
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
    ///
    /// For a read model fed from the CLI: `-- CMD ARGS…` delivers to a
    /// consumer process that acknowledges what it handled, the checkpoint
    /// can live in a DynamoDB table (--checkpoint-table), and --partition
    /// splits the streams among several replays. A checkpoint covers only
    /// lines the consumer took (or acknowledged); if it stops early the
    /// replay exits 1 and a rerun goes on from there.
    #[command(override_usage = "evs replay [OPTIONS] [-- <CONSUMER>...]")]
    Replay {
        #[command(flatten)]
        table: TableArg,
        #[command(flatten)]
        args: ReplayArgs,
    },
    /// Back-fill the archive from a DynamoDB table export (Export to S3,
    /// DynamoDB JSON): for a table older than its archiver, or whose stream
    /// aged out (24 h retention).
    ///
    /// The export is checked whole first (the manifests' item counts and
    /// each data file's MD5 against what is read): any difference stops it,
    /// exit 1, before anything is archived. Every exported item goes through
    /// the archiver's handler as an insert record (an item that is not an
    /// event becomes a dead letter). Events the archive has already are
    /// duplicates, dropped by replays. Once done, a marker object
    /// `<prefix>.backfill/<export id>.json` makes a rerun of the same export
    /// do nothing. Check the result with `evs verify --table`. Run it before
    /// replays that follow the archive: its objects are sealed now, but a
    /// follower reads only what is sealed after its position (it back-fills
    /// a gap from the table with --table).
    #[command(
        override_usage = "evs backfill [OPTIONS] --export <DIR|s3://BUCKET/…/AWSDynamoDB/ID/>"
    )]
    Backfill(BackfillArgs),
    /// Prove the archive complete: every stream contiguous from event 1, no
    /// event archived twice with different contents (compared as JSON
    /// values: spacing, field order and `1` against `1.0` do not count)
    /// and, with --table, every stream's last event equal to the table's (a
    /// parallel scan).
    ///
    /// Prints a report naming each stream and range that is missing; exits
    /// 0 only when the archive is complete, 4 when it is not.
    #[command(override_usage = "evs verify [OPTIONS]")]
    Verify {
        #[command(flatten)]
        table: TableArg,
        #[command(flatten)]
        args: VerifyArgs,
    },
}

/// `evs table …`
#[derive(Debug, Subcommand)]
pub(crate) enum TableCommand {
    /// Create the events table: on-demand, `StreamId` (S) / `EventId` (N) keys,
    /// a DynamoDB stream with NEW_IMAGE. Says so if it exists already.
    #[command(override_usage = "evs table create [OPTIONS]")]
    Create {
        #[command(flatten)]
        table: TableArg,
    },
    /// Create a table for replay checkpoints (`evs replay
    /// --checkpoint-table`): on-demand, key `Id` (S). Says so if it exists
    /// already.
    #[command(override_usage = "evs table create-checkpoints [OPTIONS] --checkpoint-table <NAME>")]
    CreateCheckpoints {
        /// The table to create.
        #[arg(long, env = "EVS_CHECKPOINT_TABLE", value_name = "NAME")]
        checkpoint_table: String,
    },
}

/// `evs append`: one event (`--event-name`) or a file of them (`--events`).
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("input")
        .required(true)
        .args(["event_name", "events"])
))]
pub(crate) struct AppendArgs {
    /// The stream to append to (1 to 2048 bytes).
    #[arg(long, value_name = "ID")]
    pub stream: evs_core::StreamId,

    /// What the stream's version must be: a number (0 = no stream yet), `none`
    /// (the stream must not exist) or `any`.
    #[arg(long, value_name = "N|none|any", default_value = "any")]
    pub expected_version: evs_core::ExpectedVersion,

    /// Name of the single event to append.
    #[arg(long, value_name = "NAME")]
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
pub(crate) struct ReadArgs {
    /// The stream to read (1 to 2048 bytes).
    #[arg(long, value_name = "ID")]
    pub stream: evs_core::StreamId,

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
pub(crate) struct InvokeArgs {
    /// Where the archive goes: a local directory or `s3://BUCKET/PREFIX/`
    /// (default: `./archive`). Other settings come from the archiver's
    /// environment variables (`EVS_ARCHIVE_PREFIX`, `EVS_COMPRESSION`, …).
    #[arg(long, env = "EVS_ARCHIVE", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub archive: Option<String>,

    /// How long each invocation may take to write its objects (the Lambda
    /// function timeout).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    pub timeout: Duration,

    /// Lambda event files (JSON, `{"Records": [...]}`).
    #[arg(value_name = "EVENT.json", required = true)]
    pub files: Vec<PathBuf>,
}

/// `evs backfill`
#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// The export: its directory `…/AWSDynamoDB/<export id>/`, in S3
    /// (`s3://BUCKET/PREFIX/AWSDynamoDB/<export id>/`) or a local copy.
    #[arg(long, value_name = "DIR|s3://BUCKET/…/AWSDynamoDB/ID/")]
    pub export: String,

    /// Where the archive is: a local directory or `s3://BUCKET/PREFIX/`
    /// (default: `./archive`), with the archiver's environment variables
    /// (`EVS_ARCHIVE_PREFIX`, `EVS_COMPRESSION`, …).
    #[arg(long, env = "EVS_ARCHIVE", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub archive: Option<String>,

    /// Run even though the marker says this export was back-filled (adds
    /// only duplicates), and replace the marker.
    #[arg(long)]
    pub force: bool,

    /// Hard deadline on each batch's object writes.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    pub timeout: Duration,
}

/// Where to read an archive, shared by `replay` and `verify`.
#[derive(Debug, Args)]
pub(crate) struct ArchiveArgs {
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
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,

    /// Start with the objects sealed at or after this time (RFC 3339, e.g.
    /// `2026-11-24T08:00:00Z`): the archive's own clock, a convenience for
    /// inspection, not a substitute for a checkpoint. Ignored when resuming
    /// from --checkpoint-file.
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339_ms)]
    pub since: Option<i64>,

    /// Resume from this checkpoint if it exists, and keep it up to date
    /// (written atomically, at most every --checkpoint-interval and when the
    /// replay stops, however it stops; checked writable and locked before
    /// the first line, so a second replay on it is refused). It covers only
    /// lines the reader has taken: acknowledged by a consumer, read out of a
    /// pipe or Unix socket, synced to a file. A resumed replay skips no
    /// event; after a clean stop it repeats none, after a crash (SIGKILL)
    /// about one --checkpoint-interval of lines.
    #[arg(long, value_name = "FILE")]
    pub checkpoint_file: Option<PathBuf>,

    /// Keep the checkpoint in this DynamoDB table instead of a file (an
    /// item named by --checkpoint-name; create the table with `evs table
    /// create-checkpoints`). Saves are conditional: a second replay on the
    /// same checkpoint makes one of them stop with an error instead of
    /// overwriting the other's progress.
    #[arg(
        long,
        env = "EVS_CHECKPOINT_TABLE",
        value_name = "TABLE",
        conflicts_with = "checkpoint_file",
        requires = "checkpoint_name"
    )]
    pub checkpoint_table: Option<String>,

    /// The checkpoint's name in --checkpoint-table (one per consumer, and
    /// per partition).
    #[arg(long, value_name = "NAME", requires = "checkpoint_table", value_parser = checkpoint_name)]
    pub checkpoint_name: Option<String>,

    /// How often the checkpoint is saved (the newest one whose lines the
    /// reader has all taken; saved on time even while the reader lags).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub checkpoint_interval: Duration,

    /// After the history, keep following the archive as it grows, never
    /// past the settled frontier (now - archiver timeout - clock margin).
    /// Stop with Ctrl-C (the checkpoint is written first).
    #[arg(long)]
    pub follow: bool,

    /// The archiver's function timeout (the Lambda's Timeout,
    /// `FunctionTimeout` in template.yaml; `evs pump --timeout`). An object
    /// can appear up to this long after the time in its key. Less than 1s is
    /// warned about: no archiver writes that fast.
    #[arg(long, value_name = "DURATION", default_value = "900s", value_parser = duration)]
    pub archiver_timeout: Duration,

    /// Clock margin added to the archiver timeout: clock differences
    /// between archiver and reader, late uploads. Less than 5s is warned
    /// about: an object that lands later than timeout + margin is skipped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub clock_margin: Duration,

    /// Follow mode with --table: back-fill a stream from the table once its
    /// gap has been visible this long (default: archiver timeout + clock
    /// margin).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub gap_timeout: Option<Duration>,

    /// Follow mode: longest wait between listings.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    pub poll_interval: Duration,

    /// Give up once reading the archive (or the table) has failed for this
    /// long in a row (a refused connection, 5xx, throttling; each failure is
    /// retried with capped, jittered backoff and reported on stderr). `0`
    /// never gives up. Default: never with --follow, 5m otherwise.
    /// Credentials, a missing bucket or table, a corrupt object stop the
    /// replay at once.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub retry_for: Option<Duration>,

    /// Skip archive objects that cannot be read (corrupt, truncated, not
    /// NDJSON) instead of stopping, and record each skipped key with the
    /// reason in this file (JSON lines, appended). Their events are then
    /// missing: the streams left with a gap are reported (and back-filled
    /// from the table with --table). Without it, such an object stops the
    /// replay and is named.
    #[arg(long, value_name = "FILE")]
    pub quarantine: Option<PathBuf>,

    /// Skip this archive object (repeatable; e.g. a key a previous run
    /// recorded in its --quarantine file). Its events are handled as with
    /// --quarantine.
    #[arg(long, value_name = "KEY")]
    pub skip_object: Vec<String>,

    /// Deliver only the streams of partition I of N (`0/4`; stream-id hash,
    /// FNV-1a 64 of its UTF-8 bytes, modulo N): N replays, one per
    /// partition, together deliver every event once, each stream in order.
    /// Give each its own checkpoint: a checkpoint records its partition and
    /// resumes no other (nor a replay of every stream).
    #[arg(long, value_name = "I/N")]
    pub partition: Option<evs_projection::Partition>,

    /// The summary at the end as one JSON object on stderr (counts, time,
    /// the settled frontier and how far the last object read lies behind
    /// it), for scripts.
    #[arg(long)]
    pub json: bool,

    /// No progress line on stderr, even on a terminal.
    #[arg(long, short)]
    pub quiet: bool,

    /// A consumer to deliver to instead of stdout: the lines go to its
    /// stdin, and it acknowledges on its stdout the number of lines it has
    /// handled so far, one number a line (cumulative: `1`, `2`, … or every
    /// hundredth). A checkpoint covers only acknowledged lines, so a
    /// consumer that stops early never has lines it did not handle
    /// checkpointed. At the end its stdin is closed and it must exit 0.
    #[arg(last = true, value_name = "CONSUMER")]
    pub consumer: Vec<String>,
}

/// `evs verify`
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,

    /// Parallel segments of the table scan (with --table), 1 to 1,000,000.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(evs_dynamodb::MAX_SCAN_SEGMENTS)))]
    pub segments: u32,

    /// No progress bar on stderr, even on a terminal.
    #[arg(long, short)]
    pub quiet: bool,
}

/// An RFC 3339 time (`--since`) as milliseconds since the epoch.
fn rfc3339_ms(text: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-11-24T08:00:00Z"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// A checkpoint's name in its table (`--checkpoint-name`): the item's key,
/// with room for the parts' keys (`NAME#<run>#<revision>#<i>`).
fn checkpoint_name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.contains('#') {
        return Err("must not contain '#' (it separates the names of a checkpoint's parts)".into());
    }
    if text.len() > 1_024 {
        return Err(format!("is {} bytes long: at most 1,024", text.len()));
    }
    Ok(text.to_owned())
}
