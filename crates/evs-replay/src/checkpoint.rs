//! The sequencer's persisted state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{ArchivePosition, ReplayEvent};

/// The checkpoint format this crate writes and reads.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// The format of a checkpoint that names a [`Checkpoint::partition`]: raised
/// so that a reader that knows no partitions refuses it instead of resuming
/// every stream from it (and skipping the other partitions' events).
pub const PARTITIONED_FORMAT: u32 = 2;

/// A held-back event: ahead of its stream's next event, waiting for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldEvent {
    /// The event.
    pub event: ReplayEvent,
    /// Where it was read; `None` when it came from a back-fill.
    pub read_at: Option<ArchivePosition>,
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
/// `lastDelivered` is the bulk: one number per stream. A projection that
/// already records each stream's version in its own store can leave it
/// empty and build the sequencer with [`crate::Sequencer::with_versions`]
/// (mind the conditions documented there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// [`CHECKPOINT_FORMAT`].
    pub format: u32,
    /// The replay started in the middle of the archive (`--since`): streams
    /// start at their first event seen
    /// ([`crate::SequencerConfig::start_at_first_seen`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_at_first_seen: bool,
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
        /// [`CHECKPOINT_FORMAT`].
        supported: u32,
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
    }
}
