//! A deterministic DynamoDB stream for tests: shards that close and split,
//! records and shards trimmed 24 h after they were written or closed, on a
//! simulated clock. It answers the real SDK client through its HTTP client
//! hook (`DescribeStream`, `GetShardIterator`, `GetRecords` with the
//! service's JSON and error codes), so [`DynamoDbSource`] runs unchanged.
//! The emulator cannot show this: its stream has one shard, never split,
//! never trimmed.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_sdk_dynamodbstreams::config::retry::RetryConfig;
use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use serde_json::{json, Value};

use crate::dynamodb::Client;
#[cfg(doc)]
use crate::DynamoDbSource;

/// How long the stream keeps a record, and a closed shard.
pub(crate) const RETENTION_S: i64 = 24 * 3600;

/// The stream ARN the simulator answers for.
pub(crate) const ARN: &str = "arn:aws:dynamodb:us-east-1:1:table/t/stream/2026-12-01T00:00:00.000";

/// One record: its sequence number, when it was written (s) and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimRecord {
    pub(crate) seq: String,
    pub(crate) at: i64,
    pub(crate) stream: String,
    pub(crate) event_id: u64,
}

#[derive(Debug)]
struct SimShard {
    id: String,
    parent: Option<String>,
    closed_at: Option<i64>,
    records: Vec<SimRecord>,
}

#[derive(Debug, Default)]
struct State {
    now: i64,
    shards: Vec<SimShard>,
    next_seq: u64,
}

/// The simulated stream; clones share it.
#[derive(Clone, Default)]
pub(crate) struct SimStream(Arc<Mutex<State>>);

impl fmt::Debug for SimStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimStream")
    }
}

impl State {
    fn listed(&self, shard: &SimShard) -> bool {
        shard.closed_at.is_none_or(|c| c > self.now - RETENTION_S)
    }

    fn trimmed(&self, record: &SimRecord) -> bool {
        record.at <= self.now - RETENTION_S
    }

    fn shard(&self, id: &str) -> Option<&SimShard> {
        self.shards.iter().find(|s| s.id == id && self.listed(s))
    }
}

impl SimStream {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The simulated wall clock, epoch ms (its second 0 is 2027-01-15).
    pub(crate) fn now_ms(&self) -> i64 {
        (1_800_000_000 + self.lock().now) * 1000
    }

    /// Moves the clock on by `seconds`.
    pub(crate) fn advance(&self, seconds: i64) {
        self.lock().now += seconds;
    }

    /// Opens a shard (a root, or the child of `parent`); returns its id.
    pub(crate) fn open(&self, parent: Option<&str>) -> String {
        let mut state = self.lock();
        let id = format!("shardId-{:05}", state.shards.len());
        state.shards.push(SimShard {
            id: id.clone(),
            parent: parent.map(str::to_owned),
            closed_at: None,
            records: Vec::new(),
        });
        id
    }

    /// Closes `shard` and opens its child; returns the child's id.
    pub(crate) fn split(&self, shard: &str) -> String {
        {
            let mut state = self.lock();
            let now = state.now;
            if let Some(s) = state.shards.iter_mut().find(|s| s.id == shard) {
                s.closed_at = Some(now);
            }
        }
        self.open(Some(shard))
    }

    /// The shards still open.
    pub(crate) fn open_shards(&self) -> Vec<String> {
        let state = self.lock();
        state
            .shards
            .iter()
            .filter(|s| s.closed_at.is_none())
            .map(|s| s.id.clone())
            .collect()
    }

    /// Writes event `event_id` of `stream` to the open shard `shard`.
    pub(crate) fn write(&self, shard: &str, stream: &str, event_id: u64) {
        let mut state = self.lock();
        state.next_seq += 1;
        let record = SimRecord {
            seq: format!(
                "{}",
                100_000_000_000_000_000_000u128 + u128::from(state.next_seq)
            ),
            at: state.now,
            stream: stream.to_owned(),
            event_id,
        };
        if let Some(s) = state
            .shards
            .iter_mut()
            .find(|s| s.id == shard && s.closed_at.is_none())
        {
            s.records.push(record);
        }
    }

    /// Every record ever written, as (stream, event id).
    pub(crate) fn written(&self) -> BTreeSet<(String, u64)> {
        let state = self.lock();
        state
            .shards
            .iter()
            .flat_map(|s| &s.records)
            .map(|r| (r.stream.clone(), r.event_id))
            .collect()
    }

    /// The records the stream no longer holds, as (stream, event id).
    pub(crate) fn trimmed(&self) -> BTreeSet<(String, u64)> {
        let state = self.lock();
        state
            .shards
            .iter()
            .flat_map(|s| &s.records)
            .filter(|r| state.trimmed(r))
            .map(|r| (r.stream.clone(), r.event_id))
            .collect()
    }

    /// A DynamoDB Streams client whose every call this stream answers.
    pub(crate) fn client(&self) -> Client {
        let connector = SharedHttpConnector::new(self.clone());
        let conf = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "sim"))
            .retry_config(RetryConfig::disabled())
            .http_client(http_client_fn(move |_, _| connector.clone()))
            .build();
        Client::from_conf(conf)
    }

    fn answer(&self, target: &str, body: &Value) -> Result<Value, (&'static str, String)> {
        let state = self.lock();
        match target {
            "DynamoDBStreams_20120810.DescribeStream" => Ok(describe(&state)),
            "DynamoDBStreams_20120810.GetShardIterator" => iterator(&state, body),
            "DynamoDBStreams_20120810.GetRecords" => records(&state, body),
            other => Err(("ValidationException", format!("unknown target {other}"))),
        }
    }
}

fn describe(state: &State) -> Value {
    let shards: Vec<Value> = state
        .shards
        .iter()
        .filter(|s| state.listed(s))
        .map(|s| {
            let mut range = json!({
                "StartingSequenceNumber": s.records.first().map_or("100000000000000000000", |r| r.seq.as_str())
            });
            if s.closed_at.is_some() {
                range["EndingSequenceNumber"] =
                    json!(s.records.last().map_or("100000000000000000000", |r| r.seq.as_str()));
            }
            let mut shard = json!({ "ShardId": s.id, "SequenceNumberRange": range });
            if let Some(p) = &s.parent {
                shard["ParentShardId"] = json!(p);
            }
            shard
        })
        .collect();
    json!({ "StreamDescription": {
        "StreamArn": ARN,
        "StreamStatus": "ENABLED",
        "StreamViewType": "NEW_IMAGE",
        "TableName": "t",
        "Shards": shards,
    }})
}

type Answer = Result<Value, (&'static str, String)>;

fn not_found(shard: &str) -> (&'static str, String) {
    (
        "ResourceNotFoundException",
        format!("shard {shard} not found"),
    )
}

fn iterator(state: &State, body: &Value) -> Answer {
    let id = body["ShardId"].as_str().unwrap_or_default();
    let shard = state.shard(id).ok_or_else(|| not_found(id))?;
    let position = match body["ShardIteratorType"].as_str() {
        Some("TRIM_HORIZON") => shard
            .records
            .iter()
            .position(|r| !state.trimmed(r))
            .unwrap_or(shard.records.len()),
        Some("AFTER_SEQUENCE_NUMBER") => {
            let seq = body["SequenceNumber"].as_str().unwrap_or_default();
            let at = shard
                .records
                .iter()
                .position(|r| r.seq == seq)
                .ok_or(("ValidationException", format!("no record {seq} in {id}")))?;
            at + 1
        }
        other => return Err(("ValidationException", format!("iterator type {other:?}"))),
    };
    if shard.records[position..].iter().any(|r| state.trimmed(r)) {
        return Err((
            "TrimmedDataAccessException",
            "the requested records were trimmed".into(),
        ));
    }
    Ok(json!({ "ShardIterator": format!("{id}#{position}") }))
}

fn records(state: &State, body: &Value) -> Answer {
    let it = body["ShardIterator"].as_str().unwrap_or_default();
    let (id, position) = it
        .split_once('#')
        .and_then(|(id, p)| Some((id, p.parse::<usize>().ok()?)))
        .ok_or(("ValidationException", format!("bad iterator {it}")))?;
    let limit = body["Limit"].as_u64().map_or(1000, |l| l as usize);
    let shard = state.shard(id).ok_or_else(|| not_found(id))?;
    let page: Vec<&SimRecord> = shard.records.iter().skip(position).take(limit).collect();
    if page.iter().any(|r| state.trimmed(r)) {
        return Err((
            "TrimmedDataAccessException",
            "the requested records were trimmed".into(),
        ));
    }
    let next = position + page.len();
    let mut out = json!({ "Records": page.iter().map(|r| record_json(r)).collect::<Vec<_>>() });
    if shard.closed_at.is_none() || next < shard.records.len() {
        out["NextShardIterator"] = json!(format!("{id}#{next}"));
    }
    Ok(out)
}

fn record_json(r: &SimRecord) -> Value {
    let keys = json!({ "StreamId": {"S": r.stream}, "EventId": {"N": r.event_id.to_string()} });
    json!({
        "eventID": format!("e{}", r.seq),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_800_000_000 + r.at,
            "Keys": keys,
            "NewImage": {
                "StreamId": {"S": r.stream},
                "EventId": {"N": r.event_id.to_string()},
                "EventName": {"S": "Happened"},
                "Timestamp": {"N": ((1_800_000_000 + r.at) * 1000).to_string()},
                "Payload": {"M": {"n": {"N": r.event_id.to_string()}}},
            },
            "SequenceNumber": r.seq,
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE",
        },
    })
}

fn response(status: u16, body: &Value) -> HttpResponse {
    let status = StatusCode::try_from(status).unwrap();
    let mut response = HttpResponse::new(status, SdkBody::from(body.to_string()));
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.0");
    response
}

impl HttpConnector for SimStream {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        let body: Value = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let answer = match self.answer(&target, &body) {
            Ok(out) => response(200, &out),
            Err((code, message)) => response(
                400,
                &json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message }),
            ),
        };
        HttpConnectorFuture::ready(Ok(answer))
    }
}

// ---- the pump on the simulated stream ----

use std::path::{Path, PathBuf};
use std::time::Duration;

use evs_archive::store::{MemoryStore, ObjectStore};
use evs_archiver::config::Config;

use crate::{run, DynamoDbSource, Options, PumpError, PumpSummary, SourceError, Stop};

const HOUR: i64 = 3600;

fn options() -> Options {
    Options {
        once: true,
        write_timeout: Duration::from_secs(10),
        max_attempts: 1,
        retry_for: Some(Duration::ZERO),
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        ..Options::default()
    }
}

fn temp_checkpoint() -> PathBuf {
    std::env::temp_dir()
        .join(format!(
            "evs-pump-sim-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ))
        .join("cp.json")
}

/// One `evs pump --once` on the stream: a new source on the checkpoint file.
async fn pump_once(
    sim: &SimStream,
    checkpoint: &Path,
    sink: &MemoryStore,
) -> Result<PumpSummary, PumpError> {
    let clock = sim.clone();
    let mut source = DynamoDbSource::open(sim.client(), ARN, Some(checkpoint.to_owned()))?
        .with_clock(move || clock.now_ms());
    let config = Config::local("unused");
    run(
        &mut source,
        sink,
        &config,
        &options(),
        Stop::never(),
        &mut |_| {},
    )
    .await
}

/// Every event archived in `sink`, as (stream, event id).
async fn archived(sink: &MemoryStore) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    for key in sink.list("events/", None, 1_000_000).await.unwrap() {
        let bytes = sink.get(&key).await.unwrap();
        for e in evs_archive::decode_events(&bytes, evs_archive::Compression::Gzip).unwrap() {
            out.insert((e.event.stream_id.as_str().to_owned(), e.event.event_id));
        }
    }
    out
}

/// The shard a stop on trimmed records names.
fn trimmed_shard(err: &PumpError) -> Option<&str> {
    match err {
        PumpError::Source(
            SourceError::Trimmed { shard, .. } | SourceError::Unread { shard, .. },
        ) => Some(shard),
        _ => None,
    }
}

#[tokio::test]
async fn a_checkpointed_shard_trimmed_with_its_child_stops_the_pump() {
    let sim = SimStream::default();
    let (checkpoint, sink) = (temp_checkpoint(), MemoryStore::default());
    let a = sim.open(None);
    for n in 1..=3 {
        sim.write(&a, "s-1", n);
    }
    let first = pump_once(&sim, &checkpoint, &sink).await.unwrap();
    assert_eq!(first.records, 3);
    // Down for more than a day: A gets a 4th event, splits into B (5th),
    // which splits into C (6th); A and B leave the stream.
    sim.advance(HOUR);
    sim.write(&a, "s-1", 4);
    sim.advance(3 * HOUR);
    let b = sim.split(&a);
    sim.write(&b, "s-1", 5);
    sim.advance(4 * HOUR);
    let c = sim.split(&b);
    sim.advance(12 * HOUR);
    sim.write(&c, "s-1", 6);
    sim.advance(13 * HOUR);
    assert!(sim.trimmed().contains(&("s-1".to_owned(), 5)));
    let err = pump_once(&sim, &checkpoint, &sink).await.unwrap_err();
    assert!(
        matches!(&err, PumpError::Source(SourceError::Trimmed { shard, after: Some(_) }) if *shard == a),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("evs backfill"), "{text}");
    // Nothing was read past the loss.
    assert_eq!(archived(&sink).await.len(), 3);
    let _ = std::fs::remove_dir_all(checkpoint.parent().unwrap());
}

#[tokio::test]
async fn a_child_trimmed_before_it_was_read_stops_the_pump() {
    let sim = SimStream::default();
    let (checkpoint, sink) = (temp_checkpoint(), MemoryStore::default());
    let a = sim.open(None);
    sim.write(&a, "s-1", 1);
    pump_once(&sim, &checkpoint, &sink).await.unwrap();
    // A splits; the pump reads A to its end and sees B open and empty.
    sim.advance(HOUR);
    let b = sim.split(&a);
    sim.advance(HOUR);
    pump_once(&sim, &checkpoint, &sink).await.unwrap();
    // Then B gets an event, splits into C and leaves the stream while the
    // pump is down.
    sim.advance(HOUR);
    sim.write(&b, "s-1", 2);
    sim.advance(2 * HOUR);
    let c = sim.split(&b);
    sim.write(&c, "s-1", 3);
    sim.advance(25 * HOUR);
    // B is gone, unknown to the checkpoint (it gave the pump nothing); C,
    // under a parent no longer listed, would be read from its oldest record.
    let err = pump_once(&sim, &checkpoint, &sink).await.unwrap_err();
    assert!(
        matches!(&err, PumpError::Source(SourceError::Unread { shard, .. }) if *shard == c),
        "{err}"
    );
    assert_eq!(archived(&sink).await.len(), 1);
    let _ = std::fs::remove_dir_all(checkpoint.parent().unwrap());
}

#[tokio::test]
async fn a_shard_read_to_its_end_and_then_trimmed_is_not_a_loss() {
    let sim = SimStream::default();
    let (checkpoint, sink) = (temp_checkpoint(), MemoryStore::default());
    let a = sim.open(None);
    sim.write(&a, "s-1", 1);
    sim.advance(HOUR);
    let b = sim.split(&a);
    sim.write(&b, "s-1", 2);
    sim.advance(HOUR);
    // Read to A's end in the batch that holds its last record, and B.
    pump_once(&sim, &checkpoint, &sink).await.unwrap();
    sim.advance(30 * HOUR);
    sim.write(&b, "s-1", 3);
    let again = pump_once(&sim, &checkpoint, &sink).await.unwrap();
    assert_eq!(again.records, 1);
    assert_eq!(archived(&sink).await.len(), 3);
    // A is forgotten once it left the stream.
    let cp = crate::Checkpoint::load(&checkpoint, ARN).unwrap();
    assert!(!cp.shards.contains_key(&a), "{cp:?}");
    let _ = std::fs::remove_dir_all(checkpoint.parent().unwrap());
}

/// Seeded random lives of a stream (writes, splits, pump runs, downtimes of
/// minutes to days): a pump run that succeeds has archived every event the
/// stream ever held, but those an operator back-filled after a stop; a run
/// stops (`Trimmed`) only when records it had not archived left the stream.
#[tokio::test]
async fn no_pump_run_loses_an_event_silently() {
    let seed = std::env::var("EVS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (EVS_SEED={seed} reruns it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut stops, mut runs) = (0, 0);
    for case in 0..150 {
        let sim = SimStream::default();
        let (checkpoint, sink) = (temp_checkpoint(), MemoryStore::default());
        let mut backfilled = BTreeSet::new();
        let mut next_event = 1;
        sim.open(None);
        if rng.bool() {
            sim.open(None);
        }
        for _ in 0..rng.usize(5..40) {
            match rng.u8(0..10) {
                0..=4 => {
                    let open = sim.open_shards();
                    let shard = &open[rng.usize(..open.len())];
                    sim.write(shard, &format!("s-{case}"), next_event);
                    next_event += 1;
                }
                5 => {
                    let open = sim.open_shards();
                    sim.split(&open[rng.usize(..open.len())]);
                }
                6 | 7 => sim.advance(rng.i64(1..4 * HOUR)),
                8 => sim.advance(rng.i64(20 * HOUR..40 * HOUR)),
                _ => {
                    runs += 1;
                    let missing = |archived: &BTreeSet<_>, backfilled: &BTreeSet<_>| {
                        sim.written()
                            .into_iter()
                            .filter(|e| !archived.contains(e) && !backfilled.contains(e))
                            .collect::<BTreeSet<_>>()
                    };
                    if !checkpoint.exists() {
                        // A pump without a checkpoint starts from what the
                        // stream holds: what it lost before is back-filled.
                        let before = missing(&archived(&sink).await, &backfilled);
                        backfilled.extend(before.intersection(&sim.trimmed()).cloned());
                    }
                    if std::env::var("EVS_SIM_TRACE").is_ok() {
                        let state = sim.lock();
                        println!("run at {}: {:#?}", state.now, state.shards);
                    }
                    match pump_once(&sim, &checkpoint, &sink).await {
                        Ok(_) => {
                            let lost = missing(&archived(&sink).await, &backfilled);
                            assert!(lost.is_empty(), "seed {seed} case {case}: lost {lost:?}");
                        }
                        Err(err) => {
                            assert!(trimmed_shard(&err).is_some(), "seed {seed}: {err}");
                            stops += 1;
                            // The operator back-fills what the stream lost
                            // and starts the pump afresh.
                            let gone: BTreeSet<_> = missing(&archived(&sink).await, &backfilled)
                                .intersection(&sim.trimmed())
                                .cloned()
                                .collect();
                            backfilled.extend(gone);
                            std::fs::remove_file(&checkpoint).unwrap();
                        }
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(checkpoint.parent().unwrap());
    }
    println!("{runs} pump runs, {stops} stopped on trimmed shards");
    assert!(stops > 0 && runs > stops, "the cases must include both");
}
