//! `evs replay`: the archive as NDJSON, every event once, each stream in order.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use evs_core::{Backoff, Streak};
use evs_dynamodb::DynamoStore;
use evs_projection::Partition;
use evs_replay::{Frontier, Gap, ReplayOptions, Replayer, Step};
use tokio::sync::Notify;

use super::checkpoint::CheckpointStore;
use super::consumer::Consumer;
use super::output::{Delivery, Drained};
use super::progress::{count, megabytes, rate, Progress};
use super::{location, ConsumerGone, Incomplete, Interrupted};
use crate::flags::ReplayArgs;

pub(super) async fn run(table: Option<&str>, args: ReplayArgs) -> Result<()> {
    warn_unsafe_settings(&args);
    let mut store = match (
        &args.checkpoint_file,
        &args.checkpoint_table,
        &args.checkpoint_name,
    ) {
        (Some(path), _, _) => Some(CheckpointStore::File(path.clone())),
        (None, Some(table), Some(name)) => Some(CheckpointStore::table(
            evs_cli::aws::dynamodb().await?,
            table.clone(),
            name.clone(),
        )),
        _ => None,
    };
    if let Some(store) = &store {
        // Before the first line: a rerun must not print everything again
        // because the checkpoint could not be saved at the end.
        store.check().await?;
    }
    let checkpointed = store.is_some();
    let described = store.as_ref().map(CheckpointStore::describe);
    if let Some(path) = &args.quarantine {
        check_appendable(path)?;
    }
    let archive = location::open(args.archive.archive.clone()).await?;
    let since_ms = args.since.as_deref().map(parse_time).transpose()?;
    let frontier = Frontier::new(millis(args.archiver_timeout), millis(args.clock_margin));
    let options = ReplayOptions {
        since_ms,
        frontier,
        follow: args.follow,
        read_ahead: args.archive.read_ahead.max(1),
        gap_bound_ms: args
            .gap_timeout
            .map_or(frontier.timeout_ms + frontier.margin_ms, millis),
        poll_ms: millis(args.poll_interval).max(10),
        skip_unreadable: args.quarantine.is_some(),
        skip_keys: args.skip_object.iter().cloned().collect(),
        partition: args.partition.unwrap_or(Partition::ALL),
        ..ReplayOptions::default()
    };
    let gap_bound_ms = options.gap_bound_ms;
    let partition = args.partition.unwrap_or(Partition::ALL);
    let partition_label = (partition != Partition::ALL).then(|| partition.to_string());
    let checkpoint = match store.as_mut() {
        Some(store) => store.load().await?,
        None => None,
    };
    if let Some(saved) = checkpoint
        .as_ref()
        .filter(|c| c.partition != partition_label)
    {
        // Its other streams' events were passed over, not delivered.
        let of = |p: &Option<String>| {
            p.as_deref()
                .map_or("every stream".into(), |p| format!("partition {p}"))
        };
        bail!(
            "{} was saved by a replay of {}, and this one delivers {}: each partition needs a \
             checkpoint of its own (resuming it would skip events)",
            described.as_deref().unwrap_or("the checkpoint"),
            of(&saved.partition),
            of(&partition_label)
        );
    }
    let clock = evs_core::system_clock();
    let mut replayer = match checkpoint {
        Some(checkpoint) => {
            if args.since.is_some() {
                eprintln!("evs: warning: --since is ignored: resuming from the checkpoint");
            }
            Replayer::resume(archive, checkpoint, options, clock.clone())
                .context("cannot resume from the checkpoint")?
        }
        None => Replayer::new(archive, options, clock.clone()),
    };
    if let Some(table) = table {
        let store = DynamoStore::new(evs_cli::aws::dynamodb().await?, table);
        replayer = replayer.with_table(Arc::new(store));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let woken = Arc::new(Notify::new());
    {
        let (stop, woken) = (Arc::clone(&stop), Arc::clone(&woken));
        tokio::spawn(async move {
            // The first Ctrl-C or SIGTERM stops between steps (the checkpoint
            // is written); a second one exits at once.
            super::shutdown_signal().await;
            stop.store(true, Ordering::SeqCst);
            woken.notify_one();
            super::shutdown_signal().await;
            eprintln!("evs: interrupted again: exiting without a final checkpoint");
            std::process::exit(130);
        });
    }

    let consumer = (!args.consumer.is_empty())
        .then(|| Consumer::spawn(&args.consumer))
        .transpose()?;
    let mut out = Delivery::new(store, consumer, partition_label);
    let mut progress = Progress::new(args.quiet);
    let started = Instant::now();
    let interval = args.checkpoint_interval;
    let mut saved = Instant::now();
    let mut warned: BTreeSet<(String, u64)> = BTreeSet::new();
    let location = replayer.archive().location();
    let retry_for = args.retry_for.unwrap_or(if args.follow {
        Duration::ZERO
    } else {
        DEFAULT_RETRY_FOR
    });
    let mut outage = Streak::default();
    let mut interrupted = false;
    let result: Result<()> = async {
        loop {
            // Steps are never cancelled half-way: a step hands its events
            // over whole, and the checkpoint is taken only between steps.
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let step = match replayer.next().await {
                Ok(step) => {
                    if let Some((failures, lasted)) = outage.end() {
                        progress.finish();
                        eprintln!(
                            "evs: reading {location} again after {failures} failed attempts in {:.1} s",
                            lasted.as_secs_f64()
                        );
                    }
                    step
                }
                Err(e) if e.is_transient() => {
                    let (failures, since) = outage.fail();
                    let wait = BACKOFF.delay(failures);
                    if !retry_for.is_zero() && since + wait > retry_for {
                        return Err(anyhow::Error::new(e).context(format!(
                            "reading {location} kept failing for {:.0} s ({failures} attempts; --retry-for {})",
                            since.as_secs_f64(),
                            humanize(retry_for)
                        )));
                    }
                    progress.finish();
                    eprintln!(
                        "evs: warning: {} (attempt {failures}, failing for {:.1} s; retrying in {:.1} s)",
                        evs_core::describe_chain(&e),
                        since.as_secs_f64(),
                        wait.as_secs_f64()
                    );
                    // Checkpoints the consumer has taken meanwhile are saved.
                    out.save_taken().await?;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = woken.notified() => {}
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match step {
                Step::Object { events, .. } | Step::Backfill { events, .. } => {
                    for event in events.iter().filter(|e| partition.contains(&e.stream_id)) {
                        out.line(event.line())?;
                    }
                    out.consumer_error()?;
                    if checkpointed {
                        if saved.elapsed() >= interval {
                            out.checkpoint(replayer.checkpoint()?).await?;
                            saved = Instant::now();
                        } else if out.waiting() {
                            out.save_taken().await?;
                        }
                    }
                    let stats = replayer.stats();
                    progress.update(false, || {
                        format!(
                            "replay: {} events ({}/s), {} objects, {}, at {}",
                            count(stats.delivered),
                            count(rate(stats.delivered, started.elapsed())),
                            count(stats.objects),
                            megabytes(stats.stored_bytes),
                            stats.position.as_deref().unwrap_or("-"),
                        )
                    });
                }
                Step::Skipped { key, reason } => {
                    progress.finish();
                    eprintln!("evs: warning: skipped archive object {key}: {reason}");
                    if let Some(path) = &args.quarantine {
                        record_quarantined(path, &key, &reason)?;
                    }
                }
                Step::Idle { until_ms } => {
                    out.flush()?;
                    out.consumer_error()?;
                    if checkpointed {
                        out.checkpoint(replayer.checkpoint()?).await?;
                        saved = Instant::now();
                    }
                    let now = clock();
                    let gaps = replayer.gaps();
                    // Overdue by the archive's clock (everything sealed before
                    // the settled frontier has been read), as the replayer
                    // judges back-fills: a reordering still in flight is not
                    // warned about.
                    let archive_now = frontier.settled(now);
                    for gap in gaps
                        .iter()
                        .filter(|g| g.age_ms(archive_now).is_none_or(|age| age > gap_bound_ms))
                    {
                        if warned.insert((gap.stream_id.clone(), gap.expected)) {
                            progress.finish();
                            eprintln!("evs: warning: {}", describe_gap(gap, table.is_some()));
                        }
                    }
                    let stats = replayer.stats();
                    progress.update(true, || {
                        format!(
                            "following {location}: {} events, {} objects, waiting for the archive to settle{}",
                            count(stats.delivered),
                            count(stats.objects),
                            if gaps.is_empty() {
                                String::new()
                            } else {
                                format!(" ({} streams wait for a missing event)", gaps.len())
                            }
                        )
                    });
                    let until = Instant::now()
                        + Duration::from_millis(u64::try_from(until_ms - now).unwrap_or(0));
                    // While idle, checkpoints are saved as the consumer
                    // takes the lines they cover.
                    loop {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let nap = if out.waiting() {
                            left.min(Duration::from_millis(50))
                        } else {
                            left
                        };
                        tokio::select! {
                            () = tokio::time::sleep(nap) => {}
                            () = woken.notified() => break,
                        }
                        out.save_taken().await?;
                        out.consumer_error()?;
                        if out.reader_gone() {
                            return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into());
                        }
                    }
                }
                Step::End => break,
            }
        }
        Ok(())
    }
    .await;
    let consumer_gone = match result {
        Err(e) if super::is_broken_pipe(&e) => true,
        Err(e) => return Err(e),
        Ok(()) => false,
    };
    let drained = if consumer_gone {
        out.save_taken().await?;
        Drained::ReaderGone
    } else {
        if checkpointed {
            out.checkpoint(replayer.checkpoint()?).await?;
        }
        let lines = out.lines();
        let mut shown = false;
        let drained = out
            .drain(|unread| {
                if !shown && started.elapsed() > Duration::from_secs(1) {
                    progress.update(true, || {
                        format!("waiting for the consumer to read the last {lines} lines ({unread} bytes unread)")
                    });
                    shown = true;
                }
            })
            .await;
        match drained {
            Ok(d) => d,
            Err(e) if super::is_broken_pipe(&e) => {
                out.save_taken().await?;
                Drained::ReaderGone
            }
            Err(e) => return Err(e),
        }
    };
    progress.finish();
    if drained == Drained::ReaderGone {
        // A consumer that sent a wrong acknowledgement is named for it.
        out.consumer_error()?;
        return Err(ConsumerGone(out.gone_message()).into());
    }
    let stats = replayer.stats();
    if args.json {
        let now = clock();
        let behind_ms = stats
            .position
            .as_deref()
            .and_then(|key| evs_archive::ArchiveKey::parse(key).ok())
            .map(|key| {
                frontier
                    .settled(now)
                    .saturating_sub(key.sealed_at_ms())
                    .max(0)
            });
        let summary = serde_json::json!({
            "delivered": out.lines(),
            "events": stats.delivered,
            "objects": stats.objects,
            "storedBytes": stats.stored_bytes,
            "duplicates": stats.duplicates,
            "backfilled": stats.backfilled,
            "skippedObjects": stats.skipped_objects,
            "skippedKeys": stats.skipped_keys,
            "beforeStart": replayer.before_start(),
            "gaps": replayer.gaps().len(),
            "position": stats.position,
            "settledFrontier": evs_core::format_timestamp_ms(frontier.settled(now)),
            "behindFrontierMs": behind_ms,
            "partition": partition.to_string(),
            "seconds": started.elapsed().as_secs_f64(),
            "interrupted": interrupted,
        });
        eprintln!("{summary}");
    } else if !args.quiet {
        let mut line = format!(
            "evs: replayed {} events from {} objects ({}) of {location} in {:.1} s ({} events/s); {} duplicate lines dropped",
            count(stats.delivered),
            count(stats.objects),
            megabytes(stats.stored_bytes),
            started.elapsed().as_secs_f64(),
            count(rate(stats.delivered, started.elapsed())),
            count(stats.duplicates),
        );
        for (n, what) in [
            (
                replayer.before_start(),
                "events older than their stream's first event after --since not delivered",
            ),
            (stats.backfilled, "read from the table"),
            (stats.skipped_keys, "keys skipped (not archive objects)"),
            (stats.skipped_objects, "archive objects skipped unread"),
        ] {
            if n > 0 {
                line.push_str(&format!("; {} {what}", count(n)));
            }
        }
        eprintln!("{line}");
        if stats.skipped_objects > 0 {
            eprintln!(
                "evs: warning: the events of the skipped objects are missing unless the table \
                 supplied them; the streams they leave with gaps are named below, but an event \
                 that was the last of its stream leaves no trace in the archive: check with \
                 `evs verify --table TABLE`{}",
                match &args.quarantine {
                    Some(path) => format!(" (skipped keys in {})", path.display()),
                    None => String::new(),
                }
            );
        }
        if stats.objects == 0 && stats.skipped_objects == 0 && !interrupted {
            eprintln!(
                "evs: note: {location} holds no archive objects{}",
                if stats.skipped_keys > 0 {
                    " (only keys that are not archive objects: is the prefix right?)"
                } else {
                    " yet (is the prefix right? set it with s3://BUCKET/PREFIX/ or EVS_ARCHIVE_PREFIX)"
                }
            );
        }
    }
    if interrupted {
        let saved = match &described {
            Some(what) => format!(" ({what} is saved)"),
            None => String::new(),
        };
        if args.follow {
            // Stopping is how a follower ends: exit 0 (documented).
            return Ok(());
        }
        return Err(Interrupted(saved).into());
    }
    let gaps = replayer.gaps();
    if !gaps.is_empty() {
        let mut report = format!(
            "the replay is incomplete: {} streams wait for a missing event",
            gaps.len()
        );
        for gap in gaps.iter().take(50) {
            report.push_str("\n  ");
            report.push_str(&describe_gap(gap, table.is_some()));
        }
        if gaps.len() > 50 {
            report.push_str(&format!("\n  ... and {} more", gaps.len() - 50));
        }
        return Err(Incomplete(report).into());
    }
    Ok(())
}

/// How long a replay that does not follow retries an archive or table
/// outage before it gives up (`--retry-for`).
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(300);

/// The waits between attempts while the archive or table is unreachable.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Warns about settings that can make a replay skip an object.
fn warn_unsafe_settings(args: &ReplayArgs) {
    if args.archiver_timeout < MIN_ARCHIVER_TIMEOUT {
        eprintln!(
            "evs: warning: --archiver-timeout {} is below {}: an object the archiver seals \
             earlier but lands later than that is skipped; give the archiver's real function \
             timeout (the Lambda's Timeout, `evs pump --timeout`)",
            humanize(args.archiver_timeout),
            humanize(MIN_ARCHIVER_TIMEOUT)
        );
    }
    if args.clock_margin < MIN_CLOCK_MARGIN {
        eprintln!(
            "evs: warning: --clock-margin {} is below {}: a clock difference between the \
             archiver and this reader larger than the margin can make the replay skip an object",
            humanize(args.clock_margin),
            humanize(MIN_CLOCK_MARGIN)
        );
    }
}

/// Below these, `--archiver-timeout` and `--clock-margin` are warned about.
const MIN_ARCHIVER_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_CLOCK_MARGIN: Duration = Duration::from_secs(5);

fn check_appendable(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .with_context(|| format!("cannot write the quarantine file {}", path.display()))
}

/// Appends one skipped object to the quarantine file, synced.
fn record_quarantined(path: &Path, key: &str, reason: &str) -> Result<()> {
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

fn describe_gap(gap: &Gap, with_table: bool) -> String {
    let missing = gap.missing();
    let what = if missing.end - missing.start == 1 {
        format!("event {}", missing.start)
    } else {
        format!("events {}..={}", missing.start, missing.end - 1)
    };
    let since = gap
        .since
        .as_ref()
        .map(|at| format!(" since {}", at.key))
        .unwrap_or_default();
    let hint = if with_table {
        "the table does not have it either"
    } else {
        "pass --table to read it from the table"
    };
    format!(
        "stream {:?} is missing {what}; {} later events held back{since} ({hint})",
        gap.stream_id, gap.held
    )
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn parse_time(text: &str) -> Result<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("--since {text:?} is not an RFC 3339 time such as 2026-11-24T08:00:00Z")
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .with_context(|| format!("--since {text:?} is out of range"))
}
