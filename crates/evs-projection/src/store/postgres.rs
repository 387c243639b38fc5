//! [`PostgresRowStore`]: a projection's rows and ledger in a PostgreSQL
//! database (feature `postgres`).
//!
//! # Schema
//!
//! Three tables, created when absent (the SQLite store uses the same ones):
//!
//! * `evs_meta(name text primary key, value text not null)`: `projection`,
//!   the name of the projection whose read model the database holds, and
//!   `format`, `1`. A database that holds another projection's read model
//!   is refused ([`StoreError::OtherProjection`]) before anything is
//!   written: its ledger would be read as this one's.
//! * `evs_rows(model text, key text, revision bigint, state jsonb, primary
//!   key (model, key))`: a row's serde form as `jsonb` (numbers keep their
//!   value, not their spelling: `1e2` reads back as `100`). `state` NULL is a
//!   deleted row: a tombstone that keeps its revision, so that a copy read
//!   before the delete never matches the row created after it.
//! * `evs_ledger(stream text primary key, version bigint not null, parked
//!   jsonb)`: `parked`, while the stream is parked, is
//!   `{"event_id", "event_name", "reason", "at_ms"}`.
//!
//! [`PostgresRowStore::with_view`] creates a view per model that reads a
//! row's fields as columns (`select key, revision, "placed" from
//! "customers"`), so the read model answers plain SQL. A projection may
//! also keep tables of its own ([`PostgresTables`],
//! [`PostgresRowStore::with_tables`]): each row change of a commit is handed
//! to it with the commit's open transaction, after the conditional
//! statements passed, so its statements count exactly once with the ledger,
//! whatever the schema; an error rolls the commit back (a serialization
//! failure or deadlock in them is a conflict, as above).
//!
//! # Commit
//!
//! A unit is one `READ COMMITTED` transaction of at most four conditional
//! statements, each over arrays of the unit's items (`unnest`): rows
//! expected at a revision `r > 0` are an `update … where revision = r` (to
//! `r + 1`), rows expected absent an `insert … on conflict do nothing` (a
//! present row, a tombstone too, is a conflict); ledger entries expected at
//! `v > 0` an `update … where version = v`, those expected at 0 an upsert
//! that accepts an absent entry or one at version 0. Each statement must
//! change as many entries as it names.
//! A ledger write that applies events (a higher version, no park) also
//! requires the stored entry not to be parked: a driver that has not seen
//! a park must not clear it. Any statement that changes no row rolls the
//! transaction back: [`Commit::Conflict`]. So does a serialization failure
//! or a deadlock (`40001`, `40P01`: drivers writing the same rows may lock
//! them in different orders; one of them loses and folds again). The
//! statements go in one pipelined round trip.
//!
//! Why revisions rather than `select … for update`: the applier loads,
//! folds and commits optimistically, holding no lock while it folds (the
//! contract of [`RowStore`], the same as the DynamoDB store's conditional
//! transaction). The check is safe under `READ COMMITTED`: an `update`
//! that finds its row locked by a concurrent transaction waits, then
//! evaluates its `where` again on the row version that transaction left,
//! so of two drivers that read the same revision exactly one commits and
//! no update is lost.
//!
//! A connection lost during a commit is a transient [`StoreError::Backend`]:
//! the outcome is unknown, and the driver finds out by loading again. The
//! store holds one connection (calls on one store queue on it; open one
//! store per driver to run them in parallel), prepares its statements once
//! per connection, and opens a new connection on the next call after one
//! is lost. Loads read any number of keys in one round trip (`unnest` of
//! arrays). A commit holds at most [`PostgresRowStore::MAX_ITEMS`] items.
//!
//! What PostgreSQL cannot store is refused as [`StoreError::Row`] before
//! anything is sent: a row whose JSON holds a NUL character (`\u0000`,
//! which `jsonb` refuses), a key with a NUL or longer than
//! [`PostgresRowStore::MAX_KEY_BYTES`] (an index entry has a size limit).
//! The database must be UTF-8. The connection is plain TCP or a Unix
//! socket, without TLS.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, IsolationLevel, NoTls, Statement, Transaction};

use super::sql::{decode, ledger_of, parked_json, unsigned};
use super::{Commit, RowStore, RowWrite, StoreError, Stored, Unit};
use crate::projection::{Ledger, RowKey};

/// See [`PostgresRowStore::MAX_ITEMS`].
const MAX_ITEMS: usize = 10_000;

/// See [`PostgresRowStore::MAX_KEY_BYTES`].
const MAX_KEY_BYTES: usize = 2048;

/// The `format` recorded in `evs_meta`.
const FORMAT: &str = "1";

/// How long a connection attempt waits, unless the URL says
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock that serialises the schema's creation and check
/// between connections.
const SETUP_LOCK: i64 = 0x6576_735f_7072_6f6a;

/// The tables (see the module docs).
const SCHEMA: &str = "
create table if not exists evs_meta (name text primary key, value text not null);
create table if not exists evs_rows (
    model text not null,
    key text not null,
    revision bigint not null,
    state jsonb,
    primary key (model, key)
);
create table if not exists evs_ledger (stream text primary key, version bigint not null, parked jsonb);
";

/// Table names a view may not take.
const TABLES: [&str; 3] = ["evs_meta", "evs_rows", "evs_ledger"];

/// A projection's own tables, written in the transaction of every commit
/// that changes a row: the projection owns the schema and the statements,
/// the store adds the rows and the ledger to the same transaction.
#[async_trait]
pub trait PostgresTables<R>: Send + Sync {
    /// Statements creating the tables (`create table if not exists …`),
    /// run by [`PostgresRowStore::with_tables`].
    fn schema(&self) -> &str;

    /// Writes the rows a commit changes (each with its new state; `None`:
    /// deleted, sorted by model then key) with the commit's open
    /// transaction: a few statements over arrays keep a commit of thousands
    /// of rows to a few round trips. An error rolls the whole commit back.
    async fn write(
        &self,
        tx: &Transaction<'_>,
        rows: &[RowWrite<R>],
    ) -> Result<(), tokio_postgres::Error>;
}

/// A projection's rows and ledger in a PostgreSQL database (see the module
/// docs for the schema and the commit).
pub struct PostgresRowStore {
    config: Config,
    location: String,
    projection: String,
    /// The projection's own tables: an `Arc<dyn PostgresTables<R>>` of the
    /// row type it was given for.
    tables: Option<Arc<dyn Any + Send + Sync>>,
    /// `None` once lost (or before the first call): the next call connects.
    conn: Mutex<Option<Conn>>,
}

impl fmt::Debug for PostgresRowStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRowStore")
            .field("location", &self.location)
            .field("projection", &self.projection)
            .finish_non_exhaustive()
    }
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    st: Statements,
}

struct Statements {
    load_rows: Statement,
    load_ledger: Statement,
    row_update: Statement,
    row_insert: Statement,
    ledger_update: Statement,
    ledger_upsert: Statement,
    versions: Statement,
    parked: Statement,
    rows: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            load_rows: client
                .prepare(
                    "select k.i, r.revision, r.state::text \
                     from unnest($1::text[], $2::text[]) with ordinality as k(model, key, i) \
                     join evs_rows r on r.model = k.model and r.key = k.key",
                )
                .await?,
            load_ledger: client
                .prepare(
                    "select k.i, l.version, l.parked::text \
                     from unnest($1::text[]) with ordinality as k(stream, i) \
                     join evs_ledger l on l.stream = k.stream",
                )
                .await?,
            row_update: client
                .prepare(
                    "update evs_rows r set revision = r.revision + 1, state = u.state::jsonb \
                     from unnest($1::text[], $2::text[], $3::int8[], $4::text[]) \
                         as u(model, key, expected, state) \
                     where r.model = u.model and r.key = u.key and r.revision = u.expected",
                )
                .await?,
            row_insert: client
                .prepare(
                    "insert into evs_rows (model, key, revision, state) \
                     select model, key, 1, state::jsonb \
                     from unnest($1::text[], $2::text[], $3::text[]) as u(model, key, state) \
                     on conflict (model, key) do nothing",
                )
                .await?,
            ledger_update: client
                .prepare(
                    "update evs_ledger l set version = u.version, parked = u.parked::jsonb \
                     from unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::bool[]) \
                         as u(stream, version, parked, expected, moves) \
                     where l.stream = u.stream and l.version = u.expected \
                         and (not u.moves or l.parked is null)",
                )
                .await?,
            // expecting 0: a write moves the stream on when it applies
            // events (a version above 0) without parking it
            ledger_upsert: client
                .prepare(
                    "insert into evs_ledger as l (stream, version, parked) \
                     select stream, version, parked::jsonb \
                     from unnest($1::text[], $2::int8[], $3::text[]) as u(stream, version, parked) \
                     on conflict (stream) do update \
                     set version = excluded.version, parked = excluded.parked \
                     where l.version = 0 and (excluded.version = 0 \
                         or excluded.parked is not null or l.parked is null)",
                )
                .await?,
            versions: client
                .prepare("select stream, version from evs_ledger")
                .await?,
            parked: client
                .prepare(
                    "select stream, version, parked::text from evs_ledger where parked is not null",
                )
                .await?,
            rows: client
                .prepare("select model, key, state::text from evs_rows where state is not null")
                .await?,
        })
    }
}

/// A row write as the statements take it.
struct RowParams<'a> {
    key: &'a RowKey,
    model: &'a str,
    expected: i64,
    state: Option<String>,
}

/// A ledger write as the statements take it.
struct LedgerParams<'a> {
    stream: &'a str,
    expected: i64,
    version: i64,
    parked: Option<String>,
    /// Applies events: only onto an entry that is not parked.
    moves: bool,
}

impl PostgresRowStore {
    /// The most items (rows plus ledger entries) one commit holds.
    pub const MAX_ITEMS: usize = MAX_ITEMS;

    /// The longest row key or stream id stored, in bytes (the primary
    /// key's index entries must fit in a third of a page).
    pub const MAX_KEY_BYTES: usize = MAX_KEY_BYTES;

    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST
    /// [:PORT]/DATABASE`, or PostgreSQL's `key=value` form; no TLS), creates
    /// the tables when absent and checks that the database holds the read
    /// model of `projection`, or none (then it records `projection`).
    ///
    /// Errors: [`StoreError::OtherProjection`] (nothing written), and
    /// [`StoreError::Backend`] for a URL that does not parse, a server that
    /// cannot be reached (transient) or refuses the user, and a database
    /// that is not UTF-8 or holds a format this build does not read.
    pub async fn connect(url: &str, projection: &str) -> Result<Self, StoreError> {
        let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            let message = format!(
                "the PostgreSQL URL does not parse ({}); expected \
                 postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                describe(&e)
            );
            backend(message, false, e)
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let store = Self {
            location: location(&config),
            config,
            projection: projection.to_owned(),
            tables: None,
            conn: Mutex::new(None),
        };
        let conn = store.open().await?;
        *store.conn.lock().await = Some(conn);
        Ok(store)
    }

    /// Adds the projection's own tables (created now when absent), written
    /// with every commit of rows of type `R`.
    pub async fn with_tables<R: 'static>(
        mut self,
        tables: impl PostgresTables<R> + 'static,
    ) -> Result<Self, StoreError> {
        {
            let conn = self.conn().await?;
            conn.client
                .batch_execute(tables.schema())
                .await
                .map_err(|e| self.error("creating the projection's tables", e))?;
        }
        let tables: Arc<dyn PostgresTables<R>> = Arc::new(tables);
        self.tables = Some(Arc::new(tables));
        Ok(self)
    }

    /// The database, as `host:port/database` (never the password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The projection whose read model the database holds.
    pub fn projection(&self) -> &str {
        &self.projection
    }

    /// Creates (or replaces) the view `"<model>"`: the rows of `model` not
    /// deleted, as `key`, `revision` and one text column per field named in
    /// `columns` (`state->>'<column>'`; cast it to read a number). Names
    /// follow the model-name rules of [`RowKey`] (at most 63 characters, a
    /// PostgreSQL name's limit), so nothing can be injected; a column may
    /// not be `key` or `revision`, and the view not take a table's name.
    /// A view's columns can be added to, not removed (drop the view first).
    pub async fn with_view(self, model: &str, columns: &[&str]) -> Result<Self, StoreError> {
        let sql = view_sql(model, columns).map_err(|reason| StoreError::Backend {
            message: format!("cannot create the view {model:?}: {reason}"),
            transient: false,
            source: None,
        })?;
        let conn = self.conn().await?;
        conn.client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.error(&format!("creating the view {model:?}"), e))?;
        drop(conn);
        Ok(self)
    }

    /// The connection, opened again when lost.
    async fn conn(&self) -> Result<MappedMutexGuard<'_, Conn>, StoreError> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            *guard = Some(self.open().await?);
        }
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| StoreError::Backend {
            message: format!("PostgreSQL at {}: no connection", self.location),
            transient: true,
            source: None,
        })
    }

    /// Connects, checks and creates the schema, prepares the statements.
    async fn open(&self) -> Result<Conn, StoreError> {
        let (mut client, connection) = self.config.connect(NoTls).await.map_err(|e| {
            let message = format!(
                "cannot connect to PostgreSQL at {}: {}; check that the server runs there and \
                 accepts connections, and the URL's host, port, database, user and password",
                self.location,
                describe(&e)
            );
            backend(message, is_transient(&e), e)
        })?;
        let location = self.location.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(location, error = %describe(&e), "PostgreSQL connection lost");
            }
        });
        self.setup(&mut client).await?;
        let st = Statements::prepare(&client)
            .await
            .map_err(|e| self.error("preparing the statements", e))?;
        Ok(Conn { client, st })
    }

    /// In one transaction, under an advisory lock: the database's encoding
    /// and `evs_meta` checked (nothing written when they refuse it), then
    /// the missing tables created and the projection recorded.
    async fn setup(&self, client: &mut Client) -> Result<(), StoreError> {
        let err = |e| self.error("checking the schema", e);
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(err)?;
        tx.execute("select pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
            .await
            .map_err(err)?;
        let row = tx
            .query_one(
                "select current_setting('server_encoding'), \
                 to_regclass('evs_meta') is not null, \
                 to_regclass('evs_rows') is not null and to_regclass('evs_ledger') is not null",
                &[],
            )
            .await
            .map_err(err)?;
        let (encoding, has_meta, has_tables): (String, bool, bool) = (
            row.try_get(0).map_err(err)?,
            row.try_get(1).map_err(err)?,
            row.try_get(2).map_err(err)?,
        );
        if encoding != "UTF8" {
            return Err(self.refused(format!(
                "the database's encoding is {encoding}; a read model needs UTF8 \
                 (create the database with encoding 'UTF8')"
            )));
        }
        let mut meta: Vec<(String, String)> = Vec::new();
        if has_meta {
            for row in tx
                .query("select name, value from evs_meta", &[])
                .await
                .map_err(err)?
            {
                meta.push((row.try_get(0).map_err(err)?, row.try_get(1).map_err(err)?));
            }
        }
        let get = |name: &str| meta.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        if let Some(found) = get("projection") {
            if found != self.projection {
                return Err(StoreError::OtherProjection {
                    location: self.location.clone(),
                    found,
                    expected: self.projection.clone(),
                });
            }
        }
        if let Some(format) = get("format") {
            if format != FORMAT {
                return Err(self.refused(format!(
                    "the read model is of format {format}; this build reads format {FORMAT}"
                )));
            }
        }
        if !has_meta || !has_tables {
            tx.batch_execute(SCHEMA).await.map_err(err)?;
        }
        if get("projection").is_none() || get("format").is_none() {
            tx.execute(
                "insert into evs_meta (name, value) values ('projection', $1), ('format', $2) \
                 on conflict (name) do nothing",
                &[&self.projection, &FORMAT],
            )
            .await
            .map_err(err)?;
        }
        // a store that found everything in place has written nothing: a
        // user that may only read and write the tables can open it
        tx.commit().await.map_err(err)
    }

    /// A non-transient refusal of the database, as one line.
    fn refused(&self, reason: String) -> StoreError {
        StoreError::Backend {
            message: format!("PostgreSQL at {}: {reason}", self.location),
            transient: false,
            source: None,
        }
    }

    /// `e`, met while `doing`.
    fn error(&self, doing: &str, e: tokio_postgres::Error) -> StoreError {
        let message = format!("PostgreSQL at {}: {doing}: {}", self.location, describe(&e));
        backend(message, is_transient(&e), e)
    }
}

impl Conn {
    /// Runs the statements of a unit (already in lock order) in one
    /// transaction: `Conflict` when one of them changes no row.
    async fn commit<R: Sync>(
        &mut self,
        rows: &[RowParams<'_>],
        ledger: &[LedgerParams<'_>],
        tables: Option<(&dyn PostgresTables<R>, &Unit<R>)>,
    ) -> Result<Commit, tokio_postgres::Error> {
        let Conn { client, st } = self;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await?;
        // four statements at most, each over arrays: the unit's items in
        // one round trip; each must change as many entries as it names
        let (mut ins_model, mut ins_key, mut ins_state) = (Vec::new(), Vec::new(), Vec::new());
        let (mut up_model, mut up_key, mut up_expected, mut up_state) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for w in rows {
            if w.expected == 0 {
                ins_model.push(w.model);
                ins_key.push(w.key.key.as_str());
                ins_state.push(w.state.as_deref());
            } else {
                up_model.push(w.model);
                up_key.push(w.key.key.as_str());
                up_expected.push(w.expected);
                up_state.push(w.state.as_deref());
            }
        }
        let (mut new_stream, mut new_version, mut new_parked) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut up_stream, mut up_version, mut up_parked, mut up_from, mut up_moves) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for l in ledger {
            if l.expected == 0 {
                new_stream.push(l.stream);
                new_version.push(l.version);
                new_parked.push(l.parked.as_deref());
            } else {
                up_stream.push(l.stream);
                up_version.push(l.version);
                up_parked.push(l.parked.as_deref());
                up_from.push(l.expected);
                up_moves.push(l.moves);
            }
        }
        type Params<'p> = Vec<&'p (dyn ToSql + Sync)>;
        let mut calls: Vec<(&Statement, Params<'_>, usize)> = Vec::with_capacity(4);
        if !ins_model.is_empty() {
            calls.push((
                &st.row_insert,
                vec![&ins_model, &ins_key, &ins_state],
                ins_model.len(),
            ));
        }
        if !up_model.is_empty() {
            let params: Params<'_> = vec![&up_model, &up_key, &up_expected, &up_state];
            calls.push((&st.row_update, params, up_model.len()));
        }
        if !new_stream.is_empty() {
            let params: Params<'_> = vec![&new_stream, &new_version, &new_parked];
            calls.push((&st.ledger_upsert, params, new_stream.len()));
        }
        if !up_stream.is_empty() {
            let params: Params<'_> = vec![&up_stream, &up_version, &up_parked, &up_from, &up_moves];
            calls.push((&st.ledger_update, params, up_stream.len()));
        }
        // pipelined: sent in this order, answered in this order
        let results = futures_util::future::join_all(
            calls
                .iter()
                .map(|(statement, params, _)| tx.execute(*statement, params)),
        )
        .await;
        let mut applied = true;
        for (result, (_, _, named)) in results.into_iter().zip(&calls) {
            match result {
                Ok(changed) => applied &= changed == *named as u64,
                // the first error is the cause (the later statements fail
                // because the transaction is aborted)
                Err(e) => {
                    let _ = tx.rollback().await;
                    return if is_conflict(&e) {
                        Ok(Commit::Conflict)
                    } else {
                        Err(e)
                    };
                }
            }
        }
        if !applied {
            // nothing was committed, whatever the rollback's answer
            let _ = tx.rollback().await;
            return Ok(Commit::Conflict);
        }
        if let Some((tables, unit)) = tables {
            if let Err(e) = tables.write(&tx, &unit.rows).await {
                let _ = tx.rollback().await;
                return if is_conflict(&e) {
                    Ok(Commit::Conflict)
                } else {
                    Err(e)
                };
            }
        }
        match tx.commit().await {
            Ok(()) => Ok(Commit::Done),
            Err(e) if is_conflict(&e) => Ok(Commit::Conflict),
            Err(e) => Err(e),
        }
    }
}

/// The `create or replace view` of [`PostgresRowStore::with_view`], or why
/// the names are refused.
fn view_sql(model: &str, columns: &[&str]) -> Result<String, String> {
    let name_ok = |name: &str| {
        (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let rule = "1 to 63 characters of A-Z a-z 0-9 _ - .";
    if !name_ok(model) {
        return Err(format!("a view's name is {rule}"));
    }
    if TABLES.contains(&model) {
        return Err(format!("{model} is a table of the read model"));
    }
    let mut select = String::from("key, revision");
    for (i, column) in columns.iter().enumerate() {
        if !name_ok(column) {
            return Err(format!("column {column:?}: a column's name is {rule}"));
        }
        if matches!(*column, "key" | "revision") || columns[..i].contains(column) {
            return Err(format!("column {column:?} is named twice"));
        }
        select.push_str(&format!(", state->>'{column}' as \"{column}\""));
    }
    Ok(format!(
        "create or replace view \"{model}\" as select {select} from evs_rows \
         where model = '{model}' and state is not null"
    ))
}

/// `host:port/database` of `config` (no user, no password).
fn location(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => match config.get_hostaddrs().first() {
            Some(addr) => addr.to_string(),
            None => "localhost".to_owned(),
        },
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("(the user's database)");
    format!("{host}:{port}/{database}")
}

/// One line: the server's message and code, or the client's error and its
/// cause.
fn describe(e: &tokio_postgres::Error) -> String {
    let text = match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    };
    text.replace('\n', " ")
}

fn backend(message: String, transient: bool, e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend {
        message,
        transient,
        source: Some(Box::new(e)),
    }
}

/// A lost race: a serialization failure or a deadlock.
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| matches!(c.code(), "40001" | "40P01"))
}

/// Whether waiting may heal `e`: a lost or refused connection, a server
/// shutting down or out of resources, a lock or statement timeout.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let c = code.code();
            ["08", "53", "57P"].iter().any(|p| c.starts_with(p))
                || matches!(c, "40001" | "40P01" | "55P03" | "57014")
        }
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

fn row_error(key: &RowKey, reason: impl Into<String>) -> StoreError {
    StoreError::Row {
        key: key.clone(),
        reason: reason.into(),
    }
}

/// Whether a key or stream id can be stored (no NUL, not too long).
fn storable(text: &str) -> bool {
    text.len() <= MAX_KEY_BYTES && !text.contains('\0')
}

/// Checks that `key` can be stored.
fn check_key(key: &RowKey) -> Result<(), StoreError> {
    key.check().map_err(|e| row_error(key, e.to_string()))?;
    if !storable(&key.key) {
        return Err(row_error(
            key,
            format!("a key is at most {MAX_KEY_BYTES} bytes, without NUL characters"),
        ));
    }
    Ok(())
}

/// Checks `key` and encodes `row` as the `jsonb` text it is stored as.
fn encode<R: Serialize>(key: &RowKey, row: &R) -> Result<String, StoreError> {
    check_key(key)?;
    let json = serde_json::to_string(row)
        .map_err(|e| row_error(key, format!("it does not encode as JSON: {e}")))?;
    if has_nul_escape(&json) {
        return Err(row_error(
            key,
            "it holds a NUL character (\\u0000), which PostgreSQL's jsonb cannot store",
        ));
    }
    Ok(json)
}

/// Whether JSON text holds the escape `\u0000` (outside strings there are
/// no backslashes, and inside one an escape is skipped whole).
fn has_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1..i + 6) == Some(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// A revision or version as a `bigint`.
fn bigint(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Backend {
        message: format!("{what} {n} is past PostgreSQL's bigint"),
        transient: false,
        source: None,
    })
}

impl PostgresRowStore {
    /// The parameters of `unit`'s writes, checked, in lock order.
    fn params<'u, R: Serialize>(
        unit: &'u Unit<R>,
    ) -> Result<(Vec<RowParams<'u>>, Vec<LedgerParams<'u>>), StoreError> {
        let mut rows = Vec::with_capacity(unit.rows.len());
        for w in &unit.rows {
            check_key(&w.key)?;
            let state = w.row.as_ref().map(|row| encode(&w.key, row)).transpose()?;
            rows.push(RowParams {
                key: &w.key,
                model: &w.key.model,
                expected: bigint(w.expected, "row revision")?,
                state,
            });
        }
        rows.sort_by(|a, b| a.key.cmp(b.key));
        let mut ledger = Vec::with_capacity(unit.ledger.len());
        for w in &unit.ledger {
            if !storable(&w.stream) {
                return Err(StoreError::Backend {
                    message: format!(
                        "stream id {:?}… cannot be stored: at most {MAX_KEY_BYTES} bytes, \
                         without NUL characters",
                        w.stream.chars().take(40).collect::<String>()
                    ),
                    transient: false,
                    source: None,
                });
            }
            ledger.push(LedgerParams {
                stream: &w.stream,
                expected: bigint(w.expected, "ledger version")?,
                version: bigint(w.ledger.version, "ledger version")?,
                parked: w.ledger.parked.as_ref().map(parked_json).transpose()?,
                moves: w.ledger.parked.is_none() && w.ledger.version > w.expected,
            });
        }
        ledger.sort_by(|a, b| a.stream.cmp(b.stream));
        Ok((rows, ledger))
    }
}

#[async_trait]
impl<R> RowStore<R> for PostgresRowStore
where
    R: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn max_items(&self) -> usize {
        MAX_ITEMS
    }

    fn check_row(&self, key: &RowKey, row: &R) -> Result<(), StoreError> {
        encode(key, row).map(|_| ())
    }

    async fn load_ledger(&self, streams: &[String]) -> Result<Vec<Ledger>, StoreError> {
        let (at, names): (Vec<usize>, Vec<&str>) = streams
            .iter()
            .enumerate()
            .filter(|(_, s)| storable(s))
            .map(|(i, s)| (i, s.as_str()))
            .unzip();
        let mut out = vec![Ledger::default(); streams.len()];
        if names.is_empty() {
            return Ok(out);
        }
        let conn = self.conn().await?;
        let found = conn
            .client
            .query(&conn.st.load_ledger, &[&names])
            .await
            .map_err(|e| self.error("loading the ledger", e))?;
        drop(conn);
        for row in found {
            let err = |e| self.error("reading the ledger", e);
            let (i, version, parked): (i64, i64, Option<String>) = (
                row.try_get(0).map_err(err)?,
                row.try_get(1).map_err(err)?,
                row.try_get(2).map_err(err)?,
            );
            let Some(&at) = usize::try_from(i - 1).ok().and_then(|i| at.get(i)) else {
                continue;
            };
            out[at] = ledger_of(&streams[at], version, parked)?;
        }
        Ok(out)
    }

    async fn load_rows(&self, keys: &[RowKey]) -> Result<Vec<Stored<R>>, StoreError> {
        for key in keys {
            key.check().map_err(|e| row_error(key, e.to_string()))?;
        }
        let mut at = Vec::with_capacity(keys.len());
        let (mut models, mut names): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for (i, key) in keys.iter().enumerate() {
            if storable(&key.key) {
                at.push(i);
                models.push(&key.model);
                names.push(&key.key);
            }
        }
        let mut out: Vec<Stored<R>> = keys.iter().map(|_| Stored::default()).collect();
        if at.is_empty() {
            return Ok(out);
        }
        let conn = self.conn().await?;
        let found = conn
            .client
            .query(&conn.st.load_rows, &[&models, &names])
            .await
            .map_err(|e| self.error("loading rows", e))?;
        drop(conn);
        for row in found {
            let err = |e| self.error("reading rows", e);
            let (i, revision, state): (i64, i64, Option<String>) = (
                row.try_get(0).map_err(err)?,
                row.try_get(1).map_err(err)?,
                row.try_get(2).map_err(err)?,
            );
            let Some(&at) = usize::try_from(i - 1).ok().and_then(|i| at.get(i)) else {
                continue;
            };
            let key = &keys[at];
            out[at] = Stored {
                revision: unsigned(revision, || format!("row {key}"))?,
                row: state.map(|text| decode(key, &text)).transpose()?,
            };
        }
        Ok(out)
    }

    async fn commit(&self, unit: &Unit<R>) -> Result<Commit, StoreError> {
        if unit.items() > MAX_ITEMS {
            return Err(StoreError::UnitTooLarge {
                items: unit.items(),
                reason: format!("the PostgreSQL store commits at most {MAX_ITEMS} items at once"),
            });
        }
        let (rows, ledger) = Self::params(unit)?;
        if rows.is_empty() && ledger.is_empty() {
            return Ok(Commit::Done);
        }
        let tables = match &self.tables {
            None => None,
            Some(any) => match any.downcast_ref::<Arc<dyn PostgresTables<R>>>() {
                Some(tables) => Some((tables.as_ref(), unit)),
                None => {
                    return Err(self.refused(
                        "the projection's tables were given for another row type".to_owned(),
                    ))
                }
            },
        };
        let mut conn = self.conn().await?;
        conn.commit(&rows, &ledger, tables)
            .await
            .map_err(|e| self.error("committing", e))
    }

    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn().await?;
        let found = conn
            .client
            .query(&conn.st.versions, &[])
            .await
            .map_err(|e| self.error("listing the ledger", e))?;
        drop(conn);
        let mut out = Vec::with_capacity(found.len());
        for row in found {
            let err = |e| self.error("reading the ledger", e);
            let (stream, version): (String, i64) =
                (row.try_get(0).map_err(err)?, row.try_get(1).map_err(err)?);
            let version = unsigned(version, || format!("the ledger entry of stream {stream:?}"))?;
            out.push((stream, version));
        }
        out.sort_unstable();
        Ok(out)
    }

    async fn parked(&self) -> Result<Vec<(String, Ledger)>, StoreError> {
        let conn = self.conn().await?;
        let found = conn
            .client
            .query(&conn.st.parked, &[])
            .await
            .map_err(|e| self.error("listing the parked streams", e))?;
        drop(conn);
        let mut out = Vec::with_capacity(found.len());
        for row in found {
            let err = |e| self.error("reading the ledger", e);
            let (stream, version, parked): (String, i64, Option<String>) = (
                row.try_get(0).map_err(err)?,
                row.try_get(1).map_err(err)?,
                row.try_get(2).map_err(err)?,
            );
            let ledger = ledger_of(&stream, version, parked)?;
            out.push((stream, ledger));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn rows(&self) -> Result<Vec<(RowKey, R)>, StoreError> {
        let conn = self.conn().await?;
        let found = conn
            .client
            .query(&conn.st.rows, &[])
            .await
            .map_err(|e| self.error("listing the rows", e))?;
        drop(conn);
        let mut out = Vec::with_capacity(found.len());
        for row in found {
            let err = |e| self.error("reading the rows", e);
            let (model, key, state): (String, String, String) = (
                row.try_get(0).map_err(err)?,
                row.try_get(1).map_err(err)?,
                row.try_get(2).map_err(err)?,
            );
            let key = RowKey::new(model, key);
            let row = decode(&key, &state)?;
            out.push((key, row));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_are_found_only_where_they_are() {
        assert!(has_nul_escape(r#"{"a":"x\u0000y"}"#));
        assert!(has_nul_escape(r#"{"\u0000":1}"#));
        assert!(!has_nul_escape(r#"{"a":"x\\u0000y"}"#));
        assert!(has_nul_escape(r#"{"a":"x\\\u0000y"}"#));
        assert!(!has_nul_escape(
            r#"{"a":"\u00001"}"#.replace("u0000", "u0001").as_str()
        ));
        assert!(!has_nul_escape(r#"{"a":"\\"}"#));
        assert!(!has_nul_escape("\\"));
    }

    #[test]
    fn views_take_only_plain_names() {
        let sql = view_sql("customers", &["placed", "paid-cents"]).unwrap();
        assert_eq!(
            sql,
            "create or replace view \"customers\" as select key, revision, \
             state->>'placed' as \"placed\", state->>'paid-cents' as \"paid-cents\" \
             from evs_rows where model = 'customers' and state is not null"
        );
        for (model, columns) in [
            ("a\"b", &["x"][..]),
            ("a'b", &[]),
            ("", &[]),
            (&*"m".repeat(64), &[]),
            ("evs_rows", &[]),
            ("m", &["x'; drop table evs_rows; --"]),
            ("m", &["key"]),
            ("m", &["revision"]),
            ("m", &["x", "x"]),
            ("m", &[""]),
        ] {
            assert!(view_sql(model, columns).is_err(), "{model:?} {columns:?}");
        }
    }

    #[test]
    fn the_location_never_holds_the_password() {
        let config: Config = "postgres://u:secret@db.example:6543/orders"
            .parse()
            .unwrap();
        assert_eq!(location(&config), "db.example:6543/orders");
        let config: Config = "host=h user=u password=secret".parse().unwrap();
        assert_eq!(location(&config), "h:5432/u");
    }
}
