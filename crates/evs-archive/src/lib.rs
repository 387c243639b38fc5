//! The archive of an event store, as a format and a store.
//!
//! An archive is a set of objects under a prefix, in S3 or a local
//! directory with the bucket's key layout. Each events object is one batch
//! of DynamoDB Streams records, sorted and encoded as NDJSON; its key says
//! when the archiver sealed it, and key order is seal-time order, which is
//! what lets a reader list the archive in order and never skip an object
//! (docs/design.md, §2–3). Everything here is a stable format: readers of old
//! archives depend on it (ARCHITECTURE.md, "Stable formats").
//!
//! The format, pure (no I/O):
//!
//! * [`SequenceNumber`]: a stream record's sequence number, ordered as the
//!   number it is ([`compare_sequence_numbers`]).
//! * [`ArchiveKey`], [`Prefix`], [`Suffix`], [`DeadLetterKey`],
//!   [`start_after_for`]: the key format
//!   (`<prefix>YYYY/MM/DD/HH/<sealed-at>-<suffix>.ndjson.gz`, `.ndjson.zst`
//!   or `.ndjson`); an object of a newer codec is [`KeyError::UnknownKind`],
//!   never skipped.
//! * [`ArchivedEvent`]: one event as the archive holds it, and its line
//!   ([`ArchivedEvent::to_line`], [`ArchivedEvent::from_line`]).
//! * [`encode_events`] / [`decode_events`]: an events object
//!   ([`Compression`]: gzip, zstd or none; [`decompress`] refuses more than
//!   [`MAX_DECOMPRESSED_BYTES`]).
//! * [`DeadLetter`], [`DeadLetterReason`], [`encode_dead_letters`] /
//!   [`decode_dead_letters`]: records that are not events, kept with why.
//!
//! The store, at the rim: [`store::ObjectStore`] (put without overwrite,
//! get, list in key order after a key) with a module per backend:
//! [`store::LocalDir`], [`store::S3Store`], [`store::MemoryStore`].

mod dead_letter;
mod gzip;
mod key;
mod line;
mod object;
mod seq;
pub mod store;

pub use dead_letter::{
    decode_dead_letters, encode_dead_letters, DeadLetter, DeadLetterReason, EncodedDeadLetters,
};
pub use key::{
    start_after_for, ArchiveKey, DeadLetterKey, KeyError, Prefix, Suffix, DEAD_LETTER_EXTENSION,
    MAX_KEY_BYTES, MAX_PREFIX_BYTES, MAX_SEALED_AT_MS, MIN_SEALED_AT_MS,
};
pub use line::{
    event_line, ArchivedEvent, Json, Line, LineError, PayloadEncoding, Str, Text, TimestampSource,
};
pub use object::{
    archive_order, decode_events, decompress, decompress_limited, encode_events, sort_events,
    Compression, DecodeError, EncodeError, EncodedBatch, DEAD_LETTER_CONTENT_TYPE,
    MAX_DECOMPRESSED_BYTES, NDJSON_CONTENT_TYPE, ZSTD_LEVEL,
};
pub use seq::{
    compare_sequence_numbers, SequenceNumber, SequenceNumberError, MAX_SEQUENCE_NUMBER_DIGITS,
};
