//! The archiver's pure path, measured: Lambda event bytes ->
//! `record::parse_batch_json` (per-record parsing, as the Lambda does) -> `encode::encode_events`
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
//!   steps (JSON parse, classification, NDJSON encoding with sorting, gzip),
//!   to show where the time goes.

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use evs_archiver::encode::{encode_events, Compression, EncodedBatch};
use evs_archiver::record::{parse_batch, parse_batch_json, ArchivedEvent, Classified};
use serde_json::Value;

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
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"))
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
    let text = std::str::from_utf8(bytes).expect("the input is UTF-8");
    let events: Vec<ArchivedEvent> = parse_batch_json(text)
        .expect("the input is a DynamoDB Streams event")
        .into_iter()
        .filter_map(|c| match c {
            Classified::Event(e) => Some(*e),
            Classified::DeadLetter(_) => None,
        })
        .collect();
    encode_events(&events, Compression::Gzip).expect("encode")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

fn whole_path(c: &mut Criterion) {
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
}

fn steps(c: &mut Criterion) {
    let input = load("10k", Limit::Records(10_000));
    let event = parse(&input.bytes);
    let events = events_of(&event);
    let ndjson = encode_events(&events, Compression::None)
        .expect("encode")
        .bytes;

    let mut group = c.benchmark_group("steps-10k");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(input.records as u64));
    group.bench_function("1-parse-json", |b| {
        b.iter(|| parse(black_box(&input.bytes)))
    });
    group.bench_function("2-classify", |b| b.iter(|| events_of(black_box(&event))));
    group.bench_function("3-sort-and-ndjson", |b| {
        b.iter(|| encode_events(black_box(&events), Compression::None).expect("encode"))
    });
    group.bench_function("4-gzip", |b| b.iter(|| gzip(black_box(&ndjson))));
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
    targets = whole_path, steps
}
criterion_main!(benches);
