//! Where archive objects live: one trait, a module per backend (a local
//! directory, S3, memory).
//!
//! Every [`ObjectStore`] keeps these rules:
//! * `put` returns only once the object is durably stored, and never
//!   replaces an existing object (keys are unique per attempt, so an
//!   existing key is an error, not something to overwrite); it says the
//!   store's own time when the store has a clock of its own (S3's `Date`);
//! * `replace` is the one write that overwrites: for a small record kept at
//!   a fixed key beside the archive (a back-fill's marker), never for an
//!   archive object; a reader sees the old object or the new, never a part;
//! * `list` returns keys in UTF-8 byte order, strictly after `start_after`,
//!   exactly as S3's `ListObjectsV2` does;
//! * a local directory holds exactly the key layout of the bucket: key
//!   `a/b/c.ndjson.gz` is the file `<root>/a/b/c.ndjson.gz`.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

pub mod local;
mod memory;
pub mod s3;

pub use local::LocalDir;
pub use memory::MemoryStore;
pub use s3::S3Store;

/// An object to store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Object {
    /// The body.
    pub bytes: Vec<u8>,
    /// `Content-Type`.
    pub content_type: String,
    /// `Content-Encoding`, if any.
    pub content_encoding: Option<String>,
    /// User metadata (S3 `x-amz-meta-*`); the local directory does not keep it.
    pub metadata: BTreeMap<String, String>,
}

/// What a store knows of a write it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stored {
    /// The store's own clock when it answered the write, epoch ms, when it
    /// has one: S3's `Date` response header, whole seconds (truncated).
    /// `None` for a local directory or memory, whose clock is this host's.
    pub server_time_ms: Option<i64>,
}

impl Stored {
    /// A write answered by a store whose clock said `server_time_ms`.
    pub fn at(server_time_ms: i64) -> Self {
        Self {
            server_time_ms: Some(server_time_ms),
        }
    }
}

/// What an object store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An object exists at the key already.
    #[error("an object already exists at {key}")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key cannot be stored by this store.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No object at the key.
    #[error("no object at {key}")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A filesystem failure.
    #[error("{doing} {path}: {source}")]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The store cannot do what was asked (a store that cannot replace).
    #[error("{doing} {key}: this store cannot do it")]
    Unsupported {
        /// What was being done.
        doing: &'static str,
        /// The key.
        key: String,
    },
    /// An S3 failure (after the SDK's retries with backoff).
    #[error("S3 error while {doing} {key}: {message}")]
    S3 {
        /// What was being done.
        doing: &'static str,
        /// The key (or prefix).
        key: String,
        /// The error as one line.
        message: String,
        /// Whether waiting may heal it (a refused connection, 5xx,
        /// throttling) rather than not (credentials, a missing bucket).
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// Whether waiting and trying again may succeed: an S3 outage or
    /// throttling, an interrupted filesystem call. Never a missing object,
    /// an existing key, a missing bucket or refused credentials.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::S3 { transient, .. } => *transient,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

/// A place to store archive objects.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Stores `object` at `key`, durably, unless an object exists there.
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError>;

    /// Stores `object` at `key`, durably, replacing any object there. For a
    /// small record at a fixed key beside the archive, never for an archive
    /// object (those are only ever `put`). A store that cannot replace
    /// atomically keeps this default, which refuses.
    async fn replace(&self, key: &str, object: &Object) -> Result<(), StoreError> {
        let _ = object;
        Err(StoreError::Unsupported {
            doing: "replacing",
            key: key.to_owned(),
        })
    }

    /// Reads the object at `key`.
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;

    /// Up to `limit` keys that start with `prefix` and sort strictly after
    /// `start_after`, in UTF-8 byte order.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Where this store keeps its objects, for logs: `s3://bucket/` or a directory path.
    fn location(&self) -> String;
}
