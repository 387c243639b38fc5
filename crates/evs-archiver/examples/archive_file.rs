//! Runs the archiver's real handler (`evs_archiver::handler::handle`) on one
//! Lambda event file, into a local directory, and prints one JSON line: the
//! handler's summary, the timings and the process's peak resident set size
//! (`VmHWM` of `/proc/self/status`, Linux only). `bench/run.sh` uses it to
//! measure the memory a 6 MB batch needs.
//!
//! ```sh
//! cargo run --release -p evs-archiver --example archive_file -- target/bench-data/6mb.json
//! cargo run --release -p evs-archiver --example archive_file -- events/inserts.json --keep /tmp/archive
//! EVS_COMPRESSION=zstd cargo run --release -p evs-archiver --example archive_file -- target/bench-data/6mb.json
//! ```
//!
//! Without `--keep` the archive goes to a fresh temporary directory that is
//! removed afterwards. As in the Lambda runtime, the event's bytes are
//! dropped once they are parsed, before the handler runs.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use evs_archive::store::LocalDir;
use evs_archiver::config::Config;
use evs_archiver::handler;
use serde_json::json;

/// The Lambda binary's allocator (`src/main.rs`), so the memory is that of the Lambda.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: archive_file EVENT.json [--keep ARCHIVE_DIR]";

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`), where there is one.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Result<Vec<String>, Box<dyn Error>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                found.push(rel.display().to_string());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn main() -> Result<(), Box<dyn Error>> {
    let rss_at_start_kib = proc_status_kib("VmRSS");
    let mut args = std::env::args().skip(1);
    let mut event_file = None;
    let mut keep: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keep" => keep = Some(args.next().ok_or(USAGE)?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if event_file.is_none() => event_file = Some(arg),
            _ => return Err(USAGE.into()),
        }
    }
    let event_file = event_file.ok_or(USAGE)?;
    let dir = match &keep {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "evs-archive-file-{}-{}",
            std::process::id(),
            evs_core::now_ms()
        )),
    };

    let started = Instant::now();
    let bytes = std::fs::read(&event_file).map_err(|e| format!("{event_file}: {e}"))?;
    let input_bytes = bytes.len();
    let event = String::from_utf8(bytes).map_err(|e| format!("{event_file}: not UTF-8: {e}"))?;
    let parsed = started.elapsed();

    let sink = LocalDir::new(&dir);
    // EVS_COMPRESSION from the environment, as the Lambda reads it.
    let config = Config::from_lookup(|k| match k {
        "EVS_ARCHIVE" => Some(dir.to_string_lossy().into_owned()),
        "EVS_COMPRESSION" => std::env::var(k).ok(),
        _ => None,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(handler::handle(
        &event,
        &sink,
        &config,
        &evs_core::now_ms,
        None,
    ));
    let total = started.elapsed();
    let peak_rss_kib = proc_status_kib("VmHWM");

    let objects = if keep.is_some() && result.is_ok() {
        files_under(&dir)?
    } else {
        Vec::new()
    };
    if keep.is_none() && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let summary = result?;
    let records = summary.records_in;
    println!(
        "{}",
        json!({
            "file": event_file,
            "inputBytes": input_bytes,
            "records": records,
            "summary": summary,
            "archiveDir": keep.as_ref().map(|d| d.display().to_string()),
            "objects": objects,
            "parseMs": parsed.as_secs_f64() * 1e3,
            "totalMs": total.as_secs_f64() * 1e3,
            "rssAtStartKiB": rss_at_start_kib,
            "peakRssKiB": peak_rss_kib,
        })
    );
    Ok(())
}
