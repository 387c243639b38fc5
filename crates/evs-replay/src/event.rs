//! The event and position types the sequencer works with.

use serde::{Deserialize, Serialize};
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
    /// kept as text so that delivering it costs no re-encoding). Every
    /// constructor makes it one JSON value; it is embedded as JSON (not as a
    /// string) in a checkpoint.
    #[serde(with = "json_text")]
    line: Box<str>,
    /// The line's `timestamp` (epoch ms) when it was read as the line was
    /// decoded (a replay from a time asks for it); otherwise
    /// [`ReplayEvent::timestamp_ms`] reads it from the line.
    #[serde(skip)]
    timestamp_ms: Option<i64>,
    /// The event as the table holds it, built as the line was decoded when
    /// the replay was asked to ([`crate::ReplayOptions::events`]: a
    /// projection's rebuild, on the read-ahead workers); never part of a
    /// checkpoint.
    #[serde(skip)]
    recorded: Option<Box<evs_core::RecordedEvent>>,
}

/// Events are equal when their stream, number and line are: the timestamp
/// kept beside the line is only a copy of what the line says.
impl PartialEq for ReplayEvent {
    fn eq(&self, other: &Self) -> bool {
        self.stream_id == other.stream_id
            && self.event_id == other.event_id
            && self.line == other.line
    }
}

impl Eq for ReplayEvent {}

/// A `Box<str>` holding JSON text, (de)serialized as that JSON. Checked when
/// written (a checkpoint's held events), never on the delivery path.
mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub(super) fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::from_string(text.to_owned())
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Box<str>, D::Error> {
        Ok(Box::<RawValue>::deserialize(deserializer)?.into())
    }
}

impl ReplayEvent {
    /// An event from its parts; `line` is the event as JSON.
    pub fn new(stream_id: impl Into<String>, event_id: u64, line: &Value) -> Self {
        Self {
            stream_id: stream_id.into(),
            event_id,
            line: raw(line),
            timestamp_ms: None,
            recorded: None,
        }
    }

    /// An event read from the table, in the line shape of `evs read`
    /// ([`evs_archive::event_line`]).
    pub fn of_recorded(event: &evs_core::RecordedEvent) -> Self {
        // Serializing a line cannot fail (every map key is a string); should
        // it ever, the line is `null`, never a panic (as in `raw`).
        let line = serde_json::to_string(&evs_archive::event_line(event))
            .unwrap_or_else(|_| "null".to_owned());
        Self::from_json_text(event.stream_id.to_string(), event.event_id, line)
    }

    /// An event from its parts; `text` must be one JSON value (the crate's
    /// own line converter guarantees it: it copies already parsed JSON).
    pub(crate) fn from_json_text(
        stream_id: impl Into<String>,
        event_id: u64,
        text: impl Into<Box<str>>,
    ) -> Self {
        Self {
            stream_id: stream_id.into(),
            event_id,
            line: text.into(),
            timestamp_ms: None,
            recorded: None,
        }
    }

    /// The same event with the event it holds as the table holds it.
    pub(crate) fn with_recorded(mut self, recorded: Option<evs_core::RecordedEvent>) -> Self {
        self.recorded = recorded.map(Box::new);
        self
    }

    /// Takes the event as the table holds it, when it was built as the line
    /// was decoded ([`crate::ReplayOptions::events`]: such an event has no
    /// line); `None` otherwise, and after it was taken: an event that was
    /// not built is read from [`ReplayEvent::line`].
    pub fn take_recorded(&mut self) -> Option<evs_core::RecordedEvent> {
        self.recorded.take().map(|e| *e)
    }

    /// The same event with its line's timestamp, read as the line was
    /// decoded, kept so that [`ReplayEvent::timestamp_ms`] parses nothing.
    pub(crate) fn with_timestamp(mut self, timestamp_ms: Option<i64>) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// The event as one line of JSON text; empty for an event built as its
    /// line was decoded ([`crate::ReplayOptions::events`]).
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The line as parsed JSON.
    pub fn line_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.line)
    }

    /// The event's `timestamp` (epoch ms); `None` when the line has none.
    /// Kept from decoding when the replay is from a time, else parsed from
    /// the line on each call.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
            .or_else(|| evs_archive::Line::parse(&self.line).ok()?.timestamp_ms())
    }
}

/// A JSON value as compact text. Serializing a `Value` cannot fail (its map
/// keys are strings); should it ever, the line is `null`, never a panic.
fn raw(value: &Value) -> Box<str> {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".to_owned())
        .into_boxed_str()
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
    fn the_line_is_embedded_as_json_and_read_back_as_text() {
        let event = ReplayEvent::new("a", 1, &json!({"x": 12345678901234567890123u128}));
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"streamId":"a","eventId":1,"line":{"x":12345678901234567890123}}"#
        );
        let back: ReplayEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event);
        let broken = ReplayEvent::from_json_text("a", 1, "{not json");
        assert!(
            serde_json::to_string(&broken).is_err(),
            "checked when written"
        );
    }
}
