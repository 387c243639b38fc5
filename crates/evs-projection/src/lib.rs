//! Projections: a read model rebuilt from the archive and kept live from the
//! events table's change feed, each event applied **exactly once**.
//!
//! The model (docs/design.md, "Projections"): a projection keeps, per
//! stream, its state and the last `EventId` it applied (its *version*),
//! committed together. Applying event (s, n) is allowed only when the stored
//! version of s is n − 1, and the store checks that atomically with the
//! write ([`StateStore::commit`]). This, not a global checkpoint, is what
//! makes effects exactly-once, and it lets several drivers run at once.
//!
//! * [`Projection`]: what the user writes, a fold of one stream's events
//!   into that stream's state.
//! * [`StateStore`]: where states and versions live, with a conditional
//!   commit; [`DynamoStateStore`] keeps them in a DynamoDB table (one item
//!   per stream), [`MemoryStateStore`] in memory for tests and demos. A projection whose
//!   state lives in its own database implements the trait over it.
//! * [`Applier`]: the one algorithm every driver uses. Events arrive per
//!   stream in order but possibly repeated or with holes: `n ≤ version` is
//!   skipped, `n = version + 1` applied, and for `n > version + 1` the
//!   missing range is read from the events table (strongly consistent) and
//!   applied first. A lost race with another driver reloads and goes on.
//! * Drivers: [`live`] turns a batch of DynamoDB Streams records (a Lambda
//!   event or the pump's stream reader) into applied events and the
//!   records to retry; [`replay`] rebuilds from the archive, optionally one
//!   [`Partition`] of the streams per worker.

mod apply;
pub mod live;
mod projection;
pub mod replay;
mod store;

pub use apply::{Applier, ApplyOptions, BatchReport, DriveError, StreamReport};
/// The partitions of `--partition i/N`, defined by the replayer (which
/// filters them before ordering) and kept here for this crate's users.
pub use evs_replay::{stream_hash, Partition, PartitionError};
pub use projection::{Projection, Versioned};
pub use store::{Commit, DynamoStateStore, MemoryStateStore, StateStore, StoreError};
