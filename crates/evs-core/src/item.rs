//! The table's item layout, which must stay stable: one item per event.
//!
//! | attribute    | type | meaning                                      |
//! |--------------|------|----------------------------------------------|
//! | `StreamId`   | S    | partition key                                |
//! | `EventId`    | N    | sort key, 1, 2, 3, … with no gaps            |
//! | `EventName`  | S    | the event's name                             |
//! | `Payload`    | M …  | the event's data (any JSON type, exact numbers) |
//! | `Timestamp`  | N    | epoch milliseconds, never decreasing in a stream |
//! | `EventUuid`  | S    | the id given at append, for idempotent retries |
//! | `Metadata`   | M    | optional                                      |
//! | anything else|      | carried through as it is                     |
//!
//! This module encodes events into items, decodes items back, and checks
//! DynamoDB's limits before any call is made. No I/O.
//!
//! What DynamoDB refuses, and so [`encode`] refuses first with
//! [`Error::InvalidEvent`] naming the event's position and the path inside
//! it (from the DynamoDB Developer Guide, "Service, account, and table
//! quotas", sections Naming rules, Data types, Items and Attributes):
//!
//! * an attribute name or map key that is empty or over 64 KB;
//! * a number with more than 38 significant digits, or outside
//!   1e-130 ..= 9.99…e125 in magnitude (zero aside);
//! * a value nested deeper than 32 levels (a top-level attribute is level 1,
//!   a value in a map or list one level deeper than the map or list);
//! * an empty set, or a set that holds a value twice (numbers compare by
//!   value: `1` and `1.0` are the same);
//! * an item over 400 KB ([`Error::ItemTooLarge`]).
//!
//! Empty strings and binaries are allowed in non-key attributes and so are
//! accepted.

use uuid::Uuid;

use crate::attr::{self, AttrValue, Item};
use crate::model::{NewEvent, RecordedEvent, StreamId, Version};
use crate::{Error, Result};

/// Partition key attribute.
pub const STREAM_ID: &str = "StreamId";
/// Sort key attribute.
pub const EVENT_ID: &str = "EventId";
/// Event name attribute.
pub const EVENT_NAME: &str = "EventName";
/// Payload attribute.
pub const PAYLOAD: &str = "Payload";
/// Timestamp attribute (epoch ms).
pub const TIMESTAMP: &str = "Timestamp";
/// Event UUID attribute.
pub const EVENT_UUID: &str = "EventUuid";
/// Metadata attribute.
pub const METADATA: &str = "Metadata";

const RESERVED: [&str; 7] = [
    STREAM_ID, EVENT_ID, EVENT_NAME, PAYLOAD, TIMESTAMP, EVENT_UUID, METADATA,
];

/// DynamoDB's item size limit in bytes.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's limit on items in one transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// DynamoDB's limit on a transaction's total size in bytes.
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// Longest attribute name or map key DynamoDB accepts, in UTF-8 bytes
/// ("less than 64 KB").
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 64 * 1024 - 1;
/// Deepest nesting DynamoDB accepts: a top-level attribute is level 1.
pub const MAX_NESTING_LEVELS: usize = 32;

/// Encodes `event` as the item stored at `event_id` of `stream`; `position`
/// is its place in the append (1 for the first event), which errors name.
pub fn encode(
    stream: &StreamId,
    event_id: Version,
    timestamp_ms: i64,
    event: &NewEvent,
    position: usize,
) -> Result<Item> {
    let invalid = |reason: String| Error::InvalidEvent { position, reason };
    if event.name.is_empty() {
        return Err(invalid("the event name must not be empty".into()));
    }
    if let Some(name) = event
        .attributes
        .keys()
        .find(|k| RESERVED.contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "extra attribute {name:?} would overwrite the event's own attribute"
        )));
    }
    let payload = storable_json("payload", &event.payload).map_err(invalid)?;
    let metadata = match &event.metadata {
        Some(m) => Some(storable_json("metadata", m).map_err(invalid)?),
        None => None,
    };
    for (name, value) in &event.attributes {
        check_key("the item", name).map_err(invalid)?;
        check_value(&mut format!("attribute {}", shown_key(name)), value, 1).map_err(invalid)?;
    }
    let mut item: Item = event.attributes.clone();
    item.insert(STREAM_ID.into(), AttrValue::S(stream.as_str().to_owned()));
    item.insert(EVENT_ID.into(), AttrValue::N(event_id.to_string()));
    item.insert(EVENT_NAME.into(), AttrValue::S(event.name.clone()));
    item.insert(PAYLOAD.into(), payload);
    item.insert(TIMESTAMP.into(), AttrValue::N(timestamp_ms.to_string()));
    item.insert(EVENT_UUID.into(), AttrValue::S(event.id.to_string()));
    if let Some(m) = metadata {
        item.insert(METADATA.into(), m);
    }
    let size = attr::item_size(&item);
    if size > MAX_ITEM_BYTES {
        return Err(Error::ItemTooLarge {
            position,
            size,
            max: MAX_ITEM_BYTES,
        });
    }
    Ok(item)
}

/// `json` as the attribute value of a top-level attribute, or why DynamoDB
/// would refuse it, naming the path from `root`.
fn storable_json(root: &str, json: &serde_json::Value) -> std::result::Result<AttrValue, String> {
    match attr::from_json(json) {
        Ok(value) => {
            check_value(&mut root.to_owned(), &value, 1)?;
            Ok(value)
        }
        // Only a number fails to convert: find which, for the path.
        Err(e) => Err(bad_number_path(root.to_owned(), json)
            .map_or_else(|| e.to_string(), |path| format!("{path}: {e}"))),
    }
}

fn bad_number_path(path: String, json: &serde_json::Value) -> Option<String> {
    match json {
        serde_json::Value::Number(n) => attr::validate_number(&n.to_string())
            .is_err()
            .then_some(path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| bad_number_path(format!("{path}[{i}]"), v)),
        serde_json::Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| bad_number_path(format!("{path}{}", shown_member(k)), v)),
        _ => None,
    }
}

/// Checks a value against DynamoDB's rules (see the module docs). `path`
/// names it (and is restored before returning Ok); `level` is its nesting
/// level, 1 for a top-level attribute.
fn check_value(
    path: &mut String,
    value: &AttrValue,
    level: usize,
) -> std::result::Result<(), String> {
    if level > MAX_NESTING_LEVELS {
        return Err(format!(
            "{path} is nested {level} levels deep; DynamoDB allows at most {MAX_NESTING_LEVELS}"
        ));
    }
    let number = |path: &str, n: &str| attr::validate_number(n).map_err(|e| format!("{path}: {e}"));
    match value {
        AttrValue::S(_) | AttrValue::B(_) | AttrValue::Bool(_) | AttrValue::Null => Ok(()),
        AttrValue::N(n) => number(path, n),
        AttrValue::M(map) => {
            for (key, inner) in map {
                check_key(path, key)?;
                let len = path.len();
                path.push_str(&shown_member(key));
                check_value(path, inner, level + 1)?;
                path.truncate(len);
            }
            Ok(())
        }
        AttrValue::L(items) => {
            for (i, inner) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_value(path, inner, level + 1)?;
                path.truncate(len);
            }
            Ok(())
        }
        AttrValue::Ss(set) => unique_set(path, set.iter().map(|s| (s.clone(), shown_key(s)))),
        AttrValue::Bs(set) => unique_set(
            path,
            set.iter()
                .map(|b| (b.clone(), format!("{} bytes", b.len()))),
        ),
        AttrValue::Ns(set) => {
            for n in set {
                number(path, n)?;
            }
            unique_set(path, set.iter().map(|n| (number_value(n), n.clone())))
        }
    }
}

/// A map key (or top-level attribute name) as DynamoDB's naming rules allow.
fn check_key(path: &str, key: &str) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err(format!(
            "{path} has an empty key; DynamoDB refuses empty attribute names and map keys"
        ));
    }
    if key.len() > MAX_ATTRIBUTE_NAME_BYTES {
        return Err(format!(
            "{path} has a key of {} bytes; DynamoDB allows at most {MAX_ATTRIBUTE_NAME_BYTES} bytes for an attribute name or map key",
            key.len()
        ));
    }
    Ok(())
}

/// A set: not empty, no element twice (by `T`, shown as the `String`).
fn unique_set<T: Ord>(
    path: &str,
    elements: impl Iterator<Item = (T, String)>,
) -> std::result::Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut any = false;
    for (element, shown) in elements {
        any = true;
        if !seen.insert(element) {
            return Err(format!(
                "{path} is a set that holds {shown} twice; DynamoDB refuses duplicates in a set"
            ));
        }
    }
    if !any {
        return Err(format!(
            "{path} is an empty set; DynamoDB refuses empty sets"
        ));
    }
    Ok(())
}

/// A valid number's value, comparable: sign, significant digits, and the
/// decimal exponent of the first one (`1`, `1.0` and `10e-1` are equal; all
/// zeros are one value).
fn number_value(text: &str) -> (bool, String, i64) {
    let negative = text.starts_with('-');
    let body = text.trim_start_matches(['-', '+']);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0');
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    let magnitude = (int_part.len() as i64 - 1 - leading as i64).saturating_add(exponent);
    (negative, significant.to_owned(), magnitude)
}

/// `.key` for a plain key, `["key"]` otherwise (long keys shortened).
fn shown_member(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.len() <= 64;
    if plain {
        format!(".{key}")
    } else {
        format!("[{}]", shown_key(key))
    }
}

/// A key or string as JSON text, shortened past 64 characters.
fn shown_key(key: &str) -> String {
    const MAX: usize = 64;
    match key.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", serde_json::Value::from(&key[..cut])),
        None => serde_json::Value::from(key).to_string(),
    }
}

/// Encodes a whole append and checks the transaction limits. `extra_items`
/// is the number of non-event items the backend adds to the transaction
/// (the condition check on the previous event).
pub fn encode_batch(
    stream: &StreamId,
    after: Version,
    timestamp_ms: i64,
    events: &[NewEvent],
    extra_items: usize,
) -> Result<Vec<Item>> {
    if events.is_empty() {
        return Err(Error::EmptyAppend);
    }
    let max = MAX_TRANSACTION_ITEMS - extra_items;
    if events.len() > max {
        return Err(Error::TooManyEvents {
            count: events.len(),
            max,
        });
    }
    let items = events
        .iter()
        .zip(after + 1..)
        .enumerate()
        .map(|(i, (e, id))| encode(stream, id, timestamp_ms, e, i + 1))
        .collect::<Result<Vec<_>>>()?;
    let total: usize = items.iter().map(attr::item_size).sum();
    if total > MAX_TRANSACTION_BYTES {
        return Err(Error::TransactionTooLarge {
            size: total,
            max: MAX_TRANSACTION_BYTES,
        });
    }
    Ok(items)
}

/// Decodes an item into an event. Unknown attributes are kept.
pub fn decode(mut item: Item) -> Result<RecordedEvent> {
    let stream_raw = match item.remove(STREAM_ID) {
        Some(AttrValue::S(s)) => s,
        _ => return Err(corrupt("?", 0, "StreamId missing or not a string")),
    };
    let stream_id = StreamId::new(stream_raw.clone())
        .map_err(|_| corrupt(&stream_raw, 0, "invalid StreamId"))?;
    let event_id = match item.remove(EVENT_ID) {
        Some(AttrValue::N(n)) => n
            .parse::<u64>()
            .map_err(|_| corrupt(&stream_raw, 0, "EventId is not a positive integer"))?,
        _ => return Err(corrupt(&stream_raw, 0, "EventId missing or not a number")),
    };
    let c = |reason: &str| corrupt(&stream_raw, event_id, reason);
    let name = match item.remove(EVENT_NAME) {
        Some(AttrValue::S(s)) => s,
        _ => return Err(c("EventName missing or not a string")),
    };
    let timestamp_ms = match item.remove(TIMESTAMP) {
        Some(AttrValue::N(n)) => {
            parse_timestamp(&n).ok_or_else(|| c("Timestamp is not epoch milliseconds"))?
        }
        _ => return Err(c("Timestamp missing or not a number")),
    };
    let payload = item
        .remove(PAYLOAD)
        .map(attr::into_json)
        .unwrap_or_default();
    let id = match item.remove(EVENT_UUID) {
        Some(AttrValue::S(s)) => {
            Some(Uuid::parse_str(&s).map_err(|_| c("EventUuid is not a UUID"))?)
        }
        None => None,
        Some(_) => return Err(c("EventUuid is not a string")),
    };
    let metadata = item.remove(METADATA).map(attr::into_json);
    Ok(RecordedEvent {
        stream_id,
        event_id,
        name,
        payload,
        timestamp_ms,
        id,
        metadata,
        attributes: item,
    })
}

/// Parses a `Timestamp` number: integer epoch milliseconds (a fractional
/// part, as some writers store, is truncated).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None; // exponents and other forms are not epoch milliseconds
    }
    int.parse::<i64>().ok()
}

fn corrupt(stream: &str, event_id: Version, reason: &str) -> Error {
    Error::CorruptItem {
        stream: stream.to_owned(),
        event_id,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn stream() -> StreamId {
        StreamId::new("s-1").unwrap()
    }

    #[test]
    fn encode_decode_round_trip_with_extra_attributes() {
        let e = NewEvent::new(
            "Created",
            json!({"n": 123456789012345678901234_u128, "s": "é"}),
        )
        .with_metadata(json!({"user": "u"}))
        .with_attribute("Tenant", AttrValue::S("t1".into()))
        .with_attribute("Tags", AttrValue::Ss(vec!["a".into()]));
        let item = encode(&stream(), 7, 1000, &e, 1).unwrap();
        let back = decode(item).unwrap();
        assert_eq!(back.event_id, 7);
        assert_eq!(back.payload, e.payload);
        assert_eq!(back.metadata, e.metadata);
        assert_eq!(back.id, Some(e.id));
        assert_eq!(back.attributes, e.attributes);
        assert_eq!(back.timestamp_ms, 1000);
    }

    #[test]
    fn limits_are_refused_before_any_call() {
        let big = NewEvent::new("Big", json!({"x": "a".repeat(MAX_ITEM_BYTES)}));
        assert!(matches!(
            encode(&stream(), 1, 0, &big, 1),
            Err(Error::ItemTooLarge { .. })
        ));
        let many: Vec<_> = (0..101).map(|_| NewEvent::new("E", json!({}))).collect();
        assert!(matches!(
            encode_batch(&stream(), 0, 0, &many, 0),
            Err(Error::TooManyEvents {
                count: 101,
                max: 100
            })
        ));
        assert!(matches!(
            encode_batch(&stream(), 3, 0, &many[..100], 1),
            Err(Error::TooManyEvents {
                count: 100,
                max: 99
            })
        ));
        let fat: Vec<_> = (0..11)
            .map(|_| NewEvent::new("E", json!({"x": "a".repeat(390 * 1024)})))
            .collect();
        assert!(matches!(
            encode_batch(&stream(), 0, 0, &fat, 0),
            Err(Error::TransactionTooLarge { .. })
        ));
        assert!(matches!(
            encode_batch(&stream(), 0, 0, &[], 0),
            Err(Error::EmptyAppend)
        ));
        let reserved =
            NewEvent::new("E", json!({})).with_attribute("EventId", AttrValue::N("1".into()));
        assert!(matches!(
            encode(&stream(), 1, 0, &reserved, 1),
            Err(Error::InvalidEvent { .. })
        ));
        let inexact = NewEvent::new(
            "E",
            serde_json::from_str(&format!("{{\"n\":{}}}", "9".repeat(40))).unwrap(),
        );
        assert!(matches!(
            encode(&stream(), 1, 0, &inexact, 1),
            Err(Error::InvalidEvent { .. })
        ));
    }

    fn refusal(event: &NewEvent) -> String {
        match encode(&stream(), 1, 0, event, 3) {
            Err(Error::InvalidEvent {
                position: 3,
                reason,
            }) => reason,
            other => panic!("{other:?}"),
        }
    }

    fn wrapped(levels: usize, leaf: serde_json::Value) -> serde_json::Value {
        (0..levels).fold(leaf, |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn values_dynamodb_refuses_are_refused_with_their_path() {
        let e = |payload| NewEvent::new("E", payload);
        assert_eq!(
            refusal(&e(json!({"d": {"": 1}}))),
            "payload.d has an empty key; DynamoDB refuses empty attribute names and map keys"
        );
        assert!(refusal(&e(json!({"": 1}))).starts_with("payload has an empty key"));
        assert!(refusal(&e(json!({"l": [0, {"x y": {"": null}}]})))
            .starts_with(r#"payload.l[1]["x y"] has an empty key"#));
        assert!(
            refusal(&e(json!({})).with_metadata(json!({"m": [{"": 1}]})))
                .starts_with("metadata.m[0] has an empty key")
        );
        let number: serde_json::Value = serde_json::from_str(r#"{"a": [1, 1e200]}"#).unwrap();
        let reason = refusal(&e(number));
        assert!(
            reason.starts_with("payload.a[1]: number 1e+200 cannot be stored"),
            "{reason}"
        );
        let long_key = "k".repeat(MAX_ATTRIBUTE_NAME_BYTES + 1);
        assert!(refusal(&e(json!({ long_key: 1 }))).contains("a key of 65536 bytes"));
        assert!(encode(
            &stream(),
            1,
            0,
            &e(json!({ "k".repeat(MAX_ATTRIBUTE_NAME_BYTES): 1 })),
            1
        )
        .is_ok());

        // 32 levels: the payload is level 1, so 31 maps around a scalar.
        assert!(encode(&stream(), 1, 0, &e(wrapped(31, json!(1))), 1).is_ok());
        assert!(encode(&stream(), 1, 0, &e(wrapped(31, json!([]))), 1).is_ok());
        assert!(refusal(&e(wrapped(32, json!(1))))
            .ends_with("is nested 33 levels deep; DynamoDB allows at most 32"));
        assert!(refusal(&e(wrapped(31, json!([1])))).contains("nested 33 levels"));

        let with = |name: &str, value: AttrValue| e(json!({})).with_attribute(name, value);
        assert_eq!(
            refusal(&with("Tags", AttrValue::Ss(vec![]))),
            r#"attribute "Tags" is an empty set; DynamoDB refuses empty sets"#
        );
        assert!(refusal(&with("Nums", AttrValue::Ns(vec![]))).contains("empty set"));
        assert!(refusal(&with("Bins", AttrValue::Bs(vec![]))).contains("empty set"));
        assert!(
            refusal(&with("Tags", AttrValue::Ss(vec!["a".into(), "a".into()])))
                .contains(r#"holds "a" twice"#)
        );
        assert!(
            refusal(&with("Bins", AttrValue::Bs(vec![vec![1], vec![1]])))
                .contains("holds 1 bytes twice")
        );
        for (a, b) in [
            ("1", "1.0"),
            ("10", "1e1"),
            ("-0.5", "-5E-1"),
            ("0", "-0.0"),
        ] {
            assert!(
                refusal(&with("Nums", AttrValue::Ns(vec![a.into(), b.into()]))).contains("twice"),
                "{a} {b}"
            );
        }
        assert!(
            refusal(&with("Nums", AttrValue::Ns(vec!["1".into(), "x".into()])))
                .starts_with(r#"attribute "Nums": number x"#)
        );
        assert!(refusal(&with("N", AttrValue::N("1e-131".into()))).contains("smaller than"));
        assert!(refusal(&with(
            "M",
            AttrValue::M(BTreeMap::from([(String::new(), AttrValue::Null)]))
        ))
        .starts_with(r#"attribute "M" has an empty key"#));
        assert!(refusal(&with("", AttrValue::Null)).contains("empty key"));

        // Allowed: empty strings and binaries, sets of distinct values.
        let fine = e(json!({"s": "", "l": [""], "m": {"k": {}}}))
            .with_attribute("Tags", AttrValue::Ss(vec!["".into(), "a".into()]))
            .with_attribute("Nums", AttrValue::Ns(vec!["1".into(), "1.5".into()]))
            .with_attribute("Bin", AttrValue::B(vec![]))
            .with_attribute("Bins", AttrValue::Bs(vec![vec![], vec![0]]));
        assert!(encode(&stream(), 1, 0, &fine, 1).is_ok());
    }

    #[test]
    fn errors_name_the_position_in_the_append() {
        let events = [
            NewEvent::new("A", json!({})),
            NewEvent::new("B", json!({})),
            NewEvent::new("C", json!({"": 1})),
        ];
        let err = encode_batch(&stream(), i64::MAX as u64 / 2, 0, &events, 0).unwrap_err();
        assert!(
            matches!(err, Error::InvalidEvent { position: 3, .. }),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("event 3 of the append is invalid: payload has an empty key"));
        let big = NewEvent::new("Big", json!({"x": "a".repeat(MAX_ITEM_BYTES)}));
        let err = encode_batch(&stream(), 0, 0, &[events[0].clone(), big], 0).unwrap_err();
        assert!(
            matches!(err, Error::ItemTooLarge { position: 2, .. }),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("event 2 of the append would be"));
    }

    #[test]
    fn corrupt_items_are_typed_errors() {
        let mut item = encode(&stream(), 1, 5, &NewEvent::new("E", json!(1)), 1).unwrap();
        item.insert(TIMESTAMP.into(), AttrValue::S("yesterday".into()));
        assert!(matches!(
            decode(item),
            Err(Error::CorruptItem { event_id: 1, .. })
        ));
    }
}
