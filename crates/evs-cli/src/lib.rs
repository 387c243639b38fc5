//! What the command-line tools share: `evs` and `evs-pump` (which `evs
//! pump` runs, so that `evs` compiles no DynamoDB Streams SDK).
//!
//! * [`aws`]: the SDK configuration from the standard environment, with
//!   the connect and call timeouts of every client ([`aws::Timeouts`]).
//! * [`location`]: `--archive` and the archiver's environment variables,
//!   as the archiver itself reads them.
//! * [`duration`]: the one duration syntax of every flag, and [`human`],
//!   the one form of a duration in a message.
//! * [`start`] and [`exit`]: logging, the async runtime, and the error
//!   line and exit code a `main` ends with.

pub mod aws;
pub mod location;

use std::process::ExitCode;
use std::time::Duration;

/// Exit code of bad usage (as the flag parser's).
pub const EXIT_USAGE: u8 = 2;

/// The command line asks for something impossible (a missing table, an
/// archive URL that cannot be right): exit code 2, as clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The table `--table`/`EVS_TABLE` names, or a usage error.
pub fn table_name(table: Option<String>) -> anyhow::Result<String> {
    match table {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(Usage("no table given: pass --table NAME or set EVS_TABLE".into()).into()),
    }
}

/// Logs to stderr with `filter` (env-filter syntax; `warn` if it does not
/// parse), in colour only on a terminal, and builds the multi-threaded
/// runtime. `None`: the runtime could not start (said on stderr).
pub fn start(name: &str, filter: &str) -> Option<tokio::runtime::Runtime> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{name}: error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Ends a command with `err`: stdout closed early (`… | head`) is a
/// success; otherwise the error goes on stderr as one line (an AWS call
/// that timed out with the limits and what to do) and the exit code is
/// `code`'s, [`EXIT_USAGE`] for a [`Usage`] error, or 1.
pub fn exit(
    name: &str,
    err: &anyhow::Error,
    code: impl Fn(&anyhow::Error) -> Option<u8>,
) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::SUCCESS;
    }
    let mut line = one_line(err);
    if line.contains("timed out") {
        line = format!("{line} ({})", aws::timeouts().hint());
    }
    eprintln!("{name}: error: {line}");
    if err.is::<Usage>() {
        return ExitCode::from(EXIT_USAGE);
    }
    code(err).map_or(ExitCode::FAILURE, ExitCode::from)
}

/// The error and its causes on one line, without repeating a cause that the
/// message above it already contains (`evs_core::describe_chain`; an SDK
/// error ends the chain, as `SdkCause`, for the message describes it).
pub fn one_line(err: &anyhow::Error) -> String {
    evs_core::describe_chain(err.as_ref()).replace('\n', " ")
}

/// True when the error is stdout closing early (`evs read … | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM, as a container stop sends it.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A duration: a number with a unit, `ms`, `s`, `m` or `h` (`500ms`, `30s`,
/// `1.5s`, `15m`); a bare number is seconds.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use ms, s, m or h (e.g. 500ms, 30s, 15m)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 30s or 15m"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{text:?} is out of range"))
}

/// A duration as a person reads it, in the one form every message uses:
/// `850 µs`, `20 ms`, `1.5 s`, `3 min`, `2.5 h` (one decimal, none when it
/// is `.0`). It is `evs_core::human`, so that the libraries' messages use
/// it too.
pub use evs_core::human;

/// Locks `<checkpoint>.lock` for as long as the returned file is open, so
/// that two runs of `who` (`pump`, `replay`) cannot share one checkpoint
/// file; the checkpoint's directory, which its first save would create, is
/// created first. `flag` names the flag that gives a run its own.
pub fn lock_checkpoint(
    checkpoint: &std::path::Path,
    who: &str,
    flag: &str,
) -> anyhow::Result<std::fs::File> {
    use anyhow::Context;
    if let Some(dir) = checkpoint.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!("cannot create the checkpoint's directory {}", dir.display())
        })?;
    }
    let mut name = checkpoint.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the {who}'s lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "another {who} is running on the checkpoint {} (it holds {}): stop it first, or \
             give this one its own {flag}",
            checkpoint.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// A [`duration`] longer than zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_one_style() {
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert!(duration("-1").is_err());
        assert!(duration("5 parsecs").is_err());
        assert!(duration("").is_err());
        assert!(positive_duration("0s").is_err());
    }
}
