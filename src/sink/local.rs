//! A local directory with exactly the bucket's key layout (the offline default).

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{Object, Sink, SinkError};

/// Files whose name starts with this are uploads in progress, never listed.
const TEMP_PREFIX: &str = ".tmp-";

/// An archive in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// An archive rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The one function that turns a key into a path: `<root>/<key>`, with
    /// every `/`-separated part a plain file name.
    pub fn key_path(&self, key: &str) -> Result<PathBuf, SinkError> {
        let invalid = |reason: &str| SinkError::InvalidKey {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if key.is_empty() || key.ends_with('/') {
            return Err(invalid("a key must name a file"));
        }
        let mut path = self.root.clone();
        for part in key.split('/') {
            let mut comps = Path::new(part).components();
            match (comps.next(), comps.next()) {
                (Some(Component::Normal(_)), None) if !part.starts_with(TEMP_PREFIX) => {
                    path.push(part)
                }
                _ => {
                    return Err(invalid(
                        "every part of a key must be a plain, non-empty name",
                    ))
                }
            }
        }
        Ok(path)
    }
}

fn io(doing: &'static str, path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io {
        doing,
        path: path.display().to_string(),
        source,
    }
}

/// Set when the `put` future is dropped (its deadline passed): the blocking
/// writer then refuses to publish, so no object lands after the caller gave up.
struct Cancel(Arc<AtomicBool>);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn put_blocking(
    path: &Path,
    key: &str,
    bytes: &[u8],
    cancelled: &AtomicBool,
) -> Result<(), SinkError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("creating directory", dir, e))?;
    let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::fs::File::create_new(&tmp).map_err(|e| io("creating", &tmp, e))?;
        file.write_all(bytes).map_err(|e| io("writing", &tmp, e))?;
        file.sync_all().map_err(|e| io("syncing", &tmp, e))?;
        if cancelled.load(Ordering::SeqCst) {
            return Err(io(
                "publishing",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the write was abandoned at its deadline",
                ),
            ));
        }
        // A hard link publishes the complete file atomically and fails if the
        // key exists: never a partial object, never an overwrite.
        std::fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SinkError::AlreadyExists {
                key: key.to_owned(),
            },
            _ => io("publishing", path, e),
        })?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn list_blocking(
    root: &Path,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, SinkError> {
    let mut keys = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, key_prefix)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("listing", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io("listing", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue; // not UTF-8: not a key this archive wrote
            };
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let key = format!("{key_prefix}{name}");
            let kind = entry
                .file_type()
                .map_err(|e| io("listing", &entry.path(), e))?;
            if kind.is_dir() {
                let sub = format!("{key}/");
                // Descend only where keys with the prefix can be.
                if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                    stack.push((entry.path(), sub));
                }
            } else if kind.is_file()
                && key.starts_with(prefix)
                && start_after.is_none_or(|s| key.as_str() > s)
            {
                keys.push(key);
            }
        }
    }
    keys.sort_unstable();
    keys.truncate(limit);
    Ok(keys)
}

#[async_trait]
impl Sink for LocalDir {
    async fn put(&self, key: &str, object: &Object) -> Result<(), SinkError> {
        let path = self.key_path(key)?;
        let key = key.to_owned();
        let bytes = object.bytes.clone();
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = Cancel(cancelled.clone());
        tokio::task::spawn_blocking(move || put_blocking(&path, &key, &bytes, &cancelled))
            .await
            .map_err(|e| SinkError::Io {
                doing: "writing",
                path: e.to_string(),
                source: std::io::Error::other("the writer task failed"),
            })?
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, SinkError> {
        let path = self.key_path(key)?;
        tokio::fs::read(&path).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SinkError::NotFound {
                key: key.to_owned(),
            },
            _ => io("reading", &path, e),
        })
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, SinkError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            list_blocking(&root, &prefix, start_after.as_deref(), limit)
        })
        .await
        .map_err(|e| SinkError::Io {
            doing: "listing",
            path: e.to_string(),
            source: std::io::Error::other("the listing task failed"),
        })?
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}
