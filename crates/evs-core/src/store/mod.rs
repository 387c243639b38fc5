//! The [`EventStore`] trait and its backends.
//!
//! Backends implement one small primitive, [`Backend`] (an atomic
//! conditional write and a read); the append algorithm on top of it
//! (expected versions, conflict resolution, idempotent retries, timestamps)
//! lives once, in `write`, so every backend behaves the same. This crate has
//! the memory backend; the DynamoDB backend is the crate `evs-dynamodb`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{
    AppendOutcome, ExpectedVersion, Head, NewEvent, ReadRequest, RecordedEvent, StreamId, Version,
};
use crate::Result;

pub mod memory;
mod write;

pub use write::{Backend, Written};

/// A source of wall-clock time in epoch milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(now_ms)
}

/// The system's wall clock in epoch milliseconds (0 before 1970): the one
/// clock of the workspace, as a plain function.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An event store: streams of events with optimistic concurrency.
///
/// Rules every implementation keeps:
/// * a conflicting append writes nothing and returns
///   [`Error::Conflict`](crate::Error::Conflict) with the actual version;
/// * `EventId`s are contiguous from 1: an append after a version that does
///   not exist is a conflict, never a gap;
/// * an append of several events is atomic;
/// * an append whose events are already stored at the expected position
///   (same event ids: a retry) succeeds with `already_appended` set;
/// * `Timestamp`s never decrease within a stream;
/// * reads are strongly consistent.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug {
    /// Appends `events` to `stream` if it is at `expected`.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome>;

    /// Appends `events` right after `last`, the stream's last event as a
    /// strongly consistent read of this store has just shown it. The same as
    /// `append(stream, ExpectedVersion::Exact(last.version()), events)`, but a
    /// backend may save work: the read already proved that event exists and
    /// gave its timestamp (DynamoDB: one conditional `PutItem` instead of a
    /// transaction). Pass only heads read from this store.
    async fn append_after(
        &self,
        stream: &StreamId,
        last: Head,
        events: &[NewEvent],
    ) -> Result<AppendOutcome> {
        self.append(stream, ExpectedVersion::Exact(last.version()), events)
            .await
    }

    /// Reads events of `stream` (an empty list when the stream does not exist).
    async fn read(&self, stream: &StreamId, request: ReadRequest) -> Result<Vec<RecordedEvent>>;
}

/// Conveniences for every [`EventStore`].
#[async_trait]
pub trait EventStoreExt: EventStore {
    /// The stream's current version (0 when it does not exist).
    async fn version(&self, stream: &StreamId) -> Result<Version> {
        Ok(self
            .read(stream, ReadRequest::last(1))
            .await?
            .first()
            .map_or(0, |e| e.event_id))
    }

    /// The whole stream, oldest first.
    async fn read_all(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>> {
        self.read(stream, ReadRequest::all()).await
    }
}

impl<T: EventStore + ?Sized> EventStoreExt for T {}
