//! The replay driver: a projection rebuilt from the archive.
//!
//! It is the archive replayer ([`Replayer`]) started with the projection's
//! own versions ([`replayer_for`]), so what the projection has applied is
//! dropped as a duplicate and no checkpoint file is needed: the state store
//! is the checkpoint. Its events are applied in batches
//! ([`Applier::apply_batch`]). A replayer given a partition
//! ([`ReplayOptions::partition`]) reads only that partition's streams (the
//! others are dropped as objects are decoded, and never wait, hold or
//! back-fill), so N workers, one per part, rebuild one projection together.
//!
//! Handoff to the live driver (docs/design.md §9): start the live driver
//! first, then run this one with [`RebuildOptions::until_ms`] set to the
//! handoff time: the live driver's start when it reads from `TRIM_HORIZON`,
//! plus the archiver's lag, timeout and clock margin when it reads from
//! `LATEST`. It follows the archive until its settled frontier passes that
//! time (every object sealed before it is read), then stops. Both may apply
//! the same events; the ledger makes the overlap harmless.
//!
//! A rebuild applies events in the archive's order (across streams too);
//! the live driver in each stream's order with streams interleaved as the
//! shards deliver them (see [`Projection`]'s docs on order).

use std::time::Duration;

use evs_archive::Line;
use evs_core::{Backoff, Clock};
use evs_replay::{Archive, ReplayError, ReplayEvent, ReplayOptions, Replayer, Step};

use crate::apply::{Applier, DriveError};
use crate::projection::Projection;
use crate::store::{RowStore, StoreError};

/// How [`rebuild`] runs. The streams it applies are the replayer's
/// ([`ReplayOptions::partition`]).
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Events applied per batch (at most; an object boundary or an idle
    /// archive applies what is pending).
    pub batch_events: usize,
    /// Follow the archive until its settled frontier passes this time (epoch
    /// ms, reader clock), then stop: the handoff to a live driver started at
    /// this time. `None`: stop at the archive's end (the replayer must not
    /// be following).
    pub until_ms: Option<i64>,
    /// How long transient failures (store, table, archive) are retried
    /// before the rebuild gives up.
    pub retry_for: Duration,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            batch_events: 1000,
            until_ms: None,
            retry_for: Duration::from_secs(300),
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Events of this partition applied and committed (back-filled included).
    pub applied: u64,
    /// Events of this partition skipped as already applied.
    pub skipped: u64,
    /// Lines of other partitions' streams passed over (the replayer's
    /// [`evs_replay::ReplayStats::other_partitions`]).
    pub other_partitions: u64,
    /// Streams this rebuild parked (an event the projection or the store
    /// refused; listed by the store's `parked`).
    pub parked: u64,
    /// Commits made (each a unit of many events: one transaction).
    pub commits: u64,
    /// Commits lost to another driver and folded again.
    pub conflicts: u64,
    /// Objects read.
    pub objects: u64,
    /// Objects skipped unread (see [`ReplayOptions::skip_unreadable`]).
    pub objects_skipped: u64,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The archive could not be replayed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A delivered line is not an event.
    #[error("stream {stream:?} event {event_id}: the replayed line is not an event: {source}")]
    Line {
        /// The stream.
        stream: String,
        /// The event.
        event_id: u64,
        /// Why.
        #[source]
        source: evs_archive::LineError,
    },
    /// Events could not be applied.
    #[error(transparent)]
    Apply(#[from] DriveError),
    /// The projection's versions could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive ended with streams whose next event never came (later
    /// ones are held), and no events table to fill them from.
    #[error("the archive ends with {} missing events in {}: {}; give the rebuild the events table to fill them from, or repair the archive (evs verify)", .gaps.len(), evs_core::plural(.gaps.len() as u64, "stream"), describe_gaps(.gaps))]
    Gaps {
        /// The streams, the event each waits for and the events held.
        gaps: Vec<evs_replay::Gap>,
    },
    /// A replayer that follows the archive with no `until_ms` never ends.
    #[error("a rebuild that follows the archive needs a time to stop at (until_ms)")]
    Endless,
}

/// A replayer over `archive` that starts from the projection's ledger: everything the projection applied is a duplicate to it. With
/// [`ReplayOptions::partition`], only that partition's streams.
pub async fn replayer_for<R, St: RowStore<R>>(
    archive: Archive,
    options: ReplayOptions,
    clock: Clock,
    store: &St,
) -> Result<Replayer, StoreError> {
    let versions = store.versions().await?;
    // the events as the table holds them, built as each line is decoded
    let options = ReplayOptions {
        events: true,
        ..options
    };
    Ok(Replayer::with_versions(archive, options, clock, versions))
}

/// Applies what `replayer` delivers, in batches, until the archive's end (or,
/// following, until the settled frontier passes [`RebuildOptions::until_ms`]).
/// `progress` is called after each applied batch.
pub async fn rebuild<P, St>(
    applier: &mut Applier<P, St>,
    replayer: &mut Replayer,
    options: &RebuildOptions,
    clock: &Clock,
    mut progress: impl FnMut(&RebuildReport),
) -> Result<RebuildReport, RebuildError>
where
    P: Projection,
    St: RowStore<P::Row>,
{
    let following = replayer.options().follow;
    if following && options.until_ms.is_none() {
        return Err(RebuildError::Endless);
    }
    let frontier = replayer.options().frontier;
    let mut report = RebuildReport::default();
    let mut pending = Vec::new();
    let mut failing = Failing::new(options.retry_for);
    loop {
        let step = match replayer.next().await {
            Ok(step) => step,
            Err(e) if e.is_transient() => {
                failing.wait(e.into()).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        failing.reset();
        report.other_partitions = replayer.stats().other_partitions;
        match step {
            Step::Object { events, .. } => {
                report.objects += 1;
                take(&mut pending, events)?;
            }
            Step::Backfill { events, .. } => {
                take(&mut pending, events)?;
            }
            Step::Skipped { key, reason } => {
                report.objects_skipped += 1;
                tracing::warn!(%key, %reason, "archive object skipped");
            }
            Step::Idle { until_ms } => {
                flush(applier, &mut pending, &mut report, options).await?;
                progress(&report);
                if let Some(until) = options.until_ms {
                    if frontier.settled(clock()) >= until {
                        // streams still waiting at the handoff are filled
                        // (or named): the live driver may never see them
                        fill_gaps(applier, replayer.gaps(), &mut report).await?;
                        return Ok(report);
                    }
                }
                let wait = until_ms.saturating_sub(clock()).clamp(0, 1_000);
                tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
                continue;
            }
            Step::End => {
                flush(applier, &mut pending, &mut report, options).await?;
                fill_gaps(applier, replayer.gaps(), &mut report).await?;
                progress(&report);
                return Ok(report);
            }
        }
        if pending.len() >= options.batch_events {
            flush(applier, &mut pending, &mut report, options).await?;
            progress(&report);
        }
    }
}

/// At the archive's end, streams still waiting for an event: filled from
/// the events table when the applier has it (each stream to the table's
/// end), else the rebuild fails naming them (a success would leave them
/// short without a word).
async fn fill_gaps<P, St>(
    applier: &mut Applier<P, St>,
    gaps: Vec<evs_replay::Gap>,
    report: &mut RebuildReport,
) -> Result<(), RebuildError>
where
    P: Projection,
    St: RowStore<P::Row>,
{
    if gaps.is_empty() {
        return Ok(());
    }
    if applier.table().is_none() {
        return Err(RebuildError::Gaps { gaps });
    }
    let streams: Vec<String> = gaps.iter().map(|g| g.stream_id.clone()).collect();
    let filled = applier.catch_up(&streams).await;
    report.applied += filled.applied();
    match filled.streams.into_iter().find_map(|s| s.failed) {
        Some((_, error)) => Err(error.into()),
        None => Ok(()),
    }
}

fn describe_gaps(gaps: &[evs_replay::Gap]) -> String {
    let mut shown: Vec<String> = gaps
        .iter()
        .take(5)
        .map(|g| {
            format!(
                "{} waits for event {} ({} held)",
                g.stream_id, g.expected, g.held
            )
        })
        .collect();
    if gaps.len() > 5 {
        shown.push(format!("and {} more", gaps.len() - 5));
    }
    shown.join(", ")
}

/// Adds `events` to the pending batch, as events: built as the lines were
/// decoded (see [`replayer_for`]), or read from the line (an event read from
/// the table to fill a gap).
fn take(
    pending: &mut Vec<evs_core::RecordedEvent>,
    events: Vec<ReplayEvent>,
) -> Result<(), RebuildError> {
    for mut event in events {
        if let Some(recorded) = event.take_recorded() {
            pending.push(recorded);
            continue;
        }
        let recorded = Line::parse(event.line())
            .map_err(evs_archive::LineError::from)
            .and_then(|line| line.to_event())
            .map_err(|source| RebuildError::Line {
                stream: event.stream_id.clone(),
                event_id: event.event_id,
                source,
            })?;
        pending.push(recorded);
    }
    Ok(())
}

/// Applies the pending events; transient failures are retried (the whole
/// batch again: what was committed is skipped by version).
async fn flush<P, St>(
    applier: &mut Applier<P, St>,
    pending: &mut Vec<evs_core::RecordedEvent>,
    report: &mut RebuildReport,
    options: &RebuildOptions,
) -> Result<(), RebuildError>
where
    P: Projection,
    St: RowStore<P::Row>,
{
    let mut failing = Failing::new(options.retry_for);
    let mut first_try = true;
    while !pending.is_empty() {
        let batch = applier.apply_batch(pending).await;
        report.applied += batch.applied();
        report.parked += batch.parked().count() as u64;
        report.commits += batch.commits;
        report.conflicts += batch.conflicts;
        if first_try {
            report.skipped += batch.skipped();
        }
        first_try = false;
        let transient = batch.only_transient_failures();
        let Some(failed) = batch.streams.into_iter().find_map(|s| s.failed) else {
            pending.clear();
            return Ok(());
        };
        if !transient {
            return Err(failed.1.into());
        }
        failing.wait(failed.1.into()).await?;
    }
    Ok(())
}

/// Transient failures in a row: waited out with backoff for a while.
struct Failing {
    backoff: Backoff,
    since: Option<tokio::time::Instant>,
    limit: Duration,
    attempt: u32,
}

impl Failing {
    fn new(limit: Duration) -> Self {
        Self {
            backoff: Backoff::default(),
            since: None,
            limit,
            attempt: 0,
        }
    }

    fn reset(&mut self) {
        self.since = None;
        self.attempt = 0;
    }

    /// Waits before the next attempt, or gives up with `error`.
    async fn wait(&mut self, error: RebuildError) -> Result<(), RebuildError> {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= self.limit {
            return Err(error);
        }
        self.attempt += 1;
        tracing::warn!(attempt = self.attempt, %error, "transient failure; retrying");
        tokio::time::sleep(self.backoff.delay(self.attempt)).await;
        Ok(())
    }
}
