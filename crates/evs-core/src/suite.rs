//! One behaviour suite for every [`EventStore`] backend (with the feature
//! `test-suite`, or in this crate's tests).
//!
//! Each check is a plain async fn taking the store under test, and panics
//! when the store breaks a rule. [`backend_suite!`](crate::backend_suite)
//! defines a test for each check that needs no more than a fresh store,
//! given a factory; the memory backend's tests (here) and the DynamoDB
//! backend's tests (evs-dynamodb, on the emulator) run the very same checks,
//! so the backends cannot drift apart. The concurrency checks take their
//! sizes from the caller (an emulator is slower than memory).
// Test code: a failed check is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::{
    decide, Aggregate, AppendOutcome, AttrValue, Clock, DecideError, Direction, Error, EventStore,
    EventStoreExt, ExpectedVersion, Head, NewEvent, ReadRequest, RecordedEvent, RetryPolicy,
    StreamId,
};

/// A clock the tests move by hand.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `ms` (epoch milliseconds).
    pub fn at(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }
    /// Moves the clock to `ms`.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    /// The clock to give a store.
    pub fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || inner.load(Ordering::SeqCst))
    }
}

/// A stream id that is valid.
pub fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

/// A new event.
pub fn ev(name: &str, payload: Value) -> NewEvent {
    NewEvent::new(name, payload)
}

/// The events' `EventId`s.
pub fn ids(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.event_id).collect()
}

/// Appends open a stream and extend it; reads return every attribute as
/// written, forwards, backwards, from a position and limited.
pub async fn append_and_read(store: &dyn EventStore) {
    let s = sid("order-1");
    assert!(store.read_all(&s).await.unwrap().is_empty());
    assert_eq!(store.version(&s).await.unwrap(), 0);

    let payload: Value =
        serde_json::from_str(r#"{"amount":12345678901234567890123,"price":0.1,"note":"café ☕","nested":{"l":[1,"a",null,true]}}"#)
            .unwrap();
    let first = ev("Placed", payload.clone())
        .with_metadata(json!({"user": "ann"}))
        .with_attribute("Tenant", AttrValue::S("acme".into()))
        .with_attribute("Raw", AttrValue::B(vec![0, 159, 255]))
        .with_attribute("Tags", AttrValue::Ss(vec!["a".into(), "b".into()]));
    let out = store
        .append(&s, ExpectedVersion::NoStream, std::slice::from_ref(&first))
        .await
        .unwrap();
    assert_eq!(
        (out.first, out.version, out.already_appended),
        (1, 1, false)
    );

    let out = store
        .append(
            &s,
            ExpectedVersion::Exact(1),
            &[
                ev("Paid", json!({"n": 1})),
                ev("Shipped", json!("plain string")),
            ],
        )
        .await
        .unwrap();
    assert_eq!((out.first, out.version), (2, 3));

    let all = store.read_all(&s).await.unwrap();
    assert_eq!(ids(&all), [1, 2, 3]);
    assert_eq!(all[0].payload, payload);
    assert_eq!(
        all[0].payload["amount"].to_string(),
        "12345678901234567890123"
    );
    assert_eq!(all[0].metadata, Some(json!({"user": "ann"})));
    assert_eq!(all[0].id, Some(first.id));
    assert_eq!(all[0].attributes, first.attributes);
    assert_eq!(all[2].payload, json!("plain string"));
    assert_eq!(all[1].name, "Paid");

    let backward = store.read(&s, ReadRequest::last(10)).await.unwrap();
    assert_eq!(ids(&backward), [3, 2, 1]);
    let page = store
        .read(
            &s,
            ReadRequest {
                from: Some(2),
                direction: Direction::Forward,
                limit: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), [2]);
    let page = store
        .read(
            &s,
            ReadRequest {
                from: Some(2),
                direction: Direction::Backward,
                limit: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), [2, 1]);
    assert!(store
        .read(&s, ReadRequest::after(3))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.version(&s).await.unwrap(), 3);
    // another stream is independent
    assert!(store.read_all(&sid("order-2")).await.unwrap().is_empty());
}

fn assert_conflict(result: Result<AppendOutcome, Error>, expected_actual: u64) {
    match result {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, expected_actual),
        other => panic!("expected a conflict with actual version {expected_actual}, got {other:?}"),
    }
}

/// A conflict (a stale or wrong expected version, a stale head, a head of
/// another stream) writes nothing and reports the actual version.
pub async fn conflicts_never_overwrite_and_never_leave_gaps(store: &dyn EventStore) {
    let s = sid("acct-1");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            &[ev("Opened", json!({})), ev("Deposited", json!({"n": 5}))],
        )
        .await
        .unwrap();
    let before = store.read_all(&s).await.unwrap();

    assert_conflict(
        store
            .append(&s, ExpectedVersion::NoStream, &[ev("Opened", json!({}))])
            .await,
        2,
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(0), &[ev("Opened", json!({}))])
            .await,
        2,
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(1), &[ev("X", json!({}))])
            .await,
        2,
    );
    // a gap: version 5 does not exist
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(5), &[ev("X", json!({}))])
            .await,
        2,
    );
    assert_conflict(
        store
            .append(
                &sid("acct-new"),
                ExpectedVersion::Exact(3),
                &[ev("X", json!({}))],
            )
            .await,
        0,
    );
    // A stale head from an earlier read conflicts just the same.
    let stale = Head::of(&before[0]);
    assert_conflict(
        store.append_after(&s, stale, &[ev("X", json!({}))]).await,
        2,
    );
    assert_eq!(
        store.read_all(&s).await.unwrap(),
        before,
        "a conflict changed the stream"
    );
    let fresh = Head::of(&before[1]);
    assert_eq!(
        store
            .append_after(&s, fresh.clone(), &[ev("Y", json!({}))])
            .await
            .unwrap()
            .version,
        3
    );
    let retried = store
        .append_after(&s, fresh.clone(), &[ev("Z", json!({}))])
        .await;
    assert_conflict(retried, 3);
    // A head of another stream vouches for nothing: no gap in that stream.
    let other = sid("acct-other");
    store
        .append(
            &other,
            ExpectedVersion::NoStream,
            &[ev("Opened", json!({}))],
        )
        .await
        .unwrap();
    assert_conflict(
        store
            .append_after(&other, fresh, &[ev("Z", json!({}))])
            .await,
        1,
    );
    assert_eq!(ids(&store.read_all(&other).await.unwrap()), [1]);
    let before: Vec<_> = store.read_all(&s).await.unwrap();
    assert_eq!(ids(&before), [1, 2, 3]);
    assert!(store.read_all(&sid("acct-new")).await.unwrap().is_empty());

    let msg = store
        .append(&s, ExpectedVersion::Exact(1), &[ev("X", json!({}))])
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("actual version is 3"), "{msg}");
}

/// A multi-event append is all or nothing, up to 100 items.
pub async fn multi_event_appends_are_atomic(store: &dyn EventStore) {
    let s = sid("cart-1");
    store
        .append(&s, ExpectedVersion::NoStream, &[ev("Created", json!({}))])
        .await
        .unwrap();
    store
        .append(&s, ExpectedVersion::Exact(1), &[ev("Added", json!({}))])
        .await
        .unwrap();
    // A stale writer's three-event transaction: nothing of it may appear.
    let stale = [ev("A", json!({})), ev("B", json!({})), ev("C", json!({}))];
    assert_conflict(store.append(&s, ExpectedVersion::Exact(1), &stale).await, 2);
    assert_eq!(ids(&store.read_all(&s).await.unwrap()), [1, 2]);
    // A multi-event append that opens a stream which exists: nothing either.
    assert_conflict(store.append(&s, ExpectedVersion::NoStream, &stale).await, 2);
    assert_eq!(ids(&store.read_all(&s).await.unwrap()), [1, 2]);
    // The full 100 items when opening a stream; 99 after an existing event.
    let hundred: Vec<_> = (0..100).map(|i| ev("Line", json!({ "i": i }))).collect();
    let out = store
        .append(&sid("big-1"), ExpectedVersion::NoStream, &hundred)
        .await
        .unwrap();
    assert_eq!(out.version, 100);
    let ninety_nine: Vec<_> = (0..99).map(|i| ev("Line", json!({ "i": i }))).collect();
    let out = store
        .append(&sid("big-1"), ExpectedVersion::Exact(100), &ninety_nine)
        .await
        .unwrap();
    assert_eq!(out.version, 199);
    let all = store.read_all(&sid("big-1")).await.unwrap();
    assert_eq!(ids(&all), (1..=199).collect::<Vec<_>>());
}

/// What DynamoDB would refuse (too many events, too large, invalid values)
/// is refused before any write, naming the event and the path inside it.
pub async fn limits_are_refused_before_writing(store: &dyn EventStore) {
    let s = sid("limits-1");
    let too_many: Vec<_> = (0..101).map(|_| ev("E", json!({}))).collect();
    assert!(matches!(
        store.append(&s, ExpectedVersion::NoStream, &too_many).await,
        Err(Error::TooManyEvents {
            count: 101,
            max: 100
        })
    ));
    store
        .append(&s, ExpectedVersion::NoStream, &[ev("E", json!({}))])
        .await
        .unwrap();
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Exact(1), &too_many[..100])
            .await,
        Err(Error::TooManyEvents {
            count: 100,
            max: 99
        })
    ));
    let huge = ev("Huge", json!({ "blob": "x".repeat(401 * 1024) }));
    assert!(matches!(
        store
            .append(
                &s,
                ExpectedVersion::Exact(1),
                &[ev("Fine", json!({})), huge]
            )
            .await,
        Err(Error::ItemTooLarge { position: 2, .. })
    ));
    // What DynamoDB refuses is refused first, naming the event's position
    // in the append (never a placeholder EventId) and the path inside it.
    let mut deep = json!(1);
    for _ in 0..32 {
        deep = json!({ "a": deep });
    }
    let refused = [
        (
            ev("E", json!({"d": {"": 1}})),
            r#"payload.d has an empty key"#,
        ),
        (
            ev("E", json!({})).with_metadata(json!({"": "x"})),
            "metadata has an empty key",
        ),
        (ev("E", deep), "nested 33 levels deep"),
        (
            ev("E", json!({})).with_attribute("Tags", AttrValue::Ss(vec![])),
            r#"attribute "Tags" is an empty set"#,
        ),
        (
            ev("E", json!({}))
                .with_attribute("Nums", AttrValue::Ns(vec!["1".into(), "1.0".into()])),
            r#"attribute "Nums" is a set that holds 1.0 twice"#,
        ),
        (
            ev("E", json!({})).with_attribute("", AttrValue::S("x".into())),
            "empty key",
        ),
        (
            ev("E", json!({})).with_attribute("N", AttrValue::N("1e126".into())),
            "larger than",
        ),
    ];
    for (event, says) in refused {
        let err = store
            .append(
                &s,
                ExpectedVersion::Exact(1),
                &[ev("Fine", json!({"ok": ""})), event],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidEvent { position: 2, .. }),
            "{says}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("event 2 of the append is invalid") && text.contains(says),
            "{text}"
        );
        assert!(!text.contains("4611686018427387904"), "{text}");
    }
    let fat: Vec<_> = (0..11)
        .map(|_| ev("Fat", json!({ "blob": "x".repeat(390 * 1024) })))
        .collect();
    assert!(matches!(
        store.append(&s, ExpectedVersion::Exact(1), &fat).await,
        Err(Error::TransactionTooLarge { .. })
    ));
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &[]).await,
        Err(Error::EmptyAppend)
    ));
    let inexact: Value = serde_json::from_str(&format!("{{\"n\":{}}}", "7".repeat(39))).unwrap();
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Exact(1), &[ev("E", inexact)])
            .await,
        Err(Error::InvalidEvent { .. })
    ));
    assert_eq!(ids(&store.read_all(&s).await.unwrap()), [1]);

    // At the limits, and what DynamoDB allows: empty strings, 32 levels.
    let mut deepest = json!("");
    for _ in 0..31 {
        deepest = json!({ "a": deepest });
    }
    let edge = ev(
        "Edge",
        json!({"deepest": deepest["a"], "empty": "", "k": "v"}),
    )
    .with_attribute("Tags", AttrValue::Ss(vec!["".into(), "a".into()]))
    .with_attribute("Nums", AttrValue::Ns(vec!["1".into(), "1.5".into()]));
    store
        .append(&s, ExpectedVersion::Exact(1), std::slice::from_ref(&edge))
        .await
        .unwrap();
    let read = store.read_all(&s).await.unwrap();
    assert_eq!(read[1].payload, edge.payload);
    assert_eq!(read[1].attributes, edge.attributes);
}

/// An append retried with the same event ids after it committed succeeds
/// with `already_appended`; the same position with other events conflicts.
pub async fn retried_appends_are_recognised(store: &dyn EventStore) {
    let s = sid("retry-1");
    let one = [ev("Created", json!({}))];
    let first = store
        .append(&s, ExpectedVersion::NoStream, &one)
        .await
        .unwrap();
    let again = store
        .append(&s, ExpectedVersion::NoStream, &one)
        .await
        .unwrap();
    assert!(again.already_appended && !first.already_appended);
    assert_eq!((again.first, again.version), (1, 1));

    let two = [ev("A", json!({})), ev("B", json!({}))];
    store
        .append(&s, ExpectedVersion::Exact(1), &two)
        .await
        .unwrap();
    let again = store
        .append(&s, ExpectedVersion::Exact(1), &two)
        .await
        .unwrap();
    assert!(again.already_appended);
    assert_eq!((again.first, again.version), (2, 3));

    let any = [ev("C", json!({}))];
    store.append(&s, ExpectedVersion::Any, &any).await.unwrap();
    let again = store.append(&s, ExpectedVersion::Any, &any).await.unwrap();
    assert!(again.already_appended);
    assert_eq!(again.version, 4);
    assert_eq!(ids(&store.read_all(&s).await.unwrap()), [1, 2, 3, 4]);
    // An `Any` retry after another writer appended is still recognised.
    store
        .append(&s, ExpectedVersion::Any, &[ev("Other", json!({}))])
        .await
        .unwrap();
    let again = store.append(&s, ExpectedVersion::Any, &any).await.unwrap();
    assert!(again.already_appended);
    assert_eq!((again.first, again.version), (4, 4));
    assert_eq!(ids(&store.read_all(&s).await.unwrap()), [1, 2, 3, 4, 5]);

    // Same position, other events: a real conflict.
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(1), &[ev("A", json!({}))])
            .await,
        5,
    );
}

/// `ExpectedVersion::Any` appends after the last event.
pub async fn any_appends_at_the_end(store: &dyn EventStore) {
    let s = sid("any-1");
    assert_eq!(
        store
            .append(&s, ExpectedVersion::Any, &[ev("A", json!({}))])
            .await
            .unwrap()
            .version,
        1
    );
    let out = store
        .append(
            &s,
            ExpectedVersion::Any,
            &[ev("B", json!({})), ev("C", json!({}))],
        )
        .await
        .unwrap();
    assert_eq!((out.first, out.version), (2, 3));
}

/// A writer whose clock is behind the stream stamps its events with the
/// stream's last timestamp; `store` runs on `clock`.
pub async fn timestamps_never_go_backwards(store: &dyn EventStore, clock: &ManualClock) {
    let s = sid("clock-1");
    clock.set(1_700_000_010_000);
    store
        .append(&s, ExpectedVersion::NoStream, &[ev("A", json!({}))])
        .await
        .unwrap();
    clock.set(1_700_000_005_000); // this writer's clock is behind
    let out = store
        .append(&s, ExpectedVersion::Exact(1), &[ev("B", json!({}))])
        .await
        .unwrap();
    assert_eq!(out.timestamp_ms, 1_700_000_010_000);
    let out = store
        .append(&s, ExpectedVersion::Any, &[ev("C", json!({}))])
        .await
        .unwrap();
    assert_eq!(out.timestamp_ms, 1_700_000_010_000);
    clock.set(1_700_000_020_000);
    store
        .append(&s, ExpectedVersion::Exact(3), &[ev("D", json!({}))])
        .await
        .unwrap();
    let ts: Vec<_> = store
        .read_all(&s)
        .await
        .unwrap()
        .iter()
        .map(|e| e.timestamp_ms)
        .collect();
    assert_eq!(
        ts,
        [
            1_700_000_010_000,
            1_700_000_010_000,
            1_700_000_010_000,
            1_700_000_020_000
        ]
    );
}

/// What [`concurrent_writers_lose_nothing`] counted.
#[derive(Debug, Default)]
pub struct WriterTally {
    /// Appends the store acknowledged (including recognised retries).
    pub appends: usize,
    /// Events in those appends.
    pub acknowledged: usize,
    /// Events found when the streams were read back.
    pub present: usize,
    /// Acknowledged events that are not in the store.
    pub missing: usize,
    /// Conflicts and contention the writers retried.
    pub retried: usize,
}

/// `writers` tasks append 1 to 3 events at a time to three shared streams,
/// each with the exact version it just read, retrying on conflicts, and
/// remember every event the store acknowledged. Read back: every stream is
/// gap-free, no event is stored twice, every acknowledged event is there.
///
/// Most of these appends are `TransactWriteItems` and many are cancelled by
/// a conflict: on plain moto 5.2.5 a cancelled transaction restores a copy
/// of the table taken before it started, undoing acknowledged appends.
pub async fn concurrent_writers_lose_nothing(
    store: Arc<dyn EventStore>,
    writers: usize,
    appends_each: usize,
) -> WriterTally {
    let streams: Vec<StreamId> = (0..3).map(|i| sid(&format!("shared-{i}"))).collect();
    let mut handles = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let streams = streams.clone();
        handles.push(tokio::spawn(async move {
            let mut acked: Vec<(usize, uuid::Uuid)> = Vec::new();
            let mut appends = 0;
            let mut retried = 0;
            for a in 0..appends_each {
                let target = (w + a) % streams.len();
                let s = &streams[target];
                let events: Vec<NewEvent> = (0..1 + (w + a) % 3)
                    .map(|i| ev("Written", json!({ "writer": w, "append": a, "i": i })))
                    .collect();
                loop {
                    let version = store.version(s).await.unwrap();
                    let expected = if version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(version)
                    };
                    match store.append(s, expected, &events).await {
                        Ok(_) => {
                            appends += 1;
                            acked.extend(events.iter().map(|e| (target, e.id)));
                            break;
                        }
                        Err(Error::Conflict { .. } | Error::Contention { .. }) => retried += 1,
                        Err(e) => panic!("writer {w}, append {a}: {e}"),
                    }
                }
            }
            (acked, appends, retried)
        }));
    }
    let mut tally = WriterTally::default();
    let mut acked: Vec<Vec<uuid::Uuid>> = vec![Vec::new(); streams.len()];
    for h in handles {
        let (events, appends, retried) = h.await.expect("writer task");
        tally.appends += appends;
        tally.retried += retried;
        tally.acknowledged += events.len();
        for (stream, id) in events {
            acked[stream].push(id);
        }
    }
    let mut problems = Vec::new();
    for (s, acked) in streams.iter().zip(&acked) {
        let stored = store.read_all(s).await.unwrap();
        tally.present += stored.len();
        let versions = ids(&stored);
        if versions != (1..=stored.len() as u64).collect::<Vec<_>>() {
            problems.push(format!("{s} has gaps: {versions:?}"));
        }
        let mut seen = std::collections::HashMap::new();
        for e in &stored {
            if let Some(id) = e.id {
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        let twice = seen.values().filter(|&&n| n > 1).count();
        if twice > 0 {
            problems.push(format!("{s}: {twice} events stored more than once"));
        }
        let missing = acked.iter().filter(|id| !seen.contains_key(id)).count();
        tally.missing += missing;
        if missing > 0 {
            problems.push(format!(
                "{s}: {missing} of {} acknowledged events are missing",
                acked.len()
            ));
        }
    }
    eprintln!("{tally:?}");
    assert!(
        problems.is_empty(),
        "{} events acknowledged, {} present: {}",
        tally.acknowledged,
        tally.present,
        problems.join("; ")
    );
    assert_eq!(
        tally.present, tally.acknowledged,
        "unacknowledged events stored"
    );
    tally
}

/// 16 tasks each run `per_task` increment commands through the decide loop
/// on one stream: every command lands exactly once, each saw the full state.
pub async fn concurrent_decide_loses_no_update(store: Arc<dyn EventStore>, per_task: u64) {
    let s = sid("counter-1");
    let tasks = 16;
    // Sixteen writers on one stream is a hot spot: back off further than
    // the default so that writers take turns instead of colliding.
    let policy = RetryPolicy {
        max_attempts: 1_000,
        base_delay: std::time::Duration::from_millis(250),
        max_delay: std::time::Duration::from_secs(4),
    };
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut counter = Aggregate::new(0_u64);
            let mut conflicts = 0;
            for _ in 0..per_task {
                let done = decide(
                    store.as_ref(),
                    &s,
                    &mut counter,
                    |n: &mut u64, e: &RecordedEvent| {
                        *n = e.payload["value"].as_u64().unwrap_or(0);
                    },
                    |n: &u64| -> Result<_, std::convert::Infallible> {
                        Ok(vec![NewEvent::new(
                            "Incremented",
                            json!({ "value": n + 1 }),
                        )])
                    },
                    &policy,
                )
                .await
                .expect("decide");
                conflicts += done.attempts - 1;
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.expect("task");
    }
    let all = store.read_all(&s).await.unwrap();
    let total = tasks * per_task;
    assert_eq!(ids(&all), (1..=total).collect::<Vec<_>>());
    for e in &all {
        assert_eq!(
            e.payload["value"].as_u64(),
            Some(e.event_id),
            "a lost update at {}",
            e.event_id
        );
    }
    assert!(
        all.windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms),
        "a timestamp went backwards"
    );
    eprintln!("{total} commands from {tasks} tasks, {conflicts} conflicts retried");
}

/// A store adapter that lets a rival writer append before every append.
#[derive(Debug)]
struct Rival<'a>(&'a dyn EventStore);

#[async_trait]
impl EventStore for Rival<'_> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> crate::Result<AppendOutcome> {
        self.0
            .append(stream, ExpectedVersion::Any, &[ev("Rival", json!({}))])
            .await?;
        self.0.append(stream, expected, events).await
    }
    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> crate::Result<Vec<RecordedEvent>> {
        self.0.read(stream, request).await
    }
}

/// The decide loop: a refused decision and an empty one write nothing; a
/// writer that always loses gives up after its attempts, with the conflict.
pub async fn decide_refusal_and_exhaustion_are_distinct(store: &dyn EventStore) {
    let s = sid("decide-1");
    let fold = |n: &mut u32, _: &RecordedEvent| *n += 1;
    let mut agg = Aggregate::new(0_u32);
    let refused = decide(
        store,
        &s,
        &mut agg,
        fold,
        |_: &u32| Err::<Vec<NewEvent>, _>("no"),
        &RetryPolicy::default(),
    )
    .await;
    assert!(matches!(refused, Err(DecideError::Rejected("no"))));
    assert!(store.read_all(&s).await.unwrap().is_empty());

    let nothing = decide(
        store,
        &s,
        &mut agg,
        fold,
        |_: &u32| Ok::<_, ()>(vec![]),
        &RetryPolicy::default(),
    )
    .await
    .unwrap();
    assert_eq!(nothing.outcome, None);

    let rival = Rival(store);
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    let mut agg = Aggregate::new(0_u32);
    let exhausted = decide(
        &rival,
        &s,
        &mut agg,
        fold,
        |_: &u32| Ok::<_, ()>(vec![ev("Mine", json!({}))]),
        &policy,
    )
    .await;
    match exhausted {
        Err(DecideError::Exhausted {
            attempts: 3, last, ..
        }) => {
            assert!(matches!(*last, Error::Conflict { .. }))
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    let names: Vec<_> = store
        .read_all(&s)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["Rival", "Rival", "Rival"]);

    // The same rival, with enough attempts... still never wins: but a fresh
    // writer without rival succeeds at the current version.
    let ok = decide(
        store,
        &s,
        &mut agg,
        fold,
        |n: &u32| Ok::<_, ()>(vec![ev("Mine", json!({ "seen": n }))]),
        &policy,
    )
    .await
    .unwrap();
    assert_eq!(ok.outcome.map(|o| o.version), Some(4));
    assert_eq!(
        store.read_all(&s).await.unwrap()[3].payload,
        json!({"seen": 3})
    );
}

/// Defines, in the module where it is invoked, one test for each check of
/// [`suite`](crate::suite) that needs only a fresh store: `append_and_read`,
/// `conflicts`, `atomic`, `limits`, `retries`, `any`, `timestamps` and
/// `decide_outcomes`.
///
/// `$factory` is the backend factory: an async fn taking an
/// `Option<evs_core::Clock>` (the clock to stamp events with, `None` for the
/// system clock) and returning `Option<S>`, `S` an [`EventStore`](crate::EventStore)
/// with no events; `None` skips the test (an emulator that is not
/// installed). The invoking crate needs `tokio` (with `macros`).
#[macro_export]
macro_rules! backend_suite {
    ($factory:path) => {
        #[tokio::test]
        async fn append_and_read() {
            let Some(store) = $factory(None).await else {
                return;
            };
            $crate::suite::append_and_read(&store).await;
        }
        #[tokio::test]
        async fn conflicts() {
            let Some(store) = $factory(None).await else {
                return;
            };
            $crate::suite::conflicts_never_overwrite_and_never_leave_gaps(&store).await;
        }
        #[tokio::test]
        async fn atomic() {
            let Some(store) = $factory(None).await else {
                return;
            };
            $crate::suite::multi_event_appends_are_atomic(&store).await;
        }
        #[tokio::test]
        async fn limits() {
            let Some(store) = $factory(None).await else {
                return;
            };
            $crate::suite::limits_are_refused_before_writing(&store).await;
        }
        #[tokio::test]
        async fn retries() {
            let Some(store) = $factory(None).await else {
                return;
            };
            $crate::suite::retried_appends_are_recognised(&store).await;
        }
        #[tokio::test]
        async fn any() {
            let Some(store) = $factory(None).await else {
                return;
            };
            $crate::suite::any_appends_at_the_end(&store).await;
        }
        #[tokio::test]
        async fn timestamps() {
            let clock = $crate::suite::ManualClock::at(0);
            let Some(store) = $factory(Some(clock.clock())).await else {
                return;
            };
            $crate::suite::timestamps_never_go_backwards(&store, &clock).await;
        }
        #[tokio::test]
        async fn decide_outcomes() {
            let Some(store) = $factory(None).await else {
                return;
            };
            $crate::suite::decide_refusal_and_exhaustion_are_distinct(&store).await;
        }
    };
}

#[cfg(test)]
mod memory {
    use super::*;
    use crate::MemoryStore;

    fn store() -> MemoryStore {
        MemoryStore::new()
    }

    async fn factory(clock: Option<Clock>) -> Option<MemoryStore> {
        Some(clock.map_or_else(MemoryStore::new, MemoryStore::with_clock))
    }

    crate::backend_suite!(factory);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_decide() {
        concurrent_decide_loses_no_update(Arc::new(store()), 100).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers() {
        concurrent_writers_lose_nothing(Arc::new(store()), 8, 25).await;
    }

    #[tokio::test]
    async fn change_feed_is_shaped_like_dynamodb_streams() {
        let store = store();
        let s = sid("feed-1");
        store
            .append(
                &s,
                ExpectedVersion::NoStream,
                &[ev("A", json!({"n": 1})), ev("B", json!({}))],
            )
            .await
            .unwrap();
        let (records, next) = store.changes(0, 10);
        assert_eq!(next, 2);
        assert_eq!(records[0]["eventName"], "INSERT");
        assert_eq!(records[0]["dynamodb"]["Keys"]["StreamId"]["S"], "feed-1");
        assert_eq!(records[1]["dynamodb"]["NewImage"]["EventId"]["N"], "2");
        assert_eq!(
            records[0]["dynamodb"]["NewImage"]["Payload"]["M"]["n"]["N"],
            "1"
        );
        let seq = |r: &Value| r["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned();
        assert!(seq(&records[0]).len() >= 21 && seq(&records[0]) < seq(&records[1]));
        assert_eq!(store.changes(next, 10).0.len(), 0);
        assert_eq!(store.changes(1, 10).0.len(), 1);
    }
}
