//! The handler end to end: Lambda event in, objects in a sink out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use evs_archive::store::{LocalDir, Object, ObjectStore, S3Store, StoreError, Stored};
use evs_archive::ArchiveKey;
use evs_archive::{decode_dead_letters, decode_events, Compression};
use evs_archiver::config::Config;
use evs_archiver::handler::{handle, HandlerError, Summary};
use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamId};
use evs_testkit::{unique_name, Moto};
use serde_json::{json, Value};

const SEALED_AT: i64 = 1_795_471_652_123; // 2026-11-23T22:07:32.123Z

fn clock() -> impl Fn() -> i64 + Send + Sync {
    || SEALED_AT
}

fn sample(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(unique_name("evs-handler"))
}

async fn lines_at(sink: &dyn ObjectStore, key: &str) -> Vec<Value> {
    decode_events(&sink.get(key).await.unwrap(), Compression::Gzip)
        .unwrap()
        .iter()
        .map(|e| e.to_line().unwrap())
        .collect()
}

#[tokio::test]
async fn mixed_batch_archives_events_and_dead_letters_the_rest() {
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    let config = Config::local(&dir);
    let summary = handle(
        &sample("mixed.json").to_string(),
        &sink,
        &config,
        &clock(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.records_in, summary.archived, summary.dead_lettered),
        (7, 4, 3)
    );
    assert!(summary.batch_item_failures.is_empty());

    let key = summary.key.clone().unwrap();
    let parsed = ArchiveKey::parse(&key).unwrap();
    assert_eq!(parsed.sealed_at_ms(), SEALED_AT);
    assert!(
        key.starts_with("events/2026/11/23/22/20261123T220732123Z-"),
        "{key}"
    );
    assert_eq!(
        sink.list("events/", None, 10).await.unwrap(),
        vec![key.clone()]
    );

    let lines = lines_at(&sink, &key).await;
    assert_eq!(lines.len(), 4);
    // archive order: event timestamp, then stream, then event id
    let order: Vec<(i64, String, u64)> = lines
        .iter()
        .map(|l| {
            let ts = time::OffsetDateTime::parse(
                l["timestamp"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            (
                (ts.unix_timestamp_nanos() / 1_000_000) as i64,
                l["streamId"].as_str().unwrap().to_owned(),
                l["eventId"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    let legacy = lines
        .iter()
        .find(|l| l["streamId"] == "legacy-import-77")
        .unwrap();
    assert_eq!(legacy["payload"], json!({"a": 1}));
    assert_eq!(legacy["payloadEncoding"], "json-string");
    let fallback = lines
        .iter()
        .find(|l| l["streamId"] == "invoice-2026-0042" && l["eventId"] == 2)
        .unwrap();
    assert_eq!(fallback["timestampSource"], "approximateCreationDateTime");
    for l in &lines {
        assert!(
            l["eventID"].is_string() && l["sequenceNumber"].is_string(),
            "{l}"
        );
    }

    let dl_key = summary.dead_letter_key.clone().unwrap();
    assert!(dl_key.starts_with("dead-letter/2026/11/23/22/"), "{dl_key}");
    let dead = decode_dead_letters(&sink.get(&dl_key).await.unwrap()).unwrap();
    let reasons: Vec<String> = dead.iter().map(|d| d.reason.code().to_owned()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(dead.iter().all(|d| d.raw.is_object()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn batches_at_lambdas_limits_are_archived_whole() {
    use crate::gen_batch::{generate, Limit, DEFAULT_SEED};
    // The mapping's largest batch (10,000 records) and Lambda's largest event (6 MB).
    for limit in [Limit::Records(10_000), Limit::Bytes(6_000_000)] {
        let (bytes, count) = generate(limit, DEFAULT_SEED).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let dir = temp_dir();
        let sink = LocalDir::new(&dir);
        let config = Config::local(&dir);
        let summary = handle(text, &sink, &config, &clock(), None).await.unwrap();
        assert_eq!(
            (summary.records_in, summary.archived, summary.dead_lettered),
            (count, count, 0),
            "{limit:?}"
        );
        assert!(summary.batch_item_failures.is_empty());
        let lines = lines_at(&sink, summary.key.as_deref().unwrap()).await;
        // every record once, in archive order
        let ids: std::collections::BTreeSet<&str> = lines
            .iter()
            .map(|l| l["eventID"].as_str().unwrap())
            .collect();
        assert_eq!((lines.len(), ids.len()), (count, count), "{limit:?}");
        let order: Vec<(&str, &str, u64)> = lines
            .iter()
            .map(|l| {
                (
                    l["timestamp"].as_str().unwrap(),
                    l["streamId"].as_str().unwrap(),
                    l["eventId"].as_u64().unwrap(),
                )
            })
            .collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{limit:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test]
async fn empty_batch_writes_nothing() {
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    let summary = handle(
        &sample("empty.json").to_string(),
        &sink,
        &Config::local(&dir),
        &clock(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        summary,
        Summary {
            sealed_at_ms: 0,
            ..Summary::default()
        }
    );
    assert!(sink.list("", None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn not_a_batch_fails_the_invocation() {
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    for bad in [json!([]), json!({"records": []}), json!({"Records": 5})] {
        let err = handle(
            &bad.to_string(),
            &sink,
            &Config::local(&dir),
            &clock(),
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HandlerError::NotABatch(_)), "{err:?}");
    }
}

/// A batch made by the in-memory store's change feed, as the offline pipeline makes them.
async fn feed_batch() -> (Value, usize) {
    let store = MemoryStore::new();
    for s in ["a-1", "b-2", "c-3"] {
        let stream = StreamId::new(s).unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                &[NewEvent::new(
                    "Opened",
                    json!({"n": 12345678901234567890123_u128}),
                )],
            )
            .await
            .unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::Exact(1),
                &[
                    NewEvent::new("Changed", json!({"by": "zoë"})),
                    NewEvent::new("Closed", json!(null)),
                ],
            )
            .await
            .unwrap();
    }
    let (records, n) = store.changes(0, 100);
    (json!({ "Records": records }), n)
}

#[tokio::test]
async fn s3_and_local_hold_the_same_object() {
    let Some(moto) = Moto::shared() else { return };
    let client = evs_archive::store::s3::client_for(&moto.sdk_config().await);
    let bucket = unique_name("archive");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let s3 = S3Store::new(client.clone(), &bucket);
    let (event, n) = feed_batch().await;
    let mut config = Config::local("unused");
    config.location = evs_archiver::config::Location::S3 {
        bucket: bucket.clone(),
    };
    // The real clock: S3's own (its `Date`) is compared with it.
    let summary = handle(
        &event.to_string(),
        &s3,
        &config,
        &evs_core::now_ms,
        Some(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.records_in, summary.archived, summary.dead_lettered),
        (n, n, 0)
    );
    let key = summary.key.unwrap();
    let from_s3 = lines_at(&s3, &key).await;
    assert_eq!(from_s3.len(), n);
    assert_eq!(
        from_s3[0]["payload"]["n"].to_string(),
        "12345678901234567890123"
    );

    let head = client
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/x-ndjson"));
    assert_eq!(head.content_encoding(), Some("gzip"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("evs-count"))
            .map(String::as_str),
        Some("9")
    );

    let dir = temp_dir();
    let local = LocalDir::new(&dir);
    let summary = handle(
        &event.to_string(),
        &local,
        &Config::local(&dir),
        &clock(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(lines_at(&local, &summary.key.unwrap()).await, from_s3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_put_fails_the_invocation() {
    let Some(moto) = Moto::shared() else { return };
    let client = evs_archive::store::s3::client_for(&moto.sdk_config().await);
    let missing = S3Store::new(client, unique_name("no-bucket"));
    let (event, _) = feed_batch().await;
    let err = handle(
        &event.to_string(),
        &missing,
        &Config::local("unused"),
        &clock(),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandlerError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
}

/// A sink that delays or refuses some writes (the sink trait, not the SDK).
#[derive(Debug)]
struct Faulty {
    inner: LocalDir,
    fail_prefix: Option<&'static str>,
    delay: Duration,
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError> {
        tokio::time::sleep(self.delay).await;
        if self.fail_prefix.is_some_and(|p| key.starts_with(p)) {
            return Err(StoreError::S3 {
                doing: "writing",
                key: key.into(),
                message: "SlowDown: reduce your request rate".into(),
                transient: true,
                source: None,
            });
        }
        self.inner.put(key, object).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix, start_after, limit).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

#[tokio::test]
async fn a_failed_dead_letter_write_reports_the_first_dead_record() {
    let dir = temp_dir();
    let sink = Faulty {
        inner: LocalDir::new(&dir),
        fail_prefix: Some("dead-letter/"),
        delay: Duration::ZERO,
    };
    let event = sample("mixed.json");
    let summary = handle(
        &event.to_string(),
        &sink,
        &Config::local(&dir),
        &clock(),
        None,
    )
    .await
    .unwrap();
    assert_events_written_dead_letters_redelivered(&event, &summary);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mixed.json` handled with its dead-letter object unwritten: the events
/// were archived; Lambda re-delivers from the first dead record (record 1) on.
fn assert_events_written_dead_letters_redelivered(event: &Value, summary: &Summary) {
    assert!(summary.key.is_some() && summary.dead_letter_key.is_none());
    let first_dead = event["Records"][1]["dynamodb"]["SequenceNumber"]
        .as_str()
        .unwrap();
    assert_eq!(summary.batch_item_failures, [first_dead]);
    assert_eq!(
        summary.dead_lettered, 0,
        "nothing was written to the dead-letter prefix"
    );
    // Why, and that it may heal (the sinks here fail with SlowDown or the deadline).
    let failure = summary.dead_letter_failure.as_ref().unwrap();
    assert!(failure.transient, "{failure:?}");
    assert!(failure.error.contains("dead-letter/"), "{failure:?}");
}

#[tokio::test]
async fn a_write_past_the_deadline_fails_and_leaves_nothing() {
    let dir = temp_dir();
    let sink = Arc::new(Faulty {
        inner: LocalDir::new(&dir),
        fail_prefix: None,
        delay: Duration::from_secs(5),
    });
    let (event, _) = feed_batch().await;
    let err = handle(
        &event.to_string(),
        sink.as_ref(),
        &Config::local(&dir),
        &clock(),
        Some(Duration::from_millis(50)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandlerError::Deadline { .. }), "{err:?}");
    // The time it had in words (`46 ms`), as every message says a duration.
    let text = err.to_string();
    let within = text
        .split("within ")
        .nth(1)
        .and_then(|t| t.split(" (").next());
    assert!(within.is_some_and(|w| w.ends_with(" ms")), "{text}");
    assert!(sink.list("", None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_writes_of_one_batch_share_its_deadline() {
    // Each write takes 1 s, the batch has 1.6 s: the events object is written,
    // the dead-letter object gets the 0.6 s left (not 1.6 s again) and is cut off.
    let dir = temp_dir();
    let sink = Faulty {
        inner: LocalDir::new(&dir),
        fail_prefix: None,
        delay: Duration::from_secs(1),
    };
    let event = sample("mixed.json");
    let summary = handle(
        &event.to_string(),
        &sink,
        &Config::local(&dir),
        &clock(),
        Some(Duration::from_millis(1600)),
    )
    .await
    .unwrap();
    assert_events_written_dead_letters_redelivered(&event, &summary);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The wall clock passes the bound while the object is written (a host
/// suspended mid-PUT, whose monotonic deadline stood still): readers may
/// have passed its key before it landed, so the batch is archived again,
/// sealed after the jump. The first object stays (its events come twice, as
/// after any retry).
#[tokio::test]
async fn a_write_that_lands_after_the_bound_is_archived_again_under_a_new_key() {
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    let (event, n) = feed_batch().await;
    let clock = clock_of(vec![SEALED_AT, SEALED_AT + 61_000]);
    let summary = handle(
        &event.to_string(),
        &sink,
        &Config::local(&dir),
        &clock,
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let keys = sink.list("events/", None, 10).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(summary.sealed_at_ms, SEALED_AT + 61_000);
    assert_eq!(summary.key.as_deref(), Some(keys[1].as_str()));
    assert_eq!(
        ArchiveKey::parse(&keys[1]).unwrap().sealed_at_ms(),
        SEALED_AT + 61_000
    );
    assert_eq!(lines_at(&sink, &keys[0]).await.len(), n);
    assert_eq!(
        lines_at(&sink, &keys[0]).await,
        lines_at(&sink, &keys[1]).await
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A local directory that answers each put with the next of `times` as the
/// store's own clock (as S3's `Date` header does).
#[derive(Debug)]
struct ServerClock {
    inner: LocalDir,
    times: Times,
}

/// Times given in turn, then the last one for ever.
#[derive(Debug)]
struct Times(std::sync::Mutex<Vec<i64>>);

impl Times {
    fn new(times: Vec<i64>) -> Times {
        Times(std::sync::Mutex::new(times))
    }

    fn next(&self) -> i64 {
        let mut times = self.0.lock().unwrap();
        if times.len() > 1 {
            times.remove(0)
        } else {
            times[0]
        }
    }
}

#[async_trait]
impl ObjectStore for ServerClock {
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError> {
        self.inner.put(key, object).await?;
        Ok(Stored::at(self.times.next()))
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix, start_after, limit).await
    }
    fn location(&self) -> String {
        "s3://server-clock/".into()
    }
}

/// A clock that gives `times` in turn, then the last one for ever.
fn clock_of(times: Vec<i64>) -> impl Fn() -> i64 + Send + Sync {
    let times = Times::new(times);
    move || times.next()
}

/// This host's clock 35 s behind the store's and a write of 30 s: by this
/// host's clock the object landed in time, by the store's 65 s after its key
/// (past the 60 s bound), so it is archived again; the second lands in time.
#[tokio::test]
async fn a_write_late_by_the_stores_clock_is_archived_again() {
    let dir = temp_dir();
    let sink = ServerClock {
        inner: LocalDir::new(&dir),
        times: Times::new(vec![SEALED_AT + 65_000, SEALED_AT + 106_000]),
    };
    let clock = clock_of(vec![SEALED_AT, SEALED_AT + 30_000, SEALED_AT + 70_000]);
    let (event, _) = feed_batch().await;
    let summary = handle(
        &event.to_string(),
        &sink,
        &Config::local(&dir),
        &clock,
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let keys = sink.list("events/", None, 10).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(summary.sealed_at_ms, SEALED_AT + 70_000);
    assert_eq!(summary.key.as_deref(), Some(keys[1].as_str()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// This host's clock more than the bound behind the store's: every key it
/// sealed would be behind readers when its object lands. The call fails
/// with a reason that retrying does not heal.
#[tokio::test]
async fn a_clock_behind_the_stores_by_more_than_the_bound_fails_for_good() {
    let dir = temp_dir();
    let sink = ServerClock {
        inner: LocalDir::new(&dir),
        times: Times::new(vec![SEALED_AT + 120_000]),
    };
    let (event, _) = feed_batch().await;
    let err = handle(
        &event.to_string(),
        &sink,
        &Config::local(&dir),
        &clock(),
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandlerError::ClockBehind { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("NTP"), "{err}");
    // Without a bound (a back-fill of history, a test) the clocks are not compared.
    handle(
        &event.to_string(),
        &sink,
        &Config::local(&dir),
        &clock(),
        None,
    )
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dead_letter_without_sequence_number_fails_the_invocation_when_unwritten() {
    let dir = temp_dir();
    let sink = Faulty {
        inner: LocalDir::new(&dir),
        fail_prefix: Some("dead-letter/"),
        delay: Duration::ZERO,
    };
    let mixed = sample("mixed.json");
    let mut broken = mixed["Records"][1].clone();
    broken["dynamodb"]
        .as_object_mut()
        .unwrap()
        .remove("SequenceNumber");
    let event =
        json!({ "Records": [mixed["Records"][0].clone(), broken, mixed["Records"][2].clone()] });
    // Reporting the REMOVE's number would acknowledge the unwritten record before it.
    let err = handle(
        &event.to_string(),
        &sink,
        &Config::local(&dir),
        &clock(),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HandlerError::Write { .. }), "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_event_as_sent_and_compacted_gives_the_same_objects() {
    for name in ["inserts.json", "mixed.json", "empty.json"] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../events")
                .join(name),
        )
        .unwrap();
        let (a, b) = (temp_dir(), temp_dir());
        let (sa, sb) = (LocalDir::new(&a), LocalDir::new(&b));
        let from_tree = handle(
            &sample(name).to_string(),
            &sa,
            &Config::local(&a),
            &clock(),
            None,
        )
        .await
        .unwrap();
        let from_text = handle(&text, &sb, &Config::local(&b), &clock(), None)
            .await
            .unwrap();
        assert_eq!(
            (
                from_tree.records_in,
                from_tree.archived,
                from_tree.dead_lettered
            ),
            (
                from_text.records_in,
                from_text.archived,
                from_text.dead_lettered
            ),
            "{name}"
        );
        if let (Some(ka), Some(kb)) = (&from_tree.key, &from_text.key) {
            assert_eq!(lines_at(&sa, ka).await, lines_at(&sb, kb).await, "{name}");
        }
        let _ = (std::fs::remove_dir_all(&a), std::fs::remove_dir_all(&b));
    }
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    for bad in ["[]", "{", "{\"records\":[]}", "{\"Records\":5}", ""] {
        let err = handle(bad, &sink, &Config::local(&dir), &clock(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, HandlerError::NotABatch(_)), "{bad}: {err:?}");
    }
}
