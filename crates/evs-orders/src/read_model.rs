//! Where the read model lives, as `--read-model` and `EVS_READ_MODEL` name
//! it: `dynamodb:TABLE` (the Lambda's store) or `memory:` (rows in the
//! process, for a rebuild that prints them).

use std::fmt;
use std::str::FromStr;

/// A read model's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadModel {
    /// Rows in memory, gone when the process ends.
    Memory,
    /// A DynamoDB table (the `Rows` layout: one item per row, key `Id`).
    DynamoDb(String),
}

/// Why a `--read-model` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadModelError {
    /// No `scheme:`.
    #[error("read model {0:?} has no scheme: give dynamodb:TABLE or memory:")]
    NoScheme(String),
    /// A scheme this binary does not know.
    #[error("unknown read model scheme {0:?}: give dynamodb:TABLE or memory:")]
    UnknownScheme(String),
    /// A scheme planned but not built.
    #[error("read model scheme {0:?} is not supported yet: give dynamodb:TABLE or memory:")]
    NotYet(String),
    /// `dynamodb:` without a table name.
    #[error("read model dynamodb: names no table: give dynamodb:TABLE")]
    NoTable,
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
            "dynamodb" if rest.is_empty() => Err(ReadModelError::NoTable),
            "dynamodb" => Ok(ReadModel::DynamoDb(rest.to_owned())),
            "memory" if rest.is_empty() => Ok(ReadModel::Memory),
            "memory" => Err(ReadModelError::MemoryWithName(rest.to_owned())),
            "sqlite" | "postgres" | "postgresql" => Err(ReadModelError::NotYet(scheme.to_owned())),
            other => Err(ReadModelError::UnknownScheme(other.to_owned())),
        }
    }
}

impl fmt::Display for ReadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadModel::Memory => f.write_str("memory:"),
            ReadModel::DynamoDb(table) => write!(f, "dynamodb:{table}"),
        }
    }
}
