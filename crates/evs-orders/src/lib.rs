//! A worked example of a **cross-stream** read model: orders, counted per
//! customer and per day, from the events of every `order-<id>` stream. It
//! is rebuilt from the archive (`evs-orders rebuild`) and kept live from the
//! events table's DynamoDB stream by a Lambda (the same binary), with a
//! second function, the *reconciler*, for the batches the live one gave up
//! on (`template.yaml`).
//!
//! **Events** (payload fields):
//! `OrderPlaced {"customerId": S, "totalCents": N}`,
//! `OrderPaid {"customerId": S, "amountCents": N}`,
//! `OrderCancelled {"customerId": S}`. Any other event name is ignored: it
//! touches no row, and its stream's ledger still advances.
//!
//! **Read models** ([`OrdersRow`]):
//! * `customers`, one row per `customerId`: `placed` (OrderPlaced
//!   events), `cancelled` (OrderCancelled events), `paidCents` (the sum of
//!   OrderPaid `amountCents`);
//! * `daily`, one row per UTC day of the event's timestamp (`YYYY-MM-DD`):
//!   `orders` (OrderPlaced events that day), `revenueCents` (OrderPaid
//!   `amountCents` that day). Every stream touches it: the hot row.
//!
//! **Refusals.** An order event with a missing or ill-typed field
//! (`customerId` not a non-empty string, an amount not a whole number) is
//! refused by the projection ([`Orders`]): its stream is *parked* (recorded
//! with the reason; its later events wait) while every other stream goes
//! on. `evs-orders parked` lists parked streams, `evs-orders resume STREAM`
//! applies one again from the events table once the cause is fixed.
//!
//! **Order.** A rebuild applies events in the archive's order; the live
//! driver in each stream's order, with streams interleaved as the shards
//! deliver them. Every field here is a count or a sum, so the rows are the
//! same whichever way the streams interleave.
//!
//! **The reconciler.** The live function's event source mapping sends a
//! batch it gave up on (retries or record age exhausted) to an SQS queue as
//! Lambda's on-failure record, which names the batch (`DDBStreamBatchInfo`:
//! shard, first and last `SequenceNumber`) but not its records. The
//! reconciler is `evs_pump::reconcile`, re-exported here ([`reconcile`],
//! [`invocation`], ...): it reads that range from the stream again
//! (`evs_pump::range::read_range`), collects the stream ids of its records
//! and applies each of those streams from the events table to its end
//! (`Applier::catch_up`). A range the stream no longer holds (trimmed after
//! 24 hours) fails its message, which the queue's own redrive policy moves
//! to its dead-letter queue, with a log line: the streams it held cannot be
//! named, and the read model needs `evs-orders rebuild` (which skips every
//! event already applied).
//!
//! [`dump_line`] is the stable line format of `evs-orders dump`.

use evs_core::RecordedEvent;
use evs_projection::live::{apply_event, BatchError, LiveReport};
use evs_projection::{Applier, Projection, RowKey, RowStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod read_model;
pub mod tables;

pub use evs_pump::reconcile::{
    invocation, reconcile, BatchInfo, Invocation, MessageOutcome, NotSqs, RangeFailure,
    RangeReader, ReconcileReport, StreamRanges,
};
pub use read_model::{ReadModel, ReadModelError};
pub use tables::OrdersTables;

/// The projection's name, kept in a SQL read model's `evs_meta` (a
/// database holding another projection's read model is refused).
pub const PROJECTION: &str = "orders";
/// The CloudWatch metrics namespace of both functions.
pub const NAMESPACE: &str = "evs/orders";
/// The `customers` read model.
pub const CUSTOMERS: &str = "customers";
/// The `daily` read model.
pub const DAILY: &str = "daily";

/// A customer's row in `customers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// OrderPlaced events.
    pub placed: u64,
    /// OrderCancelled events.
    pub cancelled: u64,
    /// The sum of OrderPaid `amountCents`.
    pub paid_cents: i64,
}

/// A day's row in `daily`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Daily {
    /// OrderPlaced events that day.
    pub orders: u64,
    /// The sum of OrderPaid `amountCents` that day.
    pub revenue_cents: i64,
}

/// A row of either read model; stored as its fields alone (untagged), the
/// model being part of the row's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OrdersRow {
    /// A `customers` row.
    Customer(Customer),
    /// A `daily` row.
    Day(Daily),
}

/// The projection (see the crate docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Orders;

/// Why the projection refuses an event (its stream is parked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// A payload field is missing or of the wrong type.
    #[error("{name} event {event_id}: payload field {field:?} {problem}")]
    Field {
        /// The event's name.
        name: String,
        /// Its `EventId`.
        event_id: u64,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The event's timestamp is not a day between years 0 and 9999.
    #[error(
        "{name} event {event_id}: its timestamp {timestamp_ms} ms is not a day of years 0 to 9999"
    )]
    Day {
        /// The event's name.
        name: String,
        /// Its `EventId`.
        event_id: u64,
        /// The timestamp.
        timestamp_ms: i64,
    },
    /// A sum or count would overflow.
    #[error("{name} event {event_id}: row {key} would overflow")]
    Overflow {
        /// The event's name.
        name: String,
        /// Its `EventId`.
        event_id: u64,
        /// The row.
        key: RowKey,
    },
    /// A stored row is of the other model's kind.
    #[error("row {0} holds another model's fields")]
    WrongRow(RowKey),
}

/// An order event, its fields checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Order<'e> {
    Placed { customer: &'e str },
    Paid { customer: &'e str, amount: i64 },
    Cancelled { customer: &'e str },
}

impl<'e> Order<'e> {
    /// The order event `event` is, `None` for any other name.
    fn of(event: &'e RecordedEvent) -> Result<Option<Order<'e>>, Refused> {
        let field = |field: &'static str, problem: &'static str| Refused::Field {
            name: event.name.clone(),
            event_id: event.event_id,
            field,
            problem,
        };
        let customer = || match event.payload.get("customerId") {
            None => Err(field("customerId", "is missing")),
            Some(Value::String(s)) if s.is_empty() => Err(field("customerId", "is empty")),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(field("customerId", "is not a string")),
        };
        let whole = |name: &'static str| match event.payload.get(name) {
            None => Err(field(name, "is missing")),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| field(name, "is not a whole number of cents")),
        };
        Ok(Some(match event.name.as_str() {
            "OrderPlaced" => {
                let customer = customer()?;
                whole("totalCents")?;
                Order::Placed { customer }
            }
            "OrderPaid" => Order::Paid {
                customer: customer()?,
                amount: whole("amountCents")?,
            },
            "OrderCancelled" => Order::Cancelled {
                customer: customer()?,
            },
            _ => return Ok(None),
        }))
    }
}

/// The UTC day (`YYYY-MM-DD`) of epoch milliseconds, `None` outside years
/// 0 to 9999.
pub fn utc_day(timestamp_ms: i64) -> Option<String> {
    // Howard Hinnant's days-to-civil algorithm.
    let days = timestamp_ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (0..=9999)
        .contains(&year)
        .then(|| format!("{year:04}-{month:02}-{day:02}"))
}

fn day_of(event: &RecordedEvent) -> Result<String, Refused> {
    utc_day(event.timestamp_ms).ok_or_else(|| Refused::Day {
        name: event.name.clone(),
        event_id: event.event_id,
        timestamp_ms: event.timestamp_ms,
    })
}

impl Projection for Orders {
    type Row = OrdersRow;
    type Error = Refused;

    fn event_names(&self) -> Option<&'static [&'static str]> {
        Some(&["OrderPlaced", "OrderPaid", "OrderCancelled"])
    }

    fn keys(&self, event: &RecordedEvent) -> Result<Vec<RowKey>, Refused> {
        let Some(order) = Order::of(event)? else {
            return Ok(Vec::new());
        };
        Ok(match order {
            Order::Placed { customer } | Order::Paid { customer, .. } => vec![
                RowKey::new(CUSTOMERS, customer),
                RowKey::new(DAILY, day_of(event)?),
            ],
            Order::Cancelled { customer } => vec![RowKey::new(CUSTOMERS, customer)],
        })
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        key: &RowKey,
        row: &mut Option<OrdersRow>,
    ) -> Result<(), Refused> {
        let Some(order) = Order::of(event)? else {
            return Ok(());
        };
        let overflow = || Refused::Overflow {
            name: event.name.clone(),
            event_id: event.event_id,
            key: key.clone(),
        };
        let add = |to: &mut u64| to.checked_add(1).map(|n| *to = n).ok_or_else(overflow);
        let sum = |to: &mut i64, n: i64| to.checked_add(n).map(|s| *to = s).ok_or_else(overflow);
        match key.model.as_ref() {
            CUSTOMERS => {
                let mut c = match row.take() {
                    None => Customer::default(),
                    Some(OrdersRow::Customer(c)) => c,
                    Some(OrdersRow::Day(_)) => return Err(Refused::WrongRow(key.clone())),
                };
                match order {
                    Order::Placed { .. } => add(&mut c.placed)?,
                    Order::Paid { amount, .. } => sum(&mut c.paid_cents, amount)?,
                    Order::Cancelled { .. } => add(&mut c.cancelled)?,
                }
                *row = Some(OrdersRow::Customer(c));
            }
            DAILY => {
                let mut d = match row.take() {
                    None => Daily::default(),
                    Some(OrdersRow::Day(d)) => d,
                    Some(OrdersRow::Customer(_)) => return Err(Refused::WrongRow(key.clone())),
                };
                match order {
                    Order::Placed { .. } => add(&mut d.orders)?,
                    Order::Paid { amount, .. } => sum(&mut d.revenue_cents, amount)?,
                    Order::Cancelled { .. } => {}
                }
                *row = Some(OrdersRow::Day(d));
            }
            _ => {}
        }
        Ok(())
    }
}

/// One row as a line of `evs-orders dump`, a stable format: a JSON object
/// with `model` and `key` first, then the row's fields in this order:
/// `{"model":"customers","key":"c-17","placed":3,"cancelled":1,"paidCents":4200}`,
/// `{"model":"daily","key":"2026-12-07","orders":9,"revenueCents":123400}`.
pub fn dump_line(key: &RowKey, row: &OrdersRow) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        model: &'a str,
        key: &'a str,
        #[serde(flatten)]
        row: &'a OrdersRow,
    }
    let line = Line {
        model: &key.model,
        key: &key.key,
        row,
    };
    // A struct of strings and integers always serializes.
    serde_json::to_string(&line).unwrap_or_default()
}

/// The live driver's handler: applies one Lambda DynamoDB Streams event
/// (its JSON text); the report's [`LiveReport::response`] is the answer
/// (`batchItemFailures`) and [`LiveReport::emf_line`] its metrics.
pub async fn handle_stream<St: RowStore<OrdersRow>>(
    applier: &mut Applier<Orders, St>,
    event: &str,
    now_ms: i64,
) -> Result<LiveReport, BatchError> {
    apply_event(applier, event, now_ms).await
}

#[cfg(test)]
mod tests;
