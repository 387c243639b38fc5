//! The reconciler of a projection's on-failure queue, for any
//! [`Projection`] and [`RowStore`].
//!
//! A live driver's event source mapping (a Lambda on the events table's
//! DynamoDB stream) sends a batch it gave up on (retries or record age
//! exhausted) to an SQS queue as Lambda's on-failure record, which names the
//! batch ([`BatchInfo`], its `DDBStreamBatchInfo`: shard, first and last
//! `SequenceNumber`) but not its records. The reconciler ([`reconcile`])
//! reads that range from the stream again (a [`RangeReader`]; on AWS
//! [`StreamRanges`], that is [`read_whole_range`]), collects the stream ids of its
//! records and applies each of those streams from the events table to its
//! end ([`Applier::catch_up`]). A range the stream no longer holds (trimmed
//! after 24 hours) fails its message, which the queue's own redrive policy
//! moves to its dead-letter queue, with a log line
//! ([`ReconcileReport::log`]): the streams it held cannot be named, and the
//! read model needs a rebuild (which skips every event already applied).
//!
//! One Lambda binary can be both functions: [`invocation`] tells an SQS
//! event (the reconciler's) from a stream one (the live driver's) by its
//! shape. [`ReconcileReport::response`] is the SQS answer
//! (`batchItemFailures`), [`ReconcileReport::emf_line`] the metrics.

use std::collections::BTreeSet;

use async_trait::async_trait;
use evs_archiver::record::{classify, Classified};
use evs_projection::{Applier, Projection, RowStore};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::range::{read_whole_range, RangeError, ShardRange};

/// What a Lambda invocation carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// DynamoDB stream records: the live driver.
    Stream,
    /// SQS messages from the on-failure queue: the reconciler.
    Queue,
}

/// Which function an invocation is for: SQS messages (the first record's
/// `eventSource` is `aws:sqs`) go to the reconciler, anything else to the
/// live driver (which refuses what is not a batch of stream records).
pub fn invocation(event: &str) -> Invocation {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "Records")]
        records: Vec<ProbeRecord>,
    }
    #[derive(Deserialize)]
    struct ProbeRecord {
        #[serde(rename = "eventSource")]
        event_source: Option<String>,
    }
    match serde_json::from_str::<Probe>(event) {
        Ok(p) if p.records.first().and_then(|r| r.event_source.as_deref()) == Some("aws:sqs") => {
            Invocation::Queue
        }
        _ => Invocation::Stream,
    }
}

/// The batch an on-failure record names (its `DDBStreamBatchInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInfo {
    /// The shard.
    pub shard_id: String,
    /// The first record's `SequenceNumber`.
    pub start_sequence_number: String,
    /// The last record's `SequenceNumber`.
    pub end_sequence_number: String,
    /// The stream's ARN.
    pub stream_arn: String,
}

/// Why a range of the stream could not be read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeFailure {
    /// The stream no longer holds it (trimmed): only a rebuild recovers.
    Gone(String),
    /// Reading failed otherwise (retried with the message).
    Failed(String),
}

/// Reads a range of the events table's stream again (on AWS,
/// [`StreamRanges`]): the records, in the shape of a Lambda event's records.
#[async_trait]
pub trait RangeReader: Send + Sync {
    /// The records of `batch`'s range.
    async fn read(&self, batch: &BatchInfo) -> Result<Vec<Value>, RangeFailure>;
}

/// The ranges of on-failure records read again from DynamoDB Streams
/// ([`read_whole_range`]: a range not read to its end fails the message, to
/// be tried again).
#[derive(Debug, Clone)]
pub struct StreamRanges(pub crate::dynamodb::Client);

#[async_trait]
impl RangeReader for StreamRanges {
    async fn read(&self, batch: &BatchInfo) -> Result<Vec<Value>, RangeFailure> {
        let range = ShardRange {
            stream_arn: batch.stream_arn.clone(),
            shard_id: batch.shard_id.clone(),
            start: batch.start_sequence_number.clone(),
            end: batch.end_sequence_number.clone(),
        };
        read_whole_range(&self.0, &range)
            .await
            .map_err(|e| match e {
                e @ RangeError::Gone { .. } => RangeFailure::Gone(e.to_string()),
                e => RangeFailure::Failed(evs_core::describe_chain(&e)),
            })
    }
}

/// What became of one SQS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Every stream of the range applied to the table's end (parked ones
    /// left as they are).
    Done {
        /// The streams caught up.
        streams: Vec<String>,
        /// Events applied.
        applied: u64,
        /// Streams parked on the way.
        parked: u64,
    },
    /// The range is gone from the stream: a rebuild is needed.
    Gone(String),
    /// Failed; the message comes back.
    Failed(String),
}

/// What a batch of on-failure messages did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// Each message's id and outcome, in order.
    pub messages: Vec<(String, MessageOutcome)>,
}

impl ReconcileReport {
    /// The SQS answer: `{"batchItemFailures": [{"itemIdentifier": messageId}]}`
    /// for every message not done (it comes back, and after the queue's
    /// `maxReceiveCount` goes to its dead-letter queue).
    pub fn response(&self) -> Value {
        let failures: Vec<Value> = self
            .messages
            .iter()
            .filter(|(_, o)| !matches!(o, MessageOutcome::Done { .. }))
            .map(|(id, _)| json!({ "itemIdentifier": id }))
            .collect();
        json!({ "batchItemFailures": failures })
    }

    /// The metrics as one CloudWatch EMF line in `namespace`: `Messages`,
    /// `MessagesFailed`, `RangesGone`, `StreamsCaughtUp`, `Applied`, `Parked`.
    pub fn emf_line(&self, namespace: &str, now_ms: i64) -> Value {
        let mut failed = 0;
        let mut gone = 0;
        let (mut streams, mut applied, mut parked) = (0, 0, 0);
        for (_, outcome) in &self.messages {
            match outcome {
                MessageOutcome::Done {
                    streams: s,
                    applied: a,
                    parked: p,
                } => {
                    streams += s.len();
                    applied += a;
                    parked += p;
                }
                MessageOutcome::Gone(_) => gone += 1,
                MessageOutcome::Failed(_) => failed += 1,
            }
        }
        let names = [
            "Messages",
            "MessagesFailed",
            "RangesGone",
            "StreamsCaughtUp",
            "Applied",
            "Parked",
        ];
        let metrics: Vec<Value> = names
            .iter()
            .map(|n| json!({"Name": n, "Unit": "Count"}))
            .collect();
        json!({
            "Messages": self.messages.len(),
            "MessagesFailed": failed + gone,
            "RangesGone": gone,
            "StreamsCaughtUp": streams,
            "Applied": applied,
            "Parked": parked,
            "_aws": {
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [[]],
                    "Metrics": metrics,
                }],
            },
        })
    }

    /// Logs each message's outcome (`tracing`): caught up (info), gone
    /// (error, ending with `rebuild`: what the operator runs to rebuild the
    /// read model) or failed (warn: the message comes back).
    pub fn log(&self, rebuild: &str) {
        for (message_id, outcome) in &self.messages {
            match outcome {
                MessageOutcome::Done {
                    streams,
                    applied,
                    parked,
                } => tracing::info!(
                    message_id,
                    streams = streams.len(),
                    applied,
                    parked,
                    "streams of a failed batch caught up from the events table"
                ),
                MessageOutcome::Gone(reason) => tracing::error!(
                    message_id,
                    %reason,
                    "the streams of this batch need a rebuild: the stream no longer holds its records, so they cannot be named; {rebuild}"
                ),
                MessageOutcome::Failed(reason) => {
                    tracing::warn!(message_id, %reason, "batch not reconciled; the message comes back")
                }
            }
        }
    }
}

/// Why an SQS event cannot be read at all (the invocation fails).
#[derive(Debug, thiserror::Error)]
#[error("not an SQS event: {0}")]
pub struct NotSqs(#[from] serde_json::Error);

/// The reconciler's handler: for each SQS message (a Lambda on-failure
/// record), reads its range of the stream again, and applies each stream of
/// its records from the events table to its end (see the module docs).
pub async fn reconcile<P: Projection, St: RowStore<P::Row>>(
    applier: &mut Applier<P, St>,
    reader: &dyn RangeReader,
    event: &str,
) -> Result<ReconcileReport, NotSqs> {
    #[derive(Deserialize)]
    struct Sqs {
        #[serde(rename = "Records")]
        records: Vec<Message>,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(rename = "messageId")]
        message_id: String,
        body: String,
    }
    #[derive(Deserialize)]
    struct OnFailure {
        #[serde(rename = "DDBStreamBatchInfo")]
        info: BatchInfo,
    }
    let sqs: Sqs = serde_json::from_str(event)?;
    let mut report = ReconcileReport::default();
    for message in sqs.records {
        let outcome = match serde_json::from_str::<OnFailure>(&message.body) {
            Ok(record) => reconcile_range(applier, reader, &record.info).await,
            Err(e) => MessageOutcome::Failed(format!(
                "the message is not a DynamoDB stream on-failure record: {e}"
            )),
        };
        report.messages.push((message.message_id, outcome));
    }
    Ok(report)
}

/// One range: read again, its streams caught up.
pub async fn reconcile_range<P: Projection, St: RowStore<P::Row>>(
    applier: &mut Applier<P, St>,
    reader: &dyn RangeReader,
    info: &BatchInfo,
) -> MessageOutcome {
    let records = match reader.read(info).await {
        Ok(records) => records,
        Err(RangeFailure::Gone(reason)) => return MessageOutcome::Gone(reason),
        Err(RangeFailure::Failed(reason)) => return MessageOutcome::Failed(reason),
    };
    let streams: Vec<String> = records
        .iter()
        .filter_map(|r| match classify(r) {
            Classified::Event(e) => Some(e.event.stream_id.as_str().to_owned()),
            Classified::DeadLetter(_) => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let report = applier.catch_up(&streams).await;
    if let Some((stream, event_id, error)) = report.failures().next() {
        return MessageOutcome::Failed(format!(
            "stream {stream:?} from event {event_id}: {}",
            evs_core::describe_chain(error)
        ));
    }
    MessageOutcome::Done {
        streams,
        applied: report.applied(),
        parked: report.parked().count() as u64,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, RecordedEvent, StreamId};
    use evs_projection::{MemoryRowStore, RowKey};

    use super::*;

    /// Events counted per stream; an event named `Refused` is refused.
    struct Counts;

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    impl Projection for Counts {
        type Row = u64;
        type Error = Refused;

        fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, Refused> {
            Ok(vec![RowKey::of_stream("counts", event)])
        }

        fn apply(
            &self,
            event: &RecordedEvent,
            _key: &RowKey,
            row: &mut Option<u64>,
        ) -> Result<(), Refused> {
            if event.name == "Refused" {
                return Err(Refused);
            }
            *row = Some(row.unwrap_or(0) + 1);
            Ok(())
        }
    }

    async fn table_with(events: &[(&str, &str)]) -> MemoryStore {
        let table = MemoryStore::new();
        for (stream, name) in events {
            table
                .append(
                    &StreamId::new(*stream).unwrap(),
                    ExpectedVersion::Any,
                    &[NewEvent::new(*name, json!({}))],
                )
                .await
                .unwrap();
        }
        table
    }

    /// Ranges served from a list of records; one range is gone.
    struct Ranges {
        records: Vec<Value>,
    }

    #[async_trait]
    impl RangeReader for Ranges {
        async fn read(&self, batch: &BatchInfo) -> Result<Vec<Value>, RangeFailure> {
            if batch.shard_id == "gone" {
                return Err(RangeFailure::Gone("trimmed".into()));
            }
            let seq = |r: &Value| {
                r["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .unwrap()
                    .parse::<u128>()
                    .unwrap()
            };
            let (from, to) = (
                batch.start_sequence_number.parse::<u128>().unwrap(),
                batch.end_sequence_number.parse::<u128>().unwrap(),
            );
            Ok(self
                .records
                .iter()
                .filter(|r| (from..=to).contains(&seq(r)))
                .cloned()
                .collect())
        }
    }

    fn on_failure(id: &str, shard: &str, start: &Value, end: &Value) -> Value {
        let body = json!({
            "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
            "version": "1.0",
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": start,
                "endSequenceNumber": end,
                "approximateArrivalOfFirstRecord": "2026-12-07T10:00:00Z",
                "approximateArrivalOfLastRecord": "2026-12-07T10:00:00Z",
                "batchSize": 2,
                "streamArn": "arn:aws:dynamodb:eu-west-1:123456789012:table/events/stream/2026-12-07T00:00:00.000",
            },
        });
        json!({"messageId": id, "body": body.to_string(), "eventSource": "aws:sqs", "receiptHandle": "h"})
    }

    #[test]
    fn an_invocation_is_told_by_its_shape() {
        let stream = json!({"Records": [{"eventSource": "aws:dynamodb", "eventName": "INSERT"}]});
        let sqs = json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m"}]});
        assert_eq!(invocation(&stream.to_string()), Invocation::Stream);
        assert_eq!(invocation(&sqs.to_string()), Invocation::Queue);
        for other in ["", "{}", "[]", r#"{"Records": []}"#, r#"{"Records": 5}"#] {
            assert_eq!(invocation(other), Invocation::Stream, "{other:?}");
        }
    }

    #[tokio::test]
    async fn the_reconciler_catches_up_the_streams_of_a_range_and_fails_a_gone_one() {
        let table = table_with(&[
            ("order-1", "Placed"),
            ("order-2", "Placed"),
            ("order-1", "Paid"),
            ("order-3", "Placed"),
        ])
        .await;
        let (records, _) = table.changes(0, usize::MAX);
        let seq = |i: usize| records[i]["dynamodb"]["SequenceNumber"].clone();
        let store = MemoryRowStore::new();
        let events: Arc<dyn EventStore> = Arc::new(table.clone());
        let mut applier = Applier::new(Counts, store.clone()).with_table(events);
        // the live driver gave up on records 1 and 2 (order-2's 1, order-1's 2)
        let event = json!({"Records": [
            on_failure("m-1", "s", &seq(1), &seq(2)),
            on_failure("m-2", "gone", &seq(3), &seq(3)),
            {"messageId": "m-3", "body": "not json", "eventSource": "aws:sqs"},
        ]})
        .to_string();
        assert_eq!(invocation(&event), Invocation::Queue);
        let reader = Ranges {
            records: records.clone(),
        };
        let report = reconcile(&mut applier, &reader, &event).await.unwrap();
        assert_eq!(
            report.response(),
            json!({"batchItemFailures": [{"itemIdentifier": "m-2"}, {"itemIdentifier": "m-3"}]})
        );
        assert!(
            matches!(&report.messages[0].1, MessageOutcome::Done { streams, applied: 3, .. } if streams == &["order-1", "order-2"])
        );
        assert!(matches!(report.messages[1].1, MessageOutcome::Gone(_)));
        let ledger = store.ledger();
        assert_eq!(
            (ledger["order-1"].version, ledger["order-2"].version),
            (2, 1)
        );
        assert!(
            !ledger.contains_key("order-3"),
            "a gone range's streams are unknown"
        );
        let line = report.emf_line("evs/test", 0);
        assert_eq!(
            (
                line["Messages"].clone(),
                line["MessagesFailed"].clone(),
                line["RangesGone"].clone()
            ),
            (json!(3), json!(2), json!(1))
        );
        // the same message again: nothing more applied
        let again = reconcile(&mut applier, &reader, &event).await.unwrap();
        assert!(matches!(
            &again.messages[0].1,
            MessageOutcome::Done { applied: 0, .. }
        ));
        // not an SQS event at all
        assert!(reconcile(&mut applier, &reader, "{}").await.is_err());
    }

    #[tokio::test]
    async fn a_refused_event_parks_its_stream_and_the_message_is_done() {
        let table = table_with(&[
            ("acct-1", "Refused"),
            ("acct-1", "Placed"),
            ("acct-2", "Placed"),
        ])
        .await;
        let (records, _) = table.changes(0, usize::MAX);
        let seq = |i: usize| records[i]["dynamodb"]["SequenceNumber"].clone();
        let store = MemoryRowStore::new();
        let events: Arc<dyn EventStore> = Arc::new(table.clone());
        let mut applier = Applier::new(Counts, store.clone()).with_table(events);
        let event = json!({"Records": [on_failure("m-1", "s", &seq(0), &seq(2))]}).to_string();
        let reader = Ranges { records };
        let report = reconcile(&mut applier, &reader, &event).await.unwrap();
        assert_eq!(report.response(), json!({"batchItemFailures": []}));
        assert!(matches!(
            &report.messages[0].1,
            MessageOutcome::Done {
                applied: 1,
                parked: 1,
                ..
            }
        ));
        assert_eq!(report.emf_line("evs/test", 0)["Parked"], 1);
        let ledger = store.ledger();
        assert_eq!(
            ledger["acct-1"].parked.as_ref().map(|p| p.event_id),
            Some(1)
        );
        assert_eq!(ledger["acct-2"].version, 1);
    }
}
