//! `evs replay`'s stdout, and checkpoints that cover only what the consumer
//! has taken (`docs/design.md` §5).
//!
//! A line written to a pipe is not yet read: it sits in the pipe's buffer
//! (64 KiB on Linux) until the process at the other end reads it, and is
//! lost if that process exits first (`evs replay … | head -1`). So a
//! checkpoint is not saved when its lines are written but when they are
//! *taken*: [`Delivery`] counts the bytes it has written, asks the kernel how
//! many of them are still unread in the pipe (`FIONREAD`, Linux), and saves
//! the newest checkpoint whose lines all lie before that point. For a file
//! or a terminal every written byte is taken. When the reader closes the
//! pipe, the checkpoint saved is the one that covers what it had read, and
//! the replay stops with an error.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use evs_archive::store::local::{replace_file, replacement_path};
use evs_replay::Checkpoint;

/// Counts the bytes the inner writer accepted.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A checkpoint waiting for the consumer to take the lines before it.
struct Snapshot {
    /// Bytes written when it was taken.
    offset: u64,
    /// Lines written when it was taken.
    lines: u64,
    checkpoint: Checkpoint,
}

/// The replay's stdout and its checkpoint file.
pub(super) struct Delivery {
    out: io::BufWriter<Counting<io::Stdout>>,
    pipe: Option<pipe::Pipe>,
    path: Option<PathBuf>,
    pending: VecDeque<Snapshot>,
    lines: u64,
    /// Lines covered by the last checkpoint saved in this run.
    pub saved_lines: u64,
}

/// How the wait for the consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drained {
    /// Every line was taken; the last checkpoint is saved.
    Taken,
    /// The reader closed the pipe first.
    ReaderGone,
}

impl Delivery {
    /// Stdout, checkpointed in `path` (if any).
    pub(super) fn new(path: Option<PathBuf>) -> Self {
        Self {
            out: io::BufWriter::with_capacity(
                1 << 16,
                Counting {
                    inner: io::stdout(),
                    written: 0,
                },
            ),
            pipe: pipe::Pipe::stdout(),
            path,
            pending: VecDeque::new(),
            lines: 0,
            saved_lines: 0,
        }
    }

    /// Lines written so far.
    pub(super) fn lines(&self) -> u64 {
        self.lines
    }

    /// Writes one line (buffered).
    pub(super) fn line(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }

    /// Flushes what is buffered to stdout.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn written(&self) -> u64 {
        self.out.get_ref().written
    }

    /// Bytes the consumer has taken: all that was written, less what is
    /// still unread in the pipe.
    fn taken(&self) -> u64 {
        let unread = self.pipe.as_ref().and_then(pipe::Pipe::unread).unwrap_or(0);
        self.written().saturating_sub(unread)
    }

    /// Flushes, then queues `checkpoint` (the state after every line written
    /// so far) to be saved once the consumer has taken those lines, and
    /// saves whatever is taken already.
    pub(super) fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<()> {
        if self.path.is_none() {
            return Ok(());
        }
        self.flush().context("cannot write to stdout")?;
        self.pending.push_back(Snapshot {
            offset: self.written(),
            lines: self.lines,
            checkpoint,
        });
        self.save_taken()
    }

    /// Saves the newest queued checkpoint whose lines the consumer has all
    /// taken.
    pub(super) fn save_taken(&mut self) -> Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let taken = self.taken();
        let mut newest = None;
        while self.pending.front().is_some_and(|s| s.offset <= taken) {
            newest = self.pending.pop_front();
        }
        if let Some(snapshot) = newest {
            write_checkpoint(&path, &snapshot.checkpoint)?;
            self.saved_lines = snapshot.lines;
        }
        Ok(())
    }

    /// Whether checkpoints wait for the consumer.
    pub(super) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the reader of the pipe has closed it.
    pub(super) fn reader_gone(&self) -> bool {
        self.pipe.as_ref().is_some_and(pipe::Pipe::reader_gone)
    }

    /// Waits until the consumer has taken every line and the last
    /// checkpoint is saved, or the reader closed the pipe (the checkpoint
    /// then covers what it read). `tick` runs between checks.
    pub(super) async fn drain(&mut self, mut tick: impl FnMut(u64)) -> Result<Drained> {
        self.flush().context("cannot write to stdout")?;
        loop {
            self.save_taken()?;
            if !self.waiting() {
                return Ok(Drained::Taken);
            }
            if self.reader_gone() {
                self.save_taken()?;
                return Ok(Drained::ReaderGone);
            }
            tick(self.written().saturating_sub(self.taken()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks, before the first line, that a checkpoint can be written at
/// `path`: the temporary file it is written through can be created beside it.
pub(crate) fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!(
            "cannot write the checkpoint {}: it is a directory",
            path.display()
        );
    }
    let tmp = replacement_path(path);
    let probe = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp);
    match probe {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot write the checkpoint {} (checked before replaying anything)",
                path.display()
            )
        }),
    }
}

/// Writes the checkpoint atomically ([`replace_file`]).
pub(crate) fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let mut text = checkpoint.to_json()?;
    text.push('\n');
    replace_file(path, text.as_bytes())
        .with_context(|| format!("cannot write the checkpoint {}", path.display()))
}

#[cfg(target_os = "linux")]
mod pipe {
    use std::os::fd::AsRawFd;

    /// Stdout when it is a pipe (FIFO).
    pub(super) struct Pipe {
        fd: i32,
    }

    impl Pipe {
        pub(super) fn stdout() -> Option<Pipe> {
            let fd = std::io::stdout().as_raw_fd();
            // SAFETY: fstat writes into the zeroed struct we own; fd is
            // stdout, open for the life of the process.
            let mut stat: libc::stat = unsafe { std::mem::zeroed() };
            let ok = unsafe { libc::fstat(fd, &mut stat) } == 0;
            (ok && stat.st_mode & libc::S_IFMT == libc::S_IFIFO).then_some(Pipe { fd })
        }

        /// Bytes written to the pipe and not yet read (Linux answers
        /// `FIONREAD` on either end of a pipe).
        pub(super) fn unread(&self) -> Option<u64> {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int into `n`.
            let rc = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut n) };
            (rc == 0).then(|| u64::try_from(n).unwrap_or(0))
        }

        /// Whether every reader has closed the pipe (the write end then
        /// polls as POLLERR).
        pub(super) fn reader_gone(&self) -> bool {
            let mut fds = libc::pollfd {
                fd: self.fd,
                events: 0,
                revents: 0,
            };
            // SAFETY: one pollfd we own, no wait.
            let rc = unsafe { libc::poll(&mut fds, 1, 0) };
            rc > 0 && fds.revents & (libc::POLLERR | libc::POLLHUP) != 0
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod pipe {
    /// Elsewhere the unread part of a pipe is not known: every written
    /// byte counts as taken.
    pub struct Pipe;

    impl Pipe {
        pub fn stdout() -> Option<Pipe> {
            None
        }
        pub fn unread(&self) -> Option<u64> {
            None
        }
        pub fn reader_gone(&self) -> bool {
            false
        }
    }
}
