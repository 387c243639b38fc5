//! A [`Source`] on the change feed of an in-memory store
//! ([`evs_core::MemoryStore::changes`]): the offline pipeline, no AWS, no
//! emulator. Its position lives in memory, as the store does.

use std::time::Duration;

use async_trait::async_trait;
use evs_core::MemoryStore;

use super::{Batch, Source, SourceError};

/// Pumps a [`MemoryStore`]'s change feed from a position (0: its first insert).
#[derive(Debug, Clone)]
pub struct MemorySource {
    store: MemoryStore,
    position: usize,
}

impl MemorySource {
    /// Reads `store`'s change feed from its first insert.
    pub fn new(store: MemoryStore) -> Self {
        Self { store, position: 0 }
    }

    /// How many feed records are committed: where a new source would resume.
    pub fn position(&self) -> usize {
        self.position
    }
}

#[async_trait]
impl Source for MemorySource {
    /// The feed position of the batch's first record.
    type Position = usize;

    async fn next_batch(&mut self, limit: usize) -> Result<Option<Batch<usize>>, SourceError> {
        let (records, _) = self.store.changes(self.position, limit);
        if records.is_empty() {
            return Ok(None);
        }
        Ok(Some(Batch {
            records,
            position: self.position,
            label: format!("memory@{}", self.position),
        }))
    }

    async fn commit(&mut self, batch: &Batch<usize>, handled: usize) -> Result<(), SourceError> {
        self.position = self
            .position
            .max(batch.position + handled.min(batch.records.len()));
        Ok(())
    }

    async fn wait(&mut self, idle: Duration) {
        tokio::select! {
            _ = self.store.changed() => {}
            _ = tokio::time::sleep(idle) => {}
        }
    }
}
