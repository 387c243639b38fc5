//! A local directory with exactly the bucket's key layout (the offline default).

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{Object, ObjectStore, StoreError, Stored};

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
    pub fn key_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidKey {
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

    /// Writes `object` at `key` on a blocking thread (`put` and `replace`).
    async fn write(&self, key: &str, object: &Object, how: Publish) -> Result<(), StoreError> {
        let path = self.key_path(key)?;
        let key = key.to_owned();
        let bytes = object.bytes.clone();
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = Cancel(cancelled.clone());
        tokio::task::spawn_blocking(move || put_blocking(&path, &key, &bytes, &cancelled, how))
            .await
            .map_err(|e| StoreError::Io {
                doing: "writing",
                path: e.to_string(),
                source: std::io::Error::other("the writer task failed"),
            })?
    }
}

/// How a written temporary file becomes the key's file.
#[derive(Debug, Clone, Copy)]
enum Publish {
    /// A hard link, which fails when the key exists (`put`).
    IfAbsent,
    /// A rename over whatever is there (`replace`).
    Replacing,
}

fn io(doing: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
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

/// `create_dir_all`, then each directory it created is synced through its
/// parent, so that a crash cannot lose the path to an object that `put`
/// reported durable.
fn create_dirs_durably(dir: &Path) -> Result<(), StoreError> {
    let mut missing = Vec::new();
    let mut probe = Some(dir);
    while let Some(d) = probe {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        probe = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(|e| io("creating directory", dir, e))?;
    for created in missing {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(d) = std::fs::File::open(parent) {
            d.sync_all()
                .map_err(|e| io("syncing directory", parent, e))?;
        }
    }
    Ok(())
}

/// Replaces the file at `path` with `bytes` atomically and durably: a
/// temporary file beside it ([`replacement_path`]) is written and synced,
/// then renamed over `path`, and the directory synced (best effort: not
/// every platform can open a directory). A reader sees the old contents or
/// the new, never a part. The one way the workspace rewrites a state file
/// (the replay's and the pump's checkpoints).
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = replacement_path(path);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The temporary file [`replace_file`] writes before renaming it over
/// `path`: `.<name>.tmp-<pid>` in the same directory (a rename is atomic
/// only within one file system).
pub fn replacement_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let file = format!(".{name}.tmp-{}", std::process::id());
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(file),
        _ => PathBuf::from(file),
    }
}

fn put_blocking(
    path: &Path,
    key: &str,
    bytes: &[u8],
    cancelled: &AtomicBool,
    how: Publish,
) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dirs_durably(dir)?;
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
        // key exists: never a partial object, never an overwrite. A rename
        // replaces atomically: a reader sees the old file or the new.
        match how {
            Publish::IfAbsent => std::fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => StoreError::AlreadyExists {
                    key: key.to_owned(),
                },
                _ => io("publishing", path, e),
            })?,
            Publish::Replacing => {
                std::fs::rename(&tmp, path).map_err(|e| io("publishing", path, e))?
            }
        }
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Lists in key order by walking the tree in key order: each directory's
/// entries sorted by the key they stand for (a directory `d` as `d/`), whole
/// subtrees at or before `start_after` or outside `prefix` skipped, and the
/// walk stops at `limit` keys. A follower listing after its cursor reads only
/// the directories on the path to the cursor and what comes after it.
fn list_blocking(
    root: &Path,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    if limit > 0 {
        walk(root, "", prefix, start_after, limit, &mut keys)?;
    }
    Ok(keys)
}

fn walk(
    dir: &Path,
    key_prefix: &str,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    keys: &mut Vec<String>,
) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("listing", dir, e)),
    };
    // (key or subtree prefix, is a directory)
    let mut children: Vec<(String, bool)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io("listing", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: not a key this archive wrote
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| io("listing", &entry.path(), e))?;
        if kind.is_dir() {
            let sub = format!("{key_prefix}{name}/");
            // Descend only where keys with the prefix can be, and not into
            // a subtree whose every key sorts at or before `start_after`.
            let in_prefix = sub.starts_with(prefix) || prefix.starts_with(&sub);
            let all_before = start_after.is_some_and(|s| sub.as_str() < s && !s.starts_with(&sub));
            if in_prefix && !all_before {
                children.push((sub, true));
            }
        } else if kind.is_file() {
            let key = format!("{key_prefix}{name}");
            if key.starts_with(prefix) && start_after.is_none_or(|s| key.as_str() > s) {
                children.push((key, false));
            }
        }
    }
    // Keys under `d/` sort together, between the siblings around `d/`.
    children.sort_unstable();
    for (key, is_dir) in children {
        if keys.len() >= limit {
            break;
        }
        if is_dir {
            let name = key[key_prefix.len()..key.len() - 1].to_owned();
            walk(&dir.join(name), &key, prefix, start_after, limit, keys)?;
        } else {
            keys.push(key);
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalDir {
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError> {
        self.write(key, object, Publish::IfAbsent)
            .await
            .map(|()| Stored::default())
    }

    async fn replace(&self, key: &str, object: &Object) -> Result<(), StoreError> {
        self.write(key, object, Publish::Replacing).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.key_path(key)?;
        tokio::fs::read(&path).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound {
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
    ) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            list_blocking(&root, &prefix, start_after.as_deref(), limit)
        })
        .await
        .map_err(|e| StoreError::Io {
            doing: "listing",
            path: e.to_string(),
            source: std::io::Error::other("the listing task failed"),
        })?
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk lists exactly what a sort of every key would, for awkward
    /// names (`a.b` sorts before `a/…`, `a0` after), any prefix, any
    /// `start_after` and any limit.
    #[test]
    fn the_ordered_walk_equals_a_full_sort() {
        let root = std::env::temp_dir().join(format!(
            "evs-local-walk-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let keys = [
            "a!",
            "a.b",
            "a/x",
            "a/y/z",
            "a0",
            "ab/c",
            "b/a.b",
            "b/a/c",
            "b/a0",
            "events/2026/11/23/22/k1",
            "events/2026/11/23/23/k2",
            "events/2026/11/24/00/k3",
            "events/2027/01/01/00/k4",
            "evx",
        ];
        for key in keys {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, key).unwrap();
        }
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort_unstable();
        let mut probes: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        probes.extend(
            [
                "",
                "a/",
                "a/y",
                "b/a",
                "events/2026/11/23/23/",
                "events/9",
                "z",
            ]
            .map(String::from),
        );
        for prefix in ["", "a", "a/", "b/a", "ev", "events/", "events/2026/1", "q"] {
            for start in std::iter::once(None).chain(probes.iter().map(|p| Some(p.as_str()))) {
                for limit in [0, 1, 2, 100] {
                    let expected: Vec<String> = sorted
                        .iter()
                        .filter(|k| k.starts_with(prefix) && start.is_none_or(|s| **k > s))
                        .take(limit)
                        .map(|k| (*k).to_owned())
                        .collect();
                    let got = list_blocking(&root, prefix, start, limit).unwrap();
                    assert_eq!(
                        got, expected,
                        "prefix {prefix:?} after {start:?} limit {limit}"
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
