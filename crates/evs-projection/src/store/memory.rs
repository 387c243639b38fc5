//! [`MemoryStateStore`]: states and versions in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Commit, StateStore, StoreError};
use crate::projection::Versioned;

/// States and versions in memory, shared by its clones: for tests, demos and
/// a projection whose state need not outlive the process.
#[derive(Debug)]
pub struct MemoryStateStore<S> {
    streams: Arc<Mutex<BTreeMap<String, Versioned<S>>>>,
}

impl<S> Clone for MemoryStateStore<S> {
    fn clone(&self) -> Self {
        Self {
            streams: Arc::clone(&self.streams),
        }
    }
}

impl<S> Default for MemoryStateStore<S> {
    fn default() -> Self {
        Self {
            streams: Arc::default(),
        }
    }
}

impl<S: Clone> MemoryStateStore<S> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stream's state and version.
    pub fn snapshot(&self) -> BTreeMap<String, Versioned<S>> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Versioned<S>>> {
        // A panic while the lock was held cannot leave a half-written
        // entry (every write is one insert), so the data is sound.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl<S: Clone + Send + Sync> StateStore<S> for MemoryStateStore<S> {
    async fn load(&self, stream: &str) -> Result<Option<Versioned<S>>, StoreError> {
        Ok(self.lock().get(stream).cloned())
    }

    async fn commit(
        &self,
        stream: &str,
        expected: u64,
        next: &Versioned<S>,
    ) -> Result<Commit, StoreError> {
        let mut streams = self.lock();
        let actual = streams.get(stream).map_or(0, |v| v.version);
        if actual != expected {
            return Ok(Commit::Conflict {
                actual: Some(actual),
            });
        }
        streams.insert(stream.to_owned(), next.clone());
        Ok(Commit::Done)
    }

    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .map(|(stream, v)| (stream.clone(), v.version))
            .collect())
    }
}
