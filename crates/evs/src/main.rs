//! `evs`: the event store's command-line tool. This file parses the flags,
//! runs one subcommand and owns the exit codes:
//!
//! * 0: success;
//! * 1: any error, reported as one line on stderr;
//! * 2: bad usage (unknown flag, missing argument, a value that cannot be
//!   right), reported by the parser, or no table where one is needed, or an
//!   archive location that cannot be right;
//! * 3: a version conflict on append;
//! * 4: `replay` ended with a stream still missing an event, or `verify`
//!   found the archive incomplete (the report says what is missing);
//! * 130: interrupted (Ctrl-C, SIGTERM) before the command finished. A
//!   follower (`replay --follow`) and `pump` end by being stopped: they
//!   finish the current step, save their checkpoint and exit 0.

mod aws;
mod cmd;
mod flags;

use std::process::ExitCode;

use clap::Parser;

/// Exit code of bad usage (as the flag parser's).
const EXIT_USAGE: u8 = 2;
/// Exit code of a version conflict.
const EXIT_CONFLICT: u8 = 3;
/// Exit code of an incomplete replay or archive.
const EXIT_INCOMPLETE: u8 = 4;
/// Exit code of an interrupted command.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = flags::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("evs: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if cmd::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            if let Some(incomplete) = err.downcast_ref::<cmd::Incomplete>() {
                eprintln!("evs: {incomplete}");
                return ExitCode::from(EXIT_INCOMPLETE);
            }
            eprintln!("evs: error: {}", one_line(&err));
            if err.is::<cmd::Usage>() {
                return ExitCode::from(EXIT_USAGE);
            }
            if err.is::<cmd::Interrupted>() {
                return ExitCode::from(EXIT_INTERRUPTED);
            }
            match err.downcast_ref::<evs_core::Error>() {
                Some(evs_core::Error::Conflict { .. }) => ExitCode::from(EXIT_CONFLICT),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message above it already contains (`evs_core::describe_chain`; an SDK
/// error ends the chain, as `SdkCause`, for the message describes it).
fn one_line(err: &anyhow::Error) -> String {
    evs_core::describe_chain(err.as_ref()).replace('\n', " ")
}
