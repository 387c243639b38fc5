//! A progress line on stderr, only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws one line on stderr at most a few times a second.
pub(super) struct Progress {
    enabled: bool,
    last: Option<Instant>,
    drawn: bool,
}

const EVERY: Duration = Duration::from_millis(200);

impl Progress {
    /// Progress on stderr unless `quiet` or stderr is not a terminal.
    pub(super) fn new(quiet: bool) -> Self {
        Self {
            enabled: !quiet && std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    /// Redraws the line with `text()` if it is time to (or `force`).
    pub(super) fn update(&mut self, force: bool, text: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !force && self.last.is_some_and(|t| now.duration_since(t) < EVERY) {
            return;
        }
        self.last = Some(now);
        let mut err = std::io::stderr().lock();
        // Clear the line, then draw; errors writing progress are ignored.
        let _ = write!(err, "\r\x1b[2K{}", text());
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the progress line so that what follows starts on a new line.
    pub(super) fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

/// `1234567` as `1,234,567`.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MB with one decimal.
pub(super) fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A rate per second over `elapsed`.
pub(super) fn rate(n: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0
    } else {
        (n as f64 / secs) as u64
    }
}
