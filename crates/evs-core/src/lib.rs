//! The event model and write path of an event store on DynamoDB.
//!
//! The principal type in this crate is the [`EventStore`] trait: append events
//! to a stream with an [`ExpectedVersion`] and read a stream back. Backends
//! implement one small primitive, [`store::Backend`] (an atomic conditional
//! write and a strongly consistent read); the append algorithm on top of it
//! lives once, here, so every backend has the same semantics. This crate
//! holds [`MemoryStore`] (tests and the offline pipeline); the DynamoDB
//! table in production is `evs_dynamodb::DynamoStore`, in its own crate so
//! that the model does not compile the DynamoDB SDK. On top of the trait,
//! [`decide()`] is the one way application code writes: load and fold the
//! stream, run a pure decision, append with the loaded version, and on a
//! conflict reload and decide again, a bounded number of times.
//!
//! Every backend keeps these rules:
//!
//! * a conflict never overwrites: it is [`Error::Conflict`] with the stream's
//!   actual version;
//! * `EventId`s are 1, 2, 3, … with no gap: appending after a version that
//!   does not exist is a conflict;
//! * a multi-event append is atomic; past DynamoDB's limits (100 items, 4 MB,
//!   400 KB per item), or with a value DynamoDB would refuse (see
//!   [`item`]), it is refused before any call;
//! * a retried append whose first attempt committed (same event ids)
//!   succeeds with [`AppendOutcome::already_appended`] set;
//! * `Timestamp` never goes backwards within a stream.
//!
//! The table's item layout is documented in [`item`]; [`attr`] holds the
//! SDK-independent attribute values and their JSON conversions. With the
//! feature `test-suite`, [`suite`] is the behaviour suite every backend
//! passes.

pub mod attr;
pub mod decide;
mod human;
pub mod item;
pub mod model;
pub mod retry;
pub mod store;

#[cfg(any(test, feature = "test-suite"))]
pub mod suite;

pub use attr::{AttrValue, Item};
pub use decide::{decide, Aggregate, DecideError, Decided, RetryPolicy};
pub use human::{human, plural};
pub use model::{
    format_timestamp_ms, AppendOutcome, Direction, ExpectedVersion, Head, NewEvent, ReadRequest,
    RecordedEvent, StreamId, Version,
};
pub use retry::{is_transient_sdk_error, Backoff, Streak};

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
pub use store::memory::MemoryStore;
pub use store::{now_ms, system_clock, Clock, EventStore, EventStoreExt};

/// The error type of every store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream is not at the expected version; nothing was written.
    #[error("version conflict on stream {stream}: expected version {expected}, actual version is {actual}")]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version when the conflict was detected (0: no stream).
        actual: Version,
    },
    /// The stream id breaks a rule.
    #[error("invalid stream id: {reason}")]
    InvalidStreamId {
        /// Which rule.
        reason: String,
    },
    /// An event cannot be stored as given (DynamoDB would refuse it, or
    /// it breaks the item layout); nothing was written.
    #[error("event {position} of the append is invalid: {reason}")]
    InvalidEvent {
        /// Its position in the append: 1 for the first event given.
        position: usize,
        /// Why, naming the attribute and the path inside it.
        reason: String,
    },
    /// An append without events.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// More events than one atomic append can hold.
    #[error(
        "{count} events in one append; DynamoDB's transaction limit allows at most {max} here"
    )]
    TooManyEvents {
        /// Events given.
        count: usize,
        /// Most allowed.
        max: usize,
    },
    /// One event is over DynamoDB's 400 KB item limit.
    #[error("event {position} of the append would be a {size}-byte item; DynamoDB's item limit is {max} bytes")]
    ItemTooLarge {
        /// Its position in the append: 1 for the first event given.
        position: usize,
        /// Its size by DynamoDB's rules.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An exact expected version so large that the events after it would
    /// have EventIds past the largest the table's sort key holds.
    #[error("expected version {expected} leaves no room for {count} more events (the last EventId is {max})")]
    VersionOutOfRange {
        /// The expected version given.
        expected: Version,
        /// Events in the append.
        count: usize,
        /// The largest EventId.
        max: Version,
    },
    /// The events together are over DynamoDB's 4 MB transaction limit.
    #[error("the append is {size} bytes; DynamoDB's transaction limit is {max} bytes")]
    TransactionTooLarge {
        /// Total size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The append kept colliding with concurrent writers or transactions
    /// (or throttling) and gave up; nothing was written.
    #[error("append to stream {stream} did not go through after {attempts} attempts: the stream keeps changing or transactions keep colliding")]
    Contention {
        /// The stream.
        stream: StreamId,
        /// Attempts made.
        attempts: usize,
    },
    /// An item in the table is not a valid event.
    #[error("item {event_id} of stream {stream} is not a valid event: {reason}")]
    CorruptItem {
        /// Its stream id as stored.
        stream: String,
        /// Its EventId (0 if unreadable).
        event_id: Version,
        /// What is wrong.
        reason: String,
    },
    /// The table does not exist.
    #[error("table {table} does not exist (create it with `evs table create`)")]
    TableNotFound {
        /// Table name.
        table: String,
    },
    /// The backend failed (network, credentials, throttling after retries, …).
    #[error("{message}")]
    Backend {
        /// What was being done, and what went wrong.
        message: String,
        /// Whether waiting and trying again may succeed (an outage, 5xx,
        /// throttling, a transaction still in flight) rather than not
        /// (refused credentials, an invalid request).
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// An error and its causes as one line, each cause once (SDK errors nest the
/// same text several levels deep).
pub fn describe_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(c) = cause {
        let text = c.to_string();
        let text = text.trim();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_owned());
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// An AWS SDK error kept as the `#[source]` of an error whose message
/// already describes it ([`describe_sdk_error`]). It displays as nothing and
/// ends the chain, so an error printed with its causes on one line does not
/// say it twice; [`SdkCause::get`] gives the SDK error itself (downcast it to
/// the operation's `SdkError` type).
#[derive(Debug)]
pub struct SdkCause(Box<dyn std::error::Error + Send + Sync>);

impl SdkCause {
    /// Keeps `err`.
    pub fn new(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(err))
    }

    /// The SDK error.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.0.as_ref()
    }
}

impl std::fmt::Display for SdkCause {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for SdkCause {}

/// An AWS SDK error (of any service) as one readable line that names the
/// service and the operation, then what went wrong:
///
/// * the service's error code and message when it answered with an error
///   (`DynamoDB Query: ValidationException: …`), modelled or not;
/// * the HTTP status and the SDK's reason when the answer had no error code
///   or could not be read (`DynamoDB Query: HTTP 200, unreadable response:
///   …`), never a bare "unhandled error";
/// * `timed out waiting for the answer` or `timed out connecting to the
///   endpoint` when a timeout of the SDK's configuration ended it;
/// * else the chain of causes (connection refused, no credentials, …),
///   each once.
pub fn describe_sdk_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let detail = describe_sdk_failure(err);
    match sdk_operation(std::any::type_name::<E>()) {
        Some(operation) => format!("{operation}: {detail}"),
        None => detail,
    }
}

fn describe_sdk_failure<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let status = err
        .raw_response()
        .and_then(|raw| (raw as &dyn std::any::Any).downcast_ref::<HttpResponse>())
        .map(|raw| raw.status().as_u16());
    if let Some(service) = err.as_service_error() {
        let http = status.map_or_else(String::new, |s| format!("HTTP {s}"));
        return match (service.code(), service.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) if http.is_empty() => code.to_owned(),
            (Some(code), None) => format!("{code} ({http})"),
            (None, message) => {
                // No error code: an answer the SDK could not read (a body
                // that does not parse) or an error it could not classify.
                // Its own text would only be "unhandled error": say what the
                // reason is instead.
                let reason = std::error::Error::source(service)
                    .map(describe_chain)
                    .filter(|r| !r.is_empty())
                    .or_else(|| message.map(str::to_owned))
                    .unwrap_or_else(|| "no error code or message in the response".to_owned());
                let http = if http.is_empty() {
                    "no HTTP status".to_owned()
                } else {
                    http
                };
                format!("{http}, unreadable response: {reason}")
            }
        };
    }
    // The SDK's own words for a timeout name its internals and print the
    // limit as `500ms`; the caller knows the limit and how to change it.
    match err {
        SdkError::TimeoutError(_) => return "timed out waiting for the answer".to_owned(),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            return "timed out connecting to the endpoint".to_owned()
        }
        _ => {}
    }
    let line = describe_chain(err);
    if line.contains("no credentials found") {
        return "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE".to_owned();
    }
    match status {
        Some(s) if !line.contains(&s.to_string()) => format!("HTTP {s}: {line}"),
        _ => line,
    }
}

/// `DynamoDB Query` for `aws_sdk_dynamodb::operation::query::QueryError`:
/// the SDKs name every operation's error type `<Operation>Error` in the
/// crate `aws_sdk_<service>`. `None` for a type named otherwise.
fn sdk_operation(error_type: &str) -> Option<String> {
    let mut segments = error_type.split('<').next()?.split("::");
    let service = match segments.next()?.strip_prefix("aws_sdk_")? {
        "dynamodb" => "DynamoDB",
        "dynamodbstreams" => "DynamoDB Streams",
        "s3" => "S3",
        other => other,
    };
    let operation = segments.last()?.strip_suffix("Error")?;
    (!operation.is_empty()).then(|| format!("{service} {operation}"))
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sdk_cause_is_kept_but_not_said_twice() {
        #[derive(Debug, thiserror::Error)]
        #[error("S3 error while reading k: NoSuchBucket: no such bucket")]
        struct Described(#[source] SdkCause);
        let err = Described(SdkCause::new(std::io::Error::other("service error")));
        assert_eq!(
            describe_chain(&err),
            "S3 error while reading k: NoSuchBucket: no such bucket"
        );
        let cause = std::error::Error::source(&err)
            .and_then(|c| c.downcast_ref::<SdkCause>())
            .unwrap();
        assert!(cause.get().downcast_ref::<std::io::Error>().is_some());
    }

    // How a DynamoDB error reads (`DynamoDB Query: …`) is tested in
    // evs-dynamodb, with that SDK's error types.
    #[test]
    fn sdk_error_types_name_the_service_and_the_operation() {
        assert_eq!(
            sdk_operation("aws_sdk_dynamodb::operation::query::QueryError").as_deref(),
            Some("DynamoDB Query")
        );
        assert_eq!(
            sdk_operation("aws_sdk_s3::operation::put_object::PutObjectError").as_deref(),
            Some("S3 PutObject")
        );
        assert_eq!(
            sdk_operation("aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError")
                .as_deref(),
            Some("DynamoDB Streams GetRecords")
        );
        assert_eq!(sdk_operation("std::io::Error"), None);
    }

    /// An error of no service: its text is its code and message.
    #[derive(Debug)]
    struct Refused(aws_smithy_types::error::ErrorMetadata);

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refused")
        }
    }

    impl std::error::Error for Refused {}

    impl ProvideErrorMetadata for Refused {
        fn meta(&self) -> &aws_smithy_types::error::ErrorMetadata {
            &self.0
        }
    }

    #[test]
    fn service_errors_read_as_code_and_message() {
        let meta = |code: &str, message: Option<&str>| {
            let mut b = aws_smithy_types::error::ErrorMetadata::builder().code(code);
            if let Some(m) = message {
                b = b.message(m);
            }
            Refused(b.build())
        };
        let coded: SdkError<Refused, ()> = SdkError::service_error(
            meta("ValidationException", Some("Empty attribute name")),
            (),
        );
        assert_eq!(
            describe_sdk_error(&coded),
            "ValidationException: Empty attribute name"
        );
        let code_only: SdkError<Refused, ()> = SdkError::service_error(meta("Teapot", None), ());
        assert_eq!(describe_sdk_error(&code_only), "Teapot");
    }
}
