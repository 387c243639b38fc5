//! The operator's command line: create the read model's table, rebuild it
//! from the archive, print it, list and resume parked streams. Exit codes:
//! 0 success, 1 any error, 2 bad usage (as clap's own).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use evs_archiver::config::Location;
use evs_cli::Usage;
use evs_core::EventStore;
use evs_dynamodb::{DynamoStore, TableStatus};
use evs_orders::{dump_line, Orders, OrdersRow, OrdersTables, ReadModel};
use evs_projection::replay::{rebuild, replayer_for, RebuildOptions, RebuildReport};
use evs_projection::{
    Applier, DynamoLayout, DynamoRowStore, MemoryRowStore, Partition, PostgresRowStore, Projection,
    RowStore, SqliteRowStore,
};
use evs_replay::{Archive, Frontier, ReplayOptions};

const NAME: &str = "evs-orders";

/// The orders example's read model (rows per customer and per day, from
/// every `order-<id>` stream): create its table, rebuild it from the
/// archive, print it, list and resume parked streams.
///
/// The same binary is both Lambda functions of the example's stack (the
/// live driver and the reconciler) when AWS_LAMBDA_RUNTIME_API is set.
///
/// The read model is `sqlite:FILE` (the default, `sqlite:./orders.db`:
/// tables `customers` and `daily`, read them with `sqlite3`),
/// `postgres:URL` (the same tables in PostgreSQL), `dynamodb:TABLE` (one
/// item per row, partition key `Id`) or `memory:` (for `rebuild` only: the
/// rows are printed at the end). AWS settings come from the standard environment (AWS_REGION,
/// AWS_ENDPOINT_URL, AWS_PROFILE, credentials).
#[derive(Debug, Parser)]
#[command(name = "evs-orders", version, max_term_width = 100)]
struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `debug`).
    #[arg(
        long,
        global = true,
        env = "EVS_LOG",
        default_value = "warn,aws=error",
        value_name = "FILTER"
    )]
    log: String,

    #[command(flatten)]
    timeouts: evs_cli::aws::Timeouts,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create what the read model's store needs (a DynamoDB table: on-demand,
    /// partition key `Id`; a SQLite file or PostgreSQL database: its tables);
    /// running it again changes nothing.
    Init(Store),
    /// Rebuild the read model from the archive, skipping every event it has
    /// applied already; safe beside the live Lambda and other partitions.
    /// Progress on stderr, a summary line at the end.
    Rebuild(RebuildArgs),
    /// Print every row as one JSON object a line, sorted by model then key:
    /// `{"model":"customers","key":"c-17","placed":3,"cancelled":1,"paidCents":4200}`,
    /// `{"model":"daily","key":"2026-12-07","orders":9,"revenueCents":123400}`.
    Dump(Store),
    /// List the parked streams (an event the projection refused, e.g. a
    /// missing customerId): stream, event id, event name, reason, when.
    Parked(Store),
    /// Clear a stream's park and apply its events from the events table, the
    /// refused one first (after the cause is fixed).
    Resume(ResumeArgs),
}

#[derive(Debug, Args)]
struct Store {
    /// The read model: `sqlite:FILE`, `postgres:URL`, `dynamodb:TABLE` or
    /// `memory:` [default: sqlite:./orders.db].
    #[arg(long, env = "EVS_READ_MODEL", value_name = "SCHEME:NAME")]
    read_model: Option<String>,
}

#[derive(Debug, Args)]
struct RebuildArgs {
    #[command(flatten)]
    store: Store,

    /// The archive: a local directory or `s3://BUCKET/PREFIX/` (default:
    /// `./archive`). The key prefix is EVS_ARCHIVE_PREFIX (default
    /// `events/`) unless the S3 URL names one.
    #[arg(long, env = "EVS_ARCHIVE", value_name = "DIR|s3://BUCKET/PREFIX")]
    archive: Option<String>,

    /// The events table: streams the archive leaves short (a gap at its end)
    /// are filled from it. Without it such a rebuild fails, naming them.
    #[arg(long, env = "EVS_EVENTS_TABLE", value_name = "TABLE")]
    events_table: Option<String>,

    /// Rebuild only the streams of partition I of N (`0/4`): N rebuilds, one
    /// per partition, together rebuild the read model.
    #[arg(long, value_name = "I/N")]
    partition: Option<Partition>,

    /// Follow the archive until its settled frontier passes this time (RFC
    /// 3339): the handoff to the live Lambda (its start, when it reads from
    /// TRIM_HORIZON). Without it, stop at the archive's end.
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339_ms)]
    until: Option<i64>,

    /// The archiver's function timeout (with --until).
    #[arg(long, value_name = "DURATION", default_value = "900s", value_parser = evs_cli::duration)]
    archiver_timeout: Duration,

    /// Clock margin added to the archiver timeout (with --until).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = evs_cli::duration)]
    clock_margin: Duration,

    /// Objects fetched and decoded ahead of the one being read.
    #[arg(long, value_name = "N", default_value_t = 8)]
    read_ahead: usize,

    /// No progress on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct ResumeArgs {
    /// The parked stream.
    stream: String,

    #[command(flatten)]
    store: Store,

    /// The events table the stream's events are read from.
    #[arg(long, env = "EVS_EVENTS_TABLE", value_name = "TABLE")]
    events_table: Option<String>,
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    evs_cli::aws::configure(cli.timeouts);
    let Some(runtime) = evs_cli::start(NAME, &cli.log) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => evs_cli::exit(NAME, &err, |_| None),
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Init(store) => init(read_model(&store)?).await,
        Command::Rebuild(args) => run_rebuild(args).await,
        Command::Dump(store) => dump(stored(read_model(&store)?, "dump")?).await,
        Command::Parked(store) => parked(stored(read_model(&store)?, "parked")?).await,
        Command::Resume(args) => resume(args).await,
    }
}

/// The read model `--read-model` names (by default `sqlite:./orders.db`),
/// or a usage error.
fn read_model(store: &Store) -> Result<ReadModel> {
    let text = store
        .read_model
        .as_deref()
        .unwrap_or(evs_orders::read_model::DEFAULT);
    text.parse()
        .map_err(|e: evs_orders::ReadModelError| Usage(e.to_string()).into())
}

/// A read model that must outlive the command.
fn stored(model: ReadModel, command: &str) -> Result<ReadModel> {
    match model {
        ReadModel::Memory => Err(Usage(format!(
            "{command}: a memory: read model lives only within one `rebuild` (which prints it): give sqlite:FILE, postgres:URL or dynamodb:TABLE"
        ))
        .into()),
        model => Ok(model),
    }
}

/// The store of a read model, and the DynamoDB client when it made one.
/// A SQLite file is created when absent (its folder must exist).
async fn open(
    model: &ReadModel,
    memory: &MemoryRowStore<OrdersRow>,
) -> Result<(
    Arc<dyn RowStore<OrdersRow>>,
    Option<aws_sdk_dynamodb::Client>,
)> {
    Ok(match model {
        ReadModel::Memory => (Arc::new(memory.clone()), None),
        ReadModel::DynamoDb(table) => {
            let client = evs_cli::aws::dynamodb().await?;
            (dynamo_store(client.clone(), table), Some(client))
        }
        ReadModel::Sqlite(path) => (Arc::new(sqlite_store(path)?), None),
        ReadModel::Postgres(url) => (postgres_store(url).await?, None),
    })
}

fn events_table(table: Option<String>, what: &str) -> Result<String> {
    match table {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(Usage(format!(
            "{what} needs the events table: pass --events-table TABLE or set EVS_EVENTS_TABLE"
        ))
        .into()),
    }
}

fn dynamo_store(client: aws_sdk_dynamodb::Client, table: &str) -> Arc<dyn RowStore<OrdersRow>> {
    Arc::new(DynamoRowStore::new(client, table, DynamoLayout::Rows))
}

async fn init(model: ReadModel) -> Result<()> {
    match &model {
        ReadModel::Memory => println!("memory: needs no setup"),
        ReadModel::DynamoDb(table) => {
            let client = evs_cli::aws::dynamodb().await?;
            let store = DynamoRowStore::new(client, table, DynamoLayout::Rows);
            let status = store
                .create_table()
                .await
                .with_context(|| format!("cannot create the read model's table {table}"))?;
            match status {
                TableStatus::Created => println!("created table {table}"),
                TableStatus::AlreadyExists => {
                    println!("table {table} exists already; nothing changed")
                }
            }
        }
        ReadModel::Sqlite(_) | ReadModel::Postgres(_) => {
            // opening creates what is missing
            open(&model, &MemoryRowStore::new()).await?;
            println!("{model}: tables ready (customers, daily, and the ledger)");
        }
    }
    Ok(())
}

async fn dump(model: ReadModel) -> Result<()> {
    let (store, _) = open(&model, &MemoryRowStore::new()).await?;
    let rows = store
        .rows()
        .await
        .with_context(|| format!("cannot read the rows of {model}"))?;
    print_rows(&rows)
}

fn print_rows(rows: &[(evs_projection::RowKey, OrdersRow)]) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (key, row) in rows {
        writeln!(out, "{}", dump_line(key, row))?;
    }
    out.flush()?;
    Ok(())
}

async fn parked(model: ReadModel) -> Result<()> {
    let (store, _) = open(&model, &MemoryRowStore::new()).await?;
    let parked = store
        .parked()
        .await
        .with_context(|| format!("cannot read the ledger of {model}"))?;
    let mut out = std::io::stdout().lock();
    for (stream, ledger) in &parked {
        if let Some(p) = &ledger.parked {
            let line = serde_json::json!({
                "stream": stream,
                "eventId": p.event_id,
                "eventName": p.event_name,
                "reason": p.reason,
                "at": evs_core::format_timestamp_ms(p.at_ms),
            });
            writeln!(out, "{line}")?;
        }
    }
    if parked.is_empty() {
        eprintln!("no parked streams");
    }
    Ok(())
}

async fn resume(args: ResumeArgs) -> Result<()> {
    let model = stored(read_model(&args.store)?, "resume")?;
    let events_table = events_table(args.events_table, "resume")?;
    let (store, client) = open(&model, &MemoryRowStore::new()).await?;
    let client = match client {
        Some(c) => c,
        None => evs_cli::aws::dynamodb().await?,
    };
    let events: Arc<dyn EventStore> = Arc::new(DynamoStore::new(client, events_table));
    let mut applier = Applier::new(Orders, store).with_table(events);
    let (was_parked, report) = applier.resume(&args.stream).await?;
    if !was_parked && report.failures().next().is_none() && report.applied() == 0 {
        println!(
            "{} is not parked and has every event of the table applied; nothing changed",
            args.stream
        );
        return Ok(());
    }
    if let Some((_, event_id, error)) = report.failures().next() {
        anyhow::bail!(
            "{} resumed, but applying from event {event_id} failed: {}; run resume again",
            args.stream,
            evs_core::describe_chain(error)
        );
    }
    let again = report.parked().next().map(|(stream, p)| {
        format!(
            "{stream} parked again at event {} ({}): {}",
            p.event_id, p.event_name, p.reason
        )
    });
    match again {
        Some(line) => Err(anyhow::anyhow!(line)),
        None => {
            let version = report.streams.first().map_or(0, |s| s.version);
            let what = if was_parked {
                "resumed"
            } else {
                "was not parked; caught up"
            };
            println!(
                "{} {what}: {} events applied, now at event {version}",
                args.stream,
                report.applied()
            );
            Ok(())
        }
    }
}

async fn run_rebuild(args: RebuildArgs) -> Result<()> {
    let model = read_model(&args.store)?;
    let archive = open_archive(args.archive.clone()).await?;
    let memory = MemoryRowStore::<OrdersRow>::new();
    // a SQLite rebuild commits without waiting for the disk, and syncs once
    // at the end (a power cut before it loses commits, not events: the
    // ledger goes with them and a rerun applies them)
    let sqlite = match &model {
        ReadModel::Sqlite(path) => Some(Arc::new(sqlite_store(path)?.relaxed()?)),
        _ => None,
    };
    let (store, client) = match &sqlite {
        Some(s) => (Arc::clone(s) as Arc<dyn RowStore<OrdersRow>>, None),
        None => open(&model, &memory).await?,
    };
    let mut applier = Applier::new(Orders, Arc::clone(&store));
    if let Some(table) = args.events_table.filter(|t| !t.is_empty()) {
        let client = match client {
            Some(c) => c,
            None => evs_cli::aws::dynamodb().await?,
        };
        applier = applier.with_table(Arc::new(DynamoStore::new(client, table)));
    }
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let options = ReplayOptions {
        frontier: Frontier::new(millis(args.archiver_timeout), millis(args.clock_margin)),
        follow: args.until.is_some(),
        read_ahead: args.read_ahead.max(1),
        partition: args.partition.unwrap_or(Partition::ALL),
        // the payloads of other events are not read
        event_names: Orders.event_names(),
        ..ReplayOptions::default()
    };
    let clock = evs_core::system_clock();
    let mut replayer = replayer_for(archive, options, clock.clone(), &store)
        .await
        .with_context(|| format!("cannot read the ledger of {model}"))?;
    let rebuild_options = RebuildOptions {
        until_ms: args.until,
        ..RebuildOptions::default()
    };
    let started = Instant::now();
    let mut progress = Progress::new(args.quiet);
    let report = rebuild(&mut applier, &mut replayer, &rebuild_options, &clock, |r| {
        progress.show(r, started)
    })
    .await
    .context("rebuild failed")?;
    progress.done();
    if let Some(s) = &sqlite {
        s.sync()?;
    }
    eprintln!("{}", summary(&report, started.elapsed()));
    if model == ReadModel::Memory {
        print_rows(&memory.rows().await?)?;
    }
    Ok(())
}

/// Progress on stderr at most once a second.
struct Progress {
    quiet: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Self { quiet, last: None }
    }

    fn show(&mut self, r: &RebuildReport, started: Instant) {
        if self.quiet
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        eprintln!(
            "rebuilding: {} objects read, {} events applied, {} skipped as applied ({})",
            r.objects,
            r.applied,
            r.skipped,
            evs_cli::human(started.elapsed())
        );
    }

    fn done(&mut self) {
        self.last = None;
    }
}

fn summary(r: &RebuildReport, took: Duration) -> String {
    let mut line = format!(
        "rebuilt: {} events applied, {} skipped as applied, {} objects read",
        r.applied, r.skipped, r.objects
    );
    if r.objects_skipped > 0 {
        line.push_str(&format!(", {} objects skipped", r.objects_skipped));
    }
    if r.other_partitions > 0 {
        line.push_str(&format!(
            ", {} events of other partitions passed over",
            r.other_partitions
        ));
    }
    if r.commits > 0 {
        line.push_str(&format!(
            ", {} ({} events a commit",
            evs_core::plural(r.commits, "commit"),
            (r.applied + r.commits / 2) / r.commits
        ));
        if r.conflicts > 0 {
            line.push_str(&format!(
                ", {} lost to another driver and retried",
                r.conflicts
            ));
        }
        line.push(')');
    }
    if r.parked > 0 {
        line.push_str(&format!(
            ", {} parked (see `evs-orders parked`)",
            evs_core::plural(r.parked, "stream")
        ));
    }
    line.push_str(&format!(" in {}", evs_cli::human(took)));
    line
}

/// The archive `--archive` and the archiver's environment name; a local
/// directory must exist.
async fn open_archive(archive: Option<String>) -> Result<Archive> {
    let config = evs_cli::location::config(archive)?;
    if let Location::Local(dir) = &config.location {
        if !dir.is_dir() {
            anyhow::bail!(
                "no archive at {}: the directory does not exist (pass --archive DIR or s3://BUCKET/PREFIX/)",
                dir.display()
            );
        }
    }
    Ok(Archive::new(
        evs_cli::location::sink(&config).await?,
        config.prefix,
    ))
}

/// An RFC 3339 time as milliseconds since the epoch.
fn rfc3339_ms(text: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-11-24T08:00:00Z"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// The SQLite store of a read model, with the orders tables.
fn sqlite_store(path: &std::path::Path) -> Result<SqliteRowStore<OrdersTables>> {
    Ok(SqliteRowStore::open(path, evs_orders::PROJECTION)?.with_tables(OrdersTables)?)
}

/// The PostgreSQL store of a read model, with the orders tables.
async fn postgres_store(url: &str) -> Result<Arc<dyn RowStore<OrdersRow>>> {
    let store = PostgresRowStore::connect(url, evs_orders::PROJECTION)
        .await?
        .with_tables(OrdersTables)
        .await?;
    Ok(Arc::new(store))
}
