//! The archiver's pure path with libdeflate's gzip (what `encode_events`
//! does) against the same path with flate2 and zlib-rs (how it compressed
//! before), interleaved run by run so that a busy machine slows both alike:
//!
//! ```sh
//! cargo run --release -p evs-archiver --example gzip_ab -- [--rounds 15] [DIR]
//! ```
//!
//! Inputs are `1k.json`, `10k.json` and `6mb.json` in DIR (default
//! `target/bench-data`, written by `bench/run.sh`). Each round runs, for
//! each input, event text → archive object bytes once each way, timing the
//! thread's CPU time (Linux; wall time elsewhere). Prints the median of
//! each and their ratio, and the objects' sizes.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use evs_archive::{encode_events, ArchivedEvent, Compression};
use evs_archiver::record::{parse_batch_json, Classified};

/// The Lambda binary's allocator, as in the criterion bench.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn events(text: &str) -> Vec<ArchivedEvent> {
    parse_batch_json(text)
        .unwrap()
        .into_iter()
        .filter_map(|c| match c {
            Classified::Event(e) => Some(*e),
            Classified::DeadLetter(_) => None,
        })
        .collect()
}

/// Today's path: parse, classify, sort, lines, libdeflate.
fn libdeflate_path(text: &str) -> Vec<u8> {
    encode_events(&events(text), Compression::Gzip)
        .unwrap()
        .bytes
}

/// The path before: the same lines, gzip through zlib-rs 64 KiB at a time.
fn zlib_rs_path(text: &str) -> Vec<u8> {
    let ndjson = encode_events(&events(text), Compression::None)
        .unwrap()
        .bytes;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for chunk in ndjson.chunks(64 * 1024) {
        gz.write_all(chunk).unwrap();
    }
    gz.finish().unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut rounds, mut dir) = (15_usize, PathBuf::from("target/bench-data"));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|r| r.parse().ok())
                    .expect("--rounds N")
            }
            _ => dir = PathBuf::from(arg),
        }
    }
    let inputs: Vec<(&str, String)> = ["1k", "10k", "6mb"]
        .into_iter()
        .map(|name| {
            let path = dir.join(format!("{name}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run bench/run.sh first)", path.display()));
            (name, text)
        })
        .collect();
    let mut times = vec![[Vec::new(), Vec::new()]; inputs.len()];
    for _ in 0..rounds {
        for ((_, text), times) in inputs.iter().zip(&mut times) {
            for (i, path) in [libdeflate_path, zlib_rs_path].iter().enumerate() {
                let start = cpu_time();
                black_box(path(black_box(text)));
                times[i].push(cpu_time() - start);
            }
        }
    }
    println!("{rounds} rounds, thread CPU time, median (best)");
    println!(
        "{:<6}{:>22}{:>22}{:>8}{:>12}{:>12}",
        "input", "libdeflate ms", "zlib-rs ms", "ratio", "bytes", "zlib-rs"
    );
    for ((name, text), times) in inputs.iter().zip(&mut times) {
        let [a, b] = times;
        a.sort();
        b.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (ma, mb) = (ms(a[a.len() / 2]), ms(b[b.len() / 2]));
        println!(
            "{name:<6}{:>14.1} ({:>5.1}){:>14.1} ({:>5.1}){:>8.2}{:>12}{:>12}",
            ma,
            ms(a[0]),
            mb,
            ms(b[0]),
            ma / mb,
            libdeflate_path(text).len(),
            zlib_rs_path(text).len()
        );
    }
}

#[path = "../../evs-archive/benches/support/thread_clock.rs"]
mod thread_clock;
use thread_clock::thread_cpu_time as cpu_time;
