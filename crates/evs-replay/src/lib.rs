//! The pure core of the archive replayer: no I/O, no clock, no AWS.
//!
//! The archive is a list of objects in key order, each holding NDJSON lines
//! (DESIGN: "The ordering argument"). A replayer lists the objects, reads
//! their lines and hands every event to this crate, which turns *archive
//! order* into what DESIGN promises under "What the replayer guarantees on
//! top":
//!
//! * [`Sequencer`] is fed events object by object, line by line, each with
//!   its [`ArchivePosition`]. It emits every `(streamId, eventId)` **at most
//!   once** (retried and re-bisected batches archive some events twice),
//!   **per stream strictly in `eventId` order** (an event ahead of its
//!   predecessor is held back, in a bounded buffer, until the predecessor
//!   arrives; it is never emitted early and never dropped), reports the
//!   streams whose next event is missing as [`Gap`]s, and accepts missing
//!   events fetched from the table through [`Sequencer::fill`].
//! * [`Checkpoint`] is the sequencer's state as JSON: the last fully consumed
//!   key, every stream's last delivered `eventId` and the held-back events, so
//!   that [`Sequencer::resume`] neither repeats nor skips anything. A library
//!   user whose projection already stores each stream's version may supply
//!   those instead ([`Sequencer::with_versions`]).
//! * [`Frontier`] is the follow-mode rule: at reader time `now`, only keys
//!   sealed before `now - T - e` may be consumed, and the cursor never moves
//!   past that settled frontier.
//! * [`ReplayEvent`] is the minimal event the core needs: stream id, event id
//!   and the archived line as JSON ([`ReplayEvent::from_line`] reads the two
//!   ids out of a line).
//!
//! The crate does not depend on the archiver; the caller turns an archive key
//! into an [`ArchivePosition`] (`ArchiveKey::sealed_at_ms`) and a line into a
//! [`ReplayEvent`].
//!
//! ```
//! use evs_replay::{ArchivePosition, ReplayEvent, Sequencer};
//! use serde_json::json;
//!
//! let mut seq = Sequencer::new();
//! let mut out = Vec::new();
//! let obj = ArchivePosition::new("k1", 1_000);
//! for line in [
//!     json!({"streamId": "a", "eventId": 2}),
//!     json!({"streamId": "a", "eventId": 1}),
//!     json!({"streamId": "a", "eventId": 1}), // a duplicate from a retry
//! ] {
//!     let event = ReplayEvent::from_line(line)?;
//!     seq.push(&obj, event, &mut out)?;
//! }
//! seq.finish_object(&obj)?;
//! let ids: Vec<u64> = out.iter().map(|e| e.event_id).collect();
//! assert_eq!(ids, [1, 2]);
//!
//! let json = seq.checkpoint().to_json()?;
//! let resumed = Sequencer::resume(evs_replay::Checkpoint::from_json(&json)?)?;
//! assert_eq!(resumed.last_delivered("a"), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod checkpoint;
mod event;
mod frontier;
mod sequencer;

pub use checkpoint::{Checkpoint, CheckpointError, HeldEvent, CHECKPOINT_FORMAT};
pub use event::{ArchivePosition, EventError, ReplayEvent};
pub use frontier::{Frontier, DEFAULT_MARGIN_MS};
pub use sequencer::{
    Gap, Offer, SequenceError, Sequencer, SequencerConfig, DEFAULT_MAX_HELD_PER_STREAM,
};
