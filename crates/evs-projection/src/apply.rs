//! The one algorithm every driver uses: a stream's events onto its stored
//! state and version, each exactly once, in order, holes read from the table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use evs_core::{EventStore, ReadRequest, RecordedEvent, StreamId};
use futures_util::stream::{self, StreamExt};

use crate::projection::{Projection, Versioned};
use crate::store::{Commit, StateStore, StoreError};

/// Why a stream's events were not (all) applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The state store failed; what was not committed is not applied.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The projection refused an event.
    #[error("stream {stream:?}: event {event_id} cannot be applied: {source}")]
    Apply {
        /// The stream.
        stream: String,
        /// The event.
        event_id: u64,
        /// The projection's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Events are missing before the ones delivered and there is no table to
    /// read them from.
    #[error("stream {stream:?}: events {from}..={to} were not delivered and no events table is given to read them from")]
    NoTable {
        /// The stream.
        stream: String,
        /// The first missing event.
        from: u64,
        /// The last missing event.
        to: u64,
    },
    /// Reading missing events from the table failed.
    #[error("stream {stream:?}: reading events {from}..={to} from the events table: {source}")]
    Table {
        /// The stream.
        stream: String,
        /// The first missing event.
        from: u64,
        /// The last missing event.
        to: u64,
        /// The table's error.
        #[source]
        source: evs_core::Error,
    },
    /// The table does not hold events a later delivered event implies.
    #[error("stream {stream:?}: the events table has no event {missing}, although event {to} was delivered after it")]
    Missing {
        /// The stream.
        stream: String,
        /// The first event the table lacks.
        missing: u64,
        /// The delivered event that implies it.
        to: u64,
    },
    /// Other drivers committed first too many times in a row.
    #[error("stream {stream:?}: {conflicts} commits in a row lost to other drivers")]
    Contended {
        /// The stream.
        stream: String,
        /// How many.
        conflicts: u32,
    },
}

impl DriveError {
    /// Whether trying again later may succeed (the store or table was
    /// unreachable or throttled, or other drivers were busy on the stream).
    pub fn is_transient(&self) -> bool {
        match self {
            DriveError::Store(e) => e.is_transient(),
            DriveError::Table { source, .. } => source.is_transient(),
            DriveError::Contended { .. } => true,
            DriveError::Apply { .. } | DriveError::NoTable { .. } | DriveError::Missing { .. } => {
                false
            }
        }
    }
}

/// How an [`Applier`] works.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Streams committed at once within a batch.
    pub concurrency: usize,
    /// Commits in a row a stream may lose to other drivers before its
    /// events are reported as failed (transient).
    pub max_conflicts: u32,
    /// Streams whose committed state is kept in memory, saving a load per
    /// batch; past it the cache starts over.
    pub cache_streams: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            max_conflicts: 16,
            cache_streams: 100_000,
        }
    }
}

/// What happened to one stream's events in a batch.
#[derive(Debug)]
pub struct StreamReport {
    /// The stream.
    pub stream: String,
    /// Events of the batch applied and committed.
    pub applied: u64,
    /// Events read from the table (they were missing) and committed.
    pub filled: u64,
    /// Events skipped: already applied (a duplicate, or another driver's).
    pub skipped: u64,
    /// The stream's version after the batch, as far as this driver knows.
    pub version: u64,
    /// The first event not applied, and why; every event of the stream
    /// before it is committed, none after it.
    pub failed: Option<(u64, DriveError)>,
}

/// What happened to a batch, stream by stream (in stream-id order).
#[derive(Debug, Default)]
pub struct BatchReport {
    /// One report per stream of the batch.
    pub streams: Vec<StreamReport>,
}

impl BatchReport {
    /// Events applied and committed (filled ones included).
    pub fn applied(&self) -> u64 {
        self.streams.iter().map(|s| s.applied + s.filled).sum()
    }

    /// Events skipped as already applied.
    pub fn skipped(&self) -> u64 {
        self.streams.iter().map(|s| s.skipped).sum()
    }

    /// The streams that failed: stream, first event not applied, why.
    pub fn failures(&self) -> impl Iterator<Item = (&str, u64, &DriveError)> {
        self.streams
            .iter()
            .filter_map(|s| s.failed.as_ref().map(|(id, e)| (s.stream.as_str(), *id, e)))
    }

    /// Whether every failure may heal by trying again (true when none).
    pub fn only_transient_failures(&self) -> bool {
        self.failures().all(|(_, _, e)| e.is_transient())
    }
}

/// Applies events to a projection through its [`StateStore`], exactly once
/// per event, each stream in order (see the crate docs). Events of one
/// stream may come repeated, out of order or with holes; streams are
/// independent and are committed concurrently.
pub struct Applier<P: Projection, St> {
    projection: P,
    store: St,
    table: Option<Arc<dyn EventStore>>,
    options: ApplyOptions,
    cache: HashMap<String, Versioned<P::State>>,
}

impl<P: Projection, St: StateStore<P::State>> Applier<P, St> {
    /// An applier without an events table: a hole in a stream's events is
    /// then a failure of that stream ([`DriveError::NoTable`]).
    pub fn new(projection: P, store: St) -> Self {
        Self {
            projection,
            store,
            table: None,
            options: ApplyOptions::default(),
            cache: HashMap::new(),
        }
    }

    /// Reads missing events from `table`, the events table (strongly consistent).
    pub fn with_table(mut self, table: Arc<dyn EventStore>) -> Self {
        self.table = Some(table);
        self
    }

    /// Sets the options.
    pub fn with_options(mut self, options: ApplyOptions) -> Self {
        self.options = options;
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The state store.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// Forgets what it knows of committed states, as a restarted driver
    /// would: the next batch loads every stream from the store.
    pub fn forget(&mut self) {
        self.cache.clear();
    }

    /// Applies `events` (any streams, each stream's in ascending order or
    /// not): per stream, what is at or below its version is skipped, the
    /// rest applied in order, holes read from the table first, and the
    /// result committed with one conditional write. A stream that fails
    /// keeps everything before its first failed event committed.
    pub async fn apply_batch(&mut self, events: &[RecordedEvent]) -> BatchReport {
        // each stream's events as positions in `events` (references would
        // make the futures below not `Send` for every lifetime)
        let mut streams: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            streams
                .entry(event.stream_id.as_str().to_owned())
                .or_default()
                .push(index);
        }
        if self.cache.len() + streams.len() > self.options.cache_streams {
            self.cache.clear();
        }
        let work: Vec<_> = streams
            .into_iter()
            .map(|(stream, mut positions)| {
                positions.sort_by_key(|&i| events.get(i).map(|e| e.event_id));
                positions.dedup_by_key(|&mut i| events.get(i).map(|e| e.event_id));
                let cached = self.cache.remove(&stream);
                (stream, cached, positions)
            })
            .collect();
        let (projection, store, table) = (&self.projection, &self.store, self.table.as_deref());
        let max_conflicts = self.options.max_conflicts;
        let mut done: Vec<_> = stream::iter(work)
            .map(|(stream, cached, positions)| {
                let mine = positions.iter().filter_map(|&i| events.get(i)).collect();
                apply_stream(
                    projection,
                    store,
                    table,
                    max_conflicts,
                    stream,
                    cached,
                    mine,
                )
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        done.sort_by(|a, b| a.1.stream.cmp(&b.1.stream));
        let mut report = BatchReport::default();
        for (committed, stream) in done {
            if let Some(committed) = committed {
                self.cache.insert(stream.stream.clone(), committed);
            }
            report.streams.push(stream);
        }
        report
    }
}

/// Counts of one fold.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    applied: u64,
    filled: u64,
    skipped: u64,
}

/// A failed fold: the first event not folded, why, and whether the state
/// may be half-changed by it (the projection failed inside `apply`).
type Failure = (u64, DriveError, bool);

async fn apply_stream<P: Projection, St: StateStore<P::State>>(
    projection: &P,
    store: &St,
    table: Option<&dyn EventStore>,
    max_conflicts: u32,
    stream: String,
    cached: Option<Versioned<P::State>>,
    events: Vec<&RecordedEvent>,
) -> (Option<Versioned<P::State>>, StreamReport) {
    let mut report = StreamReport {
        stream,
        applied: 0,
        filled: 0,
        skipped: 0,
        version: 0,
        failed: None,
    };
    let first = events.first().map_or(1, |e| e.event_id);
    let mut base = match cached {
        Some(base) => base,
        None => match store.load(&report.stream).await {
            Ok(base) => base.unwrap_or_default(),
            Err(e) => {
                report.failed = Some((first, e.into()));
                return (None, report);
            }
        },
    };
    let mut conflicts = 0;
    loop {
        report.version = base.version;
        let (next, counts, failure) = fold(projection, table, &report.stream, &base, &events).await;
        report.skipped = counts.skipped;
        if next.version == base.version {
            report.failed = failure.map(|(id, e, _)| (id, e));
            return (Some(base), report);
        }
        match store.commit(&report.stream, base.version, &next).await {
            Ok(Commit::Done) => {
                report.applied = counts.applied;
                report.filled = counts.filled;
                report.version = next.version;
                report.failed = failure.map(|(id, e, _)| (id, e));
                return (Some(next), report);
            }
            Ok(Commit::Conflict { .. }) => {
                conflicts += 1;
                if conflicts > max_conflicts {
                    let stream = report.stream.clone();
                    report.failed = Some((
                        base.version + 1,
                        DriveError::Contended { stream, conflicts },
                    ));
                    return (None, report);
                }
                base = match store.load(&report.stream).await {
                    Ok(base) => base.unwrap_or_default(),
                    Err(e) => {
                        report.failed = Some((base.version + 1, e.into()));
                        return (None, report);
                    }
                };
            }
            // The outcome is unknown: the next batch loads the stream again.
            Err(e) => {
                report.failed = Some((base.version + 1, e.into()));
                return (None, report);
            }
        }
    }
}

/// Folds `events` onto `base`; when the projection fails on an event, folds
/// again up to the one before it, so the state is exactly the state after
/// the events it counts (an `apply` that failed may have half-changed it).
async fn fold<P: Projection>(
    projection: &P,
    table: Option<&dyn EventStore>,
    stream: &str,
    base: &Versioned<P::State>,
    events: &[&RecordedEvent],
) -> (Versioned<P::State>, Counts, Option<Failure>) {
    let folded = fold_until(projection, table, stream, base, events, u64::MAX).await;
    match folded {
        (_, _, Some((event_id, error, true))) => {
            let (next, counts, again) =
                fold_until(projection, table, stream, base, events, event_id - 1).await;
            (next, counts, again.or(Some((event_id, error, true))))
        }
        folded => folded,
    }
}

/// Folds the events up to `limit` (an `EventId`) onto `base`.
async fn fold_until<P: Projection>(
    projection: &P,
    table: Option<&dyn EventStore>,
    stream: &str,
    base: &Versioned<P::State>,
    events: &[&RecordedEvent],
    limit: u64,
) -> (Versioned<P::State>, Counts, Option<Failure>) {
    let mut next = base.clone();
    let mut counts = Counts::default();
    for event in events {
        if event.event_id > limit {
            break;
        }
        if event.event_id <= next.version {
            counts.skipped += 1;
            continue;
        }
        if event.event_id > next.version + 1 {
            let (from, to) = (next.version + 1, event.event_id - 1);
            let missing = match read_range(table, &event.stream_id, from, to).await {
                Ok(missing) => missing,
                Err(e) => return (next, counts, Some((from, e, false))),
            };
            for m in &missing {
                if let Err(e) = projection.apply(&mut next.state, m) {
                    return (
                        next,
                        counts,
                        Some((m.event_id, apply_error(stream, m, e), true)),
                    );
                }
                next.version = m.event_id;
                counts.filled += 1;
            }
        }
        if let Err(e) = projection.apply(&mut next.state, event) {
            let error = apply_error(stream, event, e);
            return (next, counts, Some((event.event_id, error, true)));
        }
        next.version = event.event_id;
        counts.applied += 1;
    }
    (next, counts, None)
}

fn apply_error<E: std::error::Error + Send + Sync + 'static>(
    stream: &str,
    event: &RecordedEvent,
    error: E,
) -> DriveError {
    DriveError::Apply {
        stream: stream.to_owned(),
        event_id: event.event_id,
        source: Box::new(error),
    }
}

/// Events `from..=to` of `stream` from the table, checked to be exactly those.
async fn read_range(
    table: Option<&dyn EventStore>,
    stream: &StreamId,
    from: u64,
    to: u64,
) -> Result<Vec<RecordedEvent>, DriveError> {
    let name = || stream.as_str().to_owned();
    let Some(table) = table else {
        return Err(DriveError::NoTable {
            stream: name(),
            from,
            to,
        });
    };
    let request = ReadRequest {
        limit: usize::try_from(to - from + 1).ok(),
        ..ReadRequest::after(from - 1)
    };
    let events = table
        .read(stream, request)
        .await
        .map_err(|source| DriveError::Table {
            stream: name(),
            from,
            to,
            source,
        })?;
    for (expected, event) in (from..=to).zip(events.iter().map(Some).chain(std::iter::repeat(None)))
    {
        if event.map(|e| e.event_id) != Some(expected) {
            return Err(DriveError::Missing {
                stream: name(),
                missing: expected,
                to: to + 1,
            });
        }
    }
    Ok(events)
}
