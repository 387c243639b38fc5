//! The event and position types the sequencer works with.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// One archived event, reduced to what ordering needs plus the line itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayEvent {
    /// The event's stream (`streamId`).
    pub stream_id: String,
    /// The event's number in its stream (`eventId`): 1, 2, 3, … with no gap.
    pub event_id: u64,
    /// The event as one line of JSON text (carried along, never inspected;
    /// kept as text so that delivering it costs no re-encoding).
    pub line: Box<RawValue>,
}

impl PartialEq for ReplayEvent {
    fn eq(&self, other: &Self) -> bool {
        self.stream_id == other.stream_id
            && self.event_id == other.event_id
            && self.line.get() == other.line.get()
    }
}

/// Why a line is not a [`ReplayEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The line is not a JSON object.
    #[error("an archive line must be a JSON object")]
    NotAnObject,
    /// `streamId` is missing or not a non-empty string.
    #[error("an archive line must have a non-empty string \"streamId\"")]
    StreamId,
    /// `eventId` is missing or not an integer of at least 1.
    #[error("an archive line must have an integer \"eventId\" of at least 1")]
    EventId,
}

impl ReplayEvent {
    /// An event from its parts; `line` is the event as JSON.
    pub fn new(stream_id: impl Into<String>, event_id: u64, line: &Value) -> Self {
        Self {
            stream_id: stream_id.into(),
            event_id,
            line: raw(line),
        }
    }

    /// An event from its parts; `line` is JSON text already (not checked).
    pub fn from_raw(stream_id: impl Into<String>, event_id: u64, line: Box<RawValue>) -> Self {
        Self {
            stream_id: stream_id.into(),
            event_id,
            line,
        }
    }

    /// The line as parsed JSON.
    pub fn line_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.line.get())
    }

    /// Reads `streamId` and `eventId` out of an archived line (the shape of
    /// `evs_archiver::record::ArchivedEvent::to_line`) and keeps the line.
    pub fn from_line(line: &Value) -> Result<Self, EventError> {
        let object = line.as_object().ok_or(EventError::NotAnObject)?;
        let stream_id = object
            .get("streamId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(EventError::StreamId)?
            .to_owned();
        let event_id = object
            .get("eventId")
            .and_then(Value::as_u64)
            .filter(|&id| id >= 1)
            .ok_or(EventError::EventId)?;
        Ok(Self {
            stream_id,
            event_id,
            line: raw(line),
        })
    }
}

/// A JSON value as compact text. Serializing a `Value` cannot fail (its map
/// keys are strings); should it ever, the line is `null`, never a panic.
fn raw(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_default()
}

/// Where an event was read: the archive object's key and its seal time.
///
/// Keys are compared as strings (S3 lists them in UTF-8 byte order, which
/// for archive keys is seal-time order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivePosition {
    /// The object key.
    pub key: String,
    /// The object's seal time, epoch milliseconds (`ArchiveKey::sealed_at_ms`).
    pub sealed_at_ms: i64,
}

impl ArchivePosition {
    /// A position from a key and its seal time.
    pub fn new(key: impl Into<String>, sealed_at_ms: i64) -> Self {
        Self {
            key: key.into(),
            sealed_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_line_reads_the_ids_and_keeps_the_line() {
        let line = json!({"streamId": "order-1", "eventId": 3, "eventName": "Paid"});
        let event = ReplayEvent::from_line(&line).unwrap();
        assert_eq!(event, ReplayEvent::new("order-1", 3, &line));
    }

    #[test]
    fn from_line_refuses_bad_lines() {
        assert_eq!(
            ReplayEvent::from_line(&json!([1])),
            Err(EventError::NotAnObject)
        );
        assert_eq!(
            ReplayEvent::from_line(&json!({"eventId": 1})),
            Err(EventError::StreamId)
        );
        assert_eq!(
            ReplayEvent::from_line(&json!({"streamId": "", "eventId": 1})),
            Err(EventError::StreamId)
        );
        assert_eq!(
            ReplayEvent::from_line(&json!({"streamId": "a", "eventId": 0})),
            Err(EventError::EventId)
        );
        assert_eq!(
            ReplayEvent::from_line(&json!({"streamId": "a", "eventId": "1"})),
            Err(EventError::EventId)
        );
        assert_eq!(
            ReplayEvent::from_line(&json!({"streamId": "a", "eventId": 1.5})),
            Err(EventError::EventId)
        );
    }
}
