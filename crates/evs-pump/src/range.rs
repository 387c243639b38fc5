//! One range of a shard read again: the records of a DynamoDB stream from
//! one `SequenceNumber` to another, as a Lambda on-failure record names a
//! batch the event source mapping gave up on (`DDBStreamBatchInfo`:
//! `shardId`, `startSequenceNumber`, `endSequenceNumber`, `streamArn`).
//!
//! `GetShardIterator` `AT_SEQUENCE_NUMBER` the start, then `GetRecords`
//! until a record past the end, the shard's end, or
//! [`EMPTY_PAGES_DONE`] empty pages in a row (an open shard read to its
//! present). Records come in the exact JSON of a Lambda event's records
//! ([`record_to_json`]). A range the stream no longer holds (trimmed: older
//! than the stream's 24 hours, or its shard gone from the stream) is
//! [`RangeError::Gone`]: its records cannot be read again from the stream.

use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_dynamodbstreams::Client;
use serde_json::Value;

use crate::dynamodb::record_to_json;
use crate::{sequence_number_of, SourceError};

/// Empty `GetRecords` pages in a row after which the range is read as far as
/// the shard holds (an open shard may answer a few empty pages before its
/// records, so one is not the end).
pub const EMPTY_PAGES_DONE: u32 = 5;

/// Records per `GetRecords` call.
const PAGE: i32 = 1000;

/// A range of one shard, as a Lambda on-failure record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    /// The stream's ARN.
    pub stream_arn: String,
    /// The shard.
    pub shard_id: String,
    /// The first record's `SequenceNumber`.
    pub start: String,
    /// The last record's `SequenceNumber`.
    pub end: String,
}

/// Why a range could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// The stream no longer holds the range: trimmed (older than 24 hours)
    /// or its shard no longer listed.
    #[error("records {start} to {end} of shard {shard} are no longer in the stream ({reason})")]
    Gone {
        /// The shard.
        shard: String,
        /// The range's first `SequenceNumber`.
        start: String,
        /// The range's last `SequenceNumber`.
        end: String,
        /// What the stream said.
        reason: String,
    },
    /// The stream gave no record at or past the range's end (it answered
    /// empty pages, or the shard ended first): the range may not be read
    /// whole yet; try again later.
    #[error("records {start} to {end} of shard {shard}: the stream gave {read} records and none at or past the end; try again later")]
    Incomplete {
        /// The shard.
        shard: String,
        /// The range's first `SequenceNumber`.
        start: String,
        /// The range's last `SequenceNumber`.
        end: String,
        /// Records read.
        read: usize,
    },
    /// A DynamoDB Streams call failed otherwise.
    #[error(transparent)]
    Streams(#[from] SourceError),
}

impl RangeError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RangeError::Gone { .. } => false,
            RangeError::Incomplete { .. } => true,
            RangeError::Streams(e) => e.is_transient(),
        }
    }
}

/// Whether sequence number `a` is after `b` (both decimal digits: longer is
/// larger, else compared as text).
pub fn sequence_after(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

/// Reads the records of `range`, in stream order (see the module docs).
/// Records after the range's end are not read; a range whose end the shard
/// does not (yet) reach gives what there is ([`read_whole_range`] refuses
/// that).
pub async fn read_range(client: &Client, range: &ShardRange) -> Result<Vec<Value>, RangeError> {
    Ok(read(client, range).await?.0)
}

/// The records of `range` and whether a record at or past its end was read.
async fn read(client: &Client, range: &ShardRange) -> Result<(Vec<Value>, bool), RangeError> {
    let gone = |reason: String| RangeError::Gone {
        shard: range.shard_id.clone(),
        start: range.start.clone(),
        end: range.end.clone(),
        reason,
    };
    let iterator = client
        .get_shard_iterator()
        .stream_arn(&range.stream_arn)
        .shard_id(&range.shard_id)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(&range.start)
        .send()
        .await;
    let mut iterator = match iterator {
        Ok(out) => out.shard_iterator().map(str::to_owned),
        Err(e) => {
            let service = e.as_service_error();
            if service.is_some_and(|s| {
                s.is_trimmed_data_access_exception() || s.is_resource_not_found_exception()
            }) {
                return Err(gone(evs_core::describe_sdk_error(&e)));
            }
            return Err(crate::dynamodb::streams_error(
                format!(
                    "getting an iterator at {} in shard {}",
                    range.start, range.shard_id
                ),
                e,
            )
            .into());
        }
    };
    let mut records = Vec::new();
    let mut empty = 0u32;
    while let Some(it) = iterator.take() {
        let out = match client
            .get_records()
            .shard_iterator(it)
            .limit(PAGE)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if e.as_service_error()
                    .is_some_and(|s| s.is_trimmed_data_access_exception())
                {
                    return Err(gone(evs_core::describe_sdk_error(&e)));
                }
                return Err(crate::dynamodb::streams_error(
                    format!("reading shard {} from {}", range.shard_id, range.start),
                    e,
                )
                .into());
            }
        };
        let page = out.records();
        empty = if page.is_empty() { empty + 1 } else { 0 };
        for record in page {
            let json = record_to_json(record, &range.stream_arn);
            match sequence_number_of(&json) {
                Some(seq) if sequence_after(seq, &range.end) => return Ok((records, true)),
                Some(seq) if seq == range.end => {
                    records.push(json);
                    return Ok((records, true));
                }
                _ => records.push(json),
            }
        }
        if empty >= EMPTY_PAGES_DONE {
            break;
        }
        iterator = out.next_shard_iterator().map(str::to_owned);
    }
    Ok((records, false))
}

/// Reads `range` whole, as the reconciler must (its streams are caught up
/// from what it read): as [`read_range`], but a range whose end was not
/// reached is [`RangeError::Incomplete`], never a shorter list.
pub async fn read_whole_range(
    client: &Client,
    range: &ShardRange,
) -> Result<Vec<Value>, RangeError> {
    match read(client, range).await? {
        (records, true) => Ok(records),
        (records, false) => Err(RangeError::Incomplete {
            shard: range.shard_id.clone(),
            start: range.start.clone(),
            end: range.end.clone(),
            read: records.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(sequence_after("100", "99"));
        assert!(sequence_after("200", "100"));
        assert!(!sequence_after("100", "100"));
        assert!(!sequence_after("099", "100"));
        assert!(!sequence_after("99", "100"));
    }
}
