//! The archiver: DynamoDB Streams records in, ordered archive objects out.
//! Its core (`record`, `key`, `encode`) does no I/O.
//!
//! * [`record`]: [`record::parse_batch`] and [`record::classify`] turn the raw
//!   Lambda event into [`record::Classified`] values, each either an
//!   [`record::ArchivedEvent`] (whose [`to_line`](record::ArchivedEvent::to_line)
//!   is the archive's line format) or a [`record::DeadLetter`] with a typed
//!   [`record::DeadLetterReason`]; never a panic, never a silent drop.
//!   [`record::SequenceNumber`] orders sequence numbers as numbers.
//! * [`key`]: the principal type is [`key::ArchiveKey`], the object key whose
//!   UTF-8 order is seal-time order
//!   (`<prefix>YYYY/MM/DD/HH/<sealed-at>-<suffix>.ndjson.gz`, or `.ndjson.zst`
//!   or `.ndjson`), with
//!   [`key::Prefix`], [`key::Suffix`], [`key::DeadLetterKey`] and
//!   [`key::start_after_for`].
//! * [`encode`]: [`encode::encode_events`] sorts events into archive order and
//!   encodes them as gzip- or zstd-compressed NDJSON ([`encode::EncodedBatch`]);
//!   [`encode::encode_dead_letters`] writes the dead-letter object; the
//!   `decode_*` functions read both back.
//!
//!
//! Around that core, the I/O rim:
//!
//! * [`handler`]: [`handler::handle`], one batch in, objects out; a plain
//!   async fn that the Lambda's `main` (the root package), `evs invoke`,
//!   the pump and the tests call;
//! * [`sink`]: the [`sink::Sink`] trait with an S3 and a local-directory
//!   backend of the same key layout;
//! * [`config`]: the environment, checked at start-up;
//! * [`metrics`]: CloudWatch Embedded Metric Format lines.
//!
//! The same handler runs outside Lambda in the `evs-pump` crate.
//!
//! The key and line formats are stable: readers of old archives depend on them.

// The rules ARCHITECTURE.md states, enforced: no unwrap, expect or panic
// outside tests, every public item documented, no `pub` that is not
// reachable.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        unreachable_pub,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod config;
pub mod encode;
pub mod handler;
pub mod key;
pub mod metrics;
pub mod record;
pub mod sink;
