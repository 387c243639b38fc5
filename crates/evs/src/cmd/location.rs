//! The archive's configuration and object store from `--archive` and the archiver's
//! environment, for every subcommand that reads or writes an archive.

use std::sync::Arc;

use anyhow::{bail, Result};
use evs_archive::store::{LocalDir, ObjectStore, S3Store};
use evs_archiver::config::{Config, Location};
use evs_replay::Archive;

/// The archiver's own configuration rules (`EVS_ARCHIVE_PREFIX`,
/// `EVS_COMPRESSION`, …) with `--archive` standing for `EVS_ARCHIVE`, as
/// outside Lambda whatever the environment says.
pub(super) fn config(archive: Option<String>) -> Result<Config> {
    Config::from_lookup(|k| match k {
        "EVS_ARCHIVE" => archive.clone(),
        "AWS_LAMBDA_FUNCTION_NAME" => None,
        _ => std::env::var(k).ok(),
    })
    .map_err(|e| super::Usage(e.to_string()).into())
}

/// The object store a configuration names (S3 clients from the standard AWS
/// environment, path-style with a custom endpoint).
pub(super) async fn sink(config: &Config) -> Result<Arc<dyn ObjectStore>> {
    Ok(match &config.location {
        Location::Local(dir) => Arc::new(LocalDir::new(dir.clone())),
        Location::S3 { bucket } => Arc::new(S3Store::new(crate::aws::s3().await?, bucket.clone())),
    })
}

/// The archive to read: like [`config`] and [`sink`], and a local directory
/// must exist.
pub(super) async fn open(archive: Option<String>) -> Result<Archive> {
    let config = config(archive)?;
    if let Location::Local(dir) = &config.location {
        if !dir.is_dir() {
            bail!(
                "no archive at {}: the directory does not exist (pass --archive DIR or s3://BUCKET/PREFIX/)",
                dir.display()
            );
        }
    }
    Ok(Archive::new(sink(&config).await?, config.prefix))
}
