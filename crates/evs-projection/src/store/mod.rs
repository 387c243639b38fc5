//! Where a projection's rows and ledger live: one trait, a module per
//! backend.

use async_trait::async_trait;

use crate::projection::{Ledger, RowKey};

mod dynamodb;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use dynamodb::{DynamoLayout, DynamoRowStore};
pub use memory::MemoryRowStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresRowStore, PostgresTables};
#[cfg(feature = "sqlite")]
pub use sqlite::{NoTables, SqliteRowStore, SqliteSchema, SqliteTables};

/// A row as stored: its state (`None`: absent) and its revision, which the
/// store uses to refuse a commit made from a stale copy. Revision 0 is a row
/// never written; a commit of a row at revision `r` leaves it at `r + 1`,
/// a delete too (the store keeps the revision of a deleted row, so that a
/// copy read before the delete never matches the row created after it). A store may keep its own notion of revision (the per-stream
/// layout of [`DynamoRowStore`] checks the stream's ledger instead): the
/// applier only hands back what it loaded, or `r + 1` after its own commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<R> {
    /// The revision the copy was read at.
    pub revision: u64,
    /// The state, `None` when absent.
    pub row: Option<R>,
}

impl<R> Default for Stored<R> {
    fn default() -> Self {
        Self {
            revision: 0,
            row: None,
        }
    }
}

/// One row written by a [`Unit`].
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite<R> {
    /// The row.
    pub key: RowKey,
    /// The revision it must still be at.
    pub expected: u64,
    /// Its new state; `None` deletes it.
    pub row: Option<R>,
}

/// One stream's ledger moved by a [`Unit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerWrite {
    /// The stream.
    pub stream: String,
    /// The version it must still be at (0: no ledger entry yet).
    pub expected: u64,
    /// The new entry (its version ≥ `expected`).
    pub ledger: Ledger,
}

/// What one commit writes, all or nothing: rows, and the ledger of every
/// stream whose events they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit<R> {
    /// The rows changed.
    pub rows: Vec<RowWrite<R>>,
    /// The streams moved.
    pub ledger: Vec<LedgerWrite>,
}

impl<R> Default for Unit<R> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            ledger: Vec::new(),
        }
    }
}

impl<R> Unit<R> {
    /// Items written: rows and ledger entries.
    pub fn items(&self) -> usize {
        self.rows.len() + self.ledger.len()
    }
}

/// The outcome of [`RowStore::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Written, all of it.
    Done,
    /// Nothing written: a row or a stream was not at its expected revision
    /// or version (another driver committed first, or a concurrent
    /// transaction held an item).
    Conflict,
}

/// Why a row store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or refused the request.
    #[error("read model store: {message}")]
    Backend {
        /// What failed, as one line.
        message: String,
        /// Whether waiting may heal it (throttling, a refused connection, 5xx).
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A stored row or ledger entry does not read back.
    #[error("read model store: {what} does not read back")]
    Corrupt {
        /// The item.
        what: String,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A row the store cannot hold (too large, a field it reserves, a key
    /// it cannot store): refused before anything was sent.
    #[error("read model store: row {key} cannot be stored: {reason}")]
    Row {
        /// The row.
        key: RowKey,
        /// Why, as one line.
        reason: String,
    },
    /// The database holds the read model of another projection: its ledger
    /// would be read as this one's, so nothing is read or written.
    #[error("read model store: {location} holds the read model of projection {found:?}, not {expected:?}; give another database, or drop it to rebuild")]
    OtherProjection {
        /// The database (a file or a server and schema, without secrets).
        location: String,
        /// The projection whose read model it holds.
        found: String,
        /// The projection that opened it.
        expected: String,
    },
    /// The unit is past the store's limit for one commit (bytes or items):
    /// refused before anything was sent; a smaller unit may pass.
    #[error("read model store: a commit of {items} items is past the store's limit: {reason}")]
    UnitTooLarge {
        /// Items in the unit.
        items: usize,
        /// Which limit.
        reason: String,
    },
}

impl StoreError {
    /// Whether waiting and trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                transient: true,
                ..
            }
        )
    }
}

/// A projection's rows and ledger.
///
/// The contract every implementation keeps (the behaviour suite,
/// `tests/store.rs`, checks it on each):
/// - [`commit`](Self::commit) writes the whole unit or nothing, and only if
///   every row is at its expected revision and every stream at its expected
///   version, checked atomically with the write; otherwise
///   [`Commit::Conflict`], with nothing written.
/// - A commit whose outcome is unknown (a timeout, a lost answer) is an
///   error; it may have happened, and a driver finds out by loading again.
///   Committing the same unit again is then a conflict (or, for a store that
///   recognises the retry, done), never a second effect.
/// - Loads see every commit that returned [`Commit::Done`].
/// - A unit the store cannot take is refused before anything is written
///   ([`StoreError::Row`], [`StoreError::UnitTooLarge`]).
///
/// A SQL store keeps rows and ledger in tables of one database and commits
/// a unit as one transaction.
#[async_trait]
pub trait RowStore<R>: Send + Sync {
    /// The most items (rows plus ledger entries) one commit may hold.
    fn max_items(&self) -> usize {
        usize::MAX
    }

    /// Checks that `row` can be stored under `key` (its size, its fields).
    fn check_row(&self, key: &RowKey, row: &R) -> Result<(), StoreError>;

    /// The revision `write` leaves its row at once `unit` is committed:
    /// `expected + 1` (a deleted row too: revisions never go back), unless
    /// the store counts revisions its own way.
    fn revision_after(&self, write: &RowWrite<R>, unit: &Unit<R>) -> u64 {
        let _ = unit;
        write.expected + 1
    }

    /// The ledger entries of `streams`, in order (the default entry for a
    /// stream with none).
    async fn load_ledger(&self, streams: &[String]) -> Result<Vec<Ledger>, StoreError>;

    /// The rows `keys`, in order (revision 0, no row, for an absent one).
    async fn load_rows(&self, keys: &[RowKey]) -> Result<Vec<Stored<R>>, StoreError>;

    /// Writes `unit` if every row and stream is where it expects (see the
    /// trait docs).
    async fn commit(&self, unit: &Unit<R>) -> Result<Commit, StoreError>;

    /// Every stream's ledger version (a rebuild skips what is applied).
    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// The parked streams and their ledger entries, by stream.
    async fn parked(&self) -> Result<Vec<(String, Ledger)>, StoreError>;

    /// Every row, sorted by model then key.
    async fn rows(&self) -> Result<Vec<(RowKey, R)>, StoreError>;
}

#[async_trait]
impl<R, S> RowStore<R> for std::sync::Arc<S>
where
    R: Send + Sync + 'static,
    S: RowStore<R> + ?Sized,
{
    fn max_items(&self) -> usize {
        (**self).max_items()
    }
    fn check_row(&self, key: &RowKey, row: &R) -> Result<(), StoreError> {
        (**self).check_row(key, row)
    }
    fn revision_after(&self, write: &RowWrite<R>, unit: &Unit<R>) -> u64 {
        (**self).revision_after(write, unit)
    }
    async fn load_ledger(&self, streams: &[String]) -> Result<Vec<Ledger>, StoreError> {
        (**self).load_ledger(streams).await
    }
    async fn load_rows(&self, keys: &[RowKey]) -> Result<Vec<Stored<R>>, StoreError> {
        (**self).load_rows(keys).await
    }
    async fn commit(&self, unit: &Unit<R>) -> Result<Commit, StoreError> {
        (**self).commit(unit).await
    }
    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        (**self).versions().await
    }
    async fn parked(&self) -> Result<Vec<(String, Ledger)>, StoreError> {
        (**self).parked().await
    }
    async fn rows(&self) -> Result<Vec<(RowKey, R)>, StoreError> {
        (**self).rows().await
    }
}
