//! The decide loop: the one way application code writes.
//!
//! Load the stream and fold it into state, run the caller's decision (a pure
//! function of the state that returns events or refuses), append with the
//! loaded version, and on a conflict catch up on the new events and decide
//! again, a bounded number of times with jittered exponential backoff. A
//! refusal ([`DecideError::Rejected`]), running out of attempts
//! ([`DecideError::Exhausted`]) and a store failure ([`DecideError::Store`])
//! are different outcomes.
//!
//! ```
//! # tokio_test_block_on(async {
//! use evs_core::{decide, Aggregate, MemoryStore, NewEvent, RetryPolicy, StreamId};
//! use serde_json::json;
//!
//! let store = MemoryStore::new();
//! let stream = StreamId::new("counter-1")?;
//! let mut counter = Aggregate::new(0_u64);
//! let done = decide(
//!     &store,
//!     &stream,
//!     &mut counter,
//!     |n: &mut u64, _event| *n += 1,
//!     |n: &u64| -> Result<_, String> {
//!         if *n >= 10 { return Err("counter is full".into()); }
//!         Ok(vec![NewEvent::new("Incremented", json!({ "value": n + 1 }))])
//!     },
//!     &RetryPolicy::default(),
//! )
//! .await?;
//! assert_eq!(done.outcome.map(|o| o.version), Some(1));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::time::Duration;

use crate::model::{
    AppendOutcome, ExpectedVersion, Head, NewEvent, ReadRequest, RecordedEvent, StreamId, Version,
};
use crate::store::EventStore;
use crate::Error;

/// How often and how patiently [`decide`] retries after conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts (decisions appended), at least 1.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter backoff before attempt `attempt` (2, 3, …): a random
    /// duration up to `min(max_delay, base_delay * 2^(attempt - 2))`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(2).min(20);
        let cap = self.base_delay.saturating_mul(1 << exp).min(self.max_delay);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// A stream folded into state, with the version it reflects. Keep one across
/// calls to [`decide`] to read only the events appended since.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Aggregate<S> {
    /// The folded state.
    pub state: S,
    /// The `EventId` of the last event folded in (0: none).
    pub version: Version,
    /// The last event folded in, when this aggregate read it itself.
    head: Option<Head>,
}

impl<S> Aggregate<S> {
    /// An aggregate with the initial state of an empty stream.
    pub fn new(state: S) -> Self {
        Self {
            state,
            version: 0,
            head: None,
        }
    }

    /// Reads the events after `version` and folds them in. Returns how many.
    pub async fn catch_up<St, F>(
        &mut self,
        store: &St,
        stream: &StreamId,
        fold: F,
    ) -> Result<usize, Error>
    where
        St: EventStore + ?Sized,
        F: Fn(&mut S, &RecordedEvent),
    {
        let events = store.read(stream, ReadRequest::after(self.version)).await?;
        for e in &events {
            fold(&mut self.state, e);
            self.version = e.event_id;
            self.head = Some(Head::of(e));
        }
        Ok(events.len())
    }
}

/// What a successful [`decide`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// The append, or `None` when the decision produced no events.
    pub outcome: Option<AppendOutcome>,
    /// Decisions taken (1 when there was no conflict).
    pub attempts: u32,
}

/// Why [`decide`] did not append.
#[derive(Debug, thiserror::Error)]
pub enum DecideError<E> {
    /// The decision refused the command (a domain error).
    #[error("the command was refused: {0}")]
    Rejected(E),
    /// Every attempt conflicted with a concurrent writer.
    #[error("gave up after {attempts} attempts on stream {stream}: {last}")]
    Exhausted {
        /// The stream.
        stream: StreamId,
        /// Attempts made.
        attempts: u32,
        /// The last conflict.
        last: Box<Error>,
    },
    /// The store failed (anything but a conflict).
    #[error(transparent)]
    Store(Error),
}

/// Runs the decide loop on `stream` (see the module docs).
///
/// `aggregate` is caught up before each decision; after a successful append
/// it is left at the loaded version (the next call reads the new events).
pub async fn decide<St, S, E, F, D>(
    store: &St,
    stream: &StreamId,
    aggregate: &mut Aggregate<S>,
    fold: F,
    mut decision: D,
    policy: &RetryPolicy,
) -> Result<Decided, DecideError<E>>
where
    St: EventStore + ?Sized,
    F: Fn(&mut S, &RecordedEvent),
    D: FnMut(&S) -> Result<Vec<NewEvent>, E>,
{
    let max = policy.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        aggregate
            .catch_up(store, stream, &fold)
            .await
            .map_err(DecideError::Store)?;
        let events = decision(&aggregate.state).map_err(DecideError::Rejected)?;
        if events.is_empty() {
            return Ok(Decided {
                outcome: None,
                attempts: attempt,
            });
        }
        // The catch-up read just showed the head (when the aggregate read
        // its events itself), which lets the store skip a condition item.
        let vouched = aggregate
            .head
            .clone()
            .filter(|h| h.version() == aggregate.version && h.stream() == stream);
        let appended = match vouched {
            Some(head) => store.append_after(stream, head, &events).await,
            None => {
                store
                    .append(stream, ExpectedVersion::Exact(aggregate.version), &events)
                    .await
            }
        };
        match appended {
            Ok(outcome) => {
                return Ok(Decided {
                    outcome: Some(outcome),
                    attempts: attempt,
                })
            }
            Err(conflict @ (Error::Conflict { .. } | Error::Contention { .. })) => {
                if attempt >= max {
                    return Err(DecideError::Exhausted {
                        stream: stream.clone(),
                        attempts: attempt,
                        last: Box::new(conflict),
                    });
                }
                tokio::time::sleep(policy.backoff(attempt + 1)).await;
            }
            Err(other) => return Err(DecideError::Store(other)),
        }
    }
}
