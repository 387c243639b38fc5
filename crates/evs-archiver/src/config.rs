//! The archiver's configuration, from environment variables, checked once at
//! start-up with a clear message. Parsing takes a lookup function, so it is
//! tested without touching the process environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `EVS_ARCHIVE` | `s3://BUCKET/PREFIX/` or a local directory (in Lambda only with `EVS_LOCAL_ARCHIVE_IN_LAMBDA=true`, for `cargo lambda watch`) | `./archive` outside Lambda; in Lambda a bucket is required |
//! | `EVS_ARCHIVE_BUCKET` | the bucket (instead of an `s3://` `EVS_ARCHIVE`) | |
//! | `EVS_ARCHIVE_PREFIX` | key prefix of archive objects, ending in `/`; it must not overlap the dead-letter prefix (so it cannot be empty) | `events/` |
//! | `EVS_DEAD_LETTER_PREFIX` | key prefix of dead-letter objects | `dead-letter/` |
//! | `EVS_COMPRESSION` | `gzip`, `zstd` or `none` | `gzip` |

use std::path::PathBuf;

use evs_archive::store::{LocalDir, ObjectStore, S3Store};
use evs_archive::{Compression, Prefix};

/// Where the archive lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An S3 bucket.
    S3 {
        /// Bucket name.
        bucket: String,
    },
    /// A local directory with the bucket's key layout.
    Local(PathBuf),
}

/// Everything the handler needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where objects go.
    pub location: Location,
    /// Key prefix of archive objects.
    pub prefix: Prefix,
    /// Key prefix of dead-letter objects.
    pub dead_letter_prefix: Prefix,
    /// Compression of archive objects.
    pub compression: Compression,
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Default local archive directory.
pub const DEFAULT_LOCAL_ARCHIVE: &str = "archive";
/// Default key prefix of archive objects.
pub const DEFAULT_PREFIX: &str = "events/";
/// Default key prefix of dead-letter objects.
pub const DEFAULT_DEAD_LETTER_PREFIX: &str = "dead-letter/";

fn default_prefix(text: &str) -> Prefix {
    Prefix::new(text).unwrap_or_else(|_| Prefix::root())
}

impl Config {
    /// A local-directory configuration with default prefixes.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self {
            location: Location::Local(dir.into()),
            prefix: default_prefix(DEFAULT_PREFIX),
            dead_letter_prefix: default_prefix(DEFAULT_DEAD_LETTER_PREFIX),
            compression: Compression::Gzip,
        }
    }

    /// Parses an archive location: `s3://bucket/prefix/` or a directory.
    /// Returns the location and the prefix the URL carries, if any.
    pub fn parse_location(text: &str) -> Result<(Location, Option<String>), ConfigError> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket)?;
            let prefix = (!prefix.is_empty()).then(|| prefix.to_owned());
            return Ok((
                Location::S3 {
                    bucket: bucket.to_owned(),
                },
                prefix,
            ));
        }
        if text.trim().is_empty() {
            return Err(ConfigError("the archive location is empty".into()));
        }
        if text.contains("://") {
            return Err(ConfigError(format!(
                "archive {text:?}: only s3:// URLs and local directories are supported"
            )));
        }
        Ok((Location::Local(PathBuf::from(text)), None))
    }

    /// Reads the configuration through `lookup` (the environment in `main`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let in_lambda = get("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let (location, url_prefix) = match (get("EVS_ARCHIVE"), get("EVS_ARCHIVE_BUCKET")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "set EVS_ARCHIVE or EVS_ARCHIVE_BUCKET, not both".into(),
                ))
            }
            (Some(a), None) => Self::parse_location(&a)?,
            (None, Some(bucket)) => {
                check_bucket(&bucket)?;
                (Location::S3 { bucket }, None)
            }
            (None, None) if in_lambda => {
                return Err(ConfigError(
                    "EVS_ARCHIVE_BUCKET is not set: in Lambda the archive must be an S3 bucket"
                        .into(),
                ))
            }
            (None, None) => (Location::Local(PathBuf::from(DEFAULT_LOCAL_ARCHIVE)), None),
        };
        // A Lambda's disk vanishes with its sandbox: archiving there would
        // acknowledge batches and lose them. Local emulators opt in.
        if in_lambda
            && matches!(location, Location::Local(_))
            && get("EVS_LOCAL_ARCHIVE_IN_LAMBDA").as_deref() != Some("true")
        {
            return Err(ConfigError(
                "in Lambda the archive must be an S3 bucket (s3://BUCKET/PREFIX/); set EVS_LOCAL_ARCHIVE_IN_LAMBDA=true only under a local emulator such as `cargo lambda watch`".into(),
            ));
        }
        let from_url = url_prefix.is_some();
        let prefix = match (url_prefix, get("EVS_ARCHIVE_PREFIX")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "the prefix is given twice: in the s3:// URL and in EVS_ARCHIVE_PREFIX".into(),
                ))
            }
            (Some(p), None) | (None, Some(p)) => p,
            (None, None) => DEFAULT_PREFIX.to_owned(),
        };
        if from_url && !prefix.ends_with('/') {
            let bucket = match &location {
                Location::S3 { bucket } => bucket.as_str(),
                Location::Local(_) => "",
            };
            return Err(ConfigError(format!(
                "archive s3://{bucket}/{prefix}: the key prefix {prefix:?} must end with '/' \
                 (write s3://{bucket}/{prefix}/)"
            )));
        }
        let dead_letter_prefix =
            get("EVS_DEAD_LETTER_PREFIX").unwrap_or_else(|| DEFAULT_DEAD_LETTER_PREFIX.to_owned());
        let prefix = Prefix::new(&prefix).map_err(|e| {
            ConfigError(if from_url {
                format!("the key prefix of the s3:// archive URL: {e}")
            } else {
                format!("EVS_ARCHIVE_PREFIX={prefix:?}: {e}")
            })
        })?;
        let dead_letter_prefix = Prefix::new(&dead_letter_prefix).map_err(|e| {
            ConfigError(format!(
                "EVS_DEAD_LETTER_PREFIX={dead_letter_prefix:?}: {e}"
            ))
        })?;
        let (p, d) = (prefix.as_str(), dead_letter_prefix.as_str());
        if p.starts_with(d) || d.starts_with(p) {
            return Err(ConfigError(format!(
                "the archive prefix {prefix:?} and the dead-letter prefix {dead_letter_prefix:?} overlap: a replay would read dead letters as events"
            )));
        }
        let compression = match get("EVS_COMPRESSION")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("gzip") => Compression::Gzip,
            Some("zstd") => Compression::Zstd,
            Some("none") => Compression::None,
            Some(other) => {
                return Err(ConfigError(format!(
                    "EVS_COMPRESSION={other:?}: use gzip, zstd or none"
                )))
            }
        };
        Ok(Self {
            location,
            prefix,
            dead_letter_prefix,
            compression,
        })
    }
}

fn check_bucket(bucket: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        // Of those, only a letter or a digit may start or end it.
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{bucket:?} is not a valid bucket name (3-63 lowercase letters, digits, '-' or '.')"
        )))
    }
}

/// The object store a configuration names. For S3 the client comes from the
/// standard AWS environment, with path-style addressing when a custom
/// endpoint (`AWS_ENDPOINT_URL`) is set, as emulators need.
pub async fn store_for(config: &Config) -> Box<dyn ObjectStore> {
    match &config.location {
        Location::Local(dir) => Box::new(LocalDir::new(dir.clone())),
        Location::S3 { bucket } => Box::new(S3Store::new(
            evs_archive::store::s3::client_from_env().await,
            bucket.clone(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_to_a_local_directory() {
        let c = from(&[]).unwrap();
        assert_eq!(c.location, Location::Local(PathBuf::from("archive")));
        assert_eq!(
            (c.prefix.as_str(), c.dead_letter_prefix.as_str()),
            ("events/", "dead-letter/")
        );
        assert_eq!(Config::local("archive"), c);
        assert_eq!(c.compression, Compression::Gzip);
    }

    #[test]
    fn s3_from_url_or_bucket() {
        let c = from(&[("EVS_ARCHIVE", "s3://my-bucket/archive/v1/")]).unwrap();
        assert_eq!(
            c.location,
            Location::S3 {
                bucket: "my-bucket".into()
            }
        );
        assert_eq!(c.prefix.as_str(), "archive/v1/");
        let c = from(&[
            ("EVS_ARCHIVE_BUCKET", "my-bucket"),
            ("EVS_ARCHIVE_PREFIX", "x/"),
            ("EVS_COMPRESSION", "none"),
        ])
        .unwrap();
        assert_eq!(
            (c.prefix.as_str(), c.compression),
            ("x/", Compression::None)
        );
        let c = from(&[("EVS_ARCHIVE", "d"), ("EVS_COMPRESSION", "ZSTD")]).unwrap();
        assert_eq!(c.compression, Compression::Zstd);
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        for (env, says) in [
            (
                vec![("EVS_ARCHIVE", "s3://Bad_Bucket/")],
                "not a valid bucket",
            ),
            (
                vec![("EVS_ARCHIVE_PREFIX", "events")],
                "EVS_ARCHIVE_PREFIX=\"events\"",
            ),
            (
                vec![("EVS_ARCHIVE_PREFIX", "/events/")],
                "EVS_ARCHIVE_PREFIX=\"/events/\"",
            ),
            (
                vec![("EVS_ARCHIVE", "s3://b-1/p")],
                "must end with '/' (write s3://b-1/p/)",
            ),
            (
                vec![("EVS_ARCHIVE", "s3://b-1//p/")],
                "the key prefix of the s3:// archive URL",
            ),
            (
                vec![("EVS_COMPRESSION", "brotli")],
                "use gzip, zstd or none",
            ),
            (
                vec![("EVS_ARCHIVE", "s3://b-1/p/"), ("EVS_ARCHIVE_PREFIX", "q/")],
                "given twice",
            ),
            (
                vec![("EVS_ARCHIVE", "d"), ("EVS_ARCHIVE_BUCKET", "b-1")],
                "not both",
            ),
            (
                vec![("AWS_LAMBDA_FUNCTION_NAME", "f")],
                "EVS_ARCHIVE_BUCKET is not set",
            ),
            (vec![("EVS_ARCHIVE", "gs://b/")], "only s3://"),
            (
                vec![("AWS_LAMBDA_FUNCTION_NAME", "f"), ("EVS_ARCHIVE", "/tmp/a")],
                "must be an S3 bucket",
            ),
            (
                vec![
                    ("EVS_ARCHIVE_PREFIX", "a/"),
                    ("EVS_DEAD_LETTER_PREFIX", "a/dl/"),
                ],
                "overlap",
            ),
        ] {
            let err = from(&env).unwrap_err().to_string();
            assert!(err.contains(says), "{env:?}: {err}");
        }
    }
}
