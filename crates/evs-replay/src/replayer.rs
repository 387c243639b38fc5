//! The replayer: the archive, read in order, through the [`Sequencer`].
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
//! Gaps: with a table ([`Replayer::with_table`]), a stream whose next event
//! is missing is read from the table (the source of truth) and its held
//! events released: at the end of the archive (no follow), when a gap has
//! been visible longer than [`ReplayOptions::gap_bound_ms`] (follow), or when
//! a stream's hold-back buffer is full. Without a table the gaps stay
//! reported by [`Replayer::gaps`] and the held events wait.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use evs_archiver::key::{self, ArchiveKey};
use evs_core::{Clock, EventStore, ReadRequest, StreamId};

use crate::archive::{
    Archive, ArchiveError, ArchiveObject, Prefetch, DEFAULT_PAGE_SIZE, DEFAULT_READ_AHEAD,
};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::event::ReplayEvent;
use crate::frontier::{Frontier, DEFAULT_MARGIN_MS};
use crate::sequencer::{Gap, Offer, SequenceError, Sequencer, SequencerConfig};

/// The archiver's function timeout assumed when none is given: 900 s, the
/// Lambda maximum (the SAM template's default is 60 s).
pub const DEFAULT_FUNCTION_TIMEOUT_MS: i64 = 900_000;

/// How a [`Replayer`] reads.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Start with the objects sealed at or after this time (epoch ms; only
    /// without a checkpoint).
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
            gap_bound_ms: frontier.timeout_ms + frontier.margin_ms,
            poll_ms: 1_000,
            sequencer: SequencerConfig::default(),
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
    /// The checkpoint belongs to another archive.
    #[error("the checkpoint's cursor {cursor:?} is not under the archive prefix {prefix:?}")]
    ForeignCheckpoint {
        /// The checkpoint's cursor.
        cursor: String,
        /// The archive's prefix.
        prefix: String,
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

/// Counters of a replay, for progress and summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Objects consumed.
    pub objects: u64,
    /// Lines read.
    pub lines: u64,
    /// Events delivered (archive and back-fill).
    pub delivered: u64,
    /// Lines dropped as duplicates.
    pub duplicates: u64,
    /// Events delivered from the table.
    pub backfilled: u64,
    /// Bytes read as stored (compressed).
    pub stored_bytes: u64,
    /// Bytes read decompressed.
    pub bytes: u64,
    /// Keys under the prefix that are not events keys (skipped).
    pub skipped_keys: u64,
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
    /// Gaps to back-fill, and those tried already (stream, expected).
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
        let start = options
            .since_ms
            .map(|ms| key::start_after_for(archive.prefix(), ms));
        let sequencer = Sequencer::with_versions(options.sequencer, None, []);
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
        let sequencer = Sequencer::with_versions(options.sequencer, None, versions);
        Self::build(archive, options, clock, sequencer, None)
    }

    /// A replay that continues exactly where `checkpoint` was taken
    /// ([`ReplayOptions::since_ms`] is ignored).
    pub fn resume(
        archive: Archive,
        checkpoint: Checkpoint,
        options: ReplayOptions,
        clock: Clock,
    ) -> Result<Self, ReplayError> {
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
        let prefetch = Prefetch::new(Arc::clone(&archive), options.read_ahead);
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
    /// module docs).
    pub fn checkpoint(&self) -> Checkpoint {
        let mut checkpoint = self.sequencer.checkpoint();
        checkpoint.cursor = self.settled_cursor.clone();
        checkpoint
    }

    /// The next step of the replay.
    pub async fn next(&mut self) -> Result<Step, ReplayError> {
        loop {
            if let Some(gap) = self.to_fill.pop_front() {
                if let Some(step) = self.backfill(&gap).await? {
                    return Ok(step);
                }
                continue;
            }
            if let Some(object) = self.prefetch.next().await {
                let settled = self.queued.pop_front().unwrap_or(false);
                return self.consume(object?, settled).await;
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
                self.queue_overdue_gaps();
                if !self.to_fill.is_empty() {
                    continue;
                }
                let now = (self.clock)();
                return Ok(Step::Idle {
                    until_ms: now.saturating_add(self.options.poll_ms),
                });
            }
            if self.table.is_some() {
                let fresh: Vec<Gap> = self
                    .sequencer
                    .gaps()
                    .into_iter()
                    .filter(|g| !self.filled.contains(&(g.stream_id.clone(), g.expected)))
                    .collect();
                if !fresh.is_empty() {
                    self.to_fill.extend(fresh);
                    continue;
                }
            }
            return Ok(Step::End);
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
        self.stats.skipped_keys += listing.skipped.len() as u64;
        for key in &listing.skipped {
            tracing::warn!(key = %key, "not an events key of the archive prefix; skipped");
        }
        let frontier = self.options.frontier;
        let settled = frontier.consumable(now, listing.keys.iter().map(ArchiveKey::sealed_at_ms));
        if self.options.follow {
            let all_settled = settled == listing.keys.len();
            let first_unsettled = listing.keys.get(settled).map(ArchiveKey::sealed_at_ms);
            let take: Vec<ArchiveKey> = listing.keys.into_iter().take(settled).collect();
            if all_settled {
                // Skipped keys past the last events key are consumed too.
                self.list_after = listing.last_listed.or(self.list_after.take());
                self.listed_to_end = !listing.full;
            } else {
                if let Some(last) = take.last() {
                    self.list_after = Some(last.as_str().to_owned());
                }
                self.listed_to_end = true;
            }
            if take.is_empty() && self.prefetch.is_empty() {
                if self.listed_to_end {
                    self.queue_overdue_gaps();
                    if !self.to_fill.is_empty() {
                        self.listed_to_end = false;
                        return Ok(None);
                    }
                    let poll = now.saturating_add(self.options.poll_ms);
                    let until = first_unsettled.map_or(poll, |s| frontier.settles_at(s).min(poll));
                    self.listed_to_end = false;
                    return Ok(Some(Step::Idle {
                        until_ms: until.max(now.saturating_add(1)),
                    }));
                }
                return Ok(None);
            }
            self.queued.extend(std::iter::repeat_n(true, take.len()));
            self.prefetch.extend(take);
        } else {
            self.list_after = listing.last_listed.or(self.list_after.take());
            self.listed_to_end = !listing.full;
            for i in 0..listing.keys.len() {
                // Once a key was unsettled when listed, no later key counts
                // as settled: the range before it was listed too early.
                if i >= settled {
                    self.unsettled_seen = true;
                }
                self.queued.push_back(!self.unsettled_seen);
            }
            self.prefetch.extend(listing.keys);
        }
        Ok(None)
    }

    /// Feeds one object to the sequencer and marks it consumed.
    async fn consume(&mut self, object: ArchiveObject, settled: bool) -> Result<Step, ReplayError> {
        let at = object.position;
        let mut out = Vec::new();
        let capacity = self.options.sequencer.max_held_per_stream.max(1);
        for event in object.events {
            self.stats.lines += 1;
            let next = self.sequencer.last_delivered(&event.stream_id) + 1;
            if event.event_id > next
                && self.table.is_some()
                && self.sequencer.held_in(&event.stream_id) >= capacity
            {
                // The stream's buffer is full: close its gap from the table
                // first, so the event can be taken.
                let gap = self
                    .sequencer
                    .gaps()
                    .into_iter()
                    .find(|g| g.stream_id == event.stream_id);
                if let Some(gap) = gap {
                    self.fill_from_table(&gap, &mut out).await?;
                }
            }
            if self.sequencer.push(&at, event, &mut out)? == Offer::Duplicate {
                self.stats.duplicates += 1;
            }
        }
        self.sequencer.finish_object(&at)?;
        if settled {
            self.settled_cursor = Some(at.key.clone());
        }
        self.stats.objects += 1;
        self.stats.stored_bytes += object.stored_bytes as u64;
        self.stats.bytes += object.bytes as u64;
        self.stats.delivered += out.len() as u64;
        self.stats.position = Some(at.key.clone());
        if self.options.follow {
            self.queue_overdue_gaps();
        }
        Ok(Step::Object {
            key: at.key,
            events: out,
        })
    }

    /// Follow mode: queues the gaps visible for longer than the bound.
    fn queue_overdue_gaps(&mut self) {
        if self.table.is_none() {
            return;
        }
        let now = (self.clock)();
        for gap in self.sequencer.overdue_gaps(now, self.options.gap_bound_ms) {
            let tried = (gap.stream_id.clone(), gap.expected);
            if !self.filled.contains(&tried) && !self.to_fill.iter().any(|g| g == &gap) {
                self.to_fill.push_back(gap);
            }
        }
    }

    /// Back-fills one gap; `None` when nothing became deliverable.
    async fn backfill(&mut self, gap: &Gap) -> Result<Option<Step>, ReplayError> {
        let mut out = Vec::new();
        self.fill_from_table(gap, &mut out).await?;
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(Step::Backfill {
            stream_id: gap.stream_id.clone(),
            events: out,
        }))
    }

    /// Reads the stream from the gap's expected event on from the table and
    /// hands it to the sequencer.
    async fn fill_from_table(
        &mut self,
        gap: &Gap,
        out: &mut Vec<ReplayEvent>,
    ) -> Result<(), ReplayError> {
        let Some(table) = &self.table else {
            return Ok(());
        };
        self.filled.insert((gap.stream_id.clone(), gap.expected));
        let table_error = |source| ReplayError::Table {
            stream_id: gap.stream_id.clone(),
            source,
        };
        let stream = StreamId::new(gap.stream_id.clone()).map_err(table_error)?;
        let events = table
            .read(&stream, ReadRequest::after(gap.expected.saturating_sub(1)))
            .await
            .map_err(table_error)?;
        if events.first().is_none_or(|e| e.event_id != gap.expected) {
            tracing::warn!(
                stream = %gap.stream_id,
                expected = gap.expected,
                "the table does not have the missing event either"
            );
        }
        let held_before = self.sequencer.held_count();
        let start = out.len();
        let replay_events = events
            .iter()
            .map(|e| ReplayEvent::new(e.stream_id.to_string(), e.event_id, &e.to_json()));
        self.sequencer.fill(&gap.stream_id, replay_events, out)?;
        let released = held_before.saturating_sub(self.sequencer.held_count());
        let added = out.len() - start;
        self.stats.backfilled += added.saturating_sub(released) as u64;
        self.stats.delivered += added as u64;
        Ok(())
    }
}
