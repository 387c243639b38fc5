//! A criterion measurement of the calling thread's CPU time (Linux), for the
//! benches of evs-archive and evs-archiver (`EVS_BENCH_CPU_TIME=1`): the same
//! figure as the wall clock on an idle machine for a single-threaded path
//! without I/O, a much steadier one on a busy machine. Its includer also
//! includes `thread_clock.rs` as `thread_clock`.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::Throughput;

pub(crate) struct ThreadCpuTime;

fn now_ns() -> u64 {
    u64::try_from(super::thread_clock::thread_cpu_time().as_nanos()).unwrap_or(u64::MAX)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        now_ns()
    }
    fn end(&self, start: u64) -> u64 {
        now_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match ns {
            ns if ns < 1e3 => (1.0, "ns"),
            ns if ns < 1e6 => (1e-3, "µs"),
            ns if ns < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (count, unit) = match *throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (n as f64, "B/s"),
            Throughput::Bits(n) => (n as f64, "bit/s"),
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => {
                (n as f64, "elem/s")
            }
        };
        let per_second = count * 1e9 / typical_ns;
        let (factor, prefix) = match per_second {
            p if p < 1e3 => (1.0, ""),
            p if p < 1e6 => (1e-3, "K"),
            p if p < 1e9 => (1e-6, "M"),
            _ => (1e-9, "G"),
        };
        values
            .iter_mut()
            .for_each(|v| *v = count * 1e9 / *v * factor);
        match (prefix, unit) {
            ("", u) => u,
            ("K", "elem/s") => "Kelem/s",
            ("M", "elem/s") => "Melem/s",
            ("G", "elem/s") => "Gelem/s",
            ("K", "B/s") => "KB/s",
            ("M", "B/s") => "MB/s",
            ("G", "B/s") => "GB/s",
            (_, u) => u,
        }
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
