//! The built `evs-orders` binary driven as Lambda drives it, through the
//! Lambda Runtime API (a small HTTP server here), on the emulator: batches
//! of the events table's stream records delivered once, again, and split in
//! two overlapping halves, then an on-failure message to the reconciler;
//! every answer has no `batchItemFailures`, `evs-orders dump` equals the
//! fold of the table, each event once, and `parked`/`resume` see the stream
//! whose event the projection refused.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};

use evs_core::{EventStore, ExpectedVersion, NewEvent, ReadRequest, StreamId};
use evs_dynamodb::DynamoStore;
use evs_orders::{dump_line, Orders, OrdersRow};
use evs_projection::{Applier, MemoryRowStore};
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

/// The rows the table's events give, each applied once, as dump lines.
async fn fold(table: &DynamoStore, streams: &[String]) -> Vec<String> {
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
    let store = MemoryRowStore::<OrdersRow>::new();
    let report = Applier::new(Orders, store.clone())
        .apply_batch(&events)
        .await;
    assert_eq!(
        report.applied() + report.parked().count() as u64,
        events.len() as u64
    );
    store
        .snapshot()
        .iter()
        .map(|(k, r)| dump_line(k, r))
        .collect()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_answers_as_lambda_and_applies_each_event_once() {
    let Some(moto) = Moto::shared() else { return };
    let client = moto.dynamodb().await;
    let events_table = DynamoStore::new(client.clone(), unique_name("events"));
    events_table.create_table().await.unwrap();
    let arn = events_table.stream_arn().await.unwrap().unwrap();
    let read_model = unique_name("orders");
    // `evs-orders init` creates the table; run again, it changes nothing
    for said in ["created table", "exists already; nothing changed"] {
        let init = Command::new(env!("CARGO_BIN_EXE_evs-orders"))
            .envs(moto.env())
            .args(["init", "--read-model", &format!("dynamodb:{read_model}")])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&init.stdout);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        assert!(stdout.contains(said), "{stdout}");
    }
    let described = client
        .describe_table()
        .table_name(&read_model)
        .send()
        .await
        .unwrap();
    let key = described.table().unwrap().key_schema();
    assert_eq!((key.len(), key[0].attribute_name()), (1, "Id"));
    let mut rng = fastrand::Rng::with_seed(21);
    println!("seed 21");
    let streams: Vec<String> = (0..6).map(|n| format!("order-{n}")).collect();
    for n in 0..40 {
        let stream = &streams[rng.usize(..streams.len())];
        let customer = format!("c-{}", rng.u8(0..3));
        let (name, payload) = match rng.u8(0..4) {
            0 => (
                "OrderPlaced",
                json!({"customerId": customer, "totalCents": rng.i64(1..10_000)}),
            ),
            1 => (
                "OrderPaid",
                json!({"customerId": customer, "amountCents": rng.i64(1..10_000)}),
            ),
            2 => ("OrderCancelled", json!({"customerId": customer})),
            _ => ("OrderNoted", json!({"n": n})),
        };
        events_table
            .append(
                &StreamId::new(stream.clone()).unwrap(),
                ExpectedVersion::Any,
                &[NewEvent::new(name, payload)],
            )
            .await
            .unwrap();
    }
    // an event the projection refuses: its stream is parked, the others go on
    events_table
        .append(
            &StreamId::new("order-bad").unwrap(),
            ExpectedVersion::Any,
            &[NewEvent::new(
                "OrderPaid",
                json!({"customerId": 7, "amountCents": 1}),
            )],
        )
        .await
        .unwrap();
    let records = stream_records(moto, &arn).await;
    assert_eq!(records.len(), 41);

    let api = RuntimeApi::start();
    let mut command = Command::new(env!("CARGO_BIN_EXE_evs-orders"));
    command
        .envs(moto.env())
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("127.0.0.1:{}", api.port()),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "orders")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("EVS_READ_MODEL", format!("dynamodb:{read_model}"))
        .env("EVS_EVENTS_TABLE", events_table.table())
        .stdout(Stdio::null());
    let _function = Killed(command.spawn().unwrap());

    let none = json!({ "batchItemFailures": [] });
    let batch = |rs: &[Value]| json!({ "Records": rs });
    assert_eq!(api.invoke("1", &batch(&records)), none, "the batch");
    assert_eq!(api.invoke("2", &batch(&records)), none, "the batch again");
    // two overlapping halves: the first 60%, then the last 60%
    assert_eq!(api.invoke("3", &batch(&records[..24])), none, "first half");
    assert_eq!(api.invoke("4", &batch(&records[16..])), none, "second half");
    // an SQS message of the on-failure queue naming the whole range: the
    // reconciler reads it again and catches its streams up (nothing left)
    let seq = |r: &Value| r["dynamodb"]["SequenceNumber"].clone();
    let shard = {
        let c = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
        let d = c.describe_stream().stream_arn(&arn).send().await.unwrap();
        d.stream_description().unwrap().shards()[0]
            .shard_id()
            .unwrap()
            .to_owned()
    };
    let on_failure = json!({"DDBStreamBatchInfo": {
        "shardId": shard,
        "startSequenceNumber": seq(&records[0]),
        "endSequenceNumber": seq(&records[40]),
        "batchSize": 41,
        "streamArn": arn,
    }});
    let sqs = json!({"Records": [{"messageId": "m-1", "body": on_failure.to_string(), "eventSource": "aws:sqs"}]});
    assert_eq!(api.invoke("5", &sqs), none, "the reconciler");

    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_evs-orders"))
            .envs(moto.env())
            .args(args)
            .args(["--read-model", &format!("dynamodb:{read_model}")])
            .env("EVS_EVENTS_TABLE", events_table.table())
            .output()
            .unwrap()
    };
    // the parked stream is listed, and a resume with the data unchanged parks it again
    let parked = cli(&["parked"]);
    assert!(
        parked.status.success(),
        "{}",
        String::from_utf8_lossy(&parked.stderr)
    );
    let parked: Vec<Value> = String::from_utf8(parked.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (
            &parked[0]["stream"],
            &parked[0]["eventId"],
            &parked[0]["eventName"]
        ),
        (&json!("order-bad"), &json!(1), &json!("OrderPaid"))
    );
    assert!(
        parked[0]["reason"].as_str().unwrap().contains("customerId"),
        "{parked:?}"
    );
    let resumed = cli(&["resume", "order-bad"]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("order-bad parked again at event 1"),
        "{stderr}"
    );
    let not_parked = cli(&["resume", "order-0"]);
    assert!(not_parked.status.success());
    assert_eq!(
        String::from_utf8_lossy(&not_parked.stdout),
        "order-0 is not parked and has every event of the table applied; nothing changed\n"
    );

    let dump = Command::new(env!("CARGO_BIN_EXE_evs-orders"))
        .envs(moto.env())
        .args(["dump", "--read-model", &format!("dynamodb:{read_model}")])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let got: Vec<String> = String::from_utf8(dump.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut all_streams = streams.clone();
    all_streams.push("order-bad".into());
    let want = fold(&events_table, &all_streams).await;
    assert!(!want.is_empty());
    assert_eq!(got, want);
}
