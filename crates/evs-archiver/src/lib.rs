//! The archiver: DynamoDB Streams records in, ordered archive objects out.
//!
//! The archive itself (keys, the line format, dead letters, compression, the
//! object store) is the `evs-archive` crate; this one turns stream records
//! into it:
//!
//! * [`record`]: [`record::parse_batch`] and [`record::classify`] turn the raw
//!   Lambda event into [`record::Classified`] values, each either an
//!   [`evs_archive::ArchivedEvent`] or an [`evs_archive::DeadLetter`] with a
//!   typed reason; never a panic, never a silent drop. Pure.
//! * [`handler`]: [`handler::handle`], one batch in, objects out; a plain
//!   async fn that the Lambda's `main` (the root package), `evs invoke`,
//!   the pump and the tests call;
//! * [`config`]: the environment, checked at start-up, and the object store
//!   it names ([`config::store_for`]);
//! * [`metrics`]: CloudWatch Embedded Metric Format lines.
//!
//! The same handler runs outside Lambda in the `evs-pump` crate.

pub mod config;
#[cfg(test)]
mod encode_tests;
pub mod handler;
pub mod metrics;
pub mod record;
