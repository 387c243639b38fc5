//! `evs replay`: the archive as NDJSON, every event once, each stream in order.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use evs_core::DynamoStore;
use evs_replay::{Checkpoint, Frontier, Gap, ReplayOptions, Replayer, Step};
use tokio::sync::Notify;

use super::progress::{count, megabytes, rate, Progress};
use super::{location, Incomplete, Interrupted};
use crate::flags::ReplayArgs;

pub async fn run(table: Option<&str>, args: ReplayArgs) -> Result<()> {
    let archive = location::open(args.archive.archive.clone()).await?;
    let since_ms = args.since.as_deref().map(parse_time).transpose()?;
    let frontier = Frontier::new(
        seconds_ms(args.archiver_timeout),
        seconds_ms(args.clock_margin),
    );
    let options = ReplayOptions {
        since_ms,
        frontier,
        follow: args.follow,
        read_ahead: args.archive.read_ahead.max(1),
        gap_bound_ms: args
            .gap_timeout
            .map_or(frontier.timeout_ms + frontier.margin_ms, seconds_ms),
        poll_ms: (args.poll_interval.max(0.01) * 1000.0) as i64,
        ..ReplayOptions::default()
    };
    let gap_bound_ms = options.gap_bound_ms;
    let checkpoint = match &args.checkpoint_file {
        Some(path) if path.exists() => Some(read_checkpoint(path)?),
        _ => None,
    };
    let clock = evs_core::system_clock();
    let mut replayer = match checkpoint {
        Some(checkpoint) => {
            if args.since.is_some() {
                tracing::warn!("--since is ignored: resuming from the checkpoint");
            }
            Replayer::resume(archive, checkpoint, options, clock.clone())
                .context("cannot resume from the checkpoint")?
        }
        None => Replayer::new(archive, options, clock.clone()),
    };
    if let Some(table) = table {
        let store = DynamoStore::new(crate::aws::dynamodb().await?, table);
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

    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout());
    let mut progress = Progress::new(args.quiet);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.checkpoint_interval.max(0.0));
    let mut saved = Instant::now();
    let mut warned: BTreeSet<(String, u64)> = BTreeSet::new();
    let location = replayer.archive().location();
    let mut interrupted = false;
    loop {
        // Steps are never cancelled half-way: a step hands its events over
        // whole, and the checkpoint is taken only between steps.
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        match replayer.next().await? {
            Step::Object { events, .. } | Step::Backfill { events, .. } => {
                for event in &events {
                    out.write_all(event.line().as_bytes())?;
                    out.write_all(b"\n")?;
                }
                if let Some(path) = &args.checkpoint_file {
                    if saved.elapsed() >= interval {
                        out.flush()?;
                        write_checkpoint(path, &replayer.checkpoint()?)?;
                        saved = Instant::now();
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
            Step::Idle { until_ms } => {
                out.flush()?;
                if let Some(path) = &args.checkpoint_file {
                    write_checkpoint(path, &replayer.checkpoint()?)?;
                    saved = Instant::now();
                }
                let now = clock();
                let gaps = replayer.gaps();
                // Overdue by the archive's clock (everything sealed before the
                // settled frontier has been read), as the replayer judges
                // back-fills: a reordering still in flight is not warned about.
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
                let wait = Duration::from_millis(u64::try_from(until_ms - now).unwrap_or(0));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = woken.notified() => {}
                }
            }
            Step::End => break,
        }
    }
    out.flush()?;
    if let Some(path) = &args.checkpoint_file {
        write_checkpoint(path, &replayer.checkpoint()?)?;
    }
    progress.finish();
    let stats = replayer.stats();
    if !args.quiet {
        let mut line = format!(
            "evs: replayed {} events from {} objects ({}) of {location} in {:.1} s ({} events/s); {} duplicate lines dropped",
            count(stats.delivered),
            count(stats.objects),
            megabytes(stats.stored_bytes),
            started.elapsed().as_secs_f64(),
            count(rate(stats.delivered, started.elapsed())),
            count(stats.duplicates),
        );
        if replayer.before_start() > 0 {
            line.push_str(&format!(
                "; {} events older than their stream's first event after --since not delivered",
                count(replayer.before_start())
            ));
        }
        if stats.backfilled > 0 {
            line.push_str(&format!(
                "; {} read from the table",
                count(stats.backfilled)
            ));
        }
        if stats.skipped_keys > 0 {
            line.push_str(&format!(
                "; {} keys skipped (not archive objects)",
                count(stats.skipped_keys)
            ));
        }
        eprintln!("{line}");
    }
    if interrupted {
        let saved = match &args.checkpoint_file {
            Some(path) => format!(" (checkpoint saved to {})", path.display()),
            None => String::new(),
        };
        if args.follow {
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

fn seconds_ms(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn parse_time(text: &str) -> Result<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("--since {text:?} is not an RFC 3339 time such as 2026-11-24T08:00:00Z")
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .with_context(|| format!("--since {text:?} is out of range"))
}

fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the checkpoint {}", path.display()))?;
    Checkpoint::from_json(&text)
        .with_context(|| format!("the checkpoint {} is not usable", path.display()))
}

/// Writes the checkpoint atomically: a temporary file beside it, synced,
/// then renamed over it.
fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let text = checkpoint.to_json()?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write the checkpoint {}", path.display()))
}
