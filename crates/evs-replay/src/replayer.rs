//! The replayer: the archive, read in order, through the [`Sequencer`]
//! (what it guarantees and why: `docs/design.md` §3–4).
//!
//! [`Replayer::next`] is a pull loop. Each call returns one [`Step`]: the
//! events one object releases, events fetched from the table to close a gap,
//! "nothing settled to read until then" in follow mode, or the end of the
//! archive. Between steps the caller may take a [`Replayer::checkpoint`]
//! (after it has durably handled the events it was given).
//!
//! Listing: keys are listed page by page with `StartAfter`; objects are
//! fetched ahead ([`Prefetch`]) and consumed in key order.
//!
//! Follow mode ([`ReplayOptions::follow`]): `now` is read before each LIST,
//! and only the leading settled keys of the page are consumed
//! ([`Frontier::consumable`]); the listing resumes after the last consumed
//! key, so the cursor never passes the settled frontier.
//!
//! Without follow mode every listed object is read, settled or not; but the
//! checkpoint's cursor stays at the last object that was settled when it was
//! listed. A later run from that checkpoint (following or not) re-reads the
//! younger objects — their events are duplicates by then and are dropped —
//! and so still sees an object that was sealed earlier but landed later.
//!
//! A key under the prefix that is not an events key (a stray file, a nested
//! prefix) is skipped, but it moves the cursor only when it sorts before
//! every key an object sealed at the frontier could have.
//!
//! Gaps: with a table ([`Replayer::with_table`]), a stream whose next event
//! is missing has exactly its missing events read from the table (the source
//! of truth) and its held events released: at the end of the archive (no
//! follow); in follow mode once the gap has been visible for
//! [`ReplayOptions::gap_bound_ms`] by the *archive's* clock (the newest seal
//! time read while catching up, the settled frontier once caught up), so
//! that an ordinary reordering between shards, resolved by the next object,
//! costs no table read; and when a stream's hold-back buffer is full.
//! Without a table the gaps stay reported by [`Replayer::gaps`] and the held
//! events wait. A back-fill that found nothing is not tried again while its
//! gap stays as it is; the replayer remembers only the gaps open now and the
//! stray keys a listing may still return, so a long follow's memory stays
//! bounded.
//!
//! `--since` ([`ReplayOptions::since_ms`]) starts in the middle of the
//! archive and delivers the events written at or after the time, judged by
//! their timestamps ([`SequencerConfig::since_ms`]). A stream first found at
//! an event after its first, written after the time, has an unknown start
//! (its earlier events may be older than the time, or still to come), and
//! so has one found only before the time so far, then after a hole: once
//! that has been visible for the gap bound (following or not), or at the
//! end, the table is read backwards to the stream's last event before the
//! time; without a table the start is assumed there, and a contradiction
//! found later stops the replay.
//!
//! Partitions ([`ReplayOptions::partition`]): the other partitions' lines
//! are dropped as an object is decoded, by stream id, so their streams never
//! reach the sequencer, its gaps, back-fills or checkpoint.
//!
//! Failure: a listing, fetch or table read that fails in a way that may heal
//! ([`ReplayError::is_transient`]) loses nothing: wait and call
//! [`Replayer::next`] again. The failed object keeps its place; an object
//! whose back-fill failed half-way (a full hold-back buffer) is kept, with
//! what its lines released so far, and goes on from the line that waited.
//! A call dropped while it waits (a timeout around it) is the same. Until
//! that object is finished, [`Replayer::checkpoint`] is refused (without
//! harm). After any other error the replayer refuses to go on (and to
//! checkpoint); resume from the last saved checkpoint.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use evs_archive::ArchiveKey;
use evs_core::{Clock, Direction, EventStore, ReadRequest, StreamId};

use crate::archive::{
    Archive, ArchiveError, Listed, Prefetch, DEFAULT_PAGE_SIZE, DEFAULT_READ_AHEAD,
};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::event::{ArchivePosition, ReplayEvent};
use crate::frontier::{Frontier, DEFAULT_MARGIN_MS};
use crate::partition::Partition;
use crate::sequencer::{Gap, Offer, SequenceError, Sequencer, SequencerConfig};

/// The archiver's function timeout assumed when none is given: 900 s, the
/// Lambda maximum (the SAM template's default is 60 s).
pub const DEFAULT_FUNCTION_TIMEOUT_MS: i64 = 900_000;

/// How a [`Replayer`] reads.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Replay from this time (epoch ms; only without a checkpoint, which
    /// keeps it): every event written at or after it (by its timestamp) is
    /// delivered, each stream from its first such event; none written
    /// before it. Listing starts at the objects sealed a clock margin before
    /// it. See [`SequencerConfig::since_ms`].
    pub since_ms: Option<i64>,
    /// The settled-frontier rule (function timeout + clock margin).
    pub frontier: Frontier,
    /// Keep following the archive after its end.
    pub follow: bool,
    /// Objects fetched ahead.
    pub read_ahead: usize,
    /// Keys per listing request.
    pub page_size: usize,
    /// Follow mode: how long a gap may stay visible (reader clock minus the
    /// seal time of the object that revealed it) before the stream is
    /// back-filled from the table.
    pub gap_bound_ms: i64,
    /// Follow mode: the longest wait between listings when idle.
    pub poll_ms: i64,
    /// The sequencer's bounds.
    pub sequencer: SequencerConfig,
    /// Skip an object that cannot be read (it cannot be decompressed or a
    /// line is not an event) instead of failing: [`Step::Skipped`] says
    /// which and why. Its events are then missing, as gaps.
    pub skip_unreadable: bool,
    /// Objects to skip whatever they hold (keys), as [`Step::Skipped`].
    pub skip_keys: BTreeSet<String>,
    /// The streams to replay ([`Partition::ALL`]: every stream).
    pub partition: Partition,
    /// Build each event as the table holds it (`RecordedEvent`) as its
    /// line is decoded, on the read-ahead workers
    /// ([`ReplayEvent::take_recorded`]): for a projection's rebuild, which
    /// would otherwise parse every delivered line again. Such an event's
    /// line is not written ([`ReplayEvent::line`] is empty).
    pub events: bool,
    /// With `events`: the only event names whose payloads are read (a
    /// projection that ignores every other name); an event of another name
    /// is built without payload, metadata and attributes. `None`: every
    /// name.
    pub event_names: Option<&'static [&'static str]>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        let frontier = Frontier::new(DEFAULT_FUNCTION_TIMEOUT_MS, DEFAULT_MARGIN_MS);
        Self {
            since_ms: None,
            frontier,
            follow: false,
            read_ahead: DEFAULT_READ_AHEAD,
            page_size: DEFAULT_PAGE_SIZE,
            gap_bound_ms: frontier.lag_ms(),
            poll_ms: 1_000,
            sequencer: SequencerConfig::default(),
            skip_unreadable: false,
            skip_keys: BTreeSet::new(),
            partition: Partition::ALL,
            events: false,
            event_names: None,
        }
    }
}

/// What one call of [`Replayer::next`] did.
#[derive(Debug)]
pub enum Step {
    /// An object was consumed; these events became deliverable (possibly
    /// none: duplicates, or events held back).
    Object {
        /// The object's key.
        key: String,
        /// The events to deliver, in order.
        events: Vec<ReplayEvent>,
    },
    /// Missing events of a stream were read from the table; these events
    /// (the missing ones and the held ones they released) are deliverable.
    /// (With `--since` and no table: the stream was taken to start at its
    /// first held event, [`ReplayStats::assumed_starts`], and these are its
    /// held events.)
    Backfill {
        /// The stream.
        stream_id: String,
        /// The events to deliver, in order.
        events: Vec<ReplayEvent>,
    },
    /// Follow mode: nothing settled is left to read; call again at or after
    /// `until_ms` (reader clock).
    Idle {
        /// When to list again.
        until_ms: i64,
    },
    /// An object was skipped, unread ([`ReplayOptions::skip_unreadable`],
    /// [`ReplayOptions::skip_keys`]): its events, if any, are missing and
    /// show as gaps of their streams (back-filled from the table when there
    /// is one).
    Skipped {
        /// The object's key.
        key: String,
        /// Why it was skipped.
        reason: String,
    },
    /// Not following: every listed object has been read. Remaining
    /// [`Replayer::gaps`] are streams whose next event was never found.
    End,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The sequencer refused an event (without a table to back-fill from).
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// The checkpoint cannot be used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint was saved by a replay of another partition (or of one
    /// partition, and this replay is of every stream).
    #[error(
        "the checkpoint was saved by a replay of partition {saved}, and this one replays {}: \
         each partition needs a checkpoint of its own (resuming it would skip events)",
        wanted.as_deref().map_or("every stream".to_owned(), |p| format!("partition {p}"))
    )]
    OtherPartition {
        /// The checkpoint's partition.
        saved: String,
        /// This replay's partition (`None`: every stream).
        wanted: Option<String>,
    },
    /// The checkpoint belongs to another archive.
    #[error("the checkpoint's cursor {cursor:?} is not under the archive prefix {prefix:?}")]
    ForeignCheckpoint {
        /// The checkpoint's cursor.
        cursor: String,
        /// The archive's prefix.
        prefix: String,
    },
    /// An earlier call failed in a way that does not heal: the replayer's
    /// state is not trustworthy; resume from the last saved checkpoint.
    #[error("the replay cannot go on after an earlier failure ({0}); resume from the last saved checkpoint")]
    Poisoned(String),
    /// A checkpoint was asked for while an object is half consumed (its
    /// call of [`Replayer::next`] failed in a way that may heal, or was
    /// dropped): call `next()` again first. The replayer is not poisoned.
    #[error("object {key} is half consumed; call next() again before taking a checkpoint")]
    HalfConsumed {
        /// The object's key.
        key: String,
    },
    /// A back-fill read from the table failed.
    #[error("back-filling stream {stream_id:?} from the table: {source}")]
    Table {
        /// The stream.
        stream_id: String,
        /// The store's error.
        #[source]
        source: evs_core::Error,
    },
}

impl ReplayError {
    /// Whether waiting and calling [`Replayer::next`] again may succeed: an
    /// archive or table outage (the replayer is then not poisoned, and goes
    /// on where it stopped). Corrupt objects, refused credentials, a missing
    /// bucket or table are not.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplayError::Archive(e) => e.is_transient(),
            ReplayError::Table { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// Counters of a replay, for progress and summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Objects consumed.
    pub objects: u64,
    /// Lines read (of every partition).
    pub lines: u64,
    /// Events delivered (archive and back-fill).
    pub delivered: u64,
    /// Lines dropped as duplicates.
    pub duplicates: u64,
    /// Lines not delivered because they were written before `--since`
    /// ([`ReplayOptions::since_ms`]; or, resumed from a checkpoint of
    /// format 1 or 2, older than their stream's first event found).
    pub before_start: u64,
    /// Events delivered from the table.
    pub backfilled: u64,
    /// Bytes read as stored (compressed).
    pub stored_bytes: u64,
    /// Bytes read decompressed.
    pub bytes: u64,
    /// Keys under the prefix that are not events keys (skipped).
    pub skipped_keys: u64,
    /// Archive objects skipped unread ([`Step::Skipped`]).
    pub skipped_objects: u64,
    /// `--since` without a table: streams taken to start at their first
    /// event found, whose earlier events were never found
    /// ([`Sequencer::assume_start`]).
    pub assumed_starts: u64,
    /// Lines of streams of other partitions ([`ReplayOptions::partition`]),
    /// dropped unread.
    pub other_partitions: u64,
    /// The last object consumed.
    pub position: Option<String>,
}

/// Replays an archive: every event once, per stream in order (see the module
/// docs).
pub struct Replayer {
    archive: Arc<Archive>,
    options: ReplayOptions,
    sequencer: Sequencer,
    table: Option<Arc<dyn EventStore>>,
    clock: Clock,
    prefetch: Prefetch,
    /// `StartAfter` of the next listing.
    list_after: Option<String>,
    /// The last listing returned a short page (nothing more right now).
    listed_to_end: bool,
    /// Keys queued in `prefetch`, with whether each was settled when listed.
    queued: VecDeque<bool>,
    /// The checkpoint's cursor: the last consumed key that was settled.
    settled_cursor: Option<String>,
    /// Not following: a key was unsettled when listed.
    unsettled_seen: bool,
    /// Follow mode: when the first unsettled key of the last listing settles.
    next_settle: Option<i64>,
    /// The newest seal time consumed: the archive's clock while catching up.
    archive_time: i64,
    /// Keys that are not events keys, warned about once each: those a
    /// listing may still return (after `list_after`).
    warned_keys: BTreeSet<String>,
    /// Why the replayer refuses to go on (an error, see [`Replayer::next`]).
    poisoned: Option<String>,
    /// The object being consumed, kept across the awaits of `consume`: a
    /// back-fill in its middle that failed (or a call dropped there) goes on
    /// from the line it stopped at.
    current: Option<Consuming>,
    /// Gaps to back-fill, and the open gaps whose back-fill found nothing
    /// (stream, expected): not tried again while they stay as they are.
    to_fill: VecDeque<Gap>,
    filled: BTreeSet<(String, u64)>,
    stats: ReplayStats,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("archive", &self.archive.location())
            .field("cursor", &self.settled_cursor)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Replayer {
    /// A replay from the start of the archive (or from
    /// [`ReplayOptions::since_ms`]).
    pub fn new(archive: Archive, options: ReplayOptions, clock: Clock) -> Self {
        // An event written at the time may be sealed up to the clock margin
        // before it, by the archiver's clock.
        let start = options.since_ms.map(|ms| {
            let from = ms.saturating_sub(options.frontier.margin_ms);
            evs_archive::start_after_for(archive.prefix(), from)
        });
        let config = SequencerConfig {
            since_ms: options.since_ms.or(options.sequencer.since_ms),
            ..options.sequencer
        };
        let sequencer = Sequencer::with_versions(config, None, []);
        Self::build(archive, options, clock, sequencer, start)
    }

    /// A replay from the start of the archive for a projection that stores
    /// each stream's version with its own state: `versions` maps a stream to
    /// the last event id the projection applied. Everything up to those is
    /// dropped as a duplicate; the rest is delivered. (Starting from the
    /// archive's start is what makes this safe without a checkpoint:
    /// [`Sequencer::with_versions`].)
    pub fn with_versions(
        archive: Archive,
        options: ReplayOptions,
        clock: Clock,
        versions: impl IntoIterator<Item = (String, u64)>,
    ) -> Self {
        let partition = options.partition;
        let versions = versions
            .into_iter()
            .filter(|(stream, _)| partition.contains(stream));
        let sequencer = Sequencer::with_versions(options.sequencer, None, versions);
        Self::build(archive, options, clock, sequencer, None)
    }

    /// A replay that continues exactly where `checkpoint` was taken
    /// ([`ReplayOptions::since_ms`] is ignored).
    ///
    /// A checkpoint of one partition resumes only that partition (refused
    /// otherwise: its other streams' events were never delivered). A
    /// checkpoint of every stream may resume one partition: the other
    /// streams' entries are dropped.
    pub fn resume(
        archive: Archive,
        mut checkpoint: Checkpoint,
        options: ReplayOptions,
        clock: Clock,
    ) -> Result<Self, ReplayError> {
        let partition = options.partition;
        if let Some(saved) = &checkpoint.partition {
            if Some(saved) != partition_label(partition).as_ref() {
                return Err(ReplayError::OtherPartition {
                    saved: saved.clone(),
                    wanted: partition_label(partition),
                });
            }
        }
        if partition != Partition::ALL {
            checkpoint
                .last_delivered
                .retain(|stream, _| partition.contains(stream));
            checkpoint
                .held
                .retain(|held| partition.contains(&held.event.stream_id));
            if let Some(since) = checkpoint.since.as_mut() {
                since
                    .assumed_starts
                    .retain(|stream, _| partition.contains(stream));
                since
                    .passed_over
                    .retain(|stream| partition.contains(stream));
            }
        }
        if let Some(cursor) = &checkpoint.cursor {
            if !cursor.starts_with(archive.prefix().as_str()) {
                return Err(ReplayError::ForeignCheckpoint {
                    cursor: cursor.clone(),
                    prefix: archive.prefix().to_string(),
                });
            }
        }
        let start = checkpoint.cursor.clone();
        let sequencer = Sequencer::resume_with(options.sequencer, checkpoint)?;
        Ok(Self::build(archive, options, clock, sequencer, start))
    }

    fn build(
        archive: Archive,
        options: ReplayOptions,
        clock: Clock,
        sequencer: Sequencer,
        start: Option<String>,
    ) -> Self {
        let archive = Arc::new(archive);
        let keep = crate::line::Keep {
            partition: options.partition,
            // A replay from a time (new, or resumed from its checkpoint)
            // judges every event by its timestamp.
            timestamps: sequencer.since_ms().is_some(),
            events: options.events,
            names: options.event_names,
        };
        let prefetch = Prefetch::new(Arc::clone(&archive), options.read_ahead, keep);
        Self {
            archive,
            options,
            sequencer,
            table: None,
            clock,
            prefetch,
            settled_cursor: start.clone(),
            list_after: start,
            listed_to_end: false,
            unsettled_seen: false,
            next_settle: None,
            archive_time: i64::MIN,
            warned_keys: BTreeSet::new(),
            poisoned: None,
            current: None,
            queued: VecDeque::new(),
            to_fill: VecDeque::new(),
            filled: BTreeSet::new(),
            stats: ReplayStats::default(),
        }
    }

    /// Back-fill gaps from this store (the table the archive was made from).
    pub fn with_table(mut self, table: Arc<dyn EventStore>) -> Self {
        self.table = Some(table);
        self
    }

    /// The archive being replayed.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReplayStats {
        &self.stats
    }

    /// Streams whose next event is missing while later ones are held.
    pub fn gaps(&self) -> Vec<Gap> {
        self.sequencer.gaps()
    }

    /// The state to persist after the events returned so far are handled.
    /// Its cursor is the last consumed object that was settled (see the
    /// module docs). Refused while an object is half consumed (after a
    /// transient failure or a dropped call of [`Replayer::next`]: call it
    /// again first) and after an error that poisoned the replayer.
    pub fn checkpoint(&self) -> Result<Checkpoint, ReplayError> {
        self.usable()?;
        let mut checkpoint = self.sequencer.checkpoint();
        checkpoint.cursor = self.settled_cursor.clone();
        Ok(match partition_label(self.options.partition) {
            Some(label) => checkpoint.for_partition(label),
            None => checkpoint,
        })
    }

    /// How it reads.
    pub fn options(&self) -> &ReplayOptions {
        &self.options
    }

    /// Events not delivered because they were written before
    /// [`ReplayOptions::since_ms`] (back-filled ones included).
    pub fn before_start(&self) -> u64 {
        self.sequencer.before_start()
    }

    fn usable(&self) -> Result<(), ReplayError> {
        if let Some(reason) = &self.poisoned {
            return Err(ReplayError::Poisoned(reason.clone()));
        }
        if let Some(current) = &self.current {
            return Err(ReplayError::HalfConsumed {
                key: current.position.key.clone(),
            });
        }
        Ok(())
    }

    /// The next step of the replay.
    ///
    /// After an error that may heal ([`ReplayError::is_transient`]: an
    /// archive or table outage), call it again (after a wait): it goes on
    /// where it stopped, even in the middle of an object, and loses, repeats
    /// or reorders nothing. So does a call dropped before it finished (a
    /// timeout around it). After any other error the replayer refuses every
    /// further call and checkpoint: start again from the last checkpoint
    /// that was saved.
    pub async fn next(&mut self) -> Result<Step, ReplayError> {
        if let Some(reason) = &self.poisoned {
            return Err(ReplayError::Poisoned(reason.clone()));
        }
        match self.step().await {
            Ok(step) => Ok(step),
            // Nothing was lost: the failed listing, fetch or table read
            // keeps its place, and a half-consumed object goes on from the
            // line that waited for it.
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                self.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn step(&mut self) -> Result<Step, ReplayError> {
        loop {
            if self.current.is_some() {
                return self.consume().await;
            }
            if let Some(queued) = self.to_fill.front() {
                // As the gap is now: an object may have narrowed or closed
                // it since it was queued.
                let Some(gap) = self.sequencer.gap(&queued.stream_id) else {
                    self.to_fill.pop_front();
                    continue;
                };
                let step = self.backfill(&gap).await?;
                self.to_fill.pop_front();
                if let Some(step) = step {
                    return Ok(step);
                }
                continue;
            }
            if let Some(object) = self.prefetch.next().await {
                let skip = match &object {
                    Err(ArchiveError::Object { key, reason })
                        if self.options.skip_unreadable || self.options.skip_keys.contains(key) =>
                    {
                        Some((key.clone(), reason.clone()))
                    }
                    Ok(o) if self.options.skip_keys.contains(&o.position.key) => {
                        Some((o.position.key.clone(), "skipped as asked".to_owned()))
                    }
                    _ => None,
                };
                if let Some((key, reason)) = skip {
                    let settled = self.queued.pop_front().unwrap_or(false);
                    return self.skip(key, reason, settled);
                }
                // A failed fetch keeps its place in both queues.
                let object = object?;
                let settled = self.queued.pop_front().unwrap_or(false);
                self.current = Some(Consuming {
                    position: object.position,
                    other_partitions: object.other_partitions,
                    lines: object.events.into_iter(),
                    out: Vec::new(),
                    settled,
                    stored_bytes: object.stored_bytes,
                    bytes: object.bytes,
                });
                return self.consume().await;
            }
            if !self.listed_to_end {
                if let Some(idle) = self.list().await? {
                    return Ok(idle);
                }
                continue;
            }
            // Listed to the end and everything read.
            if self.options.follow {
                self.listed_to_end = false;
                let now = (self.clock)();
                // Caught up: every object sealed before the settled frontier
                // has been read, so that is the archive's clock now.
                self.queue_overdue_gaps(self.options.frontier.settled(now));
                if !self.to_fill.is_empty() {
                    continue;
                }
                return Ok(self.idle(now));
            }
            let gaps = self.sequencer.gaps();
            self.forget_closed(&gaps);
            let fresh: Vec<Gap> = gaps.into_iter().filter(|g| self.fillable(g)).collect();
            if !fresh.is_empty() {
                self.to_fill.extend(fresh);
                continue;
            }
            return Ok(Step::End);
        }
    }

    /// Following: idle until the next poll, or until the next listed key settles if sooner.
    fn idle(&self, now: i64) -> Step {
        let poll = now.saturating_add(self.options.poll_ms);
        let until = self.next_settle.map_or(poll, |s| s.min(poll));
        Step::Idle {
            until_ms: until.max(now.saturating_add(1)),
        }
    }

    /// Lists the next page and queues what may be consumed. Returns an
    /// idle step when, following, nothing settled is left.
    async fn list(&mut self) -> Result<Option<Step>, ReplayError> {
        // `now` before the LIST request (frontier rule 3).
        let now = (self.clock)();
        let listing = self
            .archive
            .list(self.list_after.as_deref(), self.options.page_size)
            .await?;
        for key in listing.others() {
            if self.warned_keys.insert(key.to_owned()) {
                self.stats.skipped_keys += 1;
                tracing::warn!(key = %key, "not an events key of the archive prefix; skipped");
            }
        }
        let frontier = self.options.frontier;
        // Every events key sealed before the frontier sorts before this
        // string, every one sealed at or after it after: a key that is not
        // an events key is settled when it sorts before it (no object that
        // can still appear sorts before it).
        let boundary = evs_archive::start_after_for(self.archive.prefix(), frontier.settled(now));
        let is_settled = |entry: &Listed| match entry {
            Listed::Object(key) => frontier.is_settled(now, key.sealed_at_ms()),
            Listed::Other(key) => key.as_str() < boundary.as_str(),
        };
        let settled = listing.entries.iter().take_while(|e| is_settled(e)).count();
        let full = listing.full;
        let all_settled = settled == listing.entries.len();
        if self.options.follow {
            self.next_settle = match listing.entries.get(settled) {
                Some(Listed::Object(key)) => Some(frontier.settles_at(key.sealed_at_ms())),
                _ => None,
            };
            let taken: Vec<Listed> = listing.entries.into_iter().take(settled).collect();
            if let Some(last) = taken.last() {
                // Never past the frontier: only settled keys move the cursor.
                self.list_after = Some(last.key().to_owned());
                self.forget_warned();
            }
            self.listed_to_end = !(all_settled && full);
            let objects: Vec<ArchiveKey> = taken
                .into_iter()
                .filter_map(|e| match e {
                    Listed::Object(key) => Some(key),
                    Listed::Other(_) => None,
                })
                .collect();
            if objects.is_empty() && self.prefetch.is_empty() && self.listed_to_end {
                self.queue_overdue_gaps(frontier.settled(now));
                self.listed_to_end = false;
                if !self.to_fill.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.idle(now)));
            }
            self.queued.extend(std::iter::repeat_n(true, objects.len()));
            self.prefetch.extend(objects);
        } else {
            if let Some(last) = listing.last() {
                self.list_after = Some(last.to_owned());
                self.forget_warned();
            }
            self.listed_to_end = !full;
            let mut objects = Vec::new();
            for (i, entry) in listing.entries.into_iter().enumerate() {
                // Once a key was unsettled when listed, no later key counts
                // as settled: the range before it was listed too early.
                if i >= settled {
                    self.unsettled_seen = true;
                }
                if let Listed::Object(key) = entry {
                    self.queued.push_back(!self.unsettled_seen);
                    objects.push(key);
                }
            }
            self.prefetch.extend(objects);
        }
        Ok(None)
    }

    /// Forgets the keys warned about that no listing of this replayer can
    /// return again (at or before where the next one starts).
    fn forget_warned(&mut self) {
        if let Some(after) = &self.list_after {
            let mut later = self.warned_keys.split_off(after.as_str());
            later.remove(after.as_str());
            self.warned_keys = later;
        }
    }

    /// Marks an object consumed without reading it.
    fn skip(&mut self, key: String, reason: String, settled: bool) -> Result<Step, ReplayError> {
        // The step names it: its caller reports it (a warning here would
        // say it twice).
        tracing::debug!(key = %key, reason = %reason, "archive object skipped");
        let sealed = ArchiveKey::parse(&key).map_or(self.archive_time, |k| k.sealed_at_ms());
        self.sequencer
            .finish_object(&ArchivePosition::new(key.as_str(), sealed))?;
        self.finished(&key, sealed, settled);
        self.stats.skipped_objects += 1;
        Ok(Step::Skipped { key, reason })
    }

    /// After an object is consumed or skipped: the cursors, the archive's clock, overdue gaps.
    fn finished(&mut self, key: &str, sealed_at_ms: i64, settled: bool) {
        if settled {
            self.settled_cursor = Some(key.to_owned());
        }
        self.archive_time = self.archive_time.max(sealed_at_ms);
        self.stats.position = Some(key.to_owned());
        if self.options.follow || self.sequencer.since_ms().is_some() {
            self.queue_overdue_gaps(self.archive_time);
        }
    }

    /// Before the next line of the object being consumed is offered: the
    /// gap to close first when its stream's hold-back buffer is full (from
    /// the table, or by assuming the stream's start, see `apply_fill`).
    fn needs_room(&self) -> Option<Gap> {
        let capacity = self.options.sequencer.max_held_per_stream.max(1);
        let event = self.current.as_ref()?.lines.as_slice().first()?;
        let next = self
            .sequencer
            .last_delivered(&event.stream_id)
            .saturating_add(1);
        let full = event.event_id > next
            && self.sequencer.held_in(&event.stream_id) >= capacity
            && (self.table.is_some() || self.sequencer.start_unknown(&event.stream_id));
        full.then(|| self.sequencer.gap(&event.stream_id)).flatten()
    }

    /// Closes `gap` so that the next line can be taken. A failed read
    /// leaves the line where it is, to be offered after the retry.
    async fn make_room(&mut self, gap: Gap) -> Result<(), ReplayError> {
        let read = self.read_gap(&gap).await?;
        let mut out = self
            .current
            .as_mut()
            .map(|c| std::mem::take(&mut c.out))
            .unwrap_or_default();
        let filled = self.apply_fill(&gap, read, &mut out);
        if let Some(current) = self.current.as_mut() {
            current.out = out;
        }
        filled
    }

    /// Feeds the object being consumed to the sequencer, from the line it
    /// stopped at, and marks it consumed. Cancel-safe: its state lives in
    /// `self.current` across the one await (a back-fill's read).
    async fn consume(&mut self) -> Result<Step, ReplayError> {
        loop {
            if let Some(gap) = self.needs_room() {
                self.make_room(gap).await?;
            }
            let Some(current) = self.current.as_mut() else {
                break;
            };
            let Some(event) = current.lines.next() else {
                break;
            };
            self.stats.lines += 1;
            match self
                .sequencer
                .push(&current.position, event, &mut current.out)?
            {
                Offer::Duplicate => self.stats.duplicates += 1,
                Offer::BeforeStart => self.stats.before_start += 1,
                Offer::Delivered { .. } | Offer::Held => {}
            }
        }
        let Some(current) = self.current.take() else {
            return Err(ReplayError::Poisoned("no object is being consumed".into()));
        };
        let at = current.position;
        self.sequencer.finish_object(&at)?;
        self.finished(&at.key, at.sealed_at_ms, current.settled);
        self.stats.objects += 1;
        self.stats.lines += current.other_partitions as u64;
        self.stats.other_partitions += current.other_partitions as u64;
        self.stats.stored_bytes += current.stored_bytes as u64;
        self.stats.bytes += current.bytes as u64;
        self.stats.delivered += current.out.len() as u64;
        Ok(Step::Object {
            key: at.key,
            events: current.out,
        })
    }

    /// Follow mode: queues the gaps visible for longer than the bound, by
    /// the archive's clock (`archive_now`: the newest seal time known to
    /// have been read up to), never the reader's, so that catching up on
    /// history does not back-fill every reordering.
    ///
    /// Not following, only the gaps of streams whose start is unknown
    /// (`--since`), so that they do not hold their events to the end.
    fn queue_overdue_gaps(&mut self, archive_now: i64) {
        let gaps = self.sequencer.gaps();
        self.forget_closed(&gaps);
        let bound = self.options.gap_bound_ms;
        for gap in gaps {
            if gap.age_ms(archive_now).is_some_and(|age| age <= bound) {
                continue;
            }
            let unknown = self.sequencer.start_unknown(&gap.stream_id);
            if (self.options.follow || unknown)
                && self.fillable(&gap)
                && !self.to_fill.iter().any(|g| g == &gap)
            {
                self.to_fill.push_back(gap);
            }
        }
    }

    /// Forgets the back-fills tried for gaps that have closed since (by a
    /// later object, or moved on): only the open ones are remembered, so
    /// the memory stays bounded by the gaps open at once.
    fn forget_closed(&mut self, gaps: &[Gap]) {
        if self.filled.is_empty() {
            return;
        }
        let open: BTreeSet<(&str, u64)> = gaps
            .iter()
            .map(|g| (g.stream_id.as_str(), g.expected))
            .collect();
        self.filled
            .retain(|(stream, expected)| open.contains(&(stream.as_str(), *expected)));
    }

    /// Whether a gap can be closed and was not tried already: from the
    /// table, or (no table) for a stream whose start is unknown, by
    /// assuming its start.
    fn fillable(&self, gap: &Gap) -> bool {
        if self.sequencer.start_unknown(&gap.stream_id) && self.table.is_none() {
            return true;
        }
        self.table.is_some() && !self.filled.contains(&(gap.stream_id.clone(), gap.expected))
    }

    /// Back-fills one gap; `None` when nothing became deliverable.
    async fn backfill(&mut self, gap: &Gap) -> Result<Option<Step>, ReplayError> {
        let read = self.read_gap(gap).await?;
        let mut out = Vec::new();
        self.apply_fill(gap, read, &mut out)?;
        self.stats.delivered += out.len() as u64;
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(Step::Backfill {
            stream_id: gap.stream_id.clone(),
            events: out,
        }))
    }

    /// Reads the gap's missing events from the table (`None`: no table).
    /// Changes nothing, so a failed or cancelled read may simply be tried
    /// again.
    async fn read_gap(&self, gap: &Gap) -> Result<Option<Vec<ReplayEvent>>, ReplayError> {
        let Some(table) = &self.table else {
            return Ok(None);
        };
        let table_error = |source| ReplayError::Table {
            stream_id: gap.stream_id.clone(),
            source,
        };
        let stream = StreamId::new(gap.stream_id.clone()).map_err(table_error)?;
        if let Some(since) = self.sequencer.since_ms() {
            if self.sequencer.start_unknown(&gap.stream_id) {
                let events = read_back_to(table.as_ref(), &stream, gap.first_held, since)
                    .await
                    .map_err(table_error)?;
                return Ok(Some(events));
            }
        }
        let missing = gap.missing();
        let request = ReadRequest {
            limit: usize::try_from(missing.end - missing.start).ok(),
            ..ReadRequest::after(missing.start.saturating_sub(1))
        };
        let events = table.read(&stream, request).await.map_err(table_error)?;
        Ok(Some(events.iter().map(ReplayEvent::of_recorded).collect()))
    }

    /// Hands events read for `gap` to the sequencer, which releases the held
    /// events they unblock (appended to `out`). Without a table (`None`), a
    /// stream whose start is unknown (`--since`) is assumed to start at its
    /// first held event. Does not wait.
    fn apply_fill(
        &mut self,
        gap: &Gap,
        events: Option<Vec<ReplayEvent>>,
        out: &mut Vec<ReplayEvent>,
    ) -> Result<(), ReplayError> {
        let Some(events) = events else {
            if self.sequencer.assume_start(&gap.stream_id, out) {
                self.stats.assumed_starts += 1;
                tracing::warn!(
                    stream = %gap.stream_id,
                    start = gap.first_held,
                    "no earlier event of the stream found: taken to start there (without \
                     the table, whether its earlier events were written before --since is \
                     unknown)"
                );
            }
            return Ok(());
        };
        let held_before = self.sequencer.held_count();
        let start = out.len();
        self.sequencer.fill(&gap.stream_id, events, out)?;
        let released = held_before.saturating_sub(self.sequencer.held_count());
        let added = out.len() - start;
        self.stats.backfilled += added.saturating_sub(released) as u64;
        let unchanged = self.sequencer.gap(&gap.stream_id);
        if unchanged.is_some_and(|now| now.expected == gap.expected) {
            // Not tried again until it changes (`forget_closed`); a gap
            // that moved on (a later hole) may be.
            self.filled.insert((gap.stream_id.clone(), gap.expected));
            tracing::warn!(
                stream = %gap.stream_id,
                expected = gap.expected,
                "the table does not have the missing event either"
            );
        }
        Ok(())
    }
}

/// Reads `stream` backwards from the event before `first_held` until an
/// event written before `since` (which the sequencer then passes over) or
/// the stream's first event, in chunks that grow; the events in id order.
async fn read_back_to(
    table: &dyn EventStore,
    stream: &StreamId,
    first_held: u64,
    since: i64,
) -> Result<Vec<ReplayEvent>, evs_core::Error> {
    let mut events = Vec::new();
    let mut from = first_held.saturating_sub(1);
    let mut chunk = 1;
    while from > 0 {
        let request = ReadRequest {
            from: Some(from),
            direction: Direction::Backward,
            limit: Some(chunk),
        };
        let read = table.read(stream, request).await?;
        let short = read.len() < chunk;
        for event in &read {
            if event.event_id > from {
                continue; // not asked for
            }
            events.push(ReplayEvent::of_recorded(event));
            if event.timestamp_ms < since || event.event_id <= 1 {
                events.reverse();
                return Ok(events);
            }
            from = event.event_id - 1;
        }
        if short {
            break;
        }
        chunk = (chunk * 8).min(1_000);
    }
    events.reverse();
    Ok(events)
}

/// The label a checkpoint of `partition` carries (`None`: every stream).
fn partition_label(partition: Partition) -> Option<String> {
    (partition != Partition::ALL).then(|| partition.to_string())
}

/// An object being consumed: where it is, the lines not yet offered, what
/// its lines released so far.
struct Consuming {
    position: ArchivePosition,
    other_partitions: usize,
    lines: std::vec::IntoIter<ReplayEvent>,
    out: Vec<ReplayEvent>,
    settled: bool,
    stored_bytes: usize,
    bytes: usize,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use evs_archive::store::{MemoryStore as Bucket, Object};
    use evs_archive::{Compression, Prefix, Suffix};
    use evs_core::{ExpectedVersion, MemoryStore, NewEvent};
    use serde_json::json;

    use super::*;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;

    #[tokio::test]
    async fn a_long_follow_keeps_its_bookkeeping_bounded() {
        // A follow over many objects, one a second of archive time: each
        // brings a stream whose first event never reached the archive (read
        // from the table once overdue; some of them the table does not
        // have, until a later object brings them), and a key that is not
        // an archive object. What the replayer remembers of gaps tried and
        // keys warned about stays bounded; every event is delivered.
        let prefix = Prefix::new("events/").unwrap();
        let bucket = Arc::new(Bucket::default());
        let table = MemoryStore::new();
        let objects = 400_i64;
        let mut late = Vec::new();
        for i in 0..objects {
            let stream = StreamId::new(format!("s{i}")).unwrap();
            let event = |n: u64| {
                json!({"streamId": stream.as_str(), "eventId": n, "timestamp": "2026-01-01T00:00:00.000Z"})
                    .to_string()
            };
            let in_table = i % 3 != 0;
            if in_table {
                let events = [NewEvent::new("E", json!(1)), NewEvent::new("E", json!(2))];
                table
                    .append(&stream, ExpectedVersion::NoStream, &events)
                    .await
                    .unwrap();
            } else {
                late.push((i + 20, event(1)));
            }
            let mut lines = event(2);
            if let Some(pos) = late.iter().position(|(at, _)| *at == i) {
                lines = format!("{}\n{lines}", late.remove(pos).1);
            }
            let sealed = T0 + i * 1_000;
            let suffix = Suffix::new(None, uuid::Uuid::from_u128(i as u128));
            let key = ArchiveKey::new(&prefix, sealed, &suffix, Compression::None).unwrap();
            let body = Object {
                bytes: lines.into_bytes(),
                ..Object::default()
            };
            bucket.insert(key.as_str(), body).unwrap();
            let stray = key.as_str().replace(".ndjson", ".txt");
            bucket.insert(&stray, Object::default()).unwrap();
        }
        let now = Arc::new(AtomicI64::new(T0 + objects * 1_000 + 3_600_000));
        let clock: Clock = {
            let now = Arc::clone(&now);
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let options = ReplayOptions {
            follow: true,
            frontier: Frontier::new(10_000, 1_000),
            gap_bound_ms: 5_000,
            page_size: 50,
            ..ReplayOptions::default()
        };
        let archive = Archive::new(bucket, prefix);
        let mut replayer =
            Replayer::new(archive, options, clock).with_table(Arc::new(table.clone()));
        let (mut delivered, mut most_filled, mut most_warned) = (0, 0, 0);
        loop {
            match replayer.next().await.unwrap() {
                Step::Object { events, .. } | Step::Backfill { events, .. } => {
                    delivered += events.len();
                }
                Step::Idle { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
            most_filled = most_filled.max(replayer.filled.len());
            most_warned = most_warned.max(replayer.warned_keys.len());
        }
        // Streams whose first event only a later object brings: the last
        // few of them may still wait.
        let waiting = replayer.gaps().len();
        assert!(waiting <= 20, "{waiting}");
        assert_eq!(delivered, 2 * objects as usize - 2 * waiting);
        assert_eq!(replayer.stats().skipped_keys, objects as u64);
        assert!(most_warned <= 50, "{most_warned} keys remembered");
        assert!(most_filled <= 20 + 10, "{most_filled} gaps remembered");
    }
}
