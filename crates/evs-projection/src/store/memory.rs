//! [`MemoryRowStore`]: rows and ledger in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Commit, RowStore, StoreError, Stored, Unit};
use crate::projection::{Ledger, RowKey};

#[derive(Debug)]
struct Inner<R> {
    /// Each row's revision and state (`None`: deleted; the revision stays).
    rows: BTreeMap<RowKey, (u64, Option<R>)>,
    ledger: BTreeMap<String, Ledger>,
}

/// Rows and ledger in memory, shared by its clones: for tests, demos and a
/// read model that need not outlive the process. No limit on a commit.
#[derive(Debug)]
pub struct MemoryRowStore<R> {
    inner: Arc<Mutex<Inner<R>>>,
}

impl<R> Clone for MemoryRowStore<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R> Default for MemoryRowStore<R> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                rows: BTreeMap::new(),
                ledger: BTreeMap::new(),
            })),
        }
    }
}

impl<R: Clone> MemoryRowStore<R> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every row, by model then key.
    pub fn snapshot(&self) -> BTreeMap<RowKey, R> {
        self.lock()
            .rows
            .iter()
            .filter_map(|(k, (_, r))| r.clone().map(|r| (k.clone(), r)))
            .collect()
    }

    /// Every stream's ledger entry.
    pub fn ledger(&self) -> BTreeMap<String, Ledger> {
        self.lock().ledger.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        // A commit checks everything before it changes anything, and a
        // change cannot panic halfway: the data is sound after a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl<R: Clone + Send + Sync> RowStore<R> for MemoryRowStore<R> {
    fn check_row(&self, key: &RowKey, _row: &R) -> Result<(), StoreError> {
        key.check().map_err(|e| StoreError::Row {
            key: key.clone(),
            reason: e.to_string(),
        })
    }

    async fn load_ledger(&self, streams: &[String]) -> Result<Vec<Ledger>, StoreError> {
        let inner = self.lock();
        Ok(streams
            .iter()
            .map(|s| inner.ledger.get(s).cloned().unwrap_or_default())
            .collect())
    }

    async fn load_rows(&self, keys: &[RowKey]) -> Result<Vec<Stored<R>>, StoreError> {
        let inner = self.lock();
        Ok(keys
            .iter()
            .map(|k| match inner.rows.get(k) {
                Some((revision, row)) => Stored {
                    revision: *revision,
                    row: row.clone(),
                },
                None => Stored::default(),
            })
            .collect())
    }

    async fn commit(&self, unit: &Unit<R>) -> Result<Commit, StoreError> {
        for write in &unit.rows {
            if let Some(row) = &write.row {
                self.check_row(&write.key, row)?;
            }
        }
        let mut inner = self.lock();
        let rows_ok = unit
            .rows
            .iter()
            .all(|w| inner.rows.get(&w.key).map_or(0, |(revision, _)| *revision) == w.expected);
        let ledger_ok = unit.ledger.iter().all(|w| {
            let current = inner.ledger.get(&w.stream);
            // applied events move a stream on only while it is not parked
            let moves = w.ledger.parked.is_none() && w.ledger.version > w.expected;
            current.map_or(0, |l| l.version) == w.expected
                && !(moves && current.is_some_and(|l| l.parked.is_some()))
        });
        if !rows_ok || !ledger_ok {
            return Ok(Commit::Conflict);
        }
        for write in &unit.rows {
            // a deleted row keeps its revision: one read before the delete
            // never matches the row created after it
            inner
                .rows
                .insert(write.key.clone(), (write.expected + 1, write.row.clone()));
        }
        for write in &unit.ledger {
            inner
                .ledger
                .insert(write.stream.clone(), write.ledger.clone());
        }
        Ok(Commit::Done)
    }

    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .lock()
            .ledger
            .iter()
            .map(|(s, l)| (s.clone(), l.version))
            .collect())
    }

    async fn parked(&self) -> Result<Vec<(String, Ledger)>, StoreError> {
        Ok(self
            .lock()
            .ledger
            .iter()
            .filter(|(_, l)| l.parked.is_some())
            .map(|(s, l)| (s.clone(), l.clone()))
            .collect())
    }

    async fn rows(&self) -> Result<Vec<(RowKey, R)>, StoreError> {
        Ok(self.snapshot().into_iter().collect())
    }
}
