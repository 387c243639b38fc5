//! Archive lines → delivered events, in the line shape of `evs read`.
//!
//! An archive line is the event as `evs read` prints it followed by what the
//! stream record added (`evs_archive::Line`). A replay delivers the event, so
//! it keeps the first group and drops the second.
//!
//! The common line is read as [`Line`], whose JSON values stay raw text, and
//! written back without the record's fields ([`Line::event_only_json`]): the
//! event's values are copied through, byte for byte, with no JSON tree built
//! and no serializer run. A line whose payload or
//! metadata must come from the lossless extras ([`Line::needs_decoding`])
//! goes through the archive's own decoder ([`ArchivedEvent::from_line`]), so
//! both paths print what `evs read` prints for the same item (a payload
//! stored as a string of JSON is a string there, as in the table).

use evs_archive::{event_line, ArchivedEvent, Line};

use crate::event::ReplayEvent;
use crate::partition::Partition;

/// Why an archive line cannot be delivered.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Not a line: not a JSON object, a field of the wrong type, `streamId`
    /// or `eventId` missing or invalid, a field repeated, text after it.
    #[error("not an archive line: {0}")]
    Json(#[from] serde_json::Error),
    /// A line whose lossless extras do not decode.
    #[error(transparent)]
    Archive(#[from] evs_archive::LineError),
}

/// Reads one archive line (JSON text, no newline) as the event it holds.
pub fn event_from_line(text: &str) -> Result<ReplayEvent, LineError> {
    convert(text, Line::parse(text)?)
}

/// Reads one archive line as the event it holds when its stream is in
/// `keep`'s partition; `None` for another partition's stream, decided by the
/// stream id before the event is built (the line is still checked to be a
/// line).
pub(crate) fn event_in(text: &str, keep: Keep) -> Result<Option<ReplayEvent>, LineError> {
    let line = Line::parse(text)?;
    if !keep.partition.contains(&line.stream_id.0) {
        return Ok(None);
    }
    let timestamp_ms = if keep.timestamps {
        line.timestamp_ms()
    } else {
        None
    };
    if keep.events && line.needs_decoding() {
        return Ok(Some(decoded_with_event(text)?.with_timestamp(timestamp_ms)));
    }
    // a line the event cannot be built from is left to its reader, which
    // reads it again and says why
    let recorded = if keep.events {
        built(&line, keep)
    } else {
        None
    };
    if let Some(event) = recorded {
        // the event is what its taker reads: the line is not written
        let (stream_id, event_id) = (line.stream_id.0.into_owned(), line.event_id);
        let timestamp_ms = Some(event.timestamp_ms);
        return Ok(Some(
            ReplayEvent::from_json_text(stream_id, event_id, String::new())
                .with_timestamp(timestamp_ms)
                .with_recorded(Some(event)),
        ));
    }
    Ok(Some(convert(text, line)?.with_timestamp(timestamp_ms)))
}

/// The event a line holds, as the table holds it; an event whose name
/// `keep.names` leaves out is built without its payload, metadata and
/// attributes (its reader ignores them).
fn built(line: &Line<'_>, keep: Keep) -> Option<evs_core::RecordedEvent> {
    let Some(names) = keep.names else {
        return line.to_event().ok();
    };
    let name = line.event_name.as_ref()?.to_string().ok()?;
    if names.contains(&name.as_str()) {
        return line.to_event().ok();
    }
    Some(evs_core::RecordedEvent {
        stream_id: evs_core::StreamId::new(&*line.stream_id.0).ok()?,
        event_id: line.event_id,
        name,
        payload: serde_json::Value::Null,
        timestamp_ms: line.timestamp_ms()?,
        id: None,
        metadata: None,
        attributes: Default::default(),
    })
}

/// What decoding an object keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keep {
    /// The events of this partition's streams (the others are dropped by
    /// stream id, before the event is built).
    pub partition: Partition,
    /// Each event's timestamp, read from the line as it is decoded (a
    /// replay from a time judges every event by it).
    pub timestamps: bool,
    /// Each event as the table holds it, built from the parsed line (a
    /// projection's rebuild takes it: no second parse, and no line
    /// written).
    pub events: bool,
    /// With `events`: the event names whose payload is read; others are
    /// built without payload, metadata and attributes (`None`: every name).
    pub names: Option<&'static [&'static str]>,
}

impl Keep {
    /// Every event, no timestamps.
    pub(crate) const ALL: Keep = Keep {
        partition: Partition::ALL,
        timestamps: false,
        events: false,
        names: None,
    };
}

/// The event a parsed line holds.
fn convert(text: &str, line: Line<'_>) -> Result<ReplayEvent, LineError> {
    if line.needs_decoding() {
        return decoded(text);
    }
    let out = line.event_only_json()?;
    let (stream_id, event_id) = (line.stream_id.0.into_owned(), line.event_id);
    // Every piece is JSON the parse just checked: no second parse.
    Ok(ReplayEvent::from_json_text(stream_id, event_id, out))
}

/// The general path, keeping the event the decoder built.
fn decoded_with_event(text: &str) -> Result<ReplayEvent, LineError> {
    let event = ArchivedEvent::from_line(text)?.into_table_event()?;
    let out = serde_json::to_string(&event_line(&event))?;
    let (stream_id, event_id) = (event.stream_id.to_string(), event.event_id);
    Ok(ReplayEvent::from_json_text(stream_id, event_id, out).with_recorded(Some(event)))
}

/// The general path: the archive's decoder, then the event's line.
fn decoded(text: &str) -> Result<ReplayEvent, LineError> {
    let event = ArchivedEvent::from_line(text)?.into_table_event()?;
    let out = serde_json::to_string(&event_line(&event))?;
    Ok(ReplayEvent::from_json_text(
        event.stream_id.to_string(),
        event.event_id,
        out,
    ))
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
        // the event built as the line is decoded is the one its delivered
        // line holds
        let keep = Keep {
            events: true,
            ..Keep::ALL
        };
        let mut typed = event_in(&text, keep).unwrap().unwrap();
        assert_eq!(typed.line(), "", "the line is not written");
        let built = typed.take_recorded().expect("built as decoded");
        let delivered = Line::parse(fast.line()).unwrap().to_event().unwrap();
        assert_eq!(built, delivered, "line {text}");
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
    fn names_left_out_are_built_without_their_payload() {
        let text = base().to_string();
        let mut keep = Keep {
            events: true,
            ..Keep::ALL
        };
        let whole = event_in(&text, keep)
            .unwrap()
            .unwrap()
            .take_recorded()
            .unwrap();
        keep.names = Some(&["Paid"]);
        let listed = event_in(&text, keep)
            .unwrap()
            .unwrap()
            .take_recorded()
            .unwrap();
        assert_eq!(listed, whole);
        keep.names = Some(&["Placed", "Cancelled"]);
        let other = event_in(&text, keep)
            .unwrap()
            .unwrap()
            .take_recorded()
            .unwrap();
        assert_eq!(other.payload, json!(null));
        assert_eq!(
            (
                &other.stream_id,
                other.event_id,
                &other.name,
                other.timestamp_ms
            ),
            (
                &whole.stream_id,
                whole.event_id,
                &whole.name,
                whole.timestamp_ms
            )
        );
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
        let keep = Keep {
            events: true,
            ..Keep::ALL
        };
        let built = event_in(&text, keep).unwrap().unwrap().take_recorded();
        let delivered = Line::parse(event.line()).unwrap().to_event().unwrap();
        assert_eq!(built, Some(delivered));
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
            (
                "{\"streamId\": \"a\", \"eventId\": 1} x",
                "trailing characters",
            ),
            ("{\"streamId\": 5, \"eventId\": 1}", "expected a string"),
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
