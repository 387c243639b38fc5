//! Where a projection's states and versions live.

use async_trait::async_trait;

use crate::projection::Versioned;

mod dynamodb;
mod memory;

pub use dynamodb::DynamoStateStore;
pub use memory::MemoryStateStore;

/// The outcome of a conditional [`StateStore::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Written: the stream's stored version is now the committed one.
    Done,
    /// Not written: the stored version was not the expected one (another
    /// driver got there first).
    Conflict {
        /// The version stored, when the store could tell.
        actual: Option<u64>,
    },
}

/// Why a state store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or refused the request.
    #[error("projection store: {message}")]
    Backend {
        /// What failed, as one line.
        message: String,
        /// Whether waiting may heal it (throttling, a refused connection, 5xx).
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A stored state does not read back, or a state cannot be stored.
    #[error("projection store: the state of stream {stream:?}")]
    State {
        /// The stream.
        stream: String,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether waiting and trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                transient: true,
                ..
            }
        )
    }
}

/// States and versions of one projection, per stream.
///
/// The contract every implementation keeps: [`commit`](Self::commit) writes
/// only if the stream's stored version is `expected` (0: nothing stored),
/// atomically with that check; a commit whose outcome is unknown (a timeout)
/// may have happened, and a driver finds out by loading again. Reads see
/// every commit that returned [`Commit::Done`].
///
/// A projection whose state lives in its own database (Postgres, …)
/// implements this over it, storing the version in the same row and
/// transaction as the state.
#[async_trait]
pub trait StateStore<S>: Send + Sync {
    /// The stream's state and version; `None` when nothing was committed.
    async fn load(&self, stream: &str) -> Result<Option<Versioned<S>>, StoreError>;

    /// Stores `next` if the stream's stored version is `expected`.
    async fn commit(
        &self,
        stream: &str,
        expected: u64,
        next: &Versioned<S>,
    ) -> Result<Commit, StoreError>;

    /// Every stream's stored version (a replay skips what is applied).
    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError>;
}
