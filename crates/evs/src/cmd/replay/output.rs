//! `evs replay`'s output, and checkpoints that cover only what the reader
//! has taken (`docs/design.md` §5).
//!
//! A line written to a pipe is not yet read: it sits in the pipe's buffer
//! until the process at the other end reads it, and is lost if that process
//! exits first (`evs replay … | head -1`). So a checkpoint is not saved when
//! its lines are written but once they are *taken*:
//!
//! * a consumer process (`evs replay … -- CMD`) acknowledges the lines it
//!   handled ([`super::consumer`]);
//! * a pipe or a Unix socket on stdout: the bytes written minus those the
//!   kernel says are still unread (`FIONREAD` on a pipe, `SIOCOUTQ` on a
//!   socket, Linux);
//! * a file on stdout: what is written, once `fsync` returns;
//! * a terminal or a device: what is written.
//!
//! A network socket on stdout cannot say what its reader took: a replay
//! that keeps a checkpoint refuses it (use a consumer).
//!
//! The lines are written by a thread of their own, fed through a small
//! bounded queue, so that a reader that takes its time blocks only that
//! thread: meanwhile checkpoints are taken and saved on time
//! ([`Delivery::send`] saves while it waits for room in the queue).
//! [`Snapshot`]s are queued by position (bytes and lines handed to the
//! writer); [`Saver`] saves the newest whose lines are all taken, at most
//! once every `--checkpoint-interval`, and once more at the end.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use evs_archive::store::local::{replace_file, replacement_path};
use evs_core::{Backoff, Streak};
use evs_replay::Checkpoint;
use tokio::sync::mpsc;

use super::checkpoint::{CheckpointStore, SaveError};
use super::consumer::Consumer;
use crate::cmd::progress::count;

/// Bytes gathered before they are handed to the writer thread.
const CHUNK: usize = 16 * 1024;
/// Chunks the writer thread's queue holds. With the chunk being gathered
/// and the one being written, at most 64 KiB lie between the replay and the
/// reader's pipe: what a checkpoint saved right before a crash may trail
/// the output by (besides `--checkpoint-interval`).
const QUEUED_CHUNKS: usize = 2;
/// How often waits look at what the reader has taken.
const TICK: Duration = Duration::from_millis(20);
/// Most checkpoints waiting for their lines to be taken (the newest is
/// replaced once there are this many).
const MAX_PENDING: usize = 16;
/// Waits between attempts to save a checkpoint that failed to save.
const SAVE_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// The reader of the output closed it (or the consumer stopped) before
/// the replay ended.
#[derive(Debug, thiserror::Error)]
#[error("the reader of the replay's output went away")]
pub(super) struct ReaderGone;

/// How far the output has got: bytes and lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Position {
    pub bytes: u64,
    pub lines: u64,
}

/// What the writer thread shares.
#[derive(Default)]
struct Written {
    /// Bytes the sink accepted.
    bytes: AtomicU64,
    /// The writer thread has ended: everything queued is written, or it
    /// failed.
    done: AtomicBool,
    /// Why writing failed.
    error: Mutex<Option<io::Error>>,
}

/// Who takes the lines, and how we learn what was taken.
enum Taker {
    /// A consumer process: the lines it acknowledged.
    Consumer(Consumer),
    /// Stdout is a pipe: written bytes no longer in it (`FIONREAD`).
    Fifo(File),
    /// Stdout is a Unix socket: written bytes no longer queued (`SIOCOUTQ`).
    UnixSocket(File),
    /// Stdout is a regular file: written bytes, once synced.
    File(File),
    /// A terminal or a device: written bytes.
    Direct,
    /// A network socket or something else that cannot say: nothing is
    /// ever known to be taken.
    Unknown,
}

impl Taker {
    /// What stdout is (`dup`ed, to be asked about or synced).
    fn stdout() -> Result<Taker> {
        let fd: OwnedFd = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot duplicate stdout")?;
        let file = File::from(fd);
        Ok(match stdout_kind(&file) {
            Kind::Fifo => Taker::Fifo(file),
            Kind::UnixSocket => Taker::UnixSocket(file),
            Kind::File => Taker::File(file),
            Kind::Direct => Taker::Direct,
            Kind::Unknown => Taker::Unknown,
        })
    }

    /// Bytes of the `written` the reader has taken. `written` must be read
    /// before this is called: bytes written meanwhile then count as unread.
    fn taken_bytes(&self, written: u64) -> u64 {
        match self {
            // Where the kernel cannot say (not Linux), a pipe counts as a
            // file: what is written is taken.
            Taker::Fifo(f) => written.saturating_sub(sys::unread_fifo(f).unwrap_or(0)),
            Taker::UnixSocket(f) => written.saturating_sub(sys::unsent_socket(f).unwrap_or(0)),
            Taker::File(_) | Taker::Direct => written,
            Taker::Consumer(_) | Taker::Unknown => 0,
        }
    }

    /// Whether the reader is gone: a pipe or socket closed by its reader, a
    /// consumer that stopped.
    fn gone(&mut self) -> bool {
        match self {
            Taker::Fifo(f) | Taker::UnixSocket(f) => sys::hung_up(f),
            Taker::Consumer(c) => c.gone(),
            _ => false,
        }
    }
}

/// A checkpoint waiting for the reader to take the lines before it.
struct Snapshot {
    at: Position,
    checkpoint: Checkpoint,
}

/// Saves the newest checkpoint whose lines are taken.
pub(super) struct Saver {
    store: CheckpointStore,
    pending: VecDeque<Snapshot>,
    /// The newest checkpoint whose lines are taken, not saved yet.
    ready: Option<Snapshot>,
    /// The last checkpoint saved, and the lines it covers.
    saved: Option<(u64, Checkpoint)>,
    last_save: Option<Instant>,
    interval: Duration,
    outage: Streak,
    retry_at: Option<Instant>,
    /// Give up once saving has failed this long (`ZERO`: never).
    retry_for: Duration,
    /// The checkpoint file's lock, held as long as the saver lives.
    _lock: Option<File>,
}

impl Saver {
    pub(super) fn new(
        store: CheckpointStore,
        interval: Duration,
        retry_for: Duration,
        lock: Option<File>,
    ) -> Saver {
        Saver {
            store,
            pending: VecDeque::new(),
            ready: None,
            saved: None,
            last_save: None,
            interval,
            outage: Streak::default(),
            retry_at: None,
            retry_for,
            _lock: lock,
        }
    }

    /// What the checkpoint is called in messages.
    pub(super) fn describe(&self) -> String {
        self.store.describe()
    }

    /// Queues `checkpoint`, the state after the lines before `at`. A
    /// checkpoint at the same position as the newest queued one replaces
    /// it (a follower that is idle queues no copies); once
    /// [`MAX_PENDING`] wait, the newest is replaced.
    fn push(&mut self, at: Position, checkpoint: Checkpoint) {
        let snapshot = Snapshot { at, checkpoint };
        let full = self.pending.len() >= MAX_PENDING;
        match self.pending.back_mut() {
            Some(back) if back.at == at || full => *back = snapshot,
            _ => self.pending.push_back(snapshot),
        }
    }

    /// Saves the newest queued checkpoint `taken` accepts, if the interval
    /// has passed since the last save (or `force`) and it differs from the
    /// one saved. A save that fails in a way that may heal is retried
    /// later (reported on stderr), for at most `--retry-for`.
    async fn save(
        &mut self,
        taken: impl Fn(Position) -> bool,
        sync: impl FnOnce() -> io::Result<()>,
        force: bool,
    ) -> Result<()> {
        // The taken ones leave the queue at once (the newest is kept to be
        // saved), so the queue holds only checkpoints still in flight.
        while self.pending.front().is_some_and(|s| taken(s.at)) {
            self.ready = self.pending.pop_front();
        }
        let now = Instant::now();
        if !force
            && (self
                .last_save
                .is_some_and(|t| now.duration_since(t) < self.interval)
                || self.retry_at.is_some_and(|t| now < t))
        {
            return Ok(());
        }
        let Some(snapshot) = self.ready.take() else {
            return Ok(());
        };
        if self
            .saved
            .as_ref()
            .is_some_and(|(_, saved)| *saved == snapshot.checkpoint)
        {
            self.saved = Some((snapshot.at.lines, snapshot.checkpoint));
            return Ok(());
        }
        sync().context("cannot sync stdout before saving the checkpoint that covers it")?;
        match self.store.save(&snapshot.checkpoint).await {
            Ok(()) => {
                if let Some((failures, lasted)) = self.outage.end() {
                    eprintln!(
                        "evs: saved {} again after {} over {}",
                        self.store.describe(),
                        evs_core::plural(u64::from(failures), "failed attempt"),
                        evs_cli::human(lasted)
                    );
                }
                self.retry_at = None;
                self.last_save = Some(Instant::now());
                self.saved = Some((snapshot.at.lines, snapshot.checkpoint));
                Ok(())
            }
            Err(SaveError::Transient(e)) => {
                let (failures, since) = self.outage.fail();
                let wait = SAVE_BACKOFF.delay(failures);
                if !self.retry_for.is_zero() && since + wait > self.retry_for {
                    return Err(e.context(format!(
                        "saving {} kept failing for {} ({failures} attempts; --retry-for {})",
                        self.store.describe(),
                        evs_cli::human(since),
                        evs_cli::human(self.retry_for)
                    )));
                }
                eprintln!(
                    "evs: warning: {}; {}",
                    evs_cli::one_line(&e),
                    evs_core::retry::retrying(failures, since, wait)
                );
                self.retry_at = Some(Instant::now() + wait);
                // Saved at the next attempt (or replaced by a newer one).
                self.ready.get_or_insert(snapshot);
                Ok(())
            }
            Err(SaveError::Fatal(e)) => Err(e),
        }
    }

    /// Lines covered by the last checkpoint saved in this run.
    fn saved_lines(&self) -> u64 {
        self.saved.as_ref().map_or(0, |(lines, _)| *lines)
    }

    /// Whether a taken checkpoint waits to be saved.
    fn unsaved(&self) -> bool {
        self.ready.is_some()
    }
}

/// How the delivery ended, for the summary and the exit.
#[derive(Debug)]
pub(super) struct Delivered {
    /// Lines written.
    pub lines: u64,
    /// Lines covered by the last checkpoint saved in this run (with a
    /// checkpoint).
    pub saved_lines: Option<u64>,
    /// `Some(message)`: the reader went away before taking every line.
    pub gone: Option<String>,
}

/// Why the delivery finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish {
    /// The replay ended (or was stopped): everything gathered is written.
    Ended,
    /// The reader went away first.
    ReaderGone,
    /// The replay failed: what was delivered before is written and
    /// checkpointed as the reader takes it, but the replay is not done.
    Failed,
}

/// The replay's output and its checkpoint.
pub(super) struct Delivery {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    written: Arc<Written>,
    chunk: Vec<u8>,
    /// Bytes and lines handed to the writer (or in `chunk`).
    queued: Position,
    /// Bytes and lines handed to the writer.
    handed: Position,
    /// Bytes the reader was last seen to have taken.
    last_taken: AtomicU64,
    taker: Taker,
    saver: Option<Saver>,
}

impl Delivery {
    /// Stdout, or `consumer`'s stdin, checkpointed by `saver` (if any).
    /// A stdout that cannot say what its reader took is refused when a
    /// checkpoint is kept.
    pub(super) fn start(saver: Option<Saver>, consumer: Option<Consumer>) -> Result<Delivery> {
        let (sink, taker): (Box<dyn Write + Send>, Taker) = match consumer {
            Some(mut c) => {
                let stdin = c
                    .take_stdin()
                    .context("the consumer's stdin is not a pipe")?;
                (Box::new(stdin), Taker::Consumer(c))
            }
            None => {
                let taker = Taker::stdout()?;
                if let (Taker::Unknown, Some(saver)) = (&taker, &saver) {
                    anyhow::bail!(
                        "stdout is a network socket or another kind of file that cannot say what \
                         its reader has read, so {} could cover lines that were never taken: \
                         deliver to a consumer that acknowledges (`evs replay … -- CMD`), or \
                         through a pipe",
                        saver.describe()
                    );
                }
                let out = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("cannot duplicate stdout")?;
                (Box::new(File::from(out)), taker)
            }
        };
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        let written = Arc::new(Written::default());
        let shared = Arc::clone(&written);
        let writer = std::thread::Builder::new()
            .name("evs-replay-writer".into())
            .spawn(move || write_chunks(sink, rx, &shared))
            .context("cannot start the output thread")?;
        Ok(Delivery {
            tx: Some(tx),
            writer: Some(writer),
            written,
            chunk: Vec::with_capacity(CHUNK),
            queued: Position::default(),
            handed: Position::default(),
            last_taken: AtomicU64::new(0),
            taker,
            saver,
        })
    }

    /// Whether a checkpoint is kept.
    pub(super) fn checkpointed(&self) -> bool {
        self.saver.is_some()
    }

    /// Adds one line; a full chunk goes to the writer ([`Delivery::send`]).
    pub(super) async fn line(&mut self, text: &str) -> Result<()> {
        self.chunk.extend_from_slice(text.as_bytes());
        self.chunk.push(b'\n');
        self.queued.bytes += text.len() as u64 + 1;
        self.queued.lines += 1;
        if self.chunk.len() >= CHUNK {
            self.send().await?;
        }
        Ok(())
    }

    /// Hands the gathered lines to the writer thread, saving checkpoints
    /// while it waits for room. [`ReaderGone`] once the writer has stopped.
    pub(super) async fn send(&mut self) -> Result<()> {
        if self.chunk.is_empty() {
            return self.check_writer();
        }
        if let Taker::Consumer(c) = &self.taker {
            // Counted as sent before it is written: the consumer may
            // acknowledge a line before the write returns.
            c.sent(self.queued.lines);
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        let tx = self.tx.clone().ok_or(ReaderGone)?;
        loop {
            tokio::select! {
                permit = tx.reserve() => {
                    permit.map_err(|_| self.writer_error())?.send(chunk);
                    self.handed = self.queued;
                    return Ok(());
                }
                () = tokio::time::sleep(TICK) => self.save_taken().await?,
            }
        }
    }

    /// The writer thread's failure: [`ReaderGone`] for a closed pipe or
    /// socket, else the error.
    fn writer_error(&self) -> anyhow::Error {
        let error = match self.written.error.lock() {
            Ok(e) => e.as_ref().map(|e| (e.kind(), e.to_string())),
            Err(_) => None,
        };
        match error {
            Some((kind, text)) if !reader_closed(kind) => {
                anyhow::Error::new(io::Error::new(kind, text))
                    .context("cannot write the replay's output")
            }
            _ => ReaderGone.into(),
        }
    }

    fn check_writer(&self) -> Result<()> {
        if self.written.done.load(Ordering::SeqCst) {
            return Err(self.writer_error());
        }
        Ok(())
    }

    /// Queues `checkpoint` (the state after every line handed over so far)
    /// to be saved once the reader has taken those lines.
    pub(super) async fn snapshot(&mut self, checkpoint: Checkpoint) -> Result<()> {
        if let Some(saver) = &mut self.saver {
            saver.push(self.queued, checkpoint);
        }
        self.save_taken().await
    }

    /// Bytes written, then bytes taken (in that order: see
    /// [`Taker::taken_bytes`]). Once the reader of a socket has closed it,
    /// what it held unread is dropped and no longer counts as unread: the
    /// last measure taken while it was open stands. (A pipe keeps what its
    /// reader left unread for as long as it is open for writing.)
    fn taken_position(&self) -> (u64, u64) {
        let written = self.written.bytes.load(Ordering::SeqCst);
        let open = |taker: &Taker| match taker {
            Taker::UnixSocket(f) => !sys::hung_up(f),
            _ => true,
        };
        if open(&self.taker) {
            let taken = self.taker.taken_bytes(written);
            if open(&self.taker) {
                self.last_taken.fetch_max(taken, Ordering::SeqCst);
            }
        }
        (written, self.last_taken.load(Ordering::SeqCst))
    }

    /// Whether `at` is taken.
    fn is_taken(&self, at: Position) -> bool {
        match &self.taker {
            Taker::Consumer(c) => at.lines <= c.acked(),
            _ => at.bytes <= self.taken_position().1,
        }
    }

    /// Saves the newest queued checkpoint whose lines the reader has all
    /// taken, if it is time to.
    pub(super) async fn save_taken(&mut self) -> Result<()> {
        self.save(false).await
    }

    async fn save(&mut self, force: bool) -> Result<()> {
        let Some(mut saver) = self.saver.take() else {
            return Ok(());
        };
        let result = {
            let this = &*self;
            saver
                .save(|at| this.is_taken(at), || this.sync(), force)
                .await
        };
        self.saver = Some(saver);
        if let Taker::Consumer(c) = &self.taker {
            c.check()?;
        }
        result
    }

    /// A file on stdout is synced before a checkpoint covers its lines.
    fn sync(&self) -> io::Result<()> {
        match &self.taker {
            Taker::File(f) => f.sync_data(),
            _ => Ok(()),
        }
    }

    /// Whether the reader has gone away (a closed pipe, a consumer that
    /// stopped), or an acknowledgement that cannot be right.
    pub(super) fn reader_gone(&mut self) -> Result<bool> {
        if let Taker::Consumer(c) = &self.taker {
            c.check()?;
        }
        Ok(self.written.done.load(Ordering::SeqCst) || self.taker.gone())
    }

    /// Waits until `until` (or `woken`), saving checkpoints as the reader
    /// takes their lines. [`ReaderGone`] if it goes away meanwhile.
    pub(super) async fn wait(&mut self, until: Instant, woken: &tokio::sync::Notify) -> Result<()> {
        self.send().await?;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(left.min(TICK * 5)) => {}
                () = woken.notified() => return Ok(()),
            }
            self.save_taken().await?;
            if self.reader_gone()? {
                return Err(ReaderGone.into());
            }
        }
    }

    /// Ends the delivery: the rest is written, the reader's end of input
    /// follows (a consumer is waited for), and the newest checkpoint whose
    /// lines were taken is saved. `tick` runs while it waits, with what is
    /// not yet taken.
    pub(super) async fn finish(
        mut self,
        how: Finish,
        mut tick: impl FnMut(&str),
    ) -> Result<Delivered> {
        if how != Finish::ReaderGone {
            if let Err(e) = self.send().await {
                e.downcast::<ReaderGone>()?;
            }
        }
        // What never reached the writer is not delivered.
        self.chunk.clear();
        self.queued = self.handed;
        // Closing the queue ends the writer thread once it has written
        // everything; it then closes the consumer's stdin.
        self.tx = None;
        while !self.written.done.load(Ordering::SeqCst) {
            tick(&self.untaken());
            self.save_taken().await?;
            tokio::time::sleep(TICK).await;
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let closed = match self.written.error.lock() {
            Ok(e) => e.is_some(),
            Err(_) => true,
        };
        let all_taken = self.wait_taken(&mut tick).await?;
        self.save(true).await?;
        while self
            .saver
            .as_ref()
            .is_some_and(|s| s.retry_at.is_some() && s.unsaved())
        {
            // The last save failed in a way that may heal: try again.
            let at = self.saver.as_ref().and_then(|s| s.retry_at);
            if let Some(at) = at {
                tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
            }
            self.save(true).await?;
        }
        let gone = (how == Finish::ReaderGone || closed || !all_taken).then(|| self.gone_message());
        if gone.is_none() {
            if let Taker::Consumer(c) = &mut self.taker {
                c.finish()?;
            }
        }
        Ok(Delivered {
            lines: self.queued.lines,
            saved_lines: self.saver.as_ref().map(Saver::saved_lines),
            gone,
        })
    }

    /// Waits until the reader has taken every line (true) or has gone
    /// (false): a consumer acknowledges the rest or stops acknowledging, a
    /// pipe is read empty or closed.
    async fn wait_taken(&mut self, tick: &mut impl FnMut(&str)) -> Result<bool> {
        let all = self.queued;
        if self.saver.is_none() && !matches!(self.taker, Taker::Consumer(_)) {
            // Nothing to checkpoint: what is written is the reader's.
            return Ok(true);
        }
        loop {
            if self.is_taken(all) {
                return Ok(true);
            }
            match &mut self.taker {
                Taker::Consumer(c) => {
                    c.check()?;
                    if c.stopped_acking() {
                        // Its stdout ended: every acknowledgement is in.
                        return Ok(self.is_taken(all));
                    }
                    if c.exited().is_some() {
                        // Exited, and a process it left behind may hold
                        // its stdout: wait a little for the last
                        // acknowledgements, no longer.
                        c.wait_acks(Duration::from_secs(2)).await;
                        c.check()?;
                        return Ok(self.is_taken(all));
                    }
                }
                Taker::Unknown => return Ok(true),
                taker => {
                    if taker.gone() {
                        return Ok(false);
                    }
                }
            }
            tick(&self.untaken());
            self.save_taken().await?;
            tokio::time::sleep(TICK).await;
        }
    }

    /// What the reader has not taken yet, for progress.
    fn untaken(&self) -> String {
        match &self.taker {
            Taker::Consumer(c) => format!(
                "{} lines not acknowledged",
                count(self.queued.lines.saturating_sub(c.acked()))
            ),
            _ => format!(
                "{} bytes unread",
                count(self.queued.bytes.saturating_sub(self.taken_position().1))
            ),
        }
    }

    /// Says who stopped reading, for the error that ends the replay.
    fn gone_message(&mut self) -> String {
        let covered = match &self.saver {
            Some(saver) => format!(
                "; {} covers the first {} of them, which it took",
                saver.describe(),
                count(saver.saved_lines())
            ),
            None => String::new(),
        };
        let lines = count(self.queued.lines);
        match &mut self.taker {
            Taker::Consumer(c) => format!(
                "the consumer {} stopped after acknowledging {} of {lines} lines{}{covered}; a rerun goes on from there",
                c.program(),
                count(c.acked()),
                c.exit_note(),
            ),
            _ => format!(
                "stdout was closed by its reader after {lines} lines were written{covered}; a rerun goes on from there"
            ),
        }
    }
}

/// Whether a write failed because the reader closed its end: a pipe
/// (`EPIPE`) or a socket closed with data unread (`ECONNRESET`).
fn reader_closed(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// The writer thread: writes each chunk whole, counting the bytes the sink
/// accepted, until the queue closes or a write fails. Dropping the sink at
/// the end closes a consumer's stdin.
fn write_chunks(
    mut sink: Box<dyn Write + Send>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    written: &Written,
) {
    let failed = |e: io::Error| {
        if let Ok(mut slot) = written.error.lock() {
            *slot = Some(e);
        }
    };
    'chunks: while let Some(chunk) = rx.blocking_recv() {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            match sink.write(rest) {
                Ok(0) => {
                    failed(io::ErrorKind::WriteZero.into());
                    break 'chunks;
                }
                Ok(n) => {
                    written.bytes.fetch_add(n as u64, Ordering::SeqCst);
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed(e);
                    break 'chunks;
                }
            }
        }
    }
    drop(rx);
    drop(sink);
    written.done.store(true, Ordering::SeqCst);
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
pub(crate) fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    let mut text = checkpoint.to_json().map_err(io::Error::other)?;
    text.push('\n');
    replace_file(path, text.as_bytes())
}

/// What stdout is, for [`Taker`].
enum Kind {
    Fifo,
    UnixSocket,
    File,
    Direct,
    Unknown,
}

fn stdout_kind(file: &File) -> Kind {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = file.metadata() else {
        return Kind::Unknown;
    };
    let kind = meta.file_type();
    if kind.is_fifo() {
        Kind::Fifo
    } else if kind.is_socket() {
        if sys::is_unix_socket(file) {
            Kind::UnixSocket
        } else {
            Kind::Unknown
        }
    } else if kind.is_file() {
        Kind::File
    } else {
        Kind::Direct
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    fn ioctl_count(file: &File, request: libc::Ioctl) -> Option<u64> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD and SIOCOUTQ write one c_int into `n`; the fd
        // is open for as long as `file` lives.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, &mut n) };
        (rc == 0).then(|| u64::try_from(n).unwrap_or(0))
    }

    /// Bytes written to the pipe and not yet read (Linux answers
    /// `FIONREAD` on either end of a pipe).
    pub(super) fn unread_fifo(file: &File) -> Option<u64> {
        ioctl_count(file, libc::FIONREAD)
    }

    /// Bytes sent on a Unix stream socket that its peer has not read yet
    /// (`SIOCOUTQ`: the socket's send allocation, which is only released
    /// as the peer reads; it counts buffer overhead too, so it errs on the
    /// side of unread).
    pub(super) fn unsent_socket(file: &File) -> Option<u64> {
        ioctl_count(file, libc::TIOCOUTQ)
    }

    /// Whether the socket is a Unix one.
    pub(super) fn is_unix_socket(file: &File) -> bool {
        let mut domain: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_DOMAIN writes one c_int into `domain`, `len` its size.
        let rc = unsafe {
            libc::getsockopt(
                file.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&mut domain as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        rc == 0 && domain == libc::AF_UNIX
    }

    /// Whether every reader has closed the pipe or socket (the write end
    /// then polls as POLLERR or POLLHUP).
    pub(super) fn hung_up(file: &File) -> bool {
        let mut fds = libc::pollfd {
            fd: file.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one pollfd we own, no wait.
        let rc = unsafe { libc::poll(&mut fds, 1, 0) };
        rc > 0 && fds.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! Elsewhere the unread part of a pipe is not known: what is written to
    //! one counts as taken, as for a file; no socket counts as a Unix one,
    //! so a socket on stdout is refused with a checkpoint.
    use std::fs::File;

    pub(super) fn unread_fifo(_: &File) -> Option<u64> {
        None
    }
    pub(super) fn unsent_socket(_: &File) -> Option<u64> {
        None
    }
    pub(super) fn is_unix_socket(_: &File) -> bool {
        false
    }
    pub(super) fn hung_up(_: &File) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn checkpoint(cursor: &str) -> Checkpoint {
        Checkpoint {
            format: evs_replay::CHECKPOINT_FORMAT,
            start_at_first_seen: false,
            cursor: Some(cursor.into()),
            last_delivered: BTreeMap::new(),
            ..Checkpoint::default()
        }
    }

    fn at(lines: u64) -> Position {
        Position {
            bytes: lines * 10,
            lines,
        }
    }

    #[tokio::test]
    async fn queued_checkpoints_stay_few_and_an_unchanged_one_is_not_saved_again() {
        let dir = std::env::temp_dir().join(evs_testkit::unique_name("evs-saver"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cp.json");
        let mut saver = Saver::new(
            CheckpointStore::File(path.clone()),
            Duration::ZERO,
            Duration::ZERO,
            None,
        );
        // A follower idle for a long time with an unacknowledged tail:
        // one queued copy, not one per poll.
        for i in 0..10_000 {
            saver.push(at(5), checkpoint(&format!("k{i}")));
        }
        assert_eq!(saver.pending.len(), 1);
        // A reader far behind: the queue stops growing at MAX_PENDING.
        for i in 6..10_000 {
            saver.push(at(i), checkpoint(&format!("k{i}")));
        }
        assert_eq!(saver.pending.len(), MAX_PENDING);
        // Everything taken: the newest is saved once; the same checkpoint
        // again writes nothing.
        saver.save(|_| true, || Ok(()), false).await.unwrap();
        assert_eq!(saver.saved_lines(), 9_999);
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        saver.push(at(9_999), checkpoint("k9999"));
        saver.save(|_| true, || Ok(()), false).await.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            written
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_save_that_fails_is_retried_and_nothing_untaken_is_saved() {
        let dir = std::env::temp_dir().join(evs_testkit::unique_name("evs-saver"));
        // The directory does not exist yet: the save fails, and is tried
        // again once it does.
        let path = dir.join("cp.json");
        let mut saver = Saver::new(
            CheckpointStore::File(path.clone()),
            Duration::ZERO,
            Duration::ZERO,
            None,
        );
        saver.push(at(3), checkpoint("a"));
        saver.push(at(7), checkpoint("b"));
        saver
            .save(|p| p.lines <= 3, || Ok(()), false)
            .await
            .unwrap();
        assert_eq!(saver.saved_lines(), 0, "not saved: no directory");
        assert!(saver.retry_at.is_some());
        std::fs::create_dir_all(&dir).unwrap();
        saver.retry_at = Some(Instant::now());
        saver
            .save(|p| p.lines <= 3, || Ok(()), false)
            .await
            .unwrap();
        assert_eq!(saver.saved_lines(), 3, "the taken one, not the newest");
        let saved = Checkpoint::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved, checkpoint("a"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
