//! Writes a realistic DynamoDB Streams Lambda event (`{"Records": [...]}`)
//! for the archiver's benchmarks (`bench/run.sh`, `benches/archive.rs`).
//!
//! ```sh
//! cargo run --release -p evs-archiver --example gen_batch -- 10000 target/bench-data/10k.json
//! cargo run --release -p evs-archiver --example gen_batch -- --target-bytes 6000000 target/bench-data/6mb.json
//! ```
//!
//! Every record is an `INSERT` of an event item in the exact shape Lambda
//! delivers (like `events/*.json` and `evs_core::MemoryStore::changes`): many
//! interleaved streams (some with non-ASCII ids), a `Payload` map of a few
//! hundred bytes with nested maps and lists, unicode strings, a 23-digit
//! integer, decimals, `BOOL` and `NULL`; a `Metadata` map, an `EventUuid`, an
//! extra `Tenant` attribute; 25-digit `SequenceNumber`s that increase, as in
//! one shard. The JSON is compact, as Lambda sends it. The output depends
//! only on the arguments and `--seed` (default 42): same arguments, same bytes.
//!
//! Decimals never end in `0` (`19.99`, never `19.90`), so a handler that reads
//! numbers as floats (the Python comparison, `bench/python_handler.py`) writes
//! the same text as the archiver, which keeps number text exactly, and the two
//! outputs can be compared byte for byte.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;

use evs_core::attr::{self, AttrValue, Item};
use serde_json::json;

/// How big a batch to make.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// Exactly this many records.
    Records(usize),
    /// As many records as fit in this many bytes of event JSON.
    Bytes(usize),
}

/// The seed used when none is given.
pub(crate) const DEFAULT_SEED: u64 = 42;

const SOURCE_ARN: &str =
    "arn:aws:dynamodb:eu-west-1:123456789012:table/events/stream/2026-11-20T08:41:17.204";
/// 2026-11-23T09:15:00Z, as in `events/`.
const START_MS: i64 = 1_795_425_300_000;
/// The first `SequenceNumber` (25 digits, as in `events/inserts.json`).
const FIRST_SEQUENCE: u128 = 4_810_339_200_000_000_031_457_286;

/// Deterministic for a given seed.
struct Rng(fastrand::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        items[i]
    }

    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.u128().to_be_bytes())
            .into_uuid()
            .to_string()
    }
}

const NAMES: &[&str] = &[
    "zoë",
    "josé",
    "søren",
    "李雷",
    "ana-lúcia",
    "Ångström",
    "müller",
    "françois",
    "олег",
    "naïve",
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
    "Dublin",
    "Montréal",
    "Αθήνα",
];
const SKUS: &[&str] = &[
    "SKU-ÉTÉ-42",
    "SKU-東京-7",
    "SKU-NORD-1138",
    "SKU-ÇA-VA-9",
    "SKU-PLAIN-300",
    "SKU-ŁÓDŹ-5",
];
const NOTES: &[&str] = &[
    "leave at the door 📦",
    "fragile — handle with care",
    "cadeau pour Noël 🎄",
    "請小心輕放",
    "call before delivery ☎",
];
const SOURCES: &[&str] = &[
    "checkout-api/2.14.0",
    "billing-worker/1.9.3",
    "shipping-svc/4.0.1",
    "admin-console/0.33.0",
];
const TENANTS: &[&str] = &["acme", "globex", "initech", "umbrella", "hooli"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "CHF"];

/// What a stream is about, which decides its event names and payloads.
#[derive(Clone, Copy)]
enum Kind {
    Order,
    Customer,
    Cart,
    Invoice,
}

struct Stream {
    id: String,
    kind: Kind,
    next_event_id: u64,
    last_ms: i64,
    tenant: &'static str,
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

/// A decimal below `max_int + 1` with two fraction digits, never ending in 0.
fn decimal(rng: &mut Rng, max_int: u64) -> String {
    let int = rng.below(max_int + 1);
    let mut cents = rng.below(99) + 1;
    if cents.is_multiple_of(10) {
        cents += 1;
    }
    format!("{int}.{cents:02}")
}

/// A 23-digit integer (too big for an `i64`, a `u64` and a float).
fn big_integer(rng: &mut Rng) -> String {
    let mut text = (rng.below(9) + 1).to_string();
    for _ in 0..22 {
        text.push(char::from(b'0' + u8::try_from(rng.below(10)).unwrap_or(0)));
    }
    text
}

fn order_lines(rng: &mut Rng) -> AttrValue {
    let count = rng.below(3) + 1;
    AttrValue::L(
        (0..count)
            .map(|_| {
                m([
                    ("sku", s(rng.pick(SKUS))),
                    ("qty", n(rng.below(5) + 1)),
                    ("unitPrice", n(decimal(rng, 2000))),
                ])
            })
            .collect(),
    )
}

fn address(rng: &mut Rng) -> AttrValue {
    m([
        ("city", s(rng.pick(CITIES))),
        ("line1", s(format!("{} rue des Écoles", rng.below(200) + 1))),
        ("postcode", s(format!("{:05}", rng.below(100_000)))),
        (
            "geo",
            m([("lat", n(decimal(rng, 80))), ("lon", n(decimal(rng, 170)))]),
        ),
    ])
}

/// The event name and payload of the next event of `stream`.
fn event(rng: &mut Rng, stream: &Stream) -> (&'static str, AttrValue) {
    let first = stream.next_event_id == 1;
    match stream.kind {
        Kind::Order if first => (
            "OrderPlaced",
            m([
                ("orderId", s(&stream.id)),
                ("customer", s(format!("customer-{}", rng.pick(NAMES)))),
                ("lines", order_lines(rng)),
                ("ledgerMicros", n(big_integer(rng))),
                ("giftWrap", AttrValue::Bool(rng.chance(30))),
                (
                    "note",
                    if rng.chance(50) {
                        s(rng.pick(NOTES))
                    } else {
                        AttrValue::Null
                    },
                ),
                ("shipTo", address(rng)),
            ]),
        ),
        Kind::Order => (
            if rng.chance(50) {
                "OrderPaid"
            } else {
                "OrderShipped"
            },
            m([
                ("orderId", s(&stream.id)),
                ("amount", n(decimal(rng, 9999))),
                ("currency", s(rng.pick(CURRENCIES))),
                ("ledgerMicros", n(big_integer(rng))),
                (
                    "card",
                    m([
                        ("brand", s(rng.pick(&["visa", "mastercard", "amex"]))),
                        ("last4", s(format!("{:04}", rng.below(10_000)))),
                    ]),
                ),
                ("carrierNote", s(rng.pick(NOTES))),
            ]),
        ),
        Kind::Customer => (
            if first {
                "CustomerRegistered"
            } else {
                "AddressChanged"
            },
            m([
                ("name", s(rng.pick(NAMES))),
                ("email", s(format!("{}@example.com", rng.pick(NAMES)))),
                ("address", address(rng)),
                ("marketingOptIn", AttrValue::Bool(rng.chance(40))),
                ("loyaltyPoints", n(rng.below(1_000_000))),
                ("balance", n(decimal(rng, 500))),
            ]),
        ),
        Kind::Cart => (
            if first { "CartCreated" } else { "ItemAdded" },
            m([
                ("cartId", s(&stream.id)),
                ("items", order_lines(rng)),
                ("discount", n(decimal(rng, 50))),
                ("coupon", s(format!("NOËL-{}", rng.below(1000)))),
                ("ledgerMicros", n(big_integer(rng))),
            ]),
        ),
        Kind::Invoice => (
            if first {
                "InvoiceIssued"
            } else {
                "InvoiceSettled"
            },
            m([
                ("invoiceId", s(&stream.id)),
                ("total", n(decimal(rng, 99_999))),
                ("tax", n(decimal(rng, 9_999))),
                ("currency", s(rng.pick(CURRENCIES))),
                ("ledgerMicros", n(big_integer(rng))),
                ("lines", order_lines(rng)),
                ("billTo", address(rng)),
            ]),
        ),
    }
}

fn new_stream(rng: &mut Rng, number: usize, clock_ms: i64) -> Stream {
    let kind = match rng.below(4) {
        0 => Kind::Order,
        1 => Kind::Customer,
        2 => Kind::Cart,
        _ => Kind::Invoice,
    };
    let id = match kind {
        Kind::Order => format!("order-{}", 1000 + number),
        Kind::Customer => format!("customer-{}-{number}", rng.pick(NAMES)),
        Kind::Cart => format!("cart-{:08x}", rng.next() as u32),
        Kind::Invoice => format!("invoice-2026-{number:05}"),
    };
    Stream {
        id,
        kind,
        next_event_id: 1,
        last_ms: clock_ms - 5_000,
        tenant: rng.pick(TENANTS),
    }
}

/// The stream record of the next event: Lambda's shape, compact JSON.
struct Generator {
    rng: Rng,
    streams: Vec<Stream>,
    clock_ms: i64,
    sequence: u128,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(fastrand::Rng::with_seed(seed)),
            streams: Vec::new(),
            clock_ms: START_MS,
            sequence: FIRST_SEQUENCE,
        }
    }

    fn next_record(&mut self) -> serde_json::Value {
        let rng = &mut self.rng;
        // commit time moves on by 0 to 39 ms per record
        self.clock_ms += i64::try_from(rng.below(40)).unwrap_or(0);
        self.sequence += u128::from(rng.below(2000) + 1);
        // a new stream one time in four, else an existing one
        let index = if self.streams.is_empty() || rng.chance(25) {
            let stream = new_stream(rng, self.streams.len() + 1, self.clock_ms);
            self.streams.push(stream);
            self.streams.len() - 1
        } else {
            usize::try_from(rng.below(self.streams.len() as u64)).unwrap_or(0)
        };
        let stream = &mut self.streams[index];
        // writers stamp events a little before commit: timestamps are not in
        // record order across streams, but never go back within a stream
        let jitter = i64::try_from(rng.below(250)).unwrap_or(0);
        let timestamp_ms = (self.clock_ms - jitter).max(stream.last_ms);
        stream.last_ms = timestamp_ms;
        let (name, payload) = event(rng, stream);
        let event_id = stream.next_event_id;
        stream.next_event_id += 1;

        let item: Item = BTreeMap::from([
            ("StreamId".to_owned(), s(&stream.id)),
            ("EventId".to_owned(), n(event_id)),
            ("EventName".to_owned(), s(name)),
            ("Payload".to_owned(), payload),
            ("Timestamp".to_owned(), n(timestamp_ms)),
            ("EventUuid".to_owned(), s(rng.uuid())),
            (
                "Metadata".to_owned(),
                m([
                    (
                        "correlationId",
                        s(format!("corr-{:04x}", rng.below(65_536))),
                    ),
                    ("causationId", s(rng.uuid())),
                    ("user", s(rng.pick(NAMES))),
                    ("source", s(rng.pick(SOURCES))),
                ]),
            ),
            ("Tenant".to_owned(), s(stream.tenant)),
        ]);
        let keys: Item = ["StreamId", "EventId"]
            .iter()
            .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        json!({
            "eventID": format!("{:032x}", rng.u128()),
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
}

/// The event's bytes (compact JSON) and how many records it holds.
pub(crate) fn generate(limit: Limit, seed: u64) -> Result<(Vec<u8>, usize), serde_json::Error> {
    const HEAD: &[u8] = b"{\"Records\":[";
    const TAIL: &[u8] = b"]}";
    let mut generator = Generator::new(seed);
    let mut out = HEAD.to_vec();
    let mut count = 0;
    loop {
        if let Limit::Records(max) = limit {
            if count == max {
                break;
            }
        }
        let record = serde_json::to_vec(&generator.next_record())?;
        if let Limit::Bytes(max) = limit {
            let separator = usize::from(count > 0);
            if out.len() + separator + record.len() + TAIL.len() > max {
                break;
            }
        }
        if count > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&record);
        count += 1;
    }
    out.extend_from_slice(TAIL);
    Ok((out, count))
}

const USAGE: &str = "usage: gen_batch [--seed S] N OUT.json\n       gen_batch [--seed S] --target-bytes BYTES OUT.json";

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mut seed = DEFAULT_SEED;
    let mut limit = None;
    let mut out = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => seed = args.next().ok_or(USAGE)?.parse()?,
            "--target-bytes" => limit = Some(Limit::Bytes(args.next().ok_or(USAGE)?.parse()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if limit.is_none() => limit = Some(Limit::Records(arg.parse()?)),
            _ if out.is_none() => out = Some(arg),
            _ => return Err(USAGE.into()),
        }
    }
    let (Some(limit), Some(out)) = (limit, out) else {
        return Err(USAGE.into());
    };
    let (bytes, count) = generate(limit, seed)?;
    if let Some(dir) = std::path::Path::new(&out).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let mut file = std::fs::File::create(&out).map_err(|e| format!("{out}: {e}"))?;
    file.write_all(&bytes)
        .map_err(|e| format!("writing {out}: {e}"))?;
    println!(
        "{}",
        json!({"file": out, "records": count, "bytes": bytes.len(), "seed": seed})
    );
    Ok(())
}
