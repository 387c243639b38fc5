//! Archive order in, exactly-once per-stream order out (`docs/design.md` §4).

use std::collections::{BTreeMap, HashMap, HashSet};

/// The per-stream maps of the hot path (a lookup or two per event delivered)
/// hash with foldhash, seeded per process, instead of SipHash: stream ids
/// come from the user's own table, and SipHash was 4% of a replay.
type StreamMap<V> = HashMap<String, V, foldhash::fast::RandomState>;
type StreamSet = HashSet<String, foldhash::fast::RandomState>;

use crate::checkpoint::{
    Checkpoint, CheckpointError, HeldEvent, Since, CHECKPOINT_FORMAT, NEWEST_FORMAT,
    PASSED_OVER_FORMAT, SINCE_FORMAT,
};
use crate::event::{ArchivePosition, ReplayEvent};

/// Default bound of held-back events per stream.
pub const DEFAULT_MAX_HELD_PER_STREAM: usize = 10_000;

/// How a [`Sequencer`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencerConfig {
    /// Most events held back for one stream while its next event is missing.
    /// An event past that bound is refused ([`SequenceError::BufferFull`]),
    /// never dropped: the caller back-fills the stream ([`Sequencer::fill`])
    /// and offers the event again. At least 1.
    pub max_held_per_stream: usize,
    /// The rule of checkpoints of formats 1 and 2 written by a replay from
    /// the middle of the archive (read still; [`SequencerConfig::since_ms`]
    /// replaces it): a stream the sequencer knows nothing of starts at the
    /// first of its events offered. An event of such a stream older than its
    /// first one offered is not delivered; it is counted
    /// ([`Sequencer::before_start`]) and reported as [`Offer::BeforeStart`].
    /// Under it a stream whose first event is offered after its second
    /// loses its first: prefer `since_ms`.
    pub start_at_first_seen: bool,
    /// A replay from a time (`--since`, epoch ms): an event whose timestamp
    /// is before it is not delivered ([`Offer::BeforeStart`]), nor is any
    /// earlier event of its stream; every event written at or after it is,
    /// each stream from the first such event. A stream first offered at an
    /// event after its first, written at or after the time (or whose events
    /// offered so far were all written before it, and the next offered is
    /// not the next in the stream), waits (its start is unknown,
    /// [`Sequencer::start_unknown`]) for an earlier event, a back-fill from
    /// the table, or [`Sequencer::assume_start`]. Takes precedence over
    /// `start_at_first_seen`.
    pub since_ms: Option<i64>,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        Self {
            max_held_per_stream: DEFAULT_MAX_HELD_PER_STREAM,
            start_at_first_seen: false,
            since_ms: None,
        }
    }
}

/// What became of one offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// It was its stream's next event: it was emitted, followed by
    /// `released - 1` held-back successors (so `released >= 1`).
    Delivered {
        /// How many events were appended to the output.
        released: usize,
    },
    /// It is ahead of its stream's next event and waits for it.
    Held,
    /// It was delivered or held already (a retried or re-bisected batch) and
    /// was dropped.
    Duplicate,
    /// It was not delivered: written before [`SequencerConfig::since_ms`]
    /// (any held events it unblocked were appended to the output), or
    /// ([`SequencerConfig::start_at_first_seen`]) older than the first event
    /// of its stream this sequencer was offered.
    BeforeStart,
}

/// Why the sequencer refused a call. A refused call changes no state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// Positions must come in key order and after the cursor (the last fully
    /// consumed key): an object at or before the cursor was consumed already.
    #[error("object key {key:?} is not after the cursor {cursor:?}")]
    KeyNotAfterCursor {
        /// The key offered.
        key: String,
        /// The last fully consumed key.
        cursor: String,
    },
    /// Event ids start at 1.
    #[error("event 0 of stream {stream_id:?}: event ids start at 1")]
    ZeroEventId {
        /// The stream.
        stream_id: String,
    },
    /// The stream already holds as many events as allowed while it waits for
    /// `expected`; back-fill it ([`Sequencer::fill`]) and offer the event again.
    #[error(
        "stream {stream_id:?} waits for event {expected} and already holds {capacity} \
         later events; event {event_id} was refused (back-fill the stream)"
    )]
    BufferFull {
        /// The stream.
        stream_id: String,
        /// The event the stream waits for.
        expected: u64,
        /// The refused event.
        event_id: u64,
        /// [`SequencerConfig::max_held_per_stream`].
        capacity: usize,
    },
    /// [`SequencerConfig::since_ms`]: an event written at or after the time
    /// was found below the start assumed for its stream (without a table,
    /// [`Sequencer::assume_start`]): delivering it now would break the
    /// stream's order, and dropping it would lose it.
    #[error(
        "event {event_id} of stream {stream_id:?}, written at or after --since, turned up \
         after the stream was taken to start at event {assumed_start} without it; replay \
         with the table (it reads a stream's earlier events instead of assuming) or without \
         --since"
    )]
    SinceStartMissed {
        /// The stream.
        stream_id: String,
        /// The event found.
        event_id: u64,
        /// The start assumed.
        assumed_start: u64,
    },
    /// [`Sequencer::fill`] was given an event of another stream.
    #[error("back-fill of stream {stream_id:?} was given an event of stream {found:?}")]
    StreamMismatch {
        /// The stream being filled.
        stream_id: String,
        /// The stream of the offending event.
        found: String,
    },
}

/// A stream whose next event is missing while later ones are held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The stream.
    pub stream_id: String,
    /// The event the stream waits for (its last delivered id + 1).
    pub expected: u64,
    /// The smallest held-back event id (> `expected`).
    pub first_held: u64,
    /// How many events are held back.
    pub held: usize,
    /// The earliest archive position at which a held-back event was read:
    /// the gap has been visible since then. `None` when every held event
    /// came from [`Sequencer::fill`].
    pub since: Option<ArchivePosition>,
}

impl Gap {
    /// How long the gap has been visible, by the archive's clock: `now_ms`
    /// minus the seal time of [`Gap::since`].
    pub fn age_ms(&self, now_ms: i64) -> Option<i64> {
        self.since
            .as_ref()
            .map(|at| now_ms.saturating_sub(at.sealed_at_ms))
    }

    /// The ids the stream misses for certain: `expected..first_held`.
    pub fn missing(&self) -> std::ops::Range<u64> {
        self.expected..self.first_held
    }
}

/// Turns archive order into exactly-once, per-stream-ordered delivery.
///
/// Feed it every line of every object in key order ([`Sequencer::push`])
/// and mark each object consumed ([`Sequencer::finish_object`]); every call
/// appends what may be delivered now, in delivery order, to the caller's
/// output vector.
///
/// State per stream is the last delivered event id (delivery is contiguous,
/// so every id at or below it is a duplicate) plus the held-back events.
#[derive(Debug, Clone, Default)]
pub struct Sequencer {
    config: SequencerConfig,
    cursor: Option<String>,
    delivered: StreamMap<u64>,
    held: BTreeMap<String, BTreeMap<u64, HeldEvent>>,
    /// With `start_at_first_seen`: the first event offered of each stream
    /// first offered after its event 1.
    starts: StreamMap<u64>,
    /// With `since_ms`: the streams whose start was assumed, and where.
    assumed: StreamMap<u64>,
    /// With `since_ms`: the streams whose last event (in `delivered`) was
    /// passed over as written before the time, not delivered: what follows
    /// it up to the next event found may have been written before the time
    /// too, so a hole there leaves the stream's start unknown.
    passed_over: StreamSet,
    before_start: u64,
}

impl Sequencer {
    /// A sequencer at the start of the archive with nothing delivered.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sequencer whose per-stream versions come from the projection's own
    /// store (where the projection records each stream's version with its
    /// state): `versions` maps a stream to its last applied event id; streams
    /// not in it start at 0.
    ///
    /// Every event of a stream after its version must be in an object after
    /// `cursor` (or be back-filled). The safe choice is `cursor = None`:
    /// replay the archive from the start and let dedupe skip what the
    /// projection has applied. A later cursor is right only if it was stored
    /// atomically with the versions *and* nothing was held back at that
    /// moment (held events live only in a [`Checkpoint`]).
    pub fn with_versions(
        config: SequencerConfig,
        cursor: Option<String>,
        versions: impl IntoIterator<Item = (String, u64)>,
    ) -> Self {
        Self {
            config: SequencerConfig {
                max_held_per_stream: config.max_held_per_stream.max(1),
                ..config
            },
            cursor,
            delivered: versions.into_iter().filter(|&(_, v)| v > 0).collect(),
            held: BTreeMap::new(),
            starts: StreamMap::default(),
            assumed: StreamMap::default(),
            passed_over: StreamSet::default(),
            before_start: 0,
        }
    }

    /// [`SequencerConfig::since_ms`], as configured or resumed.
    pub fn since_ms(&self) -> Option<i64> {
        self.config.since_ms
    }

    /// The last fully consumed key (list the archive with `StartAfter` it).
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// The stream's last delivered event id (0: none), or with
    /// [`SequencerConfig::since_ms`] passed over as written before the time.
    pub fn last_delivered(&self, stream_id: &str) -> u64 {
        self.delivered.get(stream_id).copied().unwrap_or(0)
    }

    /// How many events are held back over all streams.
    pub fn held_count(&self) -> usize {
        self.held.values().map(BTreeMap::len).sum()
    }

    /// With [`SequencerConfig::start_at_first_seen`]: how many events were
    /// not delivered because they are older than their stream's first event
    /// offered.
    pub fn before_start(&self) -> u64 {
        self.before_start
    }

    /// How many events of `stream_id` are held back.
    pub fn held_in(&self, stream_id: &str) -> usize {
        self.held.get(stream_id).map_or(0, BTreeMap::len)
    }

    fn check_key(&self, key: &str) -> Result<(), SequenceError> {
        match &self.cursor {
            Some(cursor) if key <= cursor.as_str() => Err(SequenceError::KeyNotAfterCursor {
                key: key.to_owned(),
                cursor: cursor.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Offers one event read at `at` (a line of the object being consumed).
    /// Appends to `out` whatever becomes deliverable.
    pub fn push(
        &mut self,
        at: &ArchivePosition,
        event: ReplayEvent,
        out: &mut Vec<ReplayEvent>,
    ) -> Result<Offer, SequenceError> {
        self.check_key(&at.key)?;
        self.accept(event, Some(at), out)
    }

    /// Marks the object at `at` fully consumed: the cursor moves to its key.
    pub fn finish_object(&mut self, at: &ArchivePosition) -> Result<(), SequenceError> {
        self.check_key(&at.key)?;
        self.cursor = Some(at.key.clone());
        Ok(())
    }

    /// Back-fill: delivers events of `stream_id` read from the table (the
    /// source of truth), typically `gap.expected..gap.first_held`, in any
    /// order, releasing the held-back events they unblock. Events already
    /// delivered or held are dropped as duplicates, so reading the stream
    /// from `expected` to its end is fine. Every event must belong to
    /// `stream_id`; otherwise nothing is done.
    pub fn fill(
        &mut self,
        stream_id: &str,
        events: impl IntoIterator<Item = ReplayEvent>,
        out: &mut Vec<ReplayEvent>,
    ) -> Result<(), SequenceError> {
        let mut events: Vec<ReplayEvent> = events.into_iter().collect();
        if let Some(other) = events.iter().find(|e| e.stream_id != stream_id) {
            return Err(SequenceError::StreamMismatch {
                stream_id: stream_id.to_owned(),
                found: other.stream_id.clone(),
            });
        }
        if events.iter().any(|e| e.event_id == 0) {
            return Err(SequenceError::ZeroEventId {
                stream_id: stream_id.to_owned(),
            });
        }
        events.sort_by_key(|e| e.event_id);
        events.dedup_by_key(|e| e.event_id);
        for event in events {
            self.accept(event, None, out)?;
        }
        Ok(())
    }

    fn accept(
        &mut self,
        event: ReplayEvent,
        at: Option<&ArchivePosition>,
        out: &mut Vec<ReplayEvent>,
    ) -> Result<Offer, SequenceError> {
        if event.event_id == 0 {
            return Err(SequenceError::ZeroEventId {
                stream_id: event.stream_id,
            });
        }
        if let Some(since) = self.config.since_ms {
            if let Some(offer) = self.since_rule(since, &event, out)? {
                return Ok(offer);
            }
        } else if self.config.start_at_first_seen {
            self.first_seen_rule(&event);
        }
        let last = self.last_delivered(&event.stream_id);
        if event.event_id <= last {
            if self
                .starts
                .get(&event.stream_id)
                .is_some_and(|&start| event.event_id < start)
            {
                self.before_start += 1;
                return Ok(Offer::BeforeStart);
            }
            return Ok(Offer::Duplicate);
        }
        if event.event_id > last.saturating_add(1) {
            let held = self.held.entry(event.stream_id.clone()).or_default();
            if held.contains_key(&event.event_id) {
                return Ok(Offer::Duplicate);
            }
            if held.len() >= self.config.max_held_per_stream {
                let error = SequenceError::BufferFull {
                    stream_id: event.stream_id.clone(),
                    expected: last.saturating_add(1),
                    event_id: event.event_id,
                    capacity: self.config.max_held_per_stream,
                };
                if held.is_empty() {
                    self.held.remove(&event.stream_id);
                }
                return Err(error);
            }
            held.insert(
                event.event_id,
                HeldEvent {
                    event,
                    read_at: at.cloned(),
                },
            );
            return Ok(Offer::Held);
        }
        // The stream's next event: deliver it and every held successor.
        if !self.passed_over.is_empty() {
            self.passed_over.remove(&event.stream_id);
        }
        if !self.held.contains_key(&event.stream_id) {
            // The common case: nothing held, a known stream.
            if let Some(last) = self.delivered.get_mut(&event.stream_id) {
                *last = event.event_id;
                out.push(event);
                return Ok(Offer::Delivered { released: 1 });
            }
        }
        let stream_id = event.stream_id.clone();
        let next = event.event_id;
        out.push(event);
        let released = 1 + self.release(stream_id, next, out);
        Ok(Offer::Delivered { released })
    }

    /// The stream's last delivered (or passed over) event is now `last`:
    /// delivers the held events that follow it without a hole. Returns how
    /// many.
    fn release(&mut self, stream_id: String, mut last: u64, out: &mut Vec<ReplayEvent>) -> usize {
        let mut released = 0;
        if let Some(held) = self.held.get_mut(&stream_id) {
            while let Some(successor) = last.checked_add(1).and_then(|n| held.remove(&n)) {
                last = successor.event.event_id;
                out.push(successor.event);
                released += 1;
            }
            if held.is_empty() {
                self.held.remove(&stream_id);
            }
        }
        self.delivered.insert(stream_id, last);
        released
    }

    /// [`SequencerConfig::start_at_first_seen`] (checkpoints of formats 1
    /// and 2): a stream unknown so far starts at this event.
    fn first_seen_rule(&mut self, event: &ReplayEvent) {
        if self.delivered.contains_key(&event.stream_id) || self.held.contains_key(&event.stream_id)
        {
            return;
        }
        // The stream starts here: its earlier events were archived before
        // the part of the archive being read.
        if event.event_id > 1 {
            self.starts.insert(event.stream_id.clone(), event.event_id);
            self.delivered
                .insert(event.stream_id.clone(), event.event_id - 1);
        }
    }

    /// [`SequencerConfig::since_ms`]: what becomes of an event by its
    /// timestamp; `None` when it is taken as any event is (written at or
    /// after the time, or without a timestamp: never dropped for want of one).
    ///
    /// An event written before the time is not delivered, and since a
    /// stream's timestamps never go backwards, neither is any earlier event
    /// of its stream: the stream's last delivered id moves up to it (passed
    /// over), which may release held events. An event at or below that id
    /// is a duplicate, or was written before the time; or, below a start
    /// that was assumed ([`Sequencer::assume_start`]), it is an event that
    /// was written at or after the time and can no longer be delivered in
    /// order: [`SequenceError::SinceStartMissed`].
    fn since_rule(
        &mut self,
        since: i64,
        event: &ReplayEvent,
        out: &mut Vec<ReplayEvent>,
    ) -> Result<Option<Offer>, SequenceError> {
        let id = event.event_id;
        let last = self.last_delivered(&event.stream_id);
        if id <= last {
            let before = event.timestamp_ms().is_some_and(|ts| ts < since);
            if let Some(&start) = self.assumed.get(&event.stream_id) {
                if id < start {
                    if !before {
                        return Err(SequenceError::SinceStartMissed {
                            stream_id: event.stream_id.clone(),
                            event_id: id,
                            assumed_start: start,
                        });
                    }
                    if id.saturating_add(1) == start {
                        // Its predecessor was written before the time: the
                        // start assumed is right.
                        self.assumed.remove(&event.stream_id);
                    }
                }
            }
            if before {
                self.before_start += 1;
                return Ok(Some(Offer::BeforeStart));
            }
            return Ok(Some(Offer::Duplicate));
        }
        let held = self.held.get(&event.stream_id);
        if held.is_some_and(|h| h.contains_key(&id)) {
            return Ok(Some(Offer::Duplicate));
        }
        if event.timestamp_ms().is_none_or(|ts| ts >= since) {
            return Ok(None);
        }
        if held
            .and_then(BTreeMap::first_key_value)
            .is_some_and(|(&first, _)| first < id)
        {
            // A held event below it was written at or after the time: the
            // stream's timestamps went backwards. Taken as any event is,
            // rather than lose the held one.
            return Ok(None);
        }
        self.before_start += 1;
        if self.release(event.stream_id.clone(), id, out) == 0 {
            // Nothing of the stream delivered at or after the time yet.
            self.passed_over.insert(event.stream_id.clone());
        } else {
            self.passed_over.remove(&event.stream_id);
        }
        Ok(Some(Offer::BeforeStart))
    }

    /// With [`SequencerConfig::since_ms`]: whether `stream_id` has held
    /// events and below them nothing known, or only events passed over as
    /// written before the time (with a hole between them and the held ones):
    /// whether the missing events were written before the time (and need
    /// not be delivered) is unknown until one of them is found, read from
    /// the table, or the start is assumed.
    pub fn start_unknown(&self, stream_id: &str) -> bool {
        self.config.since_ms.is_some()
            && self.held.contains_key(stream_id)
            && (!self.delivered.contains_key(stream_id) || self.passed_over.contains(stream_id))
    }

    /// With [`SequencerConfig::since_ms`] and no table to read from: assumes
    /// that a stream whose start is unknown ([`Sequencer::start_unknown`])
    /// starts at its first held event, and releases its held events into
    /// `out`. Returns whether it did. The assumption is recorded (and kept in
    /// the checkpoint): an earlier event of the stream written at or after
    /// the time, found later, is refused ([`SequenceError::SinceStartMissed`]).
    pub fn assume_start(&mut self, stream_id: &str, out: &mut Vec<ReplayEvent>) -> bool {
        if !self.start_unknown(stream_id) {
            return false;
        }
        let Some(first) = self
            .held
            .get(stream_id)
            .and_then(|h| h.first_key_value())
            .map(|(&id, _)| id)
        else {
            return false;
        };
        self.assumed.insert(stream_id.to_owned(), first);
        self.passed_over.remove(stream_id);
        self.release(stream_id.to_owned(), first.saturating_sub(1), out);
        true
    }

    /// Every stream whose next event is missing while later events of it are
    /// held back, by stream id.
    ///
    /// A stream whose *last* events are missing holds nothing and cannot be
    /// told apart from a stream that simply has no more events: only the
    /// table can (`verify` with table access compares every stream's last
    /// version).
    pub fn gaps(&self) -> Vec<Gap> {
        self.held
            .iter()
            .filter_map(|(stream_id, held)| self.gap_of(stream_id, held))
            .collect()
    }

    /// The gap of one stream, if it has one (see [`Sequencer::gaps`]).
    pub fn gap(&self, stream_id: &str) -> Option<Gap> {
        let held = self.held.get(stream_id)?;
        self.gap_of(stream_id, held)
    }

    fn gap_of(&self, stream_id: &str, held: &BTreeMap<u64, HeldEvent>) -> Option<Gap> {
        let (&first_held, _) = held.first_key_value()?;
        let since = held
            .values()
            .filter_map(|h| h.read_at.as_ref())
            .min_by(|a, b| a.key.cmp(&b.key))
            .cloned();
        Some(Gap {
            stream_id: stream_id.to_owned(),
            expected: self.last_delivered(stream_id).saturating_add(1),
            first_held,
            held: held.len(),
            since,
        })
    }

    /// The gaps visible for longer than `bound_ms` at `now_ms` (archive
    /// clock), plus those of unknown age (held events from back-fill only):
    /// the streams to back-fill from the table.
    pub fn overdue_gaps(&self, now_ms: i64, bound_ms: i64) -> Vec<Gap> {
        self.gaps()
            .into_iter()
            .filter(|gap| gap.age_ms(now_ms).is_none_or(|age| age > bound_ms))
            .collect()
    }

    /// The state to persist: cursor, per-stream last delivered id, and the
    /// held-back events.
    ///
    /// Resuming from it continues exactly where this sequencer is, even in
    /// the middle of an object: list with `StartAfter` = the cursor, which
    /// re-reads the object being consumed, and its lines already taken are
    /// dropped as duplicates.
    pub fn checkpoint(&self) -> Checkpoint {
        let last_delivered = self.delivered.iter().map(|(s, &v)| (s.clone(), v));
        let since = self.config.since_ms.map(|at_ms| Since {
            at_ms,
            assumed_starts: self.assumed.iter().map(|(s, &v)| (s.clone(), v)).collect(),
            passed_over: self.passed_over.iter().cloned().collect(),
        });
        Checkpoint {
            format: match &since {
                Some(since) if !since.passed_over.is_empty() => PASSED_OVER_FORMAT,
                Some(_) => SINCE_FORMAT,
                None => CHECKPOINT_FORMAT,
            },
            start_at_first_seen: self.config.start_at_first_seen && since.is_none(),
            since,
            cursor: self.cursor.clone(),
            last_delivered: last_delivered.collect(),
            held: self
                .held
                .values()
                .flat_map(|held| held.values().cloned())
                .collect(),
            partition: None,
        }
    }

    /// A sequencer in the state a [`Checkpoint`] recorded, with the default
    /// configuration.
    pub fn resume(checkpoint: Checkpoint) -> Result<Self, CheckpointError> {
        Self::resume_with(SequencerConfig::default(), checkpoint)
    }

    /// A sequencer in the state a [`Checkpoint`] recorded. The checkpoint is
    /// checked: a known format, and every held event later than its stream's
    /// next event, held once, within the configured bound.
    pub fn resume_with(
        config: SequencerConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, CheckpointError> {
        if !(CHECKPOINT_FORMAT..=NEWEST_FORMAT).contains(&checkpoint.format) {
            return Err(CheckpointError::UnsupportedFormat {
                found: checkpoint.format,
                supported: NEWEST_FORMAT,
            });
        }
        let config = SequencerConfig {
            start_at_first_seen: config.start_at_first_seen || checkpoint.start_at_first_seen,
            since_ms: checkpoint
                .since
                .as_ref()
                .map(|s| s.at_ms)
                .or(config.since_ms),
            ..config
        };
        let mut sequencer =
            Self::with_versions(config, checkpoint.cursor, checkpoint.last_delivered);
        let (assumed_starts, passed_over) = checkpoint
            .since
            .map(|s| (s.assumed_starts, s.passed_over))
            .unwrap_or_default();
        // A stream with no last event: nothing known of it, its start is
        // unknown anyway.
        sequencer.passed_over = passed_over
            .into_iter()
            .filter(|s| sequencer.delivered.contains_key(s))
            .collect();
        for (stream_id, start) in assumed_starts {
            if start < 2 || start > sequencer.last_delivered(&stream_id) {
                return Err(CheckpointError::InvalidStart {
                    stream_id,
                    event_id: start,
                    reason: "that is not after event 1 and at most its last delivered event",
                });
            }
            sequencer.assumed.insert(stream_id, start);
        }
        for held in checkpoint.held {
            let stream_id = held.event.stream_id.clone();
            let event_id = held.event.event_id;
            let invalid = |reason| CheckpointError::InvalidHeld {
                stream_id: stream_id.clone(),
                event_id,
                reason,
            };
            if event_id <= sequencer.last_delivered(&stream_id).saturating_add(1) {
                return Err(invalid("it is not after the stream's next event"));
            }
            let stream = sequencer.held.entry(stream_id.clone()).or_default();
            if stream.len() >= sequencer.config.max_held_per_stream {
                return Err(invalid("the stream holds more events than allowed"));
            }
            if stream.insert(event_id, held).is_some() {
                return Err(invalid("it is held twice"));
            }
        }
        Ok(sequencer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    impl Sequencer {
        fn with_config(config: SequencerConfig) -> Self {
            Self::with_versions(config, None, std::iter::empty())
        }

        /// Offers every line of one object, then marks it consumed. On an
        /// error the lines before the refused one stay consumed (and their
        /// output is in `out`) and the object is not marked; offering it
        /// again is safe, the lines already taken are duplicates.
        fn feed_object(
            &mut self,
            at: &ArchivePosition,
            events: impl IntoIterator<Item = ReplayEvent>,
            out: &mut Vec<ReplayEvent>,
        ) -> Result<(), SequenceError> {
            self.check_key(&at.key)?;
            for event in events {
                self.accept(event, Some(at), out)?;
            }
            self.finish_object(at)
        }
    }

    fn ev(stream: &str, id: u64) -> ReplayEvent {
        ReplayEvent::new(stream, id, &json!({"streamId": stream, "eventId": id}))
    }

    fn at(key: &str) -> ArchivePosition {
        ArchivePosition::new(key, key.len() as i64 * 1000)
    }

    fn ids(out: &[ReplayEvent]) -> Vec<(String, u64)> {
        out.iter()
            .map(|e| (e.stream_id.clone(), e.event_id))
            .collect()
    }

    #[test]
    fn delivers_in_order_and_drops_duplicates() {
        let mut seq = Sequencer::new();
        let mut out = Vec::new();
        let k = at("k1");
        assert_eq!(
            seq.push(&k, ev("a", 1), &mut out),
            Ok(Offer::Delivered { released: 1 })
        );
        assert_eq!(seq.push(&k, ev("a", 1), &mut out), Ok(Offer::Duplicate));
        assert_eq!(seq.push(&k, ev("a", 3), &mut out), Ok(Offer::Held));
        assert_eq!(seq.push(&k, ev("a", 3), &mut out), Ok(Offer::Duplicate));
        assert_eq!(
            seq.push(&k, ev("b", 1), &mut out),
            Ok(Offer::Delivered { released: 1 })
        );
        assert_eq!(
            seq.push(&k, ev("a", 2), &mut out),
            Ok(Offer::Delivered { released: 2 })
        );
        assert_eq!(
            ids(&out),
            [
                ("a".into(), 1),
                ("b".into(), 1),
                ("a".into(), 2),
                ("a".into(), 3)
            ]
        );
        assert_eq!(seq.held_count(), 0);
        assert!(seq.gaps().is_empty());
    }

    #[test]
    fn reports_gaps_with_position() {
        let mut seq = Sequencer::new();
        let mut out = Vec::new();
        seq.feed_object(&at("k1"), [ev("a", 1), ev("a", 4)], &mut out)
            .unwrap();
        seq.feed_object(&at("k22"), [ev("a", 3), ev("b", 2)], &mut out)
            .unwrap();
        let gaps = seq.gaps();
        assert_eq!(
            gaps,
            [
                Gap {
                    stream_id: "a".into(),
                    expected: 2,
                    first_held: 3,
                    held: 2,
                    since: Some(at("k1")),
                },
                Gap {
                    stream_id: "b".into(),
                    expected: 1,
                    first_held: 2,
                    held: 1,
                    since: Some(at("k22")),
                },
            ]
        );
        assert_eq!(gaps[0].missing(), 2..3);
        assert_eq!(gaps[0].age_ms(5_000), Some(3_000));
        assert_eq!(seq.overdue_gaps(5_000, 2_500).len(), 1);
        assert_eq!(seq.overdue_gaps(5_000, 500).len(), 2);
    }

    #[test]
    fn fill_releases_held_events() {
        let mut seq = Sequencer::new();
        let mut out = Vec::new();
        seq.feed_object(&at("k1"), [ev("a", 3), ev("a", 5)], &mut out)
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(
            seq.fill("a", [ev("b", 1)], &mut out),
            Err(SequenceError::StreamMismatch {
                stream_id: "a".into(),
                found: "b".into()
            })
        );
        seq.fill(
            "a",
            [ev("a", 2), ev("a", 1), ev("a", 3), ev("a", 4), ev("a", 1)],
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert!(seq.gaps().is_empty());
        assert_eq!(seq.last_delivered("a"), 5);
    }

    #[test]
    fn from_the_middle_of_the_archive_streams_start_at_their_first_event() {
        let config = SequencerConfig {
            start_at_first_seen: true,
            ..SequencerConfig::default()
        };
        let mut seq = Sequencer::with_config(config);
        let mut out = Vec::new();
        let k = at("k1");
        assert_eq!(
            seq.push(&k, ev("a", 5), &mut out).unwrap(),
            Offer::Delivered { released: 1 }
        );
        assert_eq!(seq.push(&k, ev("a", 7), &mut out).unwrap(), Offer::Held);
        assert_eq!(
            seq.push(&k, ev("a", 6), &mut out).unwrap(),
            Offer::Delivered { released: 2 }
        );
        assert_eq!(
            seq.push(&k, ev("a", 6), &mut out).unwrap(),
            Offer::Duplicate
        );
        assert_eq!(
            seq.push(&k, ev("a", 4), &mut out).unwrap(),
            Offer::BeforeStart
        );
        assert_eq!(
            seq.push(&k, ev("b", 1), &mut out).unwrap(),
            Offer::Delivered { released: 1 }
        );
        assert_eq!(
            ids(&out),
            [
                ("a".into(), 5),
                ("a".into(), 6),
                ("a".into(), 7),
                ("b".into(), 1)
            ]
        );
        assert_eq!(seq.before_start(), 1);
        let resumed =
            Sequencer::resume(Checkpoint::from_json(&seq.checkpoint().to_json().unwrap()).unwrap())
                .unwrap();
        let mut out = Vec::new();
        let mut resumed = resumed;
        resumed.push(&at("k2"), ev("c", 9), &mut out).unwrap();
        assert_eq!(
            ids(&out),
            [("c".into(), 9)],
            "the mode survives a checkpoint"
        );
    }

    fn ev_at(stream: &str, id: u64, ts: i64) -> ReplayEvent {
        let timestamp = evs_core::format_timestamp_ms(ts);
        ReplayEvent::new(
            stream,
            id,
            &json!({"streamId": stream, "eventId": id, "timestamp": timestamp}),
        )
    }

    #[test]
    fn since_delivers_what_was_written_at_or_after_it() {
        let config = SequencerConfig {
            since_ms: Some(100),
            ..SequencerConfig::default()
        };
        let mut seq = Sequencer::with_config(config);
        let mut out = Vec::new();
        let k = at("k1");
        // Written before: not delivered, nor anything earlier.
        assert_eq!(
            seq.push(&k, ev_at("a", 5, 50), &mut out),
            Ok(Offer::BeforeStart)
        );
        assert_eq!(seq.last_delivered("a"), 5);
        assert_eq!(seq.push(&k, ev_at("a", 7, 150), &mut out), Ok(Offer::Held));
        assert_eq!(
            seq.push(&k, ev_at("a", 6, 120), &mut out),
            Ok(Offer::Delivered { released: 2 })
        );
        assert_eq!(
            seq.push(&k, ev_at("a", 4, 40), &mut out),
            Ok(Offer::BeforeStart)
        );
        assert_eq!(
            seq.push(&k, ev_at("a", 6, 120), &mut out),
            Ok(Offer::Duplicate)
        );
        // A stream first found after its first event, written after: its
        // start is unknown until an earlier event shows where it is.
        assert_eq!(seq.push(&k, ev_at("b", 3, 150), &mut out), Ok(Offer::Held));
        assert!(seq.start_unknown("b"));
        assert_eq!(
            seq.push(&k, ev_at("b", 2, 90), &mut out),
            Ok(Offer::BeforeStart)
        );
        assert!(!seq.start_unknown("b"));
        // A new stream: from event 1, whatever order it comes in.
        assert_eq!(seq.push(&k, ev_at("n", 2, 150), &mut out), Ok(Offer::Held));
        assert_eq!(
            seq.push(&k, ev_at("n", 1, 150), &mut out),
            Ok(Offer::Delivered { released: 2 })
        );
        // Timestamps that go backwards: nothing held is dropped.
        assert_eq!(seq.push(&k, ev_at("e", 3, 150), &mut out), Ok(Offer::Held));
        assert_eq!(seq.push(&k, ev_at("e", 4, 50), &mut out), Ok(Offer::Held));
        assert_eq!(
            ids(&out),
            [
                ("a".into(), 6),
                ("a".into(), 7),
                ("b".into(), 3),
                ("n".into(), 1),
                ("n".into(), 2)
            ]
        );
        assert_eq!(seq.before_start(), 3);

        // Assumed starts: confirmed by an earlier event written before the
        // time, refused for one written at or after it.
        let mut out = Vec::new();
        for stream in ["c", "d"] {
            seq.push(&k, ev_at(stream, 3, 150), &mut out).unwrap();
            assert!(seq.assume_start(stream, &mut out));
            assert!(!seq.assume_start(stream, &mut out), "once");
        }
        assert_eq!(ids(&out), [("c".into(), 3), ("d".into(), 3)]);
        let checkpoint = seq.checkpoint();
        assert_eq!(checkpoint.format, SINCE_FORMAT);
        let since = checkpoint.since.clone().unwrap();
        assert_eq!((since.at_ms, since.assumed_starts.len()), (100, 2));
        let mut resumed =
            Sequencer::resume(Checkpoint::from_json(&checkpoint.to_json().unwrap()).unwrap())
                .unwrap();
        for seq in [&mut seq, &mut resumed] {
            assert_eq!(
                seq.push(&k, ev_at("c", 2, 90), &mut out),
                Ok(Offer::BeforeStart)
            );
            assert_eq!(
                seq.push(&k, ev_at("c", 1, 150), &mut out),
                Ok(Offer::Duplicate)
            );
            assert_eq!(
                seq.push(&k, ev_at("d", 1, 150), &mut out),
                Err(SequenceError::SinceStartMissed {
                    stream_id: "d".into(),
                    event_id: 1,
                    assumed_start: 3
                })
            );
            assert_eq!(seq.checkpoint().since.unwrap().assumed_starts.len(), 1);
        }
        let mut bad = checkpoint;
        bad.since
            .as_mut()
            .unwrap()
            .assumed_starts
            .insert("c".into(), 9);
        assert!(matches!(
            Sequencer::resume(bad),
            Err(CheckpointError::InvalidStart { event_id: 9, .. })
        ));
    }

    #[test]
    fn since_a_passed_over_event_below_a_hole_leaves_the_start_unknown() {
        // a/1, written before the time, is found; a/2 is not (its object was
        // sealed before the replay's first one, or is late); a/3, written
        // after, is. Whether a/2 was written before the time is unknown, as
        // for a stream first found at a/3: the start waits to be settled (by
        // a/2, the table or an assumption), it is not a gap that never closes.
        let config = SequencerConfig {
            since_ms: Some(100),
            ..SequencerConfig::default()
        };
        let mut seq = Sequencer::with_config(config);
        let mut out = Vec::new();
        let k = at("k1");
        for stream in ["a", "b"] {
            assert_eq!(
                seq.push(&k, ev_at(stream, 1, 50), &mut out),
                Ok(Offer::BeforeStart)
            );
        }
        // Through a checkpoint: that a/1 was passed over, not delivered, is kept.
        let checkpoint = seq.checkpoint();
        assert_eq!(checkpoint.format, PASSED_OVER_FORMAT);
        let json = checkpoint.to_json().unwrap();
        let mut seq = Sequencer::resume(Checkpoint::from_json(&json).unwrap()).unwrap();
        // The other order: found after a later event, it does not settle it.
        assert_eq!(seq.push(&k, ev_at("c", 4, 150), &mut out), Ok(Offer::Held));
        assert_eq!(
            seq.push(&k, ev_at("c", 1, 50), &mut out),
            Ok(Offer::BeforeStart)
        );
        for stream in ["a", "b"] {
            assert_eq!(
                seq.push(&k, ev_at(stream, 3, 150), &mut out),
                Ok(Offer::Held)
            );
        }
        for stream in ["a", "b", "c"] {
            assert!(seq.start_unknown(stream), "{stream}");
            assert!(seq.assume_start(stream, &mut out), "{stream}");
        }
        assert_eq!(
            ids(&out),
            [("a".into(), 3), ("b".into(), 3), ("c".into(), 4)]
        );
        // As for any assumed start: confirmed by its predecessor written
        // before the time, the replay stops for one written after it.
        assert_eq!(
            seq.push(&k, ev_at("b", 2, 90), &mut out),
            Ok(Offer::BeforeStart)
        );
        assert_eq!(
            seq.push(&k, ev_at("a", 2, 120), &mut out),
            Err(SequenceError::SinceStartMissed {
                stream_id: "a".into(),
                event_id: 2,
                assumed_start: 3
            })
        );
        // Once an event of the stream was delivered, a later hole is a gap.
        let mut out = Vec::new();
        seq.push(&k, ev_at("d", 1, 50), &mut out).unwrap();
        seq.push(&k, ev_at("d", 2, 150), &mut out).unwrap();
        assert_eq!(seq.push(&k, ev_at("d", 4, 170), &mut out), Ok(Offer::Held));
        assert!(!seq.start_unknown("d"));
        assert!(!seq.assume_start("d", &mut out));
        assert_eq!(ids(&out), [("d".into(), 2)]);
    }

    #[test]
    fn checkpoints_of_every_format_are_read() {
        let legacy = r#"{"format":2,"startAtFirstSeen":true,"cursor":"k1","lastDelivered":{"a":4},"held":[],"partition":"0/2"}"#;
        let mut seq = Sequencer::resume(Checkpoint::from_json(legacy).unwrap()).unwrap();
        let mut out = Vec::new();
        seq.push(&at("k2"), ev("b", 3), &mut out).unwrap();
        assert_eq!(ids(&out), [("b".into(), 3)], "the rule it was saved with");
        let since =
            r#"{"format":3,"since":{"atMs":100},"cursor":"k1","lastDelivered":{"a":4},"held":[]}"#;
        let mut seq = Sequencer::resume(Checkpoint::from_json(since).unwrap()).unwrap();
        assert_eq!(seq.since_ms(), Some(100));
        let mut out = Vec::new();
        seq.push(&at("k2"), ev_at("b", 3, 150), &mut out).unwrap();
        assert!(out.is_empty() && seq.start_unknown("b"));
        let passed = r#"{"format":4,"since":{"atMs":100,"passedOver":["a"]},"cursor":"k1","lastDelivered":{"a":4},"held":[]}"#;
        let mut seq = Sequencer::resume(Checkpoint::from_json(passed).unwrap()).unwrap();
        seq.push(&at("k2"), ev_at("a", 6, 150), &mut out).unwrap();
        assert!(out.is_empty() && seq.start_unknown("a"));
        let newer = passed.replace(r#""format":4"#, r#""format":5"#);
        assert!(matches!(
            Sequencer::resume(Checkpoint::from_json(&newer).unwrap()),
            Err(CheckpointError::UnsupportedFormat {
                found: 5,
                supported: 4
            })
        ));
    }

    #[test]
    fn buffer_is_bounded_and_never_drops() {
        let mut seq = Sequencer::with_config(SequencerConfig {
            max_held_per_stream: 2,
            ..SequencerConfig::default()
        });
        let mut out = Vec::new();
        let k = at("k1");
        seq.push(&k, ev("a", 2), &mut out).unwrap();
        seq.push(&k, ev("a", 3), &mut out).unwrap();
        assert_eq!(
            seq.push(&k, ev("a", 4), &mut out),
            Err(SequenceError::BufferFull {
                stream_id: "a".into(),
                expected: 1,
                event_id: 4,
                capacity: 2
            })
        );
        // Already held ones are still recognised as duplicates.
        assert_eq!(seq.push(&k, ev("a", 3), &mut out), Ok(Offer::Duplicate));
        seq.fill("a", [ev("a", 1)], &mut out).unwrap();
        seq.push(&k, ev("a", 4), &mut out).unwrap();
        assert_eq!(
            out.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn refuses_keys_at_or_before_the_cursor_and_zero_ids() {
        let mut seq = Sequencer::new();
        let mut out = Vec::new();
        seq.feed_object(&at("k2"), [ev("a", 1)], &mut out).unwrap();
        assert_eq!(seq.cursor(), Some("k2"));
        assert!(matches!(
            seq.push(&at("k2"), ev("a", 2), &mut out),
            Err(SequenceError::KeyNotAfterCursor { .. })
        ));
        assert!(matches!(
            seq.push(&at("k1"), ev("a", 2), &mut out),
            Err(SequenceError::KeyNotAfterCursor { .. })
        ));
        assert!(matches!(
            seq.push(&at("k3"), ev("a", 0), &mut out),
            Err(SequenceError::ZeroEventId { .. })
        ));
        assert_eq!(seq.last_delivered("a"), 1);
    }

    #[test]
    fn checkpoint_round_trip_keeps_held_events() {
        let mut seq = Sequencer::new();
        let mut out = Vec::new();
        seq.feed_object(&at("k1"), [ev("a", 1), ev("a", 3), ev("b", 1)], &mut out)
            .unwrap();
        let json = seq.checkpoint().to_json().unwrap();
        let mut resumed = Sequencer::resume(Checkpoint::from_json(&json).unwrap()).unwrap();
        assert_eq!(resumed.cursor(), Some("k1"));
        assert_eq!(resumed.gaps(), seq.gaps());
        let mut out = Vec::new();
        resumed
            .feed_object(&at("k2"), [ev("a", 3), ev("a", 2), ev("b", 1)], &mut out)
            .unwrap();
        assert_eq!(ids(&out), [("a".into(), 2), ("a".into(), 3)]);
    }

    #[test]
    fn resume_checks_the_checkpoint() {
        let mut checkpoint = Sequencer::new().checkpoint();
        checkpoint.format = 99;
        assert!(matches!(
            Sequencer::resume(checkpoint),
            Err(CheckpointError::UnsupportedFormat { found: 99, .. })
        ));
        let mut checkpoint = Sequencer::new().checkpoint();
        checkpoint.last_delivered.insert("a".into(), 2);
        checkpoint.held.push(HeldEvent {
            event: ev("a", 3),
            read_at: None,
        });
        assert!(matches!(
            Sequencer::resume(checkpoint.clone()),
            Err(CheckpointError::InvalidHeld { event_id: 3, .. })
        ));
        checkpoint.held[0].event = ev("a", 4);
        checkpoint.held.push(HeldEvent {
            event: ev("a", 4),
            read_at: None,
        });
        assert!(matches!(
            Sequencer::resume(checkpoint),
            Err(CheckpointError::InvalidHeld { event_id: 4, .. })
        ));
    }

    #[test]
    fn the_last_event_id_never_overflows() {
        // A checkpoint (or a projection) at u64::MAX: the stream has no next
        // event, everything offered is a duplicate, nothing wraps or panics.
        let mut checkpoint = Sequencer::new().checkpoint();
        checkpoint.last_delivered.insert("a".into(), u64::MAX);
        let mut seq = Sequencer::resume(checkpoint.clone()).unwrap();
        let mut out = Vec::new();
        let k = at("k1");
        for id in [1, u64::MAX - 1, u64::MAX] {
            assert_eq!(seq.push(&k, ev("a", id), &mut out), Ok(Offer::Duplicate));
        }
        assert!(out.is_empty());
        assert!(seq.gaps().is_empty());
        checkpoint.held.push(HeldEvent {
            event: ev("a", u64::MAX),
            read_at: None,
        });
        assert!(matches!(
            Sequencer::resume(checkpoint),
            Err(CheckpointError::InvalidHeld { .. })
        ));
        // Held up to u64::MAX and released: the release loop stops there.
        let mut seq = Sequencer::with_versions(
            SequencerConfig::default(),
            None,
            [("b".to_owned(), u64::MAX - 2)],
        );
        assert_eq!(seq.push(&k, ev("b", u64::MAX), &mut out), Ok(Offer::Held));
        assert_eq!(
            seq.push(&k, ev("b", u64::MAX - 1), &mut out),
            Ok(Offer::Delivered { released: 2 })
        );
        assert_eq!(seq.last_delivered("b"), u64::MAX);
        assert_eq!(
            seq.push(&k, ev("b", u64::MAX), &mut out),
            Ok(Offer::Duplicate)
        );
        let mut out = Vec::new();
        seq.fill("b", [ev("b", u64::MAX)], &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn versions_from_the_projection_skip_applied_events() {
        let mut seq = Sequencer::with_versions(
            SequencerConfig::default(),
            None,
            [("a".to_owned(), 2), ("b".to_owned(), 0)],
        );
        let mut out = Vec::new();
        seq.feed_object(
            &at("k1"),
            [ev("a", 1), ev("a", 2), ev("a", 3), ev("b", 1)],
            &mut out,
        )
        .unwrap();
        assert_eq!(ids(&out), [("a".into(), 3), ("b".into(), 1)]);
    }
}
