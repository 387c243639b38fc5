//! The archive's configuration and object store from `--archive` and the
//! archiver's environment, for every command that reads or writes an archive.

use std::sync::Arc;

use anyhow::Result;
use evs_archive::store::{LocalDir, ObjectStore, S3Store};
use evs_archiver::config::{Config, Location};

/// The archiver's own configuration rules (`EVS_ARCHIVE_PREFIX`,
/// `EVS_COMPRESSION`, …) with `--archive` standing for `EVS_ARCHIVE`, as
/// outside Lambda whatever the environment says.
pub fn config(archive: Option<String>) -> Result<Config> {
    Config::from_lookup(|k| match k {
        "EVS_ARCHIVE" => archive.clone(),
        "AWS_LAMBDA_FUNCTION_NAME" => None,
        _ => std::env::var(k).ok(),
    })
    .map_err(|e| crate::Usage(e.to_string()).into())
}

/// Where a configuration's archive objects are, in full, as a person
/// names it: `s3://BUCKET/PREFIX` or the directory joined with the prefix.
pub fn describe(config: &Config) -> String {
    let prefix = config.prefix.as_str();
    match &config.location {
        Location::S3 { bucket } => format!("s3://{bucket}/{prefix}"),
        Location::Local(dir) => dir.join(prefix).display().to_string(),
    }
}

/// The object store a configuration names (S3 clients from the standard AWS
/// environment, path-style with a custom endpoint).
pub async fn sink(config: &Config) -> Result<Arc<dyn ObjectStore>> {
    Ok(match &config.location {
        Location::Local(dir) => Arc::new(LocalDir::new(dir.clone())),
        Location::S3 { bucket } => Arc::new(S3Store::new(crate::aws::s3().await?, bucket.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_described_with_its_prefix() {
        for (archive, described) in [
            ("s3://bucket/archive/", "s3://bucket/archive/"),
            ("s3://bucket", "s3://bucket/events/"),
            ("dir", "dir/events/"),
        ] {
            let config = config(Some(archive.to_owned())).unwrap();
            assert_eq!(describe(&config), described, "{archive}");
        }
    }
}
