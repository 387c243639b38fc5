//! The pump: the archiver outside Lambda (`evs pump`, the end-to-end tests,
//! a container). It reads a change feed itself and hands each batch to the
//! very same [`handler::handle`] the Lambda runs. A crate of its own so that
//! the archiver's Lambda does not compile the DynamoDB Streams SDK.
//!
//! * [`Source`]: where batches come from. A batch is a list of records in the
//!   exact JSON shape of a DynamoDB Streams Lambda event's `Records`, plus a
//!   position the source commits once the handler has written them.
//!   [`dynamodb::DynamoDbSource`] reads a table's stream (every shard, a
//!   parent before its children, checkpointed in a file);
//!   [`memory::MemorySource`] pumps the change feed of an in-memory store.
//! * [`run`]: the loop. Per batch it calls the handler with a hard deadline
//!   for its writes ([`Options::write_timeout`]), so the settled-frontier
//!   bound `T` holds as it does in Lambda; an overdue or failed write is
//!   retried, with backoff, under a new key (each call seals anew). It never
//!   commits past a record that was not written: on a partial batch failure
//!   it commits the records before the first reported one and retries the
//!   rest; after [`Options::max_attempts`] failures in a row it gives up with
//!   a [`PumpError`].
//! * [`Stop`]: a clean stop between batches (the CLI wires Ctrl-C to it).
//! * [`range::read_range`]: one range of a shard read again, as a Lambda
//!   on-failure record names it; [`reconcile`]: the reconciler of a
//!   projection's on-failure queue, for any projection (it reads each
//!   failed range again and catches its streams up from the events table).
//!
//! The contract between the loop and a source: [`Source::next_batch`] is
//! called again only once the previous batch was committed in full (or the
//! pump has stopped), so a source may advance its read position as soon as it
//! hands out a batch and persist it only in [`Source::commit`].

use std::time::Duration;

use async_trait::async_trait;
use evs_core::{Backoff, Streak};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use evs_archive::store::ObjectStore;
use evs_archiver::config::Config;
use evs_archiver::handler::{self, HandlerError, Summary};

mod checkpoint;
pub mod dynamodb;
mod live;
mod memory;
pub mod range;
pub mod reconcile;

pub use checkpoint::{Checkpoint, CheckpointError, ShardCheckpoint, VERSION as CHECKPOINT_VERSION};
pub use dynamodb::DynamoDbSource;
pub use live::{run_live, LiveSummary};
pub use memory::MemorySource;

/// Most records one batch may hold: one DynamoDB Streams `GetRecords` call.
pub const MAX_BATCH_SIZE: usize = 1000;

/// Records read from a source, to hand to the handler, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<P> {
    /// The records, in stream order, each shaped like a record of a DynamoDB
    /// Streams Lambda event (`eventID`, `eventName`, `dynamodb`, …).
    pub records: Vec<Value>,
    /// Where the batch ends; what the source needs to commit it.
    pub position: P,
    /// Where it came from, for reports (e.g. the shard id).
    pub label: String,
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A DynamoDB Streams call failed (after the SDK's own retries).
    #[error("DynamoDB Streams error while {doing}: {message}")]
    Streams {
        /// What was being done.
        doing: String,
        /// The error as one line.
        message: String,
        /// Whether waiting may heal it (a refused connection, 5xx,
        /// throttling) rather than not (credentials, a missing stream).
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The stream no longer holds records of a shard that the checkpoint
    /// has not archived to its end: the shard left the stream (trimmed 24 h
    /// after it closed), or its records after the checkpoint did.
    #[error(
        "shard {shard}: its records after {} left the stream (older than 24 h) before they were \
         archived; back-fill them from a table export (`evs backfill`, see the README), then remove \
         the checkpoint file to archive what the stream still holds",
        after.as_ref().map_or("its start".to_owned(), |seq| format!("sequence number {seq}"))
    )]
    Trimmed {
        /// The shard.
        shard: String,
        /// The last sequence number archived from it, if any.
        after: Option<String>,
    },
    /// A shard the pump has read nothing from is read from its oldest
    /// record, and may have held older records that the stream trimmed:
    /// the pump last caught up longer ago than the stream keeps records.
    #[error(
        "shard {shard}: the pump has read nothing from it and last caught up with the stream more \
         than 23 h ago, so records it held may have left the stream (older than 24 h) unarchived; \
         back-fill from a table export (`evs backfill`, see the README), then remove the \
         checkpoint file to archive what the stream still holds"
    )]
    Unread {
        /// The shard.
        shard: String,
        /// How long ago the pump last caught up.
        since: std::time::Duration,
    },
    /// The stream has no shards list or is not enabled.
    #[error("stream {arn}: {reason}")]
    Stream {
        /// The stream ARN.
        arn: String,
        /// What is wrong.
        reason: String,
    },
    /// A record to commit has no usable `dynamodb.SequenceNumber`.
    #[error("a record of {label} has no valid dynamodb.SequenceNumber; cannot commit past it")]
    NoSequenceNumber {
        /// Where the record came from.
        label: String,
    },
    /// The checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl SourceError {
    /// Whether waiting and reading again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Streams {
                transient: true,
                ..
            }
        )
    }
}

/// A change feed the pump reads.
#[async_trait]
pub trait Source: Send {
    /// What the source needs to commit a batch.
    type Position: Send + Sync;

    /// The next batch of at most `limit` records, or `None` when the source is
    /// caught up (nothing to read right now).
    async fn next_batch(
        &mut self,
        limit: usize,
    ) -> Result<Option<Batch<Self::Position>>, SourceError>;

    /// Records that the first `handled` records of `batch` (all of them when
    /// `handled == batch.records.len()`) are archived, durably when the source
    /// keeps a checkpoint. A restart resumes after them.
    async fn commit(
        &mut self,
        batch: &Batch<Self::Position>,
        handled: usize,
    ) -> Result<(), SourceError>;

    /// Waits, when caught up, until there may be something new: at most
    /// `idle`, less when the source can tell.
    async fn wait(&mut self, idle: Duration) {
        tokio::time::sleep(idle).await;
    }
}

/// How the pump runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Most records per batch, 1 to [`MAX_BATCH_SIZE`].
    pub batch_size: usize,
    /// Stop once the source is caught up, instead of polling.
    pub once: bool,
    /// Hard deadline of each handler call's writes (the Lambda's function timeout).
    pub write_timeout: Duration,
    /// How many failed handler calls in a row a batch may take before the
    /// pump gives up (unless [`Options::retry_for`] keeps a transient
    /// failure going).
    pub max_attempts: u32,
    /// How long failures that may heal by waiting (a source read or an
    /// archive write refused, timed out, throttled, answered with 5xx) are
    /// retried in a row, past `max_attempts`, before the pump gives up;
    /// `None`: for ever. Failures that cannot heal (credentials, a missing
    /// bucket or stream, a batch that cannot be encoded) are bounded by
    /// `max_attempts` alone.
    pub retry_for: Option<Duration>,
    /// Wait after the first failure; doubled after each further one.
    pub backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Wait when caught up, before polling again (follow mode).
    pub idle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch_size: MAX_BATCH_SIZE,
            once: false,
            write_timeout: Duration::from_secs(60),
            max_attempts: 8,
            retry_for: Some(Duration::ZERO),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            idle: Duration::from_secs(1),
        }
    }
}

impl Options {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), PumpError> {
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(PumpError::BatchSize(self.batch_size));
        }
        if self.max_attempts == 0 {
            return Err(PumpError::Options("max_attempts must be at least 1".into()));
        }
        if self.write_timeout.is_zero() {
            return Err(PumpError::Options(
                "the write timeout must be more than 0".into(),
            ));
        }
        Ok(())
    }

    /// The waits between attempts: [`Options::backoff`] doubling up to
    /// [`Options::max_backoff`], with jitter.
    pub fn backoff_policy(&self) -> Backoff {
        Backoff {
            initial: self.backoff,
            max: self.max_backoff,
        }
    }

    /// Whether to stop after `failures` failures in a row, the first of
    /// them `since` ago, the last `transient` or not.
    pub fn gives_up(&self, failures: u32, transient: bool, since: Duration) -> bool {
        failures >= self.max_attempts
            && !(transient && self.retry_for.is_none_or(|limit| since < limit))
    }
}

/// Why the pump stopped before its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PumpError {
    /// The batch size is out of range.
    #[error("invalid batch size {0}: it must be 1 to 1000 (the records of one GetRecords call)")]
    BatchSize(usize),
    /// Other options are unusable.
    #[error("invalid pump options: {0}")]
    Options(String),
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The handler failed on the same batch too many times in a row.
    #[error(
        "batch from {label} failed{}; giving up (nothing from its first unwritten record on was \
         committed, a restart retries it): {source}",
        in_a_row(*attempts)
    )]
    Handler {
        /// Where the batch came from.
        label: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: Box<HandlerError>,
    },
    /// A projection's stream kept failing on the same event.
    #[error(
        "batch from {label}: stream {stream:?} failed at event {event_id}{}; giving up (nothing \
         from its first record not applied on was committed, a restart retries it)",
        in_a_row(*attempts)
    )]
    Projection {
        /// Where the batch came from.
        label: String,
        /// Attempts made.
        attempts: u32,
        /// The stream.
        stream: String,
        /// The first event not applied.
        event_id: u64,
        /// Why.
        #[source]
        source: Box<evs_projection::DriveError>,
    },
    /// The handler reported the same records as failed too many times in a
    /// row, or once when their failure cannot heal by waiting.
    #[error(
        "batch from {label}: the records from sequence number {sequence} on were reported \
         failed{} (their dead-letter object was not written: {reason}); giving up, a restart \
         retries them",
        in_a_row(*attempts)
    )]
    PartialFailure {
        /// Where the batch came from.
        label: String,
        /// Attempts made.
        attempts: u32,
        /// The first record not written.
        sequence: String,
        /// Why the dead-letter object was not written.
        reason: String,
    },
}

/// ` 3 times in a row` after "failed", nothing for a single attempt.
fn in_a_row(attempts: u32) -> String {
    if attempts == 1 {
        String::new()
    } else {
        format!(" {attempts} times in a row")
    }
}

/// Ends a running pump between batches. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

/// Tells the pump(s) holding the matching [`Stop`] to stop.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<bool>);

impl Stop {
    /// A stop signal and the handle that raises it.
    pub fn channel() -> (StopHandle, Stop) {
        let (tx, rx) = watch::channel(false);
        (StopHandle(tx), Stop(rx))
    }

    /// A signal that is never raised.
    pub fn never() -> Stop {
        Stop::channel().1
    }

    /// True once the stop was asked for.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the stop is asked for (never, when it cannot be any more).
    pub async fn stopped(&mut self) {
        if self.0.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl StopHandle {
    /// Asks the pump to stop after its current batch.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// One handler call of the pump, for progress lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    /// Where the batch came from.
    pub source: String,
    /// Which attempt on these records this was (1 the first).
    pub attempt: u32,
    /// Records committed by this call (0 when it failed).
    pub committed: usize,
    /// What the handler did (absent when it failed).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Why the call failed, when it did (it is then retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a pump run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PumpSummary {
    /// Batches read and committed in full.
    pub batches: usize,
    /// Records committed.
    pub records: usize,
    /// Events archived (a retried partial batch may archive some twice).
    pub archived: usize,
    /// Records dead-lettered.
    pub dead_lettered: usize,
    /// Handler calls that failed or reported failures and were retried.
    pub retries: usize,
    /// True when a [`Stop`] ended the run (false: caught up in `once` mode).
    pub stopped: bool,
}

/// The `SequenceNumber` of a stream record, if it has one.
pub fn sequence_number_of(record: &Value) -> Option<&str> {
    record
        .get("dynamodb")
        .and_then(|d| d.get("SequenceNumber"))
        .and_then(Value::as_str)
}

/// How many records of `records` come before the one whose `SequenceNumber`
/// is `failed`: what may be committed when the handler reports `failed` as
/// the first failure. 0 (commit nothing) when no record has that number.
pub fn handled_before(records: &[Value], failed: &str) -> usize {
    records
        .iter()
        .position(|r| sequence_number_of(r) == Some(failed))
        .unwrap_or(0)
}

/// Runs the pump: reads `source` batch by batch and archives each batch
/// through [`handler::handle`] into `sink`, committing a batch only once it
/// is written. Returns when the source is caught up (in `once` mode), when
/// `stop` is raised (after the current batch), or on an error. `report` sees
/// every handler call.
pub async fn run<S>(
    source: &mut S,
    sink: &dyn ObjectStore,
    config: &Config,
    options: &Options,
    mut stop: Stop,
    report: &mut (dyn FnMut(&BatchReport) + Send),
) -> Result<PumpSummary, PumpError>
where
    S: Source + ?Sized,
{
    options.validate()?;
    let mut summary = PumpSummary::default();
    loop {
        let batch = match next_work(source, options, &mut stop).await? {
            Next::Batch(batch) => batch,
            Next::CaughtUp => return Ok(summary),
            Next::Stopped => {
                summary.stopped = true;
                return Ok(summary);
            }
        };
        let done = archive_batch(
            source,
            &batch,
            sink,
            config,
            options,
            &mut stop,
            report,
            &mut summary,
        )
        .await?;
        if !done {
            summary.stopped = true;
            return Ok(summary);
        }
        summary.batches += 1;
    }
}

/// What a pump loop works on next.
enum Next<P> {
    /// A batch with records.
    Batch(Batch<P>),
    /// The source is caught up and the loop runs [`Options::once`].
    CaughtUp,
    /// A stop was asked for.
    Stopped,
}

/// The next batch with records: an empty one (a closed shard) is committed
/// at once, and a caught-up source is waited on unless [`Options::once`].
async fn next_work<S>(
    source: &mut S,
    options: &Options,
    stop: &mut Stop,
) -> Result<Next<S::Position>, PumpError>
where
    S: Source + ?Sized,
{
    loop {
        if stop.is_stopped() {
            return Ok(Next::Stopped);
        }
        match next_batch(source, options, stop).await? {
            None => return Ok(Next::Stopped),
            Some(None) if options.once => return Ok(Next::CaughtUp),
            Some(None) => {
                tokio::select! {
                    _ = source.wait(options.idle) => {}
                    _ = stop.stopped() => {}
                }
            }
            Some(Some(batch)) if batch.records.is_empty() => source.commit(&batch, 0).await?,
            Some(Some(batch)) => return Ok(Next::Batch(batch)),
        }
    }
}

/// Reads the next batch, retrying failures that may heal as
/// [`Options::retry_for`] allows (each reported on stderr, and the recovery
/// too). `Ok(None)` when a stop came while waiting to retry.
async fn next_batch<S>(
    source: &mut S,
    options: &Options,
    stop: &mut Stop,
) -> Result<Option<Option<Batch<S::Position>>>, PumpError>
where
    S: Source + ?Sized,
{
    let mut streak = Streak::default();
    loop {
        match source.next_batch(options.batch_size).await {
            Ok(batch) => {
                if let Some((failures, lasted)) = streak.end() {
                    tracing::warn!(
                        failures,
                        "reading the stream works again after {} over {}",
                        evs_core::plural(u64::from(failures), "failed attempt"),
                        evs_core::human(lasted)
                    );
                }
                return Ok(Some(batch));
            }
            Err(err) => {
                let (failures, since) = streak.fail();
                if options.gives_up(failures, err.is_transient(), since) {
                    return Err(err.into());
                }
                let wait = options.backoff_policy().delay(failures);
                tracing::warn!(
                    attempt = failures,
                    "{err}; {}",
                    evs_core::retry::retrying(failures, since, wait)
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.stopped() => return Ok(None),
                }
            }
        }
    }
}

/// Archives one batch; true once it is committed in full, false when a stop
/// came while waiting to retry it (its unwritten part is then not committed).
#[allow(clippy::too_many_arguments)]
async fn archive_batch<S>(
    source: &mut S,
    batch: &Batch<S::Position>,
    sink: &dyn ObjectStore,
    config: &Config,
    options: &Options,
    stop: &mut Stop,
    report: &mut (dyn FnMut(&BatchReport) + Send),
    summary: &mut PumpSummary,
) -> Result<bool, PumpError>
where
    S: Source + ?Sized,
{
    let total = batch.records.len();
    let mut start = 0;
    let mut streak = Streak::default();
    while start < total {
        let rest = &batch.records[start..];
        // The Lambda's own entry point, on the event's text as Lambda sends it.
        let event = json!({ "Records": rest }).to_string();
        let attempt = streak.failures() + 1;
        let result = handler::handle(
            &event,
            sink,
            config,
            &evs_core::now_ms,
            Some(options.write_timeout),
        )
        .await;
        match result {
            Ok(s) => {
                let handled = match s.batch_item_failures.first() {
                    None => rest.len(),
                    Some(failed) => handled_before(rest, failed),
                };
                if handled > 0 {
                    source.commit(batch, start + handled).await?;
                    summary.records += handled;
                }
                summary.archived += s.archived;
                summary.dead_lettered += s.dead_lettered;
                let failed = s.batch_item_failures.first().cloned();
                let failure = s.dead_letter_failure.clone();
                report(&BatchReport {
                    source: batch.label.clone(),
                    attempt,
                    committed: handled,
                    summary: Some(s),
                    error: None,
                });
                start += handled;
                match failed {
                    None => return Ok(true),
                    Some(sequence) => {
                        if handled > 0 {
                            // Progress: a new streak starts with this failure.
                            streak.end();
                        }
                        let (failures, since) = streak.fail();
                        // The dead-letter write failed: retried as any archive
                        // write is, as long as it may heal (a prefix the role
                        // may not write to does not: each retry would archive
                        // the rest of the batch again, for ever).
                        let transient = failure.as_ref().is_none_or(|f| f.transient);
                        if options.gives_up(failures, transient, since) {
                            return Err(PumpError::PartialFailure {
                                label: batch.label.clone(),
                                attempts: failures,
                                sequence,
                                reason: failure
                                    .map_or_else(|| "no reason given".to_owned(), |f| f.error),
                            });
                        }
                        tracing::warn!(source = %batch.label, sequence, "partial batch failure; retrying the rest");
                    }
                }
            }
            Err(err) => {
                report(&BatchReport {
                    source: batch.label.clone(),
                    attempt,
                    committed: 0,
                    summary: None,
                    error: Some(err.to_string()),
                });
                let (failures, since) = streak.fail();
                if options.gives_up(failures, err.is_transient(), since) {
                    return Err(PumpError::Handler {
                        label: batch.label.clone(),
                        attempts: failures,
                        source: Box::new(err),
                    });
                }
                tracing::warn!(source = %batch.label, attempt, error = %err, "batch failed; retrying it under a new key");
            }
        }
        summary.retries += 1;
        tokio::select! {
            _ = tokio::time::sleep(options.backoff_policy().delay(streak.failures())) => {}
            _ = stop.stopped() => return Ok(false),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod stream_sim;
#[cfg(test)]
mod tests;
