//! The `evs` binary end to end: against the emulator, and offline on local archives.

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod e2e;
mod pump;
mod replay;
