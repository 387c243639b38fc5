//! The pump loop offline: memory feeds, a local directory, sinks that fail.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamId};
use serde_json::json;

use super::*;
use evs_archive::store::{LocalDir, Object, StoreError, Stored};
use evs_archive::{decode_events, Compression};

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "evs-pump-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

fn fast() -> Options {
    Options {
        batch_size: 4,
        once: true,
        write_timeout: Duration::from_secs(5),
        max_attempts: 3,
        retry_for: Some(Duration::ZERO),
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        idle: Duration::from_millis(20),
    }
}

async fn store_with(streams: &[&str], per_stream: usize) -> MemoryStore {
    let store = MemoryStore::new();
    for i in 0..per_stream {
        for s in streams {
            store
                .append(
                    &StreamId::new(*s).unwrap(),
                    ExpectedVersion::Any,
                    &[NewEvent::new("Happened", json!({ "i": i }))],
                )
                .await
                .unwrap();
        }
    }
    store
}

/// Every archived event as (stream, event id), with how often it was archived.
async fn archived(sink: &dyn ObjectStore) -> BTreeMap<(String, u64), usize> {
    let mut out = BTreeMap::new();
    for key in sink.list("events/", None, 100_000).await.unwrap() {
        let bytes = sink.get(&key).await.unwrap();
        for e in decode_events(&bytes, Compression::Gzip).unwrap() {
            *out.entry((e.event.stream_id.as_str().to_owned(), e.event.event_id))
                .or_insert(0) += 1;
        }
    }
    out
}

fn no_report() -> impl FnMut(&BatchReport) + Send {
    |_: &BatchReport| {}
}

/// Runs the pump to its end (never stopped), its batch reports into `reports`.
async fn run_to_end<S: Source + ?Sized>(
    source: &mut S,
    sink: &dyn ObjectStore,
    config: &Config,
    options: &Options,
    reports: &mut Vec<BatchReport>,
) -> Result<PumpSummary, PumpError> {
    run(
        source,
        sink,
        config,
        options,
        Stop::never(),
        &mut |r: &BatchReport| reports.push(r.clone()),
    )
    .await
}

#[tokio::test]
async fn memory_feed_is_archived_exactly_once_and_a_rerun_adds_nothing() {
    let store = store_with(&["a-1", "b-2", "c-3"], 5).await;
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    let config = Config::local(&dir);
    let mut source = MemorySource::new(store.clone());
    let mut reports = Vec::new();
    let summary = run_to_end(&mut source, &sink, &config, &fast(), &mut reports)
        .await
        .unwrap();
    assert_eq!(summary.records, 15);
    assert_eq!(summary.archived, 15);
    assert_eq!(summary.batches, 4); // 4 + 4 + 4 + 3
    assert!(!summary.stopped);
    assert_eq!(reports.len(), 4);
    assert!(reports.iter().all(|r| r.error.is_none() && r.attempt == 1));
    assert_eq!(source.position(), 15);
    let got = archived(&sink).await;
    assert_eq!(got.len(), 15);
    assert!(got.values().all(|&n| n == 1), "{got:?}");

    // Nothing new: nothing written.
    let again = run_to_end(&mut source, &sink, &config, &fast(), &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(again, PumpSummary::default());
    assert_eq!(sink.list("events/", None, 100).await.unwrap().len(), 4);

    // More events: only they are archived.
    store
        .append(
            &StreamId::new("a-1").unwrap(),
            ExpectedVersion::Exact(5),
            &[NewEvent::new("More", json!({}))],
        )
        .await
        .unwrap();
    let more = run_to_end(&mut source, &sink, &config, &fast(), &mut Vec::new())
        .await
        .unwrap();
    assert_eq!((more.records, more.batches), (1, 1));
    let got = archived(&sink).await;
    assert_eq!(got.len(), 16);
    assert!(got.values().all(|&n| n == 1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn batch_size_must_fit_one_get_records_call() {
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    let config = Config::local(&dir);
    for bad in [0, 1001] {
        let mut source = MemorySource::new(MemoryStore::new());
        let options = Options {
            batch_size: bad,
            ..fast()
        };
        let err = run_to_end(&mut source, &sink, &config, &options, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, PumpError::BatchSize(n) if n == bad), "{err}");
        assert!(err.to_string().contains("1 to 1000"), "{err}");
    }
    for good in [1, 1000] {
        let options = Options {
            batch_size: good,
            ..fast()
        };
        options.validate().unwrap();
    }
}

/// A fixed list of records, served in batches; remembers every commit.
struct VecSource {
    records: Vec<Value>,
    committed: usize,
    commits: Arc<Mutex<Vec<usize>>>,
}

#[async_trait]
impl Source for VecSource {
    type Position = usize;

    async fn next_batch(&mut self, limit: usize) -> Result<Option<Batch<usize>>, SourceError> {
        let end = (self.committed + limit).min(self.records.len());
        if self.committed == end {
            return Ok(None);
        }
        Ok(Some(Batch {
            records: self.records[self.committed..end].to_vec(),
            position: self.committed,
            label: "vec".into(),
        }))
    }

    async fn commit(&mut self, batch: &Batch<usize>, handled: usize) -> Result<(), SourceError> {
        self.committed = batch.position + handled;
        self.commits.lock().unwrap().push(self.committed);
        Ok(())
    }
}

/// Four feed records; the 2nd and 4th made `MODIFY` (dead letters).
async fn mixed_records() -> Vec<Value> {
    let store = store_with(&["s-1"], 4).await;
    let (mut records, _) = store.changes(0, 10);
    records[1]["eventName"] = json!("MODIFY");
    records[3]["eventName"] = json!("MODIFY");
    records
}

/// A local directory whose first `fail` puts under `prefix` fail.
#[derive(Debug)]
struct Flaky {
    inner: LocalDir,
    prefix: &'static str,
    fail: usize,
    delay_first: Option<Duration>,
    transient: bool,
    calls: AtomicUsize,
}

impl Flaky {
    fn new(dir: &std::path::Path, prefix: &'static str, fail: usize) -> Self {
        Self {
            inner: LocalDir::new(dir),
            prefix,
            fail,
            delay_first: None,
            transient: true,
            calls: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put(&self, key: &str, object: &Object) -> Result<Stored, StoreError> {
        if key.starts_with(self.prefix) {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                if let Some(d) = self.delay_first {
                    tokio::time::sleep(d).await;
                }
            }
            if n < self.fail {
                return Err(StoreError::S3 {
                    doing: "putting",
                    key: key.to_owned(),
                    message: "injected failure".into(),
                    transient: self.transient,
                    source: None,
                });
            }
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
async fn a_partial_failure_commits_only_the_records_before_it() {
    let records = mixed_records().await;
    let dir = temp_dir();
    // The dead-letter object fails once: the handler reports record 2 on.
    let sink = Flaky::new(&dir, "dead-letter/", 1);
    let config = Config::local(&dir);
    let commits = Arc::new(Mutex::new(Vec::new()));
    let mut source = VecSource {
        records,
        committed: 0,
        commits: commits.clone(),
    };
    let mut reports = Vec::new();
    let summary = run_to_end(&mut source, &sink, &config, &fast(), &mut reports)
        .await
        .unwrap();
    // Record 1 committed first; then the rest (records 2 to 4) in full.
    assert_eq!(*commits.lock().unwrap(), [1, 4]);
    assert_eq!(summary.records, 4);
    assert_eq!(summary.batches, 1);
    assert_eq!(summary.retries, 1);
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].committed, 1);
    assert_eq!(
        reports[0]
            .summary
            .as_ref()
            .unwrap()
            .batch_item_failures
            .len(),
        1
    );
    // The rest failed once already: this is its second attempt.
    assert_eq!((reports[1].committed, reports[1].attempt), (3, 2));
    // Events 1 and 3 archived; 3 twice (the retried rest re-archives it, as
    // Lambda would), 1 once.
    let got = archived(&sink).await;
    assert_eq!(got[&("s-1".to_owned(), 1)], 1);
    assert_eq!(got[&("s-1".to_owned(), 3)], 2);
    assert_eq!(sink.list("dead-letter/", None, 10).await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_first_record_failing_commits_nothing_and_gives_up_after_max_attempts() {
    let mut records = mixed_records().await;
    records[0]["eventName"] = json!("REMOVE");
    let dir = temp_dir();
    let sink = Flaky::new(&dir, "dead-letter/", usize::MAX);
    let config = Config::local(&dir);
    let commits = Arc::new(Mutex::new(Vec::new()));
    let mut source = VecSource {
        records,
        committed: 0,
        commits: commits.clone(),
    };
    let err = run_to_end(&mut source, &sink, &config, &fast(), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PumpError::PartialFailure { attempts: 3, .. }),
        "{err}"
    );
    assert!(commits.lock().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_write_is_retried_then_committed() {
    let store = store_with(&["x-1"], 3).await;
    let dir = temp_dir();
    let sink = Flaky::new(&dir, "events/", 2);
    let config = Config::local(&dir);
    let mut source = MemorySource::new(store);
    let mut reports = Vec::new();
    let summary = run_to_end(&mut source, &sink, &config, &fast(), &mut reports)
        .await
        .unwrap();
    assert_eq!((summary.records, summary.retries), (3, 2));
    let attempts: Vec<_> = reports.iter().map(|r| (r.attempt, r.committed)).collect();
    assert_eq!(attempts, [(1, 0), (2, 0), (3, 3)]);
    assert!(reports[0].error.as_deref().unwrap().contains("injected"));
    assert_eq!(sink.list("events/", None, 10).await.unwrap().len(), 1);
    assert_eq!(source.position(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_overdue_write_is_retried_under_a_new_key_and_a_failing_one_gives_up() {
    let store = store_with(&["x-1"], 2).await;
    let dir = temp_dir();
    // The first write hangs past the deadline.
    let mut sink = Flaky::new(&dir, "events/", 0);
    sink.delay_first = Some(Duration::from_secs(30));
    let config = Config::local(&dir);
    let options = Options {
        write_timeout: Duration::from_millis(100),
        ..fast()
    };
    let mut source = MemorySource::new(store.clone());
    let mut reports = Vec::new();
    let summary = run_to_end(&mut source, &sink, &config, &options, &mut reports)
        .await
        .unwrap();
    assert_eq!((summary.records, summary.retries), (2, 1));
    assert!(
        reports[0].error.as_deref().unwrap().contains("within"),
        "{reports:?}"
    );
    assert_eq!(sink.list("events/", None, 10).await.unwrap().len(), 1);

    // Always failing: a clear error after max_attempts, nothing committed.
    let failing = Flaky::new(&dir, "events/", usize::MAX);
    let mut source = MemorySource::new(store);
    let err = run_to_end(&mut source, &failing, &config, &fast(), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PumpError::Handler { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("3 times"), "{err}");
    assert_eq!(source.position(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn follow_mode_archives_new_events_until_stopped() {
    let store = MemoryStore::new();
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    let config = Config::local(&dir);
    let options = Options {
        once: false,
        idle: Duration::from_secs(30), // the store's change signal wakes it
        ..fast()
    };
    let (handle, stop) = Stop::channel();
    let pump = {
        let store = store.clone();
        let sink = sink.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let mut source = MemorySource::new(store);
            run(
                &mut source,
                &sink,
                &config,
                &options,
                stop,
                &mut no_report(),
            )
            .await
        })
    };
    let stream = StreamId::new("live-1").unwrap();
    for i in 0..3u64 {
        store
            .append(
                &stream,
                ExpectedVersion::Exact(i),
                &[NewEvent::new("Tick", json!({ "i": i }))],
            )
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while archived(&sink).await.len() < (i + 1) as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "event {i} not archived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    handle.stop();
    let summary = tokio::time::timeout(Duration::from_secs(10), pump)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.records, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn handled_before_counts_the_records_before_the_failure() {
    let rec = |s: &str| json!({"dynamodb": {"SequenceNumber": s}});
    let records = [rec("10"), rec("11"), rec("12")];
    assert_eq!(handled_before(&records, "10"), 0);
    assert_eq!(handled_before(&records, "12"), 2);
    // Unknown: commit nothing.
    assert_eq!(handled_before(&records, "99"), 0);
    assert_eq!(sequence_number_of(&json!({})), None);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let o = Options {
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(350),
        ..Options::default()
    };
    let waits: Vec<_> = (1..=5)
        .map(|n| o.backoff_policy().cap(n).as_millis())
        .collect();
    assert_eq!(waits, [100, 200, 350, 350, 350]);
}

/// A source whose reads fail `fail` times (transient or not) before each
/// success.
struct FlakySource {
    inner: VecSource,
    fail: usize,
    transient: bool,
    failed: usize,
}

#[async_trait]
impl Source for FlakySource {
    type Position = usize;

    async fn next_batch(&mut self, limit: usize) -> Result<Option<Batch<usize>>, SourceError> {
        if self.failed < self.fail {
            self.failed += 1;
            return Err(SourceError::Streams {
                doing: "reading shard vec".into(),
                message: "connection refused".into(),
                transient: self.transient,
                source: None,
            });
        }
        self.failed = 0;
        self.inner.next_batch(limit).await
    }

    async fn commit(&mut self, batch: &Batch<usize>, handled: usize) -> Result<(), SourceError> {
        self.inner.commit(batch, handled).await
    }
}

fn flaky_source(records: Vec<Value>, fail: usize, transient: bool) -> FlakySource {
    FlakySource {
        inner: VecSource {
            records,
            committed: 0,
            commits: Arc::default(),
        },
        fail,
        transient,
        failed: 0,
    }
}

#[tokio::test]
async fn a_source_outage_is_waited_out_when_retry_for_allows_it() {
    let store = store_with(&["x-1", "y-2"], 3).await;
    let (records, _) = store.changes(0, 100);
    let dir = temp_dir();
    let sink = LocalDir::new(&dir);
    let config = Config::local(&dir);

    // Each read fails 5 times first: far past max_attempts, and healed.
    let patient = Options {
        max_attempts: 1,
        retry_for: None,
        ..fast()
    };
    let mut source = flaky_source(records.clone(), 5, true);
    let summary = run_to_end(&mut source, &sink, &config, &patient, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(summary.records, 6);
    let got = archived(&sink).await;
    assert_eq!(got.len(), 6);
    assert!(got.values().all(|&n| n == 1), "{got:?}");

    // The library default: max_attempts bounds even transient failures.
    let mut source = flaky_source(records.clone(), 5, true);
    let err = run_to_end(&mut source, &sink, &config, &fast(), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, PumpError::Source(_)), "{err}");
    assert_eq!(source.failed, 3);

    // What cannot heal stops at once, however patient the pump.
    let mut source = flaky_source(records.clone(), 5, false);
    let err = run_to_end(&mut source, &sink, &config, &patient, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert_eq!(source.failed, 1);

    // A time limit: given up once failing that long.
    let limited = Options {
        retry_for: Some(Duration::from_millis(30)),
        max_backoff: Duration::from_millis(10),
        ..patient
    };
    let mut source = flaky_source(records, usize::MAX, true);
    let started = std::time::Instant::now();
    let err = run_to_end(&mut source, &sink, &config, &limited, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, PumpError::Source(_)), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(30));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_transient_write_failure_outlives_max_attempts_and_a_permanent_one_does_not() {
    let store = store_with(&["x-1"], 2).await;
    let dir = temp_dir();
    let config = Config::local(&dir);
    let patient = Options {
        max_attempts: 1,
        retry_for: None,
        ..fast()
    };
    let sink = Flaky::new(&dir, "events/", 6);
    let mut source = MemorySource::new(store.clone());
    let summary = run_to_end(&mut source, &sink, &config, &patient, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!((summary.records, summary.retries), (2, 6));

    // A missing bucket does not heal: stopped after one attempt.
    let mut sink = Flaky::new(&dir, "events/", usize::MAX);
    sink.transient = false;
    let mut source = MemorySource::new(store);
    let err = run_to_end(&mut source, &sink, &config, &patient, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PumpError::Handler { attempts: 1, .. }),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dead_letter_write_that_cannot_heal_stops_the_pump() {
    let records = mixed_records().await;
    let dir = temp_dir();
    // No permission on the dead-letter prefix: every put there is refused.
    let mut sink = Flaky::new(&dir, "dead-letter/", usize::MAX);
    sink.transient = false;
    let config = Config::local(&dir);
    let commits = Arc::new(Mutex::new(Vec::new()));
    let mut source = VecSource {
        records,
        committed: 0,
        commits: commits.clone(),
    };
    // As patient as the CLI when polling: what may heal is retried for ever.
    let patient = Options {
        max_attempts: 1,
        retry_for: None,
        ..fast()
    };
    // A pump that retried it anyway is stopped after 20 handler calls.
    let (handle, stop) = Stop::channel();
    let mut calls = 0;
    let result = run(
        &mut source,
        &sink,
        &config,
        &patient,
        stop,
        &mut |_: &BatchReport| {
            calls += 1;
            if calls == 20 {
                handle.stop();
            }
        },
    )
    .await;
    let err = result.expect_err("the pump must stop with an error");
    assert!(
        matches!(&err, PumpError::PartialFailure { attempts: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("injected failure"), "{err}");
    // Record 1 (before the first dead letter) was written and committed; one
    // events object, not one per retry.
    assert_eq!(*commits.lock().unwrap(), [1]);
    assert_eq!(sink.list("events/", None, 10).await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
