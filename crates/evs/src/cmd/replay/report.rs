//! The last stage of `evs replay`: the summary on stderr, and the exit.
//!
//! The exit says whether everything was delivered: 0 only when it was (or
//! a follower was stopped); 1, naming the reader, when the reader went away
//! first; 130 when interrupted; 4 when a stream still misses an event.

use std::time::Instant;

use anyhow::Result;
use evs_replay::Replayer;

use super::deliver::describe_gap;
use super::open::Settings;
use super::output::Delivered;
use crate::cmd::progress::{count, megabytes, rate};
use crate::cmd::{ConsumerGone, Incomplete, Interrupted};

/// How the replay ended.
pub(super) struct Ending<'a> {
    pub replayer: &'a Replayer,
    pub settings: &'a Settings,
    pub delivered: Delivered,
    pub interrupted: bool,
    /// The checkpoint, for messages.
    pub described: Option<String>,
    pub started: Instant,
}

/// Prints the summary and turns the ending into the command's result.
pub(super) fn report(ending: Ending<'_>) -> Result<()> {
    if let Some(message) = ending.delivered.gone {
        return Err(ConsumerGone(message).into());
    }
    if ending.settings.json {
        eprintln!("{}", json_summary(&ending));
    } else if !ending.settings.quiet {
        human_summary(&ending);
    }
    let Ending {
        replayer,
        settings,
        interrupted,
        described,
        ..
    } = ending;
    if interrupted {
        if settings.follow {
            // Stopping is how a follower ends: exit 0 (documented).
            return Ok(());
        }
        let saved = described.map_or(String::new(), |what| format!(" ({what} is saved)"));
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
            report.push_str(&describe_gap(gap, settings.table.is_some()));
        }
        if gaps.len() > 50 {
            report.push_str(&format!("\n  ... and {} more", gaps.len() - 50));
        }
        return Err(Incomplete(report).into());
    }
    Ok(())
}

/// `--json`: one object for scripts.
fn json_summary(ending: &Ending<'_>) -> serde_json::Value {
    let (replayer, settings) = (ending.replayer, ending.settings);
    let stats = replayer.stats();
    let now = evs_core::now_ms();
    let behind_ms = stats
        .position
        .as_deref()
        .and_then(|key| evs_archive::ArchiveKey::parse(key).ok())
        .map(|key| {
            settings
                .frontier
                .settled(now)
                .saturating_sub(key.sealed_at_ms())
                .max(0)
        });
    serde_json::json!({
        "delivered": ending.delivered.lines,
        "checkpointed": ending.delivered.saved_lines,
        "events": stats.delivered,
        "objects": stats.objects,
        "storedBytes": stats.stored_bytes,
        "duplicates": stats.duplicates,
        "backfilled": stats.backfilled,
        "skippedObjects": stats.skipped_objects,
        "skippedKeys": stats.skipped_keys,
        "beforeStart": replayer.before_start(),
        "assumedStarts": stats.assumed_starts,
        "otherPartitions": stats.other_partitions,
        "gaps": replayer.gaps().len(),
        "position": stats.position,
        "settledFrontier": evs_core::format_timestamp_ms(settings.frontier.settled(now)),
        "behindFrontierMs": behind_ms,
        "partition": settings.partition.to_string(),
        "seconds": ending.started.elapsed().as_secs_f64(),
        "interrupted": ending.interrupted,
    })
}

/// The summary for a person.
fn human_summary(ending: &Ending<'_>) {
    let (replayer, settings) = (ending.replayer, ending.settings);
    let stats = replayer.stats();
    let location = replayer.archive().location();
    let elapsed = ending.started.elapsed();
    let mut line = format!(
        "evs: replayed {} events from {} objects ({}) of {location} in {} ({} events/s); {} duplicate lines dropped",
        count(stats.delivered),
        count(stats.objects),
        megabytes(stats.stored_bytes),
        evs_cli::human(elapsed),
        count(rate(stats.delivered, elapsed)),
        count(stats.duplicates),
    );
    for (n, what) in [
        (
            replayer.before_start(),
            "events written before --since not delivered",
        ),
        (
            stats.assumed_starts,
            "streams assumed to start at the first event found after --since (no --table to check)",
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
            match &settings.quarantine {
                Some(path) => format!(" (skipped keys in {})", path.display()),
                None => String::new(),
            }
        );
    }
    if stats.objects == 0 && stats.skipped_objects == 0 && !ending.interrupted {
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
