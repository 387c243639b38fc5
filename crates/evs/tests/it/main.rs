//! The `evs` binary end to end, against the emulator.

mod cli;
