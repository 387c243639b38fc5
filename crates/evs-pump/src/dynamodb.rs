//! A [`Source`] on a table's DynamoDB stream, read the way the Lambda event
//! source mapping reads it. Only this module and `range` talk to the DynamoDB Streams SDK.
//!
//! * `DescribeStream` (paginated) lists the shards; it is repeated when a
//!   shard ends (its children may appear) and every minute.
//! * A shard is read only once its parent, when the stream still lists it,
//!   is read to its end ([`readable_shards`]), so an item's records are
//!   archived in order across a shard split.
//! * Each shard is read from the record after its checkpointed
//!   `SequenceNumber` (`AFTER_SEQUENCE_NUMBER`), else from its oldest record
//!   (`TRIM_HORIZON`); one `GetRecords` call is one batch; a shard is read to
//!   its end when `NextShardIterator` is absent. Shards take turns.
//! * Records are converted to the exact JSON of a Lambda event's records
//!   ([`record_to_json`]): DynamoDB JSON images, numbers as strings, binary
//!   as base64, `ApproximateCreationDateTime` as whole epoch seconds.
//! * The [`Checkpoint`] is saved after every commit when a file is given.
//! * Nothing the stream trimmed (24 h after writing) passes unseen: a shard
//!   the checkpoint has not read to its end that the listing no longer
//!   holds, and a shard read from its oldest record whose records may be
//!   older than a day (no parent still listed, and the pump last caught up
//!   more than [`UNREAD_LIMIT`] ago) stop the pump with the shard's name
//!   ([`SourceError::Trimmed`], [`SourceError::Unread`]) instead of reading
//!   on past the loss; a shard read after its checkpoint learns it from the
//!   stream (`TrimmedDataAccessException`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::config::http::HttpResponse;
use aws_sdk_dynamodbstreams::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, Shard, ShardIteratorType};
pub use aws_sdk_dynamodbstreams::Client;
use evs_core::AttrValue;
use serde_json::{json, Map, Value};

use super::checkpoint::{Checkpoint, ShardCheckpoint};
use super::{sequence_number_of, Batch, Source, SourceError};

/// How often the shard list is refreshed even when no shard ended.
const DESCRIBE_EVERY: Duration = Duration::from_secs(60);
/// Most passes over the shards one `next_batch` makes while only closed
/// shards return empty pages (they end after a few).
const MAX_PASSES: usize = 100;
/// Empty pages in a row after which an open shard counts as caught up.
/// `GetRecords` may return an empty page where the shard has no records in
/// the portion its iterator points to, with records further on ("it might
/// take multiple calls to get to a portion of the shard that contains stream
/// records"): one empty page is not the end of what is there.
const EMPTY_PAGES_CAUGHT_UP: u32 = 5;
/// How long after the pump last caught up a shard it has not read from may
/// hold records older than a day: the stream's 24 h retention less an hour
/// for the difference between this host's clock and the stream's and for
/// trimming that is not to the second.
pub const UNREAD_LIMIT: Duration = Duration::from_secs(23 * 3600);
/// How stale the checkpoint's `readAt` may get before a caught-up pump
/// writes the checkpoint for it alone (well within the hour that
/// [`UNREAD_LIMIT`] keeps back).
const READ_AT_SAVE_EVERY_MS: i64 = 10 * 60 * 1000;

/// A DynamoDB Streams client for `shared` (region, endpoint, credentials).
pub fn client_for(shared: &aws_config::SdkConfig) -> Client {
    Client::new(shared)
}

/// What the pump needs to know of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// `ShardId`.
    pub id: String,
    /// `ParentShardId`, if any.
    pub parent: Option<String>,
    /// The shard has an `EndingSequenceNumber`: no record will be added.
    pub closed: bool,
}

impl ShardInfo {
    fn from_sdk(shard: &Shard) -> Option<Self> {
        Some(Self {
            id: shard.shard_id()?.to_owned(),
            parent: shard.parent_shard_id().map(str::to_owned),
            closed: shard
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some(),
        })
    }
}

/// The shards that may be read now, in the given order: not read to their
/// end yet, and whose parent is either read to its end or no longer listed
/// (trimmed from the stream, after the pump read it to its end or before
/// the checkpoint began: [`DynamoDbSource`] stops on a parent it had not
/// finished).
pub fn readable_shards<'a>(shards: &'a [ShardInfo], checkpoint: &Checkpoint) -> Vec<&'a ShardInfo> {
    let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    shards
        .iter()
        .filter(|s| !checkpoint.is_finished(&s.id))
        .filter(|s| match &s.parent {
            None => true,
            Some(p) => !listed.contains(p.as_str()) || checkpoint.is_finished(p),
        })
        .collect()
}

/// Where reading a shard starts: after its checkpoint, else at its oldest record.
pub fn starting_point(state: &ShardCheckpoint) -> (ShardIteratorType, Option<String>) {
    match &state.sequence_number {
        Some(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq.clone())),
        None => (ShardIteratorType::TrimHorizon, None),
    }
}

/// One attribute value as DynamoDB JSON, exactly as a Lambda event carries
/// it (`{"N": "1.5"}`, `{"B": "<base64>"}`, `{"NULL": true}`, sets as arrays,
/// `M` and `L` recursively): the stream's value as an [`AttrValue`], written
/// by its one DynamoDB JSON writer. A type the SDK does not know (or a
/// `NULL` that is not `true`) becomes `{"UNKNOWN": null}`, which the handler
/// dead-letters as invalid DynamoDB JSON rather than dropping it.
pub fn attribute_to_json(value: &AttributeValue) -> Value {
    from_stream(value)
        .and_then(|a| serde_json::to_value(a).ok())
        .unwrap_or_else(|| json!({"UNKNOWN": null}))
}

fn from_stream(value: &AttributeValue) -> Option<AttrValue> {
    let blob = |b: &aws_sdk_dynamodbstreams::primitives::Blob| b.as_ref().to_vec();
    Some(match value {
        AttributeValue::S(s) => AttrValue::S(s.clone()),
        AttributeValue::N(n) => AttrValue::N(n.clone()),
        AttributeValue::B(b) => AttrValue::B(blob(b)),
        AttributeValue::Bool(b) => AttrValue::Bool(*b),
        AttributeValue::Null(true) => AttrValue::Null,
        AttributeValue::M(m) => AttrValue::M(
            m.iter()
                .map(|(k, v)| Some((k.clone(), from_stream(v)?)))
                .collect::<Option<_>>()?,
        ),
        AttributeValue::L(l) => AttrValue::L(l.iter().map(from_stream).collect::<Option<_>>()?),
        AttributeValue::Ss(v) => AttrValue::Ss(v.clone()),
        AttributeValue::Ns(v) => AttrValue::Ns(v.clone()),
        AttributeValue::Bs(v) => AttrValue::Bs(v.iter().map(blob).collect()),
        _ => return None,
    })
}

/// An item (an image or `Keys`) as a DynamoDB JSON object, keys sorted.
pub fn image_to_json(item: &HashMap<String, AttributeValue>) -> Value {
    let sorted: BTreeMap<&String, Value> = item
        .iter()
        .map(|(k, v)| (k, attribute_to_json(v)))
        .collect();
    json!(sorted)
}

/// One `GetRecords` record as the record of a DynamoDB Streams Lambda event
/// (`eventID`, `eventName`, `eventVersion`, `eventSource`, `awsRegion`,
/// `dynamodb`, `eventSourceARN`, and `userIdentity` when present). Fields
/// the record lacks are left out, so the handler judges them as it would
/// in Lambda.
pub fn record_to_json(record: &Record, stream_arn: &str) -> Value {
    let mut ddb = Map::new();
    if let Some(sr) = record.dynamodb() {
        let fields = [
            (
                "ApproximateCreationDateTime",
                // Lambda delivers whole seconds.
                sr.approximate_creation_date_time().map(|t| json!(t.secs())),
            ),
            ("Keys", sr.keys().map(image_to_json)),
            ("NewImage", sr.new_image().map(image_to_json)),
            ("OldImage", sr.old_image().map(image_to_json)),
            ("SequenceNumber", sr.sequence_number().map(|seq| json!(seq))),
            ("SizeBytes", sr.size_bytes().map(|size| json!(size))),
            (
                "StreamViewType",
                sr.stream_view_type().map(|v| json!(v.as_str())),
            ),
        ];
        ddb.extend(fields.into_iter().filter_map(|(k, v)| Some((k.into(), v?))));
    }
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            out.insert(k.to_owned(), json!(v));
        }
    };
    put("eventID", record.event_id());
    put("eventName", record.event_name().map(|n| n.as_str()));
    put("eventVersion", record.event_version());
    put("eventSource", record.event_source());
    put("awsRegion", record.aws_region());
    if record.dynamodb().is_some() {
        out.insert("dynamodb".into(), Value::Object(ddb));
    }
    out.insert("eventSourceARN".into(), json!(stream_arn));
    if let Some(id) = record.user_identity() {
        let mut ui = Map::new();
        if let Some(p) = id.principal_id() {
            ui.insert("principalId".into(), json!(p));
        }
        if let Some(t) = id.r#type() {
            ui.insert("type".into(), json!(t));
        }
        out.insert("userIdentity".into(), Value::Object(ui));
    }
    Value::Object(out)
}

pub(crate) fn streams_error<E>(
    doing: impl Into<String>,
    err: SdkError<E, HttpResponse>,
) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    SourceError::Streams {
        doing: doing.into(),
        message: evs_core::describe_sdk_error(&err),
        transient: evs_core::is_transient_sdk_error(&err),
        source: Some(Box::new(evs_core::SdkCause::new(err))),
    }
}

/// Where a DynamoDB Streams batch ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoDbPosition {
    /// The shard it was read from.
    pub shard_id: String,
    /// `GetRecords` said the shard ends with this batch.
    pub ends_shard: bool,
}

/// The wall clock, epoch ms (a test passes its own).
#[derive(Clone)]
struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Reads a table's DynamoDB stream, checkpointed.
#[derive(Debug)]
pub struct DynamoDbSource {
    client: Client,
    stream_arn: String,
    checkpoint: Checkpoint,
    checkpoint_file: Option<PathBuf>,
    shards: Vec<ShardInfo>,
    iterators: HashMap<String, String>,
    turn: usize,
    /// Per open shard, the empty pages it returned in a row.
    empty_pages: HashMap<String, u32>,
    described_at: Option<Instant>,
    /// The shard of a batch handed out and not yet committed in full.
    pending: Option<String>,
    /// The wall clock.
    now_ms: Clock,
    /// The `readAt` the checkpoint file holds.
    saved_read_at_ms: Option<i64>,
}

/// What one `GetRecords` call on a shard gave.
struct Page {
    records: Vec<Value>,
    ends_shard: bool,
}

impl DynamoDbSource {
    /// A source on `stream_arn` that keeps its checkpoint in
    /// `checkpoint_file` (loaded now; created on the first commit), or only
    /// in memory when `None`. Refuses a file written for another stream.
    pub fn open(
        client: Client,
        stream_arn: impl Into<String>,
        checkpoint_file: Option<PathBuf>,
    ) -> Result<Self, SourceError> {
        let stream_arn = stream_arn.into();
        let checkpoint = match &checkpoint_file {
            Some(path) => Checkpoint::load(path, &stream_arn)?,
            None => Checkpoint::new(stream_arn.clone()),
        };
        Ok(Self {
            client,
            stream_arn,
            saved_read_at_ms: checkpoint.read_at_ms,
            checkpoint,
            checkpoint_file,
            shards: Vec::new(),
            iterators: HashMap::new(),
            turn: 0,
            empty_pages: HashMap::new(),
            described_at: None,
            pending: None,
            now_ms: Clock(Arc::new(evs_core::now_ms)),
        })
    }

    /// The same source with another wall clock (epoch ms), for tests on a
    /// simulated stream.
    pub fn with_clock(mut self, now_ms: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.now_ms = Clock(Arc::new(now_ms));
        self
    }

    /// Stops on records the stream may have trimmed before the pump
    /// archived them, judged on the listing just taken.
    fn check_trimmed(&self) -> Result<(), SourceError> {
        let listed: HashSet<&str> = self.shards.iter().map(|s| s.id.as_str()).collect();
        // A shard not read to its end left the stream: the records after
        // the checkpoint went with it (and its children would be read as
        // if nothing were missing).
        if let Some((shard, after)) = self.checkpoint.unfinished_gone(&|id| listed.contains(id)) {
            return Err(SourceError::Trimmed {
                shard: shard.to_owned(),
                after: after.map(str::to_owned),
            });
        }
        // A shard the pump has read nothing from is read from its oldest
        // record (TRIM_HORIZON), which hides what was trimmed before it.
        // Under a listed parent it is younger than a day (the parent is
        // listed only within a day of its close, when the shard began); else
        // its records are younger than a day only if the pump read every
        // shard to its present less than a day ago.
        let Some(read_at) = self.checkpoint.read_at_ms else {
            return Ok(());
        };
        let since = Duration::from_millis(
            u64::try_from((self.now_ms.0)().saturating_sub(read_at)).unwrap_or(0),
        );
        if since < UNREAD_LIMIT {
            return Ok(());
        }
        let unread = self.shards.iter().find(|s| {
            let state = self.checkpoint.shard(&s.id);
            !state.finished
                && state.sequence_number.is_none()
                && s.parent.as_deref().is_none_or(|p| !listed.contains(p))
        });
        match unread {
            Some(shard) => Err(SourceError::Unread {
                shard: shard.id.clone(),
                since,
            }),
            None => Ok(()),
        }
    }

    /// The error for `shard` when the stream says its records after the
    /// checkpoint were trimmed.
    fn trimmed(&self, shard: &str) -> SourceError {
        SourceError::Trimmed {
            shard: shard.to_owned(),
            after: self.checkpoint.shard(shard).sequence_number,
        }
    }

    /// Records that every shard was read to its present as of `at_ms` (when
    /// the pass that found it began), writing the checkpoint when the file's
    /// `readAt` is [`READ_AT_SAVE_EVERY_MS`] older or absent.
    fn caught_up(&mut self, at_ms: i64) -> Result<(), SourceError> {
        self.checkpoint.read_at_ms = Some(at_ms);
        if self
            .saved_read_at_ms
            .is_none_or(|saved| at_ms.saturating_sub(saved) >= READ_AT_SAVE_EVERY_MS)
        {
            self.save()?;
        }
        Ok(())
    }

    async fn describe(&mut self) -> Result<(), SourceError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| streams_error(format!("describing stream {}", self.stream_arn), e))?;
            let Some(desc) = out.stream_description() else {
                return Err(SourceError::Stream {
                    arn: self.stream_arn.clone(),
                    reason: "DescribeStream returned no description".into(),
                });
            };
            shards.extend(desc.shards().iter().filter_map(ShardInfo::from_sdk));
            match desc.last_evaluated_shard_id() {
                Some(last) if !last.is_empty() => start = Some(last.to_owned()),
                _ => break,
            }
        }
        tracing::debug!(stream = %self.stream_arn, shards = shards.len(), "described the stream");
        self.shards = shards;
        self.described_at = Some(Instant::now());
        self.check_trimmed()
    }

    async fn iterator(&mut self, shard: &str) -> Result<String, SourceError> {
        if let Some(it) = self.iterators.get(shard) {
            return Ok(it.clone());
        }
        let (kind, seq) = starting_point(&self.checkpoint.shard(shard));
        let result = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .set_sequence_number(seq)
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_trimmed_data_access_exception()) =>
            {
                return Err(self.trimmed(shard))
            }
            Err(e) => {
                return Err(streams_error(
                    format!("getting an iterator for shard {shard}"),
                    e,
                ))
            }
        };
        let it = out
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| SourceError::Stream {
                arn: self.stream_arn.clone(),
                reason: format!("GetShardIterator returned no iterator for shard {shard}"),
            })?;
        self.iterators.insert(shard.to_owned(), it.clone());
        Ok(it)
    }

    async fn read(&mut self, shard: &str, limit: usize) -> Result<Page, SourceError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let mut retried = false;
        loop {
            let it = self.iterator(shard).await?;
            match self
                .client
                .get_records()
                .shard_iterator(it)
                .limit(limit)
                .send()
                .await
            {
                Ok(out) => {
                    let records = out
                        .records()
                        .iter()
                        .map(|r| record_to_json(r, &self.stream_arn))
                        .collect();
                    let ends_shard = match out.next_shard_iterator() {
                        Some(next) => {
                            self.iterators.insert(shard.to_owned(), next.to_owned());
                            false
                        }
                        None => {
                            self.iterators.remove(shard);
                            true
                        }
                    };
                    return Ok(Page {
                        records,
                        ends_shard,
                    });
                }
                Err(e) => {
                    self.iterators.remove(shard);
                    let service = e.as_service_error();
                    if service.is_some_and(|s| s.is_expired_iterator_exception()) && !retried {
                        // Iterators live 15 minutes; get a new one from the checkpoint.
                        retried = true;
                        continue;
                    }
                    if service.is_some_and(|s| s.is_trimmed_data_access_exception()) {
                        return Err(self.trimmed(shard));
                    }
                    return Err(streams_error(format!("reading shard {shard}"), e));
                }
            }
        }
    }

    fn save(&mut self) -> Result<(), SourceError> {
        if let Some(path) = &self.checkpoint_file {
            if self.described_at.is_some() {
                let listed: HashSet<&str> = self.shards.iter().map(|s| s.id.as_str()).collect();
                self.checkpoint.prune(&|id| listed.contains(id));
            }
            self.checkpoint.save(path)?;
            self.saved_read_at_ms = self.checkpoint.read_at_ms;
        }
        Ok(())
    }
}

#[async_trait]
impl Source for DynamoDbSource {
    type Position = DynamoDbPosition;

    async fn next_batch(
        &mut self,
        limit: usize,
    ) -> Result<Option<Batch<DynamoDbPosition>>, SourceError> {
        // A batch handed out and not committed in full (the pump stopped
        // while retrying it): read its shard again from the checkpoint.
        if let Some(shard) = self.pending.take() {
            self.iterators.remove(&shard);
        }
        if self
            .described_at
            .is_none_or(|t| t.elapsed() >= DESCRIBE_EVERY)
        {
            self.describe().await?;
        }
        // Every record written before this is read if this call finds
        // nothing more to read.
        let started_ms = (self.now_ms.0)();
        for _ in 0..MAX_PASSES {
            let readable: Vec<ShardInfo> = readable_shards(&self.shards, &self.checkpoint)
                .into_iter()
                .cloned()
                .collect();
            if readable.is_empty() {
                self.caught_up(started_ms)?;
                return Ok(None);
            }
            let mut progressed = false;
            let mut shard_ended = false;
            let n = readable.len();
            for k in 0..n {
                let shard = &readable[(self.turn + k) % n];
                let page = self.read(&shard.id, limit).await?;
                if !page.records.is_empty() {
                    self.empty_pages.remove(&shard.id);
                    self.turn = (self.turn + k + 1) % n;
                    self.pending = Some(shard.id.clone());
                    return Ok(Some(Batch {
                        records: page.records,
                        position: DynamoDbPosition {
                            shard_id: shard.id.clone(),
                            ends_shard: page.ends_shard,
                        },
                        label: shard.id.clone(),
                    }));
                }
                if page.ends_shard {
                    tracing::info!(shard = %shard.id, "shard read to its end");
                    self.checkpoint.finish(&shard.id);
                    self.save()?;
                    shard_ended = true;
                    progressed = true;
                } else if shard.closed {
                    // A closed shard may return empty pages before its end.
                    progressed = true;
                } else {
                    let streak = self.empty_pages.entry(shard.id.clone()).or_insert(0);
                    *streak = streak.saturating_add(1);
                    if *streak < EMPTY_PAGES_CAUGHT_UP {
                        progressed = true;
                    }
                }
            }
            if !progressed {
                self.caught_up(started_ms)?;
                return Ok(None);
            }
            if shard_ended {
                // Its children may be listed now.
                self.describe().await?;
            }
        }
        Ok(None)
    }

    async fn commit(
        &mut self,
        batch: &Batch<DynamoDbPosition>,
        handled: usize,
    ) -> Result<(), SourceError> {
        let handled = handled.min(batch.records.len());
        let shard = &batch.position.shard_id;
        if handled > 0 {
            let seq = batch
                .records
                .get(handled - 1)
                .and_then(sequence_number_of)
                .filter(|s| evs_archive::SequenceNumber::new(*s).is_ok())
                .ok_or_else(|| SourceError::NoSequenceNumber {
                    label: batch.label.clone(),
                })?;
            self.checkpoint.advance(shard, seq);
        }
        let full = handled == batch.records.len();
        if full {
            self.pending = None;
            if batch.position.ends_shard {
                tracing::info!(shard = %shard, "shard read to its end");
                self.checkpoint.finish(shard);
                // Its children may be listed now.
                self.described_at = None;
            }
        }
        if handled > 0 || (full && batch.position.ends_shard) {
            self.save()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};

    fn shard(id: &str, parent: Option<&str>, closed: bool) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
            closed,
        }
    }

    fn ids(v: Vec<&ShardInfo>) -> Vec<&str> {
        v.into_iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn a_child_waits_for_its_listed_parent() {
        // root ─┬─ a ─┬─ a1
        //       │     └─ a2
        //       └─ b
        // plus an orphan whose parent is trimmed and a second root.
        let shards = vec![
            shard("root", None, true),
            shard("a", Some("root"), true),
            shard("b", Some("root"), false),
            shard("a1", Some("a"), false),
            shard("a2", Some("a"), false),
            shard("orphan", Some("trimmed"), false),
            shard("root2", None, false),
        ];
        let mut cp = Checkpoint::new("arn");
        assert_eq!(
            ids(readable_shards(&shards, &cp)),
            ["root", "orphan", "root2"]
        );
        // Records read from the parent are not enough: it must be finished.
        cp.advance("root", "5");
        assert_eq!(
            ids(readable_shards(&shards, &cp)),
            ["root", "orphan", "root2"]
        );
        cp.finish("root");
        assert_eq!(
            ids(readable_shards(&shards, &cp)),
            ["a", "b", "orphan", "root2"]
        );
        cp.finish("a");
        assert_eq!(
            ids(readable_shards(&shards, &cp)),
            ["b", "a1", "a2", "orphan", "root2"]
        );
        // Once the parent is trimmed from the listing, the children go on
        // whether or not the checkpoint still remembers it.
        let later: Vec<_> = shards[3..].to_vec();
        assert_eq!(
            ids(readable_shards(&later, &Checkpoint::new("arn"))),
            ["a1", "a2", "orphan", "root2"]
        );
        for s in ["b", "a1", "a2", "orphan", "root2"] {
            cp.finish(s);
        }
        assert!(readable_shards(&shards, &cp).is_empty());
    }

    fn offline_client() -> Client {
        use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Region};
        Client::from_conf(
            aws_sdk_dynamodbstreams::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .build(),
        )
    }

    #[tokio::test]
    async fn commits_advance_and_finish_the_shard_in_the_checkpoint_file() {
        let dir = std::env::temp_dir().join(format!(
            "evs-pump-ddb-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let path = dir.join("cp.json");
        let arn = "arn:aws:dynamodb:us-east-1:1:table/t/stream/x";
        let mut source = DynamoDbSource::open(offline_client(), arn, Some(path.clone())).unwrap();
        let arn_of = |s: &str| record_to_json(&sample_record(s), arn);
        let batch = Batch {
            records: vec![
                arn_of("100000000000000000001"),
                arn_of("100000000000000000002"),
                arn_of("100000000000000000003"),
            ],
            position: DynamoDbPosition {
                shard_id: "shardId-1".into(),
                ends_shard: true,
            },
            label: "shardId-1".into(),
        };
        // Nothing handled: nothing written.
        source.commit(&batch, 0).await.unwrap();
        assert!(!path.exists());
        // A partial commit: up to the record before the failure, not finished.
        source.commit(&batch, 2).await.unwrap();
        let cp = Checkpoint::load(&path, arn).unwrap();
        assert_eq!(
            cp.shard("shardId-1"),
            ShardCheckpoint {
                sequence_number: Some("100000000000000000002".into()),
                finished: false
            }
        );
        // In full: the shard ended with this batch.
        source.commit(&batch, 3).await.unwrap();
        let reopened = DynamoDbSource::open(offline_client(), arn, Some(path.clone())).unwrap();
        assert_eq!(
            reopened.checkpoint.shard("shardId-1"),
            ShardCheckpoint {
                sequence_number: Some("100000000000000000003".into()),
                finished: true
            }
        );
        // Another stream's source refuses the file.
        let err =
            DynamoDbSource::open(offline_client(), "arn:other", Some(path.clone())).unwrap_err();
        assert!(matches!(err, SourceError::Checkpoint(_)), "{err}");
        // A record without a sequence number cannot be committed past.
        let mut bad = batch.clone();
        bad.records[0]["dynamodb"]
            .as_object_mut()
            .unwrap()
            .remove("SequenceNumber");
        assert!(matches!(
            source.commit(&bad, 1).await,
            Err(SourceError::NoSequenceNumber { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reading_starts_after_the_checkpoint() {
        assert_eq!(
            starting_point(&ShardCheckpoint::default()),
            (ShardIteratorType::TrimHorizon, None)
        );
        let state = ShardCheckpoint {
            sequence_number: Some("1100000000017454423009".into()),
            finished: false,
        };
        assert_eq!(
            starting_point(&state),
            (
                ShardIteratorType::AfterSequenceNumber,
                Some("1100000000017454423009".into())
            )
        );
    }

    #[test]
    fn attribute_values_become_lambda_dynamodb_json() {
        let m: HashMap<String, AttributeValue> = [
            ("z".to_owned(), AttributeValue::N("1e2".into())),
            ("a".to_owned(), AttributeValue::Null(true)),
        ]
        .into();
        let cases = vec![
            (AttributeValue::S("héllo".into()), json!({"S": "héllo"})),
            (
                AttributeValue::N("12345678901234567890123.5".into()),
                json!({"N": "12345678901234567890123.5"}),
            ),
            (
                AttributeValue::B(Blob::new(vec![0u8, 1, 2, 255])),
                json!({"B": "AAEC/w=="}),
            ),
            (AttributeValue::Bool(false), json!({"BOOL": false})),
            (AttributeValue::Null(true), json!({"NULL": true})),
            (
                AttributeValue::Ss(vec!["a".into(), "b".into()]),
                json!({"SS": ["a", "b"]}),
            ),
            (
                AttributeValue::Ns(vec!["1".into(), "-0.5".into()]),
                json!({"NS": ["1", "-0.5"]}),
            ),
            (
                AttributeValue::Bs(vec![Blob::new(b"hi".to_vec()), Blob::new(Vec::new())]),
                json!({"BS": ["aGk=", ""]}),
            ),
            (
                AttributeValue::L(vec![
                    AttributeValue::S("x".into()),
                    AttributeValue::M(m.clone()),
                ]),
                json!({"L": [{"S": "x"}, {"M": {"a": {"NULL": true}, "z": {"N": "1e2"}}}]}),
            ),
            (AttributeValue::M(HashMap::new()), json!({"M": {}})),
        ];
        for (value, expected) in cases {
            let got = attribute_to_json(&value);
            assert_eq!(got, expected, "{value:?}");
            // evs-core reads it back as the same value.
            evs_core::attr::read_value(&got).unwrap_or_else(|e| panic!("{expected}: {e}"));
        }
        // Image keys are sorted.
        let text = image_to_json(&m).to_string();
        assert_eq!(text, r#"{"a":{"NULL":true},"z":{"N":"1e2"}}"#);
    }

    fn sample_record(seq: &str) -> Record {
        let image: HashMap<String, AttributeValue> = [
            ("StreamId".to_owned(), AttributeValue::S("order-1".into())),
            ("EventId".to_owned(), AttributeValue::N("3".into())),
            ("EventName".to_owned(), AttributeValue::S("Paid".into())),
            (
                "Timestamp".to_owned(),
                AttributeValue::N("1795471652123".into()),
            ),
            ("Payload".to_owned(), AttributeValue::S("{\"a\":1}".into())),
        ]
        .into();
        let keys: HashMap<String, AttributeValue> = [
            ("StreamId".to_owned(), AttributeValue::S("order-1".into())),
            ("EventId".to_owned(), AttributeValue::N("3".into())),
        ]
        .into();
        Record::builder()
            .event_id("e1")
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("eu-west-1")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_millis(1_795_471_652_999))
                    .set_keys(Some(keys))
                    .set_new_image(Some(image))
                    .sequence_number(seq)
                    .size_bytes(120)
                    .stream_view_type(StreamViewType::NewImage)
                    .build(),
            )
            .build()
    }

    #[test]
    fn records_take_the_lambda_shape_and_the_handler_archives_them() {
        let arn = "arn:aws:dynamodb:eu-west-1:1:table/t/stream/2026";
        let got = record_to_json(&sample_record("1100000000017454423009"), arn);
        let expected = json!({
            "eventID": "e1",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_795_471_652,
                "Keys": {"EventId": {"N": "3"}, "StreamId": {"S": "order-1"}},
                "NewImage": {
                    "EventId": {"N": "3"},
                    "EventName": {"S": "Paid"},
                    "Payload": {"S": "{\"a\":1}"},
                    "StreamId": {"S": "order-1"},
                    "Timestamp": {"N": "1795471652123"}
                },
                "SequenceNumber": "1100000000017454423009",
                "SizeBytes": 120,
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": arn
        });
        assert_eq!(got, expected);
        // Same key order as Lambda's JSON.
        let keys: Vec<_> = got.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "eventID",
                "eventName",
                "eventVersion",
                "eventSource",
                "awsRegion",
                "dynamodb",
                "eventSourceARN"
            ]
        );
        match evs_archiver::record::classify(&got) {
            evs_archiver::record::Classified::Event(e) => {
                assert_eq!(e.event.stream_id.as_str(), "order-1");
                assert_eq!(e.event.event_id, 3);
                assert_eq!(e.sequence_number.as_str(), "1100000000017454423009");
            }
            other => panic!("{other:?}"),
        }
        // A record without a dynamodb part keeps that absence for the handler to judge.
        let bare = record_to_json(&Record::builder().event_id("x").build(), arn);
        assert_eq!(bare, json!({"eventID": "x", "eventSourceARN": arn}));
    }
}
