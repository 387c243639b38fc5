//! The archive format's encoders over classified records.

use std::cmp::Ordering;
use std::io::Write;

use evs_archive::*;
use serde_json::Value;

use crate::record::tests::{image, insert_record};

/// The lines of an events object as JSON values (numbered from 1 in errors).
fn decode_lines(bytes: &[u8], compression: Compression) -> Result<Vec<Value>, DecodeError> {
    let text = decompress(bytes, compression)?;
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_slice(line).map_err(|source| DecodeError::Json {
                line: i + 1,
                source,
            })
        })
        .collect()
}
use crate::record::{classify, parse_batch, Classified};
use evs_core::attr::{self, AttrValue};

#[test]
fn decompression_is_bounded() {
    // 4 MiB of zeros compresses to a few KB: a small object that
    // inflates past the limit is refused, whatever the compression.
    let text = vec![b'0'; 4 << 20];
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let stored = compress_for_test(&text, compression);
        let err = decompress_limited(&stored, compression, 1 << 20).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidData,
            "{compression:?}"
        );
        assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
        let ok = decompress_limited(&stored, compression, 4 << 20).unwrap();
        assert_eq!(ok.len(), text.len());
    }
}

fn compress_for_test(text: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => text.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(text).unwrap();
            enc.finish().unwrap()
        }
        Compression::Zstd => zstd::stream::encode_all(text, 1).unwrap(),
    }
}
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

fn event(seq: &str, stream: &str, event_id: u64, ts: i64) -> ArchivedEvent {
    match classify(&insert_record(seq, image(stream, event_id, ts))) {
        Classified::Event(e) => *e,
        Classified::DeadLetter(d) => panic!("{d:?}"),
    }
}

fn order(events: &[ArchivedEvent]) -> Vec<(i64, String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e.event.timestamp_ms,
                e.event.stream_id.to_string(),
                e.event.event_id,
            )
        })
        .collect()
}

#[test]
fn events_sort_by_timestamp_then_stream_then_event_id() {
    let mut events = vec![
        event("100000000000000000005", "b", 2, 20),
        event("100000000000000000004", "a", 9, 30),
        event("100000000000000000003", "b", 1, 20),
        event("100000000000000000002", "a", 3, 20),
        event("100000000000000000001", "c", 1, 10),
    ];
    sort_events(&mut events);
    assert_eq!(
        order(&events),
        vec![
            (10, "c".into(), 1),
            (20, "a".into(), 3),
            (20, "b".into(), 1),
            (20, "b".into(), 2),
            (30, "a".into(), 9)
        ]
    );
    // duplicates (a retried record) have a fixed place too
    let a = event("100000000000000000009", "a", 1, 5);
    let mut b = a.clone();
    b.sequence_number = SequenceNumber::new("99999999999999999999").unwrap();
    assert_eq!(archive_order(&a, &b), Ordering::Greater);
    b.sequence_number = a.sequence_number.clone();
    b.record_id = "zz".into();
    assert_eq!(archive_order(&a, &b), Ordering::Less);
}

#[test]
fn an_object_round_trips_with_its_summary() {
    let events = vec![
        event("1100000000017454423010", "b", 2, 1_795_471_652_200),
        event("999999999999999999999", "a", 1, 1_795_471_652_100),
        event("1100000000017454423009", "b", 1, 1_795_471_652_150),
    ];
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let batch = encode_events(&events, compression).unwrap();
        assert_eq!(batch.count, 3);
        assert_eq!(batch.first_sequence.as_str(), "999999999999999999999");
        assert_eq!(batch.last_sequence.as_str(), "1100000000017454423010");
        assert_eq!(batch.oldest_timestamp_ms, 1_795_471_652_100);
        assert_eq!(batch.newest_timestamp_ms, 1_795_471_652_200);
        assert_eq!(batch.content_type(), "application/x-ndjson");
        let meta = batch.metadata();
        assert_eq!(meta["evs-count"], "3");
        assert_eq!(meta["evs-first-sequence"], "999999999999999999999");
        assert_eq!(meta["evs-oldest-timestamp"], "2026-11-23T22:07:32.100Z");
        assert!(meta.iter().all(|(k, v)| k.is_ascii() && v.is_ascii()));
        let back = decode_events(&batch.bytes, compression).unwrap();
        let mut expected = events.clone();
        sort_events(&mut expected);
        assert_eq!(back, expected);
        match compression {
            Compression::Gzip => {
                assert_eq!(batch.content_encoding(), Some("gzip"));
                assert_eq!(&batch.bytes[..2], &[0x1f, 0x8b]);
            }
            Compression::Zstd => {
                assert_eq!(batch.content_encoding(), Some("zstd"));
                assert_eq!(&batch.bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
            }
            Compression::None => {
                assert_eq!(batch.content_encoding(), None);
                let text = String::from_utf8(batch.bytes.clone()).unwrap();
                assert_eq!(text.lines().count(), 3);
                assert!(text.ends_with('\n'));
                assert!(text.starts_with(r#"{"streamId":"a","eventId":1,"#));
            }
        }
    }
    // the same records in any order give the same bytes
    let mut reversed = events.clone();
    reversed.reverse();
    assert_eq!(
        encode_events(&events, Compression::Gzip).unwrap(),
        encode_events(&reversed, Compression::Gzip).unwrap()
    );
}

#[test]
fn nothing_to_encode_is_an_error() {
    assert!(matches!(
        encode_events(&[], Compression::Gzip),
        Err(EncodeError::Empty)
    ));
    assert!(matches!(encode_dead_letters(&[]), Err(EncodeError::Empty)));
}

#[test]
fn corrupt_objects_are_decode_errors() {
    assert!(matches!(
        decode_lines(b"not gzip", Compression::Gzip),
        Err(DecodeError::Io(_))
    ));
    assert!(matches!(
        decode_lines(b"{}\n{\n", Compression::None),
        Err(DecodeError::Json { line: 2, .. })
    ));
    assert!(matches!(
        decode_events(b"{}\n", Compression::None),
        Err(DecodeError::Line { line: 1, .. })
    ));
    assert_eq!(
        decode_lines(b"", Compression::None).unwrap(),
        Vec::<Value>::new()
    );
}

#[test]
fn dead_letters_round_trip() {
    let mut modify = insert_record("100000000000000000007", image("s", 1, 5));
    modify["eventName"] = json!("MODIFY");
    let batch = json!({"Records": [modify, "garbage", insert_record("100000000000000000003", json!({"x": {"S": "y"}}))]});
    let dead: Vec<DeadLetter> = parse_batch(&batch)
        .unwrap()
        .into_iter()
        .map(|c| match c {
            Classified::DeadLetter(d) => *d,
            Classified::Event(e) => panic!("{e:?}"),
        })
        .collect();
    let encoded = encode_dead_letters(&dead).unwrap();
    assert_eq!(encoded.count, 3);
    assert_eq!(encoded.content_type(), "application/json");
    assert_eq!(
        encoded.metadata()["evs-first-sequence"],
        "100000000000000000003"
    );
    assert_eq!(
        encoded.first_sequence.unwrap().as_str(),
        "100000000000000000003"
    );
    let doc: Value = serde_json::from_slice(&encoded.bytes).unwrap();
    assert_eq!(doc["count"], 3);
    assert_eq!(doc["deadLetters"][0]["reason"], "not-insert");
    assert_eq!(doc["deadLetters"][0]["eventName"], "MODIFY");
    assert_eq!(doc["deadLetters"][1]["record"], "garbage");
    assert_eq!(doc["deadLetters"][2]["reason"], "not-an-event");
    assert_eq!(decode_dead_letters(&encoded.bytes).unwrap(), dead);
    assert!(decode_dead_letters(b"{}").is_err());
}

// ---- the lossless property: stored item -> stream record -> line -> stored item ----

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "-?[1-9][0-9]{20,37}", // big exact integers (23 digits and more)
        "-?[0-9]{1,12}\\.[0-9]{1,12}", // decimals, some with leading zeros
        "-?[1-9]\\.[0-9]{1,6}[eE]-?[1-9][0-9]?", // exponents
        Just("0".to_owned()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",     // any unicode
        "[0-9]{1,25}", // strings that are JSON numbers
        Just("{\"a\": [1, 2.50, null]}".to_owned()),
        Just("true".to_owned()),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..12)
}

fn attr_value() -> impl Strategy<Value = AttrValue> {
    let leaf = prop_oneof![
        text().prop_map(AttrValue::S),
        number().prop_map(AttrValue::N),
        bytes().prop_map(AttrValue::B),
        any::<bool>().prop_map(AttrValue::Bool),
        Just(AttrValue::Null),
        proptest::collection::vec(text(), 1..4).prop_map(AttrValue::Ss),
        proptest::collection::vec(number(), 1..4).prop_map(AttrValue::Ns),
        proptest::collection::vec(bytes(), 1..4).prop_map(AttrValue::Bs),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(AttrValue::L),
            proptest::collection::btree_map("[a-zA-Z0-9_é ]{0,8}", inner, 0..5)
                .prop_map(AttrValue::M),
        ]
    })
}

fn has_binary_or_set(v: &AttrValue) -> bool {
    match v {
        AttrValue::B(_) | AttrValue::Ss(_) | AttrValue::Ns(_) | AttrValue::Bs(_) => true,
        AttrValue::L(l) => l.iter().any(has_binary_or_set),
        AttrValue::M(m) => m.values().any(has_binary_or_set),
        _ => false,
    }
}

/// The stored value a line gives back, the way a reader does it.
fn stored_from_line(json: &Value, attr_json: Option<&Value>) -> AttrValue {
    match attr_json {
        Some(a) => attr::read_value(a).unwrap(),
        None => attr::from_json(json).unwrap(),
    }
}

#[derive(Debug, Clone)]
struct Stored {
    stream: String,
    event_id: u64,
    timestamp_ms: Option<i64>,
    uuid: Option<u128>,
    payload: Option<AttrValue>,
    metadata: Option<AttrValue>,
    extra: BTreeMap<String, AttrValue>,
    acdt_seconds: u32,
    seq: String,
}

fn stored() -> impl Strategy<Value = Stored> {
    (
        "[a-z0-9é-]{1,10}",
        1..u64::from(u32::MAX),
        proptest::option::of(0..=253_402_300_799_999_i64),
        proptest::option::of(any::<u128>()),
        proptest::option::of(attr_value()),
        proptest::option::of(attr_value()),
        proptest::collection::btree_map("X[a-zA-Z]{0,6}", attr_value(), 0..3),
        any::<u32>(),
        "[1-9][0-9]{20,39}",
    )
        .prop_map(
            |(
                stream,
                event_id,
                timestamp_ms,
                uuid,
                payload,
                metadata,
                extra,
                acdt_seconds,
                seq,
            )| Stored {
                stream,
                event_id,
                timestamp_ms,
                uuid,
                payload,
                metadata,
                extra,
                acdt_seconds,
                seq,
            },
        )
}

impl Stored {
    fn record(&self) -> Value {
        let mut item = self.extra.clone();
        item.insert("StreamId".into(), AttrValue::S(self.stream.clone()));
        item.insert("EventId".into(), AttrValue::N(self.event_id.to_string()));
        item.insert("EventName".into(), AttrValue::S("Happened".into()));
        if let Some(t) = self.timestamp_ms {
            item.insert("Timestamp".into(), AttrValue::N(t.to_string()));
        }
        if let Some(u) = self.uuid {
            item.insert(
                "EventUuid".into(),
                AttrValue::S(uuid::Uuid::from_u128(u).to_string()),
            );
        }
        if let Some(p) = &self.payload {
            item.insert("Payload".into(), p.clone());
        }
        if let Some(m) = &self.metadata {
            item.insert("Metadata".into(), m.clone());
        }
        let mut record = insert_record(&self.seq, serde_json::to_value(&item).unwrap_or_default());
        record["dynamodb"]["ApproximateCreationDateTime"] = json!(self.acdt_seconds);
        record
    }
}

/// A change that may turn a record into a dead letter (or not), applied to
/// its tree, and what its text may look like.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    EventName(&'static str),
    Remove(&'static str),
    RemoveInDynamodb(&'static str),
    SetInDynamodb(&'static str, Value),
    SetInImage(&'static str, Value),
    RemoveFromImage(&'static str),
    Set(&'static str, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let any_json = prop_oneof![
        Just(Value::Null),
        Just(json!("x")),
        Just(json!("")),
        Just(json!(12)),
        Just(json!([])),
        Just(json!({})),
        Just(json!({"S": "x"})),
        Just(json!({"N": "0"})),
        Just(json!({"N": "7"})),
        Just(json!({"N": "1.5"})),
        Just(json!({"N": "x"})),
        Just(json!({"Q": 1})),
        Just(json!({"S": "67e55044-10b1-426f-9247-bb680e5fe0c8"})),
        Just(json!({"SS": ["a"]})),
        Just(json!({"M": {"a": {"B": "AAEC"}}})),
        Just(json!("1795471652.5")),
        Just(serde_json::from_str::<Value>("1.795471652E9").unwrap()),
    ];
    prop_oneof![
        3 => Just(Mutation::None),
        1 => prop_oneof![Just("MODIFY"), Just("REMOVE"), Just("")].prop_map(Mutation::EventName),
        1 => prop_oneof![Just("eventID"), Just("eventName"), Just("dynamodb")].prop_map(Mutation::Remove),
        1 => prop_oneof![Just("NewImage"), Just("SequenceNumber"), Just("ApproximateCreationDateTime")]
            .prop_map(Mutation::RemoveInDynamodb),
        2 => (prop_oneof![Just("NewImage"), Just("SequenceNumber"), Just("ApproximateCreationDateTime")], any_json.clone())
            .prop_map(|(k, v)| Mutation::SetInDynamodb(k, v)),
        2 => (prop_oneof![Just("StreamId"), Just("EventId"), Just("EventName"), Just("Timestamp"), Just("EventUuid"), Just("Payload"), Just("Metadata"), Just("Other")], any_json.clone())
            .prop_map(|(k, v)| Mutation::SetInImage(k, v)),
        1 => prop_oneof![Just("StreamId"), Just("EventId"), Just("EventName"), Just("Timestamp")].prop_map(Mutation::RemoveFromImage),
        1 => (prop_oneof![Just("eventID"), Just("eventName"), Just("dynamodb")], any_json).prop_map(|(k, v)| Mutation::Set(k, v)),
    ]
}

impl Mutation {
    fn apply(&self, record: &mut Value) {
        match self {
            Mutation::None => {}
            Mutation::EventName(name) => record["eventName"] = json!(name),
            Mutation::Remove(k) => {
                record.as_object_mut().unwrap().shift_remove(*k);
            }
            Mutation::Set(k, v) => record[*k] = v.clone(),
            Mutation::RemoveInDynamodb(k) => {
                if let Some(d) = record.get_mut("dynamodb").and_then(Value::as_object_mut) {
                    d.shift_remove(*k);
                }
            }
            Mutation::SetInDynamodb(k, v) => record["dynamodb"][*k] = v.clone(),
            Mutation::SetInImage(k, v) => record["dynamodb"]["NewImage"][*k] = v.clone(),
            Mutation::RemoveFromImage(k) => {
                if let Some(image) = record["dynamodb"]["NewImage"].as_object_mut() {
                    image.shift_remove(*k);
                }
            }
        }
    }
}

/// A random event as [`ArchivedEvent`] can hold it, including what no
/// record gives (odd timestamps, any payload JSON).
fn any_event() -> impl Strategy<Value = ArchivedEvent> {
    let json_value = || attr_value().prop_map(|v| attr::to_json(&v));
    (
        "[a-z0-9é\"\\\\\n\u{7f}-]{1,10}",
        any::<u64>(),
        ".{0,8}",
        prop_oneof![
            any::<i64>(),
            0..=253_402_300_799_999_i64,
            Just(i64::MIN),
            Just(-1_i64)
        ],
        json_value(),
        proptest::option::of(any::<u128>()),
        proptest::option::of(json_value()),
        proptest::collection::btree_map(".{0,6}", attr_value(), 0..3),
        (".{0,8}", "[1-9][0-9]{0,39}", any::<bool>(), 0..3_u8),
        (
            proptest::option::of(attr_value()),
            proptest::option::of(attr_value()),
            proptest::option::of("-?[0-9]{1,16}(\\.[0-9]{1,4})?".prop_map(AttrValue::N)),
            proptest::option::of(".{0,40}".prop_map(AttrValue::S)),
        ),
    )
        .prop_map(
            |(
                stream,
                event_id,
                name,
                timestamp_ms,
                payload,
                uuid,
                metadata,
                attributes,
                (record_id, seq, approx, encoding),
                (payload_attr, metadata_attr, timestamp_attr, id_attr),
            )| {
                // an absent Payload reads as null
                let payload = if encoding == 2 { Value::Null } else { payload };
                ArchivedEvent {
                    event: evs_core::RecordedEvent {
                        stream_id: evs_core::StreamId::new(stream).unwrap(),
                        event_id,
                        name,
                        payload,
                        timestamp_ms,
                        id: uuid.map(uuid::Uuid::from_u128),
                        metadata,
                        attributes,
                    },
                    record_id,
                    sequence_number: SequenceNumber::new(seq).unwrap(),
                    timestamp_source: if approx {
                        TimestampSource::ApproximateCreationDateTime
                    } else {
                        TimestampSource::Item
                    },
                    payload_encoding: match encoding {
                        0 => PayloadEncoding::Attribute,
                        1 => PayloadEncoding::JsonString,
                        _ => PayloadEncoding::Absent,
                    },
                    payload_attr,
                    metadata_attr,
                    timestamp_attr,
                    id_attr,
                }
            },
        )
}

/// The line format is stable: a batch with every lossless extra (binary and
/// set payloads, JSON-string payloads, an absent and a NULL payload,
/// timestampAttr, idAttr, timestampSource, metadata sets) encodes to exactly
/// the bytes the archiver wrote before the line had one serde definition
/// (`tests/fixtures/every-extra.ndjson`, written by that code).
#[test]
fn the_line_format_is_byte_for_byte_what_earlier_archivers_wrote() {
    let batch = include_str!("../tests/fixtures/every-extra.json");
    let expected = include_str!("../tests/fixtures/every-extra.ndjson");
    let events: Vec<ArchivedEvent> = crate::record::parse_batch_json(batch)
        .unwrap()
        .into_iter()
        .map(|c| match c {
            Classified::Event(e) => *e,
            Classified::DeadLetter(d) => panic!("{d:?}"),
        })
        .collect();
    let object = encode_events(&events, Compression::None).unwrap();
    assert_eq!(String::from_utf8(object.bytes).unwrap(), expected);
    // and each line reads back as its event
    for (line, event) in expected.lines().zip(sorted(events)) {
        assert_eq!(ArchivedEvent::from_line(line).unwrap(), event);
    }
}

fn sorted(mut events: Vec<ArchivedEvent>) -> Vec<ArchivedEvent> {
    sort_events(&mut events);
    events
}

proptest! {
    #[test]
    fn a_line_reads_back_as_the_same_event(event in any_event()) {
        prop_assert_eq!(ArchivedEvent::from_line(&event.to_line().unwrap().to_string()).unwrap(), event);
    }

    /// The event's line a replay delivers is the archived line cut before the
    /// record's fields, byte for byte, and what serializing `event_only`
    /// writes, also for a line laid out otherwise (spaces, another order).
    #[test]
    fn the_event_only_line_is_the_archived_line_cut_before_the_record(mut event in any_event(), pretty in any::<bool>()) {
        // a line's eventId is at least 1
        event.event.event_id = event.event.event_id.max(1);
        let mut archived = Vec::new();
        event.write_line(&mut archived).unwrap();
        let archived = String::from_utf8(archived).unwrap();
        let line = Line::parse(&archived).unwrap();
        let delivered = line.event_only_json().unwrap();
        prop_assert_eq!(&delivered, &serde_json::to_string(&line.event_only()).unwrap());
        let open = delivered.strip_suffix('}').unwrap();
        prop_assert!(archived.starts_with(open), "{} / {}", delivered, archived);
        prop_assert!(archived[open.len()..].starts_with(",\"eventID\":"), "{} / {}", delivered, archived);
        // the same line laid out otherwise: spaces, fields reversed
        let value: Value = serde_json::from_str(&archived).unwrap();
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            let fields: Vec<String> = value.as_object().unwrap().iter().rev()
                .map(|(k, v)| format!("{} : {}", Value::from(k.as_str()), v)).collect();
            format!("{{ {} }}", fields.join(" , "))
        };
        let other = Line::parse(&text).unwrap();
        prop_assert_eq!(other.event_only_json().unwrap(), serde_json::to_string(&other.event_only()).unwrap());
        // and a line built from the event rather than read: serde writes its values
        let built = event_line(&event.event);
        prop_assert_eq!(built.event_only_json().unwrap(), serde_json::to_string(&built).unwrap());
    }

    #[test]
    fn lines_of_classified_records_are_written_as_to_line_gives(items in proptest::collection::vec(stored(), 1..4)) {
        for s in &items {
            if let Classified::Event(e) = classify(&s.record()) {
                let mut out = Vec::new();
                e.write_line(&mut out).unwrap();
                prop_assert_eq!(out, serde_json::to_vec(&e.to_line().unwrap()).unwrap());
            }
        }
    }

    #[test]
    fn records_classify_the_same_from_text_and_from_tree(s in stored(), m in mutation(), pretty in any::<bool>()) {
        let mut record = s.record();
        m.apply(&mut record);
        let text = if pretty {
            serde_json::to_string_pretty(&record).unwrap()
        } else {
            serde_json::to_string(&record).unwrap()
        };
        prop_assert_eq!(crate::record::classify_json(&text), classify(&record));
        // a field given twice keeps its last value, as in a tree
        if let Some(body) = text.strip_prefix('{') {
            let twice = format!(r#"{{"eventName":"MODIFY","dynamodb":{{"NewImage":{{"Q":{{"Q":1}}}}}},{body}"#);
            let tree: Value = serde_json::from_str(&twice).unwrap();
            prop_assert_eq!(crate::record::classify_json(&twice), classify(&tree));
        }
    }

    #[test]
    fn archiving_loses_nothing(items in proptest::collection::vec(stored(), 1..4), c in 0..3_u8) {
        let compression = [Compression::Gzip, Compression::Zstd, Compression::None][usize::from(c)];
        let records: Vec<Value> = items.iter().map(Stored::record).collect();
        let events: Vec<ArchivedEvent> = parse_batch(&json!({"Records": records}))
            .unwrap()
            .into_iter()
            .map(|c| match c {
                Classified::Event(e) => *e,
                Classified::DeadLetter(d) => panic!("{d:?}"),
            })
            .collect();
        let batch = encode_events(&events, compression).unwrap();
        let lines = decode_lines(&batch.bytes, compression).unwrap();
        prop_assert_eq!(lines.len(), items.len());
        // each line is a JSON value; find the one of each item by its record id
        for s in &items {
            let line = lines
                .iter()
                .find(|l| l["eventID"] == format!("ev-{}", s.seq).as_str())
                .unwrap();
            prop_assert_eq!(&line["streamId"], &json!(s.stream));
            prop_assert_eq!(line["eventId"].as_u64(), Some(s.event_id));
            prop_assert_eq!(&line["sequenceNumber"], &json!(s.seq));
            let expected_ms = s.timestamp_ms.unwrap_or(i64::from(s.acdt_seconds) * 1000);
            prop_assert_eq!(&line["timestamp"], &json!(evs_core::format_timestamp_ms(expected_ms)));
            prop_assert_eq!(line.get("timestampSource").is_some(), s.timestamp_ms.is_none());

            match &s.payload {
                None => {
                    prop_assert_eq!(&line["payload"], &Value::Null);
                    prop_assert_eq!(&line["payloadAbsent"], true);
                    prop_assert!(line.get("payloadEncoding").is_none());
                }
                Some(AttrValue::S(text)) if serde_json::from_str::<Value>(text).is_ok() => {
                    prop_assert_eq!(&line["payloadEncoding"], "json-string");
                    prop_assert_eq!(&line["payload"], &serde_json::from_str::<Value>(text).unwrap());
                }
                Some(p) => {
                    prop_assert!(line.get("payloadEncoding").is_none());
                    if has_binary_or_set(p) {
                        prop_assert!(line.get("payloadAttr").is_some());
                    }
                    prop_assert_eq!(&stored_from_line(&line["payload"], line.get("payloadAttr")), p);
                    prop_assert_eq!(&line["payload"], &attr::to_json(p));
                }
            }
            match &s.metadata {
                None => prop_assert!(line.get("metadata").is_none()),
                Some(m) => prop_assert_eq!(&stored_from_line(&line["metadata"], line.get("metadataAttr")), m),
            }
            let attributes = line.get("attributes").map_or_else(
                || Ok(BTreeMap::new()),
                attr::read_item,
            );
            prop_assert_eq!(&attributes.unwrap(), &s.extra);
        }
        // and the typed reading of the lines gives back the classified events
        let mut expected = events.clone();
        sort_events(&mut expected);
        prop_assert_eq!(decode_events(&batch.bytes, compression).unwrap(), expected);
    }
}

/// A sample events object (two lines) as stored with `compression`.
fn sample_object(compression: Compression) -> Vec<u8> {
    let events: Vec<ArchivedEvent> = (1..=2)
        .map(|n| {
            match classify(&insert_record(
                &format!("11000000000174544230{n:02}"),
                image("order-1", n, 1_795_471_652_123),
            )) {
                Classified::Event(e) => *e,
                Classified::DeadLetter(d) => panic!("the sample is an event: {d:?}"),
            }
        })
        .collect();
    encode_events(&events, compression).unwrap().bytes
}

/// Reads `bytes` as an events object in `compression` and as a
/// dead-letter object: a value or a typed error, never a panic.
fn decode_every_way(bytes: &[u8], compression: Compression) {
    let _ = decompress(bytes, compression);
    let lines = decode_lines(bytes, compression);
    let events = decode_events(bytes, compression);
    if let Ok(events) = &events {
        assert_eq!(lines.map(|l| l.len()).ok(), Some(events.len()));
    }
    let _ = decode_dead_letters(bytes);
}

fn any_compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Zstd)
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_to_events_or_an_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        compression in any_compression(),
    ) {
        decode_every_way(&bytes, compression);
    }

    #[test]
    fn a_mutated_object_decodes_to_events_or_an_error(
        (compression, bytes) in any_compression().prop_flat_map(|c| {
            (Just(c), evs_testkit::mutated(sample_object(c)))
        }),
    ) {
        decode_every_way(&bytes, compression);
    }

    #[test]
    fn a_mutated_dead_letter_object_decodes_or_is_refused(bytes in evs_testkit::mutated({
        let mut record = insert_record("1100000000017454423009", image("order-1", 1, 0));
        record["eventName"] = json!("MODIFY");
        match classify(&record) {
            Classified::DeadLetter(d) => encode_dead_letters(&[*d]).unwrap().bytes,
            Classified::Event(e) => panic!("the sample is a dead letter: {e:?}"),
        }
    })) {
        decode_every_way(&bytes, Compression::None);
    }
}
