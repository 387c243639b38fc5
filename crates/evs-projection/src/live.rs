//! The live driver: DynamoDB Streams records → applied events, and the
//! records to retry.
//!
//! One batch is what a Lambda on the events table's stream receives (its own
//! event source mapping, beside the archiver's) or what the pump's stream
//! reader hands out. Each record is read by the archiver's own per-record
//! decoder (`evs_archiver::record`, from the event's text as the archiver
//! Lambda reads it, or from a record's tree): a record that is not an event
//! is a dead letter, reported and never retried, so it cannot block a shard
//! (if it hid an event, that stream's next event shows the hole, and the
//! [`Applier`] reads it from the table). The events are applied per stream
//! ([`Applier::apply_batch`]); a stream that fails is reported from its first
//! record not applied (`batchItemFailures`, by `SequenceNumber`), so Lambda
//! retries from there: order holds, and whatever is redelivered that was
//! already applied is skipped by its stream's ledger. A stream whose event
//! the projection refuses is parked (recorded in the store) and never
//! retried: the rest of the shard goes on.

use std::collections::HashMap;

use evs_archive::DeadLetter;
/// Why a Lambda event is not a batch of stream records (a bad *record* is
/// never this error: it is a dead letter).
pub use evs_archiver::record::BatchError;
use evs_archiver::record::{classify, parse_batch_json, Classified};
use serde_json::{json, Value};

use crate::apply::{Applier, BatchReport};
use crate::projection::Projection;
use crate::store::RowStore;

/// What a batch of stream records did.
#[derive(Debug, Default)]
pub struct LiveReport {
    /// What the events did, stream by stream.
    pub batch: BatchReport,
    /// Records that are not events, with why.
    pub dead_letters: Vec<DeadLetter>,
    /// The `SequenceNumber`s of the records to retry: for each failed stream,
    /// its first record not applied. In record order.
    pub retry: Vec<String>,
    /// The index of the first record to retry (the batch's length when none).
    pub first_retry: usize,
    /// How many of [`Self::dead_letters`] lie before [`Self::first_retry`]:
    /// the ones a driver that retries from there will not see again.
    pub dead_letters_before_retry: usize,
    /// The age of the oldest event (now minus its timestamp, as the
    /// archiver's `OldestRecordAge` is), when the batch holds events.
    pub oldest_age_ms: Option<i64>,
    /// Records in the batch.
    pub records_in: usize,
}

impl LiveReport {
    /// The Lambda response: `{"batchItemFailures": [{"itemIdentifier": …}]}`.
    pub fn response(&self) -> Value {
        let failures: Vec<Value> = self
            .retry
            .iter()
            .map(|seq| json!({ "itemIdentifier": seq }))
            .collect();
        json!({ "batchItemFailures": failures })
    }

    /// The batch as one CloudWatch Embedded Metric Format line in
    /// `namespace`: `RecordsIn`, `Applied`, `Skipped`, `DeadLettered`,
    /// `BatchItemFailures` and, when the batch holds events,
    /// `OldestRecordAge` (the live driver's lag); `Parked` (streams this
    /// batch parked) and `Held` (events of parked streams waiting) for an
    /// alarm.
    pub fn emf_line(&self, namespace: &str, now_ms: i64) -> Value {
        let mut metrics = vec![
            json!({"Name": "RecordsIn", "Unit": "Count"}),
            json!({"Name": "Applied", "Unit": "Count"}),
            json!({"Name": "Skipped", "Unit": "Count"}),
            json!({"Name": "DeadLettered", "Unit": "Count"}),
            json!({"Name": "BatchItemFailures", "Unit": "Count"}),
            json!({"Name": "Parked", "Unit": "Count"}),
            json!({"Name": "Held", "Unit": "Count"}),
            json!({"Name": "Commits", "Unit": "Count"}),
            json!({"Name": "Conflicts", "Unit": "Count"}),
        ];
        let mut line = json!({
            "RecordsIn": self.records_in,
            "Applied": self.batch.applied(),
            "Skipped": self.batch.skipped(),
            "DeadLettered": self.dead_letters.len(),
            "BatchItemFailures": self.retry.len(),
            "Parked": self.batch.parked().count(),
            "Held": self.batch.held(),
            "Commits": self.batch.commits,
            "Conflicts": self.batch.conflicts,
        });
        if let Some(age) = self.oldest_age_ms {
            metrics.push(json!({"Name": "OldestRecordAge", "Unit": "Milliseconds"}));
            line["OldestRecordAge"] = json!(age);
        }
        line["_aws"] = json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[]],
                "Metrics": metrics,
            }],
        });
        line
    }
}

/// Applies a Lambda DynamoDB Streams event, given as its JSON text (what the
/// Lambda receives), read as the archiver Lambda reads it
/// (`parse_batch_json`: each record from its text, no JSON tree for an
/// event). An event that is not `{"Records": [...]}` is an error: the
/// invocation fails and Lambda retries.
pub async fn apply_event<P, St>(
    applier: &mut Applier<P, St>,
    event: &str,
    now_ms: i64,
) -> Result<LiveReport, BatchError>
where
    P: Projection,
    St: RowStore<P::Row>,
{
    Ok(apply_classified(applier, parse_batch_json(event)?, now_ms).await)
}

/// Applies a batch of stream records (each in the shape of a record of a
/// DynamoDB Streams Lambda event, in stream order), as [`apply_event`] does.
/// `now_ms` is the reader's clock, for [`LiveReport::oldest_age_ms`].
pub async fn apply_records<P, St>(
    applier: &mut Applier<P, St>,
    records: &[Value],
    now_ms: i64,
) -> LiveReport
where
    P: Projection,
    St: RowStore<P::Row>,
{
    apply_classified(applier, records.iter().map(classify).collect(), now_ms).await
}

/// Applies classified records (in stream order).
async fn apply_classified<P, St>(
    applier: &mut Applier<P, St>,
    records: Vec<Classified>,
    now_ms: i64,
) -> LiveReport
where
    P: Projection,
    St: RowStore<P::Row>,
{
    let mut report = LiveReport {
        records_in: records.len(),
        ..LiveReport::default()
    };
    let total = records.len();
    let mut events = Vec::with_capacity(records.len());
    let mut dead_at = Vec::new();
    // stream → (record index, event id, sequence number), in record order
    let mut positions: HashMap<String, Vec<(usize, u64, String)>> = HashMap::new();
    for (index, record) in records.into_iter().enumerate() {
        match record {
            Classified::Event(archived) => {
                let seq = archived.sequence_number.as_str().to_owned();
                let record_id = archived.record_id.clone();
                match archived.into_table_event() {
                    Ok(event) => {
                        let age = now_ms.saturating_sub(event.timestamp_ms);
                        report.oldest_age_ms =
                            Some(report.oldest_age_ms.map_or(age, |a| a.max(age)));
                        positions
                            .entry(event.stream_id.as_str().to_owned())
                            .or_default()
                            .push((index, event.event_id, seq));
                        events.push(event);
                    }
                    // A payload the serializer refuses: not an event either.
                    Err(e) => {
                        dead_at.push(index);
                        report.dead_letters.push(DeadLetter {
                        reason: evs_archive::DeadLetterReason::MalformedRecord,
                        detail: format!("the payload cannot be written as JSON text: {e}"),
                        raw: json!({ "eventID": record_id, "dynamodb": { "SequenceNumber": seq } }),
                        });
                    }
                }
            }
            Classified::DeadLetter(dead) => {
                dead_at.push(index);
                report.dead_letters.push(*dead);
            }
        }
    }
    report.batch = applier.apply_batch(&events).await;
    let mut retry: Vec<(usize, String)> = Vec::new();
    for (stream, failed_id, _) in report.batch.failures() {
        let Some(records) = positions.get(stream) else {
            continue;
        };
        // the stream's first record at or after the first event not applied
        // (or its first record, when that event was one read from the table)
        let first = records
            .iter()
            .filter(|(_, id, _)| *id >= failed_id)
            .min_by_key(|(index, _, _)| *index)
            .or_else(|| records.first());
        if let Some((index, _, seq)) = first {
            retry.push((*index, seq.clone()));
        }
    }
    retry.sort();
    report.first_retry = retry.first().map_or(total, |(index, _)| *index);
    report.dead_letters_before_retry = dead_at.iter().filter(|i| **i < report.first_retry).count();
    report.retry = retry.into_iter().map(|(_, seq)| seq).collect();
    report
}
