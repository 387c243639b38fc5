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
//!
//! With a consumer process (`evs replay … -- CMD`) the lines go to its
//! stdin and it acknowledges them on its stdout ([`super::consumer`]): a
//! checkpoint is saved once every line it covers is acknowledged, so a
//! consumer that stops early never has unhandled lines checkpointed.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use evs_archive::store::local::{replace_file, replacement_path};
use evs_replay::Checkpoint;

use super::checkpoint::CheckpointStore;
use super::consumer::Consumer;

/// Where the lines go: stdout, or a consumer process's stdin.
enum Sink {
    Stdout(io::Stdout),
    /// `None` once closed (end of input for the consumer).
    Consumer(Option<std::process::ChildStdin>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(out) => out.write(buf),
            Sink::Consumer(Some(stdin)) => stdin.write(buf),
            Sink::Consumer(None) => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::Consumer(Some(stdin)) => stdin.flush(),
            Sink::Consumer(None) => Ok(()),
        }
    }
}

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

/// Who takes the lines, and how we learn what was taken.
enum Reader {
    /// Whoever reads stdout: what is written and no longer in the pipe.
    Stdout(Option<pipe::Pipe>),
    /// A consumer process: the lines it acknowledged.
    Consumer(Consumer),
}

/// The replay's output and its checkpoint.
pub(super) struct Delivery {
    out: io::BufWriter<Counting<Sink>>,
    reader: Reader,
    store: Option<CheckpointStore>,
    pending: VecDeque<Snapshot>,
    /// The partition (`i/N`) delivered, when not every stream is.
    partition: Option<String>,
    lines: u64,
    /// Lines covered by the last checkpoint saved in this run.
    pub saved_lines: u64,
}

/// How the wait for the consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drained {
    /// Every line was taken; the last checkpoint is saved.
    Taken,
    /// The reader closed the pipe (or the consumer stopped) first.
    ReaderGone,
}

impl Delivery {
    /// Stdout, or `consumer`'s stdin, checkpointed in `store` (if any).
    pub(super) fn new(
        store: Option<CheckpointStore>,
        consumer: Option<Consumer>,
        partition: Option<String>,
    ) -> Self {
        let (sink, reader) = match consumer {
            Some(mut c) => (Sink::Consumer(c.take_stdin()), Reader::Consumer(c)),
            None => (
                Sink::Stdout(io::stdout()),
                Reader::Stdout(pipe::Pipe::stdout()),
            ),
        };
        Self {
            out: io::BufWriter::with_capacity(
                1 << 16,
                Counting {
                    inner: sink,
                    written: 0,
                },
            ),
            reader,
            store,
            pending: VecDeque::new(),
            partition,
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
        // Counted as sent before it is written: a full buffer is flushed
        // inside the write, and the consumer may acknowledge the line
        // before the write returns.
        if let Reader::Consumer(c) = &self.reader {
            c.sent(self.lines + 1);
        }
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }

    /// Flushes what is buffered to the reader.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn written(&self) -> u64 {
        self.out.get_ref().written
    }

    /// Whether the reader has taken every line up to `snapshot`: read it
    /// out of the pipe, or acknowledged it.
    fn taken(&self, snapshot: &Snapshot) -> bool {
        match &self.reader {
            Reader::Stdout(pipe) => {
                let unread = pipe.as_ref().and_then(pipe::Pipe::unread).unwrap_or(0);
                snapshot.offset <= self.written().saturating_sub(unread)
            }
            Reader::Consumer(c) => snapshot.lines <= c.acked(),
        }
    }

    /// Bytes written and not yet taken (for progress; a consumer's unread
    /// lines count as their share of bytes).
    fn untaken(&self) -> u64 {
        match &self.reader {
            Reader::Stdout(pipe) => pipe.as_ref().and_then(pipe::Pipe::unread).unwrap_or(0),
            Reader::Consumer(c) => self.lines.saturating_sub(c.acked()),
        }
    }

    /// Flushes, then queues `checkpoint` (the state after every line written
    /// so far) to be saved once the consumer has taken those lines, and
    /// saves whatever is taken already.
    pub(super) async fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<()> {
        if self.store.is_none() {
            return Ok(());
        }
        self.flush().context("cannot write to the consumer")?;
        let checkpoint = match &self.partition {
            Some(partition) => checkpoint.for_partition(partition.clone()),
            None => checkpoint,
        };
        self.pending.push_back(Snapshot {
            offset: self.written(),
            lines: self.lines,
            checkpoint,
        });
        self.save_taken().await
    }

    /// Saves the newest queued checkpoint whose lines the consumer has all
    /// taken.
    pub(super) async fn save_taken(&mut self) -> Result<()> {
        if self.store.is_none() {
            return Ok(());
        }
        let mut newest = None;
        while self.pending.front().is_some_and(|s| self.taken(s)) {
            newest = self.pending.pop_front();
        }
        if let (Some(snapshot), Some(store)) = (newest, self.store.as_mut()) {
            store.save(&snapshot.checkpoint).await?;
            self.saved_lines = snapshot.lines;
        }
        Ok(())
    }

    /// Whether checkpoints wait for the consumer.
    pub(super) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the reader of the pipe has closed it, or the consumer
    /// stopped reading or acknowledging.
    pub(super) fn reader_gone(&mut self) -> bool {
        match &mut self.reader {
            Reader::Stdout(pipe) => pipe.as_ref().is_some_and(pipe::Pipe::reader_gone),
            Reader::Consumer(c) => c.gone(),
        }
    }

    /// An acknowledgement the consumer sent that cannot be right.
    pub(super) fn consumer_error(&self) -> Result<()> {
        match &self.reader {
            Reader::Consumer(c) => c.check(),
            Reader::Stdout(_) => Ok(()),
        }
    }

    /// Waits until the consumer has taken every line and the last
    /// checkpoint is saved, or the reader closed the pipe (the checkpoint
    /// then covers what it read). A consumer process is sent the end of
    /// its input and waited for. `tick` runs between checks.
    pub(super) async fn drain(&mut self, mut tick: impl FnMut(u64)) -> Result<Drained> {
        self.flush().context("cannot write to the consumer")?;
        if let Reader::Consumer(c) = &self.reader {
            // Every line is written: the consumer sees the end of its input.
            self.out.get_mut().inner = Sink::Consumer(None);
            while c.acked() < self.lines && !c.stopped_acking() {
                c.check()?;
                tick(self.untaken());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.check()?;
        }
        loop {
            self.save_taken().await?;
            if !self.waiting() {
                if let Reader::Consumer(c) = &mut self.reader {
                    c.finish()?;
                }
                return Ok(Drained::Taken);
            }
            if self.reader_gone() {
                self.save_taken().await?;
                return Ok(Drained::ReaderGone);
            }
            tick(self.untaken());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Says who stopped reading, for the error that ends the replay.
    pub(super) fn gone_message(&mut self) -> String {
        let covered = match &self.store {
            Some(store) => format!(
                "; {} covers the first {} of them, which it took",
                store.describe(),
                super::progress::count(self.saved_lines)
            ),
            None => String::new(),
        };
        let lines = super::progress::count(self.lines);
        match &mut self.reader {
            Reader::Stdout(_) => format!(
                "stdout was closed by its reader after {lines} lines were written{covered}; a rerun goes on from there"
            ),
            Reader::Consumer(c) => format!(
                "the consumer {} stopped after acknowledging {} of {lines} lines{}{covered}; a rerun goes on from there",
                c.program(),
                super::progress::count(c.acked()),
                c.exit_note(),
            ),
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
