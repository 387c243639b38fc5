//! The `evs` binary end to end: against the emulator, and offline on local archives.
//!
//! `evs pump` runs the `evs-pump` binary beside `evs`: `cargo test --workspace`
//! (`make test`) builds it, for crates/evs-pump-cli's own tests; `cargo test -p
//! evs` alone needs `cargo build -p evs-pump-cli` first.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backfill;
mod cli;
mod delivery;
mod e2e;
mod pump;
mod replay;
