//! The archive's line format (stable).
//!
//! [`ArchivedEvent::to_line`] is one NDJSON line of an archive object: the
//! line of `evs read` ([`RecordedEvent::to_json`]) plus the stream record's
//! identity and markers that keep the conversion lossless:
//!
//! ```json
//! {"streamId":"order-1","eventId":3,"eventName":"Paid","timestamp":"2026-11-23T22:07:32.123Z",
//!  "payload":{"amount":12345678901234567890123},"id":"…uuid…","metadata":{…},
//!  "attributes":{"Tenant":{"S":"t1"}},
//!  "eventID":"1f0c…","sequenceNumber":"1100000000017454423009",
//!  "timestampSource":"approximateCreationDateTime","payloadEncoding":"json-string",
//!  "payloadAttr":{"M":{…}},"metadataAttr":{"M":{…}},
//!  "timestampAttr":{"N":"1795471652123.75"},"idAttr":{"S":"{67E55044-…}"}}
//! ```
//!
//! * `eventId` is the event's number in its stream; `eventID` is the stream
//!   record's id (DynamoDB Streams' own field name) and `sequenceNumber` its
//!   `SequenceNumber`, kept as the decimal string it was.
//! * `attributes` (every extra item attribute) is DynamoDB JSON, so it is exact.
//! * `payload` and `metadata` are plain JSON with exact numbers. DynamoDB has
//!   types JSON lacks: `evs_core::attr::to_json` writes binary as base64
//!   strings and sets as arrays, which loses the type. Whenever the plain JSON
//!   would not convert back to the very same attribute value (the payload
//!   holds any `B`, `SS`, `NS` or `BS`, or a number whose text is not JSON
//!   number syntax), the line **also** carries `payloadAttr` (resp.
//!   `metadataAttr`): the attribute value as DynamoDB JSON. A reader that
//!   needs the exact stored value uses `payloadAttr` when present and
//!   `payload` otherwise; nothing is lost.
//! * A `Payload` stored as a string (`S`) whose text parses as JSON is
//!   archived as that JSON value and marked `"payloadEncoding": "json-string"`
//!   (so `"42"` becomes `42`, and a reader can tell). Unless the text is
//!   exactly the compact JSON of that value, the line also carries the text
//!   itself in `payloadAttr` (`{"S": …}`), so spaces and escapes are not
//!   lost either. A string that is not JSON stays a string, unmarked.
//! * An item without a `Payload` attribute has `"payload": null`, as one
//!   with a `NULL` payload has, and is marked `"payloadAbsent": true`.
//! * The event model reads a `Timestamp` as whole milliseconds and an
//!   `EventUuid` as a UUID, which `timestamp` and `id` print in one form.
//!   When the stored text was another (`1795471652123.75`, `0017…`,
//!   capitals or braces in a UUID), the line also carries it as stored:
//!   `timestampAttr` (`{"N": …}`), `idAttr` (`{"S": …}`).
//! * `timestampSource`, `payloadEncoding`, `payloadAbsent`, `payloadAttr`,
//!   `metadataAttr`, `timestampAttr` and `idAttr` appear only when they say
//!   something; a reader must ignore fields it does not know. A new marker is
//!   always a new field, never a new value of one: readers that do not know
//!   it still read the event right.
//!
//! [`ArchivedEvent::from_line`] reads a line back into the same value.

use std::collections::BTreeMap;

use evs_core::attr::{self, AttrValue, Item};
use evs_core::{format_timestamp_ms, RecordedEvent, StreamId};
use serde_json::Value;
use uuid::Uuid;

use crate::seq::SequenceNumber;

/// The `ApproximateCreationDateTime` fallback marker of [`TimestampSource`] in a line.
const APPROXIMATE_CREATION: &str = "approximateCreationDateTime";
/// The marker of [`PayloadEncoding::JsonString`] in a line.
const JSON_STRING: &str = "json-string";

/// Where an archived event's timestamp came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampSource {
    /// The item's own `Timestamp` attribute.
    #[default]
    Item,
    /// The stream record's `ApproximateCreationDateTime` (epoch seconds, in
    /// practice whole, as milliseconds truncated), because the item had no
    /// `Timestamp`.
    ApproximateCreationDateTime,
}

/// How an archived event's `payload` relates to the stored `Payload` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PayloadEncoding {
    /// The attribute value converted to JSON (`evs_core::attr::to_json`).
    #[default]
    Attribute,
    /// The attribute was a string holding JSON text; `payload` is that JSON.
    JsonString,
    /// The item had no `Payload` attribute; `payload` is `null` (as for a
    /// stored `NULL`, which is [`PayloadEncoding::Attribute`]). The line says
    /// `"payloadAbsent": true` (a field of its own, which readers that do not
    /// know it ignore, printing the same `null`).
    Absent,
}

impl PayloadEncoding {
    /// The line's `payloadEncoding`, when it has one.
    fn marker(self) -> Option<&'static str> {
        match self {
            PayloadEncoding::Attribute | PayloadEncoding::Absent => None,
            PayloadEncoding::JsonString => Some(JSON_STRING),
        }
    }
}

/// One event as the archive holds it: the decoded event plus the stream
/// record it came from and what makes its line lossless.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEvent {
    /// The event (its `payload` already decoded as [`Self::payload_encoding`] says).
    pub event: RecordedEvent,
    /// The stream record's `eventID`.
    pub record_id: String,
    /// The stream record's `SequenceNumber`.
    pub sequence_number: SequenceNumber,
    /// Where `event.timestamp_ms` came from.
    pub timestamp_source: TimestampSource,
    /// How `event.payload` was obtained from the `Payload` attribute.
    pub payload_encoding: PayloadEncoding,
    /// The `Payload` attribute as stored, when `event.payload` alone does not
    /// give it back exactly (binary, sets, numbers JSON cannot spell).
    pub payload_attr: Option<AttrValue>,
    /// The `Metadata` attribute as stored, under the same rule.
    pub metadata_attr: Option<AttrValue>,
    /// The `Timestamp` attribute as stored, when `event.timestamp_ms` does not
    /// give back its text (a fraction of a millisecond, a leading zero, …).
    pub timestamp_attr: Option<AttrValue>,
    /// The `EventUuid` attribute as stored, when `event.id` does not give back
    /// its text (capitals, braces, no hyphens, …).
    pub id_attr: Option<AttrValue>,
}

/// Why a line is not an archived event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid archive line: field {field}: {reason}")]
pub struct LineError {
    /// The line field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ArchivedEvent {
    /// The event as one archive line (see the module docs for the format).
    pub fn to_line(&self) -> Value {
        let mut line = self.event.to_json();
        if let Value::Object(map) = &mut line {
            map.insert("eventID".into(), Value::String(self.record_id.clone()));
            map.insert(
                "sequenceNumber".into(),
                Value::String(self.sequence_number.to_string()),
            );
            if self.timestamp_source == TimestampSource::ApproximateCreationDateTime {
                map.insert(
                    "timestampSource".into(),
                    Value::String(APPROXIMATE_CREATION.into()),
                );
            }
            if let Some(marker) = self.payload_encoding.marker() {
                map.insert("payloadEncoding".into(), Value::String(marker.into()));
            }
            if self.payload_encoding == PayloadEncoding::Absent {
                map.insert("payloadAbsent".into(), Value::Bool(true));
            }
            if let Some(a) = &self.payload_attr {
                map.insert("payloadAttr".into(), attr::to_dynamo_json(a));
            }
            if let Some(a) = &self.metadata_attr {
                map.insert("metadataAttr".into(), attr::to_dynamo_json(a));
            }
            if let Some(a) = &self.timestamp_attr {
                map.insert("timestampAttr".into(), attr::to_dynamo_json(a));
            }
            if let Some(a) = &self.id_attr {
                map.insert("idAttr".into(), attr::to_dynamo_json(a));
            }
        }
        line
    }

    /// Appends the event's line ([`Self::to_line`], no newline) to `out`:
    /// byte for byte what `serde_json::to_writer(out, &self.to_line())`
    /// writes, without building the line's JSON tree or copying the payload.
    pub fn write_line(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let e = &self.event;
        out.extend_from_slice(b"{\"streamId\":");
        attr::write_json_str(out, e.stream_id.as_str());
        out.extend_from_slice(b",\"eventId\":");
        serde_json::to_writer(&mut *out, &e.event_id)?;
        out.extend_from_slice(b",\"eventName\":");
        attr::write_json_str(out, &e.name);
        out.extend_from_slice(b",\"timestamp\":");
        attr::write_json_str(out, &format_timestamp_ms(e.timestamp_ms));
        out.extend_from_slice(b",\"payload\":");
        serde_json::to_writer(&mut *out, &e.payload)?;
        if let Some(id) = e.id {
            out.extend_from_slice(b",\"id\":\"");
            out.extend_from_slice(
                id.hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer())
                    .as_bytes(),
            );
            out.push(b'"');
        }
        if let Some(m) = &e.metadata {
            out.extend_from_slice(b",\"metadata\":");
            serde_json::to_writer(&mut *out, m)?;
        }
        if !e.attributes.is_empty() {
            out.extend_from_slice(b",\"attributes\":");
            attr::write_item_dynamo_json(out, &e.attributes);
        }
        out.extend_from_slice(b",\"eventID\":");
        attr::write_json_str(out, &self.record_id);
        out.extend_from_slice(b",\"sequenceNumber\":");
        attr::write_json_str(out, self.sequence_number.as_str());
        if self.timestamp_source == TimestampSource::ApproximateCreationDateTime {
            out.extend_from_slice(b",\"timestampSource\":");
            attr::write_json_str(out, APPROXIMATE_CREATION);
        }
        if let Some(marker) = self.payload_encoding.marker() {
            out.extend_from_slice(b",\"payloadEncoding\":");
            attr::write_json_str(out, marker);
        }
        if self.payload_encoding == PayloadEncoding::Absent {
            out.extend_from_slice(b",\"payloadAbsent\":true");
        }
        if let Some(a) = &self.payload_attr {
            out.extend_from_slice(b",\"payloadAttr\":");
            attr::write_dynamo_json(out, a);
        }
        if let Some(a) = &self.metadata_attr {
            out.extend_from_slice(b",\"metadataAttr\":");
            attr::write_dynamo_json(out, a);
        }
        if let Some(a) = &self.timestamp_attr {
            out.extend_from_slice(b",\"timestampAttr\":");
            attr::write_dynamo_json(out, a);
        }
        if let Some(a) = &self.id_attr {
            out.extend_from_slice(b",\"idAttr\":");
            attr::write_dynamo_json(out, a);
        }
        out.push(b'}');
        Ok(())
    }

    /// Reads an archive line back. Unknown fields are ignored.
    pub fn from_line(line: &Value) -> Result<Self, LineError> {
        let err = |field: &'static str, reason: &str| LineError {
            field,
            reason: reason.to_owned(),
        };
        let Value::Object(map) = line else {
            return Err(err("$", "a line must be a JSON object"));
        };
        let string = |field: &'static str| -> Result<&str, LineError> {
            match map.get(field) {
                Some(Value::String(s)) => Ok(s),
                Some(_) => Err(err(field, "must be a string")),
                None => Err(err(field, "is missing")),
            }
        };
        let optional_string = |field: &'static str| -> Result<Option<&str>, LineError> {
            match map.get(field) {
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(err(field, "must be a string")),
                None => Ok(None),
            }
        };
        let optional_attr = |field: &'static str| -> Result<Option<AttrValue>, LineError> {
            map.get(field)
                .map(|v| attr::from_dynamo_json(v).map_err(|e| err(field, &e.to_string())))
                .transpose()
        };

        let stream_id =
            StreamId::new(string("streamId")?).map_err(|e| err("streamId", &e.to_string()))?;
        let event_id = map
            .get("eventId")
            .and_then(Value::as_u64)
            .ok_or_else(|| err("eventId", "must be a non-negative integer"))?;
        let name = string("eventName")?.to_owned();
        let timestamp_ms = parse_line_timestamp(string("timestamp")?)
            .ok_or_else(|| err("timestamp", "not an RFC 3339 UTC time"))?;
        let payload = map
            .get("payload")
            .cloned()
            .ok_or_else(|| err("payload", "is missing"))?;
        let id = optional_string("id")?
            .map(|s| Uuid::parse_str(s).map_err(|e| err("id", &e.to_string())))
            .transpose()?;
        let metadata = map.get("metadata").cloned();
        let attributes = match map.get("attributes") {
            Some(v) => {
                attr::item_from_dynamo_json(v).map_err(|e| err("attributes", &e.to_string()))?
            }
            None => Item::new(),
        };
        let record_id = string("eventID")?.to_owned();
        let sequence_number = SequenceNumber::new(string("sequenceNumber")?)
            .map_err(|e| err("sequenceNumber", &e.to_string()))?;
        let timestamp_source = match optional_string("timestampSource")? {
            None => TimestampSource::Item,
            Some(APPROXIMATE_CREATION) => TimestampSource::ApproximateCreationDateTime,
            Some(_) => return Err(err("timestampSource", "unknown timestamp source")),
        };
        let absent = match map.get("payloadAbsent") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) if payload.is_null() => true,
            Some(Value::Bool(true)) => return Err(err("payloadAbsent", "needs a null payload")),
            Some(_) => return Err(err("payloadAbsent", "must be a boolean")),
        };
        let payload_encoding = match (optional_string("payloadEncoding")?, absent) {
            (None, false) => PayloadEncoding::Attribute,
            (None, true) => PayloadEncoding::Absent,
            (Some(JSON_STRING), false) => PayloadEncoding::JsonString,
            (Some(_), true) => {
                return Err(err("payloadAbsent", "an absent payload has no encoding"))
            }
            (Some(_), false) => return Err(err("payloadEncoding", "unknown payload encoding")),
        };
        let timestamp_attr = optional_attr("timestampAttr")?;
        if timestamp_attr
            .as_ref()
            .is_some_and(|a| !matches!(a, AttrValue::N(_)))
        {
            return Err(err("timestampAttr", "must be a number (N)"));
        }
        let id_attr = optional_attr("idAttr")?;
        if id_attr
            .as_ref()
            .is_some_and(|a| !matches!(a, AttrValue::S(_)))
        {
            return Err(err("idAttr", "must be a string (S)"));
        }
        Ok(Self {
            event: RecordedEvent {
                stream_id,
                event_id,
                name,
                payload,
                timestamp_ms,
                id,
                metadata,
                attributes: attributes.into_iter().collect::<BTreeMap<_, _>>(),
            },
            record_id,
            sequence_number,
            timestamp_source,
            payload_encoding,
            payload_attr: optional_attr("payloadAttr")?,
            metadata_attr: optional_attr("metadataAttr")?,
            timestamp_attr,
            id_attr,
        })
    }
}

/// Parses a line's `timestamp`: the RFC 3339 form `format_timestamp_ms`
/// writes, or the bare number it writes for times it cannot format.
fn parse_line_timestamp(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let t = time::PrimitiveDateTime::parse(text, &fmt)
        .ok()?
        .assume_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
