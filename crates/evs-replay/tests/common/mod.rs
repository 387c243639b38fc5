//! A bucket in memory for the replayer's tests, with `ListObjectsV2`'s
//! listing semantics and faults on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use evs_archiver::sink::{Object, Sink, SinkError};

#[derive(Debug, Default)]
pub struct MemorySink {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Keys whose next GET fails (a transient error).
    pub fail_once: Mutex<BTreeSet<String>>,
    /// Keys whose GETs always fail with an error that does not heal.
    pub fail_always: Mutex<BTreeSet<String>>,
    /// Keys whose GETs take 200 ms.
    pub slow: Mutex<BTreeSet<String>>,
}

impl MemorySink {
    pub fn insert(&self, key: String, body: Vec<u8>) {
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(key, body);
        }
    }

    /// Moves an object to another key.
    #[allow(dead_code)] // not every test binary renames objects
    pub fn rename(&self, from: &str, to: String) {
        if let Ok(mut objects) = self.objects.lock() {
            if let Some(body) = objects.remove(from) {
                objects.insert(to, body);
            }
        }
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn put(&self, key: &str, object: &Object) -> Result<(), SinkError> {
        self.insert(key.to_owned(), object.bytes.clone());
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, SinkError> {
        if self.fail_once.lock().is_ok_and(|mut f| f.remove(key)) {
            return Err(SinkError::S3 {
                doing: "reading",
                key: key.to_owned(),
                message: "503 SlowDown".into(),
                transient: true,
            });
        }
        if self.fail_always.lock().is_ok_and(|f| f.contains(key)) {
            return Err(SinkError::S3 {
                doing: "reading",
                key: key.to_owned(),
                message: "403 AccessDenied".into(),
                transient: false,
            });
        }
        if self.slow.lock().is_ok_and(|s| s.contains(key)) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let not_found = || SinkError::NotFound {
            key: key.to_owned(),
        };
        let objects = self.objects.lock().map_err(|_| not_found())?;
        objects.get(key).cloned().ok_or_else(not_found)
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, SinkError> {
        let objects = self.objects.lock().map_err(|_| SinkError::NotFound {
            key: prefix.to_owned(),
        })?;
        Ok(objects
            .keys()
            .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s))
            .take(limit)
            .cloned()
            .collect())
    }

    fn location(&self) -> String {
        "memory://".to_owned()
    }
}
