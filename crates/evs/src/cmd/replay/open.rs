//! The first two stages of `evs replay`: open (the flags checked and turned
//! into settings, the checkpoint locked and checked, the archive opened)
//! and resume (the checkpoint loaded, the replayer built).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use evs_dynamodb::DynamoStore;
use evs_projection::Partition;
use evs_replay::{Archive, Frontier, ReplayOptions, Replayer};

use super::checkpoint::CheckpointStore;
use super::output::Saver;
use crate::cmd::location;
use crate::flags::ReplayArgs;

/// How a replay that does not follow retries an archive or table outage
/// before it gives up (`--retry-for`).
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(300);

/// Below these, `--archiver-timeout` and `--clock-margin` are warned about.
const MIN_ARCHIVER_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_CLOCK_MARGIN: Duration = Duration::from_secs(5);

/// What the flags ask for, checked.
pub(super) struct Settings {
    pub options: ReplayOptions,
    pub frontier: Frontier,
    pub partition: Partition,
    /// Gaps older than this are warned about while following.
    pub gap_bound_ms: i64,
    /// Checkpoints are saved at most this often.
    pub interval: Duration,
    /// Outages are retried this long (`ZERO`: for ever).
    pub retry_for: Duration,
    pub follow: bool,
    pub json: bool,
    pub quiet: bool,
    pub quarantine: Option<PathBuf>,
    /// Gaps are back-filled from the events table.
    pub table: Option<String>,
    /// `--since` was given.
    pub since: bool,
}

/// The first stage's result: what the replay reads and where its
/// checkpoint lives.
pub(super) struct Opened {
    settings: Settings,
    archive: Archive,
    store: Option<CheckpointStore>,
    /// The checkpoint file's lock, held for the whole run.
    lock: Option<File>,
}

/// Opens what the replay needs, before anything is delivered: a checkpoint
/// that cannot be saved (or is in use by another replay), a quarantine
/// file that cannot be written, or an archive that is not there is
/// refused now.
pub(super) async fn open(table: Option<&str>, args: &ReplayArgs) -> Result<Opened> {
    warn_unsafe_settings(args);
    let (store, lock) = match (
        &args.checkpoint_file,
        &args.checkpoint_table,
        &args.checkpoint_name,
    ) {
        (Some(path), _, _) => {
            let lock = evs_cli::lock_checkpoint(path, "replay", "--checkpoint-file")?;
            (Some(CheckpointStore::File(path.clone())), Some(lock))
        }
        (None, Some(table), Some(name)) => (
            Some(CheckpointStore::table(
                evs_cli::aws::dynamodb().await?,
                table.clone(),
                name.clone(),
            )),
            None,
        ),
        _ => (None, None),
    };
    if let Some(store) = &store {
        // Before the first line: a rerun must not print everything again
        // because the checkpoint could not be saved at the end.
        store.check().await?;
    }
    if let Some(path) = &args.quarantine {
        check_appendable(path)?;
    }
    let archive = location::open(args.archive.archive.clone()).await?;
    Ok(Opened {
        settings: settings(table, args),
        archive,
        store,
        lock,
    })
}

/// The settings the flags give.
fn settings(table: Option<&str>, args: &ReplayArgs) -> Settings {
    let frontier = Frontier::new(millis(args.archiver_timeout), millis(args.clock_margin));
    let options = ReplayOptions {
        since_ms: args.since,
        frontier,
        follow: args.follow,
        read_ahead: args.archive.read_ahead.max(1),
        gap_bound_ms: args.gap_timeout.map_or(frontier.lag_ms(), millis),
        poll_ms: millis(args.poll_interval).max(10),
        skip_unreadable: args.quarantine.is_some(),
        skip_keys: args.skip_object.iter().cloned().collect(),
        partition: args.partition.unwrap_or(Partition::ALL),
        ..ReplayOptions::default()
    };
    Settings {
        gap_bound_ms: options.gap_bound_ms,
        options,
        frontier,
        partition: args.partition.unwrap_or(Partition::ALL),
        interval: args.checkpoint_interval,
        retry_for: args.retry_for.unwrap_or(if args.follow {
            Duration::ZERO
        } else {
            DEFAULT_RETRY_FOR
        }),
        follow: args.follow,
        json: args.json,
        quiet: args.quiet,
        quarantine: args.quarantine.clone(),
        table: table.map(str::to_owned),
        since: args.since.is_some(),
    }
}

/// The second stage: the replayer, from the saved checkpoint if there is
/// one, and the saver that keeps it (with the checkpoint file's lock).
pub(super) async fn resume(opened: Opened) -> Result<(Replayer, Option<Saver>, Settings)> {
    let Opened {
        settings,
        archive,
        mut store,
        lock,
    } = opened;
    let checkpoint = match store.as_mut() {
        Some(store) => store.load().await?,
        None => None,
    };
    // A partition's checkpoint resumes only that partition (the replayer
    // refuses it for another partition or for every stream).
    let clock = evs_core::system_clock();
    let options = settings.options.clone();
    let mut replayer = match checkpoint {
        Some(checkpoint) => {
            if settings.since {
                eprintln!("evs: warning: --since is ignored: resuming from the checkpoint");
            }
            Replayer::resume(archive, checkpoint, options, clock)
                .context("cannot resume from the checkpoint")?
        }
        None => Replayer::new(archive, options, clock),
    };
    if let Some(table) = &settings.table {
        let store = DynamoStore::new(evs_cli::aws::dynamodb().await?, table);
        replayer = replayer.with_table(Arc::new(store));
    }
    let saver = store.map(|store| Saver::new(store, settings.interval, settings.retry_for, lock));
    Ok((replayer, saver, settings))
}

/// Warns about settings that can make a replay skip an object.
fn warn_unsafe_settings(args: &ReplayArgs) {
    if args.archiver_timeout < MIN_ARCHIVER_TIMEOUT {
        eprintln!(
            "evs: warning: --archiver-timeout {} is below {}: an object the archiver seals \
             earlier but lands later than that is skipped; give the archiver's real function \
             timeout (the Lambda's Timeout, `evs pump --timeout`)",
            evs_cli::human(args.archiver_timeout),
            evs_cli::human(MIN_ARCHIVER_TIMEOUT)
        );
    }
    if args.clock_margin < MIN_CLOCK_MARGIN {
        eprintln!(
            "evs: warning: --clock-margin {} is below {}: a clock difference between the \
             archiver and this reader larger than the margin can make the replay skip an object",
            evs_cli::human(args.clock_margin),
            evs_cli::human(MIN_CLOCK_MARGIN)
        );
    }
}

fn check_appendable(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .with_context(|| format!("cannot write the quarantine file {}", path.display()))
}

/// Appends one skipped object to the quarantine file, synced.
pub(super) fn record_quarantined(path: &Path, key: &str, reason: &str) -> Result<()> {
    let line = serde_json::json!({
        "key": key,
        "reason": reason,
        "skippedAt": evs_core::format_timestamp_ms(evs_core::system_clock()()),
    });
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_all()
    };
    write().with_context(|| format!("cannot write the quarantine file {}", path.display()))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
