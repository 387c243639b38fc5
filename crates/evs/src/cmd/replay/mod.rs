//! `evs replay`: the archive as NDJSON, every event once, each stream in
//! order, to stdout or to a consumer process that acknowledges.
//!
//! The command is a pipeline of stages, each a function of its own module:
//!
//! 1. [`open`]: the flags become [`open::Settings`]; the checkpoint is
//!    locked (a file) and checked writable, the archive and the quarantine
//!    file are opened, before anything is delivered.
//! 2. [`open::resume`]: the checkpoint is loaded and the replayer built
//!    from it (or from the start, or `--since`).
//! 3. [`deliver`]: the replayer's steps go to the output; checkpoints are
//!    queued as the lines are handed over, outages retried, gaps warned
//!    about.
//! 4. [`output::Delivery::finish`]: the rest of the output is written and
//!    taken, and the newest checkpoint whose lines were all taken is
//!    saved, whatever ended the replay.
//! 5. [`report`]: the summary, and the exit.

mod checkpoint;
mod consumer;
mod deliver;
mod open;
mod output;
mod report;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use tokio::sync::Notify;

use crate::flags::ReplayArgs;

pub(crate) use checkpoint::create_table as create_checkpoint_table;

pub(super) async fn run(table: Option<&str>, args: ReplayArgs) -> Result<()> {
    let opened = open::open(table, &args).await?;
    let (mut replayer, saver, settings) = open::resume(opened).await?;
    let consumer = (!args.consumer.is_empty())
        .then(|| consumer::Consumer::spawn(&args.consumer))
        .transpose()?;
    let described = saver.as_ref().map(output::Saver::describe);
    let mut out = output::Delivery::start(saver, consumer)?;
    let stop = Stop::on_signals();
    let mut progress = super::progress::Progress::new(settings.quiet);
    let started = std::time::Instant::now();
    let ended = deliver::deliver(&mut replayer, &mut out, &settings, &stop, &mut progress).await;
    let ended = match ended {
        Ok(ended) => ended,
        Err(e) => {
            // Whatever failed, what the reader took is checkpointed.
            let _ = out.finish(output::Finish::Failed, |_| {}).await;
            return Err(e);
        }
    };
    let gone = ended == deliver::Ended::ReaderGone;
    if !gone && out.checkpointed() {
        out.snapshot(replayer.checkpoint()?).await?;
    }
    let mut shown = false;
    let delivered = out
        .finish(
            if gone {
                output::Finish::ReaderGone
            } else {
                output::Finish::Ended
            },
            |untaken| {
                if !shown && started.elapsed() > std::time::Duration::from_secs(1) {
                    progress.update(true, || format!("waiting for the reader: {untaken}"));
                    shown = true;
                }
            },
        )
        .await?;
    progress.finish();
    report::report(report::Ending {
        replayer: &replayer,
        settings: &settings,
        delivered,
        interrupted: ended == deliver::Ended::Interrupted,
        described,
        started,
    })
}

/// A request to stop: the first Ctrl-C or SIGTERM stops between steps (the
/// checkpoint is saved); a second one exits at once.
pub(super) struct Stop {
    requested: Arc<AtomicBool>,
    woken: Arc<Notify>,
}

impl Stop {
    fn on_signals() -> Stop {
        let stop = Stop {
            requested: Arc::new(AtomicBool::new(false)),
            woken: Arc::new(Notify::new()),
        };
        let (requested, woken) = (Arc::clone(&stop.requested), Arc::clone(&stop.woken));
        tokio::spawn(async move {
            super::shutdown_signal().await;
            requested.store(true, Ordering::SeqCst);
            woken.notify_one();
            super::shutdown_signal().await;
            eprintln!("evs: interrupted again: exiting without a final checkpoint");
            std::process::exit(130);
        });
        stop
    }

    pub(super) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    pub(super) fn woken(&self) -> &Notify {
        &self.woken
    }
}
