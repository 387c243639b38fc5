//! An object store in memory: the bucket's rules without a bucket, for
//! tests, examples and the offline demo.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Object, ObjectStore, StoreError, Stored};

/// Objects in a map, listed in UTF-8 byte order as `ListObjectsV2` lists
/// them; `put` never overwrites. User metadata is kept.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Object>>,
}

impl MemoryStore {
    /// [`ObjectStore::put`] without the `async`, for fixtures: stores
    /// `object` at `key` unless an object exists there.
    pub fn insert(&self, key: &str, object: Object) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
                reason: "a key cannot be empty".into(),
            });
        }
        let mut objects = self.lock();
        if objects.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        objects.insert(key.to_owned(), object);
        Ok(())
    }

    /// Removes the object at `key` and returns it, if there was one (a
    /// bucket's `DeleteObject`; tests use it to move objects around).
    pub fn remove(&self, key: &str) -> Option<Object> {
        self.lock().remove(key)
    }

    // A panic while the lock was held cannot leave the map half-changed
    // (every change is one map call), so a poisoned lock is taken as is.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Object>> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError> {
        self.insert(key, object.clone()).map(|()| Stored::default())
    }

    async fn replace(&self, key: &str, object: &Object) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
                reason: "a key cannot be empty".into(),
            });
        }
        self.lock().insert(key.to_owned(), object.clone());
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.lock()
            .get(key)
            .map(|o| o.bytes.clone())
            .ok_or_else(|| StoreError::NotFound {
                key: key.to_owned(),
            })
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let objects = self.lock();
        let from = match start_after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
            _ => std::ops::Bound::Included(prefix),
        };
        Ok(objects
            .range::<str, _>((from, std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }

    fn location(&self) -> String {
        "memory://".to_owned()
    }
}
