//! The event model: stream ids, expected versions, events to append and
//! events as recorded. Plain data, no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use uuid::Uuid;

use crate::attr::AttrValue;
use crate::{Error, Result};

/// Largest partition-key value DynamoDB accepts, in UTF-8 bytes.
pub const MAX_STREAM_ID_BYTES: usize = 2048;

/// A stream's version: the `EventId` of its last event, 0 for a stream with no events.
pub type Version = u64;

/// The id of one stream (one aggregate): the table's partition key.
///
/// Non-empty and at most 2048 UTF-8 bytes, DynamoDB's partition-key limit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(String);

impl StreamId {
    /// Checks and wraps a stream id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::InvalidStreamId {
                reason: "a stream id must not be empty".into(),
            });
        }
        if id.len() > MAX_STREAM_ID_BYTES {
            return Err(Error::InvalidStreamId {
                reason: format!(
                    "a stream id is at most {MAX_STREAM_ID_BYTES} bytes, this one has {}",
                    id.len()
                ),
            });
        }
        Ok(Self(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StreamId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// What the writer believes the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the version is (still never a gap, never an overwrite).
    Any,
    /// The stream must not exist yet; the first event gets `EventId` 1.
    NoStream,
    /// The stream's last event must be exactly this one (0 means no stream).
    Exact(Version),
}

impl ExpectedVersion {
    /// The version this expectation pins, if it pins one.
    pub fn version(self) -> Option<Version> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
        }
    }
}

/// Text that is not an [`ExpectedVersion`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a version number, `none` or `any`, not {0:?}")]
pub struct ParseExpectedVersionError(pub String);

/// `any`, `none` (or `no-stream`), or a version number; case and
/// surrounding spaces do not matter.
impl std::str::FromStr for ExpectedVersion {
    type Err = ParseExpectedVersionError;
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "any" => Ok(ExpectedVersion::Any),
            "none" | "no-stream" => Ok(ExpectedVersion::NoStream),
            n => n
                .parse::<Version>()
                .map(ExpectedVersion::Exact)
                .map_err(|_| ParseExpectedVersionError(text.to_owned())),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id of this event; a retried append with the same ids is recognised.
    pub id: Uuid,
    /// The event's name (type), e.g. `OrderPlaced`.
    pub name: String,
    /// The event's data, stored as a DynamoDB map (or other type) with exact numbers.
    pub payload: Value,
    /// Optional metadata (correlation ids, user, …).
    pub metadata: Option<Value>,
    /// Further attributes stored on the item as they are.
    pub attributes: BTreeMap<String, AttrValue>,
}

impl NewEvent {
    /// A new event with a fresh random id.
    pub fn new(name: impl Into<String>, payload: Value) -> Self {
        Self {
            id: Uuid::new_v4(),
            name: name.into(),
            payload,
            metadata: None,
            attributes: BTreeMap::new(),
        }
    }

    /// Sets the event's id (to make an append idempotent across processes).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Adds an extra attribute. Names of the event's own attributes are refused at append.
    pub fn with_attribute(mut self, name: impl Into<String>, value: AttrValue) -> Self {
        self.attributes.insert(name.into(), value);
        self
    }
}

/// An event as stored in a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its position in the stream: 1, 2, 3, … with no gaps.
    pub event_id: Version,
    /// The event's name.
    pub name: String,
    /// The event's data.
    pub payload: Value,
    /// When it was appended, epoch milliseconds; never decreases within a stream.
    pub timestamp_ms: i64,
    /// The id given at append (absent on items written by other tools).
    pub id: Option<Uuid>,
    /// Metadata, if any.
    pub metadata: Option<Value>,
    /// Every other attribute of the item, as stored.
    pub attributes: BTreeMap<String, AttrValue>,
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds,
/// e.g. `2026-11-23T22:07:32.123Z`. Out-of-range values print as the number.
pub fn format_timestamp_ms(ms: i64) -> String {
    if (0..=MAX_FAST_TIMESTAMP_MS).contains(&ms) {
        return format_timestamp_ms_fast(ms);
    }
    format_timestamp_ms_with_time(ms)
}

/// 9999-12-31T23:59:59.999Z, the last time of four-digit years.
const MAX_FAST_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// [`format_timestamp_ms`] for 1970 to 9999 without the `time` crate's
/// general formatter (it runs once per archived event); the same text.
fn format_timestamp_ms_fast(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let ms_of_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fields = [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (ms_of_day / 3_600_000, 2, b':'),
        (ms_of_day / 60_000 % 60, 2, b':'),
        (ms_of_day / 1000 % 60, 2, b'.'),
        (ms_of_day % 1000, 3, b'Z'),
    ];
    let mut out = String::with_capacity(24);
    for (value, width, separator) in fields {
        let mut digits = [b'0'; 4];
        let mut v = value;
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        for &d in &digits[..width] {
            out.push(char::from(d));
        }
        out.push(char::from(separator));
    }
    out
}

fn format_timestamp_ms_with_time(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&fmt).unwrap_or_else(|_| ms.to_string())
        }
        Err(_) => ms.to_string(),
    }
}

/// A stream's last event as a strongly consistent read showed it: enough for
/// [`EventStore::append_after`](crate::EventStore::append_after). It can only
/// be made from a recorded event, and it remembers its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    stream: StreamId,
    version: Version,
    timestamp_ms: i64,
}

impl Head {
    /// The head of a stream whose last event is `event`.
    pub fn of(event: &RecordedEvent) -> Self {
        Self {
            stream: event.stream_id.clone(),
            version: event.event_id,
            timestamp_ms: event.timestamp_ms,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The event's `EventId` (the stream's version).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The event's `Timestamp`, epoch ms.
    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }
}

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// `EventId` of the first appended event.
    pub first: Version,
    /// The stream's version after the append (`EventId` of the last event).
    pub version: Version,
    /// The timestamp given to the appended events.
    pub timestamp_ms: i64,
    /// True when these events were already stored by an earlier attempt with
    /// the same event ids (a retry whose first attempt committed).
    pub already_appended: bool,
}

/// Which way to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// What part of a stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadRequest {
    /// First `EventId` to return: the lowest when reading forward, the highest
    /// when reading backward. `None` starts at the beginning (forward) or end (backward).
    pub from: Option<Version>,
    /// Reading direction.
    pub direction: Direction,
    /// Most events to return; `None` for all.
    pub limit: Option<usize>,
}

impl ReadRequest {
    /// The whole stream, oldest first.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events after `version`, oldest first.
    pub fn after(version: Version) -> Self {
        Self {
            from: Some(version.saturating_add(1)),
            ..Self::default()
        }
    }

    /// The last `n` events, newest first.
    pub fn last(n: usize) -> Self {
        Self {
            from: None,
            direction: Direction::Backward,
            limit: Some(n),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn expected_versions_parse() {
        use super::ExpectedVersion;
        let parse = |t: &str| t.parse::<ExpectedVersion>();
        assert_eq!(parse("any"), Ok(ExpectedVersion::Any));
        assert_eq!(parse(" None "), Ok(ExpectedVersion::NoStream));
        assert_eq!(parse("no-stream"), Ok(ExpectedVersion::NoStream));
        assert_eq!(parse("7"), Ok(ExpectedVersion::Exact(7)));
        for bad in ["-1", "latest", "", "1.5", "99999999999999999999"] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("a version number"), "{err}");
        }
    }

    use super::*;

    #[test]
    fn stream_ids_are_checked() {
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("x".repeat(2049)).is_err());
        assert_eq!(StreamId::new("order-1").unwrap().as_str(), "order-1");
    }

    proptest::proptest! {
        #[test]
        fn the_fast_timestamp_format_is_the_time_crates(
            ms in proptest::prop_oneof![
                0..=MAX_FAST_TIMESTAMP_MS,
                1_700_000_000_000_i64..1_900_000_000_000,
                proptest::num::i64::ANY,
            ]
        ) {
            proptest::prop_assert_eq!(format_timestamp_ms(ms), format_timestamp_ms_with_time(ms));
        }
    }

    #[test]
    fn timestamps_at_the_edges() {
        for ms in [
            0,
            1,
            -1,
            951_782_400_000,   // 2000-02-29
            4_107_542_400_000, // 2100-03-01
            MAX_FAST_TIMESTAMP_MS,
            MAX_FAST_TIMESTAMP_MS + 1,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(
                format_timestamp_ms(ms),
                format_timestamp_ms_with_time(ms),
                "{ms}"
            );
        }
    }

    #[test]
    fn timestamps_print_as_rfc3339_ms() {
        assert_eq!(format_timestamp_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp_ms(1_795_471_652_123),
            "2026-11-23T22:07:32.123Z"
        );
    }
}
