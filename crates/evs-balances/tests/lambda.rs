//! The built `evs-balances` binary driven as Lambda drives it, through the
//! Lambda Runtime API (a small HTTP server here), on the emulator: the live
//! driver applies the first records of the events table's stream and gives
//! up on the rest; an SQS message of the on-failure queue naming that range
//! goes to the reconciler (the same binary), which catches the accounts up
//! from the table; a range the stream does not hold fails its message. The
//! read model then equals the fold of the table, each event once.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};

use evs_balances::{balances, Account, Balances};
use evs_core::{EventStore, ExpectedVersion, NewEvent, ReadRequest, StreamId};
use evs_dynamodb::DynamoStore;
use evs_projection::{Applier, DynamoLayout, DynamoRowStore, MemoryRowStore};
use evs_pump::range::{read_range, ShardRange};
use evs_testkit::lambda::RuntimeApi;
use evs_testkit::{unique_name, Moto};
use serde_json::{json, Value};

/// Every record of the stream, in each shard's order.
async fn stream_records(moto: &Moto, arn: &str) -> Vec<Value> {
    let client = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
    let described = client
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for shard in described.stream_description().unwrap().shards() {
        let range = ShardRange {
            stream_arn: arn.to_owned(),
            shard_id: shard.shard_id().unwrap().to_owned(),
            start: shard
                .sequence_number_range()
                .and_then(|r| r.starting_sequence_number())
                .unwrap()
                .to_owned(),
            end: "9".repeat(40),
        };
        out.extend(read_range(&client, &range).await.unwrap());
    }
    out
}

/// The balances the table's events give, each applied once.
async fn fold(table: &DynamoStore, streams: &[String]) -> Vec<(String, u64, i64)> {
    let mut events = Vec::new();
    for stream in streams {
        events.extend(
            table
                .read(
                    &StreamId::new(stream.clone()).unwrap(),
                    ReadRequest::after(0),
                )
                .await
                .unwrap(),
        );
    }
    let store = MemoryRowStore::<Account>::new();
    Applier::new(Balances, store.clone())
        .apply_batch(&events)
        .await;
    balances(&store).await.unwrap()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_reconciles_a_batch_the_live_driver_gave_up_on() {
    let Some(moto) = Moto::shared() else { return };
    let client = moto.dynamodb().await;
    let events_table = DynamoStore::new(client.clone(), unique_name("events"));
    events_table.create_table().await.unwrap();
    let arn = events_table.stream_arn().await.unwrap().unwrap();
    let read_model = DynamoRowStore::new(client, unique_name("balances"), DynamoLayout::PerStream);
    read_model.create_table().await.unwrap();
    let mut rng = fastrand::Rng::with_seed(23);
    println!("seed 23");
    let streams: Vec<String> = (0..5).map(|n| format!("acct-{n}")).collect();
    for _ in 0..30 {
        let stream = &streams[rng.usize(..streams.len())];
        let name = if rng.bool() { "Deposited" } else { "Withdrawn" };
        events_table
            .append(
                &StreamId::new(stream.clone()).unwrap(),
                ExpectedVersion::Any,
                &[NewEvent::new(name, json!({"amount": rng.i64(1..1000)}))],
            )
            .await
            .unwrap();
    }
    let records = stream_records(moto, &arn).await;
    assert_eq!(records.len(), 30);

    let api = RuntimeApi::start();
    let mut command = Command::new(env!("CARGO_BIN_EXE_evs-balances"));
    command
        .envs(moto.env())
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("127.0.0.1:{}", api.port()),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "balances")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("EVS_BALANCES_TABLE", read_model.table())
        .env("EVS_EVENTS_TABLE", events_table.table())
        .stdout(Stdio::null());
    let _function = Killed(command.spawn().unwrap());

    let none = json!({ "batchItemFailures": [] });
    // the live driver applies the first 10 records; Lambda gave up on the rest
    let batch = json!({ "Records": &records[..10] });
    assert_eq!(api.invoke("1", &batch), none, "the live driver");
    let seq = |r: &Value| r["dynamodb"]["SequenceNumber"].clone();
    let shard = {
        let c = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
        let d = c.describe_stream().stream_arn(&arn).send().await.unwrap();
        d.stream_description().unwrap().shards()[0]
            .shard_id()
            .unwrap()
            .to_owned()
    };
    let on_failure = |shard: &str| {
        json!({"DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": seq(&records[10]),
            "endSequenceNumber": seq(&records[29]),
            "batchSize": 20,
            "streamArn": arn,
        }})
        .to_string()
    };
    let sqs = json!({"Records": [
        {"messageId": "m-1", "body": on_failure(&shard), "eventSource": "aws:sqs"},
        {"messageId": "m-2", "body": on_failure("shardId-00000000000000000000-00000000"), "eventSource": "aws:sqs"},
    ]});
    assert_eq!(
        api.invoke("2", &sqs),
        json!({"batchItemFailures": [{"itemIdentifier": "m-2"}]}),
        "the reconciler: a range the stream does not hold comes back"
    );
    let want = fold(&events_table, &streams).await;
    assert!(!want.is_empty());
    assert_eq!(balances(&read_model).await.unwrap(), want);
}
