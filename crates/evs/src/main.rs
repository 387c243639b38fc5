//! `evs`: the event store's command-line tool. This file parses the flags,
//! runs one subcommand and owns the exit codes:
//!
//! * 0: success;
//! * 1: any error, reported as one line on stderr;
//! * 2: bad usage (unknown flag, missing argument), reported by the parser;
//! * 3: a version conflict on append.

mod aws;
mod cmd;
mod flags;

use std::process::ExitCode;

use clap::Parser;

/// Exit code of a version conflict.
const EXIT_CONFLICT: u8 = 3;

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
            eprintln!("evs: error: {}", one_line(&err));
            match err.downcast_ref::<evs_core::Error>() {
                Some(evs_core::Error::Conflict { .. }) => ExitCode::from(EXIT_CONFLICT),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message above it already contains. The store's errors are complete
/// sentences: the chain stops there.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let last = cause.is::<evs_core::Error>();
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text.trim());
        if last {
            break;
        }
    }
    out.replace('\n', " ")
}
