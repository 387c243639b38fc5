//! The in-memory backend: the same semantics as DynamoDB, no network.
//!
//! It also keeps a change feed of its inserts shaped exactly like the
//! records of a DynamoDB Streams Lambda event (`eventName: "INSERT"`,
//! `dynamodb.NewImage` in DynamoDB JSON, `SequenceNumber`, …), so the whole
//! pipeline can run offline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::write::{Backend, Written};
use super::{system_clock, Clock};
use crate::attr::{self, AttrValue, Item};
use crate::item;
use crate::model::{Direction, ReadRequest, RecordedEvent, StreamId, Version};
use crate::Result;

#[derive(Default)]
struct State {
    streams: HashMap<StreamId, Vec<Item>>,
    feed: Vec<Value>,
}

/// An event store held in memory. Cheap to clone; clones share the data.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    clock: Clock,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The stream ARN the change feed's records carry.
pub const FEED_SOURCE_ARN: &str =
    "arn:aws:dynamodb:local:000000000000:table/events/stream/1970-01-01T00:00:00.000";

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(system_clock())
    }

    /// An empty store on the given clock (tests use it to move time).
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            notify: Arc::new(Notify::new()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-done append
        // (the state is changed only after every check), so a poisoned lock
        // is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stream records of the inserts from position `from` on (0 is the first
    /// insert), at most `limit`, shaped like the records of a DynamoDB
    /// Streams Lambda event. Returns the records and the position after them.
    pub fn changes(&self, from: usize, limit: usize) -> (Vec<Value>, usize) {
        let state = self.lock();
        let start = from.min(state.feed.len());
        let end = start.saturating_add(limit).min(state.feed.len());
        (state.feed[start..end].to_vec(), end)
    }

    /// Waits until an insert happens after this call (or returns at once
    /// when one happened since the last wait).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Every stream's last `EventId` (the memory twin of
    /// `evs_dynamodb::DynamoStore::last_versions`).
    pub fn last_versions(&self) -> std::collections::BTreeMap<String, u64> {
        self.lock()
            .streams
            .iter()
            .map(|(id, events)| (id.to_string(), events.len() as u64))
            .collect()
    }

    /// Ids of every stream, sorted.
    pub fn stream_ids(&self) -> Vec<StreamId> {
        let mut ids: Vec<_> = self.lock().streams.keys().cloned().collect();
        ids.sort();
        ids
    }
}

fn stream_record(seq: usize, item: &Item, now_ms: i64) -> Value {
    let keys: Item = [item::STREAM_ID, item::EVENT_ID]
        .iter()
        .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    let sequence = format!("{}", 100_000_000_000_000_000_000_u128 + seq as u128);
    json!({
        "eventID": format!("{:032x}", seq as u128 + 1),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "local",
        "dynamodb": {
            "ApproximateCreationDateTime": now_ms.div_euclid(1000),
            // Attribute values always serialize (every map key is a string).
            "Keys": serde_json::to_value(&keys).unwrap_or_default(),
            "NewImage": serde_json::to_value(item).unwrap_or_default(),
            "SequenceNumber": sequence,
            "SizeBytes": attr::item_size(item),
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": FEED_SOURCE_ARN
    })
}

#[async_trait]
impl Backend for MemoryStore {
    async fn write(
        &self,
        stream: &StreamId,
        after: Version,
        timestamp_ms: i64,
        items: Vec<Item>,
        check_previous: bool,
    ) -> Result<Written> {
        let now = self.now_ms();
        let mut state = self.lock();
        let events = state
            .streams
            .get(stream)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let len = events.len() as Version;
        if check_previous {
            let prev_ok = after <= len
                && events
                    .get((after - 1) as usize)
                    .and_then(|i| match i.get(item::TIMESTAMP) {
                        Some(AttrValue::N(n)) => item::parse_timestamp(n),
                        _ => None,
                    })
                    .is_some_and(|ts| ts <= timestamp_ms);
            if !prev_ok {
                return Ok(Written::ConditionFailed { foreign: false });
            }
        }
        // Items exist at 1..=len, so any of after+1.. exists iff after < len.
        if after < len {
            let uuid_of = |i: Option<&Item>| i.and_then(|i| i.get(item::EVENT_UUID)).cloned();
            let foreign = uuid_of(events.get(after as usize)) != uuid_of(items.first());
            return Ok(Written::ConditionFailed { foreign });
        }
        let first = state.feed.len();
        for (i, it) in items.iter().enumerate() {
            let record = stream_record(first + i, it, now);
            state.feed.push(record);
        }
        state
            .streams
            .entry(stream.clone())
            .or_default()
            .extend(items);
        drop(state);
        self.notify.notify_waiters();
        self.notify.notify_one();
        Ok(Written::Done)
    }

    async fn read(&self, stream: &StreamId, request: ReadRequest) -> Result<Vec<RecordedEvent>> {
        let selected: Vec<Item> = {
            let state = self.lock();
            let Some(events) = state.streams.get(stream) else {
                return Ok(Vec::new());
            };
            let limit = request.limit.unwrap_or(usize::MAX);
            match request.direction {
                Direction::Forward => {
                    let from = request.from.unwrap_or(1).max(1);
                    let start = usize::try_from(from - 1)
                        .unwrap_or(usize::MAX)
                        .min(events.len());
                    events[start..].iter().take(limit).cloned().collect()
                }
                Direction::Backward => {
                    let end = request.from.map_or(events.len(), |f| {
                        usize::try_from(f).unwrap_or(usize::MAX).min(events.len())
                    });
                    events[..end].iter().rev().take(limit).cloned().collect()
                }
            }
        };
        selected.into_iter().map(item::decode).collect()
    }

    fn now_ms(&self) -> i64 {
        (self.clock)()
    }
}
