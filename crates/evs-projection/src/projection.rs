//! What the user writes: which rows an event touches, and how each changes.

use std::borrow::Cow;
use std::fmt;

use evs_core::RecordedEvent;

/// A row of a read model: the model it belongs to (`customers`, `daily`)
/// and its key within it (`c-17`, `2026-12-07`, the stream id itself).
///
/// A model name is 1 to 64 characters of `A-Z a-z 0-9 _ - .` (so that it
/// can name a table, a key prefix or a column); a key is any non-empty
/// text. Stores check both before they write ([`RowKey::check`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    /// The read model (a name the projection's code spells borrows it: no
    /// allocation per event).
    pub model: Cow<'static, str>,
    /// The row's key within it.
    pub key: String,
}

/// Why a [`RowKey`] cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowKeyError {
    /// The model's name breaks its rules.
    #[error("model name {0:?} is not 1 to 64 characters of A-Z a-z 0-9 _ - .")]
    Model(String),
    /// The key is empty.
    #[error("model {0:?}: a row key is empty")]
    EmptyKey(String),
}

impl RowKey {
    /// The row `key` of `model`.
    pub fn new(model: impl Into<Cow<'static, str>>, key: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            key: key.into(),
        }
    }

    /// The row of `model` keyed by the event's stream: a per-stream read
    /// model (one row per stream).
    pub fn of_stream(model: impl Into<Cow<'static, str>>, event: &RecordedEvent) -> Self {
        Self::new(model, event.stream_id.as_str())
    }

    /// Checks the model's name and the key (see the type's docs).
    pub fn check(&self) -> Result<(), RowKeyError> {
        let model_ok = (1..=64).contains(&self.model.len())
            && self
                .model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !model_ok {
            return Err(RowKeyError::Model(self.model.to_string()));
        }
        if self.key.is_empty() {
            return Err(RowKeyError::EmptyKey(self.model.to_string()));
        }
        Ok(())
    }
}

impl fmt::Display for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.model, self.key)
    }
}

/// A read model: for each event, the rows it touches ([`keys`](Self::keys))
/// and how each of them changes ([`apply`](Self::apply)). Rows may belong
/// to several models (an enum as the row type) and be keyed by anything in
/// the event: a payload field, the event's day, a constant (a global row),
/// the stream id (a per-stream read model, [`RowKey::of_stream`]).
///
/// Each event counts exactly once: the drivers commit every row an event
/// changed together with the event's stream's *ledger* (the last `EventId`
/// of that stream applied), and skip what the ledger covers. An event the
/// projection refuses (`Err`) *parks* its stream: recorded with the reason,
/// nothing of the event counted, the stream's later events held until an
/// operator resumes it; every other stream goes on.
///
/// Both functions must be deterministic (the same event and row give the
/// same result, with no effect outside the row): drivers may fold an event
/// more than once in memory (after losing a race with another driver, or to
/// leave out an event that failed), and only what they commit counts.
///
/// **Order.** Each stream's events come in that stream's order. Across
/// streams, a rebuild applies events in the archive's order and the live
/// driver in whatever order the shards deliver them; a row touched by
/// several streams whose result depends on how they interleave (the last
/// writer of a field, say) can differ between the two. Keep such rows
/// order-independent across streams: counts, sums, sets, the latest by a
/// time in the event rather than by arrival (docs/design.md §9).
pub trait Projection: Send + Sync {
    /// A row's state (an enum when the models' rows differ).
    type Row: Clone + Send + Sync;
    /// Why an event cannot be applied.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The rows `event` changes: none (the event does not concern this read
    /// model; its stream's ledger still advances), one or several. A key
    /// given twice counts once.
    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, Self::Error>;

    /// The only event names this projection reads (`None`, the default:
    /// every name). An event of any other name must touch no row
    /// ([`keys`](Self::keys) gives none for it; its stream's ledger still
    /// advances): a rebuild builds such events without their payload,
    /// metadata and attributes, which saves parsing them.
    fn event_names(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Applies `event` to one of the rows [`keys`](Self::keys) named: `row`
    /// is `None` when the row does not exist; set it to `Some` to create or
    /// update it and to `None` to delete it.
    fn apply(
        &self,
        event: &RecordedEvent,
        key: &RowKey,
        row: &mut Option<Self::Row>,
    ) -> Result<(), Self::Error>;
}

/// A stream's place in a projection's ledger: the last `EventId` of the
/// stream applied (0: none) and, when the stream is parked, why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The last `EventId` applied.
    pub version: u64,
    /// Set while the stream is parked: its events after `version` wait.
    pub parked: Option<Parked>,
}

/// Why a stream is parked: the event the projection or the store refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The refused event (always `version + 1` of its ledger).
    pub event_id: u64,
    /// Its name.
    pub event_name: String,
    /// Why it was refused, as one line.
    pub reason: String,
    /// When it was parked (epoch ms).
    pub at_ms: i64,
}
