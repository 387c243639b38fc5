//! The archiver's pure path, measured: Lambda event bytes ->
//! `record::parse_batch_json` (per-record parsing, as the Lambda does) -> `evs_archive::encode_events`
//! (gzip) -> the archive object's bytes. No I/O.
//!
//! ```sh
//! cargo bench --bench archive            # or `make bench` (bench/run.sh)
//! ```
//!
//! Inputs are the files `bench/run.sh` generates with `examples/gen_batch.rs`
//! (`1k.json`, `10k.json`, `6mb.json` in `$EVS_BENCH_DATA`, default
//! `target/bench-data/`), so the Python comparison reads the very same bytes.
//! A missing file is generated in memory by the same code with the same seed,
//! which gives the same bytes. Under `cargo test` (no `--bench`) every input
//! is a 50-record batch generated in memory: a quick smoke test.
//!
//! Groups:
//! * `archive/{1k,10k,6mb}`: the whole path, throughput in records;
//! * `steps-10k/*`: the same path for the 10,000-record file cut into its
//!   steps, to show where the time goes: `1-parse-json` (the records found
//!   as raw text and each read into the fields an event needs,
//!   `record::bench::parse`), `2-classify` (those fields to archived
//!   events, `record::bench::classify`), `3-sort-and-ndjson` (sorting and
//!   writing the lines) and `4-gzip` (gzip of the NDJSON at level 6 with
//!   libdeflate, as `encode_events` does; `4-gzip-zlib-rs`: with flate2 and
//!   zlib-rs, as it did before);
//! * `archive-zlib-rs/{1k,10k,6mb}`: the whole path as it was with flate2 and
//!   zlib-rs, for a ratio measured in the same run as `archive/*`;
//! * `gzip-levels-10k/{1,2,4,5,6,9}`: zlib-rs's gzip of the same NDJSON at
//!   other levels (`cargo bench -p evs-archive --bench codec` has libdeflate's).

// Test code: unwrap, expect and panic are how it fails (clippy.toml lets
// #[test] functions use them, not the helpers around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{criterion_group, BatchSize, Criterion, SamplingMode, Throughput};
use evs_archive::ArchivedEvent;
use evs_archive::{encode_events, Compression, EncodedBatch};
use evs_archiver::record::bench::{self, Parsed};
use evs_archiver::record::{parse_batch, parse_batch_json, Classified};
use serde_json::Value;

/// The allocator of the Lambda binary (`src/main.rs`), so the bench measures
/// what runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[path = "../examples/gen_batch.rs"]
mod gen_batch;

use gen_batch::Limit;

/// One input: its name, bytes and record count.
struct Input {
    name: &'static str,
    bytes: Vec<u8>,
    records: usize,
}

fn data_dir() -> PathBuf {
    std::env::var_os("EVS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data")
        })
}

/// `cargo test` (so `make test`) runs this file once as a smoke test, without
/// `--bench`: small in-memory inputs then, so the debug build stays quick.
fn smoke_test() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn load(name: &'static str, limit: Limit) -> Input {
    let path = data_dir().join(format!("{name}.json"));
    let read = if smoke_test() {
        Err(std::io::Error::other("smoke test"))
    } else {
        std::fs::read(&path)
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(_) if smoke_test() => {
            gen_batch::generate(Limit::Records(50), gen_batch::DEFAULT_SEED)
                .expect("generate a batch")
                .0
        }
        Err(e) => {
            eprintln!(
                "{}: {e}; generating it in memory (seed {})",
                path.display(),
                gen_batch::DEFAULT_SEED
            );
            gen_batch::generate(limit, gen_batch::DEFAULT_SEED)
                .expect("generate a batch")
                .0
        }
    };
    let records = events_of(&parse(&bytes)).len();
    Input {
        name,
        bytes,
        records,
    }
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("the input is JSON")
}

fn events_of(event: &Value) -> Vec<ArchivedEvent> {
    parse_batch(event)
        .expect("the input is a DynamoDB Streams event")
        .into_iter()
        .filter_map(|c| match c {
            Classified::Event(e) => Some(*e),
            Classified::DeadLetter(_) => None,
        })
        .collect()
}

/// The whole pure path, as the Lambda runs it: event text in (records
/// parsed one at a time), archive object bytes out.
fn archive(bytes: &[u8]) -> EncodedBatch {
    archive_with(bytes, Compression::Gzip)
}

fn archive_with(bytes: &[u8], compression: Compression) -> EncodedBatch {
    let text = std::str::from_utf8(bytes).expect("the input is UTF-8");
    let classified = parse_batch_json(text).expect("the input is a DynamoDB Streams event");
    // as the handler does
    let mut events: Vec<ArchivedEvent> = Vec::with_capacity(classified.len());
    for c in classified {
        if let Classified::Event(e) = c {
            events.push(*e);
        }
    }
    encode_events(&events, compression).expect("encode")
}

/// gzip at level 6 through flate2 and zlib-rs, fed 64 KiB at a time (how
/// `encode_events` compressed before libdeflate).
fn gzip_zlib_rs(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for chunk in bytes.chunks(64 * 1024) {
        gz.write_all(chunk).expect("gzip");
    }
    gz.finish().expect("gzip")
}

/// gzip at level 6 through libdeflate in one call (what `encode_events` does).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let level = libdeflater::CompressionLvl::new(6).expect("level 6");
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0; compressor.gzip_compress_bound(bytes.len())];
    let n = compressor.gzip_compress(bytes, &mut out).expect("gzip");
    out.truncate(n);
    out
}

/// The whole path with the gzip of before: the lines written, then gzip
/// through zlib-rs.
fn archive_zlib_rs(bytes: &[u8]) -> Vec<u8> {
    gzip_zlib_rs(&archive_with(bytes, Compression::None).bytes)
}

fn whole_path<M: Measurement>(c: &mut Criterion<M>) {
    let inputs = [
        load("1k", Limit::Records(1_000)),
        load("10k", Limit::Records(10_000)),
        load("6mb", Limit::Bytes(6_000_000)),
    ];
    let mut group = c.benchmark_group("archive");
    group.sampling_mode(SamplingMode::Flat);
    for input in &inputs {
        group.throughput(Throughput::Elements(input.records as u64));
        group.bench_function(input.name, |b| b.iter(|| archive(black_box(&input.bytes))));
    }
    group.finish();
    // The same with the gzip of before (flate2 and zlib-rs), for a ratio in one run.
    let mut group = c.benchmark_group("archive-zlib-rs");
    group.sampling_mode(SamplingMode::Flat);
    for input in &inputs {
        group.throughput(Throughput::Elements(input.records as u64));
        group.bench_function(input.name, |b| {
            b.iter(|| archive_zlib_rs(black_box(&input.bytes)))
        });
    }
    group.finish();
    // The same with EVS_COMPRESSION=zstd.
    let mut group = c.benchmark_group("archive-zstd");
    group.sampling_mode(SamplingMode::Flat);
    for input in &inputs {
        group.throughput(Throughput::Elements(input.records as u64));
        group.bench_function(input.name, |b| {
            b.iter(|| archive_with(black_box(&input.bytes), Compression::Zstd))
        });
    }
    group.finish();
}

fn steps<M: Measurement>(c: &mut Criterion<M>) {
    let input = load("10k", Limit::Records(10_000));
    let text = std::str::from_utf8(&input.bytes).expect("the input is UTF-8");
    let events = events_of(&parse(&input.bytes));
    let ndjson = encode_events(&events, Compression::None)
        .expect("encode")
        .bytes;

    let mut group = c.benchmark_group("steps-10k");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(input.records as u64));
    group.bench_function("1-parse-json", |b| b.iter(|| read_records(black_box(text))));
    group.bench_function("2-classify", |b| {
        b.iter_batched(
            || read_records(text),
            |records| records.into_iter().map(bench::classify).collect::<Vec<_>>(),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("3-sort-and-ndjson", |b| {
        b.iter(|| encode_events(black_box(&events), Compression::None).expect("encode"))
    });
    group.bench_function("4-gzip", |b| b.iter(|| gzip(black_box(&ndjson))));
    group.bench_function("4-gzip-zlib-rs", |b| {
        b.iter(|| gzip_zlib_rs(black_box(&ndjson)))
    });
    group.finish();
}

/// The parse step as the Lambda runs it: the records found as raw text, each
/// read into the fields an event needs (`record::bench::Parsed`).
fn read_records(text: &str) -> Vec<Parsed<'_>> {
    bench::records_json(text)
        .expect("the input is a DynamoDB Streams event")
        .into_iter()
        .map(|raw| bench::parse(raw.get()))
        .collect()
}

/// gzip of the 10k NDJSON at other levels than the default 6, for the
/// size-versus-time trade-off (`gzip-levels-10k/<level>`; the sizes are printed).
fn gzip_levels<M: Measurement>(c: &mut Criterion<M>) {
    let input = load("10k", Limit::Records(10_000));
    let events = events_of(&parse(&input.bytes));
    let ndjson = encode_events(&events, Compression::None)
        .expect("encode")
        .bytes;
    let mut group = c.benchmark_group("gzip-levels-10k");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(input.records as u64));
    for level in [1, 2, 4, 5, 6, 9] {
        let compress = |bytes: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            gz.write_all(bytes).expect("gzip");
            gz.finish().expect("gzip")
        };
        eprintln!(
            "gzip level {level}: {} bytes of NDJSON -> {} bytes",
            ndjson.len(),
            compress(&ndjson).len()
        );
        group.bench_function(level.to_string(), |b| {
            b.iter(|| compress(black_box(&ndjson)))
        });
    }
    group.finish();
    // zstd (EVS_COMPRESSION=zstd uses level 1: `encode::ZSTD_LEVEL`).
    let mut group = c.benchmark_group("zstd-levels-10k");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(input.records as u64));
    for level in [1, 3, 6, 9] {
        let compress = |bytes: &[u8]| zstd::bulk::compress(bytes, level).expect("zstd");
        eprintln!(
            "zstd level {level}: {} bytes of NDJSON -> {} bytes",
            ndjson.len(),
            compress(&ndjson).len()
        );
        group.bench_function(level.to_string(), |b| {
            b.iter(|| compress(black_box(&ndjson)))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = whole_path, steps, gzip_levels
}

#[cfg(target_os = "linux")]
criterion_group! {
    name = cpu_time_benches;
    config = config().with_measurement(cpu_time::ThreadCpuTime);
    targets = whole_path, steps, gzip_levels
}

fn main() {
    // EVS_BENCH_CPU_TIME=1 measures the thread's CPU time instead of the
    // wall clock: the same figure on an idle machine (the path is
    // single-threaded and does no I/O), a much steadier one on a busy machine.
    #[cfg(target_os = "linux")]
    if std::env::var_os("EVS_BENCH_CPU_TIME").is_some_and(|v| v != "0") {
        cpu_time_benches();
        Criterion::default().configure_from_args().final_summary();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// A criterion measurement of the calling thread's CPU time (Linux).
#[cfg(target_os = "linux")]
#[path = "../../evs-archive/benches/support/cpu_time.rs"]
mod cpu_time;
#[cfg(target_os = "linux")]
#[path = "../../evs-archive/benches/support/thread_clock.rs"]
mod thread_clock;
