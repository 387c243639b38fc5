//! gzip of archive objects: flate2 with zlib-rs against libdeflate, both
//! ways, at the archiver's level (6), on realistic objects.
//!
//! ```sh
//! cargo bench -p evs-archive --bench codec          # EVS_BENCH_CPU_TIME=1: thread CPU time
//! ```
//!
//! Inputs are the NDJSON of the archive objects `bench/run.sh` writes with the
//! real handler (`archive-1k`, `archive-10k`, `archive-6mb` in
//! `$EVS_BENCH_DATA`, default `target/bench-data/`: 1,000, 10,000 and ~5,000
//! records); a missing one is made in memory (event lines of the same shape,
//! seeded), and under `cargo test` (no `--bench`) every input is a small
//! in-memory one: a quick smoke test.
//!
//! Groups (throughput in NDJSON bytes):
//! * `gzip-compress/{zlib-rs,libdeflate}/<input>`: zlib-rs fed 64 KiB at a
//!   time (how the archiver wrote objects before libdeflate) and libdeflate
//!   on the whole NDJSON in one call (what `encode_events` does now);
//! * `gzip-decompress/{zlib-rs,libdeflate,decompress}/<input>`: flate2's
//!   `MultiGzDecoder` read to the end (how objects were read before),
//!   libdeflate into a buffer of the size the gzip trailer gives, and
//!   `evs_archive::decompress` (what the replayer runs now).
//!
//! * `libdeflate-levels-10k/{6,7,8,9}`: libdeflate's levels (not zlib's:
//!   its 6 gives slightly larger objects than zlib's 6).
//!
//! The sizes each compressor gives are printed.

// Test code: unwrap, expect and panic are how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use evs_archive::{decompress, Compression};

#[cfg(target_os = "linux")]
#[path = "support/cpu_time.rs"]
mod cpu_time;
#[cfg(target_os = "linux")]
#[path = "support/thread_clock.rs"]
mod thread_clock;

/// One input: its name and NDJSON.
struct Input {
    name: &'static str,
    ndjson: Vec<u8>,
}

fn data_dir() -> PathBuf {
    std::env::var_os("EVS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data")
        })
}

fn smoke_test() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// The NDJSON of the first `.ndjson.gz` object under `dir`.
fn object_ndjson(dir: &Path) -> Option<Vec<u8>> {
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let path = entry.ok()?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_str()?.ends_with(".ndjson.gz") {
                let stored = std::fs::read(&path).ok()?;
                return Some(zlib_rs_decompress(&stored));
            }
        }
    }
    None
}

/// `lines` event lines shaped like the archiver's (seeded).
fn synthetic(lines: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut out = Vec::new();
    for i in 0..lines {
        let stream = rng.u32(..10_000);
        writeln!(
            out,
            r#"{{"streamId":"order-{stream}","eventId":{},"eventName":"{}","timestamp":"2026-11-23T09:{:02}:{:02}.{:03}Z","payload":{{"customerId":"c-{}","totalCents":{},"items":[{{"sku":"sku-{}","qty":{}}}],"note":"caf\u00e9 {}","big":12345678901234567890123}},"id":"{:08x}-8c8f-4bb4-9f7e-{:012x}","metadata":{{"user":"u-{}","trace":"{:016x}"}},"attributes":{{"Tenant":{{"S":"t{}"}}}},"eventID":"{:032x}","sequenceNumber":"48103392000000000{:08}"}}"#,
            rng.u32(1..50),
            ["OrderPlaced", "OrderPaid", "OrderShipped"][rng.usize(..3)],
            i / 60_000 % 60,
            i / 1000 % 60,
            i % 1000,
            rng.u32(..5000),
            rng.u32(..100_000),
            rng.u32(..500),
            rng.u32(1..5),
            rng.u64(..),
            rng.u32(..),
            rng.u64(..1 << 48),
            rng.u32(..100),
            rng.u64(..),
            rng.u32(..8),
            rng.u128(..),
            i,
        )
        .unwrap();
    }
    out
}

fn load(name: &'static str, lines: usize) -> Input {
    if smoke_test() {
        return Input {
            name,
            ndjson: synthetic(20),
        };
    }
    let dir = data_dir().join(format!("archive-{name}"));
    let ndjson = object_ndjson(&dir).unwrap_or_else(|| {
        eprintln!(
            "{}: no archive object; using {lines} synthetic lines (run bench/run.sh for the real ones)",
            dir.display()
        );
        synthetic(lines)
    });
    Input { name, ndjson }
}

/// gzip at level 6 through flate2 (zlib-rs), fed 64 KiB at a time.
fn zlib_rs_compress(ndjson: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(ndjson.len() / 4);
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
    for chunk in ndjson.chunks(64 * 1024) {
        gz.write_all(chunk).unwrap();
    }
    gz.finish().unwrap()
}

/// gzip at level 6 through libdeflate, in one call.
fn libdeflate_compress(ndjson: &[u8]) -> Vec<u8> {
    libdeflate_compress_at(ndjson, 6)
}

/// flate2's `MultiGzDecoder` read to the end.
fn zlib_rs_decompress(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() * 6);
    flate2::read::MultiGzDecoder::new(stored)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// gzip through libdeflate at `level`, in one call.
fn libdeflate_compress_at(ndjson: &[u8], level: i32) -> Vec<u8> {
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
    let mut out = vec![0; c.gzip_compress_bound(ndjson.len())];
    let n = c.gzip_compress(ndjson, &mut out).unwrap();
    out.truncate(n);
    out
}

/// libdeflate into a buffer the size the trailer gives (one member).
fn libdeflate_decompress(stored: &[u8]) -> Vec<u8> {
    let size = u32::from_le_bytes(stored[stored.len() - 4..].try_into().unwrap());
    let mut out = vec![0; size as usize];
    let n = libdeflater::Decompressor::new()
        .gzip_decompress(stored, &mut out)
        .unwrap();
    out.truncate(n);
    out
}

fn compress<M: Measurement>(c: &mut Criterion<M>) {
    let inputs = inputs();
    for input in &inputs {
        let (z, l) = (
            zlib_rs_compress(&input.ndjson),
            libdeflate_compress(&input.ndjson),
        );
        assert_eq!(
            zlib_rs_decompress(&l),
            input.ndjson,
            "libdeflate's gzip reads back"
        );
        eprintln!(
            "{}: {} bytes of NDJSON -> zlib-rs {} bytes, libdeflate {} bytes ({:+.2}%)",
            input.name,
            input.ndjson.len(),
            z.len(),
            l.len(),
            (l.len() as f64 / z.len() as f64 - 1.0) * 100.0
        );
    }
    let mut group = c.benchmark_group("gzip-compress");
    group.sampling_mode(SamplingMode::Flat);
    for input in &inputs {
        group.throughput(Throughput::Bytes(input.ndjson.len() as u64));
        let name = |codec: &str| format!("{codec}/{}", input.name);
        group.bench_function(name("zlib-rs"), |b| {
            b.iter(|| zlib_rs_compress(black_box(&input.ndjson)))
        });
        group.bench_function(name("libdeflate"), |b| {
            b.iter(|| libdeflate_compress(black_box(&input.ndjson)))
        });
    }
    group.finish();
}

/// libdeflate's levels around 6 on the 10k NDJSON (its levels are not
/// zlib's: the sizes are printed beside zlib-rs's at 6).
fn libdeflate_levels<M: Measurement>(c: &mut Criterion<M>) {
    let input = load("10k", 10_000);
    let zlib = zlib_rs_compress(&input.ndjson).len();
    let mut group = c.benchmark_group("libdeflate-levels-10k");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(input.ndjson.len() as u64));
    for level in [6, 7, 8, 9] {
        let size = libdeflate_compress_at(&input.ndjson, level).len();
        eprintln!(
            "libdeflate level {level}: {size} bytes ({:+.2}% on zlib-rs level 6)",
            (size as f64 / zlib as f64 - 1.0) * 100.0
        );
        group.bench_function(level.to_string(), |b| {
            b.iter(|| libdeflate_compress_at(black_box(&input.ndjson), level))
        });
    }
    group.finish();
}

fn decompress_group<M: Measurement>(c: &mut Criterion<M>) {
    let inputs = inputs();
    let mut group = c.benchmark_group("gzip-decompress");
    group.sampling_mode(SamplingMode::Flat);
    for input in &inputs {
        let stored = zlib_rs_compress(&input.ndjson);
        assert_eq!(libdeflate_decompress(&stored), input.ndjson);
        group.throughput(Throughput::Bytes(input.ndjson.len() as u64));
        let name = |codec: &str| format!("{codec}/{}", input.name);
        group.bench_function(name("zlib-rs"), |b| {
            b.iter(|| zlib_rs_decompress(black_box(&stored)))
        });
        group.bench_function(name("libdeflate"), |b| {
            b.iter(|| libdeflate_decompress(black_box(&stored)))
        });
        group.bench_function(name("decompress"), |b| {
            b.iter(|| decompress(black_box(&stored), Compression::Gzip).unwrap())
        });
    }
    group.finish();
}

fn inputs() -> [Input; 3] {
    [load("1k", 1_000), load("10k", 10_000), load("6mb", 5_000)]
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = compress, decompress_group, libdeflate_levels
}

#[cfg(target_os = "linux")]
criterion_group! {
    name = cpu_time_benches;
    config = config().with_measurement(cpu_time::ThreadCpuTime);
    targets = compress, decompress_group, libdeflate_levels
}

fn main() {
    // EVS_BENCH_CPU_TIME=1 measures the thread's CPU time instead of the wall clock.
    #[cfg(target_os = "linux")]
    if std::env::var_os("EVS_BENCH_CPU_TIME").is_some_and(|v| v != "0") {
        cpu_time_benches();
        Criterion::default().configure_from_args().final_summary();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
