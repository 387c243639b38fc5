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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The dead-letter object, as written and read.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    /// How many entries (written for readers; not needed to read).
    #[serde(default)]
    count: usize,
    #[serde(borrow)]
    dead_letters: Vec<Entry<'a>>,
}

/// One dead letter in the object.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    event_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    detail: Cow<'a, str>,
    record: Cow<'a, Value>,
}

/// Encodes the dead letters of a batch, in the order given, as one JSON document.
pub fn encode_dead_letters(dead: &[DeadLetter]) -> Result<EncodedDeadLetters, EncodeError> {
    if dead.is_empty() {
        return Err(EncodeError::Empty);
    }
    let doc = Document {
        count: dead.len(),
        dead_letters: dead
            .iter()
            .map(|d| Entry {
                reason: Cow::Borrowed(d.reason.code()),
                event_name: match &d.reason {
                    DeadLetterReason::NotInsert { event_name } => Some(Cow::Borrowed(event_name)),
                    _ => None,
                },
                detail: Cow::Borrowed(&d.detail),
                record: Cow::Borrowed(&d.raw),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&doc).map_err(std::io::Error::from)?;
    Ok(EncodedDeadLetters {
        bytes,
        count: dead.len(),
        first_sequence: dead.iter().filter_map(DeadLetter::sequence_number).min(),
    })
}

/// Reads a dead-letter object back.
pub fn decode_dead_letters(bytes: &[u8]) -> Result<Vec<DeadLetter>, DecodeError> {
    let doc: Document<'_> =
        serde_json::from_slice(bytes).map_err(|source| DecodeError::Json { line: 1, source })?;
    doc.dead_letters
        .into_iter()
        .enumerate()
        .map(|(entry, e)| {
            let reason = DeadLetterReason::from_code(&e.reason, e.event_name.as_deref())
                .ok_or_else(|| DecodeError::UnknownReason {
                    entry,
                    code: e.reason.into_owned(),
                })?;
            Ok(DeadLetter {
                reason,
                detail: e.detail.into_owned(),
                raw: e.record.into_owned(),
            })
        })
        .collect()
}
