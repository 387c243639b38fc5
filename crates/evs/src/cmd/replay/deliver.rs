//! The deliver stage of `evs replay`: the replayer's steps to the output.
//!
//! Steps are never cancelled half-way: a step hands its events over whole,
//! and a checkpoint is taken only between steps. Checkpoints are queued
//! with the position of the output they follow ([`Delivery::snapshot`]):
//! after a step once as many events have been delivered since the last as
//! it held streams (a checkpoint then costs about a twentieth of the work),
//! and at least every `--checkpoint-interval`, so that a reader that stops
//! can be checkpointed close to what it took.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use evs_core::{Backoff, Streak};
use evs_replay::{Gap, ReplayError, Replayer, Step};

use super::open::{record_quarantined, Settings};
use super::output::{Delivery, ReaderGone};
use super::Stop;
use crate::cmd::progress::{count, megabytes, rate, Progress};

/// The waits between attempts while the archive or table is unreachable.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// A checkpoint is taken once a step has been delivered since the last one
/// and as many events as the last one held streams: a checkpoint costs
/// about what delivering a twentieth as many events does, so this keeps
/// them near a twentieth of the work, and counts events rather than time
/// so that a busy machine does not make them rarer.
const EVENTS_PER_CHECKPOINT_STREAM: u64 = 1;

/// Most gaps remembered as warned about (a gap is warned about once).
const MAX_WARNED: usize = 100_000;

/// How the delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// Every listed object was read (not following).
    End,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
    /// The reader of the output went away.
    ReaderGone,
}

/// The loop's own state.
struct Delivering<'a> {
    replayer: &'a mut Replayer,
    out: &'a mut Delivery,
    settings: &'a Settings,
    progress: &'a mut Progress,
    started: Instant,
    location: String,
    last_snapshot: Instant,
    /// Events delivered since the last checkpoint was taken.
    since_snapshot: u64,
    /// Streams (and held events) the last checkpoint held.
    snapshot_size: u64,
    outage: Streak,
    warned: HashSet<(String, u64)>,
}

/// Delivers steps until the end of the archive (not following), a stop, or
/// the reader going away.
pub(super) async fn deliver(
    replayer: &mut Replayer,
    out: &mut Delivery,
    settings: &Settings,
    stop: &Stop,
    progress: &mut Progress,
) -> Result<Ended> {
    let location = replayer.archive().location();
    let mut delivering = Delivering {
        replayer,
        out,
        settings,
        progress,
        started: Instant::now(),
        location,
        last_snapshot: Instant::now(),
        since_snapshot: 0,
        snapshot_size: 0,
        outage: Streak::default(),
        warned: HashSet::new(),
    };
    match delivering.run(stop).await {
        Err(e) if e.is::<ReaderGone>() => Ok(Ended::ReaderGone),
        other => other,
    }
}

impl Delivering<'_> {
    async fn run(&mut self, stop: &Stop) -> Result<Ended> {
        loop {
            if stop.requested() {
                return Ok(Ended::Interrupted);
            }
            let step = match self.replayer.next().await {
                Ok(step) => {
                    self.recovered();
                    step
                }
                Err(e) if e.is_transient() => {
                    self.outage(e, stop).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match step {
                Step::Object { events, .. } | Step::Backfill { events, .. } => {
                    // Other partitions' events never reach here (the
                    // replayer drops them as it reads).
                    for event in &events {
                        self.out.line(event.line()).await?;
                    }
                    self.since_snapshot += events.len() as u64;
                    self.after_events().await?;
                }
                Step::Skipped { key, reason } => {
                    self.progress.finish();
                    eprintln!("evs: warning: skipped archive object {key}: {reason}");
                    if let Some(path) = &self.settings.quarantine {
                        record_quarantined(path, &key, &reason)?;
                    }
                }
                Step::Idle { until_ms } => self.idle(until_ms, stop).await?,
                Step::End => return Ok(Ended::End),
            }
        }
    }

    /// After a step's events: a checkpoint if one is due, progress.
    async fn after_events(&mut self) -> Result<()> {
        if self.out.checkpointed() {
            let due = self.last_snapshot.elapsed() >= self.settings.interval
                || (self.since_snapshot > 0
                    && self.since_snapshot >= self.snapshot_size * EVENTS_PER_CHECKPOINT_STREAM);
            if due {
                self.snapshot().await?;
            } else {
                self.out.save_taken().await?;
            }
        }
        let stats = self.replayer.stats();
        let (started, location) = (self.started, &self.location);
        self.progress.update(false, || {
            format!(
                "replay: {} events ({}/s), {} objects, {}, at {} ({location})",
                count(stats.delivered),
                count(rate(stats.delivered, started.elapsed())),
                count(stats.objects),
                megabytes(stats.stored_bytes),
                stats.position.as_deref().unwrap_or("-"),
            )
        });
        Ok(())
    }

    /// Queues the replayer's checkpoint after the lines handed over so far.
    async fn snapshot(&mut self) -> Result<()> {
        let checkpoint = self.replayer.checkpoint()?;
        self.snapshot_size = (checkpoint.last_delivered.len() + checkpoint.held.len()) as u64;
        self.since_snapshot = 0;
        self.last_snapshot = Instant::now();
        self.out.snapshot(checkpoint).await
    }

    /// Nothing settled is left to read: everything is flushed and
    /// checkpointed, overdue gaps are warned about, and the replay waits
    /// for the next listing.
    async fn idle(&mut self, until_ms: i64, stop: &Stop) -> Result<()> {
        self.out.send().await?;
        if self.out.checkpointed() {
            self.snapshot().await?;
        }
        let now = evs_core::now_ms();
        let gaps = self.replayer.gaps();
        self.warn_gaps(&gaps, now);
        let stats = self.replayer.stats();
        let location = &self.location;
        self.progress.update(true, || {
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
        let wait = Duration::from_millis(u64::try_from(until_ms.saturating_sub(now)).unwrap_or(0));
        self.out.wait(Instant::now() + wait, stop.woken()).await
    }

    /// Warns once about each gap overdue by the archive's clock (everything
    /// sealed before the settled frontier has been read), as the replayer
    /// judges back-fills: a reordering still in flight is not warned about.
    fn warn_gaps(&mut self, gaps: &[Gap], now: i64) {
        let archive_now = self.settings.frontier.settled(now);
        let bound = self.settings.gap_bound_ms;
        // Gaps that closed are forgotten: the set holds open gaps only.
        let open: HashSet<(&str, u64)> = gaps
            .iter()
            .map(|g| (g.stream_id.as_str(), g.expected))
            .collect();
        self.warned
            .retain(|(stream, expected)| open.contains(&(stream.as_str(), *expected)));
        for gap in gaps
            .iter()
            .filter(|g| g.age_ms(archive_now).is_none_or(|age| age > bound))
        {
            if self.warned.len() < MAX_WARNED
                && self.warned.insert((gap.stream_id.clone(), gap.expected))
            {
                self.progress.finish();
                eprintln!(
                    "evs: warning: {}",
                    describe_gap(gap, self.settings.table.is_some())
                );
            }
        }
    }

    /// A transient failure: reported and retried after a backoff, for at
    /// most `--retry-for`. Checkpoints the reader has taken meanwhile are
    /// saved.
    async fn outage(&mut self, e: ReplayError, stop: &Stop) -> Result<()> {
        let (failures, since) = self.outage.fail();
        let wait = BACKOFF.delay(failures);
        let retry_for = self.settings.retry_for;
        if !retry_for.is_zero() && since + wait > retry_for {
            return Err(anyhow::Error::new(e).context(format!(
                "reading {} kept failing for {} ({failures} attempts; --retry-for {})",
                self.location,
                evs_cli::human(since),
                evs_cli::human(retry_for)
            )));
        }
        self.progress.finish();
        eprintln!(
            "evs: warning: {}; {}",
            evs_core::describe_chain(&e),
            evs_core::retry::retrying(failures, since, wait)
        );
        self.out.wait(Instant::now() + wait, stop.woken()).await
    }

    /// Reports the end of an outage.
    fn recovered(&mut self) {
        if let Some((failures, lasted)) = self.outage.end() {
            self.progress.finish();
            eprintln!(
                "evs: reading {} again after {} over {}",
                self.location,
                evs_core::plural(u64::from(failures), "failed attempt"),
                evs_cli::human(lasted)
            );
        }
    }
}

/// One gap, for a person.
pub(super) fn describe_gap(gap: &Gap, with_table: bool) -> String {
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
