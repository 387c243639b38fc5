//! The live projection driver's figures on the emulator (`make bench`; not a
//! test): a private emulator server, a real table and its stream.
//!
//! 1. Throughput: one batch of `LIVE_BENCH_RECORDS` (default 1,000) stream
//!    records over 100 streams, applied by `evs_projection::live` into a
//!    DynamoDB read model (a row per stream, the per-stream layout; each
//!    commit one `TransactWriteItems` of up to 100 rows and ledger entries),
//!    against the loop a user would write: one `UpdateItem ADD` per record
//!    (which double-counts on every retry).
//! 2. Latency: appends one at a time while `evs_pump::run_live` follows the
//!    stream; the time from an append's acknowledgement until the read model
//!    holds that version, p50 and p99.
//!
//! Figures from the emulator measure our code plus moto's (one request at a
//! time), not DynamoDB's.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use evs_core::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use evs_dynamodb::DynamoStore;
use evs_projection::live::apply_records;
use evs_projection::{Applier, DynamoLayout, DynamoRowStore, Projection, RowKey, RowStore};
use evs_pump::{DynamoDbSource, Options, Source, Stop};
use evs_testkit::{unique_name, Moto};
use serde_json::json;

struct Sums;

#[derive(Debug, thiserror::Error)]
#[error("no amount")]
struct NoAmount;

impl Projection for Sums {
    type Row = i64;
    type Error = NoAmount;

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, NoAmount> {
        Ok(vec![RowKey::of_stream("sums", event)])
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        _: &RowKey,
        sum: &mut Option<i64>,
    ) -> Result<(), NoAmount> {
        *sum = Some(sum.unwrap_or(0) + event.payload["amount"].as_i64().ok_or(NoAmount)?);
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let records: usize = std::env::var("LIVE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let moto = Moto::start().expect("the emulator (make venv) is needed");
    let client = moto.dynamodb().await;
    let events = DynamoStore::new(client.clone(), unique_name("bench"));
    events.create_table().await.unwrap();
    let arn = events.stream_arn().await.unwrap().unwrap();
    for n in 0..records {
        events
            .append(
                &StreamId::new(format!("acct-{}", n % 100)).unwrap(),
                ExpectedVersion::Any,
                &[NewEvent::new("Moved", json!({ "amount": n % 7 }))],
            )
            .await
            .unwrap();
    }
    let streams = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
    let mut source = DynamoDbSource::open(streams.clone(), &arn, None).unwrap();
    let mut batch = Vec::new();
    while batch.len() < records {
        match source.next_batch(1000).await.unwrap() {
            Some(b) => batch.extend(b.records),
            None => break,
        }
    }
    assert_eq!(batch.len(), records, "the stream holds every append");

    // 1. Throughput.
    let table: Arc<dyn EventStore> = Arc::new(events.clone());
    let store = DynamoRowStore::new(client.clone(), unique_name("sums"), DynamoLayout::PerStream);
    store.create_table().await.unwrap();
    let mut applier = Applier::new(Sums, store.clone()).with_table(Arc::clone(&table));
    let started = Instant::now();
    let mut applied = 0;
    for chunk in batch.chunks(1000) {
        let report = apply_records(&mut applier, chunk, evs_core::now_ms()).await;
        assert!(report.retry.is_empty(), "{report:?}");
        applied += report.batch.applied();
    }
    let ours = started.elapsed();
    assert_eq!(applied, records as u64);
    let naive = unique_name("naive");
    evs_dynamodb::create_table(
        &client,
        &naive,
        &[(
            "StreamId",
            evs_dynamodb::ScalarAttributeType::S,
            evs_dynamodb::KeyType::Hash,
        )],
        None,
    )
    .await
    .unwrap();
    let started = Instant::now();
    for record in &batch {
        let image = &record["dynamodb"]["NewImage"];
        let stream = image["StreamId"]["S"].as_str().unwrap();
        let amount = image["Payload"]["M"]["amount"]["N"].as_str().unwrap_or("0");
        client
            .update_item()
            .table_name(&naive)
            .key("StreamId", AttributeValue::S(stream.to_owned()))
            .update_expression("ADD Balance :a")
            .expression_attribute_values(":a", AttributeValue::N(amount.to_owned()))
            .send()
            .await
            .unwrap();
    }
    let plain = started.elapsed();
    println!(
        "throughput: {records} records over 100 streams: live driver {:.0} records/s ({:.2} s), per-record UpdateItem loop {:.0} records/s ({:.2} s)",
        records as f64 / ours.as_secs_f64(),
        ours.as_secs_f64(),
        records as f64 / plain.as_secs_f64(),
        plain.as_secs_f64(),
    );

    // 2. Latency, append -> applied, through the stream reader.
    // a table of its own, so the driver starts at its stream's start
    let events = DynamoStore::new(client.clone(), unique_name("latency-events"));
    events.create_table().await.unwrap();
    let arn = events.stream_arn().await.unwrap().unwrap();
    let table: Arc<dyn EventStore> = Arc::new(events.clone());
    let mut source = DynamoDbSource::open(streams, &arn, None).unwrap();
    let latency_store = DynamoRowStore::new(
        client.clone(),
        unique_name("latency"),
        DynamoLayout::PerStream,
    );
    latency_store.create_table().await.unwrap();
    let (stop_handle, stop) = Stop::channel();
    let driver = {
        let (store, table) = (latency_store.clone(), Arc::clone(&table));
        tokio::spawn(async move {
            let mut applier = Applier::new(Sums, store).with_table(table);
            let options = Options {
                batch_size: 1000,
                idle: Duration::from_millis(10),
                ..Options::default()
            };
            evs_pump::run_live(&mut source, &mut applier, &options, stop, &mut |_| {}).await
        })
    };
    let samples: usize = 200;
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples {
        let stream = StreamId::new(format!("lat-{}", n % 10)).unwrap();
        let outcome = events
            .append(
                &stream,
                ExpectedVersion::Any,
                &[NewEvent::new("Moved", json!({ "amount": 1 }))],
            )
            .await
            .unwrap();
        let acked = Instant::now();
        loop {
            let ledger =
                RowStore::<i64>::load_ledger(&latency_store, &[stream.as_str().to_owned()])
                    .await
                    .unwrap();
            if ledger[0].version >= outcome.version {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(acked.elapsed());
    }
    stop_handle.stop();
    driver.await.unwrap().unwrap();
    latencies.sort();
    println!(
        "latency: append acknowledged -> applied, {samples} appends through the stream reader: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
    );
}
