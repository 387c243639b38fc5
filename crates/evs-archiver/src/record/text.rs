//! The batch and its records read from their JSON text, as the Lambda
//! receives them: records found as raw text, and a record that becomes an
//! event read in one pass without a JSON tree ([`classify_json`]). Whatever
//! the fast reading does not cover is classified by [`super::classify`], the
//! one definition of the rules.

use std::fmt;

use evs_core::item;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use evs_archive::{ArchivedEvent, DeadLetter, DeadLetterReason, SequenceNumber, Str};

use super::{archive_item, classify, parse_batch, BatchError, Classified, Image};

/// The records of a Lambda DynamoDB Streams event (`{"Records": [...]}`),
/// each as its raw JSON text, in order. The errors are those of [`parse_batch`].
pub(crate) fn records_json(event: &str) -> Result<Vec<&RawValue>, BatchError> {
    match serde_json::from_str::<RecordsField<'_>>(event) {
        Ok(RecordsField(Some(Records::Array(records)))) => return Ok(records),
        Ok(RecordsField(None)) => return Err(BatchError::MissingRecords),
        Ok(RecordsField(Some(Records::Other))) | Err(_) => {}
    }
    // Not the expected shape: the tree-based parser names what is wrong.
    Err(match serde_json::from_str::<Value>(event) {
        Ok(value) => match parse_batch(&value) {
            Err(e) => e,
            // Not reachable: text whose Records is an array reads above.
            Ok(_) => BatchError::RecordsNotArray {
                found: "an unreadable array",
            },
        },
        Err(_) => BatchError::NotAnObject {
            found: "invalid JSON",
        },
    })
}

/// An event's last `Records` field (as a JSON tree keeps it), read in the
/// same single pass as the rest of the event.
struct RecordsField<'a>(Option<Records<'a>>);

/// A `Records` value: the array of raw records, or anything else.
enum Records<'a> {
    Array(Vec<&'a RawValue>),
    Other,
}

impl<'de> serde::Deserialize<'de> for RecordsField<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RecordsField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a DynamoDB Streams event")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut records = None;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    if key.0 == "Records" {
                        records = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(RecordsField(records))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl<'de> serde::Deserialize<'de> for Records<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Records<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(record) = seq.next_element()? {
                    records.push(record);
                }
                Ok(Records::Array(records))
            }
            // An object, or a number (serde_json's arbitrary precision hands
            // big ones over as a map).
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Records::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Records::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Records::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Records::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Records::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Records::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Records::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Classifies one raw stream record given as its JSON text: the same result
/// as [`classify`] on the parsed record (see [`RecordJson`]).
pub fn classify_json(record: &str) -> Classified {
    RecordJson::parse(record).classify()
}

/// One stream record read from its JSON text in a single pass, straight into
/// what an event needs, without a JSON tree: the few record fields as text
/// borrowed from the input, the `NewImage` attributes as [`AttrValue`]s, and
/// its `Payload` and `Metadata` directly as the plain JSON of the line
/// ([`attr::ExactJson`]); everything else is skipped.
///
/// That fast reading covers the records that become events with a payload
/// and metadata that JSON holds exactly. Any other record (not an `INSERT`,
/// a missing or invalid field, whatever would be a dead letter, or a payload
/// with binary, sets or numbers JSON cannot spell) is classified by
/// [`classify`] on its parsed JSON tree, the one definition of the rules, so
/// the outcome, reasons and details are the same either way; a dead letter
/// keeps the record exactly as delivered.
#[derive(Debug)]
pub(crate) struct RecordJson<'a> {
    text: &'a str,
    fields: Option<RecordFields<'a>>,
}

impl<'a> RecordJson<'a> {
    /// Reads the record's fields (the parse step of [`classify_json`]).
    pub(crate) fn parse(text: &'a str) -> Self {
        Self {
            text,
            fields: serde_json::from_str(text).ok(),
        }
    }

    /// Classifies the record (the classification step of [`classify_json`]).
    pub(crate) fn classify(self) -> Classified {
        if let Some(event) = self.fields.and_then(RecordFields::archive) {
            return Classified::Event(Box::new(event));
        }
        match serde_json::from_str::<Value>(self.text) {
            Ok(record) => classify(&record),
            // Not reachable for text that a batch parsed; never dropped all the same.
            Err(e) => Classified::DeadLetter(Box::new(DeadLetter {
                reason: DeadLetterReason::MalformedRecord,
                detail: format!("record is not JSON: {e}"),
                raw: Value::String(self.text.to_owned()),
            })),
        }
    }
}

/// What the fast reading keeps of a record. A repeated field keeps its last
/// value, as a JSON tree does.
#[derive(Debug, Default)]
struct RecordFields<'a> {
    event_name: Option<Str<'a>>,
    record_id: Option<String>,
    dynamodb: Option<DynamodbFields<'a>>,
}

/// What the fast reading keeps of a record's `dynamodb` object.
#[derive(Debug, Default)]
struct DynamodbFields<'a> {
    sequence_number: Option<Str<'a>>,
    new_image: Option<Image>,
    approximate_creation: Option<&'a RawValue>,
}

impl RecordFields<'_> {
    /// The event, when the record is one with nothing the rules would
    /// refuse; `None` sends the record to [`classify`].
    fn archive(self) -> Option<ArchivedEvent> {
        if self.event_name?.0 != "INSERT" {
            return None;
        }
        let record_id = self.record_id.filter(|id| !id.is_empty())?;
        let ddb = self.dynamodb?;
        let sequence_number = SequenceNumber::new(ddb.sequence_number?.0).ok()?;
        let image = ddb.new_image.filter(|image| !image.is_empty())?;
        let approximate_creation = match ddb.approximate_creation {
            Some(raw) if !image.item.contains_key(item::TIMESTAMP) => {
                Some(serde_json::from_str::<Value>(raw.get()).ok()?)
            }
            _ => None,
        };
        archive_item(
            record_id,
            sequence_number,
            image,
            approximate_creation.as_ref(),
        )
        .ok()
    }
}

impl<'de> serde::Deserialize<'de> for RecordFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RecordFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a DynamoDB Streams record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = RecordFields::default();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "eventName" => fields.event_name = Some(map.next_value()?),
                        "eventID" => fields.record_id = Some(map.next_value()?),
                        "dynamodb" => fields.dynamodb = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl<'de> serde::Deserialize<'de> for DynamodbFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DynamodbFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a stream record's dynamodb object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = DynamodbFields::default();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "SequenceNumber" => fields.sequence_number = Some(map.next_value()?),
                        "NewImage" => fields.new_image = Some(map.next_value()?),
                        "ApproximateCreationDateTime" => {
                            fields.approximate_creation = Some(map.next_value()?)
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{image, insert_record};
    use serde_json::json;

    #[test]
    fn an_insert_is_read_without_a_json_tree() {
        let mut img = image("order-1", 3, 1_795_471_652_123);
        img["Metadata"] = json!({"M": {"user": {"S": "u1"}}});
        let text = insert_record("1100000000017454423009", img).to_string();
        let fields = RecordJson::parse(&text).fields.expect("read in one pass");
        assert!(fields.archive().is_some(), "an event on the fast path");
        // the record fields borrow the input
        let fields = RecordJson::parse(&text).fields.unwrap();
        assert!(matches!(
            fields.event_name,
            Some(Str(std::borrow::Cow::Borrowed("INSERT")))
        ));
    }
}
