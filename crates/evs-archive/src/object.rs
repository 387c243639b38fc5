//! Archived events to the bytes of one archive object, and back. No I/O.
//!
//! [`encode_events`] sorts the events into archive order ([`archive_order`]:
//! event timestamp, then `StreamId`, then `EventId`, then the stream record's
//! `SequenceNumber` and `eventID`, a total order, so the same records always
//! give the same bytes), writes one [`ArchivedEvent::to_line`] per line
//! (NDJSON, `\n` after every line; [`ArchivedEvent::write_line`] writes it
//! straight into the buffer) and compresses them as [`Compression`]
//! says. The [`EncodedBatch`] it returns carries what the writer needs for
//! the key and the PUT: count, smallest and largest `SequenceNumber`, oldest
//! and newest event timestamp, content type and content encoding.
//!
//!
//! The dead-letter object is [`crate::dead_letter`]'s.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::{Read, Write};

use evs_core::format_timestamp_ms;

use crate::line::{ArchivedEvent, LineError};
use crate::seq::SequenceNumber;

/// Content type of an events object.
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";
/// Content type of a dead-letter object.
pub const DEAD_LETTER_CONTENT_TYPE: &str = "application/json";

/// How an events object is compressed; the key's extension says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// gzip at level 6 (zlib's default; written by libdeflate, `crate::gzip`):
    /// `.ndjson.gz`, `Content-Encoding: gzip`.
    #[default]
    Gzip,
    /// zstd at level [`ZSTD_LEVEL`]: `.ndjson.zst`, `Content-Encoding: zstd`.
    /// About 7× less CPU than gzip and 7% smaller objects on event NDJSON
    /// (README, "Speed and memory"); readers need a zstd decoder.
    Zstd,
    /// Plain NDJSON: `.ndjson`.
    None,
}

impl Compression {
    /// The key's extension.
    pub const fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".ndjson.gz",
            Compression::Zstd => ".ndjson.zst",
            Compression::None => ".ndjson",
        }
    }

    /// The object's `Content-Encoding`, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }
}

/// Why a batch cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// There is nothing to encode: no object should be written.
    #[error("an archive object needs at least one record")]
    Empty,
    /// Writing the bytes failed.
    #[error("cannot encode the archive object: {0}")]
    Io(#[from] std::io::Error),
}

/// Why bytes are not an archive object.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Decompressing failed.
    #[error("cannot decompress the archive object: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not JSON (lines count from 1).
    #[error("line {line} is not JSON: {source}")]
    Json {
        /// The line number.
        line: usize,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A line is not UTF-8 text (lines count from 1).
    #[error("line {line} is not UTF-8: {source}")]
    Utf8 {
        /// The line number.
        line: usize,
        /// Where the text stops being UTF-8.
        source: std::str::Utf8Error,
    },
    /// A line is not an archived event.
    #[error("line {line}: {source}")]
    Line {
        /// The line number.
        line: usize,
        /// What is wrong.
        source: LineError,
    },
    /// A dead letter's reason is not one this version knows (entries count
    /// from 0).
    #[error("invalid dead-letter object: entry {entry} has the unknown reason {code:?}")]
    UnknownReason {
        /// The entry.
        entry: usize,
        /// Its reason code.
        code: String,
    },
}

/// One encoded events object and what the writer needs to store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// The object's bytes.
    pub bytes: Vec<u8>,
    /// How many events (lines) it holds.
    pub count: usize,
    /// The smallest `SequenceNumber` among its records (by number).
    pub first_sequence: SequenceNumber,
    /// The largest `SequenceNumber` among its records (by number).
    pub last_sequence: SequenceNumber,
    /// The oldest event timestamp, epoch ms (the first line's).
    pub oldest_timestamp_ms: i64,
    /// The newest event timestamp, epoch ms (the last line's).
    pub newest_timestamp_ms: i64,
    /// How the bytes are compressed.
    pub compression: Compression,
}

impl EncodedBatch {
    /// The object's `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        NDJSON_CONTENT_TYPE
    }

    /// The object's `Content-Encoding`, if any.
    pub fn content_encoding(&self) -> Option<&'static str> {
        self.compression.content_encoding()
    }

    /// A summary for the object's user metadata (S3 `x-amz-meta-*`): `evs-count`,
    /// `evs-first-sequence`, `evs-last-sequence`, `evs-oldest-timestamp` and
    /// `evs-newest-timestamp` (RFC 3339). ASCII only, as S3 requires.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("evs-count".to_owned(), self.count.to_string()),
            (
                "evs-first-sequence".to_owned(),
                self.first_sequence.to_string(),
            ),
            (
                "evs-last-sequence".to_owned(),
                self.last_sequence.to_string(),
            ),
            (
                "evs-oldest-timestamp".to_owned(),
                format_timestamp_ms(self.oldest_timestamp_ms),
            ),
            (
                "evs-newest-timestamp".to_owned(),
                format_timestamp_ms(self.newest_timestamp_ms),
            ),
        ])
    }
}

/// The order of events inside an object: timestamp, `StreamId`, `EventId`,
/// then `SequenceNumber` and `eventID` so that even duplicates have a fixed place.
pub fn archive_order(a: &ArchivedEvent, b: &ArchivedEvent) -> Ordering {
    a.event
        .timestamp_ms
        .cmp(&b.event.timestamp_ms)
        .then_with(|| a.event.stream_id.as_str().cmp(b.event.stream_id.as_str()))
        .then_with(|| a.event.event_id.cmp(&b.event.event_id))
        .then_with(|| a.sequence_number.cmp(&b.sequence_number))
        .then_with(|| a.record_id.cmp(&b.record_id))
}

/// Sorts events into [`archive_order`] (stable).
pub fn sort_events(events: &mut [ArchivedEvent]) {
    events.sort_by(archive_order);
}

/// Encodes `events` as one object: sorted, NDJSON, compressed.
pub fn encode_events(
    events: &[ArchivedEvent],
    compression: Compression,
) -> Result<EncodedBatch, EncodeError> {
    let mut sorted: Vec<&ArchivedEvent> = events.iter().collect();
    sorted.sort_by(|a, b| archive_order(a, b));
    let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
        return Err(EncodeError::Empty);
    };
    let (oldest_timestamp_ms, newest_timestamp_ms) =
        (first.event.timestamp_ms, last.event.timestamp_ms);
    let mut first_sequence = &first.sequence_number;
    let mut last_sequence = &first.sequence_number;
    for e in &sorted {
        first_sequence = first_sequence.min(&e.sequence_number);
        last_sequence = last_sequence.max(&e.sequence_number);
    }

    let bytes = match compression {
        Compression::None => ndjson(&sorted)?,
        // libdeflate compresses the whole NDJSON in one call.
        Compression::Gzip => crate::gzip::compress(&ndjson(&sorted)?)?,
        // Room for the usual compressed size (about 150 bytes a line), so
        // the object is rarely copied to grow; untouched room costs nothing.
        Compression::Zstd => {
            let out = Vec::with_capacity(sorted.len().saturating_mul(256));
            let mut zst = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            write_chunked(&mut zst, &sorted)?;
            zst.finish()?
        }
    };
    Ok(EncodedBatch {
        bytes,
        count: sorted.len(),
        first_sequence: first_sequence.clone(),
        last_sequence: last_sequence.clone(),
        oldest_timestamp_ms,
        newest_timestamp_ms,
        compression,
    })
}

/// The lines as NDJSON, in one buffer (1 KiB a line, more than the usual
/// line, so the buffer is rarely copied to grow; untouched room costs nothing).
fn ndjson(sorted: &[&ArchivedEvent]) -> Result<Vec<u8>, EncodeError> {
    let mut ndjson = Vec::with_capacity(sorted.len().saturating_mul(1024));
    for e in sorted {
        write_line(&mut ndjson, e)?;
    }
    Ok(ndjson)
}

/// How many bytes of NDJSON are handed to the zstd compressor at a time.
const CHUNK: usize = 64 * 1024;

/// The zstd level of [`Compression::Zstd`]. Measured on event NDJSON (the
/// bench batches): level 1 gave both the smallest and the fastest objects of
/// levels 1, 3 and 6.
pub const ZSTD_LEVEL: i32 = 1;

/// Writes the lines to a compressor a chunk at a time: the whole NDJSON text
/// is never held in memory.
fn write_chunked(out: &mut impl Write, sorted: &[&ArchivedEvent]) -> Result<(), EncodeError> {
    let mut chunk = Vec::with_capacity(CHUNK + CHUNK / 2);
    for e in sorted {
        write_line(&mut chunk, e)?;
        if chunk.len() >= CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    out.write_all(&chunk)?;
    Ok(())
}

/// The most bytes an events object may decompress to: 1 GiB. The largest
/// batch an archiver writes (1,000 records of at most 400 KB items, their
/// lines with the payload twice for binary or sets) stays well below it; a
/// corrupt or hostile object that inflates past it is refused instead of
/// exhausting memory.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// The NDJSON text of an events object as stored with `compression`
/// (borrowed when it is not compressed). A gzip object may hold several
/// members one after another, a zstd object several frames; all are read.
/// More than [`MAX_DECOMPRESSED_BYTES`] is an error
/// (`std::io::ErrorKind::InvalidData`), whatever the compression.
pub fn decompress(
    bytes: &[u8],
    compression: Compression,
) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
    decompress_limited(bytes, compression, MAX_DECOMPRESSED_BYTES)
}

/// [`decompress`] with another limit on the decompressed size.
pub fn decompress_limited(
    bytes: &[u8],
    compression: Compression,
    limit: u64,
) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("decompresses to more than {limit} bytes, the most an events object may hold"),
        )
    };
    let read_all = |reader: &mut dyn Read| -> std::io::Result<Vec<u8>> {
        let guess = bytes.len().saturating_mul(6);
        let mut out = Vec::with_capacity(guess.min(usize::try_from(limit).unwrap_or(usize::MAX)));
        reader.take(limit.saturating_add(1)).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(out)
    };
    Ok(match compression {
        Compression::None => {
            if bytes.len() as u64 > limit {
                return Err(too_large());
            }
            std::borrow::Cow::Borrowed(bytes)
        }
        Compression::Gzip => std::borrow::Cow::Owned(crate::gzip::decompress(bytes, limit)?),
        Compression::Zstd => {
            std::borrow::Cow::Owned(read_all(&mut zstd::stream::read::Decoder::new(bytes)?)?)
        }
    })
}

/// Appends the event's line and a newline.
fn write_line(out: &mut Vec<u8>, event: &ArchivedEvent) -> Result<(), EncodeError> {
    event
        .write_line(out)
        .map_err(|e| EncodeError::Io(e.into()))?;
    out.push(b'\n');
    Ok(())
}

/// The lines of an events object as stored with `compression`: its NDJSON
/// text decompressed and split, numbered from 1. Invalid UTF-8 is a
/// [`DecodeError::Utf8`] naming its line.
fn lines_of(text: &[u8]) -> impl Iterator<Item = (usize, Result<&str, DecodeError>)> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter(move |_| !body.is_empty())
        .map(|(i, line)| {
            (
                i + 1,
                std::str::from_utf8(line).map_err(|source| DecodeError::Utf8 {
                    line: i + 1,
                    source,
                }),
            )
        })
}

/// Decompresses an events object and reads each line as an [`ArchivedEvent`].
pub fn decode_events(
    bytes: &[u8],
    compression: Compression,
) -> Result<Vec<ArchivedEvent>, DecodeError> {
    let text = decompress(bytes, compression)?;
    lines_of(&text)
        .map(|(line, text)| {
            ArchivedEvent::from_line(text?).map_err(|source| DecodeError::Line { line, source })
        })
        .collect()
}
