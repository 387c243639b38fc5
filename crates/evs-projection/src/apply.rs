//! The one algorithm every driver uses: events onto a projection's rows,
//! each event exactly once, each stream in order, holes read from the table.
//!
//! Per batch: each stream's ledger is loaded (or taken from the cache); what
//! it covers is skipped; a stream whose events do not follow on from its
//! ledger is filled from the events table first, in bounded pages, each
//! committed as it is read. The rest is folded in the order given, in
//! *units* no larger than the store's commit limit: every row a unit's
//! events touch is read (or cached), folded once, and written with the
//! ledger of every stream whose events it holds, in one commit checked
//! against the revisions and versions the fold started from. A lost race
//! reloads what changed and folds again. An event the projection or the
//! store refuses parks its stream in the same commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use evs_core::{Backoff, EventStore, ReadRequest, RecordedEvent, StreamId};
// A fast hasher: every event's rows and stream are looked up several times
// per unit (the default SipHash was a tenth of a rebuild's time).
use foldhash::{HashMap, HashSet};

use crate::projection::{Ledger, Parked, Projection, RowKey};
use crate::store::{Commit, LedgerWrite, RowStore, RowWrite, StoreError, Stored, Unit};

/// Why a stream's events were not (all) applied. A refused event is not
/// this: it parks its stream ([`StreamReport::parked`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The store failed; what was not committed is not applied.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Events are missing before the ones delivered and there is no table to
    /// read them from.
    #[error("stream {stream:?}: events from {from} were not delivered and no events table is given to read them from")]
    NoTable {
        /// The stream.
        stream: String,
        /// The first missing event.
        from: u64,
    },
    /// Reading missing events from the table failed.
    #[error("stream {stream:?}: reading events from {from} from the events table: {source}")]
    Table {
        /// The stream.
        stream: String,
        /// The first missing event.
        from: u64,
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
    /// An event came that does not follow on from its stream's ledger
    /// (another driver moved the ledger while this batch was read): tried
    /// again, the hole is filled from the table.
    #[error("stream {stream:?}: event {got} does not follow on from the applied event {version}")]
    OutOfOrder {
        /// The stream.
        stream: String,
        /// Its ledger.
        version: u64,
        /// The event.
        got: u64,
    },
    /// Other drivers committed first too many times in a row.
    #[error("{conflicts} commits in a row lost to other drivers (rows or ledger changed under this one)")]
    Contended {
        /// How many.
        conflicts: u32,
    },
}

impl DriveError {
    /// Whether trying again later may succeed (the store or table was
    /// unreachable or throttled, or other drivers were busy on the rows).
    pub fn is_transient(&self) -> bool {
        match self {
            DriveError::Store(e) => e.is_transient(),
            DriveError::Table { source, .. } => source.is_transient(),
            DriveError::Contended { .. } | DriveError::OutOfOrder { .. } => true,
            DriveError::NoTable { .. } | DriveError::Missing { .. } => false,
        }
    }
}

/// How an [`Applier`] works.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Commits in a row one unit may lose to other drivers before its
    /// streams are reported as failed (transient).
    pub max_conflicts: u32,
    /// The wait after a lost commit (jittered, doubling).
    pub conflict_backoff: Backoff,
    /// Events folded into one commit at most (the store's item limit may
    /// cut a unit sooner).
    pub unit_events: usize,
    /// Events read from the table per page when filling a hole; each page
    /// is committed before the next is read.
    pub fill_page: usize,
    /// Rows and ledger entries kept in memory between batches, saving a
    /// load; past it the cache starts over.
    pub cache_items: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            max_conflicts: 16,
            conflict_backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_secs(1),
            },
            unit_events: 5_000,
            fill_page: 1_000,
            cache_items: 200_000,
        }
    }
}

/// What happened to one stream's events in a batch.
#[derive(Debug, Default)]
pub struct StreamReport {
    /// The stream.
    pub stream: String,
    /// Events of the batch applied and committed.
    pub applied: u64,
    /// Events read from the table (they were missing) and committed.
    pub filled: u64,
    /// Events skipped: already applied (a duplicate, or another driver's).
    pub skipped: u64,
    /// Events not applied because the stream is parked (held until it is
    /// resumed; nothing to retry).
    pub held: u64,
    /// The stream's ledger version after the batch, as far as this driver
    /// knows.
    pub version: u64,
    /// Set when this batch parked the stream: the refused event and why.
    pub parked: Option<Parked>,
    /// The first event not applied, and why, when the stream failed (every
    /// event of it before is committed, none after it).
    pub failed: Option<(u64, DriveError)>,
}

/// What happened to a batch, stream by stream (in stream-id order).
#[derive(Debug, Default)]
pub struct BatchReport {
    /// One report per stream of the batch.
    pub streams: Vec<StreamReport>,
    /// Commits made.
    pub commits: u64,
    /// Commits lost to other drivers (and retried).
    pub conflicts: u64,
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

    /// Events held by a parked stream.
    pub fn held(&self) -> u64 {
        self.streams.iter().map(|s| s.held).sum()
    }

    /// The streams this batch parked.
    pub fn parked(&self) -> impl Iterator<Item = (&str, &Parked)> {
        self.streams
            .iter()
            .filter_map(|s| s.parked.as_ref().map(|p| (s.stream.as_str(), p)))
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

/// The longest reason a parked stream keeps (bytes; cut at a character).
const MAX_REASON_BYTES: usize = 2_000;

/// An event and the rows it touches (or why they cannot be named).
type Keyed<'e> = (&'e RecordedEvent, Result<Vec<RowKey>, String>);

/// Applies events to a projection through its [`RowStore`], exactly once
/// per event, each stream in order (see the module docs). Events may come
/// repeated, out of order within their stream or with holes.
pub struct Applier<P: Projection, St> {
    projection: P,
    store: St,
    table: Option<Arc<dyn EventStore>>,
    options: ApplyOptions,
    rows: HashMap<RowKey, Stored<P::Row>>,
    ledger: HashMap<String, Ledger>,
    clock: evs_core::Clock,
}

/// Per-stream counts of one fold.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    applied: u64,
    skipped: u64,
    held: u64,
}

/// What a fold produced: the unit to commit and the counts it stands for.
struct Folded<R> {
    unit: Unit<R>,
    counts: HashMap<String, Counts>,
    /// Newly parked streams.
    parked: Vec<(String, Parked)>,
    /// Streams whose next event in the unit does not follow on from their
    /// ledger: (stream, ledger, event).
    stuck: Vec<(String, u64, u64)>,
}

/// Why a unit was not committed.
enum UnitError {
    /// Past the store's limit: a smaller unit may pass.
    TooLarge(StoreError),
    /// Failed: the unit's streams are failed from their first event in it
    /// past their ledger (as it was before the attempt).
    Failed(DriveError, HashMap<String, u64>),
}

impl<P: Projection, St: RowStore<P::Row>> Applier<P, St> {
    /// An applier without an events table: a hole in a stream's events is
    /// then a failure of that stream ([`DriveError::NoTable`]).
    pub fn new(projection: P, store: St) -> Self {
        Self {
            projection,
            store,
            table: None,
            options: ApplyOptions::default(),
            rows: HashMap::default(),
            ledger: HashMap::default(),
            clock: evs_core::system_clock(),
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

    /// The clock a parked stream's time is read from.
    pub fn with_clock(mut self, clock: evs_core::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// The events table, when given.
    pub fn table(&self) -> Option<&Arc<dyn EventStore>> {
        self.table.as_ref()
    }

    /// Forgets what it knows of committed rows and ledger, as a restarted
    /// driver would: the next batch loads from the store.
    pub fn forget(&mut self) {
        self.rows.clear();
        self.ledger.clear();
    }

    /// Applies `events` (any streams, each stream's in ascending order or
    /// not, repeated or not): per stream, what its ledger covers is skipped,
    /// holes are filled from the table, the rest folded in the order given
    /// and committed in units. A stream that fails keeps everything before
    /// its first failed event committed; a stream whose event is refused is
    /// parked there.
    pub async fn apply_batch(&mut self, events: &[RecordedEvent]) -> BatchReport {
        if self.rows.len() + self.ledger.len() > self.options.cache_items {
            self.forget();
        }
        let mut report = Reports::default();
        let ordered = in_stream_order(events);
        let streams: Vec<String> = ordered
            .iter()
            .map(|e| e.stream_id.as_str().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for stream in &streams {
            report.get(stream);
        }
        if let Err(e) = self.load_ledger(&streams).await {
            let first = first_ids(&ordered);
            for stream in &streams {
                let id = first.get(stream.as_str()).copied().unwrap_or(1);
                report.fail(stream, id, DriveError::Store(clone_store_error(&e)));
            }
            return report.finish();
        }
        // Holes: a stream whose events do not follow on from its ledger (or
        // from each other) is filled from the table up to its last event.
        let mut fill_to: BTreeMap<String, u64> = BTreeMap::new();
        let mut expect: HashMap<&str, u64> = HashMap::default();
        for event in &ordered {
            let stream = event.stream_id.as_str();
            let next = expect
                .entry(stream)
                .or_insert_with(|| self.version_of(stream) + 1);
            if event.event_id >= *next {
                if event.event_id > *next {
                    fill_to.insert(stream.to_owned(), 0);
                }
                *next = event.event_id + 1;
            }
        }
        for (stream, to) in fill_to.iter_mut() {
            *to = expect.get(stream.as_str()).map_or(0, |n| n - 1);
        }
        for (stream, to) in &fill_to {
            if self.parked(stream) {
                report.get(stream).held += 1;
                continue;
            }
            // every event of the stream in the batch is at or below `to`
            self.fill(stream, Some(*to), &mut report).await;
        }
        let rest: Vec<&RecordedEvent> = ordered
            .into_iter()
            .filter(|e| !fill_to.contains_key(e.stream_id.as_str()))
            .collect();
        self.run(&rest, false, &mut report).await;
        for stream in &streams {
            let version = self.version_of(stream);
            report.get(stream).version = version;
        }
        report.finish()
    }

    /// Applies `streams`' events from the table, from each one's ledger to
    /// the table's end, in pages (a stream whose last events were never
    /// delivered, as the reconciler finds them). Parked streams are left
    /// as they are.
    pub async fn catch_up(&mut self, streams: &[String]) -> BatchReport {
        let mut report = Reports::default();
        for stream in streams {
            report.get(stream);
        }
        // fresh ledger entries: another driver may have moved them
        for stream in streams {
            self.ledger.remove(stream);
        }
        if let Err(e) = self.load_ledger(streams).await {
            for stream in streams {
                report.fail(stream, 1, DriveError::Store(clone_store_error(&e)));
            }
            return report.finish();
        }
        for stream in streams {
            if !self.parked(stream) {
                self.fill(stream, None, &mut report).await;
            }
            let version = self.version_of(stream);
            report.get(stream).version = version;
        }
        report.finish()
    }

    /// Resumes a stream (after its projection or data was fixed): clears its
    /// park, if it is parked, and applies its events from the table to its
    /// end, the refused one first. A stream that is not parked is caught up
    /// all the same, so that a resume whose catch-up failed (its park
    /// already cleared) can simply be run again. Returns whether the stream
    /// was parked, and what the catch-up did.
    pub async fn resume(&mut self, stream: &str) -> Result<(bool, BatchReport), DriveError> {
        self.ledger.remove(stream);
        let owned = [stream.to_owned()];
        self.load_ledger(&owned).await?;
        let ledger = self.ledger.get(stream).cloned().unwrap_or_default();
        let was_parked = ledger.parked.is_some();
        if was_parked {
            let unit: Unit<P::Row> = Unit {
                rows: Vec::new(),
                ledger: vec![LedgerWrite {
                    stream: stream.to_owned(),
                    expected: ledger.version,
                    ledger: Ledger {
                        version: ledger.version,
                        parked: None,
                    },
                }],
            };
            match self.store.commit(&unit).await {
                Ok(Commit::Done) => {}
                Ok(Commit::Conflict) => {
                    self.ledger.remove(stream);
                    return Err(DriveError::Contended { conflicts: 1 });
                }
                Err(e) => {
                    self.ledger.remove(stream);
                    return Err(e.into());
                }
            }
        }
        Ok((was_parked, self.catch_up(&owned).await))
    }

    fn version_of(&self, stream: &str) -> u64 {
        self.ledger.get(stream).map_or(0, |l| l.version)
    }

    fn parked(&self, stream: &str) -> bool {
        self.ledger.get(stream).is_some_and(|l| l.parked.is_some())
    }

    /// Loads the ledger of the streams not cached, and again of the parked
    /// ones (an operator may have resumed them).
    async fn load_ledger(&mut self, streams: &[String]) -> Result<(), StoreError> {
        let missing: Vec<String> = streams
            .iter()
            .filter(|s| {
                self.ledger
                    .get(s.as_str())
                    .is_none_or(|l| l.parked.is_some())
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let loaded = self.store.load_ledger(&missing).await?;
        for (stream, ledger) in missing.into_iter().zip(loaded) {
            self.ledger.insert(stream, ledger);
        }
        Ok(())
    }

    /// Fills `stream` from the table, from its ledger up to `to` (`None`: the
    /// table's end), a page at a time, each committed before the next read.
    async fn fill(&mut self, stream: &str, to: Option<u64>, report: &mut Reports) {
        let page = self.options.fill_page.max(1) as u64;
        loop {
            if self.parked(stream) {
                return;
            }
            let from = self.version_of(stream) + 1;
            let page_to = match to {
                Some(to) if from > to => return,
                Some(to) => to.min(from + page - 1),
                None => from + page - 1,
            };
            let events = match self.read_range(stream, from, page_to, to.is_some()).await {
                Ok(events) => events,
                Err(e) => {
                    report.fail(stream, from, e);
                    return;
                }
            };
            let done = (events.len() as u64) < page_to - from + 1;
            let refs: Vec<&RecordedEvent> = events.iter().collect();
            self.run(&refs, true, report).await;
            if report.get(stream).failed.is_some() || done || events.is_empty() {
                return;
            }
        }
    }

    /// Events `from..=to` of `stream` from the table; `exact`: all of them
    /// must be there (a later event was delivered), else what there is.
    async fn read_range(
        &self,
        stream: &str,
        from: u64,
        to: u64,
        exact: bool,
    ) -> Result<Vec<RecordedEvent>, DriveError> {
        let name = || stream.to_owned();
        let Some(table) = self.table.as_deref() else {
            return Err(DriveError::NoTable {
                stream: name(),
                from,
            });
        };
        let id = StreamId::new(stream).map_err(|source| DriveError::Table {
            stream: name(),
            from,
            source,
        })?;
        let request = ReadRequest {
            limit: usize::try_from(to - from + 1).ok(),
            ..ReadRequest::after(from - 1)
        };
        let events = table
            .read(&id, request)
            .await
            .map_err(|source| DriveError::Table {
                stream: name(),
                from,
                source,
            })?;
        for (expected, event) in (from..).zip(&events) {
            if event.event_id != expected {
                return Err(DriveError::Missing {
                    stream: name(),
                    missing: expected,
                    to: to + 1,
                });
            }
        }
        let got = from + events.len() as u64;
        if exact && got <= to {
            return Err(DriveError::Missing {
                stream: name(),
                missing: got,
                to: to + 1,
            });
        }
        Ok(events)
    }

    /// Folds and commits `events` (each stream's in order, following on
    /// from its ledger) in units; stops at the first unit that fails,
    /// failing its streams and every later event's stream from there.
    async fn run(&mut self, events: &[&RecordedEvent], filled: bool, report: &mut Reports) {
        let keyed: Vec<Keyed<'_>> = events
            .iter()
            .filter(|e| !report.failed(e))
            .map(|e| (*e, self.projection.keys(e).map_err(|err| err.to_string())))
            .collect();
        let max_items = self.store.max_items().max(2);
        let max_events = self.options.unit_events.max(1);
        let mut start = 0;
        while start < keyed.len() {
            let end = unit_end(&keyed[start..], max_items, max_events) + start;
            let mut stack = vec![(start, end)];
            while let Some((from, to)) = stack.pop() {
                match self
                    .commit_unit(&keyed[from..to], max_items, report, filled)
                    .await
                {
                    Ok(()) => {}
                    Err(UnitError::TooLarge(_)) if to - from > 1 => {
                        let mid = from + (to - from) / 2;
                        stack.push((mid, to));
                        stack.push((from, mid));
                    }
                    Err(UnitError::TooLarge(e)) => {
                        // one event's rows alone are past one commit
                        self.park_alone(keyed[from].0, &e.to_string(), report).await;
                    }
                    Err(UnitError::Failed(e, mut versions)) => {
                        for (event, _) in &keyed[from..] {
                            let stream = event.stream_id.as_str();
                            if !versions.contains_key(stream) {
                                versions.insert(stream.to_owned(), self.version_of(stream));
                            }
                        }
                        report.fail_from(&keyed[from..], e, &versions);
                        return;
                    }
                }
            }
            start = end;
        }
    }

    /// Parks the stream of `event` with nothing else in the commit (its
    /// event cannot be committed by any unit).
    async fn park_alone(&mut self, event: &RecordedEvent, reason: &str, report: &mut Reports) {
        let stream = event.stream_id.as_str();
        let version = self.version_of(stream);
        if event.event_id != version + 1 {
            return;
        }
        let parked = self.parked_for(event, reason.to_owned());
        let unit: Unit<P::Row> = Unit {
            rows: Vec::new(),
            ledger: vec![LedgerWrite {
                stream: stream.to_owned(),
                expected: version,
                ledger: Ledger {
                    version,
                    parked: Some(parked.clone()),
                },
            }],
        };
        match self.store.commit(&unit).await {
            Ok(Commit::Done) => {
                self.ledger.insert(
                    stream.to_owned(),
                    Ledger {
                        version,
                        parked: Some(parked.clone()),
                    },
                );
                report.commits += 1;
                let r = report.get(stream);
                r.parked = Some(parked);
            }
            Ok(Commit::Conflict) => {
                self.ledger.remove(stream);
                report.fail(
                    stream,
                    event.event_id,
                    DriveError::Contended { conflicts: 1 },
                );
            }
            Err(e) => {
                self.ledger.remove(stream);
                report.fail(stream, event.event_id, e.into());
            }
        }
    }

    fn parked_for(&self, event: &RecordedEvent, reason: String) -> Parked {
        // kept short: it is stored in the ledger entry
        let mut reason = reason;
        if reason.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        Parked {
            event_id: event.event_id,
            event_name: event.name.clone(),
            reason,
            at_ms: (self.clock)(),
        }
    }

    /// Folds and commits one unit, retrying lost races.
    async fn commit_unit(
        &mut self,
        unit: &[Keyed<'_>],
        max_items: usize,
        report: &mut Reports,
        filled: bool,
    ) -> Result<(), UnitError> {
        let mut conflicts = 0u32;
        let mut refused: HashMap<String, (u64, String)> = HashMap::default();
        // rows the store refused in a way its row check cannot foresee
        let mut unstorable: HashSet<RowKey> = HashSet::default();
        let mut check_each = false;
        loop {
            if let Err(e) = self.load_unit(unit).await {
                return Err(UnitError::Failed(e, HashMap::default()));
            }
            let folded = match self.fold(unit, &mut refused, &unstorable, check_each) {
                Ok(folded) => folded,
                Err(()) => {
                    check_each = true;
                    continue;
                }
            };
            for (stream, version, got) in &folded.stuck {
                let error = DriveError::OutOfOrder {
                    stream: stream.clone(),
                    version: *version,
                    got: *got,
                };
                report.fail(stream, *got, error);
            }
            if folded.unit.items() == 0 {
                report.add(&folded.counts, filled);
                return Ok(());
            }
            if folded.unit.items() > max_items {
                return Err(UnitError::TooLarge(StoreError::UnitTooLarge {
                    items: folded.unit.items(),
                    reason: format!("at most {max_items} items"),
                }));
            }
            match self.store.commit(&folded.unit).await {
                Ok(Commit::Done) => {
                    report.commits += 1;
                    self.committed(folded.unit);
                    report.add(&folded.counts, filled);
                    for (stream, parked) in folded.parked {
                        report.get(&stream).parked = Some(parked);
                    }
                    return Ok(());
                }
                Ok(Commit::Conflict) => {
                    conflicts += 1;
                    report.conflicts += 1;
                    // what was refused was refused on rows that changed:
                    // fold again from what is stored now
                    refused.clear();
                    check_each = false;
                    let versions = self.versions_of(&folded.unit);
                    self.invalidate(&folded.unit);
                    if conflicts > self.options.max_conflicts {
                        let error = DriveError::Contended { conflicts };
                        return Err(UnitError::Failed(error, versions));
                    }
                    let wait = self.options.conflict_backoff.delay(conflicts);
                    tokio::time::sleep(wait).await;
                }
                Err(e @ StoreError::UnitTooLarge { .. }) => return Err(UnitError::TooLarge(e)),
                Err(StoreError::Row { .. }) if !check_each => check_each = true,
                Err(StoreError::Row { key, reason }) => {
                    // refused although every row passed the row check (the
                    // layout's rules, or the ledger item beside it): the
                    // first event that writes the row is refused, parking
                    // its stream; a row that cannot be named fails the unit
                    let first = unit.iter().find(|(event, keys)| {
                        let stream = event.stream_id.as_str();
                        keys.as_ref().is_ok_and(|k| k.contains(&key))
                            && event.event_id > self.version_of(stream)
                            && !refused.contains_key(stream)
                    });
                    let Some((event, _)) = first else {
                        let versions = self.versions_of(&folded.unit);
                        self.invalidate(&folded.unit);
                        let error = StoreError::Row { key, reason };
                        return Err(UnitError::Failed(error.into(), versions));
                    };
                    let reason = format!("row {key} cannot be stored: {reason}");
                    refused.insert(
                        event.stream_id.as_str().to_owned(),
                        (event.event_id, reason),
                    );
                    unstorable.insert(key);
                }
                Err(e) => {
                    let versions = self.versions_of(&folded.unit);
                    self.invalidate(&folded.unit);
                    return Err(UnitError::Failed(e.into(), versions));
                }
            }
        }
    }

    /// Loads what the unit needs and the cache lacks: ledger entries and rows.
    async fn load_unit(&mut self, unit: &[Keyed<'_>]) -> Result<(), DriveError> {
        let mut streams: Vec<String> = Vec::new();
        let mut keys: Vec<RowKey> = Vec::new();
        let mut seen_keys: HashSet<&RowKey> = HashSet::default();
        let mut seen_streams: HashSet<&str> = HashSet::default();
        for (event, rows) in unit {
            let stream = event.stream_id.as_str();
            if seen_streams.insert(stream) && !self.ledger.contains_key(stream) {
                streams.push(stream.to_owned());
            }
            for key in rows.iter().flatten() {
                if seen_keys.insert(key) && !self.rows.contains_key(key) {
                    keys.push(key.clone());
                }
            }
        }
        if !streams.is_empty() {
            let loaded = self.store.load_ledger(&streams).await?;
            self.ledger.extend(streams.into_iter().zip(loaded));
        }
        if !keys.is_empty() {
            let loaded = self.store.load_rows(&keys).await?;
            self.rows.extend(keys.into_iter().zip(loaded));
        }
        Ok(())
    }

    /// Folds the unit's events onto the cached rows and ledger. A refused
    /// event (by the projection, or by the store's row check when
    /// `check_each`) is added to `refused` and the fold starts over without
    /// it and its stream's later events; `Err(())` when a row the store would
    /// refuse is found without `check_each` (fold again with it).
    fn fold(
        &self,
        unit: &[Keyed<'_>],
        refused: &mut HashMap<String, (u64, String)>,
        unstorable: &HashSet<RowKey>,
        check_each: bool,
    ) -> Result<Folded<P::Row>, ()> {
        'again: loop {
            let mut rows: HashMap<&RowKey, Option<P::Row>> = HashMap::default();
            let mut versions: HashMap<&str, u64> = HashMap::default();
            let mut counts: HashMap<&str, Counts> = HashMap::default();
            let mut stuck: Vec<(String, u64, u64)> = Vec::new();
            for (event, keys) in unit {
                let stream = event.stream_id.as_str();
                let ledger = self.ledger.get(stream);
                let count = counts.entry(stream).or_default();
                if ledger.is_some_and(|l| l.parked.is_some()) {
                    count.held += 1;
                    continue;
                }
                let version = versions
                    .entry(stream)
                    .or_insert_with(|| ledger.map_or(0, |l| l.version));
                if event.event_id <= *version {
                    count.skipped += 1;
                    continue;
                }
                if let Some((at, _)) = refused.get(stream) {
                    if event.event_id >= *at {
                        count.held += 1;
                        continue;
                    }
                }
                if event.event_id != *version + 1 {
                    // the stream's later events wait: reported as failed
                    if !stuck.iter().any(|(s, _, _)| s == stream) {
                        stuck.push((stream.to_owned(), *version, event.event_id));
                    }
                    continue;
                }
                let keys = match keys {
                    Ok(keys) => keys,
                    Err(reason) => {
                        refused.insert(stream.to_owned(), (event.event_id, reason.clone()));
                        continue 'again;
                    }
                };
                for key in keys {
                    let row = rows
                        .entry(key)
                        .or_insert_with(|| self.rows.get(key).and_then(|s| s.row.clone()));
                    let outcome = self
                        .projection
                        .apply(event, key, row)
                        .map_err(|e| e.to_string())
                        .and_then(|()| match (check_each, row.as_ref()) {
                            (true, Some(r)) => {
                                self.store.check_row(key, r).map_err(|e| e.to_string())
                            }
                            _ => Ok(()),
                        });
                    if let Err(reason) = outcome {
                        refused.insert(stream.to_owned(), (event.event_id, reason));
                        continue 'again;
                    }
                }
                *version = event.event_id;
                count.applied += 1;
            }
            if !check_each {
                for (key, row) in &rows {
                    if let Some(row) = row {
                        if self.store.check_row(key, row).is_err() {
                            return Err(());
                        }
                    }
                }
            }
            let mut folded = self.unit_of(rows, versions, counts, refused, unstorable, unit);
            folded.stuck = stuck;
            return Ok(folded);
        }
    }

    /// The unit of a fold: its rows and the ledger entries that moved.
    fn unit_of(
        &self,
        rows: HashMap<&RowKey, Option<P::Row>>,
        versions: HashMap<&str, u64>,
        counts: HashMap<&str, Counts>,
        refused: &HashMap<String, (u64, String)>,
        unstorable: &HashSet<RowKey>,
        unit: &[Keyed<'_>],
    ) -> Folded<P::Row> {
        let mut rows = rows;
        // A refusal may depend on the rows the refused event saw: they go
        // into the unit too (unchanged), so that the commit checks that
        // they are still what the fold read; a stale copy is a conflict, not
        // a stream parked for nothing.
        for (stream, (at, _)) in refused {
            let keys = unit.iter().find_map(|(e, keys)| {
                (e.stream_id.as_str() == stream && e.event_id == *at).then_some(keys)
            });
            for key in keys.into_iter().flatten().flatten() {
                if unstorable.contains(key) {
                    continue;
                }
                rows.entry(key)
                    .or_insert_with(|| self.rows.get(key).and_then(|s| s.row.clone()));
            }
        }
        let mut out = Unit::default();
        for (key, row) in rows {
            let expected = self.rows.get(key).map_or(0, |s| s.revision);
            out.rows.push(RowWrite {
                key: key.clone(),
                expected,
                row,
            });
        }
        // in key order: the same unit is the same request
        out.rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut parked = Vec::new();
        let mut streams: Vec<&str> = versions.keys().copied().collect();
        for stream in refused.keys() {
            if !versions.contains_key(stream.as_str()) {
                streams.push(stream);
            }
        }
        streams.sort_unstable();
        for stream in streams {
            let old = self.version_of(stream);
            let version = versions.get(stream).copied().unwrap_or(old);
            let park = refused.get(stream).filter(|(at, _)| *at == version + 1);
            let park = park.and_then(|(at, reason)| {
                unit.iter()
                    .find(|(e, _)| e.stream_id.as_str() == stream && e.event_id == *at)
                    .map(|(e, _)| self.parked_for(e, reason.clone()))
            });
            if version == old && park.is_none() {
                continue;
            }
            if let Some(p) = &park {
                parked.push((stream.to_owned(), p.clone()));
            }
            out.ledger.push(LedgerWrite {
                stream: stream.to_owned(),
                expected: old,
                ledger: Ledger {
                    version,
                    parked: park,
                },
            });
        }
        Folded {
            unit: out,
            counts: counts.into_iter().map(|(s, c)| (s.to_owned(), c)).collect(),
            parked,
            stuck: Vec::new(),
        }
    }

    /// Takes a committed unit into the cache.
    fn committed(&mut self, unit: Unit<P::Row>) {
        let revisions: Vec<u64> = unit
            .rows
            .iter()
            .map(|write| self.store.revision_after(write, &unit))
            .collect();
        for (write, revision) in unit.rows.into_iter().zip(revisions) {
            let stored = Stored {
                revision,
                row: write.row,
            };
            self.rows.insert(write.key, stored);
        }
        for write in unit.ledger {
            self.ledger.insert(write.stream, write.ledger);
        }
    }

    /// The cached versions of the unit's streams.
    fn versions_of(&self, unit: &Unit<P::Row>) -> HashMap<String, u64> {
        unit.ledger
            .iter()
            .map(|w| (w.stream.clone(), self.version_of(&w.stream)))
            .collect()
    }

    /// Drops the unit's rows and streams from the cache (they changed, or
    /// may have).
    fn invalidate(&mut self, unit: &Unit<P::Row>) {
        for write in &unit.rows {
            self.rows.remove(&write.key);
        }
        for write in &unit.ledger {
            self.ledger.remove(&write.stream);
        }
    }
}

/// The end (exclusive) of the unit starting at `keyed[0]`: as many events as
/// fit `max_events` and, counting each distinct row and stream once,
/// `max_items` (at least one event).
fn unit_end(keyed: &[Keyed<'_>], max_items: usize, max_events: usize) -> usize {
    let mut rows: HashSet<&RowKey> = HashSet::default();
    let mut streams: HashSet<&str> = HashSet::default();
    for (i, (event, keys)) in keyed.iter().enumerate() {
        if i >= max_events {
            return i;
        }
        let new_stream = usize::from(!streams.contains(event.stream_id.as_str()));
        let new_rows = keys
            .iter()
            .flatten()
            .filter(|k| !rows.contains(k))
            .collect::<HashSet<_>>()
            .len();
        if i > 0 && rows.len() + streams.len() + new_stream + new_rows > max_items {
            return i;
        }
        streams.insert(event.stream_id.as_str());
        rows.extend(keys.iter().flatten());
    }
    keyed.len()
}

/// The events with each stream's events in ascending order and without
/// repeats, in the order given otherwise: a stream's events fill the
/// positions its events had, smallest first.
fn in_stream_order(events: &[RecordedEvent]) -> Vec<&RecordedEvent> {
    let mut by_stream: HashMap<&str, Vec<usize>> = HashMap::default();
    for (i, event) in events.iter().enumerate() {
        by_stream
            .entry(event.stream_id.as_str())
            .or_default()
            .push(i);
    }
    let mut slots: Vec<(usize, &RecordedEvent)> = Vec::with_capacity(events.len());
    for positions in by_stream.values() {
        let mut sorted: Vec<&RecordedEvent> =
            positions.iter().filter_map(|&i| events.get(i)).collect();
        sorted.sort_by_key(|e| e.event_id);
        sorted.dedup_by_key(|e| e.event_id);
        slots.extend(positions.iter().copied().zip(sorted));
    }
    slots.sort_unstable_by_key(|(slot, _)| *slot);
    slots.into_iter().map(|(_, e)| e).collect()
}

fn first_ids<'e>(events: &[&'e RecordedEvent]) -> HashMap<&'e str, u64> {
    let mut first = HashMap::default();
    for event in events {
        first
            .entry(event.stream_id.as_str())
            .or_insert(event.event_id);
    }
    first
}

/// A store error for each of several streams (the error is not `Clone`):
/// same wording and transience.
fn clone_store_error(e: &StoreError) -> StoreError {
    StoreError::Backend {
        message: e.to_string(),
        transient: e.is_transient(),
        source: None,
    }
}

/// The reports of a batch being built: one per stream, found by name.
#[derive(Default)]
struct Reports {
    list: Vec<StreamReport>,
    index: HashMap<String, usize>,
    commits: u64,
    conflicts: u64,
}

impl Reports {
    fn get(&mut self, stream: &str) -> &mut StreamReport {
        let at = match self.index.get(stream) {
            Some(&at) => at,
            None => {
                self.list.push(StreamReport {
                    stream: stream.to_owned(),
                    ..StreamReport::default()
                });
                self.index.insert(stream.to_owned(), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[at]
    }

    fn find(&self, stream: &str) -> Option<&StreamReport> {
        self.index.get(stream).and_then(|&at| self.list.get(at))
    }

    /// Whether `event`'s stream failed at or before it.
    fn failed(&self, event: &RecordedEvent) -> bool {
        self.find(event.stream_id.as_str())
            .and_then(|r| r.failed.as_ref())
            .is_some_and(|(id, _)| event.event_id >= *id)
    }

    fn fail(&mut self, stream: &str, event_id: u64, error: DriveError) {
        let report = self.get(stream);
        if report.failed.is_none() {
            report.failed = Some((event_id, error));
        }
    }

    /// Fails every stream of `events` from its first event there past its
    /// version in `versions` (what was committed before).
    fn fail_from(
        &mut self,
        events: &[Keyed<'_>],
        error: DriveError,
        versions: &HashMap<String, u64>,
    ) {
        let mut first: Vec<(&str, u64)> = Vec::new();
        let mut seen = HashSet::default();
        for (event, _) in events {
            let stream = event.stream_id.as_str();
            let version = versions.get(stream).copied().unwrap_or(0);
            if event.event_id > version && seen.insert(stream) {
                first.push((stream, event.event_id));
            }
        }
        let transient = error.is_transient();
        let message = error.to_string();
        let mut error = Some(error);
        for (stream, id) in first {
            let e = error.take().unwrap_or_else(|| {
                DriveError::Store(StoreError::Backend {
                    message: message.clone(),
                    transient,
                    source: None,
                })
            });
            self.fail(stream, id, e);
        }
    }

    fn add(&mut self, counts: &HashMap<String, Counts>, filled: bool) {
        for (stream, c) in counts {
            let report = self.get(stream);
            if filled {
                report.filled += c.applied;
            } else {
                report.applied += c.applied;
            }
            report.skipped += c.skipped;
            report.held += c.held;
        }
    }

    fn finish(self) -> BatchReport {
        let mut streams = self.list;
        streams.sort_unstable_by(|a, b| a.stream.cmp(&b.stream));
        BatchReport {
            streams,
            commits: self.commits,
            conflicts: self.conflicts,
        }
    }
}
