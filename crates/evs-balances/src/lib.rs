//! A worked example of `evs-projection`: **account balances**, a read model
//! in a DynamoDB table (one item per account: `StreamId`, `Version`,
//! `State.balance`), rebuilt from the archive by the replay driver and kept
//! live from the events table's DynamoDB Stream by a Lambda of its own (the
//! live driver, `src/main.rs`; deployed by `template-balances.yaml`).
//!
//! The principal type is [`Balances`], the projection: `Deposited` adds the
//! event's `amount`, `Withdrawn` subtracts it, any other event leaves the
//! balance as it is. [`handle`] is the Lambda's handler as a plain function
//! (the main wires the runtime to it); `examples/handoff.rs` runs the
//! handoff offline (`make run`).

use evs_core::RecordedEvent;
use evs_projection::live::{apply_event, BatchError, LiveReport};
use evs_projection::{Applier, Projection, StateStore};
use serde::{Deserialize, Serialize};

/// The CloudWatch metrics namespace of the live driver.
pub const NAMESPACE: &str = "evs/balances";

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
    type State = Account;
    type Error = NoAmount;

    fn apply(&self, account: &mut Account, event: &RecordedEvent) -> Result<(), NoAmount> {
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

/// The live driver's handler: applies one Lambda DynamoDB Streams event (its
/// JSON text) and gives the report, whose [`LiveReport::response`] is the
/// Lambda's answer (`batchItemFailures`) and [`LiveReport::emf_line`] its
/// metrics. An event that is not a batch of records is an error (the
/// invocation fails; Lambda retries it).
pub async fn handle<St: StateStore<Account>>(
    applier: &mut Applier<Balances, St>,
    event: &str,
    now_ms: i64,
) -> Result<LiveReport, BatchError> {
    apply_event(applier, event, now_ms).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamId};
    use evs_projection::{Commit, MemoryStateStore, StoreError, Versioned};
    use serde_json::json;

    use super::*;

    async fn table_with(events: &[(&str, &str, i64)]) -> MemoryStore {
        let table = MemoryStore::new();
        for (stream, name, amount) in events {
            table
                .append(
                    &StreamId::new(*stream).unwrap(),
                    ExpectedVersion::Any,
                    &[NewEvent::new(*name, json!({ "amount": amount }))],
                )
                .await
                .unwrap();
        }
        table
    }

    fn event_text(records: &[serde_json::Value]) -> String {
        json!({ "Records": records }).to_string()
    }

    fn balances(store: &MemoryStateStore<Account>) -> Vec<(String, u64, i64)> {
        store
            .snapshot()
            .into_iter()
            .map(|(s, v)| (s, v.version, v.state.balance))
            .collect()
    }

    #[tokio::test]
    async fn a_batch_is_applied_once_however_often_it_comes() {
        let table = table_with(&[
            ("acct-1", "Deposited", 100),
            ("acct-2", "Deposited", 7),
            ("acct-1", "Withdrawn", 30),
            ("acct-1", "Renamed", 0),
        ])
        .await;
        let (records, _) = table.changes(0, usize::MAX);
        let store = MemoryStateStore::new();
        let mut applier = Applier::new(Balances, store.clone());
        let text = event_text(&records);
        let report = handle(&mut applier, &text, 0).await.unwrap();
        assert_eq!(report.response(), json!({ "batchItemFailures": [] }));
        assert_eq!((report.records_in, report.batch.applied()), (4, 4));
        let expected = vec![("acct-1".into(), 3, 70), ("acct-2".into(), 1, 7)];
        assert_eq!(balances(&store), expected);
        // delivered again (a retry), and by a restarted driver
        handle(&mut applier, &text, 0).await.unwrap();
        let mut restarted = Applier::new(Balances, store.clone());
        let again = handle(&mut restarted, &text, 0).await.unwrap();
        assert_eq!((again.batch.applied(), again.batch.skipped()), (0, 4));
        assert_eq!(balances(&store), expected);
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
        let store = MemoryStateStore::new();
        let mut applier = Applier::new(Balances, store.clone());
        let report = handle(&mut applier, &text, 0).await.unwrap();
        assert!(!report.dead_letters.is_empty(), "{report:?}");
        assert!(report.retry.is_empty(), "{report:?}");
        assert!(report.batch.applied() > 0);
        assert!(balances(&store).iter().all(|(_, v, b)| *v > 0 && *b == 0));
        // not a batch at all: the invocation fails
        for bad in ["", "[]", "{\"Records\": 5}", "{}"] {
            assert!(handle(&mut applier, bad, 0).await.is_err(), "{bad:?}");
        }
    }

    /// A store whose commits of one stream fail.
    struct Failing {
        inner: MemoryStateStore<Account>,
        stream: &'static str,
    }

    #[async_trait]
    impl StateStore<Account> for Failing {
        async fn load(&self, stream: &str) -> Result<Option<Versioned<Account>>, StoreError> {
            self.inner.load(stream).await
        }
        async fn commit(
            &self,
            stream: &str,
            expected: u64,
            next: &Versioned<Account>,
        ) -> Result<Commit, StoreError> {
            if stream == self.stream {
                return Err(StoreError::Backend {
                    message: "throttled".into(),
                    transient: true,
                    source: None,
                });
            }
            self.inner.commit(stream, expected, next).await
        }
        async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.inner.versions().await
        }
    }

    #[tokio::test]
    async fn a_failed_stream_is_retried_from_its_first_record_and_the_rest_is_kept() {
        let table = table_with(&[
            ("acct-1", "Deposited", 5),
            ("acct-2", "Deposited", 1),
            ("acct-2", "Deposited", 2),
            ("acct-1", "Deposited", 5),
        ])
        .await;
        let (mut records, _) = table.changes(0, usize::MAX);
        // A record that is not an event before the failure and one after.
        let junk = json!({ "eventName": "INSERT", "eventID": "junk" });
        records.insert(0, junk.clone());
        records.push(junk);
        let inner = MemoryStateStore::new();
        let failing = Failing {
            inner: inner.clone(),
            stream: "acct-2",
        };
        let events_table: Arc<dyn EventStore> = Arc::new(table);
        let mut applier = Applier::new(Balances, failing).with_table(Arc::clone(&events_table));
        let report = handle(&mut applier, &event_text(&records), 0)
            .await
            .unwrap();
        let second = records[2]["dynamodb"]["SequenceNumber"].clone();
        assert_eq!(
            report.response(),
            json!({ "batchItemFailures": [{ "itemIdentifier": second }] })
        );
        assert_eq!(report.first_retry, 2);
        assert_eq!(balances(&inner), vec![("acct-1".into(), 2, 10)]);
        // The trailing dead letter comes again with the retry: only the
        // first is behind the retry point.
        assert_eq!(
            (report.dead_letters.len(), report.dead_letters_before_retry),
            (2, 1)
        );
        // Lambda retries from there; acct-1's event 2 comes again and is skipped
        let mut healed = Applier::new(Balances, inner.clone()).with_table(events_table);
        let retried = handle(&mut healed, &event_text(&records[2..]), 0)
            .await
            .unwrap();
        assert_eq!((retried.batch.applied(), retried.batch.skipped()), (2, 1));
        assert_eq!(retried.dead_letters_before_retry, 1);
        assert_eq!(
            balances(&inner),
            vec![("acct-1".into(), 2, 10), ("acct-2".into(), 2, 3)]
        );
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
