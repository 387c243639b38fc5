//! Where archive objects go: one trait, a module per backend.
//!
//! Every [`Sink`] keeps these rules:
//! * `put` returns only once the object is durably stored, and never
//!   replaces an existing object (keys are unique per attempt, so an
//!   existing key is an error, not something to overwrite);
//! * `list` returns keys in UTF-8 byte order, strictly after `start_after`,
//!   exactly as S3's `ListObjectsV2` does;
//! * a local directory holds exactly the key layout of the bucket: key
//!   `a/b/c.ndjson.gz` is the file `<root>/a/b/c.ndjson.gz`.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

pub mod local;
pub mod s3;

pub use local::LocalDir;
pub use s3::S3Sink;

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

/// What a sink can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// An object exists at the key already.
    #[error("an object already exists at {key}")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key cannot be stored by this sink.
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
    },
}

impl SinkError {
    /// Whether waiting and trying again may succeed: an S3 outage or
    /// throttling, an interrupted filesystem call. Never a missing object,
    /// an existing key, a missing bucket or refused credentials.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::S3 { transient, .. } => *transient,
            SinkError::Io { source, .. } => matches!(
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
pub trait Sink: Send + Sync + fmt::Debug {
    /// Stores `object` at `key`, durably, unless an object exists there.
    async fn put(&self, key: &str, object: &Object) -> Result<(), SinkError>;

    /// Reads the object at `key`.
    async fn get(&self, key: &str) -> Result<Vec<u8>, SinkError>;

    /// Up to `limit` keys that start with `prefix` and sort strictly after
    /// `start_after`, in UTF-8 byte order.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, SinkError>;

    /// Where this sink writes, for logs: `s3://bucket/` or a directory path.
    fn location(&self) -> String;
}

/// The sink a configuration names. For S3 the client comes from the
/// standard AWS environment, with path-style addressing when a custom
/// endpoint (`AWS_ENDPOINT_URL`) is set, as emulators need.
pub async fn from_config(config: &crate::config::Config) -> Box<dyn Sink> {
    match &config.location {
        crate::config::Location::Local(dir) => Box::new(LocalDir::new(dir.clone())),
        crate::config::Location::S3 { bucket } => {
            Box::new(S3Sink::new(s3::client_from_env().await, bucket.clone()))
        }
    }
}
