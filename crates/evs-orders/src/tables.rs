//! The orders read model as the projection's own SQL tables: `customers`
//! (one row per customer) and `daily` (one row per UTC day), with a column
//! per field, written in the same transaction as the rows and the ledger
//! of every commit ([`evs_projection::SqliteTables`]): exactly once, like
//! the rows themselves; the same tables in PostgreSQL
//! ([`evs_projection::PostgresTables`]).
//!
//! ```sql
//! select customer_id, placed, cancelled, paid_cents from customers;
//! select day, orders, revenue_cents from daily;
//! ```

use evs_projection::rusqlite::{params, Transaction};
use evs_projection::tokio_postgres::Transaction as PgTransaction;
use evs_projection::{PostgresTables, RowKey, RowWrite, SqliteSchema, SqliteTables};

use crate::{OrdersRow, CUSTOMERS, DAILY};

/// The orders read model's own tables (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersTables;

/// The tables, in SQL that SQLite and PostgreSQL both take.
pub const SCHEMA: &str = "
create table if not exists customers (
    customer_id text primary key,
    placed bigint not null,
    cancelled bigint not null,
    paid_cents bigint not null
);
create table if not exists daily (
    day text primary key,
    orders bigint not null,
    revenue_cents bigint not null
);
";

impl SqliteSchema for OrdersTables {
    fn schema(&self) -> &str {
        SCHEMA
    }
}

/// A count as SQL's signed 64-bit integer (counts stay far below 2^63).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SqliteTables<OrdersRow> for OrdersTables {
    fn write(
        &self,
        tx: &Transaction<'_>,
        key: &RowKey,
        row: Option<&OrdersRow>,
    ) -> evs_projection::rusqlite::Result<()> {
        match (key.model.as_ref(), row) {
            (CUSTOMERS, Some(OrdersRow::Customer(c))) => {
                tx.prepare_cached(
                    "insert into customers (customer_id, placed, cancelled, paid_cents)
                     values (?1, ?2, ?3, ?4)
                     on conflict (customer_id) do update set placed = excluded.placed,
                         cancelled = excluded.cancelled, paid_cents = excluded.paid_cents",
                )?
                .execute(params![
                    key.key,
                    int(c.placed),
                    int(c.cancelled),
                    c.paid_cents
                ])?;
            }
            (DAILY, Some(OrdersRow::Day(d))) => {
                tx.prepare_cached(
                    "insert into daily (day, orders, revenue_cents) values (?1, ?2, ?3)
                     on conflict (day) do update set orders = excluded.orders,
                         revenue_cents = excluded.revenue_cents",
                )?
                .execute(params![key.key, int(d.orders), d.revenue_cents])?;
            }
            (CUSTOMERS, None) => {
                tx.prepare_cached("delete from customers where customer_id = ?1")?
                    .execute(params![key.key])?;
            }
            (DAILY, None) => {
                tx.prepare_cached("delete from daily where day = ?1")?
                    .execute(params![key.key])?;
            }
            // the projection writes no other row
            _ => {}
        }
        Ok(())
    }
}

#[evs_projection::async_trait]
impl PostgresTables<OrdersRow> for OrdersTables {
    fn schema(&self) -> &str {
        SCHEMA
    }

    /// Four statements at most, each over arrays: upserts and deletes of
    /// `customers` and of `daily`.
    async fn write(
        &self,
        tx: &PgTransaction<'_>,
        rows: &[RowWrite<OrdersRow>],
    ) -> Result<(), evs_projection::tokio_postgres::Error> {
        let (mut ids, mut placed, mut cancelled, mut paid) = (vec![], vec![], vec![], vec![]);
        let (mut days, mut orders, mut revenue) = (vec![], vec![], vec![]);
        let (mut gone_customers, mut gone_days) = (vec![], vec![]);
        for w in rows {
            match (w.key.model.as_ref(), &w.row) {
                (CUSTOMERS, Some(OrdersRow::Customer(c))) => {
                    ids.push(w.key.key.as_str());
                    placed.push(int(c.placed));
                    cancelled.push(int(c.cancelled));
                    paid.push(c.paid_cents);
                }
                (DAILY, Some(OrdersRow::Day(d))) => {
                    days.push(w.key.key.as_str());
                    orders.push(int(d.orders));
                    revenue.push(d.revenue_cents);
                }
                (CUSTOMERS, None) => gone_customers.push(w.key.key.as_str()),
                (DAILY, None) => gone_days.push(w.key.key.as_str()),
                // the projection writes no other row
                _ => {}
            }
        }
        if !ids.is_empty() {
            tx.execute(
                "insert into customers (customer_id, placed, cancelled, paid_cents)
                 select * from unnest($1::text[], $2::int8[], $3::int8[], $4::int8[])
                 on conflict (customer_id) do update set placed = excluded.placed,
                     cancelled = excluded.cancelled, paid_cents = excluded.paid_cents",
                &[&ids, &placed, &cancelled, &paid],
            )
            .await?;
        }
        if !days.is_empty() {
            tx.execute(
                "insert into daily (day, orders, revenue_cents)
                 select * from unnest($1::text[], $2::int8[], $3::int8[])
                 on conflict (day) do update set orders = excluded.orders,
                     revenue_cents = excluded.revenue_cents",
                &[&days, &orders, &revenue],
            )
            .await?;
        }
        if !gone_customers.is_empty() {
            tx.execute(
                "delete from customers where customer_id = any($1)",
                &[&gone_customers],
            )
            .await?;
        }
        if !gone_days.is_empty() {
            tx.execute("delete from daily where day = any($1)", &[&gone_days])
                .await?;
        }
        Ok(())
    }
}
