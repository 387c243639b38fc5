//! evs-archive's memory store for the replayer's tests, with faults on
//! demand.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use evs_archive::store::{MemoryStore, Object, ObjectStore, StoreError, Stored};

#[derive(Debug, Default)]
pub(crate) struct MemorySink {
    objects: MemoryStore,
    /// Keys whose next GET fails (a transient error).
    pub fail_once: Mutex<BTreeSet<String>>,
    /// Keys whose GETs always fail with an error that does not heal.
    pub fail_always: Mutex<BTreeSet<String>>,
    /// Keys whose GETs take 200 ms.
    pub slow: Mutex<BTreeSet<String>>,
}

impl MemorySink {
    /// Puts an object at `key`, replacing any.
    pub(crate) fn insert(&self, key: String, body: Vec<u8>) {
        self.objects.remove(&key);
        let object = Object {
            bytes: body,
            ..Object::default()
        };
        let _ = self.objects.insert(&key, object);
    }

    /// Moves an object to another key.
    #[allow(dead_code)] // not every test binary renames objects
    pub(crate) fn rename(&self, from: &str, to: String) {
        if let Some(object) = self.objects.remove(from) {
            self.insert(to, object.bytes);
        }
    }
}

#[async_trait]
impl ObjectStore for MemorySink {
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError> {
        self.objects.put(key, object).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        if self.fail_once.lock().is_ok_and(|mut f| f.remove(key)) {
            return Err(StoreError::S3 {
                doing: "reading",
                key: key.to_owned(),
                message: "503 SlowDown".into(),
                transient: true,
                source: None,
            });
        }
        if self.fail_always.lock().is_ok_and(|f| f.contains(key)) {
            return Err(StoreError::S3 {
                doing: "reading",
                key: key.to_owned(),
                message: "403 AccessDenied".into(),
                transient: false,
                source: None,
            });
        }
        if self.slow.lock().is_ok_and(|s| s.contains(key)) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.objects.get(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.objects.list(prefix, start_after, limit).await
    }

    fn location(&self) -> String {
        "memory://".to_owned()
    }
}
