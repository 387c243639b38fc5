//! What the SQL stores share: the ledger's `parked` JSON and how rows and
//! numbers read back.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::projection::{Ledger, Parked, RowKey};

/// A ledger entry's `parked` column.
#[derive(Serialize, Deserialize)]
struct ParkedJson {
    event_id: u64,
    event_name: String,
    reason: String,
    at_ms: i64,
}

/// A park as its column's JSON.
pub(super) fn parked_json(parked: &Parked) -> Result<String, StoreError> {
    serde_json::to_string(&ParkedJson {
        event_id: parked.event_id,
        event_name: parked.event_name.clone(),
        reason: parked.reason.clone(),
        at_ms: parked.at_ms,
    })
    .map_err(|e| StoreError::Backend {
        message: format!("a park does not encode: {e}"),
        transient: false,
        source: None,
    })
}

/// A stored revision or version (never negative).
pub(super) fn unsigned(n: i64, what: impl FnOnce() -> String) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|e| StoreError::Corrupt {
        what: what(),
        source: Box::new(e),
    })
}

/// A ledger entry from its columns.
pub(super) fn ledger_of(
    stream: &str,
    version: i64,
    parked: Option<String>,
) -> Result<Ledger, StoreError> {
    let what = || format!("the ledger entry of stream {stream:?}");
    let parked = match parked {
        None => None,
        Some(text) => {
            let p: ParkedJson = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                what: what(),
                source: Box::new(e),
            })?;
            Some(Parked {
                event_id: p.event_id,
                event_name: p.event_name,
                reason: p.reason,
                at_ms: p.at_ms,
            })
        }
    };
    Ok(Ledger {
        version: unsigned(version, what)?,
        parked,
    })
}

/// A row from its JSON text, through a JSON value as the DynamoDB store
/// reads it (serde_json's `arbitrary_precision` reads a float inside an
/// untagged enum from a value, not from text).
pub(super) fn decode<R: DeserializeOwned>(key: &RowKey, text: &str) -> Result<R, StoreError> {
    serde_json::from_str(text)
        .and_then(serde_json::from_value)
        .map_err(|e| StoreError::Corrupt {
            what: format!("row {key}"),
            source: Box::new(e),
        })
}
