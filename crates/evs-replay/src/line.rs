//! Archive lines → delivered events, in the line shape of `evs read`.
//!
//! An archive line is the event as `evs read` prints it (`streamId`,
//! `eventId`, `eventName`, `timestamp`, `payload`, then `id`, `metadata`,
//! `attributes` when present) followed by what the stream record added:
//! `eventID`, `sequenceNumber` and, when needed to stay lossless,
//! `timestampSource`, `payloadEncoding`, `payloadAbsent`, `payloadAttr`,
//! `metadataAttr`, `timestampAttr`, `idAttr` (`evs_archive::ArchivedEvent`). A replay delivers
//! the event, so it keeps the first group and drops the second.
//!
//! The common line is converted without building a JSON tree: its fields are
//! scanned as raw JSON text and the event's fields copied through, byte for
//! byte. A line that needs the lossless extras (`payloadEncoding`,
//! `payloadAttr`, `metadataAttr`) goes through the archiver's own decoder
//! ([`ArchivedEvent::from_line`]) and the event's `to_json`, so both paths
//! print what `evs read` prints for the same item (a payload stored as a
//! string of JSON is a string there, as in the table).

use std::borrow::Cow;
use std::fmt;

use evs_archive::{ArchivedEvent, PayloadEncoding};
use evs_core::AttrValue;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::ReplayEvent;

/// Fields of the event itself, copied to the delivered line in this order.
const EVENT_FIELDS: [&str; 8] = [
    "streamId",
    "eventId",
    "eventName",
    "timestamp",
    "payload",
    "id",
    "metadata",
    "attributes",
];

/// Fields that only the archiver's decoder can turn back into the event.
const LOSSLESS_FIELDS: [&str; 3] = ["payloadEncoding", "payloadAttr", "metadataAttr"];

/// Why an archive line cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LineError(String);

/// Reads one archive line (JSON text, no newline) as the event it holds.
pub fn event_from_line(line: &str) -> Result<ReplayEvent, LineError> {
    let scanned = scan(line)?;
    if scanned.needs_decoder {
        return decoded(line);
    }
    let stream_id = scanned
        .stream_id
        .ok_or_else(|| LineError("the line has no \"streamId\"".into()))?;
    let event_id = scanned
        .event_id
        .ok_or_else(|| LineError("the line has no \"eventId\"".into()))?;
    let mut out = String::with_capacity(line.len());
    out.push('{');
    for (name, raw) in EVENT_FIELDS.iter().zip(scanned.fields.iter()) {
        if let Some(raw) = raw {
            if out.len() > 1 {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            out.push_str(raw);
        }
    }
    out.push('}');
    // Every piece is JSON the scan just parsed: no second parse.
    Ok(ReplayEvent::from_json_text(stream_id, event_id, out))
}

/// The slow, general path: the archiver's decoder, then the event's JSON.
fn decoded(line: &str) -> Result<ReplayEvent, LineError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| LineError(format!("not JSON: {e}")))?;
    let archived = ArchivedEvent::from_line(&value).map_err(|e| LineError(e.to_string()))?;
    let mut event = archived.event;
    if archived.payload_encoding == PayloadEncoding::JsonString {
        // The table holds the payload as a string of JSON text, and so
        // does `evs read` print it; the archive line holds it parsed, plus
        // the text itself unless it is exactly the compact JSON.
        let text = match archived.payload_attr {
            Some(AttrValue::S(text)) => text,
            _ => serde_json::to_string(&event.payload).map_err(|e| LineError(e.to_string()))?,
        };
        event.payload = serde_json::Value::String(text);
    }
    let text = serde_json::to_string(&event.to_json()).map_err(|e| LineError(e.to_string()))?;
    Ok(ReplayEvent::from_json_text(
        event.stream_id.to_string(),
        event.event_id,
        text,
    ))
}

/// A line's fields as raw text, found in one pass.
#[derive(Default)]
struct Scanned<'a> {
    stream_id: Option<String>,
    event_id: Option<u64>,
    fields: [Option<&'a str>; EVENT_FIELDS.len()],
    needs_decoder: bool,
}

fn scan(line: &str) -> Result<Scanned<'_>, LineError> {
    let mut de = serde_json::Deserializer::from_str(line);
    let scanned = de
        .deserialize_map(LineVisitor)
        .map_err(|e| LineError(format!("not a JSON object: {e}")))?;
    de.end()
        .map_err(|e| LineError(format!("text after the JSON object: {e}")))?;
    Ok(scanned)
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Scanned<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an archive line (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut scanned = Scanned::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let raw: &'de RawValue = map.next_value()?;
            if let Some(i) = EVENT_FIELDS.iter().position(|f| *f == key) {
                if scanned.fields[i].is_some() {
                    return Err(de::Error::custom(format_args!("duplicate field {key:?}")));
                }
                scanned.fields[i] = Some(raw.get());
                match i {
                    0 => {
                        let id: Cow<'de, str> =
                            serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
                        if id.is_empty() {
                            return Err(de::Error::custom("\"streamId\" is empty"));
                        }
                        scanned.stream_id = Some(id.into_owned());
                    }
                    1 => {
                        let id = raw
                            .get()
                            .parse::<u64>()
                            .ok()
                            .filter(|&id| id >= 1)
                            .ok_or_else(|| {
                                de::Error::custom("\"eventId\" must be an integer of at least 1")
                            })?;
                        scanned.event_id = Some(id);
                    }
                    _ => {}
                }
            } else if LOSSLESS_FIELDS.contains(&key.as_ref()) {
                scanned.needs_decoder = true;
            }
        }
        Ok(scanned)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// What `evs read` prints for the event an archive line holds.
    fn read_shape(line: &str) -> String {
        decoded(line).unwrap().line().to_owned()
    }

    fn check(line: serde_json::Value) {
        let text = line.to_string();
        let fast = event_from_line(&text).unwrap();
        assert_eq!(fast.line(), read_shape(&text), "line {text}");
        let parsed: serde_json::Value = serde_json::from_str(fast.line()).unwrap();
        assert_eq!(parsed["streamId"], json!(fast.stream_id));
        assert_eq!(parsed["eventId"], json!(fast.event_id));
    }

    pub(crate) fn base() -> serde_json::Value {
        json!({
            "streamId": "order-\u{e9}\"1",
            "eventId": 7,
            "eventName": "Paid",
            "timestamp": "2026-11-23T22:07:32.123Z",
            "payload": {"amount": 12345678901234567890123u128, "note": "caf\u{e9} \u{1f600}", "x": [1.50, null, true]},
            "eventID": "c81e728d9d4c2f636f067f89cc14862c",
            "sequenceNumber": "111111111111111111111"
        })
    }

    #[test]
    fn the_fast_path_prints_what_the_decoder_prints() {
        check(base());
        let mut line = base();
        line["id"] = json!("6f1f8a8e-8c8f-4bb4-9f7e-3c1c2a0f0e11");
        line["metadata"] = json!({"user": "u-1", "n": -0.000001});
        check(line.clone());
        line["attributes"] = json!({"Big": {"N": "1e30"}, "Tenant": {"S": "acme"}});
        check(line.clone());
        line["timestampSource"] = json!("approximateCreationDateTime");
        check(line.clone());
        // the stored text of a Timestamp or EventUuid the model normalizes:
        // for the archive's own reader, not part of the event `evs read` prints
        line["timestampAttr"] = json!({"N": "1795471652123.75"});
        line["idAttr"] = json!({"S": "{6F1F8A8E-8C8F-4BB4-9F7E-3C1C2A0F0E11}"});
        check(line.clone());
        let printed = event_from_line(&line.to_string()).unwrap();
        assert!(!printed.line().contains("Attr"), "{}", printed.line());
        check(line);
        // an item without Payload: null, as evs read prints it
        let mut absent = base();
        absent["payload"] = json!(null);
        absent["payloadAbsent"] = json!(true);
        check(absent.clone());
        let printed = event_from_line(&absent.to_string()).unwrap();
        assert!(
            !printed.line().contains("payloadAbsent"),
            "{}",
            printed.line()
        );
        let mut escaped = base();
        escaped["payload"] = json!("a string payload with \"quotes\" and \\ and \n");
        check(escaped);
    }

    #[test]
    fn lossless_extras_go_through_the_decoder() {
        let mut line = base();
        line["payload"] = json!({"a": 1});
        line["payloadEncoding"] = json!("json-string");
        let text = line.to_string();
        let event = event_from_line(&text).unwrap();
        let printed: serde_json::Value = serde_json::from_str(event.line()).unwrap();
        assert_eq!(
            printed["payload"],
            json!("{\"a\":1}"),
            "a string, as evs read prints it"
        );
        assert!(!event.line().contains("payloadEncoding"));
        assert!(!event.line().contains("sequenceNumber"));
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        for (line, reason) in [
            ("[1]", "JSON object"),
            ("{\"eventId\": 1}", "streamId"),
            ("{\"streamId\": \"a\"}", "eventId"),
            ("{\"streamId\": \"\", \"eventId\": 1}", "empty"),
            ("{\"streamId\": \"a\", \"eventId\": 0}", "at least 1"),
            ("{\"streamId\": \"a\", \"eventId\": 1.0}", "at least 1"),
            ("{\"streamId\": \"a\", \"eventId\": \"1\"}", "at least 1"),
            (
                "{\"streamId\": \"a\", \"streamId\": \"b\", \"eventId\": 1}",
                "duplicate",
            ),
            ("{\"streamId\": \"a\", \"eventId\": 1} x", "after"),
            ("{\"streamId\": 5, \"eventId\": 1}", "JSON object"),
        ] {
            let err = event_from_line(line).unwrap_err().to_string();
            assert!(err.contains(reason), "{line}: {err}");
        }
    }

    /// Reads `line`: an event or a typed error, never a panic; an event
    /// names the stream and number its delivered line holds.
    fn read(line: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        if let Ok(event) = event_from_line(line) {
            let printed = event.line_value();
            proptest::prop_assert!(printed.is_ok(), "{line}");
            let printed = printed.unwrap_or_default();
            proptest::prop_assert_eq!(&printed["streamId"], &json!(event.stream_id));
            proptest::prop_assert_eq!(&printed["eventId"], &json!(event.event_id));
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_are_an_event_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            read(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn arbitrary_text_is_an_event_or_an_error(text in "\\PC{0,64}") {
            read(&text)?;
        }

        #[test]
        fn a_mutated_line_is_an_event_or_an_error(
            bytes in evs_testkit::mutated(base().to_string().into_bytes()),
            lossless in proptest::prelude::any::<bool>(),
        ) {
            let text = String::from_utf8_lossy(&bytes);
            read(&text)?;
            if lossless {
                // the same through the archiver's decoder
                read(&text.replacen('{', r#"{"payloadEncoding":"jsonString","#, 1))?;
            }
        }
    }
}
