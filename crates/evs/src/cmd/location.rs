//! Opening an archive from `--archive` and the archiver's environment.

use std::sync::Arc;

use anyhow::{bail, Result};
use evs_archiver::config::{Config, Location};
use evs_archiver::sink::{LocalDir, S3Sink, Sink};
use evs_replay::Archive;

/// The archive `--archive` (or `EVS_ARCHIVE`) names, with the archiver's
/// own rules for the prefix (`EVS_ARCHIVE_PREFIX`, or the `s3://` URL's).
pub async fn open(archive: Option<String>) -> Result<Archive> {
    let config = Config::from_lookup(|k| match k {
        "EVS_ARCHIVE" => archive.clone(),
        // Reading runs here, not in Lambda, whatever the environment says.
        "AWS_LAMBDA_FUNCTION_NAME" => None,
        _ => std::env::var(k).ok(),
    })?;
    let sink: Arc<dyn Sink> = match &config.location {
        Location::Local(dir) => {
            if !dir.is_dir() {
                bail!(
                    "no archive at {}: the directory does not exist (pass --archive DIR or s3://BUCKET/PREFIX/)",
                    dir.display()
                );
            }
            Arc::new(LocalDir::new(dir.clone()))
        }
        Location::S3 { bucket } => Arc::new(S3Sink::new(crate::aws::s3().await?, bucket.clone())),
    };
    Ok(Archive::new(sink, config.prefix))
}
