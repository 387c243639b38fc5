//! evs-archiver's integration tests, one binary: the handler on fixture events.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The benches' batch generator (`examples/gen_batch.rs`): batches at Lambda's limits.
#[allow(dead_code)]
#[path = "../../examples/gen_batch.rs"]
mod gen_batch;
mod handler;
