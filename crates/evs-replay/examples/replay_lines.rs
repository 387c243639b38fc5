//! Where a replay's CPU goes per object, measured on an archive `gen_archive`
//! wrote (`bench/replay.sh` keeps one in `<target>/bench-archive-<N>`):
//!
//! ```sh
//! cargo run --release -p evs-replay --example replay_lines -- --dir DIR [--objects 100] [--rounds 7]
//! ```
//!
//! Reads the first `--objects` gzip objects of the archive into memory, then
//! runs each step over all of them `--rounds` times, the steps interleaved
//! round by round so that a busy machine slows them alike, timing the
//! thread's CPU time (Linux; wall time elsewhere):
//!
//! * `decompress`: the objects' NDJSON, as the replayer decompresses them;
//! * `parse`: each line read as `evs_archive::Line`;
//! * `parse + serialize`: and the event's line written by serde
//!   (`serde_json::to_string(&line.event_only())`, how the replay wrote it
//!   before `Line::event_only_json`);
//! * `parse + copy`: and written by `Line::event_only_json`, as the replay does;
//! * `decode_object`: the replayer's whole decoding of an object (decompress,
//!   lines to delivered events).
//!
//! Prints the best and the median round of each, per line and per object.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use evs_archive::{decompress, ArchiveKey, Compression, Line};
use evs_replay::decode_object;

const USAGE: &str = "usage: replay_lines --dir DIR [--objects N] [--rounds R]";

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut objects, mut rounds) = (None, 100_usize, 7_usize);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{USAGE}"));
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value())),
            "--objects" => objects = value().parse().expect(USAGE),
            "--rounds" => rounds = value().parse().expect(USAGE),
            _ => panic!("{USAGE}"),
        }
    }
    let dir = dir.unwrap_or_else(|| panic!("{USAGE}"));
    let mut files = Vec::new();
    find_objects(&dir, &mut files);
    files.sort();
    files.truncate(objects);
    let stored: Vec<(ArchiveKey, Vec<u8>)> = files
        .iter()
        .map(|f| {
            let relative = f.strip_prefix(&dir).unwrap().to_str().unwrap();
            (
                ArchiveKey::parse(relative).unwrap(),
                std::fs::read(f).unwrap(),
            )
        })
        .collect();
    let texts: Vec<String> = stored
        .iter()
        .map(|(_, bytes)| {
            String::from_utf8(decompress(bytes, Compression::Gzip).unwrap().into_owned()).unwrap()
        })
        .collect();
    let lines: usize = texts.iter().map(|t| t.lines().count()).sum();
    let gz: usize = stored.iter().map(|(_, b)| b.len()).sum();
    let ndjson: usize = texts.iter().map(String::len).sum();
    println!(
        "{} objects, {lines} lines, {:.1} MB gzip, {:.1} MB NDJSON; {rounds} rounds",
        stored.len(),
        gz as f64 / 1e6,
        ndjson as f64 / 1e6
    );

    let each_line = |f: &dyn Fn(&str)| {
        for text in &texts {
            for line in text.lines() {
                f(line);
            }
        }
    };
    let steps: Vec<(&str, Step)> = vec![
        (
            "decompress",
            Box::new(|| {
                for (_, bytes) in &stored {
                    black_box(decompress(bytes, Compression::Gzip).unwrap());
                }
            }),
        ),
        (
            "parse",
            Box::new(|| each_line(&|l| drop(black_box(Line::parse(l).unwrap())))),
        ),
        (
            "parse + serialize",
            Box::new(|| {
                each_line(&|l| {
                    let line = Line::parse(l).unwrap();
                    black_box(serde_json::to_string(&line.event_only()).unwrap());
                })
            }),
        ),
        (
            "parse + copy",
            Box::new(|| {
                each_line(&|l| {
                    let line = Line::parse(l).unwrap();
                    black_box(line.event_only_json().unwrap());
                })
            }),
        ),
        (
            "decode_object",
            Box::new(|| {
                for (key, bytes) in &stored {
                    black_box(decode_object(key, bytes).unwrap());
                }
            }),
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); steps.len()];
    for _ in 0..rounds {
        for ((_, step), times) in steps.iter().zip(&mut times) {
            let start = cpu_time();
            step();
            times.push(cpu_time() - start);
        }
    }
    println!(
        "{:<20}{:>14}{:>10}{:>16}",
        "step", "best ns/line", "median", "best ms/object"
    );
    for ((name, _), times) in steps.iter().zip(&mut times) {
        times.sort();
        let per_line = |d: Duration| d.as_nanos() as f64 / lines as f64;
        println!(
            "{name:<20}{:>14.0}{:>10.0}{:>16.3}",
            per_line(times[0]),
            per_line(times[times.len() / 2]),
            times[0].as_secs_f64() * 1e3 / stored.len() as f64
        );
    }
}

/// One step measured: runs over every object once.
type Step<'a> = Box<dyn Fn() + 'a>;

fn find_objects(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            find_objects(&path, out);
        } else if path.to_str().is_some_and(|p| p.ends_with(".ndjson.gz")) {
            out.push(path);
        }
    }
}

#[path = "../../evs-archive/benches/support/thread_clock.rs"]
mod thread_clock;
use thread_clock::thread_cpu_time as cpu_time;
