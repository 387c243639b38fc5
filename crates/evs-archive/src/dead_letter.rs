//! Dead letters: stream records that are not archived as events, with why, and the dead-letter object.
//!
//! [`encode_dead_letters`] writes the dead letters of a batch as one JSON
//! document:
//!
//! ```json
//! {"count":1,"deadLetters":[{"reason":"not-insert","eventName":"MODIFY",
//!   "detail":"eventName is \"MODIFY\": …","record":{…the raw stream record…}}]}
//! ```
//!
//! [`decode_dead_letters`] reads it back.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::object::{DecodeError, EncodeError, DEAD_LETTER_CONTENT_TYPE};
use crate::seq::SequenceNumber;

/// Why a stream record was not archived as an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The record is not the JSON of a DynamoDB Streams record (not an object;
    /// no `eventName`, `eventID`, `dynamodb` or valid `SequenceNumber`; a
    /// `NewImage` that is not an object; an unusable `ApproximateCreationDateTime`).
    MalformedRecord,
    /// Not an `INSERT`: the table is append-only, so `MODIFY`/`REMOVE` mean
    /// someone changed history outside the store.
    NotInsert {
        /// The record's `eventName`.
        event_name: String,
    },
    /// No `NewImage`, or an empty one (a stream view type without new images).
    MissingNewImage,
    /// Invalid DynamoDB JSON, or an event attribute of the wrong type or value.
    InvalidAttribute,
    /// The item is not an event: it lacks `StreamId`, `EventId` or `EventName`.
    NotAnEvent,
    /// Neither the item's `Timestamp` nor the record's `ApproximateCreationDateTime`.
    MissingTimestamp,
}

impl DeadLetterReason {
    /// A short stable code for logs, metrics and the dead-letter object.
    pub fn code(&self) -> &'static str {
        match self {
            DeadLetterReason::MalformedRecord => "malformed-record",
            DeadLetterReason::NotInsert { .. } => "not-insert",
            DeadLetterReason::MissingNewImage => "missing-new-image",
            DeadLetterReason::InvalidAttribute => "invalid-attribute",
            DeadLetterReason::NotAnEvent => "not-an-event",
            DeadLetterReason::MissingTimestamp => "missing-timestamp",
        }
    }

    /// The reason with this [`code`](Self::code); `event_name` fills [`Self::NotInsert`].
    pub fn from_code(code: &str, event_name: Option<&str>) -> Option<Self> {
        Some(match code {
            "malformed-record" => DeadLetterReason::MalformedRecord,
            "not-insert" => DeadLetterReason::NotInsert {
                event_name: event_name.unwrap_or_default().to_owned(),
            },
            "missing-new-image" => DeadLetterReason::MissingNewImage,
            "invalid-attribute" => DeadLetterReason::InvalidAttribute,
            "not-an-event" => DeadLetterReason::NotAnEvent,
            "missing-timestamp" => DeadLetterReason::MissingTimestamp,
            _ => return None,
        })
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::NotInsert { event_name } => write!(f, "not-insert ({event_name})"),
            other => f.write_str(other.code()),
        }
    }
}

/// A stream record that is not archived as an event, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The typed reason.
    pub reason: DeadLetterReason,
    /// A human explanation (which field, what was wrong).
    pub detail: String,
    /// The record exactly as it was delivered.
    pub raw: Value,
}

impl DeadLetter {
    /// The record's `eventID`, if it has one.
    pub fn record_id(&self) -> Option<&str> {
        self.raw.get("eventID").and_then(Value::as_str)
    }

    /// The record's `SequenceNumber`, if it has a valid one.
    pub fn sequence_number(&self) -> Option<SequenceNumber> {
        let text = self.raw.get("dynamodb")?.get("SequenceNumber")?.as_str()?;
        SequenceNumber::new(text).ok()
    }
}

/// What [`classify`] makes of one stream record (boxed: a batch holds up to
/// 10,000 of them and the two kinds differ much in size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedDeadLetters {
    /// The object's bytes (uncompressed JSON).
    pub bytes: Vec<u8>,
    /// How many dead letters it holds.
    pub count: usize,
    /// The smallest valid `SequenceNumber` among the records, if any has one.
    pub first_sequence: Option<SequenceNumber>,
}

impl EncodedDeadLetters {
    /// The object's `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        DEAD_LETTER_CONTENT_TYPE
    }

    /// A summary for the object's user metadata: `evs-count` and, when known,
    /// `evs-first-sequence`.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([("evs-count".to_owned(), self.count.to_string())]);
        if let Some(seq) = &self.first_sequence {
            m.insert("evs-first-sequence".to_owned(), seq.to_string());
        }
        m
    }
}

/// Encodes the dead letters of a batch, in the order given, as one JSON document.
pub fn encode_dead_letters(dead: &[DeadLetter]) -> Result<EncodedDeadLetters, EncodeError> {
    if dead.is_empty() {
        return Err(EncodeError::Empty);
    }
    let entries: Vec<Value> = dead
        .iter()
        .map(|d| {
            let mut entry = Map::new();
            entry.insert("reason".into(), Value::String(d.reason.code().into()));
            if let DeadLetterReason::NotInsert { event_name } = &d.reason {
                entry.insert("eventName".into(), Value::String(event_name.clone()));
            }
            entry.insert("detail".into(), Value::String(d.detail.clone()));
            entry.insert("record".into(), d.raw.clone());
            Value::Object(entry)
        })
        .collect();
    let mut doc = Map::new();
    doc.insert("count".into(), Value::from(dead.len()));
    doc.insert("deadLetters".into(), Value::Array(entries));
    let bytes = serde_json::to_vec(&Value::Object(doc)).map_err(std::io::Error::from)?;
    Ok(EncodedDeadLetters {
        bytes,
        count: dead.len(),
        first_sequence: dead.iter().filter_map(DeadLetter::sequence_number).min(),
    })
}

/// Reads a dead-letter object back.
pub fn decode_dead_letters(bytes: &[u8]) -> Result<Vec<DeadLetter>, DecodeError> {
    let bad = |what: &str| DecodeError::DeadLetters(what.to_owned());
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|source| DecodeError::Json { line: 1, source })?;
    let entries = doc
        .get("deadLetters")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no deadLetters array"))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let code = entry.get("reason").and_then(Value::as_str);
            let event_name = entry.get("eventName").and_then(Value::as_str);
            let reason = code
                .and_then(|c| DeadLetterReason::from_code(c, event_name))
                .ok_or_else(|| bad(&format!("entry {i}: unknown or missing reason")))?;
            let detail = entry
                .get("detail")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("entry {i}: no detail")))?
                .to_owned();
            let raw = entry
                .get("record")
                .cloned()
                .ok_or_else(|| bad(&format!("entry {i}: no record")))?;
            Ok(DeadLetter {
                reason,
                detail,
                raw,
            })
        })
        .collect()
}
