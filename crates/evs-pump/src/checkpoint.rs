//! Where the DynamoDB Streams pump has got to: a small JSON file, rewritten
//! atomically (temporary file, fsync, rename) after every committed batch.
//!
//! ```json
//! {"version": 2,
//!  "streamArn": "arn:aws:dynamodb:…:table/events/stream/2026-11-23T22:07:32.123",
//!  "readAt": 1795471652123,
//!  "shards": {"shardId-0001": {"sequenceNumber": "1100000000017454423009", "finished": false},
//!             "shardId-0000": {"sequenceNumber": "1000000000017454423000", "finished": true}}}
//! ```
//!
//! Per shard: the `SequenceNumber` of the last record archived (a restart
//! reads from the record after it) and whether the shard is read to its end
//! (its children may then be read). `readAt` (epoch ms, version 2): when the
//! pump last found every shard read to its present; a shard it has read
//! nothing from can only have lost records to the stream's 24 h trim when
//! that was more than a day ago. A checkpoint belongs to one stream: a
//! file written for another stream ARN is refused, never silently reused.
//! Version 1 (without `readAt`) is read as well; the pump writes version 2.

use std::collections::BTreeMap;
use std::path::Path;

use evs_archive::store::local::replace_file;
use serde::{Deserialize, Serialize};

/// The checkpoint format's version (the pump writes it; it reads this one
/// and version 1, which has no `readAt`).
pub const VERSION: u32 = 2;

/// What went wrong with a checkpoint file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("cannot {doing} the checkpoint file {path}: {source}")]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a checkpoint this version understands.
    #[error("the checkpoint file {path} is not a valid pump checkpoint: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The file belongs to another stream.
    #[error(
        "the checkpoint file {path} belongs to stream {found}, not {expected} (another table, or \
         the table's stream was re-created): choose another --checkpoint-file, or remove this one \
         to archive the stream from its oldest record"
    )]
    OtherStream {
        /// The file.
        path: String,
        /// The stream it names.
        found: String,
        /// The stream being read.
        expected: String,
    },
}

/// The state of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardCheckpoint {
    /// `SequenceNumber` of the last record archived, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
    /// The shard is read to its end.
    #[serde(default)]
    pub finished: bool,
}

/// The pump's position in one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The stream it belongs to.
    pub stream_arn: String,
    /// When the pump last found every shard it could read read to its
    /// present (epoch ms); none before the first time.
    #[serde(default, rename = "readAt", skip_serializing_if = "Option::is_none")]
    pub read_at_ms: Option<i64>,
    /// Per shard id.
    #[serde(default)]
    pub shards: BTreeMap<String, ShardCheckpoint>,
}

fn io(doing: &'static str, path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        doing,
        path: path.display().to_string(),
        source,
    }
}

impl Checkpoint {
    /// An empty checkpoint: every shard from its oldest record.
    pub fn new(stream_arn: impl Into<String>) -> Self {
        Self {
            version: VERSION,
            stream_arn: stream_arn.into(),
            read_at_ms: None,
            shards: BTreeMap::new(),
        }
    }

    /// Parses a checkpoint's JSON text (`path` only names it in errors) and
    /// checks that it belongs to `stream_arn`.
    pub fn parse(text: &str, path: &Path, stream_arn: &str) -> Result<Self, CheckpointError> {
        let invalid = |reason: String| CheckpointError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let mut cp: Checkpoint = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if !(1..=VERSION).contains(&cp.version) || (cp.version == 1 && cp.read_at_ms.is_some()) {
            return Err(invalid(format!(
                "version {} (this pump reads versions 1 and {VERSION})",
                cp.version
            )));
        }
        cp.version = VERSION;
        if cp.stream_arn != stream_arn {
            return Err(CheckpointError::OtherStream {
                path: path.display().to_string(),
                found: cp.stream_arn,
                expected: stream_arn.to_owned(),
            });
        }
        for (shard, state) in &cp.shards {
            if let Some(seq) = &state.sequence_number {
                evs_archive::SequenceNumber::new(seq.as_str())
                    .map_err(|e| invalid(format!("shard {shard}: {e}")))?;
            }
        }
        Ok(cp)
    }

    /// Loads the checkpoint at `path` for `stream_arn`; an empty one when the
    /// file does not exist. Refuses a file of another stream.
    pub fn load(path: &Path, stream_arn: &str) -> Result<Self, CheckpointError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path, stream_arn),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new(stream_arn)),
            Err(e) => Err(io("read", path, e)),
        }
    }

    /// Writes the checkpoint to `path` atomically: a reader (or a restart
    /// after a crash) sees the old file or the new one, never a mix.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| CheckpointError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", path, e))?;
        }
        let mut text = text;
        text.push(b'\n');
        replace_file(path, &text).map_err(|e| io("write", path, e))
    }

    /// The state of `shard` (default: nothing read yet).
    pub fn shard(&self, shard: &str) -> ShardCheckpoint {
        self.shards.get(shard).cloned().unwrap_or_default()
    }

    /// True when `shard` is read to its end.
    pub fn is_finished(&self, shard: &str) -> bool {
        self.shards.get(shard).is_some_and(|s| s.finished)
    }

    /// Records that `shard` is archived up to and including `sequence`.
    pub fn advance(&mut self, shard: &str, sequence: &str) {
        self.shards
            .entry(shard.to_owned())
            .or_default()
            .sequence_number = Some(sequence.to_owned());
    }

    /// Records that `shard` is read to its end.
    pub fn finish(&mut self, shard: &str) {
        self.shards.entry(shard.to_owned()).or_default().finished = true;
    }

    /// Forgets finished shards that the stream no longer lists (trimmed
    /// after 24 h): nothing can depend on them any more.
    pub fn prune(&mut self, listed: &dyn Fn(&str) -> bool) {
        self.shards.retain(|id, s| !s.finished || listed(id));
    }

    /// The first shard not read to its end that the stream no longer lists,
    /// with the last sequence number archived from it: the records after
    /// that left the stream unarchived. A shard read to its end and then
    /// trimmed is not one.
    pub fn unfinished_gone(&self, listed: &dyn Fn(&str) -> bool) -> Option<(&str, Option<&str>)> {
        self.shards
            .iter()
            .find(|(id, s)| !s.finished && !listed(id))
            .map(|(id, s)| (id.as_str(), s.sequence_number.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!(
                "evs-pump-cp-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ))
            .join(name)
    }

    #[test]
    fn round_trip_through_the_file() {
        let path = temp_path("cp.json");
        let arn = "arn:aws:dynamodb:us-east-1:1:table/t/stream/x";
        assert_eq!(Checkpoint::load(&path, arn).unwrap(), Checkpoint::new(arn));
        let mut cp = Checkpoint::new(arn);
        cp.advance("shardId-1", "1100000000017454423009");
        cp.advance("shardId-0", "900000000000000000001");
        cp.finish("shardId-0");
        cp.save(&path).unwrap();
        let back = Checkpoint::load(&path, arn).unwrap();
        assert_eq!(back, cp);
        assert!(back.is_finished("shardId-0"));
        assert!(!back.is_finished("shardId-1"));
        assert_eq!(
            back.shard("shardId-1").sequence_number.as_deref(),
            Some("1100000000017454423009")
        );
        assert_eq!(back.shard("nope"), ShardCheckpoint::default());
        // Overwritten in place, no temporary file left behind.
        cp.advance("shardId-1", "1100000000017454423010");
        cp.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path, arn).unwrap(), cp);
        let dir = path.parent().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cp.json")]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_another_stream_and_garbage() {
        let path = temp_path("cp.json");
        Checkpoint::new("arn:a").save(&path).unwrap();
        let err = Checkpoint::load(&path, "arn:b").unwrap_err();
        assert!(matches!(err, CheckpointError::OtherStream { .. }), "{err}");
        assert!(err.to_string().contains("arn:a"), "{err}");
        for bad in [
            "not json",
            r#"{"version":3,"streamArn":"arn:b","shards":{}}"#,
            r#"{"version":0,"streamArn":"arn:b","shards":{}}"#,
            r#"{"version":1,"streamArn":"arn:b","readAt":5,"shards":{}}"#,
            r#"{"version":1,"streamArn":"arn:b","shards":{"s":{"sequenceNumber":"x1"}}}"#,
            r#"{"version":1,"streamArn":"arn:b","extra":1}"#,
        ] {
            let err = Checkpoint::parse(bad, &path, "arn:b").unwrap_err();
            assert!(
                matches!(err, CheckpointError::Invalid { .. }),
                "{bad}: {err}"
            );
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn version_1_is_read_and_version_2_written() {
        let path = temp_path("cp.json");
        let v1 = r#"{"version":1,"streamArn":"arn:b","shards":{"s":{"sequenceNumber":"900000000000000000001"}}}"#;
        let mut cp = Checkpoint::parse(v1, &path, "arn:b").unwrap();
        assert_eq!((cp.version, cp.read_at_ms), (VERSION, None));
        cp.read_at_ms = Some(1_795_471_652_123);
        cp.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""version": 2"#), "{text}");
        assert!(text.contains(r#""readAt": 1795471652123"#), "{text}");
        assert_eq!(Checkpoint::load(&path, "arn:b").unwrap(), cp);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn an_unfinished_shard_that_left_the_stream_is_found() {
        let mut cp = Checkpoint::new("arn");
        cp.advance("finished-gone", "1");
        cp.finish("finished-gone");
        cp.advance("listed", "2");
        assert_eq!(cp.unfinished_gone(&|id| id == "listed"), None);
        cp.advance("gone", "3");
        assert_eq!(
            cp.unfinished_gone(&|id| id == "listed"),
            Some(("gone", Some("3")))
        );
    }

    #[test]
    fn prune_forgets_only_finished_unlisted_shards() {
        let mut cp = Checkpoint::new("arn");
        cp.advance("gone-finished", "1");
        cp.finish("gone-finished");
        cp.advance("gone-open", "2");
        cp.advance("listed-finished", "3");
        cp.finish("listed-finished");
        cp.prune(&|id| id.starts_with("listed"));
        let ids: Vec<_> = cp.shards.keys().cloned().collect();
        assert_eq!(ids, ["gone-open", "listed-finished"]);
    }

    /// Parses `text` as a checkpoint of the stream it names: a checkpoint
    /// or a typed error, never a panic; one that parses is saved as text
    /// that parses back to it.
    fn parse_every_way(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        let path = Path::new("cp.json");
        let _ = Checkpoint::parse(text, path, "arn:b");
        let named = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v.get("streamArn")
                    .and_then(|a| a.as_str().map(str::to_owned))
            });
        if let Some(arn) = named {
            if let Ok(cp) = Checkpoint::parse(text, path, &arn) {
                let saved = serde_json::to_string_pretty(&cp).unwrap();
                proptest::prop_assert_eq!(Checkpoint::parse(&saved, path, &arn).ok(), Some(cp));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_are_a_checkpoint_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            parse_every_way(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn a_mutated_checkpoint_is_a_checkpoint_or_an_error(bytes in evs_testkit::mutated(
            br#"{"version":1,"streamArn":"arn:b","shards":{"shardId-0":{"sequenceNumber":"900000000000000000001","finished":true},"shardId-1":{"sequenceNumber":"1100000000017454423009"}}}"#.to_vec(),
        )) {
            parse_every_way(&String::from_utf8_lossy(&bytes))?;
        }
    }
}
