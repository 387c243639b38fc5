//! The archive to read, for `replay` and `verify` (`evs_cli::location`
//! has the rules).

use anyhow::{bail, Result};
use evs_archiver::config::Location;
use evs_replay::Archive;

/// The archive `--archive` and the archiver's environment name; a local
/// directory must exist.
pub(super) async fn open(archive: Option<String>) -> Result<Archive> {
    let config = evs_cli::location::config(archive)?;
    if let Location::Local(dir) = &config.location {
        if !dir.is_dir() {
            bail!(
                "no archive at {}: the directory does not exist (pass --archive DIR or s3://BUCKET/PREFIX/)",
                dir.display()
            );
        }
    }
    Ok(Archive::new(
        evs_cli::location::sink(&config).await?,
        config.prefix,
    ))
}
