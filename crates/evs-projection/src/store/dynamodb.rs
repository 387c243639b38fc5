//! [`DynamoStateStore`]: a projection's states and versions in a DynamoDB
//! table, one item per stream. Only this module of the crate talks to the
//! DynamoDB SDK.
//!
//! The item (a stable format, ARCHITECTURE.md): `StreamId` (S, the partition
//! key), `Version` (N, the last `EventId` applied) and `State`, the stream's
//! state as a DynamoDB value (its serde JSON form through
//! `evs_core::attr::from_json`: objects are maps, numbers exact), so the
//! table is itself a readable read model (`State.balance`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use evs_core::attr::{self, AttrValue};
use evs_dynamodb::{from_sdk, to_sdk, KeyType, ScalarAttributeType, TableStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Commit, StateStore, StoreError};
use crate::projection::Versioned;

/// The partition key: the stream whose state the item holds.
pub(crate) const STREAM_ID: &str = "StreamId";
/// The last `EventId` applied to the state.
pub(crate) const VERSION: &str = "Version";
/// The state.
pub(crate) const STATE: &str = "State";

/// A projection's states and versions in a DynamoDB table (see the module
/// docs for the item). A commit is one conditional `PutItem`: on the item
/// not existing (version 0) or on its `Version` being the expected one; a
/// failed condition is [`Commit::Conflict`] with the version found. Loads are
/// strongly consistent `GetItem`s; [`StateStore::versions`] is a consistent,
/// paginated `Scan` of the keys and versions.
#[derive(Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

impl std::fmt::Debug for DynamoStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStateStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DynamoStateStore {
    /// A store on `table`, using `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table (on-demand, `StreamId` partition key, no stream)
    /// and waits until it is active.
    pub async fn create_table(&self) -> Result<TableStatus, StoreError> {
        evs_dynamodb::create_table(
            &self.client,
            &self.table,
            &[(STREAM_ID, ScalarAttributeType::S, KeyType::Hash)],
            None,
        )
        .await
        .map_err(backend)
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

fn state_error(stream: &str, source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::State {
        stream: stream.to_owned(),
        source: Box::new(source),
    }
}

/// Why a stored item is not a state.
#[derive(Debug, thiserror::Error)]
enum ItemError {
    #[error("the item has no {0} of the right type")]
    Missing(&'static str),
    #[error("the item is {size} bytes with its state, past DynamoDB's item limit of 400 KB ({max} bytes)")]
    TooLarge { size: usize, max: usize },
}

/// The item of `stream` at `next`, checked against DynamoDB's item limit.
fn to_item<S: Serialize>(
    stream: &str,
    next: &Versioned<S>,
) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let json = serde_json::to_value(&next.state).map_err(|e| state_error(stream, e))?;
    let state = attr::from_json(&json).map_err(|e| state_error(stream, e))?;
    let item = attr::Item::from([
        (STREAM_ID.to_owned(), AttrValue::S(stream.to_owned())),
        (VERSION.to_owned(), AttrValue::N(next.version.to_string())),
        (STATE.to_owned(), state),
    ]);
    let size = attr::item_size(&item);
    if size > evs_core::item::MAX_ITEM_BYTES {
        return Err(state_error(
            stream,
            ItemError::TooLarge {
                size,
                max: evs_core::item::MAX_ITEM_BYTES,
            },
        ));
    }
    Ok(item.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect())
}

fn version_of(item: &HashMap<String, AttributeValue>) -> Option<u64> {
    match item.get(VERSION) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn from_item<S: DeserializeOwned>(
    stream: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Versioned<S>, StoreError> {
    let version =
        version_of(item).ok_or_else(|| state_error(stream, ItemError::Missing(VERSION)))?;
    let state = item
        .get(STATE)
        .and_then(from_sdk)
        .ok_or_else(|| state_error(stream, ItemError::Missing(STATE)))?;
    let state =
        serde_json::from_value(attr::into_json(state)).map_err(|e| state_error(stream, e))?;
    Ok(Versioned { version, state })
}

#[async_trait]
impl<S> StateStore<S> for DynamoStateStore
where
    S: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    async fn load(&self, stream: &str) -> Result<Option<Versioned<S>>, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(STREAM_ID, AttributeValue::S(stream.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.sdk_error("loading a state", e))?;
        got.item().map(|item| from_item(stream, item)).transpose()
    }

    async fn commit(
        &self,
        stream: &str,
        expected: u64,
        next: &Versioned<S>,
    ) -> Result<Commit, StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(stream, next)?))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = if expected == 0 {
            request
                .condition_expression("attribute_not_exists(#s)")
                .expression_attribute_names("#s", STREAM_ID)
        } else {
            request
                .condition_expression("#v = :expected")
                .expression_attribute_names("#v", VERSION)
                .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
        };
        match request.send().await {
            Ok(_) => Ok(Commit::Done),
            Err(e) => match e.as_service_error() {
                Some(service) if service.is_conditional_check_failed_exception() => {
                    let actual = match service {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                            c.item().map_or(Some(0), version_of)
                        }
                        _ => None,
                    };
                    Ok(Commit::Conflict { actual })
                }
                _ => Err(self.sdk_error("committing a state", e)),
            },
        }
    }

    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut versions = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("#s, #v")
                .expression_attribute_names("#s", STREAM_ID)
                .expression_attribute_names("#v", VERSION)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.sdk_error("scanning the versions", e))?;
            for item in page.items() {
                let Some(AttributeValue::S(stream)) = item.get(STREAM_ID) else {
                    continue;
                };
                let version = version_of(item)
                    .ok_or_else(|| state_error(stream, ItemError::Missing(VERSION)))?;
                versions.push((stream.clone(), version));
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(versions),
            }
        }
    }
}
