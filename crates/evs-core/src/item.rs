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

use std::collections::BTreeMap;

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

/// Encodes `event` as the item stored at `event_id` of `stream`.
pub fn encode(
    stream: &StreamId,
    event_id: Version,
    timestamp_ms: i64,
    event: &NewEvent,
) -> Result<Item> {
    let index = event_id;
    if event.name.is_empty() {
        return Err(Error::InvalidEvent {
            event_id: index,
            reason: "the event name must not be empty".into(),
        });
    }
    if let Some(name) = event
        .attributes
        .keys()
        .find(|k| RESERVED.contains(&k.as_str()))
    {
        return Err(Error::InvalidEvent {
            event_id: index,
            reason: format!("extra attribute {name:?} would overwrite the event's own attribute"),
        });
    }
    let invalid = |e: attr::AttrError| Error::InvalidEvent {
        event_id: index,
        reason: e.to_string(),
    };
    let mut item: Item = event.attributes.clone();
    item.insert(STREAM_ID.into(), AttrValue::S(stream.as_str().to_owned()));
    item.insert(EVENT_ID.into(), AttrValue::N(event_id.to_string()));
    item.insert(EVENT_NAME.into(), AttrValue::S(event.name.clone()));
    item.insert(
        PAYLOAD.into(),
        attr::from_json(&event.payload).map_err(invalid)?,
    );
    item.insert(TIMESTAMP.into(), AttrValue::N(timestamp_ms.to_string()));
    item.insert(EVENT_UUID.into(), AttrValue::S(event.id.to_string()));
    if let Some(m) = &event.metadata {
        item.insert(METADATA.into(), attr::from_json(m).map_err(invalid)?);
    }
    let size = attr::item_size(&item);
    if size > MAX_ITEM_BYTES {
        return Err(Error::ItemTooLarge {
            event_id,
            size,
            max: MAX_ITEM_BYTES,
        });
    }
    Ok(item)
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
        .map(|(e, id)| encode(stream, id, timestamp_ms, e))
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
        attributes: item.into_iter().collect::<BTreeMap<_, _>>(),
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
        let item = encode(&stream(), 7, 1000, &e).unwrap();
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
            encode(&stream(), 1, 0, &big),
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
            encode(&stream(), 1, 0, &reserved),
            Err(Error::InvalidEvent { .. })
        ));
        let inexact = NewEvent::new(
            "E",
            serde_json::from_str(&format!("{{\"n\":{}}}", "9".repeat(40))).unwrap(),
        );
        assert!(matches!(
            encode(&stream(), 1, 0, &inexact),
            Err(Error::InvalidEvent { .. })
        ));
    }

    #[test]
    fn corrupt_items_are_typed_errors() {
        let mut item = encode(&stream(), 1, 5, &NewEvent::new("E", json!(1))).unwrap();
        item.insert(TIMESTAMP.into(), AttrValue::S("yesterday".into()));
        assert!(matches!(
            decode(item),
            Err(Error::CorruptItem { event_id: 1, .. })
        ));
    }
}
