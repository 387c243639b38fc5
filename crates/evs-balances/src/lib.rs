//! A worked example of `evs-projection` for the simplest read model, one
//! row per stream: **account balances**, a read model in a DynamoDB table
//! in the per-stream layout (one item per account: `StreamId`, `Version`,
//! `State.balance`; [`evs_projection::DynamoLayout::PerStream`]), rebuilt
//! from the archive by the replay driver and kept live from the events
//! table's DynamoDB Stream by a Lambda of its own (the live driver,
//! `src/main.rs`; deployed by `template.yaml`). Read models whose rows span
//! streams are the `evs-orders` example's.
//!
//! The principal type is [`Balances`], the projection: each event touches
//! its own stream's row ([`RowKey::of_stream`]); `Deposited` adds the
//! event's `amount`, `Withdrawn` subtracts it, any other event leaves the
//! balance as it is. An event without a whole amount parks its account. [`handle`] is the Lambda's handler as a plain function
//! (the main wires the runtime to it); `examples/handoff.rs` runs the
//! handoff offline (`make run`).
//!
//! **The reconciler.** A batch the live driver gives up on (retries or
//! record age exhausted) goes to its on-failure queue as Lambda's record of
//! the batch's shard and sequence range. The same binary, invoked with SQS
//! messages ([`invocation`]), is the reconciler of that queue:
//! `evs_pump::reconcile`, re-exported here ([`reconcile`], ...), reads each
//! range from the stream again, and applies each account stream of its
//! records from the events table to its end. A range the stream no longer
//! holds (older than 24 hours) fails its message into the queue's
//! dead-letter queue (alarmed): those accounts need a rebuild from the
//! archive.

use evs_core::RecordedEvent;
use evs_projection::live::{apply_event, BatchError, LiveReport};
use evs_projection::{Applier, Projection, RowKey, RowStore};
use serde::{Deserialize, Serialize};

pub use evs_pump::reconcile::{
    invocation, reconcile, BatchInfo, Invocation, MessageOutcome, NotSqs, RangeFailure,
    RangeReader, ReconcileReport, StreamRanges,
};

/// The CloudWatch metrics namespace of both functions.
pub const NAMESPACE: &str = "evs/balances";

/// The read model's name (the model of every row).
pub const MODEL: &str = "balances";

/// One account's state in the read model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The balance, in the smallest unit of the currency.
    pub balance: i64,
}

/// The projection: a balance per account stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Balances;

/// An event the projection cannot count.
#[derive(Debug, thiserror::Error)]
#[error("{name} event {event_id} has no whole amount (payload field \"amount\")")]
pub struct NoAmount {
    /// The event's name.
    pub name: String,
    /// Its `EventId`.
    pub event_id: u64,
}

impl Projection for Balances {
    type Row = Account;
    type Error = NoAmount;

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, NoAmount> {
        // every event of an account keeps its row (and version) current
        Ok(vec![RowKey::of_stream(MODEL, event)])
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        _key: &RowKey,
        row: &mut Option<Account>,
    ) -> Result<(), NoAmount> {
        let account = row.get_or_insert_with(Account::default);
        let sign = match event.name.as_str() {
            "Deposited" => 1,
            "Withdrawn" => -1,
            _ => return Ok(()),
        };
        let amount = event.payload["amount"].as_i64().ok_or_else(|| NoAmount {
            name: event.name.clone(),
            event_id: event.event_id,
        })?;
        account.balance = account.balance.saturating_add(sign * amount);
        Ok(())
    }
}

/// Every account's balance and version in `store`: (account, version,
/// balance), by account.
pub async fn balances<St: RowStore<Account>>(
    store: &St,
) -> Result<Vec<(String, u64, i64)>, evs_projection::StoreError> {
    let versions: std::collections::HashMap<String, u64> =
        store.versions().await?.into_iter().collect();
    Ok(store
        .rows()
        .await?
        .into_iter()
        .map(|(key, account)| {
            let version = versions.get(&key.key).copied().unwrap_or(0);
            (key.key, version, account.balance)
        })
        .collect())
}

/// The live driver's handler: applies one Lambda DynamoDB Streams event (its
/// JSON text) and gives the report, whose [`LiveReport::response`] is the
/// Lambda's answer (`batchItemFailures`) and [`LiveReport::emf_line`] its
/// metrics. An event that is not a batch of records is an error (the
/// invocation fails; Lambda retries it).
pub async fn handle<St: RowStore<Account>>(
    applier: &mut Applier<Balances, St>,
    event: &str,
    now_ms: i64,
) -> Result<LiveReport, BatchError> {
    apply_event(applier, event, now_ms).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;
    use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamId};
    use evs_projection::{Commit, Ledger, MemoryRowStore, StoreError, Stored, Unit};
    use serde_json::json;

    use super::*;

    async fn table_with(events: &[(&str, &str, serde_json::Value)]) -> MemoryStore {
        let table = MemoryStore::new();
        for (stream, name, payload) in events {
            table
                .append(
                    &StreamId::new(*stream).unwrap(),
                    ExpectedVersion::Any,
                    &[NewEvent::new(*name, payload.clone())],
                )
                .await
                .unwrap();
        }
        table
    }

    fn amount(n: i64) -> serde_json::Value {
        json!({ "amount": n })
    }

    fn event_text(records: &[serde_json::Value]) -> String {
        json!({ "Records": records }).to_string()
    }

    async fn rows(store: &MemoryRowStore<Account>) -> Vec<(String, u64, i64)> {
        balances(store).await.unwrap()
    }

    #[tokio::test]
    async fn a_batch_is_applied_once_however_often_it_comes() {
        let table = table_with(&[
            ("acct-1", "Deposited", amount(100)),
            ("acct-2", "Deposited", amount(7)),
            ("acct-1", "Withdrawn", amount(30)),
            ("acct-1", "Renamed", json!({})),
        ])
        .await;
        let (records, _) = table.changes(0, usize::MAX);
        let store = MemoryRowStore::new();
        let mut applier = Applier::new(Balances, store.clone());
        let text = event_text(&records);
        let report = handle(&mut applier, &text, 0).await.unwrap();
        assert_eq!(report.response(), json!({ "batchItemFailures": [] }));
        assert_eq!((report.records_in, report.batch.applied()), (4, 4));
        let expected = vec![("acct-1".into(), 3, 70), ("acct-2".into(), 1, 7)];
        assert_eq!(rows(&store).await, expected);
        // delivered again (a retry), and by a restarted driver
        handle(&mut applier, &text, 0).await.unwrap();
        let mut restarted = Applier::new(Balances, store.clone());
        let again = handle(&mut restarted, &text, 0).await.unwrap();
        assert_eq!((again.batch.applied(), again.batch.skipped()), (0, 4));
        assert_eq!(rows(&store).await, expected);
    }

    #[tokio::test]
    async fn the_sample_events_apply_and_a_bad_record_is_a_dead_letter() {
        // events/mixed.json: events of order streams (no balances: versions
        // only) and records that are not events
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/mixed.json"
        ))
        .unwrap();
        let store = MemoryRowStore::new();
        let mut applier = Applier::new(Balances, store.clone());
        let report = handle(&mut applier, &text, 0).await.unwrap();
        assert!(!report.dead_letters.is_empty(), "{report:?}");
        assert!(report.retry.is_empty(), "{report:?}");
        assert!(report.batch.applied() > 0);
        assert!(rows(&store).await.iter().all(|(_, v, b)| *v > 0 && *b == 0));
        // not a batch at all: the invocation fails
        for bad in ["", "[]", "{\"Records\": 5}", "{}"] {
            assert!(handle(&mut applier, bad, 0).await.is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_event_without_an_amount_parks_its_account_and_the_others_go_on() {
        let table = table_with(&[
            ("acct-1", "Deposited", amount(5)),
            ("acct-2", "Deposited", json!({ "amount": "ten" })),
            ("acct-2", "Deposited", amount(2)),
            ("acct-1", "Deposited", amount(5)),
        ])
        .await;
        let (records, _) = table.changes(0, usize::MAX);
        let store = MemoryRowStore::new();
        let mut applier = Applier::new(Balances, store.clone());
        let report = handle(&mut applier, &event_text(&records), 0)
            .await
            .unwrap();
        // nothing to retry: the refused event is recorded, not redelivered
        assert_eq!(report.response(), json!({ "batchItemFailures": [] }));
        assert_eq!(rows(&store).await, vec![("acct-1".into(), 2, 10)]);
        let parked = store.parked().await.unwrap();
        assert_eq!(parked.len(), 1, "{parked:?}");
        let (stream, ledger) = &parked[0];
        let why = ledger.parked.as_ref().unwrap();
        assert_eq!(
            (stream.as_str(), ledger.version, why.event_id),
            ("acct-2", 0, 1)
        );
        assert!(why.reason.contains("no whole amount"), "{why:?}");
        assert_eq!(report.emf_line(NAMESPACE, 0)["Parked"], 1);
    }

    /// A store whose commits fail while `failing` is set.
    struct Flaky {
        inner: MemoryRowStore<Account>,
        failing: AtomicBool,
    }

    #[async_trait]
    impl RowStore<Account> for Flaky {
        fn check_row(&self, key: &RowKey, row: &Account) -> Result<(), StoreError> {
            self.inner.check_row(key, row)
        }
        async fn load_ledger(&self, streams: &[String]) -> Result<Vec<Ledger>, StoreError> {
            self.inner.load_ledger(streams).await
        }
        async fn load_rows(&self, keys: &[RowKey]) -> Result<Vec<Stored<Account>>, StoreError> {
            self.inner.load_rows(keys).await
        }
        async fn commit(&self, unit: &Unit<Account>) -> Result<Commit, StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Backend {
                    message: "throttled".into(),
                    transient: true,
                    source: None,
                });
            }
            self.inner.commit(unit).await
        }
        async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.inner.versions().await
        }
        async fn parked(&self) -> Result<Vec<(String, Ledger)>, StoreError> {
            self.inner.parked().await
        }
        async fn rows(&self) -> Result<Vec<(RowKey, Account)>, StoreError> {
            self.inner.rows().await
        }
    }

    #[tokio::test]
    async fn a_failed_commit_is_retried_from_its_first_record() {
        let table = table_with(&[
            ("acct-1", "Deposited", amount(5)),
            ("acct-2", "Deposited", amount(1)),
        ])
        .await;
        let (first, _) = table.changes(0, usize::MAX);
        table
            .append(
                &StreamId::new("acct-2").unwrap(),
                ExpectedVersion::Any,
                &[NewEvent::new("Deposited", amount(2))],
            )
            .await
            .unwrap();
        let (mut records, _) = table.changes(0, usize::MAX);
        // A record that is not an event before the failure and one after.
        let junk = json!({ "eventName": "INSERT", "eventID": "junk" });
        records.insert(0, junk.clone());
        records.push(junk);
        let inner = MemoryRowStore::new();
        let flaky = Arc::new(Flaky {
            inner: inner.clone(),
            failing: AtomicBool::new(false),
        });
        let events_table: Arc<dyn EventStore> = Arc::new(table);
        let mut applier = Applier::new(Balances, Arc::clone(&flaky)).with_table(events_table);
        // the first two events are committed, then the store fails
        handle(&mut applier, &event_text(&first), 0).await.unwrap();
        flaky.failing.store(true, Ordering::SeqCst);
        let report = handle(&mut applier, &event_text(&records), 0)
            .await
            .unwrap();
        let third = records[3]["dynamodb"]["SequenceNumber"].clone();
        assert_eq!(
            report.response(),
            json!({ "batchItemFailures": [{ "itemIdentifier": third }] })
        );
        assert_eq!(report.first_retry, 3);
        // the trailing dead letter comes again with the retry: only the first
        // is behind the retry point
        assert_eq!(
            (report.dead_letters.len(), report.dead_letters_before_retry),
            (2, 1)
        );
        assert_eq!(
            rows(&inner).await,
            vec![("acct-1".into(), 1, 5), ("acct-2".into(), 1, 1)]
        );
        // Lambda retries from there once the store heals
        flaky.failing.store(false, Ordering::SeqCst);
        let retried = handle(&mut applier, &event_text(&records[3..]), 0)
            .await
            .unwrap();
        assert_eq!(retried.batch.applied(), 1);
        assert_eq!(
            rows(&inner).await,
            vec![("acct-1".into(), 1, 5), ("acct-2".into(), 2, 3)]
        );
    }

    /// The stream's records, served by sequence number range.
    struct Ranges(Vec<serde_json::Value>);

    #[async_trait]
    impl RangeReader for Ranges {
        async fn read(&self, batch: &BatchInfo) -> Result<Vec<serde_json::Value>, RangeFailure> {
            let seq = |r: &serde_json::Value| {
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
                .0
                .iter()
                .filter(|r| (from..=to).contains(&seq(r)))
                .cloned()
                .collect())
        }
    }

    #[tokio::test]
    async fn the_reconciler_catches_up_the_accounts_of_a_batch_given_up_on() {
        let table = table_with(&[
            ("acct-1", "Deposited", amount(100)),
            ("acct-2", "Deposited", amount(7)),
            ("acct-1", "Withdrawn", amount(30)),
            ("acct-3", "Deposited", amount(1)),
        ])
        .await;
        let (records, _) = table.changes(0, usize::MAX);
        let store = MemoryRowStore::new();
        let events: Arc<dyn EventStore> = Arc::new(table);
        let mut applier = Applier::new(Balances, store.clone()).with_table(events);
        // the live driver applied the first record and gave up on the next two
        handle(&mut applier, &event_text(&records[..1]), 0)
            .await
            .unwrap();
        let seq = |i: usize| records[i]["dynamodb"]["SequenceNumber"].clone();
        let body = json!({"DDBStreamBatchInfo": {
            "shardId": "s",
            "startSequenceNumber": seq(1),
            "endSequenceNumber": seq(2),
            "streamArn": "arn:aws:dynamodb:eu-west-1:123456789012:table/events/stream/x",
        }});
        let sqs = json!({"Records": [
            {"messageId": "m-1", "body": body.to_string(), "eventSource": "aws:sqs"},
        ]})
        .to_string();
        assert_eq!(invocation(&sqs), Invocation::Queue);
        assert_eq!(invocation(&event_text(&records)), Invocation::Stream);
        let report = reconcile(&mut applier, &Ranges(records), &sqs)
            .await
            .unwrap();
        assert_eq!(report.response(), json!({ "batchItemFailures": [] }));
        assert!(
            matches!(&report.messages[0].1, MessageOutcome::Done { streams, applied: 2, parked: 0 } if streams == &["acct-1", "acct-2"]),
            "{report:?}"
        );
        // acct-3 was in no range given up on: it waits for the live driver
        assert_eq!(
            rows(&store).await,
            vec![("acct-1".into(), 2, 70), ("acct-2".into(), 1, 7)]
        );
        assert_eq!(report.emf_line(NAMESPACE, 0)["Applied"], 2);
    }

    #[test]
    fn the_metrics_line_is_emf() {
        let report = LiveReport {
            records_in: 3,
            oldest_age_ms: Some(1500),
            ..LiveReport::default()
        };
        let line = report.emf_line(NAMESPACE, 1_000);
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(line["OldestRecordAge"], 1500);
        assert_eq!(line["RecordsIn"], 3);
        let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in names {
            assert!(line.get(name).is_some(), "{name}");
        }
    }
}
