//! Reading the archive: listing keys in order and fetching objects ahead.
//!
//! [`Archive`] is an object store (S3 bucket, local directory or memory, `evs_archive::store`)
//! plus the key prefix the archiver writes under. It lists the prefix in key
//! order with `StartAfter`, page by page, and keeps only well-formed events
//! keys of exactly that prefix (a dead letter or a stray file is counted and
//! skipped). [`Prefetch`] fetches and decodes the next few objects
//! concurrently while the caller consumes them in key order: memory stays
//! bounded by `read_ahead` objects (each at most one archiver batch), never
//! the whole archive.

use std::collections::VecDeque;
use std::sync::Arc;

use evs_archive::decompress;
use evs_archive::store::{ObjectStore, StoreError};
use evs_archive::{ArchiveKey, KeyError, Prefix};
use tokio::task::JoinHandle;

use crate::event::{ArchivePosition, ReplayEvent};
use crate::line::{event_in, Keep};

/// Keys asked for per listing request (S3 returns at most 1,000 a page).
pub(crate) const DEFAULT_PAGE_SIZE: usize = 1_000;

/// Objects fetched and decoded ahead of the one being consumed.
pub(crate) const DEFAULT_READ_AHEAD: usize = 8;

/// Why reading the archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Listing or fetching failed (after the SDK's retries).
    #[error(transparent)]
    Sink(#[from] StoreError),
    /// An object cannot be decompressed or a line of it is not an event.
    #[error("archive object {key}: {reason}")]
    Object {
        /// The object's key.
        key: String,
        /// What is wrong, with the line number when it is a line.
        reason: String,
    },
    /// A background fetch stopped without an answer.
    #[error("fetching {key} stopped: {reason}")]
    Task {
        /// The object's key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl ArchiveError {
    /// Whether waiting and trying again may succeed (an S3 outage,
    /// throttling), as opposed to a corrupt object or a missing bucket.
    pub fn is_transient(&self) -> bool {
        match self {
            ArchiveError::Sink(e) => e.is_transient(),
            ArchiveError::Object { .. } | ArchiveError::Task { .. } => false,
        }
    }
}

/// An archive: where the objects are and under which prefix.
#[derive(Debug, Clone)]
pub struct Archive {
    sink: Arc<dyn ObjectStore>,
    prefix: Prefix,
}

/// One listed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// An events object of the archive prefix.
    Object(ArchiveKey),
    /// Any other key under the prefix (a stray file, a nested prefix, a dead
    /// letter under an overlapping prefix): not read.
    Other(String),
}

impl Listed {
    /// The key.
    pub fn key(&self) -> &str {
        match self {
            Listed::Object(key) => key.as_str(),
            Listed::Other(key) => key,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Every key of the page, in key order.
    pub entries: Vec<Listed>,
    /// Whether the listing returned a full page (more may follow at once).
    pub full: bool,
}

impl Listing {
    /// The events keys of the page, in key order.
    pub fn objects(&self) -> impl Iterator<Item = &ArchiveKey> {
        self.entries.iter().filter_map(|e| match e {
            Listed::Object(key) => Some(key),
            Listed::Other(_) => None,
        })
    }

    /// The keys that are not events keys of the prefix.
    pub fn others(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| match e {
            Listed::Object(_) => None,
            Listed::Other(key) => Some(key.as_str()),
        })
    }

    /// The last key listed (the next page's `StartAfter`).
    pub fn last(&self) -> Option<&str> {
        self.entries.last().map(Listed::key)
    }
}

/// An object read from the archive.
#[derive(Debug, Clone)]
pub struct ArchiveObject {
    /// Where it was read.
    pub position: ArchivePosition,
    /// Its lines as events, in line order.
    pub events: Vec<ReplayEvent>,
    /// Its size as stored (compressed), bytes.
    pub stored_bytes: usize,
    /// Its size decompressed, bytes.
    pub bytes: usize,
    /// Its lines of streams outside the partition it was read for, dropped
    /// unread.
    pub other_partitions: usize,
}

impl Archive {
    /// The archive under `prefix` in `sink`.
    pub fn new(sink: Arc<dyn ObjectStore>, prefix: Prefix) -> Self {
        Self { sink, prefix }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The archive as a location: `s3://bucket/prefix` or `dir/prefix`.
    pub fn location(&self) -> String {
        let base = self.sink.location();
        if base.ends_with('/') || self.prefix.as_str().is_empty() {
            format!("{base}{}", self.prefix)
        } else {
            format!("{base}/{}", self.prefix)
        }
    }

    /// Up to `limit` keys after `start_after`, in key order.
    pub async fn list(
        &self,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Listing, ArchiveError> {
        let limit = limit.max(1);
        let raw = self
            .sink
            .list(self.prefix.as_str(), start_after, limit)
            .await?;
        let full = raw.len() >= limit;
        let mut entries = Vec::with_capacity(raw.len());
        for key in raw {
            entries.push(match ArchiveKey::parse(&key) {
                Ok(parsed) if parsed.prefix() == self.prefix.as_str() => Listed::Object(parsed),
                // A newer archiver's object: skipping it would lose its events.
                Err(KeyError::UnknownKind {
                    prefix, extension, ..
                }) if prefix == self.prefix.as_str() => {
                    return Err(ArchiveError::Object {
                        key,
                        reason: format!(
                            "an archive object of a kind this version cannot read ({extension}); upgrade to read this archive"
                        ),
                    })
                }
                _ => Listed::Other(key),
            });
        }
        Ok(Listing { entries, full })
    }

    /// Fetches and decodes one object (decoding runs on a blocking thread).
    pub async fn read(&self, key: &ArchiveKey) -> Result<ArchiveObject, ArchiveError> {
        self.read_in(key, Keep::ALL).await
    }

    /// Fetches one object and decodes what `keep` asks for.
    pub(crate) async fn read_in(
        &self,
        key: &ArchiveKey,
        keep: Keep,
    ) -> Result<ArchiveObject, ArchiveError> {
        let bytes = self.sink.get(key.as_str()).await?;
        let key = key.clone();
        let name = key.as_str().to_owned();
        tokio::task::spawn_blocking(move || decode_in(&key, &bytes, keep))
            .await
            .map_err(|e| ArchiveError::Task {
                key: name,
                reason: e.to_string(),
            })?
    }
}

/// Decompresses an object and reads each line as an event (pure).
pub fn decode_object(key: &ArchiveKey, stored: &[u8]) -> Result<ArchiveObject, ArchiveError> {
    decode_in(key, stored, Keep::ALL)
}

/// [`decode_object`] keeping what `keep` asks for.
fn decode_in(key: &ArchiveKey, stored: &[u8], keep: Keep) -> Result<ArchiveObject, ArchiveError> {
    let object_error = |reason: String| ArchiveError::Object {
        key: key.as_str().to_owned(),
        reason,
    };
    let text = decompress(stored, key.compression())
        .map_err(|e| object_error(format!("cannot decompress: {e}")))?;
    let text =
        std::str::from_utf8(&text).map_err(|e| object_error(format!("not UTF-8 text: {e}")))?;
    let mut events = Vec::new();
    let mut other_partitions = 0;
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        match event_in(line, keep).map_err(|e| object_error(format!("line {}: {e}", i + 1)))? {
            Some(event) => events.push(event),
            None => other_partitions += 1,
        }
    }
    Ok(ArchiveObject {
        position: ArchivePosition::new(key.as_str(), key.sealed_at_ms()),
        events,
        stored_bytes: stored.len(),
        bytes: text.len(),
        other_partitions,
    })
}

/// Fetches objects ahead of the consumer, at most `read_ahead` at a time,
/// and hands them back in the order they were queued.
#[derive(Debug)]
pub(crate) struct Prefetch {
    archive: Arc<Archive>,
    read_ahead: usize,
    keep: Keep,
    waiting: VecDeque<ArchiveKey>,
    running: VecDeque<(ArchiveKey, JoinHandle<Result<ArchiveObject, ArchiveError>>)>,
}

impl Prefetch {
    /// A prefetcher over `archive` (`read_ahead` at least 1) that decodes
    /// what `keep` asks for.
    pub(crate) fn new(archive: Arc<Archive>, read_ahead: usize, keep: Keep) -> Self {
        Self {
            archive,
            read_ahead: read_ahead.max(1),
            keep,
            waiting: VecDeque::new(),
            running: VecDeque::new(),
        }
    }

    /// Queues keys to read, after those queued before.
    pub(crate) fn extend(&mut self, keys: impl IntoIterator<Item = ArchiveKey>) {
        self.waiting.extend(keys);
        self.start();
    }

    /// Objects queued and not yet handed back.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len() + self.running.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn start(&mut self) {
        while self.running.len() < self.read_ahead {
            let Some(key) = self.waiting.pop_front() else {
                break;
            };
            let task = self.spawn(&key);
            self.running.push_back((key, task));
        }
    }

    /// The next object in queue order; `None` when nothing is queued.
    ///
    /// Cancel-safe: the object leaves the queue only once it is handed back,
    /// so a call dropped while it waits loses nothing.
    ///
    /// A fetch that failed in a way that may heal
    /// ([`ArchiveError::is_transient`]) stays first in the queue and is
    /// started again by the next call, so the caller may wait and call
    /// again without losing its place.
    pub(crate) async fn next(&mut self) -> Option<Result<ArchiveObject, ArchiveError>> {
        self.start();
        let (_, task) = self.running.front_mut()?;
        let joined = task.await;
        let (key, _) = self.running.pop_front()?;
        let result = match joined {
            Ok(result) => result,
            Err(e) => Err(ArchiveError::Task {
                key: key.as_str().to_owned(),
                reason: e.to_string(),
            }),
        };
        if matches!(&result, Err(e) if e.is_transient()) {
            // Fetched again first, before anything queued after it.
            self.waiting.push_front(key);
            self.restart_first();
        } else {
            self.start();
        }
        Some(result)
    }

    /// Starts fetching `key`.
    fn spawn(&self, key: &ArchiveKey) -> JoinHandle<Result<ArchiveObject, ArchiveError>> {
        let (archive, key, keep) = (Arc::clone(&self.archive), key.clone(), self.keep);
        tokio::spawn(async move { archive.read_in(&key, keep).await })
    }

    /// Starts the first waiting key ahead of the running fetches (after a
    /// transient failure of what was first).
    fn restart_first(&mut self) {
        let Some(key) = self.waiting.pop_front() else {
            return;
        };
        let task = self.spawn(&key);
        self.running.push_front((key, task));
    }

    /// Forgets every queued object (running fetches are stopped).
    pub(crate) fn clear(&mut self) {
        self.waiting.clear();
        for (_, task) in self.running.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evs_archive::ArchivedEvent;
    use evs_archive::Suffix;
    use evs_archive::{encode_events, Compression};
    use proptest::prelude::*;

    fn key(compression: Compression) -> ArchiveKey {
        let suffix = Suffix::new(None, uuid::Uuid::nil());
        ArchiveKey::new(&Prefix::root(), 1_795_471_652_123, &suffix, compression).unwrap()
    }

    /// A sample object: two events of one stream, as stored with `compression`.
    fn sample_object(compression: Compression) -> Vec<u8> {
        let events: Vec<ArchivedEvent> = (1..=2)
            .map(|n| {
                let mut line = crate::line::tests::base();
                line["eventId"] = n.into();
                ArchivedEvent::from_line(&line.to_string()).unwrap()
            })
            .collect();
        encode_events(&events, compression).unwrap().bytes
    }

    fn any_compression() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Zstd)
        ]
    }

    #[test]
    fn the_sample_object_decodes() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let object = decode_object(&key(c), &sample_object(c)).unwrap();
            assert_eq!(object.events.len(), 2, "{c:?}");
        }
    }

    /// A delivered line is the archived line cut before the stream record's
    /// fields, byte for byte: the event's text is passed on unchanged.
    #[test]
    fn a_delivered_line_is_the_archived_line_byte_for_byte() {
        let mut lines = Vec::new();
        for (n, stream) in ["order-\u{e9}\"1", "plain-2", "tab\t3"].iter().enumerate() {
            let mut line = crate::line::tests::base();
            line["streamId"] = (*stream).into();
            line["eventId"] = (n + 1).into();
            lines.push(line.clone());
            line["id"] = "6f1f8a8e-8c8f-4bb4-9f7e-3c1c2a0f0e11".into();
            line["metadata"] =
                serde_json::json!({"user": "u-\u{1f600}", "n": -0.000001, "q": "\"\\/"});
            line["attributes"] = serde_json::json!({"Tenant": {"S": "a\"b"}, "N": {"N": "1e30"}});
            line["timestampSource"] = "approximateCreationDateTime".into();
            line["eventId"] = (n + 10).into();
            lines.push(line);
        }
        let events: Vec<ArchivedEvent> = lines
            .iter()
            .map(|l| ArchivedEvent::from_line(&l.to_string()).unwrap())
            .collect();
        let stored = encode_events(&events, Compression::Gzip).unwrap().bytes;
        let text = decompress(&stored, Compression::Gzip).unwrap();
        let archived: Vec<&str> = std::str::from_utf8(&text).unwrap().lines().collect();
        let object = decode_object(&key(Compression::Gzip), &stored).unwrap();
        assert_eq!(object.events.len(), archived.len());
        for (archived, event) in archived.iter().zip(&object.events) {
            let open = event.line().strip_suffix('}').unwrap();
            let rest = archived.strip_prefix(open).unwrap_or_else(|| {
                panic!("delivered {} is not a prefix of {archived}", event.line())
            });
            assert!(rest.starts_with(",\"eventID\":"), "{archived}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_an_object_or_an_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            compression in any_compression(),
        ) {
            let _ = decode_object(&key(compression), &bytes);
        }

        #[test]
        fn a_mutated_object_is_an_object_or_an_error(
            (compression, bytes) in any_compression().prop_flat_map(|c| {
                (Just(c), evs_testkit::mutated(sample_object(c)))
            }),
        ) {
            if let Ok(object) = decode_object(&key(compression), &bytes) {
                prop_assert_eq!(object.stored_bytes, bytes.len());
            }
        }
    }
}
