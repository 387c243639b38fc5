//! Projections: read models rebuilt from the archive and kept live from the
//! events table's change feed, each event applied **exactly once**, with rows
//! keyed by anything in the event.
//!
//! The model (docs/design.md §9): a [`Projection`] names, for each event,
//! the rows it touches (a customer, a day, a global row, the stream itself)
//! and how each changes. Per source stream the projection keeps a *ledger*:
//! the last `EventId` of the stream applied. Rows and the ledger of every
//! stream whose events they hold are committed together, in one store
//! transaction checked against the revisions and versions the fold started
//! from ([`RowStore::commit`]). An event at or below its stream's ledger is
//! skipped; that, not a global checkpoint, makes each event count once, and
//! lets a rebuild, live drivers and partitions run at once on one store.
//!
//! * [`Projection`]: what the user writes.
//! * [`RowStore`]: where rows and ledger live; [`DynamoRowStore`] in a
//!   DynamoDB table (a commit is one `TransactWriteItems`),
//!   [`MemoryRowStore`] in memory for tests and demos, `PostgresRowStore`
//!   in a PostgreSQL database (feature `postgres`; a commit is one
//!   transaction).
//! * [`Applier`]: the one algorithm every driver uses: ledger skips, holes
//!   filled from the events table in pages, units folded and committed,
//!   lost races reloaded, refused events parking their stream.
//! * Drivers: [`live`] turns a batch of DynamoDB Streams records (a Lambda
//!   event or the pump's stream reader) into applied events and the records
//!   to retry; [`replay`] rebuilds from the archive, optionally one
//!   [`Partition`] of the streams per worker.

mod apply;
/// For implementing [`PostgresTables`] (an async trait).
#[cfg(feature = "postgres")]
pub use async_trait::async_trait;
pub mod live;
mod projection;
pub mod replay;
mod store;

pub use apply::{Applier, ApplyOptions, BatchReport, DriveError, StreamReport};
/// The partitions of `--partition i/N`, defined by the replayer (which
/// filters them before ordering) and kept here for this crate's users.
pub use evs_replay::{stream_hash, Partition, PartitionError};
pub use projection::{Ledger, Parked, Projection, RowKey, RowKeyError};
/// The SQLite driver the SQLite store uses (its `Transaction` is what a
/// projection's own tables are written with).
#[cfg(feature = "sqlite")]
pub use rusqlite;
pub use store::{
    Commit, DynamoLayout, DynamoRowStore, LedgerWrite, MemoryRowStore, RowStore, RowWrite,
    StoreError, Stored, Unit,
};
#[cfg(feature = "sqlite")]
pub use store::{NoTables, SqliteRowStore, SqliteSchema, SqliteTables};
#[cfg(feature = "postgres")]
pub use store::{PostgresRowStore, PostgresTables};
/// The PostgreSQL client the PostgreSQL store uses (its `Transaction` is
/// what a projection's own tables are written with).
#[cfg(feature = "postgres")]
pub use tokio_postgres;
