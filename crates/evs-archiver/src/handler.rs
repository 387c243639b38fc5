//! The archiver's handler: one DynamoDB Streams batch in, at most one archive
//! object (and at most one dead-letter object) out.
//!
//! It is a plain async function of the raw Lambda event, a [`ObjectStore`], the
//! configuration and a clock: `main` wires it to the Lambda runtime, `evs
//! invoke` and the tests call it directly. It reads no environment variable.
//!
//! Order of work, and why:
//! 1. every record is classified on its own (`record`), so one malformed
//!    record can never make the batch fail and block the shard;
//! 2. the events are sorted and encoded (`encode`), a pure step;
//! 3. the batch is sealed: the key takes the wall clock *now* (`key`), never
//!    the events' own timestamps, which is what makes replay safe;
//! 4. the archive object is written; if that fails the invocation fails and
//!    the event source mapping retries the batch (a new attempt, a new key).
//!    Written, it must have landed within the bound of its seal time, by
//!    this host's wall clock after the write and by the store's own clock
//!    when it has one (S3's `Date`): the deadline runs on a monotonic clock,
//!    which stands still while a host is suspended, and cannot see this
//!    host's clock lag the store's. An object that landed later is archived
//!    again under a new key, sealed now (a reader that passed the first key
//!    before it landed reads the second; the events come twice, which
//!    replays drop); a clock behind the store's by more than the bound,
//!    which would seal every key too early, fails the call and does not heal
//!    by retrying;
//! 5. the dead-letter object is written; if only that fails, the records
//!    from the first dead-lettered one on are reported in
//!    `batchItemFailures`, so the archived part is not redone needlessly and
//!    no record is acknowledged unwritten.

use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::record::{self, Classified};
use evs_archive::store::{Object, ObjectStore, StoreError, Stored};
use evs_archive::{ArchiveKey, SequenceNumber};

/// Most times one batch's events object is sealed: one that landed too long
/// after its seal time is archived again, twice at most.
const MAX_SEALS: u32 = 3;

/// A difference between this host's clock and the store's, beyond the
/// store's one-second resolution, that the handler warns about (readers'
/// clock margin is warned about below this too).
const SKEW_WARNING_MS: i64 = 5_000;

/// What one invocation did; printed by `evs invoke`, logged by the Lambda.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Records in the batch.
    pub records_in: usize,
    /// Events archived.
    pub archived: usize,
    /// Records sent to the dead-letter prefix.
    pub dead_lettered: usize,
    /// Bytes of the archive object.
    pub bytes: usize,
    /// The archive object's key, when one was written.
    pub key: Option<String>,
    /// The dead-letter object's key, when one was written.
    pub dead_letter_key: Option<String>,
    /// Age of the oldest event at seal time, ms.
    pub oldest_record_age_ms: Option<i64>,
    /// Sequence numbers Lambda must deliver again (the first of them and all after).
    pub batch_item_failures: Vec<String>,
    /// Why the dead-letter object was not written, when that is what
    /// `batch_item_failures` reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_failure: Option<WriteFailure>,
    /// Seal time, epoch ms.
    pub sealed_at_ms: i64,
}

/// A write that failed without failing the invocation (the dead-letter
/// object: its records are reported in `batchItemFailures` instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteFailure {
    /// The error, as one line.
    pub error: String,
    /// Whether writing again may succeed ([`HandlerError::is_transient`]): a
    /// caller that retries the records (the pump) stops at once when not,
    /// e.g. on a prefix the role may not write to.
    pub transient: bool,
}

/// Why an invocation failed (the mapping retries the batch).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The event is not a DynamoDB Streams batch at all.
    #[error("not a DynamoDB Streams event: {0}")]
    NotABatch(#[from] record::BatchError),
    /// Encoding failed.
    #[error("cannot encode the batch: {0}")]
    Encode(#[from] evs_archive::EncodeError),
    /// A key could not be built.
    #[error("cannot build the object key: {0}")]
    Key(#[from] evs_archive::KeyError),
    /// Writing the archive object failed.
    #[error("archive object {key} was not written: {source}")]
    Write {
        /// The key.
        key: String,
        /// The object store's error.
        #[source]
        source: StoreError,
    },
    /// The write did not finish before the deadline.
    #[error(
        "archive object {key} was not written within {} (the batch will be retried under a new \
         key)",
        evs_core::human(*timeout)
    )]
    Deadline {
        /// The key.
        key: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// Every events object of the batch landed later than the bound after
    /// its seal time (a reader may have passed its key first).
    #[error(
        "archive object {key} landed {landed_after:?} after its seal time, more than the {bound:?} \
         readers allow, {seals} times in a row (the batch will be retried under a new key)"
    )]
    Late {
        /// The last key written.
        key: String,
        /// How long after its seal time it landed.
        landed_after: Duration,
        /// The bound (the handler's timeout).
        bound: Duration,
        /// Objects written.
        seals: u32,
    },
    /// This host's clock is behind the store's by more than the bound: every
    /// key it seals is older than the time its object lands.
    #[error(
        "this host's clock is at least {behind:?} behind the clock of {location}, more than the \
         {bound:?} a write may take: every key it seals would lie behind readers' settled \
         frontier when its object lands; set the clock right (NTP) and run again"
    )]
    ClockBehind {
        /// How far behind, at least.
        behind: Duration,
        /// The bound (the handler's timeout).
        bound: Duration,
        /// The store.
        location: String,
    },
}

impl HandlerError {
    /// Whether calling the handler again on the same batch may succeed: an
    /// archive write that timed out or failed on something that heals by
    /// waiting. Never a batch that cannot be decoded or encoded.
    pub fn is_transient(&self) -> bool {
        match self {
            HandlerError::Write { source, .. } => source.is_transient(),
            HandlerError::Deadline { .. } | HandlerError::Late { .. } => true,
            _ => false,
        }
    }
}

/// Writes `object` at `key`, before `deadline` when one is given.
async fn put_within(
    sink: &dyn ObjectStore,
    key: &str,
    object: &Object,
    deadline: Option<Instant>,
) -> Result<Stored, HandlerError> {
    let put = sink.put(key, object);
    let started = Instant::now();
    let result = match deadline {
        Some(deadline) => {
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), put)
                .await
                .map_err(|_| HandlerError::Deadline {
                    key: key.to_owned(),
                    timeout: deadline.saturating_duration_since(started),
                })?
        }
        None => put.await,
    };
    match result {
        Ok(stored) => Ok(stored),
        // Every key carries a fresh random attempt id, so an object already
        // there can only be this very write, retried by the SDK after its
        // first try landed: it is written.
        Err(StoreError::AlreadyExists { .. }) => {
            tracing::warn!(
                key,
                "the object was already there: an earlier try of this write landed"
            );
            Ok(Stored::default())
        }
        Err(source) => Err(HandlerError::Write {
            key: key.to_owned(),
            source,
        }),
    }
}

/// Writes the events object under a key sealed now, and again under a new
/// key while it lands later than `bound` after its seal time (at most
/// [`MAX_SEALS`] objects); returns the last seal time and key.
async fn write_events(
    sink: &dyn ObjectStore,
    config: &Config,
    object: &Object,
    first_sequence: &SequenceNumber,
    now_ms: &(dyn Fn() -> i64 + Send + Sync),
    deadline: Option<Instant>,
    bound: Option<Duration>,
) -> Result<(i64, ArchiveKey), HandlerError> {
    let mut seals = 0;
    loop {
        let sealed_at = now_ms();
        let suffix = evs_archive::Suffix::random(Some(first_sequence.clone()));
        let key = ArchiveKey::new(&config.prefix, sealed_at, &suffix, config.compression)?;
        let stored = put_within(sink, key.as_str(), object, deadline).await?;
        seals += 1;
        let Some(bound) = bound else {
            return Ok((sealed_at, key));
        };
        let landed_after = landed_after(sealed_at, now_ms(), stored, bound, sink)?;
        if landed_after <= bound {
            return Ok((sealed_at, key));
        }
        if seals >= MAX_SEALS {
            return Err(HandlerError::Late {
                key: key.as_str().to_owned(),
                landed_after,
                bound,
                seals,
            });
        }
        tracing::warn!(
            key = key.as_str(),
            landed_after_ms = landed_after.as_millis(),
            bound_ms = bound.as_millis(),
            "the archive object landed after readers may have passed its key; archiving the batch again under a new key"
        );
    }
}

/// How long after `sealed_at` an object landed: by this host's clock just
/// after the write (`now`), and by the store's when it says its time. Warns
/// when the two clocks differ by more than [`SKEW_WARNING_MS`]; fails when
/// this host's is behind by more than `bound` (no new seal can land in time).
fn landed_after(
    sealed_at: i64,
    now: i64,
    stored: Stored,
    bound: Duration,
    sink: &dyn ObjectStore,
) -> Result<Duration, HandlerError> {
    let mut landed = now.saturating_sub(sealed_at);
    if let Some(server) = stored.server_time_ms {
        // The store's time is to the second, truncated: it was between
        // `server` and `server + 999` when it answered.
        let behind = server.saturating_sub(now);
        let ahead = now.saturating_sub(server.saturating_add(999));
        if behind > SKEW_WARNING_MS || ahead > SKEW_WARNING_MS {
            tracing::warn!(
                location = %sink.location(),
                behind_ms = behind.max(0),
                ahead_ms = ahead.max(0),
                "this host's clock differs from the archive store's: keys carry this host's time"
            );
        }
        let behind = Duration::from_millis(u64::try_from(behind).unwrap_or(0));
        if behind > bound {
            return Err(HandlerError::ClockBehind {
                behind,
                bound,
                location: sink.location(),
            });
        }
        landed = landed.max(server.saturating_sub(sealed_at));
    }
    Ok(Duration::from_millis(u64::try_from(landed).unwrap_or(0)))
}

/// Handles one batch. `now_ms` is the wall clock; `timeout` bounds the
/// handling from the call on: all writes together, the events object and then
/// the dead letters, finish within it or fail (the Lambda passes the time left
/// before its deadline; a long-lived poller passes its own bound, so the
/// settled frontier holds there too). It also bounds how long after its seal
/// time the events object may land, by `now_ms` after the write and by the
/// store's clock when it has one: a later one is written again under a new
/// key (module docs, step 4). Without a timeout neither is checked.
///
/// The event is its JSON text, as the Lambda receives it: records are parsed
/// one at a time, which keeps memory near the batch's size. The Lambda,
/// `evs invoke` and the pump all call this.
pub async fn handle(
    event: &str,
    sink: &dyn ObjectStore,
    config: &Config,
    now_ms: &(dyn Fn() -> i64 + Send + Sync),
    timeout: Option<Duration>,
) -> Result<Summary, HandlerError> {
    // Taken before parsing; none when the bound is too far to represent.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let classified = record::parse_batch_json(event)?;
    let mut summary = Summary {
        records_in: classified.len(),
        ..Summary::default()
    };
    let mut events = Vec::with_capacity(classified.len());
    let mut dead = Vec::new();
    for c in classified {
        match c {
            Classified::Event(e) => events.push(*e),
            Classified::DeadLetter(d) => dead.push(*d),
        }
    }
    summary.archived = events.len();
    summary.dead_lettered = dead.len();

    if !events.is_empty() {
        let encoded = evs_archive::encode_events(&events, config.compression)?;
        let object = Object {
            content_type: encoded.content_type().to_owned(),
            content_encoding: encoded.content_encoding().map(str::to_owned),
            metadata: encoded.metadata(),
            bytes: encoded.bytes,
        };
        let (sealed_at, key) = write_events(
            sink,
            config,
            &object,
            &encoded.first_sequence,
            now_ms,
            deadline,
            timeout,
        )
        .await?;
        summary.sealed_at_ms = sealed_at;
        summary.bytes = object.bytes.len();
        summary.key = Some(key.as_str().to_owned());
        summary.oldest_record_age_ms = Some(sealed_at.saturating_sub(encoded.oldest_timestamp_ms));
    }

    if !dead.is_empty() {
        let sealed_at = now_ms();
        let encoded = evs_archive::encode_dead_letters(&dead)?;
        let suffix = evs_archive::Suffix::random(encoded.first_sequence.clone());
        let key = evs_archive::DeadLetterKey::new(&config.dead_letter_prefix, sealed_at, &suffix)?;
        let object = Object {
            content_type: encoded.content_type().to_owned(),
            content_encoding: None,
            metadata: encoded.metadata(),
            bytes: encoded.bytes,
        };
        match put_within(sink, key.as_str(), &object, deadline).await {
            Ok(_) => summary.dead_letter_key = Some(key.as_str().to_owned()),
            Err(err) => {
                // Report the first dead-lettered record (in delivery order):
                // Lambda retries it and everything after it. Without its
                // sequence number, fail the whole invocation instead: a
                // later record's number would acknowledge it unwritten.
                match dead.first().and_then(|d| d.sequence_number()) {
                    Some(seq) => {
                        tracing::error!(error = %err, "dead-letter object not written; reporting a partial batch failure");
                        // Not written, so not dead-lettered: the mapping
                        // delivers these records again.
                        summary.dead_lettered = 0;
                        summary.batch_item_failures.push(seq.to_string());
                        summary.dead_letter_failure = Some(WriteFailure {
                            error: err.to_string(),
                            transient: err.is_transient(),
                        });
                    }
                    None => return Err(err),
                }
            }
        }
        if summary.sealed_at_ms == 0 {
            summary.sealed_at_ms = sealed_at;
        }
    }
    Ok(summary)
}
