//! The append algorithm, shared by every backend.

use async_trait::async_trait;

use crate::attr::Item;
use crate::item;
use crate::model::{
    AppendOutcome, ExpectedVersion, Head, NewEvent, ReadRequest, RecordedEvent, StreamId, Version,
};
use crate::store::EventStore;
use crate::{Error, Result};

/// What a backend's conditional write ([`Backend::write`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Every item was written.
    Done,
    /// A condition failed (or a concurrent transaction interfered): nothing
    /// was written. `foreign` is true when the backend saw that the item at
    /// `after + 1` exists with another event id, so this cannot be a retry of
    /// an append that committed.
    ConditionFailed {
        /// The item in the way is known not to be ours.
        foreign: bool,
    },
}

/// The primitive a backend provides; every backend gets [`EventStore`] from
/// it (a blanket implementation), through the one append algorithm of this
/// module: expected versions, conflicts, recognising retries and timestamps
/// are decided there, never by a backend.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Atomically: when `check_previous`, require the item `after` to exist
    /// with a `Timestamp` at most `timestamp_ms`; require none of `items` to
    /// exist; then write them all. `items` are consecutive events starting at
    /// `after + 1`. `check_previous` is false when `after` is 0 or when a
    /// strongly consistent read has just shown item `after` to be the last.
    async fn write(
        &self,
        stream: &StreamId,
        after: Version,
        timestamp_ms: i64,
        items: Vec<Item>,
        check_previous: bool,
    ) -> Result<Written>;

    /// Strongly consistent read.
    async fn read(&self, stream: &StreamId, request: ReadRequest) -> Result<Vec<RecordedEvent>>;

    /// Wall clock, epoch ms.
    fn now_ms(&self) -> i64;
}

/// How often one append re-reads and tries again before giving up: the
/// stream moved (only with `Any`), the clock was behind the stream's last
/// timestamp, or a concurrent transaction interfered.
const MAX_ROUNDS: usize = 8;

/// How many of a stream's last events an `Any` append searches for its own
/// events, to recognise a retry whose first attempt committed.
pub(crate) const ANY_RETRY_WINDOW: usize = 25;

/// A stream's last event as far as the append needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tip {
    pub(crate) version: Version,
    pub(crate) timestamp_ms: i64,
}

impl Tip {
    /// The tip a caller's head vouches for, when it is a head of `stream`.
    pub(crate) fn vouched(stream: &StreamId, head: &Head) -> Option<Tip> {
        (head.stream() == stream).then(|| Tip {
            version: head.version(),
            timestamp_ms: head.timestamp_ms(),
        })
    }
}

fn head_of(tail_newest_first: &[RecordedEvent]) -> Tip {
    tail_newest_first.first().map_or(
        Tip {
            version: 0,
            timestamp_ms: i64::MIN,
        },
        |e| Tip {
            version: e.event_id,
            timestamp_ms: e.timestamp_ms,
        },
    )
}

/// True when `stored` (oldest first) are exactly `events`, by event id.
fn same_events(stored: &[RecordedEvent], events: &[NewEvent]) -> bool {
    stored.len() == events.len() && stored.iter().zip(events).all(|(s, e)| s.id == Some(e.id))
}

fn already(stored: &[RecordedEvent]) -> Option<AppendOutcome> {
    Some(AppendOutcome {
        first: stored.first()?.event_id,
        version: stored.last()?.event_id,
        timestamp_ms: stored.last()?.timestamp_ms,
        already_appended: true,
    })
}

/// Appends with `expected`; `known` is the stream's last event as a strongly
/// consistent read has just shown it (then no condition item is needed).
pub(crate) async fn append(
    backend: &dyn Backend,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    known: Option<Tip>,
) -> Result<AppendOutcome> {
    if events.is_empty() {
        return Err(Error::EmptyAppend);
    }
    let n = events.len() as Version;
    // Refuse what can never fit before any call, whatever the version.
    // An append after an existing event carries one condition item, so it
    // holds one event fewer than an append that opens the stream.
    let condition_items = usize::from(matches!(expected, ExpectedVersion::Exact(v) if v > 0));
    if let ExpectedVersion::Exact(v) = expected {
        if v.checked_add(n).is_none_or(|last| last > i64::MAX as u64) {
            return Err(Error::VersionOutOfRange {
                expected: v,
                count: events.len(),
                max: i64::MAX as u64,
            });
        }
    }
    // Sized with a large EventId and the largest Timestamp, so nothing that
    // passes here is refused later for its size. Errors name an event by its
    // position in the append, never by this placeholder EventId.
    item::encode_batch(
        stream,
        i64::MAX as u64 / 2,
        i64::MAX,
        events,
        condition_items,
    )?;

    let mut head: Option<Tip> = known;
    if expected == ExpectedVersion::Any {
        // One read gives the head and tells whether this is a retry of an
        // append that committed (within the last ANY_RETRY_WINDOW events).
        let mut tail = backend
            .read(
                stream,
                ReadRequest::last(events.len().max(ANY_RETRY_WINDOW)),
            )
            .await?;
        let h = head_of(&tail);
        tail.reverse();
        if let Some(start) = tail.iter().position(|e| e.id == Some(events[0].id)) {
            let stored = &tail[start..tail.len().min(start + events.len())];
            if same_events(stored, events) {
                return already(stored).ok_or(Error::EmptyAppend);
            }
        }
        head = Some(h);
    }

    for round in 0..MAX_ROUNDS {
        if round > 0 {
            // Jittered, growing pause so that colliding writers spread out.
            let cap_ms = (2_u64 << round).min(100);
            tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=cap_ms))).await;
        }
        let after = match (expected.version(), head) {
            (Some(v), _) => v,
            (None, Some(h)) => h.version,
            (None, None) => 0,
        };
        // When a read has shown `after` to be the last event, it exists and
        // its timestamp is known: no condition on it is needed.
        let vouched = head.filter(|h| h.version == after);
        let check_previous = after > 0 && vouched.is_none();
        let floor = vouched.map_or(i64::MIN, |h| h.timestamp_ms);
        let timestamp_ms = backend.now_ms().max(floor);
        let items = item::encode_batch(
            stream,
            after,
            timestamp_ms,
            events,
            usize::from(check_previous),
        )?;
        let written = backend
            .write(stream, after, timestamp_ms, items, check_previous)
            .await?;
        if written == Written::Done {
            return Ok(AppendOutcome {
                first: after + 1,
                version: after + n,
                timestamp_ms,
                already_appended: false,
            });
        }
        // Something is in the way: find out what.
        let h = head_of(&backend.read(stream, ReadRequest::last(1)).await?);
        if h.version >= after + n && written != (Written::ConditionFailed { foreign: true }) {
            let stored = backend
                .read(
                    stream,
                    ReadRequest {
                        from: Some(after + 1),
                        limit: Some(events.len()),
                        ..ReadRequest::default()
                    },
                )
                .await?;
            if same_events(&stored, events) {
                return already(&stored).ok_or(Error::EmptyAppend);
            }
        }
        if expected != ExpectedVersion::Any && h.version != after {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: h.version,
            });
        }
        // Same version (the clock was behind the last event, or a concurrent
        // transaction interfered), or `Any` and the stream moved: try again.
        head = Some(h);
    }
    Err(Error::Contention {
        stream: stream.clone(),
        attempts: MAX_ROUNDS,
    })
}

#[async_trait]
impl<B: Backend> EventStore for B {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome> {
        append(self, stream, expected, events, None).await
    }

    async fn append_after(
        &self,
        stream: &StreamId,
        last: Head,
        events: &[NewEvent],
    ) -> Result<AppendOutcome> {
        let known = Tip::vouched(stream, &last);
        append(
            self,
            stream,
            ExpectedVersion::Exact(last.version()),
            events,
            known,
        )
        .await
    }

    async fn read(&self, stream: &StreamId, request: ReadRequest) -> Result<Vec<RecordedEvent>> {
        Backend::read(self, stream, request).await
    }
}
