//! Writes a realistic local archive for the replay benchmark (`bench/replay.sh`).
//!
//! ```sh
//! cargo run --release -p evs-replay --example gen_archive -- \
//!     --dir target/bench-archive-1000000 --events 1000000 [--streams 10000] [--batch 1000] [--seed 42]
//! ```
//!
//! `N` events over `S` streams (half the events go to the hottest 5% of the
//! streams) are cut into batches of `B` DynamoDB Streams `INSERT` records, in
//! the exact shape Lambda delivers (`{"Records": [...]}`: `Keys`, `NewImage`
//! with `StreamId`, `EventId`, `EventName`, a `Payload` map with numbers (a
//! 23-digit integer, decimals), unicode strings, a list and a nested map,
//! `Timestamp`, `EventUuid`, `Metadata`, an extra `Tenant`; order streams'
//! events carry the orders example's `customerId` and `totalCents` or
//! `amountCents`; increasing
//! 25-digit `SequenceNumber`s; `ApproximateCreationDateTime`). Each batch goes
//! through the **real** archiver handler (`evs_archiver::handler::handle`)
//! into a `LocalDir`, sealed at a test clock that only moves forward, so the
//! archive is what the Lambda would have written, plus what goes wrong in
//! production:
//!
//! * about 2% of the batches are archived twice (a retried invocation: the
//!   same records again, in a later object), so the replay drops duplicates;
//! * about 3% of the batches are archived after the batch that followed them
//!   (a slow invocation), so some streams' events come out of order across
//!   objects and the replay holds them back.
//!
//! Every stream's `EventId`s are contiguous from 1 over the whole archive, so
//! the replay delivers exactly `N` events and `evs verify` finds nothing
//! missing. The content depends only on the arguments and `--seed`; object
//! keys carry a random nonce. Prints one JSON line: events, lines (with the
//! duplicates), objects, compressed bytes.

// An example: it stops with a message where a program would handle the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use evs_archive::store::LocalDir;
use evs_archiver::config::Config;
use evs_archiver::handler;
use evs_core::attr::{self, AttrValue, Item};
use serde_json::{json, Value};
use tokio::task::JoinSet;

const USAGE: &str =
    "usage: gen_archive --dir DIR [--events N] [--streams S] [--batch B] [--seed SEED]";

/// 2026-11-23T09:15:00Z.
const START_MS: i64 = 1_795_425_300_000;
/// The first `SequenceNumber` (25 digits, as in `events/inserts.json`).
const FIRST_SEQUENCE: u128 = 4_810_339_200_000_000_031_457_286;
const SOURCE_ARN: &str =
    "arn:aws:dynamodb:eu-west-1:123456789012:table/events/stream/2026-11-20T08:41:17.204";
/// Percent of batches archived twice, and archived after their successor.
const RETRY_PERCENT: u8 = 2;
const LATE_PERCENT: u8 = 3;
/// Handler invocations running at once (encoding and gzip use the cores).
const IN_FLIGHT: usize = 4;

const NAMES: &[&str] = &[
    "zoë",
    "josé",
    "søren",
    "李雷",
    "ana-lúcia",
    "Ångström",
    "müller",
    "олег",
    "bob",
    "priya",
];
const CITIES: &[&str] = &[
    "東京",
    "São Paulo",
    "Zürich",
    "Kraków",
    "Reykjavík",
    "Москва",
    "Lyon",
    "Montréal",
];
const SKUS: &[&str] = &["SKU-ÉTÉ-42", "SKU-東京-7", "SKU-NORD-1138", "SKU-ŁÓDŹ-5"];
const NOTES: &[&str] = &[
    "leave at the door 📦",
    "fragile — handle with care",
    "cadeau pour Noël 🎄",
    "請小心輕放",
];
const TENANTS: &[&str] = &["acme", "globex", "initech", "umbrella"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "CHF"];

struct Args {
    dir: PathBuf,
    events: u64,
    streams: usize,
    batch: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let (mut events, mut streams, mut batch, mut seed) = (1_000_000, 10_000, 1_000, 42);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(USAGE);
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--events" => events = value()?.parse()?,
            "--streams" => streams = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    let dir = dir.ok_or(USAGE)?;
    if streams == 0 || batch == 0 {
        return Err("--streams and --batch must be at least 1".into());
    }
    Ok(Args {
        dir,
        events,
        streams,
        batch,
        seed,
    })
}

fn s(text: impl Into<String>) -> AttrValue {
    AttrValue::S(text.into())
}

fn n(text: impl ToString) -> AttrValue {
    AttrValue::N(text.to_string())
}

fn m<const K: usize>(entries: [(&str, AttrValue); K]) -> AttrValue {
    AttrValue::M(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

struct Stream {
    id: String,
    kind: u8,
    next_event_id: u64,
    last_ms: i64,
    tenant: &'static str,
}

struct Generator {
    rng: fastrand::Rng,
    streams: Vec<Stream>,
    hot: usize,
    clock_ms: i64,
    sequence: u128,
}

impl Generator {
    fn new(seed: u64, count: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let streams = (0..count)
            .map(|i| {
                let kind = rng.u8(..3);
                let id = match kind {
                    0 => format!("order-{}", 100_000 + i),
                    1 => format!("customer-{}-{i}", pick(&mut rng, NAMES)),
                    _ => format!("cart-{:08x}", rng.u32(..)),
                };
                Stream {
                    id,
                    kind,
                    next_event_id: 1,
                    last_ms: START_MS - 5_000,
                    tenant: pick(&mut rng, TENANTS),
                }
            })
            .collect();
        Self {
            rng,
            hot: (count / 20).max(1),
            streams,
            clock_ms: START_MS,
            sequence: FIRST_SEQUENCE,
        }
    }

    fn uuid(&mut self) -> String {
        let version = (self.rng.u128(..) & !(0xf000_u128 << 64)) | (0x4000_u128 << 64);
        let b = (version & !(0xc_u128 << 60)) | (0x8_u128 << 60);
        let h = format!("{b:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn decimal(&mut self, max_int: u64) -> String {
        format!("{}.{:02}", self.rng.u64(..=max_int), self.rng.u8(1..100))
    }

    fn payload(&mut self, kind: u8, stream_id: &str, first: bool) -> (&'static str, AttrValue) {
        let rng = &mut self.rng;
        let big: String = std::iter::once(char::from(b'1' + rng.u8(..9)))
            .chain((0..22).map(|_| char::from(b'0' + rng.u8(..10))))
            .collect();
        let lines = AttrValue::L(
            (0..rng.u8(1..4))
                .map(|_| {
                    m([
                        ("sku", s(pick(rng, SKUS))),
                        ("qty", n(rng.u8(1..6))),
                        (
                            "unitPrice",
                            n(format!("{}.{:02}", rng.u16(..2000), rng.u8(1..100))),
                        ),
                    ])
                })
                .collect(),
        );
        match kind {
            0 => (
                if first { "OrderPlaced" } else { "OrderPaid" },
                m([
                    ("orderId", s(stream_id)),
                    // the fields of the orders example (crates/evs-orders)
                    ("customerId", s(format!("c-{}", self.rng.u16(..2000)))),
                    (
                        if first { "totalCents" } else { "amountCents" },
                        n(self.rng.u32(100..1_000_000)),
                    ),
                    ("amount", n(self.decimal(9_999))),
                    ("currency", s(pick(&mut self.rng, CURRENCIES))),
                    ("ledgerMicros", n(big)),
                    ("lines", lines),
                    ("note", s(pick(&mut self.rng, NOTES))),
                ]),
            ),
            1 => (
                if first {
                    "CustomerRegistered"
                } else {
                    "AddressChanged"
                },
                m([
                    ("name", s(pick(&mut self.rng, NAMES))),
                    (
                        "address",
                        m([
                            ("city", s(pick(&mut self.rng, CITIES))),
                            (
                                "line1",
                                s(format!("{} rue des Écoles", self.rng.u8(1..200))),
                            ),
                            ("lat", n(self.decimal(80))),
                            ("lon", n(self.decimal(170))),
                        ]),
                    ),
                    ("loyaltyPoints", n(self.rng.u32(..1_000_000))),
                    ("marketingOptIn", AttrValue::Bool(self.rng.bool())),
                    ("ledgerMicros", n(big)),
                ]),
            ),
            _ => (
                if first { "CartCreated" } else { "ItemAdded" },
                m([
                    ("cartId", s(stream_id)),
                    ("items", lines),
                    ("discount", n(self.decimal(50))),
                    ("coupon", s(format!("NOËL-{}", self.rng.u16(..1000)))),
                    ("ledgerMicros", n(big)),
                ]),
            ),
        }
    }

    /// The next stream record, in Lambda's shape.
    fn record(&mut self) -> Value {
        self.clock_ms += i64::from(self.rng.u8(..5));
        self.sequence += u128::from(self.rng.u16(1..2000));
        let index = if self.rng.bool() {
            self.rng.usize(..self.hot)
        } else {
            self.rng.usize(..self.streams.len())
        };
        let jitter = i64::from(self.rng.u8(..250));
        let stream = &mut self.streams[index];
        let timestamp_ms = (self.clock_ms - jitter).max(stream.last_ms);
        stream.last_ms = timestamp_ms;
        let event_id = stream.next_event_id;
        stream.next_event_id += 1;
        let (kind, id, tenant) = (stream.kind, stream.id.clone(), stream.tenant);
        let (name, payload) = self.payload(kind, &id, event_id == 1);
        let item: Item = BTreeMap::from([
            ("StreamId".to_owned(), s(&id)),
            ("EventId".to_owned(), n(event_id)),
            ("EventName".to_owned(), s(name)),
            ("Payload".to_owned(), payload),
            ("Timestamp".to_owned(), n(timestamp_ms)),
            ("EventUuid".to_owned(), s(self.uuid())),
            (
                "Metadata".to_owned(),
                m([
                    ("correlationId", s(format!("corr-{:04x}", self.rng.u16(..)))),
                    ("user", s(pick(&mut self.rng, NAMES))),
                ]),
            ),
            ("Tenant".to_owned(), s(tenant)),
        ]);
        let keys: Item = BTreeMap::from([
            ("StreamId".to_owned(), s(&id)),
            ("EventId".to_owned(), n(event_id)),
        ]);
        json!({
            "eventID": format!("{:032x}", self.rng.u128(..)),
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-1",
            "dynamodb": {
                "ApproximateCreationDateTime": self.clock_ms.div_euclid(1000),
                "Keys": serde_json::to_value(&keys).unwrap_or_default(),
                "NewImage": serde_json::to_value(&item).unwrap_or_default(),
                "SequenceNumber": self.sequence.to_string(),
                "SizeBytes": attr::item_size(&item),
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": SOURCE_ARN
        })
    }

    fn batch(&mut self, size: usize) -> Arc<Value> {
        let records: Vec<Value> = (0..size).map(|_| self.record()).collect();
        Arc::new(json!({ "Records": records }))
    }
}

fn pick(rng: &mut fastrand::Rng, items: &[&'static str]) -> &'static str {
    items[rng.usize(..items.len())]
}

#[derive(Default)]
struct Totals {
    objects: u64,
    lines: u64,
    bytes: u64,
}

/// Archives batches through the real handler, a few at a time.
struct Archiver {
    sink: Arc<LocalDir>,
    config: Arc<Config>,
    running: JoinSet<Result<handler::Summary, handler::HandlerError>>,
    last_seal_ms: i64,
    totals: Totals,
}

impl Archiver {
    /// Seals `batch` at the next tick of the test clock (after its events).
    async fn archive(
        &mut self,
        batch: &Arc<Value>,
        events_ms: i64,
        rng: &mut fastrand::Rng,
    ) -> Result<(), Box<dyn Error>> {
        let sealed_at = (events_ms + rng.i64(100..1_500)).max(self.last_seal_ms + 1);
        self.last_seal_ms = sealed_at;
        while self.running.len() >= IN_FLIGHT {
            self.join_one().await?;
        }
        let (batch, sink, config) = (
            Arc::clone(batch),
            Arc::clone(&self.sink),
            Arc::clone(&self.config),
        );
        self.running.spawn(async move {
            handler::handle(
                &batch.to_string(),
                sink.as_ref(),
                &config,
                &move || sealed_at,
                None,
            )
            .await
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), Box<dyn Error>> {
        if let Some(done) = self.running.join_next().await {
            let summary = done??;
            if summary.dead_lettered > 0 {
                return Err(format!(
                    "{} records dead-lettered: {summary:?}",
                    summary.dead_lettered
                )
                .into());
            }
            self.totals.objects += 1;
            self.totals.lines += summary.archived as u64;
            self.totals.bytes += summary.bytes as u64;
        }
        Ok(())
    }
}

async fn run(args: Args) -> Result<Totals, Box<dyn Error>> {
    let events_dir = args.dir.join("events");
    if events_dir.exists() {
        return Err(format!(
            "{} exists already: choose an empty directory",
            events_dir.display()
        )
        .into());
    }
    let mut archiver = Archiver {
        sink: Arc::new(LocalDir::new(args.dir.clone())),
        config: Arc::new(Config::local(args.dir.clone())),
        running: JoinSet::new(),
        last_seal_ms: START_MS,
        totals: Totals::default(),
    };
    let mut generator = Generator::new(args.seed, args.streams);
    // Fate of batches (retried, late) from a stream of its own, so that it
    // does not change the events.
    let mut fate = fastrand::Rng::with_seed(args.seed ^ 0x5eed);
    let mut late: Option<(Arc<Value>, i64)> = None;
    let mut remaining = args.events;
    while remaining > 0 {
        let size = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(args.batch);
        remaining -= size as u64;
        let batch = generator.batch(size);
        let batch_ms = generator.clock_ms;
        let mut order = vec![(batch, batch_ms)];
        if let Some(previous) = late.take() {
            // The slow invocation of the previous batch lands after this one.
            order.push(previous);
        } else if remaining > 0 && fate.u8(..100) < LATE_PERCENT {
            late = order.pop();
        }
        for (batch, ms) in order {
            let ms = ms.max(batch_ms);
            archiver.archive(&batch, ms, &mut fate).await?;
            if fate.u8(..100) < RETRY_PERCENT {
                archiver.archive(&batch, ms, &mut fate).await?;
            }
        }
    }
    if let Some((batch, ms)) = late.take() {
        archiver.archive(&batch, ms, &mut fate).await?;
    }
    while !archiver.running.is_empty() {
        archiver.join_one().await?;
    }
    Ok(archiver.totals)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let (events, streams, seed, dir) = (args.events, args.streams, args.seed, args.dir.clone());
    let started = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let totals = runtime.block_on(run(args))?;
    println!(
        "{}",
        json!({
            "dir": dir.display().to_string(),
            "events": events,
            "streams": streams,
            "lines": totals.lines,
            "duplicates": totals.lines - events,
            "objects": totals.objects,
            "bytes": totals.bytes,
            "seed": seed,
            "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
