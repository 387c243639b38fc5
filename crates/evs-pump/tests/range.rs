//! `range::read_range` on the emulator: a range of a real table's stream read
//! again, as the reconciler reads the batch a Lambda on-failure record names.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evs_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use evs_dynamodb::DynamoStore;
use evs_pump::range::{read_range, read_whole_range, RangeError, ShardRange};
use evs_pump::sequence_number_of;
use evs_testkit::{unique_name, Moto};
use serde_json::{json, Value};

/// Every record of the stream's shards, from each one's oldest, with its shard.
async fn all_records(client: &evs_pump::dynamodb::Client, arn: &str) -> Vec<(String, Value)> {
    let described = client
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for shard in described.stream_description().unwrap().shards() {
        let id = shard.shard_id().unwrap().to_owned();
        let start = shard
            .sequence_number_range()
            .and_then(|r| r.starting_sequence_number())
            .unwrap()
            .to_owned();
        let range = ShardRange {
            stream_arn: arn.to_owned(),
            shard_id: id.clone(),
            start,
            end: "9".repeat(40),
        };
        for record in read_range(client, &range).await.unwrap() {
            out.push((id.clone(), record));
        }
    }
    out
}

fn stream_of(record: &Value) -> String {
    record["dynamodb"]["Keys"]["StreamId"]["S"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_range_is_read_again_from_its_start_to_its_end() {
    let Some(moto) = Moto::shared() else { return };
    let store = DynamoStore::new(moto.dynamodb().await, unique_name("range"));
    store.create_table().await.unwrap();
    let arn = store.stream_arn().await.unwrap().unwrap();
    for n in 0..12 {
        store
            .append(
                &StreamId::new(format!("order-{}", n % 4)).unwrap(),
                ExpectedVersion::Any,
                &[NewEvent::new("OrderPlaced", json!({ "n": n }))],
            )
            .await
            .unwrap();
    }
    let client = evs_pump::dynamodb::client_for(&moto.sdk_config().await);
    let all = all_records(&client, &arn).await;
    assert_eq!(all.len(), 12, "{all:?}");
    // records 3 to 7 of the first shard's
    let (shard, _) = &all[0];
    let in_shard: Vec<&Value> = all
        .iter()
        .filter(|(s, _)| s == shard)
        .map(|(_, r)| r)
        .collect();
    let seq = |i: usize| sequence_number_of(in_shard[i]).unwrap().to_owned();
    let range = ShardRange {
        stream_arn: arn.clone(),
        shard_id: shard.clone(),
        start: seq(3),
        end: seq(7),
    };
    let got = read_range(&client, &range).await.unwrap();
    let want: Vec<Value> = in_shard[3..=7].iter().map(|r| (*r).clone()).collect();
    assert_eq!(got, want);
    let streams: Vec<String> = got.iter().map(stream_of).collect();
    assert_eq!(
        streams,
        ["order-3", "order-0", "order-1", "order-2", "order-3"]
    );
    // one record
    let one = ShardRange {
        end: seq(3),
        ..range.clone()
    };
    assert_eq!(read_range(&client, &one).await.unwrap(), want[..1].to_vec());
    // the reconciler's read: whole, or not at all
    assert_eq!(read_whole_range(&client, &range).await.unwrap(), want);
    let beyond = ShardRange {
        end: format!("{}0", seq(7)),
        ..range.clone()
    };
    let err = read_whole_range(&client, &beyond).await.unwrap_err();
    assert!(
        matches!(err, RangeError::Incomplete { .. }) && err.is_transient(),
        "{err}"
    );
    // (A range the stream no longer holds is RangeError::Gone on AWS
    // (TrimmedDataAccessException, ResourceNotFoundException); the emulator
    // answers an unknown shard with a bare HTTP 500, so that is not tested here.)
    let _ = &range;
}
