//! DynamoDB Streams records in, archived events or dead letters out.
//!
//! [`classify`] looks at one raw stream record, exactly the JSON that Lambda
//! delivers inside `{"Records": [...]}`, and returns either
//! [`Classified::Event`] with an [`ArchivedEvent`] or [`Classified::DeadLetter`]
//! with a [`DeadLetter`] that keeps the raw record, a typed
//! [`DeadLetterReason`] and a human detail. It never fails and never panics:
//! whatever the record holds, it is archived or dead-lettered, so one bad
//! record can neither block a shard nor vanish. [`parse_batch`] does the same
//! for every element of a whole Lambda event; only an event that has no
//! `Records` array at all is an error ([`BatchError`]).
//!
//! # What is archived
//!
//! Only `INSERT` records whose `NewImage` decodes into an event of this store
//! (see `evs_core::item`): `StreamId` (S), `EventId` (N, at least 1) and
//! `EventName` (S) are required. Everything else is a dead letter:
//!
//! | reason                                 | when                                                        |
//! |----------------------------------------|-------------------------------------------------------------|
//! | [`DeadLetterReason::MalformedRecord`]  | not an object; no `eventName`, `eventID`, `dynamodb` or valid `SequenceNumber`; a `NewImage` that is not an object; an unusable `ApproximateCreationDateTime` when it is needed |
//! | [`DeadLetterReason::NotInsert`]        | `MODIFY` or `REMOVE` (or anything but `INSERT`) on the append-only table |
//! | [`DeadLetterReason::MissingNewImage`]  | `NewImage` absent, `null` or empty (e.g. a `KEYS_ONLY` stream) |
//! | [`DeadLetterReason::InvalidAttribute`] | invalid DynamoDB JSON, or an event attribute of the wrong type or value |
//! | [`DeadLetterReason::NotAnEvent`]       | the item has no `StreamId`, `EventId` or `EventName`         |
//! | [`DeadLetterReason::MissingTimestamp`] | neither `Timestamp` nor `ApproximateCreationDateTime`       |
//!
//! A missing `Timestamp` falls back to the record's
//! `ApproximateCreationDateTime` (epoch seconds, a JSON number or a numeric
//! string, fractions allowed), truncated to milliseconds; the line then says
//! `"timestampSource": "approximateCreationDateTime"`.
//!
use std::fmt;

use evs_core::attr::{self, AttrValue, Item};
use evs_core::item;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};

mod text;

pub use text::classify_json;
pub(crate) use text::records_json;
#[cfg(any(test, feature = "bench"))]
pub(crate) use text::RecordJson;

use evs_archive::{
    ArchivedEvent, DeadLetter, DeadLetterReason, PayloadEncoding, SequenceNumber, Str,
    TimestampSource,
};

/// Most digits a `SequenceNumber` has (AWS: 21 to 40).
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// An event to archive.
    Event(Box<ArchivedEvent>),
    /// A record for the dead-letter prefix.
    DeadLetter(Box<DeadLetter>),
}

/// Why a whole Lambda event cannot be read. A bad *record* is never this
/// error; it is a [`DeadLetter`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The event is not a JSON object.
    #[error("a DynamoDB Streams event must be a JSON object, not {found}")]
    NotAnObject {
        /// The JSON type that was found.
        found: &'static str,
    },
    /// The event has no `Records` field.
    #[error("the DynamoDB Streams event has no Records")]
    MissingRecords,
    /// `Records` is not an array.
    #[error("the DynamoDB Streams event's Records must be an array, not {found}")]
    RecordsNotArray {
        /// The JSON type that was found.
        found: &'static str,
    },
}

/// Classifies every element of a Lambda DynamoDB Streams event
/// (`{"Records": [...]}`), each independently and in order.
pub fn parse_batch(event: &Value) -> Result<Vec<Classified>, BatchError> {
    let Value::Object(map) = event else {
        return Err(BatchError::NotAnObject {
            found: json_type(event),
        });
    };
    match map.get("Records") {
        None => Err(BatchError::MissingRecords),
        Some(Value::Array(records)) => Ok(records.iter().map(classify).collect()),
        Some(other) => Err(BatchError::RecordsNotArray {
            found: json_type(other),
        }),
    }
}

/// Like [`parse_batch`], from the event's JSON text, the way the Lambda
/// runs: the records are found as raw text ([`records_json`]) and each is
/// read and classified on its own ([`classify_json`]), so memory stays near
/// the size of the input and no JSON tree is built for a record that becomes
/// an event.
pub fn parse_batch_json(event: &str) -> Result<Vec<Classified>, BatchError> {
    Ok(records_json(event)?
        .iter()
        .map(|raw| classify_json(raw.get()))
        .collect())
}

/// Classifies one raw stream record (see the module docs for the rules).
pub fn classify(record: &Value) -> Classified {
    match archive(record) {
        Ok(event) => Classified::Event(Box::new(event)),
        Err((reason, detail)) => Classified::DeadLetter(Box::new(DeadLetter {
            reason,
            detail,
            raw: record.clone(),
        })),
    }
}

type Rejection = (DeadLetterReason, String);

fn malformed(detail: impl Into<String>) -> Rejection {
    (DeadLetterReason::MalformedRecord, detail.into())
}

fn archive(record: &Value) -> Result<ArchivedEvent, Rejection> {
    let Value::Object(rec) = record else {
        return Err(malformed(format!(
            "a stream record must be a JSON object, not {}",
            json_type(record)
        )));
    };
    let event_name = match rec.get("eventName") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(malformed(format!(
                "eventName must be a string, not {}",
                json_type(other)
            )))
        }
        None => return Err(malformed("the record has no eventName")),
    };
    if event_name != "INSERT" {
        return Err((
            DeadLetterReason::NotInsert {
                event_name: event_name.clone(),
            },
            format!("eventName is {event_name:?}: the table is append-only, only INSERT records are events"),
        ));
    }
    let record_id = match rec.get("eventID") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(malformed("eventID must be a non-empty string")),
        None => return Err(malformed("the record has no eventID")),
    };
    let Some(Value::Object(ddb)) = rec.get("dynamodb") else {
        return Err(malformed("the record has no dynamodb object"));
    };
    let sequence_number = match ddb.get("SequenceNumber") {
        Some(Value::String(s)) => {
            SequenceNumber::new(s.as_str()).map_err(|e| malformed(format!("dynamodb.{e}")))?
        }
        Some(other) => {
            return Err(malformed(format!(
                "dynamodb.SequenceNumber must be a string, not {}",
                json_type(other)
            )))
        }
        None => return Err(malformed("the record has no dynamodb.SequenceNumber")),
    };
    let image = match ddb.get("NewImage") {
        None | Some(Value::Null) => {
            return Err(missing_new_image(
                ddb,
                "the record has no dynamodb.NewImage",
            ))
        }
        Some(Value::Object(m)) if m.is_empty() => {
            return Err(missing_new_image(
                ddb,
                "the record's dynamodb.NewImage is empty",
            ))
        }
        Some(image @ Value::Object(_)) => image,
        Some(other) => {
            return Err(malformed(format!(
                "dynamodb.NewImage must be an object, not {}",
                json_type(other)
            )))
        }
    };
    let item = attr::read_item(image)
        .map_err(|e| (DeadLetterReason::InvalidAttribute, format!("NewImage: {e}")))?;
    let approximate_creation = ddb.get("ApproximateCreationDateTime");
    archive_item(
        record_id,
        sequence_number,
        Image::of(item),
        approximate_creation,
    )
}

/// The rules past the record's own fields: the decoded `NewImage` (not
/// empty) to the event, with `dynamodb.ApproximateCreationDateTime` for when
/// the item has no `Timestamp`. Both readings of a record end here.
fn archive_item(
    record_id: String,
    sequence_number: SequenceNumber,
    image: Image,
    approximate_creation: Option<&Value>,
) -> Result<ArchivedEvent, Rejection> {
    let Image {
        mut item,
        payload,
        metadata,
    } = image;
    let missing: Vec<&str> = [item::STREAM_ID, item::EVENT_ID, item::EVENT_NAME]
        .into_iter()
        .filter(|k| !item.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err((
            DeadLetterReason::NotAnEvent,
            format!(
                "the item has no {}: not an event of this store",
                missing.join(", ")
            ),
        ));
    }

    let timestamp_source = if item.contains_key(item::TIMESTAMP) {
        TimestampSource::Item
    } else {
        let ms = match approximate_creation {
            None | Some(Value::Null) => {
                return Err((
                    DeadLetterReason::MissingTimestamp,
                    "the item has no Timestamp and the record no dynamodb.ApproximateCreationDateTime".into(),
                ))
            }
            Some(v) => approximate_creation_ms(v).ok_or_else(|| {
                malformed(format!(
                    "the item has no Timestamp and dynamodb.ApproximateCreationDateTime {v} is not epoch seconds"
                ))
            })?,
        };
        item.insert(item::TIMESTAMP.into(), AttrValue::N(ms.to_string()));
        TimestampSource::ApproximateCreationDateTime
    };

    let (metadata, metadata_attr) = match metadata {
        None => (None, None),
        Some(Stored::Json(json)) => (Some(json), None),
        Some(Stored::Attr(m)) if attr::json_round_trips(&m) => (Some(attr::into_json(m)), None),
        Some(Stored::Attr(m)) => (Some(attr::to_json(&m)), Some(m)),
    };
    // The forms the event model normalizes, kept as stored (see `to_line`).
    // Checked by their text alone: `item::decode` below parses them, and
    // refuses (a dead letter) what is not a timestamp or a UUID at all.
    let timestamp_attr = match item.get(item::TIMESTAMP) {
        Some(AttrValue::N(n)) if !is_canonical_integer(n) => Some(AttrValue::N(n.clone())),
        _ => None,
    };
    let id_attr = match item.get(item::EVENT_UUID) {
        Some(AttrValue::S(s)) if !is_canonical_uuid(s) => Some(AttrValue::S(s.clone())),
        _ => None,
    };
    let mut event =
        item::decode(item).map_err(|e| (DeadLetterReason::InvalidAttribute, e.to_string()))?;
    event.metadata = metadata;
    if event.event_id == 0 {
        return Err((
            DeadLetterReason::InvalidAttribute,
            format!(
                "stream {}: EventId must be 1 or more, not 0",
                event.stream_id
            ),
        ));
    }
    let (payload, payload_encoding, payload_attr) = match payload {
        None => (Value::Null, PayloadEncoding::Absent, None),
        Some(Stored::Attr(AttrValue::S(text)) | Stored::Json(Value::String(text))) => {
            match serde_json::from_str::<Value>(&text) {
                Ok(json) => {
                    // The text itself goes along unless it is exactly the
                    // compact JSON (spaces, key order, escapes would be lost).
                    let compact = serde_json::to_string(&json).is_ok_and(|t| t == text);
                    let original = (!compact).then_some(AttrValue::S(text));
                    (json, PayloadEncoding::JsonString, original)
                }
                Err(_) => (Value::String(text), PayloadEncoding::Attribute, None),
            }
        }
        Some(Stored::Json(json)) => (json, PayloadEncoding::Attribute, None),
        Some(Stored::Attr(stored)) if attr::json_round_trips(&stored) => {
            (attr::into_json(stored), PayloadEncoding::Attribute, None)
        }
        Some(Stored::Attr(stored)) => (
            attr::to_json(&stored),
            PayloadEncoding::Attribute,
            Some(stored),
        ),
    };
    event.payload = payload;
    Ok(ArchivedEvent {
        event,
        record_id,
        sequence_number,
        timestamp_source,
        payload_encoding,
        payload_attr,
        metadata_attr,
        timestamp_attr,
        id_attr,
    })
}

/// Whether `text` is written as Rust prints an integer: an optional `-`,
/// then `0` alone or digits without a leading zero (no `+`, `-0`, fraction or
/// exponent).
fn is_canonical_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    (digits == "0" || !digits.starts_with('0'))
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && text != "-0"
}

/// Whether `text` is written as a UUID prints: 36 characters, lowercase
/// hex digits with hyphens at 8, 13, 18 and 23.
fn is_canonical_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// A `NewImage`, its `Payload` and `Metadata` apart from the other attributes.
#[derive(Debug, Default)]
struct Image {
    item: Item,
    payload: Option<Stored>,
    metadata: Option<Stored>,
}

impl Image {
    /// The image of a decoded item.
    fn of(mut item: Item) -> Self {
        Self {
            payload: item.remove(item::PAYLOAD).map(Stored::Attr),
            metadata: item.remove(item::METADATA).map(Stored::Attr),
            item,
        }
    }

    fn is_empty(&self) -> bool {
        self.item.is_empty() && self.payload.is_none() && self.metadata.is_none()
    }
}

/// A `Payload` or `Metadata` attribute as read: the attribute value, or
/// (the fast reading, [`attr::ExactJson`]) directly the plain JSON that
/// converts back to it exactly.
#[derive(Debug)]
enum Stored {
    Attr(AttrValue),
    Json(Value),
}

impl<'de> serde::Deserialize<'de> for Image {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Image;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a NewImage in DynamoDB JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Image, A::Error> {
                let mut image = Image::default();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        item::PAYLOAD => {
                            image.payload =
                                Some(Stored::Json(map.next_value::<attr::ExactJson>()?.0))
                        }
                        item::METADATA => {
                            image.metadata =
                                Some(Stored::Json(map.next_value::<attr::ExactJson>()?.0))
                        }
                        _ => {
                            let value = map.next_value::<AttrValue>()?;
                            image.item.insert(key.0.into_owned(), value);
                        }
                    }
                }
                Ok(image)
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn missing_new_image(ddb: &Map<String, Value>, what: &str) -> Rejection {
    let detail = match ddb.get("StreamViewType").and_then(Value::as_str) {
        Some(view) => format!(
            "{what} (StreamViewType {view}; the archiver needs NEW_IMAGE or NEW_AND_OLD_IMAGES)"
        ),
        None => what.to_owned(),
    };
    (DeadLetterReason::MissingNewImage, detail)
}

/// `ApproximateCreationDateTime` (epoch seconds: a JSON number or a numeric
/// string, fractions and exponents allowed) as epoch milliseconds, truncated.
fn approximate_creation_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => seconds_to_ms(&n.to_string()),
        Value::String(s) => seconds_to_ms(s.trim()),
        _ => None,
    }
}

/// Non-negative decimal seconds (`1700000000`, `1700000000.5`, `1.7e9`) to
/// milliseconds, exactly, truncating below the millisecond.
fn seconds_to_ms(text: &str) -> Option<i64> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (text.get(..i)?, text.get(i + 1..)?.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    // value = digits × 10^scale milliseconds
    let scale = i64::from(exponent) - i64::try_from(frac_part.len()).ok()? + 3;
    if digits.is_empty() {
        return Some(0);
    }
    if scale >= 0 {
        if i64::try_from(digits.len()).ok()? + scale > 18 {
            return None;
        }
        let base = digits.parse::<i64>().ok()?;
        base.checked_mul(10_i64.checked_pow(u32::try_from(scale).ok()?)?)
    } else {
        let drop = usize::try_from(-scale).ok()?;
        if drop >= digits.len() {
            return Some(0);
        }
        let kept = digits.get(..digits.len() - drop)?;
        if kept.len() > 18 {
            return None;
        }
        kept.parse::<i64>().ok()
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The steps of [`parse_batch_json`] one by one, for the benches that
/// time them (feature `bench`; not part of the API).
#[cfg(feature = "bench")]
pub mod bench {
    use serde_json::value::RawValue;

    use super::{BatchError, Classified};

    /// The records of an event as raw JSON text (step 1 of [`super::parse_batch_json`]).
    pub fn records_json(event: &str) -> Result<Vec<&RawValue>, BatchError> {
        super::records_json(event)
    }

    /// One record's fields, read (step 2).
    #[derive(Debug)]
    pub struct Parsed<'a>(super::RecordJson<'a>);

    /// Reads one record's fields.
    pub fn parse(record: &str) -> Parsed<'_> {
        Parsed(super::RecordJson::parse(record))
    }

    /// Classifies a read record (step 3).
    pub fn classify(parsed: Parsed<'_>) -> Classified {
        parsed.0.classify()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A stream record of an INSERT with this new image (DynamoDB JSON).
    pub(crate) fn insert_record(seq: &str, image: Value) -> Value {
        json!({
            "eventID": format!("ev-{seq}"),
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1795471652,
                "Keys": {"StreamId": image.get("StreamId").cloned().unwrap_or(json!({"S": "?"})),
                         "EventId": image.get("EventId").cloned().unwrap_or(json!({"N": "0"}))},
                "NewImage": image,
                "SequenceNumber": seq,
                "SizeBytes": 120,
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/2026-11-23T00:00:00.000"
        })
    }

    pub(crate) fn image(stream: &str, event_id: u64, timestamp_ms: i64) -> Value {
        json!({
            "StreamId": {"S": stream},
            "EventId": {"N": event_id.to_string()},
            "EventName": {"S": "Created"},
            "Timestamp": {"N": timestamp_ms.to_string()},
            "Payload": {"M": {"n": {"N": "12345678901234567890123"}, "s": {"S": "ünï €"}}},
        })
    }

    /// Classifies the record from its tree and from its text (compact and
    /// pretty), which must agree.
    fn classify_both(record: &Value) -> Classified {
        let classified = classify(record);
        for text in [
            serde_json::to_string(record).unwrap(),
            serde_json::to_string_pretty(record).unwrap(),
        ] {
            assert_eq!(classify_json(&text), classified, "{text}");
        }
        classified
    }

    fn event(record: &Value) -> ArchivedEvent {
        match classify_both(record) {
            Classified::Event(e) => *e,
            Classified::DeadLetter(d) => panic!("expected an event, got {d:?}"),
        }
    }

    fn dead(record: &Value) -> DeadLetter {
        match classify_both(record) {
            Classified::DeadLetter(d) => {
                assert_eq!(&d.raw, record, "the raw record is kept as it was");
                *d
            }
            Classified::Event(e) => panic!("expected a dead letter, got {e:?}"),
        }
    }

    #[test]
    fn an_insert_becomes_a_line_in_the_read_shape() {
        let mut img = image("order-1", 3, 1_795_471_652_123);
        img["EventUuid"] = json!({"S": "67e55044-10b1-426f-9247-bb680e5fe0c8"});
        img["Metadata"] = json!({"M": {"user": {"S": "u1"}}});
        img["Tenant"] = json!({"S": "t1"});
        let e = event(&insert_record("1100000000017454423009", img));
        assert_eq!(e.timestamp_source, TimestampSource::Item);
        assert_eq!(e.payload_attr, None);
        let line = e.to_line().unwrap();
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            concat!(
                r#"{"streamId":"order-1","eventId":3,"eventName":"Created","timestamp":"2026-11-23T22:07:32.123Z","#,
                r#""payload":{"n":12345678901234567890123,"s":"ünï €"},"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","#,
                r#""metadata":{"user":"u1"},"attributes":{"Tenant":{"S":"t1"}},"#,
                r#""eventID":"ev-1100000000017454423009","sequenceNumber":"1100000000017454423009"}"#
            )
        );
        assert_eq!(ArchivedEvent::from_line(&line.to_string()).unwrap(), e);
    }

    proptest::proptest! {
        /// The text checks say "canonical" exactly when parsing and printing
        /// gives the same text back.
        #[test]
        fn canonical_forms_agree_with_parse_and_print(
            n in proptest::prelude::any::<i64>(),
            text in "[-+0-9.e]{1,22}",
            u in proptest::prelude::any::<u128>(),
            form in 0..4_u8,
        ) {
            proptest::prop_assert!(is_canonical_integer(&n.to_string()));
            if let Ok(v) = text.parse::<i64>() {
                proptest::prop_assert_eq!(is_canonical_integer(&text), v.to_string() == text);
            }
            let v = uuid::Uuid::from_u128(u);
            let id = match form {
                0 => v.hyphenated().to_string(),
                1 => v.hyphenated().to_string().to_uppercase(),
                2 => v.simple().to_string(),
                _ => v.braced().to_string(),
            };
            proptest::prop_assert_eq!(uuid::Uuid::parse_str(&id).ok(), Some(v));
            proptest::prop_assert_eq!(is_canonical_uuid(&id), v.to_string() == id);
        }
    }

    #[test]
    fn a_timestamp_or_event_uuid_the_model_normalizes_is_kept_as_stored() {
        let mut img = image("order-1", 3, 0);
        img["Timestamp"] = json!({"N": "1795471652123.75"});
        img["EventUuid"] = json!({"S": "{67E55044-10B1-426F-9247-BB680E5FE0C8}"});
        let e = event(&insert_record("1100000000017454423009", img));
        // the event as the model reads it, as `evs read` shows it
        assert_eq!(e.event.timestamp_ms, 1_795_471_652_123);
        assert_eq!(
            e.event.id.map(|id| id.to_string()).as_deref(),
            Some("67e55044-10b1-426f-9247-bb680e5fe0c8")
        );
        // and the stored text, so nothing is lost
        let line = e.to_line().unwrap();
        assert_eq!(line["timestampAttr"], json!({"N": "1795471652123.75"}));
        assert_eq!(
            line["idAttr"],
            json!({"S": "{67E55044-10B1-426F-9247-BB680E5FE0C8}"})
        );
        assert_eq!(ArchivedEvent::from_line(&line.to_string()).unwrap(), e);
        let mut written = Vec::new();
        e.write_line(&mut written).unwrap();
        assert_eq!(written, serde_json::to_vec(&line).unwrap());

        // canonical forms need nothing more
        for (timestamp, id) in [
            ("1795471652123", "67e55044-10b1-426f-9247-bb680e5fe0c8"),
            ("0", "00000000-0000-0000-0000-000000000000"),
        ] {
            let mut img = image("order-1", 3, 0);
            img["Timestamp"] = json!({"N": timestamp});
            img["EventUuid"] = json!({"S": id});
            let e = event(&insert_record("1100000000017454423009", img));
            assert_eq!(
                (e.timestamp_attr, e.id_attr),
                (None, None),
                "{timestamp} {id}"
            );
        }
        for odd in ["01795471652123", "+1795471652123", "1795471652123.0", "-0"] {
            let mut img = image("order-1", 3, 0);
            img["Timestamp"] = json!({"N": odd});
            let e = event(&insert_record("1100000000017454423009", img));
            assert_eq!(e.timestamp_attr, Some(AttrValue::N(odd.into())), "{odd}");
        }
    }

    #[test]
    fn missing_timestamp_falls_back_to_approximate_creation_as_number_or_string() {
        for (acdt, ms) in [
            (json!(1795471652), 1_795_471_652_000),
            (json!("1795471652"), 1_795_471_652_000),
            (json!(1795471652.1239), 1_795_471_652_123),
            (json!("1795471652.5"), 1_795_471_652_500),
            (
                serde_json::from_str::<Value>("1.795471652e9").unwrap(),
                1_795_471_652_000,
            ),
            (json!(0), 0),
        ] {
            let mut img = image("s", 1, 0);
            img.as_object_mut().unwrap().remove("Timestamp");
            let mut rec = insert_record("100000000000000000001", img);
            rec["dynamodb"]["ApproximateCreationDateTime"] = acdt.clone();
            let e = event(&rec);
            assert_eq!(e.event.timestamp_ms, ms, "{acdt}");
            assert_eq!(
                e.timestamp_source,
                TimestampSource::ApproximateCreationDateTime
            );
            let line = e.to_line().unwrap();
            assert_eq!(line["timestampSource"], "approximateCreationDateTime");
            assert_eq!(ArchivedEvent::from_line(&line.to_string()).unwrap(), e);
        }
    }

    #[test]
    fn the_item_timestamp_wins_over_approximate_creation() {
        let mut rec = insert_record("100000000000000000001", image("s", 1, 42));
        rec["dynamodb"]["ApproximateCreationDateTime"] = json!("garbage");
        let e = event(&rec);
        assert_eq!(e.event.timestamp_ms, 42);
        assert!(e.to_line().unwrap().get("timestampSource").is_none());
    }

    #[test]
    fn seconds_parse_exactly() {
        assert_eq!(seconds_to_ms("1"), Some(1000));
        assert_eq!(seconds_to_ms("0.0019"), Some(1));
        assert_eq!(seconds_to_ms(".5"), Some(500));
        assert_eq!(seconds_to_ms("1e-3"), Some(1));
        assert_eq!(seconds_to_ms("1e-4"), Some(0));
        assert_eq!(seconds_to_ms("12.345678e2"), Some(1_234_567));
        assert_eq!(
            seconds_to_ms("9223372036854775"),
            None,
            "overflows once in ms"
        );
        assert_eq!(seconds_to_ms("9223372036854775.807e999999999"), None);
        for bad in ["", ".", "-1", "+1", "1e", "abc", "1.2.3", "1e+"] {
            assert_eq!(seconds_to_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_json_string_payload_is_archived_as_json() {
        let mut img = image("s", 1, 5);
        img["Payload"] = json!({"S": "{\"amount\": 12345678901234567890123.50, \"ok\": true}"});
        let e = event(&insert_record("100000000000000000001", img));
        assert_eq!(e.payload_encoding, PayloadEncoding::JsonString);
        let line = e.to_line().unwrap();
        assert_eq!(line["payloadEncoding"], "json-string");
        assert_eq!(
            line["payload"].to_string(),
            r#"{"amount":12345678901234567890123.50,"ok":true}"#
        );
        assert_eq!(ArchivedEvent::from_line(&line.to_string()).unwrap(), e);
        // Not the compact text: the original goes along, exactly.
        assert_eq!(
            line["payloadAttr"],
            json!({"S": "{\"amount\": 12345678901234567890123.50, \"ok\": true}"})
        );

        let mut img = image("s", 1, 5);
        img["Payload"] = json!({"S": "{\"a\":[1,\"x\"]}"});
        let line = event(&insert_record("100000000000000000001", img))
            .to_line()
            .unwrap();
        assert_eq!(line["payloadEncoding"], "json-string");
        assert!(
            line.get("payloadAttr").is_none(),
            "compact text: the JSON says it all"
        );

        let mut img = image("s", 1, 5);
        img["Payload"] = json!({"S": "not json {"});
        let line = event(&insert_record("100000000000000000001", img))
            .to_line()
            .unwrap();
        assert_eq!(line["payload"], "not json {");
        assert!(line.get("payloadEncoding").is_none());
    }

    #[test]
    fn binary_and_sets_also_carry_the_attribute_value() {
        let mut img = image("s", 1, 5);
        let stored = json!({"M": {"b": {"B": "AAEC"}, "l": {"L": [{"NS": ["1", "2.5"]}, {"SS": ["x"]}, {"BS": ["AA=="]}]}}});
        img["Payload"] = stored.clone();
        img["Metadata"] = json!({"SS": ["a", "b"]});
        let e = event(&insert_record("100000000000000000001", img));
        let line = e.to_line().unwrap();
        assert_eq!(line["payloadAttr"], stored);
        assert_eq!(
            line["payload"],
            json!({"b": "AAEC", "l": [[1, 2.5], ["x"], ["AA=="]]})
        );
        assert_eq!(line["metadataAttr"], json!({"SS": ["a", "b"]}));
        assert_eq!(line["metadata"], json!(["a", "b"]));
        assert_eq!(ArchivedEvent::from_line(&line.to_string()).unwrap(), e);
    }

    #[test]
    fn malformed_records_are_dead_letters() {
        let good = insert_record("100000000000000000001", image("s", 1, 5));
        let mut cases: Vec<(Value, &str)> = vec![
            (json!("just a string"), "JSON object"),
            (json!(null), "JSON object"),
        ];
        let mut no_name = good.clone();
        no_name.as_object_mut().unwrap().remove("eventName");
        cases.push((no_name, "eventName"));
        let mut no_id = good.clone();
        no_id.as_object_mut().unwrap().remove("eventID");
        cases.push((no_id, "eventID"));
        let mut no_ddb = good.clone();
        no_ddb["dynamodb"] = json!([]);
        cases.push((no_ddb, "dynamodb"));
        for seq in [
            json!("12a"),
            json!(123),
            json!("0123"),
            json!("1".repeat(41)),
        ] {
            let mut bad_seq = good.clone();
            bad_seq["dynamodb"]["SequenceNumber"] = seq;
            cases.push((bad_seq, "SequenceNumber"));
        }
        let mut image_not_object = good.clone();
        image_not_object["dynamodb"]["NewImage"] = json!("x");
        cases.push((image_not_object, "NewImage"));
        let mut bad_acdt = good.clone();
        bad_acdt["dynamodb"]["NewImage"]
            .as_object_mut()
            .unwrap()
            .remove("Timestamp");
        bad_acdt["dynamodb"]["ApproximateCreationDateTime"] = json!("yesterday");
        cases.push((bad_acdt, "ApproximateCreationDateTime"));
        for (record, needle) in cases {
            let d = dead(&record);
            assert_eq!(d.reason, DeadLetterReason::MalformedRecord, "{record}");
            assert!(d.detail.contains(needle), "{} lacks {needle}", d.detail);
        }
    }

    #[test]
    fn modify_and_remove_are_dead_letters() {
        for name in ["MODIFY", "REMOVE"] {
            let mut rec = insert_record("100000000000000000001", image("s", 1, 5));
            rec["eventName"] = json!(name);
            let d = dead(&rec);
            assert_eq!(
                d.reason,
                DeadLetterReason::NotInsert {
                    event_name: name.into()
                }
            );
            assert_eq!(d.reason.code(), "not-insert");
            assert!(d.detail.contains(name));
            assert_eq!(d.raw["eventID"], "ev-100000000000000000001");
            assert_eq!(
                d.sequence_number().unwrap().as_str(),
                "100000000000000000001"
            );
        }
    }

    #[test]
    fn a_missing_or_empty_new_image_is_a_dead_letter() {
        for image in [None, Some(json!(null)), Some(json!({}))] {
            let mut rec = insert_record("100000000000000000001", json!({}));
            let ddb = rec["dynamodb"].as_object_mut().unwrap();
            ddb.insert("StreamViewType".into(), json!("KEYS_ONLY"));
            match image {
                Some(i) => ddb.insert("NewImage".into(), i),
                None => ddb.remove("NewImage"),
            };
            let d = dead(&rec);
            assert_eq!(d.reason, DeadLetterReason::MissingNewImage);
            assert!(d.detail.contains("KEYS_ONLY"), "{}", d.detail);
        }
    }

    #[test]
    fn wrong_attribute_types_are_dead_letters() {
        let cases = [
            ("Payload", json!({"N": "not a number"})),
            ("Payload", json!({"Q": "unknown type"})),
            ("StreamId", json!({"N": "1"})),
            ("EventId", json!({"S": "1"})),
            ("EventId", json!({"N": "1.5"})),
            ("EventId", json!({"N": "0"})),
            ("EventName", json!({"BOOL": true})),
            ("Timestamp", json!({"S": "yesterday"})),
            ("EventUuid", json!({"S": "not-a-uuid"})),
        ];
        for (name, value) in cases {
            let mut img = image("s", 1, 5);
            img[name] = value.clone();
            let d = dead(&insert_record("100000000000000000001", img));
            assert_eq!(
                d.reason,
                DeadLetterReason::InvalidAttribute,
                "{name} = {value}: {}",
                d.detail
            );
        }
    }

    #[test]
    fn items_that_are_not_events_are_dead_letters() {
        for name in ["StreamId", "EventId", "EventName"] {
            let mut img = image("s", 1, 5);
            img.as_object_mut().unwrap().remove(name);
            let d = dead(&insert_record("100000000000000000001", img));
            assert_eq!(d.reason, DeadLetterReason::NotAnEvent);
            assert!(d.detail.contains(name), "{}", d.detail);
        }
    }

    #[test]
    fn no_timestamp_at_all_is_a_dead_letter() {
        let mut img = image("s", 1, 5);
        img.as_object_mut().unwrap().remove("Timestamp");
        let mut rec = insert_record("100000000000000000001", img);
        rec["dynamodb"]
            .as_object_mut()
            .unwrap()
            .remove("ApproximateCreationDateTime");
        let d = dead(&rec);
        assert_eq!(d.reason, DeadLetterReason::MissingTimestamp);
    }

    #[test]
    fn reasons_round_trip_through_their_codes() {
        for r in [
            DeadLetterReason::MalformedRecord,
            DeadLetterReason::NotInsert {
                event_name: "MODIFY".into(),
            },
            DeadLetterReason::MissingNewImage,
            DeadLetterReason::InvalidAttribute,
            DeadLetterReason::NotAnEvent,
            DeadLetterReason::MissingTimestamp,
        ] {
            let name = match &r {
                DeadLetterReason::NotInsert { event_name } => Some(event_name.as_str()),
                _ => None,
            };
            assert_eq!(DeadLetterReason::from_code(r.code(), name), Some(r));
        }
        assert_eq!(DeadLetterReason::from_code("nope", None), None);
    }

    #[test]
    fn a_batch_classifies_each_record_on_its_own() {
        let good = insert_record("100000000000000000001", image("s", 1, 5));
        let event = json!({"Records": [good, 7, {"eventName": "REMOVE"}]});
        let out = parse_batch(&event).unwrap();
        assert_eq!(out.len(), 3);
        assert!(matches!(out[0], Classified::Event(_)));
        assert!(
            matches!(&out[1], Classified::DeadLetter(d) if d.reason == DeadLetterReason::MalformedRecord)
        );
        assert!(
            matches!(&out[2], Classified::DeadLetter(d) if matches!(d.reason, DeadLetterReason::NotInsert { .. }))
        );
        assert_eq!(parse_batch(&json!({"Records": []})).unwrap(), vec![]);
        assert_eq!(parse_batch_json(&event.to_string()).unwrap(), out);
        for (text, err) in [
            ("[]", BatchError::NotAnObject { found: "an array" }),
            (
                "{",
                BatchError::NotAnObject {
                    found: "invalid JSON",
                },
            ),
            ("{}", BatchError::MissingRecords),
            (
                r#"{"Records": {}}"#,
                BatchError::RecordsNotArray { found: "an object" },
            ),
            (
                r#"{"Records": [], "Records": 5}"#,
                BatchError::RecordsNotArray { found: "a number" },
            ),
        ] {
            assert_eq!(parse_batch_json(text), Err(err), "{text}");
        }
        // a repeated field keeps its last value, as in a JSON tree
        let text = format!(r#"{{"Records": 5, "Records": [{good}]}}"#);
        assert_eq!(
            parse_batch_json(&text).unwrap(),
            parse_batch(&serde_json::from_str(&text).unwrap()).unwrap()
        );
        assert_eq!(parse_batch_json(&text).unwrap().len(), 1);
        assert_eq!(
            parse_batch(&json!([])),
            Err(BatchError::NotAnObject { found: "an array" })
        );
        assert_eq!(parse_batch(&json!({})), Err(BatchError::MissingRecords));
        assert_eq!(
            parse_batch(&json!({"Records": {}})),
            Err(BatchError::RecordsNotArray { found: "an object" })
        );
    }

    #[test]
    fn lines_with_bad_fields_are_refused() {
        let line = event(&insert_record("100000000000000000001", image("s", 1, 5)))
            .to_line()
            .unwrap();
        for (field, value) in [
            ("eventId", json!(-1)),
            ("timestamp", json!("yesterday")),
            ("sequenceNumber", json!("x")),
            ("timestampSource", json!("sundial")),
            ("payloadEncoding", json!("rot13")),
            ("payloadAttr", json!({"Q": 1})),
        ] {
            let mut bad = line.clone();
            bad[field] = value;
            assert!(
                field_at_fault(&bad).contains(field),
                "{field}: {}",
                field_at_fault(&bad)
            );
        }
        let mut bad = line.clone();
        bad.as_object_mut().unwrap().remove("eventID");
        assert!(field_at_fault(&bad).contains("eventID"));
    }

    /// The field a line is refused for: the one a field error names, or
    /// the one named in the message of a line that is not read at all.
    fn field_at_fault(line: &Value) -> String {
        match ArchivedEvent::from_line(&line.to_string()).unwrap_err() {
            evs_archive::LineError::Field { field, .. } => field.to_owned(),
            evs_archive::LineError::Json(e) => e.to_string(),
        }
    }

    /// A sample record's text: an insert with metadata and an extra attribute.
    fn sample_record() -> Vec<u8> {
        let mut img = image("order-1", 3, 1_795_471_652_123);
        img["EventUuid"] = json!({"S": "67e55044-10b1-426f-9247-bb680e5fe0c8"});
        img["Metadata"] = json!({"M": {"user": {"S": "u1"}}});
        img["Tenant"] = json!({"S": "t1"});
        insert_record("1100000000017454423009", img)
            .to_string()
            .into_bytes()
    }

    /// Reads `text` as a batch, a record and a line, from text and from a
    /// tree: each gives a value or a typed error, never a panic, and the text
    /// readers agree with the tree readers.
    fn read_every_way(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::{prop_assert, prop_assert_eq};
        let batch = parse_batch_json(text);
        let one = classify_json(text);
        match serde_json::from_str::<Value>(text) {
            Ok(tree) => {
                prop_assert_eq!(&batch, &parse_batch(&tree));
                prop_assert_eq!(&one, &classify(&tree));
                if let Ok(e) = ArchivedEvent::from_line(text) {
                    let again = ArchivedEvent::from_line(&e.to_line().unwrap().to_string());
                    prop_assert_eq!(again.ok(), Some(e));
                }
            }
            Err(_) => {
                prop_assert!(batch.is_err());
                prop_assert!(matches!(one, Classified::DeadLetter(_)));
            }
        }
        for c in batch.iter().flatten().chain([&one]) {
            if let Classified::Event(e) = c {
                let line = e.to_line().unwrap();
                let back = ArchivedEvent::from_line(&line.to_string());
                prop_assert_eq!(back.ok(), Some((**e).clone()));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_are_an_event_a_dead_letter_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            read_every_way(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn arbitrary_text_is_an_event_a_dead_letter_or_an_error(text in "\\PC{0,64}") {
            read_every_way(&text)?;
        }

        #[test]
        fn a_mutated_record_is_an_event_a_dead_letter_or_an_error(bytes in evs_testkit::mutated(sample_record())) {
            let text = String::from_utf8_lossy(&bytes);
            read_every_way(&text)?;
            read_every_way(&format!("{{\"Records\":[{text}]}}"))?;
        }

        #[test]
        fn a_mutated_sample_batch_is_classified_or_refused(
            bytes in evs_testkit::mutated(include_bytes!("../../../../events/mixed.json").to_vec()),
        ) {
            read_every_way(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn a_mutated_line_is_an_event_or_an_error(bytes in evs_testkit::mutated({
            let mut line = Vec::new();
            match classify_json(&String::from_utf8_lossy(&sample_record())) {
                Classified::Event(e) => e.write_line(&mut line).unwrap(),
                Classified::DeadLetter(d) => panic!("the sample is an event: {d:?}"),
            }
            line
        })) {
            read_every_way(&String::from_utf8_lossy(&bytes))?;
        }
    }
}
