//! A consumer process that acknowledges what it handled
//! (`evs replay … -- CMD ARGS…`).
//!
//! The replay writes its lines to the consumer's stdin. The consumer writes
//! to its stdout, whenever it has durably handled some lines, the number of
//! lines handled so far in this run, one decimal number a line (`1`, `2`,
//! … or every hundredth: acknowledgements are cumulative). A checkpoint is
//! saved only once every line it covers is acknowledged. At the end of the
//! replay the consumer's stdin is closed; it acknowledges the rest and
//! exits 0. It runs in a process group of its own, so Ctrl-C reaches only
//! the replay, which then ends the consumer's input and lets it finish.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};

/// What the thread reading acknowledgements shares.
#[derive(Default)]
struct Acks {
    /// Lines acknowledged.
    acked: AtomicU64,
    /// Lines written to the consumer.
    sent: AtomicU64,
    /// The consumer's stdout ended (it exited or closed it).
    closed: AtomicBool,
    /// An acknowledgement that cannot be right.
    error: Mutex<Option<String>>,
}

/// The consumer process.
pub(crate) struct Consumer {
    child: Child,
    stdin: Option<ChildStdin>,
    acks: Arc<Acks>,
    program: String,
    status: Option<ExitStatus>,
}

impl Consumer {
    /// Starts `command` (a program and its arguments).
    pub(crate) fn spawn(command: &[String]) -> Result<Consumer> {
        let Some((program, args)) = command.split_first() else {
            bail!("no consumer command given after --");
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start the consumer {program:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .context("the consumer's stdout is not a pipe")?;
        let acks = Arc::new(Acks::default());
        let reader = Arc::clone(&acks);
        std::thread::spawn(move || read_acks(BufReader::new(stdout), &reader));
        Ok(Consumer {
            child,
            stdin,
            acks,
            program: program.clone(),
            status: None,
        })
    }

    /// The pipe to the consumer's stdin (once).
    pub(crate) fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Records that `lines` lines have been written to the consumer.
    pub(crate) fn sent(&self, lines: u64) {
        self.acks.sent.store(lines, Ordering::SeqCst);
    }

    /// Lines acknowledged so far.
    pub(crate) fn acked(&self) -> u64 {
        self.acks.acked.load(Ordering::SeqCst)
    }

    /// Whether the consumer can acknowledge no more (its stdout ended).
    pub(crate) fn stopped_acking(&self) -> bool {
        self.acks.closed.load(Ordering::SeqCst)
    }

    /// Whether the consumer stopped: its stdout ended or it exited.
    pub(crate) fn gone(&mut self) -> bool {
        self.stopped_acking() || self.exited().is_some()
    }

    /// Waits, at most `limit`, for the consumer's stdout to end (after it
    /// exited: its last acknowledgements may still be in the pipe).
    pub(crate) async fn wait_acks(&self, limit: std::time::Duration) {
        let until = std::time::Instant::now() + limit;
        while !self.stopped_acking() && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The consumer's exit status once it has exited (asked of the process
    /// until known).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.status = self.status.or_else(|| self.child.try_wait().ok().flatten());
        self.status
    }

    /// The program's name, for messages.
    pub(crate) fn program(&self) -> String {
        format!("{:?}", self.program)
    }

    /// Fails if the consumer sent an acknowledgement that cannot be right.
    pub(crate) fn check(&self) -> Result<()> {
        let error = match self.acks.error.lock() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        match error {
            Some(e) => bail!("the consumer {} {e}", self.program()),
            None => Ok(()),
        }
    }

    /// ", which exited with …", once known.
    pub(crate) fn exit_note(&mut self) -> String {
        match self.exited() {
            Some(status) => format!(" and exited ({status})"),
            None => String::new(),
        }
    }

    /// Waits for the consumer to exit after its input ended; an exit other
    /// than 0 is an error.
    pub(crate) fn finish(&mut self) -> Result<()> {
        let status = match self.status {
            Some(s) => s,
            None => self
                .child
                .wait()
                .with_context(|| format!("cannot wait for the consumer {}", self.program()))?,
        };
        self.status = Some(status);
        if !status.success() {
            bail!(
                "the consumer {} exited with {status} after acknowledging every line",
                self.program()
            );
        }
        Ok(())
    }
}

/// Reads acknowledgements until the consumer's stdout ends or one is wrong.
fn read_acks(stdout: impl BufRead, acks: &Acks) {
    let fail = |message: String| {
        if let Ok(mut e) = acks.error.lock() {
            *e = Some(message);
        }
    };
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let Ok(n) = text.parse::<u64>() else {
            fail(format!(
                "wrote {text:?} to its stdout: a consumer acknowledges with the number of lines \
                 it has handled, one number a line (log to stderr)"
            ));
            break;
        };
        let before = acks.acked.load(Ordering::SeqCst);
        let sent = acks.sent.load(Ordering::SeqCst);
        if n < before {
            fail(format!(
                "acknowledged {n} lines after {before}: acknowledgements count up"
            ));
            break;
        }
        if n > sent {
            fail(format!(
                "acknowledged {n} lines, but only {sent} were sent to it"
            ));
            break;
        }
        acks.acked.store(n, Ordering::SeqCst);
    }
    acks.closed.store(true, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, sent: u64) -> Acks {
        let acks = Acks::default();
        acks.sent.store(sent, Ordering::SeqCst);
        read_acks(text.as_bytes(), &acks);
        acks
    }

    #[test]
    fn acknowledgements_are_cumulative_counts() {
        let acks = run("1\n2\n\n5\n", 5);
        assert_eq!(acks.acked.load(Ordering::SeqCst), 5);
        assert!(acks.closed.load(Ordering::SeqCst));
        assert!(acks.error.lock().unwrap().is_none());
    }

    #[test]
    fn a_wrong_acknowledgement_is_an_error_and_counts_nothing() {
        for (text, wanted) in [
            ("2\nhello\n", "log to stderr"),
            ("3\n2\n", "count up"),
            ("7\n", "only 5 were sent"),
        ] {
            let acks = run(text, 5);
            let error = acks.error.lock().unwrap().clone().unwrap();
            assert!(error.contains(wanted), "{text:?}: {error}");
            assert!(acks.acked.load(Ordering::SeqCst) <= 3);
        }
    }
}
