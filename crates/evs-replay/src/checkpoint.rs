//! The sequencer's persisted state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::event::{ArchivePosition, ReplayEvent};

/// The checkpoint format of a replay of every stream from the archive's
/// start (or from versions).
pub const CHECKPOINT_FORMAT: u32 = 1;

/// The format of a checkpoint that names a [`Checkpoint::partition`]: raised
/// so that a reader that knows no partitions refuses it instead of resuming
/// every stream from it (and skipping the other partitions' events).
pub const PARTITIONED_FORMAT: u32 = 2;

/// The format of a checkpoint of a replay from a time ([`Checkpoint::since`];
/// partitioned or not): raised so that a reader that knows only the first
/// event seen as a stream's start refuses it.
pub const SINCE_FORMAT: u32 = 3;

/// The format of a checkpoint of a replay from a time that names streams
/// passed over ([`Since::passed_over`]): raised so that a reader that does
/// not know them refuses it instead of taking those streams' last events as
/// delivered (a hole after one would then wait for ever).
pub const PASSED_OVER_FORMAT: u32 = 4;

/// The newest format this crate reads; it reads every older one.
pub const NEWEST_FORMAT: u32 = PASSED_OVER_FORMAT;

/// A held-back event: ahead of its stream's next event, waiting for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldEvent {
    /// The event.
    pub event: ReplayEvent,
    /// Where it was read; `None` when it came from a back-fill.
    pub read_at: Option<ArchivePosition>,
}

/// The state of a replay from a time (`--since`): events written before it
/// are not delivered, every one written at or after it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Since {
    /// The time, epoch milliseconds (compared with the events' timestamps).
    pub at_ms: i64,
    /// Streams whose start was assumed, without a table, at their first
    /// event found: the event found there (its predecessor was never
    /// found). An earlier event of such a stream written at or after the
    /// time, found later, stops the replay instead of being dropped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assumed_starts: BTreeMap<String, u64>,
    /// Streams whose last event ([`Checkpoint::last_delivered`]) was passed
    /// over as written before the time, none delivered after it: a later
    /// event found with a hole below it leaves the stream's start unknown
    /// (the missing events may have been written before the time, in objects
    /// sealed before the replay's first one) rather than make a gap that
    /// never closes ([`PASSED_OVER_FORMAT`]). A checkpoint of format 3 has
    /// none: its streams' last events are taken as delivered.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub passed_over: BTreeSet<String>,
}

/// Everything a replayer needs to continue exactly where it stopped
/// ([`crate::Sequencer::checkpoint`], [`crate::Sequencer::resume`]).
///
/// As JSON:
///
/// ```json
/// {"format":1,"cursor":"archive/2026/…ndjson.gz",
///  "lastDelivered":{"order-1":3,"order-2":1},
///  "held":[{"event":{"streamId":"order-3","eventId":5,"line":{…}},"readAt":{"key":"…","sealedAtMs":…}}]}
/// ```
///
/// A partition's adds `"partition":"i/N"` (format 2); a replay from a time
/// adds `"since":{"atMs":…,"assumedStarts":{…}}` (format 3), and format 4
/// when it names streams passed over (`"passedOver":[…]`).
///
/// `lastDelivered` is the bulk: one number per stream (for a replay from a
/// time, the last event delivered or passed over as written before it). A projection that
/// already records each stream's version in its own store can leave it
/// empty and build the sequencer with [`crate::Sequencer::with_versions`]
/// (mind the conditions documented there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// [`CHECKPOINT_FORMAT`], [`PARTITIONED_FORMAT`], [`SINCE_FORMAT`] or
    /// [`PASSED_OVER_FORMAT`].
    pub format: u32,
    /// A replay from the middle of the archive by the rule of formats 1
    /// and 2: streams start at their first event seen
    /// ([`crate::SequencerConfig::start_at_first_seen`]). Still read; a
    /// replay from a time now writes [`Checkpoint::since`] instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_at_first_seen: bool,
    /// A replay from a time ([`SINCE_FORMAT`], [`PASSED_OVER_FORMAT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Since>,
    /// The last fully consumed key; `None` before the first object.
    pub cursor: Option<String>,
    /// Each stream's last delivered event id.
    #[serde(default)]
    pub last_delivered: BTreeMap<String, u64>,
    /// The held-back events, by stream then event id.
    #[serde(default)]
    pub held: Vec<HeldEvent>,
    /// The partition (`i/N`) its delivery kept, when it kept only some
    /// streams: it resumes only that partition ([`Checkpoint::for_partition`]).
    /// A replayer given the partition ([`crate::ReplayOptions::partition`])
    /// writes only that partition's streams; a checkpoint written when
    /// partitions only filtered the output may hold every stream, and the
    /// others' entries are dropped on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

/// Why a checkpoint cannot be read or resumed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a checkpoint.
    #[error("invalid checkpoint JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Written by a newer or unknown version.
    #[error("checkpoint format {found} is not supported (this build reads {supported} and older)")]
    UnsupportedFormat {
        /// The checkpoint's format.
        found: u32,
        /// [`NEWEST_FORMAT`].
        supported: u32,
    },
    /// An assumed start contradicts the rest of the checkpoint.
    #[error("checkpoint assumes stream {stream_id:?} starts at event {event_id}, but {reason}")]
    InvalidStart {
        /// The stream.
        stream_id: String,
        /// The assumed start.
        event_id: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A held event contradicts the rest of the checkpoint.
    #[error("checkpoint holds event {event_id} of stream {stream_id:?}, but {reason}")]
    InvalidHeld {
        /// The stream.
        stream_id: String,
        /// The event.
        event_id: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Default for Checkpoint {
    /// The checkpoint of a replay from the archive's start that has
    /// delivered nothing.
    fn default() -> Self {
        Self {
            format: CHECKPOINT_FORMAT,
            start_at_first_seen: false,
            since: None,
            cursor: None,
            last_delivered: BTreeMap::new(),
            held: Vec::new(),
            partition: None,
        }
    }
}

impl Checkpoint {
    /// The checkpoint of a delivery that kept only `partition`'s streams
    /// ([`PARTITIONED_FORMAT`], or the checkpoint's own format if later).
    pub fn for_partition(self, partition: String) -> Self {
        Self {
            format: self.format.max(PARTITIONED_FORMAT),
            partition: Some(partition),
            ..self
        }
    }

    /// The checkpoint as one line of JSON.
    pub fn to_json(&self) -> Result<String, CheckpointError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Reads a checkpoint written by [`Checkpoint::to_json`] (not yet
    /// checked: [`crate::Sequencer::resume`] does that).
    pub fn from_json(text: &str) -> Result<Self, CheckpointError> {
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text` as a checkpoint and resumes from it: a sequencer or a
    /// typed error, never a panic; a checkpoint that reads writes back to
    /// text that reads to it.
    fn resume_from(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        if let Ok(checkpoint) = Checkpoint::from_json(text) {
            let json = checkpoint.to_json();
            proptest::prop_assert!(json.is_ok());
            let back = Checkpoint::from_json(&json.unwrap_or_default()).ok();
            proptest::prop_assert_eq!(back.as_ref(), Some(&checkpoint));
            if let Ok(sequencer) = crate::Sequencer::resume(checkpoint) {
                let saved = sequencer.checkpoint();
                let again = crate::Sequencer::resume(saved.clone()).map(|s| s.checkpoint());
                proptest::prop_assert_eq!(again.ok(), Some(saved));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_are_a_checkpoint_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            resume_from(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn a_mutated_checkpoint_resumes_or_is_refused(bytes in evs_testkit::mutated(
            concat!(
                r#"{"format":1,"cursor":"archive/2026/11/23/22/20261123T220732123Z-0000000000000000001100000000017454423009-67e5504410b1426f9247bb680e5fe0c8.ndjson.gz","#,
                r#""lastDelivered":{"order-1":3,"order-2":1},"#,
                r#""held":[{"event":{"streamId":"order-2","eventId":3,"line":{"streamId":"order-2","eventId":3}},"#,
                r#""readAt":{"key":"archive/x.ndjson.gz","sealedAtMs":1795471652123}}]}"#,
            ).as_bytes().to_vec(),
        )) {
            resume_from(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn a_mutated_since_checkpoint_resumes_or_is_refused(bytes in evs_testkit::mutated(
            concat!(
                r#"{"format":4,"since":{"atMs":1795471652123,"assumedStarts":{"order-1":3},"passedOver":["order-2"]},"#,
                r#""cursor":"archive/x.ndjson.gz","lastDelivered":{"order-1":3,"order-2":1},"#,
                r#""held":[{"event":{"streamId":"order-3","eventId":3,"line":{"streamId":"order-3","eventId":3,"timestamp":"2026-11-23T22:07:32.123Z"}},"#,
                r#""readAt":null}],"partition":"1/4"}"#,
            ).as_bytes().to_vec(),
        )) {
            resume_from(&String::from_utf8_lossy(&bytes))?;
        }
    }
}
