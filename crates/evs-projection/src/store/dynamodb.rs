//! [`DynamoRowStore`]: a projection's rows and ledger in a DynamoDB table.
//! Only this module of the crate talks to the DynamoDB SDK.
//!
//! Two layouts, both stable formats (ARCHITECTURE.md):
//!
//! * [`DynamoLayout::Rows`], any row key. Partition key `Id` (S). A row is
//!   one item: `Id` = `<model>#<key>` (a model name has no `#`), `Model`
//!   (S), `Key` (S), `Revision` (N), and the row's fields: its serde JSON
//!   form, which must be an object, as top-level attributes (through
//!   `evs_core::attr::from_json`: objects are maps, numbers exact), so a
//!   global secondary index can be put on any of them. A row with a field
//!   named `Id`, `Model`, `Key` or `Revision`, or that is not an object, is
//!   refused. A stream's ledger entry is an item of the same table: `Id` =
//!   `#ledger#<stream>`, `Stream` (S), `Version` (N) and, while the stream
//!   is parked, `Parked` (M: `EventId` N, `EventName` S, `Reason` S, `At` N,
//!   epoch ms).
//! * [`DynamoLayout::PerStream`], the format of per-stream read models (one
//!   row per stream, keyed by the stream id). Partition key `StreamId` (S):
//!   `Version` (N, the ledger), `State` (the row as one value; absent when
//!   the row is deleted or was never written), `Model` (S, the row's model),
//!   and `Parked` (M) while parked. A row is stored only with its stream's
//!   ledger, in the same item; a row keyed by anything else, or written
//!   without its stream's ledger moving, is refused. The row's revision is
//!   the stream's version. An item without `Model` (written before rows
//!   named their model) is read as a row of any model and listed by
//!   [`RowStore::rows`] under [`DynamoRowStore::PER_STREAM_UNNAMED_MODEL`].
//!
//! A commit is one `TransactWriteItems` (at most 100 items and 4 MB,
//! checked before the call): a `Put` per row and ledger entry (for a
//! deleted row of the rows layout, a `Put` of its key, its next `Revision`
//! and `Deleted`: a row's revision never goes back, so a copy read before
//! a delete cannot pass the check after the row is created again; `rows`
//! and loads read such an item as no row; an `Update` of `Version` and
//! `Parked` for a per-stream ledger entry without its row), each on the
//! revision or version the unit expects; expecting 0 accepts an absent item
//! or one at 0. A failed condition or a transaction conflict is
//! [`Commit::Conflict`]. A request that moves a stream's ledger forward
//! carries a `ClientRequestToken` hashed from its content, so a retry of a commit whose answer was lost is
//! recognised by DynamoDB (for 10 minutes) instead of conflicting; the
//! applier does not depend on it (a conflict reloads and skips by ledger).
//! Loads are strongly consistent `BatchGetItem`s; [`RowStore::versions`],
//! [`RowStore::parked`] and [`RowStore::rows`] are consistent, paginated
//! `Scan`s of the whole table. A partition key is at most 2048 bytes: a row
//! whose `Id` would be longer is refused as a row, a stream whose ledger key
//! would be longer (a stream id of over 2040 bytes, rows layout) is an
//! error; loads find neither.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use evs_core::attr::{self, AttrValue, Item};
use evs_core::Backoff;
use evs_dynamodb::{from_sdk, to_sdk, KeyType, ScalarAttributeType, TableStatus};
use md5::Digest as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Commit, RowStore, StoreError, Stored, Unit};
use crate::projection::{Ledger, Parked, RowKey};

/// Rows layout: the partition key.
const ID: &str = "Id";
/// Rows layout: a row's model.
const MODEL: &str = "Model";
/// Rows layout: a row's key.
const KEY: &str = "Key";
/// Rows layout: a row's revision.
const REVISION: &str = "Revision";
/// Rows layout: a ledger item's stream.
const STREAM: &str = "Stream";
/// Rows layout: the prefix of a ledger item's `Id`.
const LEDGER_PREFIX: &str = "#ledger#";
/// Per-stream layout: the partition key.
const STREAM_ID: &str = "StreamId";
/// Per-stream layout: the row.
const STATE: &str = "State";
/// Both layouts: the ledger's version.
const VERSION: &str = "Version";
/// Both layouts: why the stream is parked.
const PARKED: &str = "Parked";
/// Rows layout: set on a deleted row's item, which keeps its `Revision` (a
/// row deleted and created again must not come back at a revision a stale
/// copy still holds).
const DELETED: &str = "Deleted";
const PARKED_EVENT_ID: &str = "EventId";
const PARKED_EVENT_NAME: &str = "EventName";
const PARKED_REASON: &str = "Reason";
const PARKED_AT: &str = "At";

/// The attributes of a row item of the rows layout that are not the row's.
const RESERVED: [&str; 5] = [ID, MODEL, KEY, REVISION, DELETED];

/// DynamoDB's limit on a partition key's value, in bytes.
const MAX_KEY_BYTES: usize = 2048;
/// DynamoDB's limit on the keys of one `BatchGetItem`.
const MAX_BATCH_GET: usize = 100;
/// Attempts at the keys a `BatchGetItem` leaves unprocessed.
const BATCH_GET_ATTEMPTS: u32 = 12;

/// How the table is laid out (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamoLayout {
    /// One item per row with its fields as top-level attributes, and the
    /// ledger in the same table.
    Rows,
    /// One item per stream (`StreamId`, `Version`, `State`).
    PerStream,
}

impl DynamoLayout {
    /// The partition key's name.
    fn key_attr(self) -> &'static str {
        match self {
            DynamoLayout::Rows => ID,
            DynamoLayout::PerStream => STREAM_ID,
        }
    }
}

/// A projection's rows and ledger in a DynamoDB table (see the module docs
/// for the layouts, the commit and the loads).
#[derive(Clone)]
pub struct DynamoRowStore {
    client: Client,
    table: String,
    layout: DynamoLayout,
}

impl std::fmt::Debug for DynamoRowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoRowStore")
            .field("table", &self.table)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// One write of a commit, before it becomes the SDK's.
#[derive(Debug)]
struct Op {
    kind: OpKind,
    /// The attribute the condition checks (`Revision` or `Version`).
    checked: &'static str,
    /// The value it must have (0: or the item is absent).
    expected: u64,
    /// A ledger entry moved on by applied events: only if the stream is not
    /// parked (a driver that has not seen a park must not clear it).
    not_parked: bool,
}

#[derive(Debug)]
enum OpKind {
    Put(Item),
    /// Sets `Version` and sets (or removes) `Parked` of a per-stream item.
    Ledger {
        key: Item,
        version: u64,
        parked: Option<AttrValue>,
    },
}

impl OpKind {
    /// The bytes DynamoDB counts towards the 4 MB of a transaction.
    fn size(&self) -> usize {
        match self {
            OpKind::Put(item) => attr::item_size(item),
            OpKind::Ledger { key, parked, .. } => {
                attr::item_size(key)
                    + VERSION.len()
                    + 22
                    + parked
                        .as_ref()
                        .map_or(0, |p| PARKED.len() + attr::value_size(p))
            }
        }
    }
}

impl DynamoRowStore {
    /// The model an item of the per-stream layout without `Model` (written
    /// before rows named their model) is listed under by [`RowStore::rows`].
    pub const PER_STREAM_UNNAMED_MODEL: &'static str = "state";

    /// A store on `table`, laid out as `layout`.
    pub fn new(client: Client, table: impl Into<String>, layout: DynamoLayout) -> Self {
        Self {
            client,
            table: table.into(),
            layout,
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The table's layout.
    pub fn layout(&self) -> DynamoLayout {
        self.layout
    }

    /// Creates the table (on-demand, the layout's partition key, no stream)
    /// and waits until it is active. A table that exists already is fine if
    /// its key is the layout's ([`TableStatus::AlreadyExists`]), an error
    /// otherwise.
    pub async fn create_table(&self) -> Result<TableStatus, StoreError> {
        let key = self.layout.key_attr();
        let status = evs_dynamodb::create_table(
            &self.client,
            &self.table,
            &[(key, ScalarAttributeType::S, KeyType::Hash)],
            None,
        )
        .await
        .map_err(backend)?;
        if status == TableStatus::Created {
            return Ok(status);
        }
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.sdk_error("describing the table", e))?;
        let table = described.table();
        let schema: Vec<(String, String)> = table
            .map(|t| t.key_schema())
            .unwrap_or_default()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        let key_type = table
            .map(|t| t.attribute_definitions())
            .unwrap_or_default()
            .iter()
            .find(|d| d.attribute_name() == key)
            .map(|d| d.attribute_type().as_str().to_owned());
        if schema == [(key.to_owned(), "HASH".to_owned())] && key_type.as_deref() == Some("S") {
            return Ok(status);
        }
        Err(StoreError::Backend {
            message: format!(
                "table {} exists with the key {schema:?}, not the partition key {key} (S) alone that the {:?} layout needs: use another table",
                self.table, self.layout
            ),
            transient: false,
            source: None,
        })
    }

    fn sdk_error<E>(
        &self,
        doing: &str,
        err: aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        backend(evs_dynamodb::sdk_error(&self.table, doing, err))
    }

    /// The key of stream `stream`'s ledger entry; an error when it is past
    /// DynamoDB's limit on a key.
    fn ledger_key(&self, stream: &str) -> Result<Item, StoreError> {
        let id = self.ledger_id(stream);
        if id.len() > MAX_KEY_BYTES {
            return Err(StoreError::Backend {
                message: format!(
                    "stream {:?}… ({} bytes) has no ledger entry in the {:?} layout of table {}: its key would be {} bytes, past DynamoDB's {MAX_KEY_BYTES}",
                    stream.chars().take(40).collect::<String>(),
                    stream.len(),
                    self.layout,
                    self.table,
                    id.len()
                ),
                transient: false,
                source: None,
            });
        }
        Ok(Item::from([(
            self.layout.key_attr().to_owned(),
            AttrValue::S(id),
        )]))
    }

    /// The partition-key value of stream `stream`'s ledger entry.
    fn ledger_id(&self, stream: &str) -> String {
        match self.layout {
            DynamoLayout::Rows => format!("{LEDGER_PREFIX}{stream}"),
            DynamoLayout::PerStream => stream.to_owned(),
        }
    }

    /// The partition-key value of row `key`.
    fn row_id(&self, key: &RowKey) -> String {
        match self.layout {
            DynamoLayout::Rows => row_id(key),
            DynamoLayout::PerStream => key.key.clone(),
        }
    }

    /// Checks that row `key` can be stored: its model and key, and the
    /// length of its item's key.
    fn check_key(&self, key: &RowKey) -> Result<(), StoreError> {
        key.check().map_err(|e| row_error(key, e.to_string()))?;
        let id = self.row_id(key);
        if id.len() > MAX_KEY_BYTES {
            return Err(row_error(
                key,
                format!(
                    "its item's key would be {} bytes, past DynamoDB's {MAX_KEY_BYTES}",
                    id.len()
                ),
            ));
        }
        Ok(())
    }

    /// The key of row `key`.
    fn row_key(&self, key: &RowKey) -> Item {
        Item::from([(
            self.layout.key_attr().to_owned(),
            AttrValue::S(self.row_id(key)),
        )])
    }

    /// The row item (rows layout) or the item without its ledger attributes
    /// (per-stream layout) of `row` at `revision`, checked.
    fn row_item<R: Serialize>(
        &self,
        key: &RowKey,
        row: &R,
        revision: u64,
    ) -> Result<Item, StoreError> {
        self.check_key(key)?;
        let json = serde_json::to_value(row)
            .map_err(|e| row_error(key, format!("does not serialize: {e}")))?;
        let mut item = self.row_key(key);
        match self.layout {
            DynamoLayout::Rows => {
                let serde_json::Value::Object(fields) = json else {
                    return Err(row_error(
                        key,
                        "the rows layout stores a row's fields as attributes: its JSON form must be an object".into(),
                    ));
                };
                for (name, value) in &fields {
                    if RESERVED.contains(&name.as_str()) {
                        return Err(row_error(
                            key,
                            format!("its field {name:?} is reserved by the rows layout (Id, Model, Key, Revision): rename it"),
                        ));
                    }
                    if name.is_empty() {
                        return Err(row_error(key, "a field has an empty name".into()));
                    }
                    let value = attr::from_json(value)
                        .map_err(|e| row_error(key, format!("field {name:?}: {e}")))?;
                    item.insert(name.clone(), value);
                }
                item.insert(MODEL.to_owned(), AttrValue::S(key.model.to_string()));
                item.insert(KEY.to_owned(), AttrValue::S(key.key.clone()));
                item.insert(REVISION.to_owned(), AttrValue::N(revision.to_string()));
            }
            DynamoLayout::PerStream => {
                let state = attr::from_json(&json).map_err(|e| row_error(key, e.to_string()))?;
                item.insert(STATE.to_owned(), state);
                item.insert(MODEL.to_owned(), AttrValue::S(key.model.to_string()));
                item.insert(VERSION.to_owned(), AttrValue::N(revision.to_string()));
            }
        }
        check_size(key, &item)?;
        Ok(item)
    }

    /// The writes of `unit` (checked, not yet sent).
    fn ops<R: Serialize>(&self, unit: &Unit<R>) -> Result<Vec<Op>, StoreError> {
        match self.layout {
            DynamoLayout::Rows => self.rows_ops(unit),
            DynamoLayout::PerStream => self.per_stream_ops(unit),
        }
    }

    fn rows_ops<R: Serialize>(&self, unit: &Unit<R>) -> Result<Vec<Op>, StoreError> {
        let mut ops = Vec::with_capacity(unit.items());
        for write in &unit.rows {
            self.check_key(&write.key)?;
            let kind = match &write.row {
                Some(row) => OpKind::Put(self.row_item(&write.key, row, write.expected + 1)?),
                None => {
                    let mut item = self.row_key(&write.key);
                    item.insert(MODEL.to_owned(), AttrValue::S(write.key.model.to_string()));
                    item.insert(KEY.to_owned(), AttrValue::S(write.key.key.clone()));
                    let revision = (write.expected + 1).to_string();
                    item.insert(REVISION.to_owned(), AttrValue::N(revision));
                    item.insert(DELETED.to_owned(), AttrValue::Bool(true));
                    OpKind::Put(item)
                }
            };
            ops.push(Op {
                kind,
                checked: REVISION,
                expected: write.expected,
                not_parked: false,
            });
        }
        for write in &unit.ledger {
            let mut item = self.ledger_key(&write.stream)?;
            item.insert(STREAM.to_owned(), AttrValue::S(write.stream.clone()));
            item.insert(
                VERSION.to_owned(),
                AttrValue::N(write.ledger.version.to_string()),
            );
            if let Some(parked) = &write.ledger.parked {
                item.insert(PARKED.to_owned(), parked_attr(parked));
            }
            ops.push(Op {
                kind: OpKind::Put(item),
                checked: VERSION,
                expected: write.expected,
                not_parked: moves_unparked(write),
            });
        }
        Ok(ops)
    }

    fn per_stream_ops<R: Serialize>(&self, unit: &Unit<R>) -> Result<Vec<Op>, StoreError> {
        let mut rows: BTreeMap<&str, &super::RowWrite<R>> = BTreeMap::new();
        for write in &unit.rows {
            let key = &write.key;
            self.check_key(key)?;
            if !unit.ledger.iter().any(|l| l.stream == key.key) {
                return Err(row_error(
                    key,
                    format!("the per-stream layout stores a row only with the ledger of the stream it is keyed by, and no event of stream {:?} is in this commit (key the row by its event's stream, or use the rows layout)", key.key),
                ));
            }
            if let Some(other) = rows.insert(key.key.as_str(), write) {
                return Err(row_error(
                    key,
                    format!("the per-stream layout holds one row per stream, and row {} is written with it", other.key),
                ));
            }
        }
        let mut ops = Vec::with_capacity(unit.ledger.len());
        for write in &unit.ledger {
            let version = write.ledger.version;
            let parked = write.ledger.parked.as_ref().map(parked_attr);
            let kind = match rows.get(write.stream.as_str()) {
                Some(row) => {
                    let mut item = match &row.row {
                        Some(state) => self.row_item(&row.key, state, version)?,
                        None => {
                            let mut item = self.ledger_key(&write.stream)?;
                            item.insert(MODEL.to_owned(), AttrValue::S(row.key.model.to_string()));
                            item.insert(VERSION.to_owned(), AttrValue::N(version.to_string()));
                            item
                        }
                    };
                    if let Some(parked) = parked {
                        item.insert(PARKED.to_owned(), parked);
                    }
                    check_size(&row.key, &item)?;
                    OpKind::Put(item)
                }
                None => OpKind::Ledger {
                    key: self.ledger_key(&write.stream)?,
                    version,
                    parked,
                },
            };
            ops.push(Op {
                kind,
                checked: VERSION,
                expected: write.expected,
                not_parked: moves_unparked(write),
            });
        }
        Ok(ops)
    }

    /// The SDK's form of `op`, on this table.
    fn sdk_op(&self, op: &Op) -> Result<TransactWriteItem, StoreError> {
        let key_attr = self.layout.key_attr();
        let mut names: HashMap<String, String> =
            HashMap::from([("#c".to_owned(), op.checked.to_owned())]);
        let mut values: HashMap<String, AttributeValue> =
            HashMap::from([(":e".to_owned(), AttributeValue::N(op.expected.to_string()))]);
        let condition = if op.expected == 0 {
            names.insert("#k".to_owned(), key_attr.to_owned());
            "attribute_not_exists(#k) OR #c = :e"
        } else {
            "#c = :e"
        };
        let condition = if op.not_parked {
            names.insert("#np".to_owned(), PARKED.to_owned());
            format!("({condition}) AND attribute_not_exists(#np)")
        } else {
            condition.to_owned()
        };
        let built = match &op.kind {
            OpKind::Put(item) => Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_sdk_item(item)))
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()
                .map(|put| TransactWriteItem::builder().put(put).build()),
            OpKind::Ledger {
                key,
                version,
                parked,
            } => {
                // `#c` is `Version`: the update sets what the condition checks
                values.insert(":v".to_owned(), AttributeValue::N(version.to_string()));
                names.insert("#p".to_owned(), PARKED.to_owned());
                let update = match parked {
                    Some(parked) => {
                        values.insert(":p".to_owned(), to_sdk(parked));
                        "SET #c = :v, #p = :p"
                    }
                    None => "SET #c = :v REMOVE #p",
                };
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(to_sdk_item(key)))
                    .update_expression(update)
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map(|update| TransactWriteItem::builder().update(update).build())
            }
        };
        built.map_err(|e| StoreError::Backend {
            message: format!("building a transaction on table {}: {e}", self.table),
            transient: false,
            source: Some(Box::new(e)),
        })
    }

    /// The items of `keys` (partition-key values), strongly consistent, by
    /// key value; absent ones are left out.
    async fn batch_get(
        &self,
        keys: Vec<String>,
    ) -> Result<HashMap<String, HashMap<String, AttributeValue>>, StoreError> {
        let key_attr = self.layout.key_attr();
        // a key past DynamoDB's limit cannot be stored: absent (asking
        // would fail the whole batch)
        let mut unique: Vec<String> = keys
            .into_iter()
            .filter(|k| k.len() <= MAX_KEY_BYTES)
            .collect();
        unique.sort_unstable();
        unique.dedup();
        let mut found = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(MAX_BATCH_GET) {
            let keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|k| HashMap::from([(key_attr.to_owned(), AttributeValue::S(k.clone()))]))
                .collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Backend {
                        message: format!("building a read of table {}: {e}", self.table),
                        transient: false,
                        source: Some(Box::new(e)),
                    })?,
            );
            let mut attempt = 0;
            while let Some(request) = pending.take() {
                if attempt > 0 {
                    tokio::time::sleep(unprocessed_backoff().delay(attempt)).await;
                }
                attempt += 1;
                if attempt > BATCH_GET_ATTEMPTS {
                    return Err(StoreError::Backend {
                        message: format!(
                            "DynamoDB left keys of table {} unread after {BATCH_GET_ATTEMPTS} attempts (throttled): try again later",
                            self.table
                        ),
                        transient: true,
                        source: None,
                    });
                }
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("reading rows and ledger", e))?;
                for item in got
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let Some(AttributeValue::S(k)) = item.get(key_attr) {
                        found.insert(k.clone(), item.clone());
                    }
                }
                pending = got
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
            }
        }
        Ok(found)
    }

    /// Every item of the table (or those `filter` keeps), consistent.
    async fn scan(
        &self,
        filter: Option<Filter<'_>>,
        doing: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(Filter {
                expression,
                names,
                values,
            }) = filter
            {
                request = request.filter_expression(expression);
                for (name, value) in names {
                    request = request.expression_attribute_names(*name, *value);
                }
                for (name, value) in values {
                    request = request
                        .expression_attribute_values(*name, AttributeValue::S((*value).to_owned()));
                }
            }
            let page = request.send().await.map_err(|e| self.sdk_error(doing, e))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// Every ledger entry, by stream.
    async fn all_ledger(&self) -> Result<Vec<(String, Ledger)>, StoreError> {
        let items = match self.layout {
            DynamoLayout::Rows => {
                self.scan(
                    Some(Filter {
                        expression: "begins_with(#id, :ledger)",
                        names: &[("#id", ID)],
                        values: &[(":ledger", LEDGER_PREFIX)],
                    }),
                    "scanning the ledger",
                )
                .await?
            }
            DynamoLayout::PerStream => self.scan(None, "scanning the ledger").await?,
        };
        let stream_attr = match self.layout {
            DynamoLayout::Rows => STREAM,
            DynamoLayout::PerStream => STREAM_ID,
        };
        let mut ledger = Vec::with_capacity(items.len());
        for item in &items {
            let Some(AttributeValue::S(stream)) = item.get(stream_attr) else {
                return Err(corrupt(
                    format!("a ledger item of table {}", self.table),
                    ItemError::Missing(stream_attr),
                ));
            };
            ledger.push((stream.clone(), ledger_of(stream, item)?));
        }
        ledger.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(ledger)
    }

    /// The row of `key` in `item` (either layout).
    fn stored_of<R: DeserializeOwned>(
        &self,
        key: &RowKey,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Stored<R>, StoreError> {
        match self.layout {
            DynamoLayout::Rows => {
                let revision = number(item, REVISION)
                    .ok_or_else(|| corrupt(format!("row {key}"), ItemError::Missing(REVISION)))?;
                if item.contains_key(DELETED) {
                    return Ok(Stored {
                        revision,
                        row: None,
                    });
                }
                let mut fields = serde_json::Map::new();
                for (name, value) in item {
                    if RESERVED.contains(&name.as_str()) {
                        continue;
                    }
                    let value = from_sdk(value).ok_or_else(|| {
                        corrupt(format!("row {key}"), ItemError::Type(name.clone()))
                    })?;
                    fields.insert(name.clone(), attr::into_json(value));
                }
                let row = serde_json::from_value(serde_json::Value::Object(fields))
                    .map_err(|e| corrupt(format!("row {key}"), e))?;
                Ok(Stored {
                    revision,
                    row: Some(row),
                })
            }
            DynamoLayout::PerStream => {
                let revision = number(item, VERSION)
                    .ok_or_else(|| corrupt(format!("row {key}"), ItemError::Missing(VERSION)))?;
                if let (Some(AttributeValue::S(model)), Some(_)) =
                    (item.get(MODEL), item.get(STATE))
                {
                    if *model != key.model {
                        return Err(row_error(
                            key,
                            format!("the per-stream layout holds one row per stream, and this stream's item holds a row of model {model:?}"),
                        ));
                    }
                }
                let row = match item.get(STATE) {
                    None => None,
                    Some(state) => {
                        let state = from_sdk(state).ok_or_else(|| {
                            corrupt(format!("row {key}"), ItemError::Type(STATE.into()))
                        })?;
                        Some(
                            serde_json::from_value(attr::into_json(state))
                                .map_err(|e| corrupt(format!("row {key}"), e))?,
                        )
                    }
                };
                Ok(Stored { revision, row })
            }
        }
    }

    /// Sends the transaction of `ops`.
    async fn transact(&self, ops: &[Op]) -> Result<Commit, StoreError> {
        let items = ops
            .iter()
            .map(|op| self.sdk_op(op))
            .collect::<Result<Vec<_>, _>>()?;
        let mut request = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items));
        if let Some(token) = request_token(&self.table, ops) {
            request = request.client_request_token(token);
        }
        let err = match request.send().await {
            Ok(_) => return Ok(Commit::Done),
            Err(err) => err,
        };
        let reasons: Vec<String> = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                .cancellation_reasons()
                .iter()
                .filter_map(|r| r.code().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let code = err.code().map(str::to_owned);
        let failure = match classify(code.as_deref(), &reasons) {
            Failure::Conflict => return Ok(Commit::Conflict),
            Failure::Transient(note) => Some(note),
            Failure::AsIs => None,
        };
        let mut error = self.sdk_error("committing rows and ledger", err);
        if let (
            StoreError::Backend {
                message, transient, ..
            },
            Some(note),
        ) = (&mut error, failure)
        {
            *transient = true;
            message.push_str(note);
        }
        Err(error)
    }
}

/// What a failed `TransactWriteItems` means.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Nothing written: a condition failed or another transaction held an
    /// item.
    Conflict,
    /// Waiting may heal it (with a note for the message).
    Transient(&'static str),
    /// As the SDK error's code says (`evs_dynamodb::sdk_error`).
    AsIs,
}

/// Classifies a failed `TransactWriteItems` by its error code and, when
/// cancelled, the cancellation reasons' codes.
fn classify(code: Option<&str>, reasons: &[String]) -> Failure {
    let any = |codes: &[&str]| reasons.iter().any(|r| codes.contains(&r.as_str()));
    if any(&["ConditionalCheckFailed", "TransactionConflict"])
        || code == Some("TransactionConflictException")
    {
        return Failure::Conflict;
    }
    match code {
        // An earlier attempt with this token (this very commit) is still
        // running: its outcome is unknown until it ends.
        Some("TransactionInProgressException") => {
            Failure::Transient(" (an earlier attempt of this commit is still in progress)")
        }
        // Another request used this token in the last 10 minutes (the hash
        // of different content collided): nothing was written, and the
        // token expires.
        Some("IdempotentParameterMismatchException") => Failure::Transient(
            " (another commit used the same request token in the last 10 minutes; nothing was written)",
        ),
        _ if any(&["ThrottlingError", "ProvisionedThroughputExceeded"]) => {
            Failure::Transient(" (throttled)")
        }
        _ => Failure::AsIs,
    }
}

/// A scan's filter: its expression, names and (string) values.
#[derive(Clone, Copy)]
struct Filter<'a> {
    expression: &'a str,
    names: &'a [(&'a str, &'a str)],
    values: &'a [(&'a str, &'a str)],
}

/// The `Id` of row `key` in the rows layout.
fn row_id(key: &RowKey) -> String {
    format!("{}#{}", key.model, key.key)
}

fn row_error(key: &RowKey, reason: String) -> StoreError {
    StoreError::Row {
        key: key.clone(),
        reason,
    }
}

fn check_size(key: &RowKey, item: &Item) -> Result<(), StoreError> {
    let size = attr::item_size(item);
    let max = evs_core::item::MAX_ITEM_BYTES;
    if size > max {
        return Err(row_error(
            key,
            format!("its item is {size} bytes, past DynamoDB's item limit of 400 KB ({max} bytes)"),
        ));
    }
    Ok(())
}

/// A failure of the table: the events store's own error, which words it
/// (and keeps the SDK error as its source).
fn backend(error: evs_core::Error) -> StoreError {
    StoreError::Backend {
        message: error.to_string(),
        transient: error.is_transient(),
        source: Some(Box::new(error)),
    }
}

fn corrupt(what: String, source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Corrupt {
        what,
        source: Box::new(source),
    }
}

/// Why a stored item does not read back.
#[derive(Debug, thiserror::Error)]
enum ItemError {
    #[error("the item has no {0} of the right type")]
    Missing(&'static str),
    #[error("attribute {0} has a type this store does not know")]
    Type(String),
}

fn unprocessed_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(2),
    }
}

fn to_sdk_item(item: &Item) -> HashMap<String, AttributeValue> {
    item.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn parked_attr(parked: &Parked) -> AttrValue {
    AttrValue::M(BTreeMap::from([
        (
            PARKED_EVENT_ID.to_owned(),
            AttrValue::N(parked.event_id.to_string()),
        ),
        (
            PARKED_EVENT_NAME.to_owned(),
            AttrValue::S(parked.event_name.clone()),
        ),
        (
            PARKED_REASON.to_owned(),
            AttrValue::S(parked.reason.clone()),
        ),
        (PARKED_AT.to_owned(), AttrValue::N(parked.at_ms.to_string())),
    ]))
}

/// The ledger entry in `item` (absent `Version`: a per-stream item written
/// without one is not a ledger; never written by this store).
fn ledger_of(stream: &str, item: &HashMap<String, AttributeValue>) -> Result<Ledger, StoreError> {
    let what = || format!("the ledger of stream {stream:?}");
    let version =
        number(item, VERSION).ok_or_else(|| corrupt(what(), ItemError::Missing(VERSION)))?;
    let parked = match item.get(PARKED) {
        None => None,
        Some(AttributeValue::M(m)) => {
            let text = |name: &'static str| match m.get(name) {
                Some(AttributeValue::S(s)) => Ok(s.clone()),
                _ => Err(corrupt(what(), ItemError::Missing(name))),
            };
            let event_id = number(m, PARKED_EVENT_ID)
                .ok_or_else(|| corrupt(what(), ItemError::Missing(PARKED_EVENT_ID)))?;
            let at_ms = match m.get(PARKED_AT) {
                Some(AttributeValue::N(n)) => n.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| corrupt(what(), ItemError::Missing(PARKED_AT)))?;
            Some(Parked {
                event_id,
                event_name: text(PARKED_EVENT_NAME)?,
                reason: text(PARKED_REASON)?,
                at_ms,
            })
        }
        Some(_) => return Err(corrupt(what(), ItemError::Missing(PARKED))),
    };
    Ok(Ledger { version, parked })
}

/// A `ClientRequestToken` for the transaction of `ops`: a hash of its
/// content (32 hex digits), so that a retry of the same request is
/// recognised. `None` when no stream's ledger moves forward: such a request
/// (parking or resuming a stream at its version) can recur with the same
/// content after it took effect, and must then be checked, not recognised.
///
/// (The per-stream layout's own rule is below, [`stale_per_stream_row`].)
fn request_token(table: &str, ops: &[Op]) -> Option<String> {
    let moves = ops.iter().any(|op| {
        op.checked == VERSION
            && match &op.kind {
                OpKind::Put(item) => {
                    matches!(item.get(VERSION), Some(AttrValue::N(v)) if v.parse::<u64>().is_ok_and(|v| v > op.expected))
                }
                OpKind::Ledger { version, .. } => *version > op.expected,
            }
    });
    if !moves {
        return None;
    }
    let mut hasher = md5::Md5::new();
    let mut feed = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    feed(table.as_bytes());
    for op in ops {
        let (tag, items): (&[u8], Vec<&Item>) = match &op.kind {
            OpKind::Put(item) => (b"put", vec![item]),
            OpKind::Ledger { key, .. } => (b"ledger", vec![key]),
        };
        feed(tag);
        for item in items {
            feed(serde_json::to_string(item).unwrap_or_default().as_bytes());
        }
        if let OpKind::Ledger {
            version, parked, ..
        } = &op.kind
        {
            feed(&version.to_le_bytes());
            if let Some(parked) = parked {
                feed(serde_json::to_string(parked).unwrap_or_default().as_bytes());
            }
        }
        feed(op.checked.as_bytes());
        feed(&op.expected.to_le_bytes());
    }
    let digest: [u8; 16] = hasher.finalize().into();
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a ledger write moves its stream on by applied events (neither
/// parks nor resumes it): it must then find the stream not parked.
fn moves_unparked(write: &super::LedgerWrite) -> bool {
    write.ledger.parked.is_none() && write.ledger.version > write.expected
}

/// Per-stream layout: one item holds a stream's row and ledger, and the
/// condition checks only `Version`. A row copy read at another version than
/// the ledger entry the unit expects (a driver that reloaded the ledger but
/// kept an older copy of the row) would pass that condition and overwrite
/// the events applied in between: it is a conflict, refused before the call
/// (the driver reloads both).
fn stale_per_stream_row<R>(unit: &Unit<R>) -> bool {
    unit.rows.iter().any(|row| {
        unit.ledger
            .iter()
            .find(|l| l.stream == row.key.key)
            .is_some_and(|l| l.expected != row.expected)
    })
}

#[async_trait]
impl<R> RowStore<R> for DynamoRowStore
where
    R: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn max_items(&self) -> usize {
        evs_core::item::MAX_TRANSACTION_ITEMS
    }

    fn check_row(&self, key: &RowKey, row: &R) -> Result<(), StoreError> {
        self.row_item(key, row, u64::MAX).map(|_| ())
    }

    fn revision_after(&self, write: &super::RowWrite<R>, unit: &Unit<R>) -> u64 {
        // per-stream: a row's revision is its stream's ledger version
        let ledger = unit.ledger.iter().find(|l| l.stream == write.key.key);
        match (self.layout, ledger) {
            (DynamoLayout::PerStream, Some(l)) => l.ledger.version,
            _ => write.expected + 1,
        }
    }

    async fn load_ledger(&self, streams: &[String]) -> Result<Vec<Ledger>, StoreError> {
        let found = self
            .batch_get(streams.iter().map(|s| self.ledger_id(s)).collect())
            .await?;
        streams
            .iter()
            .map(|stream| match found.get(&self.ledger_id(stream)) {
                Some(item) => ledger_of(stream, item),
                None => Ok(Ledger::default()),
            })
            .collect()
    }

    async fn load_rows(&self, keys: &[RowKey]) -> Result<Vec<Stored<R>>, StoreError> {
        for key in keys {
            key.check().map_err(|e| row_error(key, e.to_string()))?;
        }
        let found = self
            .batch_get(keys.iter().map(|k| self.row_id(k)).collect())
            .await?;
        keys.iter()
            .map(|key| match found.get(&self.row_id(key)) {
                Some(item) => self.stored_of(key, item),
                None => Ok(Stored::default()),
            })
            .collect()
    }

    async fn commit(&self, unit: &Unit<R>) -> Result<Commit, StoreError> {
        if self.layout == DynamoLayout::PerStream && stale_per_stream_row(unit) {
            return Ok(Commit::Conflict);
        }
        let ops = self.ops(unit)?;
        if ops.is_empty() {
            return Ok(Commit::Done);
        }
        let max_items = evs_core::item::MAX_TRANSACTION_ITEMS;
        if ops.len() > max_items {
            return Err(StoreError::UnitTooLarge {
                items: unit.items(),
                reason: format!("DynamoDB's transaction holds at most {max_items} items"),
            });
        }
        let bytes: usize = ops.iter().map(|op| op.kind.size()).sum();
        let max_bytes = evs_core::item::MAX_TRANSACTION_BYTES;
        if bytes > max_bytes {
            return Err(StoreError::UnitTooLarge {
                items: unit.items(),
                reason: format!(
                    "its items are {bytes} bytes, past DynamoDB's transaction limit of 4 MB ({max_bytes} bytes)"
                ),
            });
        }
        self.transact(&ops).await
    }

    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .all_ledger()
            .await?
            .into_iter()
            .map(|(stream, ledger)| (stream, ledger.version))
            .collect())
    }

    async fn parked(&self) -> Result<Vec<(String, Ledger)>, StoreError> {
        Ok(self
            .all_ledger()
            .await?
            .into_iter()
            .filter(|(_, ledger)| ledger.parked.is_some())
            .collect())
    }

    async fn rows(&self) -> Result<Vec<(RowKey, R)>, StoreError> {
        let items = match self.layout {
            DynamoLayout::Rows => {
                self.scan(
                    Some(Filter {
                        expression: "NOT begins_with(#id, :ledger)",
                        names: &[("#id", ID)],
                        values: &[(":ledger", LEDGER_PREFIX)],
                    }),
                    "scanning the rows",
                )
                .await?
            }
            DynamoLayout::PerStream => {
                self.scan(
                    Some(Filter {
                        expression: "attribute_exists(#s)",
                        names: &[("#s", STATE)],
                        values: &[],
                    }),
                    "scanning the rows",
                )
                .await?
            }
        };
        let mut rows = Vec::with_capacity(items.len());
        for item in &items {
            let text = |name: &'static str| match item.get(name) {
                Some(AttributeValue::S(s)) => Some(s.clone()),
                _ => None,
            };
            let key = match self.layout {
                DynamoLayout::Rows => text(MODEL).zip(text(KEY)),
                DynamoLayout::PerStream => Some((
                    text(MODEL).unwrap_or_else(|| Self::PER_STREAM_UNNAMED_MODEL.to_owned()),
                    text(STREAM_ID).unwrap_or_default(),
                )),
            };
            let Some((model, key)) = key else {
                return Err(corrupt(
                    format!("a row item of table {}", self.table),
                    ItemError::Missing(KEY),
                ));
            };
            let key = RowKey::new(model, key);
            if let Stored { row: Some(row), .. } = self.stored_of(&key, item)? {
                rows.push((key, row));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A per-stream commit whose row copy was read at another version than
    /// the ledger entry it expects overwrites the events in between: refused
    /// as a conflict (a driver that reloaded the ledger but kept an older
    /// row, e.g. after a catch-up or a resume).
    #[test]
    fn a_per_stream_row_older_than_its_ledger_is_a_conflict() {
        let unit = |row_at: u64, ledger_at: u64| Unit {
            rows: vec![super::super::RowWrite {
                key: RowKey::new("balances", "acct-1"),
                expected: row_at,
                row: Some(1u64),
            }],
            ledger: vec![super::super::LedgerWrite {
                stream: "acct-1".into(),
                expected: ledger_at,
                ledger: Ledger {
                    version: ledger_at + 1,
                    parked: None,
                },
            }],
        };
        assert!(stale_per_stream_row(&unit(5, 7)));
        assert!(!stale_per_stream_row(&unit(7, 7)));
        assert!(!stale_per_stream_row(&unit(0, 0)));
    }

    fn reasons(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn failed_transactions_are_classified() {
        let cancelled = Some("TransactionCanceledException");
        for codes in [
            &["None", "ConditionalCheckFailed"][..],
            &["TransactionConflict", "None"],
            &["ThrottlingError", "ConditionalCheckFailed"],
        ] {
            assert_eq!(
                classify(cancelled, &reasons(codes)),
                Failure::Conflict,
                "{codes:?}"
            );
        }
        assert_eq!(
            classify(Some("TransactionConflictException"), &[]),
            Failure::Conflict
        );
        assert!(matches!(
            classify(cancelled, &reasons(&["None", "ThrottlingError"])),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(Some("TransactionInProgressException"), &[]),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(Some("IdempotentParameterMismatchException"), &[]),
            Failure::Transient(_)
        ));
        for (code, codes) in [
            (cancelled, &["None", "ValidationError"][..]),
            (cancelled, &["ItemCollectionSizeLimitExceeded"]),
            (Some("ValidationException"), &[]),
            (Some("InternalServerError"), &[]),
        ] {
            assert_eq!(classify(code, &reasons(codes)), Failure::AsIs, "{code:?}");
        }
    }

    fn put(version: u64, expected: u64, stream: &str) -> Op {
        Op {
            kind: OpKind::Put(Item::from([
                (
                    ID.to_owned(),
                    AttrValue::S(format!("{LEDGER_PREFIX}{stream}")),
                ),
                (VERSION.to_owned(), AttrValue::N(version.to_string())),
            ])),
            checked: VERSION,
            expected,
            not_parked: false,
        }
    }

    #[test]
    fn the_request_token_is_a_hash_of_the_content_when_a_ledger_moves() {
        let token = request_token("t", &[put(3, 1, "a"), put(2, 0, "b")]).unwrap();
        assert_eq!(token.len(), 32);
        assert!(token.len() <= 36);
        assert_eq!(
            request_token("t", &[put(3, 1, "a"), put(2, 0, "b")]),
            Some(token.clone())
        );
        for other in [
            request_token("u", &[put(3, 1, "a"), put(2, 0, "b")]),
            request_token("t", &[put(3, 2, "a"), put(2, 0, "b")]),
            request_token("t", &[put(4, 1, "a"), put(2, 0, "b")]),
            request_token("t", &[put(3, 1, "a")]),
        ] {
            assert_ne!(other, Some(token.clone()));
        }
        // parking or resuming at the same version can recur: no token
        assert_eq!(request_token("t", &[put(3, 3, "a")]), None);
        let resume = Op {
            kind: OpKind::Ledger {
                key: Item::new(),
                version: 3,
                parked: None,
            },
            checked: VERSION,
            expected: 3,
            not_parked: false,
        };
        assert_eq!(request_token("t", &[resume]), None);
    }
}
