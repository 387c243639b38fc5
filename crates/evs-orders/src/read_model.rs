//! Where the read model lives, as `--read-model` and `EVS_READ_MODEL` name
//! it: `sqlite:FILE` (the default, `sqlite:./orders.db`), `postgres:URL`
//! (or the URL itself, `postgres://user@host:5432/db`), `dynamodb:TABLE`
//! (the Lambda's store) or `memory:` (rows in the process, for a rebuild
//! that prints them).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A read model's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadModel {
    /// Rows in memory, gone when the process ends.
    Memory,
    /// A DynamoDB table (the `Rows` layout: one item per row, key `Id`).
    DynamoDb(String),
    /// A SQLite database file (created when absent).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its connection URL.
    Postgres(String),
}

/// The read model when none is given.
pub const DEFAULT: &str = "sqlite:./orders.db";

const SCHEMES: &str = "sqlite:FILE, postgres:URL, dynamodb:TABLE or memory:";

/// Why a `--read-model` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadModelError {
    /// No `scheme:`.
    #[error("read model {0:?} has no scheme: give {SCHEMES}")]
    NoScheme(String),
    /// A scheme this binary does not know.
    #[error("unknown read model scheme {0:?}: give {SCHEMES}")]
    UnknownScheme(String),
    /// A scheme without the name it needs.
    #[error("read model {0}: names no {1}: give {0}{1}")]
    Missing(&'static str, &'static str),
    /// `memory:` with something after it.
    #[error("read model memory: takes nothing after the colon (got {0:?})")]
    MemoryWithName(String),
}

impl FromStr for ReadModel {
    type Err = ReadModelError;

    fn from_str(text: &str) -> Result<Self, ReadModelError> {
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(ReadModelError::NoScheme(text.to_owned()));
        };
        match scheme {
            "dynamodb" if rest.is_empty() => Err(ReadModelError::Missing("dynamodb:", "TABLE")),
            "dynamodb" => Ok(ReadModel::DynamoDb(rest.to_owned())),
            "memory" if rest.is_empty() => Ok(ReadModel::Memory),
            "memory" => Err(ReadModelError::MemoryWithName(rest.to_owned())),
            "sqlite" if rest.is_empty() => Err(ReadModelError::Missing("sqlite:", "FILE")),
            "sqlite" => Ok(ReadModel::Sqlite(PathBuf::from(rest))),
            // the URL itself: postgres://… or postgresql://…
            "postgres" | "postgresql" if rest.starts_with("//") => {
                Ok(ReadModel::Postgres(text.to_owned()))
            }
            "postgres" | "postgresql" if rest.is_empty() => {
                Err(ReadModelError::Missing("postgres:", "URL"))
            }
            "postgres" | "postgresql" => Ok(ReadModel::Postgres(rest.to_owned())),
            other => Err(ReadModelError::UnknownScheme(other.to_owned())),
        }
    }
}

impl fmt::Display for ReadModel {
    /// The read model as given, a PostgreSQL password left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadModel::Memory => f.write_str("memory:"),
            ReadModel::DynamoDb(table) => write!(f, "dynamodb:{table}"),
            ReadModel::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            ReadModel::Postgres(url) => write!(f, "postgres:{}", without_password(url)),
        }
    }
}

/// `url` with the password of `user:password@` replaced by `***`.
pub fn without_password(url: &str) -> String {
    let (head, rest) = url.split_once("//").unwrap_or(("", url));
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{head}//{user}:***@{host}"),
        None => url.to_owned(),
    }
}
