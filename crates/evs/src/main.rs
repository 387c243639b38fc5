//! `evs`: the event store's command-line tool. This file parses the flags,
//! runs one subcommand and owns the exit codes:
//!
//! * 0: success;
//! * 1: any error, reported as one line on stderr;
//! * 2: bad usage (unknown flag, missing argument, a value that cannot be
//!   right), reported by the parser, or no table where one is needed, an
//!   archive location that cannot be right, or `--payload`/`--metadata` text
//!   that is not JSON;
//! * 3: a version conflict on append;
//! * 4: `replay` ended with a stream still missing an event, or `verify`
//!   found the archive incomplete (the report says what is missing);
//! * 130: interrupted (Ctrl-C, SIGTERM) before the command finished. A
//!   follower (`replay --follow`) and `pump` end by being stopped: they
//!   finish the current step, save their checkpoint and exit 0.

mod cmd;
mod flags;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// Exit code of a version conflict.
const EXIT_CONFLICT: u8 = 3;
/// Exit code of an incomplete replay or archive.
const EXIT_INCOMPLETE: u8 = 4;
/// Exit code of an interrupted command.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let matches = flags::Cli::command().get_matches();
    let cli = flags::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    evs_cli::aws::configure(cli.timeouts);
    let Some(runtime) = evs_cli::start("evs", &cli.log) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(cmd::run(cli, flags::given_as_env(&matches))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(incomplete) = err.downcast_ref::<cmd::Incomplete>() {
                eprintln!("evs: {incomplete}");
                return ExitCode::from(EXIT_INCOMPLETE);
            }
            evs_cli::exit("evs", &err, |err| {
                if err.is::<cmd::Interrupted>() {
                    return Some(EXIT_INTERRUPTED);
                }
                match err.downcast_ref::<evs_core::Error>() {
                    Some(evs_core::Error::Conflict { .. }) => Some(EXIT_CONFLICT),
                    _ => None,
                }
            })
        }
    }
}
