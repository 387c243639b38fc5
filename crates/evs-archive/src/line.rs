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
//! [`Line`] is the format's one definition: it writes the line of an
//! [`ArchivedEvent`] ([`ArchivedEvent::write_line`]), reads it back
//! ([`ArchivedEvent::from_line`]), and, with the stream record's fields left
//! out ([`Line::event_only`], [`event_line`]), is the line of `evs read` and
//! of a replay. Read from text, its JSON values are borrowed raw text
//! ([`Json::Raw`]), so a reader that only passes events on (the replayer)
//! copies them without building a tree.

use std::borrow::Cow;

use evs_core::attr::{AttrValue, Item};
use evs_core::{format_timestamp_ms, RecordedEvent, StreamId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
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
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The text is not a line: not a JSON object, a field of the wrong JSON
    /// type, a required field missing or repeated, text after the object.
    #[error("invalid archive line: {0}")]
    Json(#[from] serde_json::Error),
    /// A field has the right JSON type but a value the format does not allow.
    #[error("invalid archive line: field {field}: {reason}")]
    Field {
        /// The line field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A JSON value in a [`Line`]: its raw text when the line was read, or a
/// value to write.
#[derive(Debug, Clone, Copy)]
pub enum Json<'a> {
    /// JSON text as read, passed on byte for byte.
    Raw(&'a RawValue),
    /// A JSON value.
    Value(&'a Value),
    /// An attribute value, written as DynamoDB JSON.
    Attr(&'a AttrValue),
    /// Attributes by name, written as an object of DynamoDB JSON values.
    Attrs(&'a Item),
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Raw(raw) => raw.serialize(serializer),
            Json::Value(value) => value.serialize(serializer),
            Json::Attr(attr) => attr.serialize(serializer),
            Json::Attrs(attrs) => attrs.serialize(serializer),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(deserializer).map(Json::Raw)
    }
}

impl Json<'_> {
    /// The value as JSON.
    pub fn to_value(self) -> Result<Value, serde_json::Error> {
        match self {
            Json::Raw(raw) => serde_json::from_str(raw.get()),
            Json::Value(value) => Ok(value.clone()),
            other => serde_json::to_value(other),
        }
    }

    /// The value read as DynamoDB JSON.
    fn read_attr<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        match self {
            Json::Raw(raw) => serde_json::from_str(raw.get()),
            other => serde_json::from_value(serde_json::to_value(other)?),
        }
    }
}

/// A string field of a [`Line`]: its raw JSON text when the line was read
/// (passed on byte for byte, not checked), or a string to write.
#[derive(Debug, Clone)]
pub enum Text<'a> {
    /// JSON text as read.
    Raw(&'a RawValue),
    /// A string.
    Str(Cow<'a, str>),
}

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Text::Raw(raw) => raw.serialize(serializer),
            Text::Str(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(deserializer).map(Text::Raw)
    }
}

impl Text<'_> {
    /// The string; an error when the text read is not a JSON string.
    #[allow(clippy::inherent_to_string)] // fallible, unlike `ToString`
    pub fn to_string(&self) -> Result<String, serde_json::Error> {
        match self {
            Text::Raw(raw) => serde_json::from_str(raw.get()),
            Text::Str(text) => Ok(text.clone().into_owned()),
        }
    }
}

/// A string field of a [`Line`], borrowed from the text read when it has
/// no escapes (serde's own `Cow` always copies: a line is read once per
/// event replayed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// One archive line, as written and as read (see the module docs for the
/// format). The first eight fields, in this order, are the line of
/// `evs read`; the rest are the stream record's and appear in archive lines
/// only. Optional fields are left out when absent; unknown fields are
/// ignored when read.
///
/// Reading checks JSON types, that `streamId` is not empty and `eventId` is
/// at least 1; [`ArchivedEvent::from_line`] checks the rest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    expecting = "an archive line (a JSON object)"
)]
pub struct Line<'a> {
    /// `streamId`.
    #[serde(borrow, deserialize_with = "non_empty")]
    pub stream_id: Str<'a>,
    /// `eventId`: at least 1.
    #[serde(deserialize_with = "event_number")]
    pub event_id: u64,
    /// `eventName`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<Text<'a>>,
    /// `timestamp`: RFC 3339 UTC with milliseconds (`format_timestamp_ms`).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Text<'a>>,
    /// `payload` (may be `null`).
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<Json<'a>>,
    /// `id`: the event's UUID, lower-case and hyphenated.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Text<'a>>,
    /// `metadata` (may be `null`).
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata: Option<Json<'a>>,
    /// `attributes`: every other item attribute, as DynamoDB JSON.
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub attributes: Option<Json<'a>>,
    /// `eventID`: the stream record's id.
    #[serde(
        rename = "eventID",
        borrow,
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub record_id: Option<Str<'a>>,
    /// `sequenceNumber`: the stream record's `SequenceNumber`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<Str<'a>>,
    /// `timestampSource`: `approximateCreationDateTime` when the item had no `Timestamp`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub timestamp_source: Option<Str<'a>>,
    /// `payloadEncoding`: `json-string` when the payload was stored as JSON text.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub payload_encoding: Option<Str<'a>>,
    /// `payloadAbsent`: the item had no `Payload`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub payload_absent: bool,
    /// `payloadAttr`: the `Payload` attribute as stored, when `payload` does not give it back.
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload_attr: Option<Json<'a>>,
    /// `metadataAttr`: the same for `Metadata`.
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_attr: Option<Json<'a>>,
    /// `timestampAttr`: the `Timestamp` attribute as stored, when `timestamp` does not give back its text.
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp_attr: Option<Json<'a>>,
    /// `idAttr`: the `EventUuid` attribute as stored, when `id` does not give back its text.
    #[serde(
        borrow,
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub id_attr: Option<Json<'a>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A field that is present, `null` included (a plain `Option` reads `null` as absent).
fn present<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Json<'a>>, D::Error> {
    Json::deserialize(d).map(Some)
}

fn non_empty<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Str<'a>, D::Error> {
    let text = Str::deserialize(d)?;
    if text.is_empty() {
        return Err(serde::de::Error::custom("\"streamId\" is empty"));
    }
    Ok(text)
}

fn event_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let raw = <&RawValue>::deserialize(d)?;
    raw.get()
        .parse::<u64>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| serde::de::Error::custom("\"eventId\" must be an integer of at least 1"))
}

impl<'a> Line<'a> {
    /// Reads one line (JSON text, no newline). Nothing may follow the object.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        // serde would also read a struct from an array of its fields.
        if !text.trim_start().starts_with('{') {
            return Err(serde::de::Error::custom(
                "an archive line must be a JSON object",
            ));
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let line = Self::deserialize(&mut de)?;
        de.end()?;
        Ok(line)
    }

    /// The line of the event alone, as `evs read` prints it: the stream
    /// record's fields dropped.
    pub fn event_only(&self) -> Self {
        // Only the event's fields are copied (cheap: borrowed text), not
        // the record's, which are dropped: this runs once per replayed line.
        Self {
            stream_id: self.stream_id.clone(),
            event_id: self.event_id,
            event_name: self.event_name.clone(),
            timestamp: self.timestamp.clone(),
            payload: self.payload,
            id: self.id.clone(),
            metadata: self.metadata,
            attributes: self.attributes,
            ..Self::default()
        }
    }

    /// [`Self::event_only`] as JSON text: byte for byte what
    /// `serde_json::to_string(&line.event_only())` writes, built by copying
    /// the text read (a line read by [`Self::parse`] holds its values as raw
    /// text) instead of serializing it again: this runs once per replayed
    /// line. Values that are not raw text are written by serde.
    pub fn event_only_json(&self) -> Result<String, serde_json::Error> {
        // Exhaustive, so that a field added to the line is a compile error
        // here until it is either written or known to be a record field.
        let Line {
            stream_id,
            event_id,
            event_name,
            timestamp,
            payload,
            id,
            metadata,
            attributes,
            record_id: _,
            sequence_number: _,
            timestamp_source: _,
            payload_encoding: _,
            payload_absent: _,
            payload_attr: _,
            metadata_attr: _,
            timestamp_attr: _,
            id_attr: _,
        } = self;
        fn text<'b>(t: &'b Text<'b>) -> Result<Cow<'b, str>, serde_json::Error> {
            match t {
                Text::Raw(raw) => Ok(Cow::Borrowed(raw.get())),
                Text::Str(s) => json_str(s),
            }
        }
        fn json<'b>(j: &'b Json<'b>) -> Result<Cow<'b, str>, serde_json::Error> {
            match j {
                Json::Raw(raw) => Ok(Cow::Borrowed(raw.get())),
                other => serde_json::to_string(other).map(Cow::Owned),
            }
        }
        // The optional fields in the struct's order (serde writes them so).
        let optional: [(&str, Option<Cow<'_, str>>); 6] = [
            (
                ",\"eventName\":",
                event_name.as_ref().map(text).transpose()?,
            ),
            (",\"timestamp\":", timestamp.as_ref().map(text).transpose()?),
            (",\"payload\":", payload.as_ref().map(json).transpose()?),
            (",\"id\":", id.as_ref().map(text).transpose()?),
            (",\"metadata\":", metadata.as_ref().map(json).transpose()?),
            (
                ",\"attributes\":",
                attributes.as_ref().map(json).transpose()?,
            ),
        ];
        let escaped_id = escaped(stream_id)?;
        let mut digits = [0; 20];
        let event_id = decimal(*event_id, &mut digits);
        const HEAD: &str = "{\"streamId\":";
        const EVENT_ID: &str = ",\"eventId\":";
        let len = HEAD.len()
            + escaped_id.as_ref().map_or(stream_id.len() + 2, String::len)
            + EVENT_ID.len()
            + event_id.len()
            + optional
                .iter()
                .filter_map(|(name, value)| Some(name.len() + value.as_ref()?.len()))
                .sum::<usize>()
            + 1;
        let mut out = String::with_capacity(len);
        out.push_str(HEAD);
        match &escaped_id {
            Some(text) => out.push_str(text),
            None => {
                out.push('"');
                out.push_str(stream_id);
                out.push('"');
            }
        }
        out.push_str(EVENT_ID);
        out.push_str(event_id);
        for (name, value) in &optional {
            if let Some(value) = value {
                out.push_str(name);
                out.push_str(value);
            }
        }
        out.push('}');
        debug_assert_eq!(out.len(), len, "the room reserved is the line's length");
        Ok(out)
    }

    /// The event the line holds, as the line says it: for an archive line
    /// without lossless extras, or a line in the shape of `evs read` (what a
    /// replay delivers), the event as the table holds it. (An archive line's
    /// extras are read by [`ArchivedEvent::from_line`].)
    pub fn to_event(&self) -> Result<RecordedEvent, LineError> {
        let err = |field: &'static str, reason: &dyn std::fmt::Display| LineError::Field {
            field,
            reason: reason.to_string(),
        };
        let stream_id = StreamId::new(&*self.stream_id).map_err(|e| err("streamId", &e))?;
        let text = |field: &'static str, t: Option<Text<'_>>| -> Result<String, LineError> {
            t.ok_or_else(|| err(field, &"is missing"))?
                .to_string()
                .map_err(|e| err(field, &e))
        };
        let name = text("eventName", self.event_name.clone())?;
        let timestamp_ms = parse_line_timestamp(&text("timestamp", self.timestamp.clone())?)
            .ok_or_else(|| err("timestamp", &"not an RFC 3339 UTC time"))?;
        let payload = self
            .payload
            .ok_or_else(|| err("payload", &"is missing"))?
            .to_value()
            .map_err(|e| err("payload", &e))?;
        let id = match self.id.clone() {
            Some(t) => Some(Uuid::parse_str(&text("id", Some(t))?).map_err(|e| err("id", &e))?),
            None => None,
        };
        let metadata = self
            .metadata
            .map(|m| m.to_value().map_err(|e| err("metadata", &e)))
            .transpose()?;
        let attributes: Item = match self.attributes {
            Some(a) => a.read_attr().map_err(|e| err("attributes", &e))?,
            None => Item::new(),
        };
        Ok(RecordedEvent {
            stream_id,
            event_id: self.event_id,
            name,
            payload,
            timestamp_ms,
            id,
            metadata,
            attributes,
        })
    }

    /// `timestamp` as epoch milliseconds; `None` when it is absent or not a
    /// time this format writes.
    pub fn timestamp_ms(&self) -> Option<i64> {
        parse_line_timestamp(&self.timestamp.as_ref()?.to_string().ok()?)
    }

    /// Whether the event this line holds differs from its plain fields:
    /// its payload or metadata must be taken from the lossless extras
    /// (`payloadEncoding`, `payloadAttr`, `metadataAttr`), so only
    /// [`ArchivedEvent::from_line`] gives the event back.
    pub fn needs_decoding(&self) -> bool {
        self.payload_encoding.is_some()
            || self.payload_attr.is_some()
            || self.metadata_attr.is_some()
    }
}

/// A string as JSON text, as serde_json writes it: quoted, escaping only
/// `"`, `\\` and control characters; `None` for a string that has none of
/// them, which is written as it is between quotes.
fn escaped(s: &str) -> Result<Option<String>, serde_json::Error> {
    s.bytes()
        .any(|b| b == b'"' || b == b'\\' || b < 0x20)
        .then(|| serde_json::to_string(s))
        .transpose()
}

/// `n` in decimal, written into `buf` (20 digits hold any `u64`).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// A string as JSON text ([`escaped`]).
fn json_str(s: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    Ok(match escaped(s)? {
        Some(text) => Cow::Owned(text),
        None => Cow::Owned(format!("\"{s}\"")),
    })
}

/// The line of an event as `evs read` prints it, borrowing from the event.
pub fn event_line(event: &RecordedEvent) -> Line<'_> {
    Line {
        stream_id: Str(Cow::Borrowed(event.stream_id.as_str())),
        event_id: event.event_id,
        event_name: Some(Text::Str(Cow::Borrowed(&event.name))),
        timestamp: Some(Text::Str(Cow::Owned(format_timestamp_ms(
            event.timestamp_ms,
        )))),
        payload: Some(Json::Value(&event.payload)),
        id: event
            .id
            .map(|id| Text::Str(Cow::Owned(id.hyphenated().to_string()))),
        metadata: event.metadata.as_ref().map(Json::Value),
        attributes: (!event.attributes.is_empty()).then_some(Json::Attrs(&event.attributes)),
        ..Line::default()
    }
}

impl ArchivedEvent {
    /// The event's archive line, borrowing from it.
    pub fn line(&self) -> Line<'_> {
        Line {
            record_id: Some(Str(Cow::Borrowed(&self.record_id))),
            sequence_number: Some(Str(Cow::Borrowed(self.sequence_number.as_str()))),
            timestamp_source: (self.timestamp_source
                == TimestampSource::ApproximateCreationDateTime)
                .then_some(Str(Cow::Borrowed(APPROXIMATE_CREATION))),
            payload_encoding: (self.payload_encoding == PayloadEncoding::JsonString)
                .then_some(Str(Cow::Borrowed(JSON_STRING))),
            payload_absent: self.payload_encoding == PayloadEncoding::Absent,
            payload_attr: self.payload_attr.as_ref().map(Json::Attr),
            metadata_attr: self.metadata_attr.as_ref().map(Json::Attr),
            timestamp_attr: self.timestamp_attr.as_ref().map(Json::Attr),
            id_attr: self.id_attr.as_ref().map(Json::Attr),
            ..event_line(&self.event)
        }
    }

    /// The event's line as a JSON value.
    pub fn to_line(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self.line())
    }

    /// Appends the event's line (no newline) to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, &self.line())
    }

    /// The event as the table holds it and `evs read` prints it: a payload
    /// stored as a string of JSON text is that string again (the line holds
    /// it parsed, plus the text itself unless it is the compact JSON).
    pub fn into_table_event(self) -> Result<RecordedEvent, serde_json::Error> {
        let mut event = self.event;
        if self.payload_encoding == PayloadEncoding::JsonString {
            let text = match self.payload_attr {
                Some(AttrValue::S(text)) => text,
                _ => serde_json::to_string(&event.payload)?,
            };
            event.payload = Value::String(text);
        }
        Ok(event)
    }

    /// Reads an archive line (JSON text, no newline) back. Unknown fields
    /// are ignored.
    pub fn from_line(text: &str) -> Result<Self, LineError> {
        let line = Line::parse(text)?;
        let err = |field: &'static str, reason: &dyn std::fmt::Display| LineError::Field {
            field,
            reason: reason.to_string(),
        };
        fn required<'b>(field: &'static str, value: Option<Str<'b>>) -> Result<Str<'b>, LineError> {
            value.ok_or_else(|| LineError::Field {
                field,
                reason: "is missing".into(),
            })
        }
        let attr =
            |field: &'static str, json: Option<Json<'_>>| -> Result<Option<AttrValue>, LineError> {
                json.map(|j| j.read_attr().map_err(|e| err(field, &e)))
                    .transpose()
            };
        let event = line.to_event()?;
        let record_id = required("eventID", line.record_id)?.0.into_owned();
        let sequence_number =
            SequenceNumber::new(required("sequenceNumber", line.sequence_number)?.0)
                .map_err(|e| err("sequenceNumber", &e))?;
        let timestamp_source = match line.timestamp_source.as_deref() {
            None => TimestampSource::Item,
            Some(APPROXIMATE_CREATION) => TimestampSource::ApproximateCreationDateTime,
            Some(_) => return Err(err("timestampSource", &"unknown timestamp source")),
        };
        let payload_null = event.payload.is_null();
        let payload_encoding = match (line.payload_encoding.as_deref(), line.payload_absent) {
            (None, false) => PayloadEncoding::Attribute,
            (None, true) if payload_null => PayloadEncoding::Absent,
            (None, true) => return Err(err("payloadAbsent", &"needs a null payload")),
            (Some(JSON_STRING), false) => PayloadEncoding::JsonString,
            (Some(_), true) => {
                return Err(err("payloadAbsent", &"an absent payload has no encoding"))
            }
            (Some(_), false) => return Err(err("payloadEncoding", &"unknown payload encoding")),
        };
        let timestamp_attr = attr("timestampAttr", line.timestamp_attr)?;
        if timestamp_attr
            .as_ref()
            .is_some_and(|a| !matches!(a, AttrValue::N(_)))
        {
            return Err(err("timestampAttr", &"must be a number (N)"));
        }
        let id_attr = attr("idAttr", line.id_attr)?;
        if id_attr
            .as_ref()
            .is_some_and(|a| !matches!(a, AttrValue::S(_)))
        {
            return Err(err("idAttr", &"must be a string (S)"));
        }
        Ok(Self {
            event,
            record_id,
            sequence_number,
            timestamp_source,
            payload_encoding,
            payload_attr: attr("payloadAttr", line.payload_attr)?,
            metadata_attr: attr("metadataAttr", line.metadata_attr)?,
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
