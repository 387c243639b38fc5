//! The `evs` binary end to end: against the emulator, and offline on local archives.

mod cli;
mod e2e;
mod pump;
mod replay;
