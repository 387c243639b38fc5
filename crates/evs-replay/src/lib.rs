//! The archive replayer: every archived event exactly once, each stream in
//! `eventId` order, resumable from a checkpoint, following the live archive;
//! and `verify`, which proves an archive complete.
//!
//! The principal type is [`Replayer`]: it lists an [`Archive`] (an S3 bucket
//! or a local directory, through `evs_archive::store`) in key order, fetches
//! objects ahead, and feeds every line to a [`Sequencer`]. [`verify`] reads a
//! whole archive into an index of every stream's event ids and reports what
//! is missing or contradictory.
//!
//! I/O lives in [`archive`], [`replayer`] and [`verify`]'s reader; the
//! ordering logic below is pure (no I/O, no clock) and is what the
//! simulation tests drive.
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
//!   key, every stream's last delivered `eventId` and the held-back events
//!   (and, replaying from a time, that time and the stream starts it
//!   assumed), so that [`Sequencer::resume`] neither repeats nor skips
//!   anything. A library
//!   user whose projection already stores each stream's version may supply
//!   those instead ([`Sequencer::with_versions`]).
//! * [`Frontier`] is the follow-mode rule: at reader time `now`, only keys
//!   sealed before `now - T - e` may be consumed, and the cursor never moves
//!   past that settled frontier.
//! * [`ReplayEvent`] is the minimal event the core needs: stream id, event id
//!   and the event as a line of JSON text ([`event_from_line`] turns an
//!   archive line into the line `evs read` prints for the same event).
//!
//! ```
//! use evs_replay::{event_from_line, ArchivePosition, Sequencer};
//!
//! let mut seq = Sequencer::new();
//! let mut out = Vec::new();
//! let obj = ArchivePosition::new("k1", 1_000);
//! for line in [
//!     r#"{"streamId":"a","eventId":2}"#,
//!     r#"{"streamId":"a","eventId":1}"#,
//!     r#"{"streamId":"a","eventId":1}"#, // a duplicate from a retry
//! ] {
//!     let event = event_from_line(line)?;
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

mod archive;
mod checkpoint;
mod event;
mod frontier;
mod line;
mod partition;
mod replayer;
mod sequencer;
pub mod verify;

pub use archive::{decode_object, Archive, ArchiveError, ArchiveObject, Listed, Listing};
pub use checkpoint::{
    Checkpoint, CheckpointError, HeldEvent, Since, CHECKPOINT_FORMAT, NEWEST_FORMAT,
    PARTITIONED_FORMAT, PASSED_OVER_FORMAT, SINCE_FORMAT,
};
pub use event::{ArchivePosition, ReplayEvent};
pub use frontier::{Frontier, DEFAULT_MARGIN_MS, MAX_BOUND_MS};
pub use line::{event_from_line, LineError};
pub use partition::{stream_hash, Partition, PartitionError};
pub use replayer::{
    ReplayError, ReplayOptions, ReplayStats, Replayer, Step, DEFAULT_FUNCTION_TIMEOUT_MS,
};
pub use sequencer::{
    Gap, Offer, SequenceError, Sequencer, SequencerConfig, DEFAULT_MAX_HELD_PER_STREAM,
};
