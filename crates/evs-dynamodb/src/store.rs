//! The DynamoDB backend. Only this module talks to the DynamoDB SDK.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, KeySchemaElement, KeyType,
    Put, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, StreamSpecification,
    StreamViewType, TableStatus as SdkTableStatus, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;

use evs_core::attr::{AttrValue, Item};
use evs_core::item;
use evs_core::model::{Direction, ReadRequest, RecordedEvent, StreamId, Version};
use evs_core::store::{system_clock, Backend, Clock, Written};
use evs_core::{Error, Result};

/// An event store in a DynamoDB table (see [`evs_core::item`] for the
/// layout). It implements [`evs_core::EventStore`] through
/// [`evs_core::store::Backend`].
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    clock: Clock,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// What [`DynamoStore::create_table`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    /// The table was created and is active.
    Created,
    /// The table existed already.
    AlreadyExists,
}

impl DynamoStore {
    /// A store on `table`, using `client` (built once by the caller from its configuration).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            clock: system_clock(),
        }
    }

    /// Replaces the clock that stamps appended events (tests move time with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the events table: on-demand, `StreamId` (S) partition key,
    /// `EventId` (N) sort key, a stream with `NEW_IMAGE`. Waits until active.
    pub async fn create_table(&self) -> Result<TableStatus> {
        create_table(
            &self.client,
            &self.table,
            &[
                (item::STREAM_ID, ScalarAttributeType::S, KeyType::Hash),
                (item::EVENT_ID, ScalarAttributeType::N, KeyType::Range),
            ],
            Some(StreamViewType::NewImage),
        )
        .await
    }

    /// The ARN of the table's stream, if it has one.
    pub async fn stream_arn(&self) -> Result<Option<String>> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| sdk_error(&self.table, "describing the table", e))?;
        Ok(described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_owned))
    }

    /// Every stream's last `EventId`, by a Scan of the whole table in
    /// `segments` parallel segments (1..=1,000,000; DynamoDB's bound on
    /// `TotalSegments`), projecting only the keys. `progress` is called with
    /// the number of items scanned so far after each page.
    ///
    /// Strongly consistent per page, but a Scan is not a snapshot: appends
    /// that land while it runs may or may not be counted.
    pub async fn last_versions(
        &self,
        segments: u32,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<BTreeMap<String, u64>> {
        if segments == 0 || segments > MAX_SCAN_SEGMENTS {
            return Err(Error::Backend {
                message: format!(
                    "a parallel scan takes 1 to {MAX_SCAN_SEGMENTS} segments, not {segments}"
                ),
                transient: false,
                source: None,
            });
        }
        let scanned = std::sync::atomic::AtomicU64::new(0);
        let scans =
            (0..segments).map(|segment| self.scan_segment(segment, segments, &scanned, progress));
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        for part in futures_util::future::join_all(scans).await {
            for (stream, version) in part? {
                let last = versions.entry(stream).or_insert(0);
                *last = (*last).max(version);
            }
        }
        Ok(versions)
    }

    async fn scan_segment(
        &self,
        segment: u32,
        segments: u32,
        scanned: &std::sync::atomic::AtomicU64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<HashMap<String, u64>> {
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        let segment_i32 = i32::try_from(segment).unwrap_or(i32::MAX);
        let segments_i32 = i32::try_from(segments).unwrap_or(i32::MAX);
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("#s, #e")
                .expression_attribute_names("#s", item::STREAM_ID)
                .expression_attribute_names("#e", item::EVENT_ID)
                .consistent_read(true)
                .segment(segment_i32)
                .total_segments(segments_i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(&self.table, "scanning the table", e))?;
            for raw in page.items() {
                let (Some(AttributeValue::S(stream)), Some(AttributeValue::N(id))) =
                    (raw.get(item::STREAM_ID), raw.get(item::EVENT_ID))
                else {
                    continue;
                };
                let Ok(id) = id.parse::<u64>() else {
                    continue;
                };
                match versions.get_mut(stream.as_str()) {
                    Some(last) => *last = (*last).max(id),
                    None => {
                        versions.insert(stream.clone(), id);
                    }
                }
            }
            let count = u64::try_from(page.items().len()).unwrap_or(0);
            let total = scanned.fetch_add(count, std::sync::atomic::Ordering::Relaxed) + count;
            progress(total);
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(versions),
            }
        }
    }
}

/// Creates an on-demand table with the key `keys` (name, type, role) and,
/// when `stream` says so, a DynamoDB stream of that view, then waits until
/// it is active. A table that exists already is
/// [`TableStatus::AlreadyExists`] (its layout is not checked).
pub async fn create_table(
    client: &Client,
    table: &str,
    keys: &[(&str, ScalarAttributeType, KeyType)],
    stream: Option<StreamViewType>,
) -> Result<TableStatus> {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind, role) in keys {
        request = request
            .attribute_definitions(attr_def(name, kind.clone())?)
            .key_schema(key(name, role.clone())?);
    }
    if let Some(view) = stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .map_err(|e| backend("building the stream specification", e))?,
        );
    }
    let status = match request.send().await {
        Ok(_) => TableStatus::Created,
        Err(e) if e.code() == Some("ResourceInUseException") => TableStatus::AlreadyExists,
        Err(e) => return Err(sdk_error(table, "creating the table", e)),
    };
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_error(table, "describing the table", e))?;
        if described.table().and_then(|t| t.table_status()) == Some(&SdkTableStatus::Active) {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Error::Backend {
        message: format!("table {table} did not become active within 60 s"),
        transient: true,
        source: None,
    })
}

/// An SDK failure on `table` as [`Error`]: a missing table is
/// [`Error::TableNotFound`], anything else [`Error::Backend`], worded by
/// [`evs_core::describe_sdk_error`] and classified by
/// [`evs_core::is_transient_sdk_error`].
pub fn sdk_error<E>(table: &str, doing: &str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if err.code() == Some("ResourceNotFoundException") {
        return Error::TableNotFound {
            table: table.to_owned(),
        };
    }
    let message = format!(
        "DynamoDB error while {doing} on table {table}: {}",
        evs_core::describe_sdk_error(&err)
    );
    Error::Backend {
        message,
        transient: evs_core::is_transient_sdk_error(&err),
        source: Some(Box::new(evs_core::SdkCause::new(err))),
    }
}

/// DynamoDB's bound on a Scan's `TotalSegments`.
pub const MAX_SCAN_SEGMENTS: u32 = 1_000_000;

fn backend(doing: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Backend {
        message: format!("{doing}: {e}"),
        transient: false,
        source: Some(Box::new(e)),
    }
}

fn attr_def(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(|e| backend("building an attribute definition", e))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| backend("building the key schema", e))
}

/// Converts an item to the SDK's representation.
pub fn to_sdk(value: &AttrValue) -> AttributeValue {
    match value {
        AttrValue::S(s) => AttributeValue::S(s.clone()),
        AttrValue::N(n) => AttributeValue::N(n.clone()),
        AttrValue::B(b) => AttributeValue::B(Blob::new(b.clone())),
        AttrValue::Bool(b) => AttributeValue::Bool(*b),
        AttrValue::Null => AttributeValue::Null(true),
        AttrValue::M(m) => {
            AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect())
        }
        AttrValue::L(l) => AttributeValue::L(l.iter().map(to_sdk).collect()),
        AttrValue::Ss(s) => AttributeValue::Ss(s.clone()),
        AttrValue::Ns(n) => AttributeValue::Ns(n.clone()),
        AttrValue::Bs(b) => AttributeValue::Bs(b.iter().map(|b| Blob::new(b.clone())).collect()),
    }
}

/// Converts an SDK attribute value; `None` for a type this crate does not know.
pub fn from_sdk(value: &AttributeValue) -> Option<AttrValue> {
    Some(match value {
        AttributeValue::S(s) => AttrValue::S(s.clone()),
        AttributeValue::N(n) => AttrValue::N(n.clone()),
        AttributeValue::B(b) => AttrValue::B(b.as_ref().to_vec()),
        AttributeValue::Bool(b) => AttrValue::Bool(*b),
        AttributeValue::Null(_) => AttrValue::Null,
        AttributeValue::M(m) => AttrValue::M(
            m.iter()
                .map(|(k, v)| Some((k.clone(), from_sdk(v)?)))
                .collect::<Option<_>>()?,
        ),
        AttributeValue::L(l) => AttrValue::L(l.iter().map(from_sdk).collect::<Option<_>>()?),
        AttributeValue::Ss(s) => AttrValue::Ss(s.clone()),
        AttributeValue::Ns(n) => AttrValue::Ns(n.clone()),
        AttributeValue::Bs(b) => AttrValue::Bs(b.iter().map(|b| b.as_ref().to_vec()).collect()),
        _ => return None,
    })
}

fn item_to_sdk(item: Item) -> HashMap<String, AttributeValue> {
    item.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()
}

fn key_of(stream: &StreamId, event_id: Version) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            item::STREAM_ID.to_owned(),
            AttributeValue::S(stream.as_str().to_owned()),
        ),
        (
            item::EVENT_ID.to_owned(),
            AttributeValue::N(event_id.to_string()),
        ),
    ])
}

const NOT_EXISTS: &str = "attribute_not_exists(StreamId)";

#[async_trait]
impl Backend for DynamoStore {
    async fn write(
        &self,
        stream: &StreamId,
        after: Version,
        timestamp_ms: i64,
        items: Vec<Item>,
        check_previous: bool,
    ) -> Result<Written> {
        if !check_previous && items.len() == 1 {
            let Some(only) = items.into_iter().next() else {
                return Err(Error::EmptyAppend);
            };
            let uuid = only.get(item::EVENT_UUID).map(to_sdk);
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item_to_sdk(only)))
                .condition_expression(NOT_EXISTS)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            return match result {
                Ok(_) => Ok(Written::Done),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => {
                        // The item in the way came back: is it ours?
                        let foreign = c
                            .item()
                            .is_some_and(|old| old.get(item::EVENT_UUID) != uuid.as_ref());
                        Ok(Written::ConditionFailed { foreign })
                    }
                    _ if e.code() == Some("TransactionConflictException") => {
                        Ok(Written::ConditionFailed { foreign: false })
                    }
                    _ => Err(sdk_error(&self.table, "appending an event", e)),
                },
            };
        }
        let mut ops = Vec::with_capacity(items.len() + 1);
        if check_previous {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key_of(stream, after)))
                .condition_expression("attribute_exists(EventId) AND #ts <= :ts")
                .expression_attribute_names("#ts", item::TIMESTAMP)
                .expression_attribute_values(":ts", AttributeValue::N(timestamp_ms.to_string()))
                .build()
                .map_err(|e| backend("building the condition check", e))?;
            ops.push(TransactWriteItem::builder().condition_check(check).build());
        }
        for it in items {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item_to_sdk(it)))
                .condition_expression(NOT_EXISTS)
                .build()
                .map_err(|e| backend("building a transactional put", e))?;
            ops.push(TransactWriteItem::builder().put(put).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(ops))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Written::Done),
            Err(e) => {
                let cancelled = e.as_service_error().and_then(|s| match s {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                    _ => None,
                });
                match cancelled {
                    // Cancelled by a condition or by a concurrent transaction on
                    // the same items: nothing was written; the caller re-reads.
                    Some(c)
                        if c.cancellation_reasons().iter().any(|r| {
                            matches!(
                                r.code(),
                                Some("ConditionalCheckFailed")
                                    | Some("TransactionConflict")
                                    | Some("ThrottlingError")
                                    | Some("ProvisionedThroughputExceeded")
                            )
                        }) || c.cancellation_reasons().is_empty() =>
                    {
                        Ok(Written::ConditionFailed { foreign: false })
                    }
                    _ if e.code() == Some("TransactionConflictException") => {
                        Ok(Written::ConditionFailed { foreign: false })
                    }
                    _ => Err(sdk_error(
                        &self.table,
                        "appending events in a transaction",
                        e,
                    )),
                }
            }
        }
    }

    async fn read(&self, stream: &StreamId, request: ReadRequest) -> Result<Vec<RecordedEvent>> {
        // A Query is only read-committed against transactions: while a
        // multi-event append commits, a read may see part of it, even with a
        // hole. EventIds are contiguous, so a hole is visible: read again.
        for attempt in 1..=READ_ATTEMPTS {
            let events = self.read_once(stream, request).await?;
            if contiguous(&events, request) {
                return Ok(events);
            }
            tracing::debug!(%stream, attempt, "read a stream with a hole (a transaction in flight); reading again");
            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
        }
        Err(Error::Backend {
            message: format!(
                "stream {stream} kept reading back with a gap in its EventIds after {READ_ATTEMPTS} attempts"
            ),
            transient: true,
            source: None,
        })
    }

    fn now_ms(&self) -> i64 {
        (self.clock)()
    }
}

/// Reads of one request before a persistent hole is an error.
const READ_ATTEMPTS: u32 = 5;

/// True when `events` can be what a read of a gap-free stream returns.
fn contiguous(events: &[RecordedEvent], request: ReadRequest) -> bool {
    let step_ok = |a: &RecordedEvent, b: &RecordedEvent| match request.direction {
        Direction::Forward => b.event_id == a.event_id.saturating_add(1),
        Direction::Backward => a.event_id == b.event_id.saturating_add(1),
    };
    let first_ok = match (request.direction, events.first()) {
        (Direction::Forward, Some(first)) => first.event_id == request.from.unwrap_or(1).max(1),
        _ => true,
    };
    first_ok && events.windows(2).all(|w| step_ok(&w[0], &w[1]))
}

impl DynamoStore {
    async fn read_once(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<Vec<RecordedEvent>> {
        let forward = request.direction == Direction::Forward;
        let limit = request.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let (condition, bound) = match (request.from, forward) {
            (Some(from), true) => ("StreamId = :s AND EventId >= :e", Some(from)),
            (Some(from), false) => ("StreamId = :s AND EventId <= :e", Some(from)),
            (None, _) => ("StreamId = :s", None),
        };
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let remaining = limit - out.len();
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .expression_attribute_values(":s", AttributeValue::S(stream.as_str().to_owned()))
                .scan_index_forward(forward)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(b) = bound {
                query = query.expression_attribute_values(":e", AttributeValue::N(b.to_string()));
            }
            if remaining < 10_000 {
                query = query.limit(i32::try_from(remaining).unwrap_or(i32::MAX));
            }
            let page = query
                .send()
                .await
                .map_err(|e| sdk_error(&self.table, "reading a stream", e))?;
            for raw in page.items() {
                let item: Item = raw
                    .iter()
                    .map(|(k, v)| {
                        from_sdk(v)
                            .map(|v| (k.clone(), v))
                            .ok_or_else(|| Error::CorruptItem {
                                stream: stream.to_string(),
                                event_id: 0,
                                reason: format!(
                                    "attribute {k} has a type this version does not know"
                                ),
                            })
                    })
                    .collect::<Result<_>>()?;
                out.push(item::decode(item)?);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }
}
