//! What the user writes: a fold of one stream's events.

use evs_core::RecordedEvent;
use serde::{Deserialize, Serialize};

/// A stream's state in a projection and the last `EventId` folded into it.
/// Stored together, always: that is what makes each event count once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<S> {
    /// The last `EventId` applied (0: none).
    pub version: u64,
    /// The state after it.
    pub state: S,
}

/// A read model, one state per stream: a fold of that stream's events, in
/// order, each exactly once.
///
/// `apply` must be deterministic (the same state and event give the same
/// result, with no effect outside the state): drivers may fold an event more
/// than once in memory (after losing a race with another driver, or to
/// commit the events before one that failed), and only what they commit
/// counts.
pub trait Projection: Send + Sync {
    /// One stream's state; `Default` is the state before its first event.
    type State: Clone + Default + Send + Sync;
    /// Why an event cannot be applied.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Folds the stream's next event into its state.
    fn apply(&self, state: &mut Self::State, event: &RecordedEvent) -> Result<(), Self::Error>;
}
