//! [`SqliteRowStore`]: a projection's rows and ledger in one SQLite
//! database file (rusqlite, SQLite built in), the embedded default.
//!
//! The tables, shared with the PostgreSQL store (a stable format):
//!
//! * `evs_meta(name, value)`: `projection` (the projection whose read model
//!   the database holds: opening it for another is refused before anything
//!   is read or written) and `format` (`1`).
//! * `evs_rows(model, key, revision, state)`: a row's state as JSON text;
//!   `state` NULL is a deleted row, which keeps its revision (a copy read
//!   before a delete never passes the check after the row is created again).
//! * `evs_ledger(stream, version, parked)`: a stream's ledger entry,
//!   `parked` as JSON (`event_id`, `event_name`, `reason`, `at_ms`) while
//!   the stream is parked.
//!
//! A model's rows read as columns through a view
//! ([`SqliteRowStore::with_view`]): `select * from customers`. A projection
//! may also keep its own tables ([`SqliteTables`]): each committed row
//! change is handed to it inside the commit's transaction, so its
//! statements count exactly once with the ledger, whatever the schema.
//!
//! A commit is one `BEGIN IMMEDIATE` transaction (SQLite's write lock,
//! taken first, so the checks and the writes see no other writer): each row
//! is written only at its expected revision, each ledger entry only at its
//! expected version (expecting 0 accepts an absent entry or one at 0; an
//! entry that moves a stream on is refused while it is parked); any miss
//! rolls everything back as [`Commit::Conflict`]. The database runs in WAL
//! mode, so readers (`sqlite3`, a dashboard) never block a commit; another
//! process writing waits up to [`SqliteRowStore::BUSY_TIMEOUT`] and then is
//! a transient error. Calls run on the caller's thread: a commit is a local
//! transaction of a few milliseconds, never held across an `await`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sql::{decode, ledger_of, parked_json, unsigned};
use super::{Commit, RowStore, StoreError, Stored, Unit};
use crate::projection::{Ledger, RowKey};

/// A projection's own tables, written in the transaction of every commit
/// that changes a row: the projection owns the schema and the statements,
/// the store adds the ledger to the same transaction.
pub trait SqliteTables<R>: SqliteSchema {
    /// Writes the change of the row `key` (its new state; `None`: deleted)
    /// with the commit's open transaction. An error rolls the whole commit
    /// back and fails it.
    fn write(&self, tx: &Transaction<'_>, key: &RowKey, row: Option<&R>) -> rusqlite::Result<()>;
}

/// No tables of the projection's own: rows and ledger only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTables;

/// The tables of [`SqliteTables`].
pub trait SqliteSchema: Send + Sync {
    /// Statements creating the tables (`create table if not exists …`),
    /// run when the store is opened.
    fn schema(&self) -> &str;
}

impl SqliteSchema for NoTables {
    fn schema(&self) -> &str {
        ""
    }
}

impl<R> SqliteTables<R> for NoTables {
    fn write(&self, _: &Transaction<'_>, _: &RowKey, _: Option<&R>) -> rusqlite::Result<()> {
        Ok(())
    }
}

/// Rows and ledger in a SQLite database (see the module docs).
pub struct SqliteRowStore<T = NoTables> {
    conn: Mutex<Connection>,
    path: PathBuf,
    tables: T,
}

impl<T> std::fmt::Debug for SqliteRowStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRowStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
create table if not exists evs_meta (
    name text primary key,
    value text not null
) without rowid;
create table if not exists evs_rows (
    model text not null,
    key text not null,
    revision integer not null,
    state text,
    primary key (model, key)
) without rowid;
create table if not exists evs_ledger (
    stream text primary key,
    version integer not null,
    parked text
) without rowid;
";

/// The format the tables are in.
const FORMAT: &str = "1";

impl SqliteRowStore<NoTables> {
    /// How long a commit waits for another process's write.
    pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

    /// Opens (creating when absent) the read model of `projection` in the
    /// database file `path`. Refused, with nothing written: a file that is
    /// not a SQLite database, a database holding another projection's read
    /// model ([`StoreError::OtherProjection`]), or one holding tables but no
    /// read model.
    pub fn open(path: impl AsRef<Path>, projection: &str) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let mut conn =
            Connection::open(&path).map_err(|e| backend(&shown, "cannot be opened", e))?;
        conn.busy_timeout(Self::BUSY_TIMEOUT)
            .map_err(|e| backend(&shown, "cannot be set up", e))?;
        check_owner(&conn, &shown, projection)?;
        // WAL: readers never block a commit; FULL: a commit is on disk when
        // it returns (a live driver acknowledges its records after it: a
        // commit lost to a power cut would be an event lost)
        conn.execute_batch("pragma journal_mode = wal; pragma synchronous = full;")
            .map_err(|e| backend(&shown, "cannot be set up", e))?;
        // a database already set up is only read: opening it beside a
        // busy writer (another partition's rebuild) never waits for its lock
        if !is_set_up(&conn).map_err(|e| backend(&shown, "cannot be read", e))? {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| backend(&shown, "cannot be set up", e))?;
            tx.execute_batch(SCHEMA)
                .map_err(|e| backend(&shown, "cannot be set up", e))?;
            tx.execute(
                "insert into evs_meta (name, value) values ('projection', ?1), ('format', ?2)
                 on conflict (name) do nothing",
                params![projection, FORMAT],
            )
            .map_err(|e| backend(&shown, "cannot be set up", e))?;
            tx.commit()
                .map_err(|e| backend(&shown, "cannot be set up", e))?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            tables: NoTables,
        })
    }

    /// Adds the projection's own tables (created now when absent), written
    /// with every commit.
    pub fn with_tables<T: SqliteSchema>(self, tables: T) -> Result<SqliteRowStore<T>, StoreError> {
        let shown = self.path.display().to_string();
        let conn = self.conn.into_inner().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch(tables.schema())
            .map_err(|e| backend(&shown, "the projection's tables cannot be created", e))?;
        Ok(SqliteRowStore {
            conn: Mutex::new(conn),
            path: self.path,
            tables,
        })
    }
}

impl<T> SqliteRowStore<T> {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits of this store no longer wait for the disk (`synchronous =
    /// normal`): a process that crashes loses nothing, but a power cut may
    /// lose the commits since the last [`sync`](Self::sync), ledger
    /// entries with them (so their events are applied again by a rerun,
    /// not lost in the read model). For a rebuild, which calls `sync`
    /// before it reports done; never for a live driver, which acknowledges
    /// its records once a commit returns.
    pub fn relaxed(self) -> Result<Self, StoreError> {
        self.lock()
            .execute_batch("pragma synchronous = normal;")
            .map_err(|e| backend(&self.shown(), "cannot be set up", e))?;
        Ok(self)
    }

    /// Puts every commit so far on disk: one durable commit (a no-op write
    /// at `synchronous = full`) syncs the write-ahead log, which holds the
    /// relaxed commits before it. It waits for the write lock as any commit
    /// does, never for other writers to stop (a checkpoint would, and a
    /// second partition's rebuild never stops writing until it ends).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.lock()
            .execute_batch(
                "pragma synchronous = full;
                 begin immediate;
                 update evs_meta set value = value where name = 'format';
                 commit;
                 pragma synchronous = normal;",
            )
            .map_err(|e| backend(&self.shown(), "cannot be synced to disk", e))
    }

    /// Creates (or replaces) a view named after `model` that shows its rows
    /// with `key`, `revision` and one column per field in `columns` (a
    /// field of the row's JSON object, `null` where absent): the read
    /// model as plain SQL, `select * from "customers"`. The model's name
    /// follows [`RowKey::check`]; a column is 1 to 64 of `A-Z a-z 0-9 _`.
    pub fn with_view(self, model: &str, columns: &[&str]) -> Result<Self, StoreError> {
        let sql = view_sql(model, columns)?;
        let shown = self.path.display().to_string();
        self.lock()
            .execute_batch(&sql)
            .map_err(|e| backend(&shown, "cannot create a view", e))?;
        Ok(self)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // a transaction that panicked is rolled back when dropped: the
        // connection is sound
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }
}

/// The statements of [`SqliteRowStore::with_view`].
fn view_sql(model: &str, columns: &[&str]) -> Result<String, StoreError> {
    let key = RowKey::new(model.to_owned(), "view");
    key.check().map_err(|e| StoreError::Row {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    let mut sql = format!(
        "drop view if exists \"{model}\";\ncreate view \"{model}\" as select key, revision"
    );
    for column in columns {
        let ok = (1..=64).contains(&column.len())
            && column
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok || matches!(*column, "key" | "revision") {
            return Err(StoreError::Row {
                key,
                reason: format!(
                    "view column {column:?} is not 1 to 64 characters of A-Z a-z 0-9 _ (nor key or revision)"
                ),
            });
        }
        sql.push_str(&format!(", state ->> '$.{column}' as \"{column}\""));
    }
    sql.push_str(&format!(
        " from evs_rows where model = '{model}' and state is not null;"
    ));
    Ok(sql)
}

/// Whether the read model's tables and its owner are recorded already.
fn is_set_up(conn: &Connection) -> rusqlite::Result<bool> {
    let tables: i64 = conn.query_row(
        "select count(*) from sqlite_schema where type = 'table'
         and name in ('evs_meta', 'evs_rows', 'evs_ledger')",
        [],
        |r| r.get(0),
    )?;
    if tables < 3 {
        return Ok(false);
    }
    let recorded: i64 = conn.query_row(
        "select count(*) from evs_meta where name in ('projection', 'format')",
        [],
        |r| r.get(0),
    )?;
    Ok(recorded == 2)
}

/// Refuses a database that is not this projection's read model (nothing
/// written): another projection's, or one with tables and no read model.
fn check_owner(conn: &Connection, shown: &str, projection: &str) -> Result<(), StoreError> {
    let tables: Vec<String> = conn
        .prepare("select name from sqlite_schema where type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| backend(shown, "cannot be read", e))?;
    if !tables.iter().any(|t| t == "evs_meta") {
        if let Some(other) = tables.first() {
            return Err(StoreError::Backend {
                message: format!(
                    "{shown} holds tables ({other}, …) but no read model; give a new file"
                ),
                transient: false,
                source: None,
            });
        }
        return Ok(());
    }
    let meta = |name: &str| -> Result<Option<String>, StoreError> {
        conn.query_row(
            "select value from evs_meta where name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| backend(shown, "cannot be read", e))
    };
    let found = meta("projection")?;
    if let Some(found) = found.filter(|f| f != projection) {
        return Err(StoreError::OtherProjection {
            location: shown.to_owned(),
            found,
            expected: projection.to_owned(),
        });
    }
    match meta("format")? {
        Some(f) if f != FORMAT => Err(StoreError::Backend {
            message: format!(
                "{shown} holds a read model of format {f}, which this build does not read (it reads {FORMAT})"
            ),
            transient: false,
            source: None,
        }),
        _ => Ok(()),
    }
}

/// A failed SQLite call, as one line naming the file (SQLite's own words
/// only where its code says nothing more).
fn backend(shown: &str, what: &str, e: rusqlite::Error) -> StoreError {
    let known = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Some(("is not a SQLite database", false)),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Some((
            "is busy: another process held its write lock past the busy timeout",
            true,
        )),
        Some(ErrorCode::CannotOpen) => Some(("cannot be opened (does its folder exist?)", false)),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            Some(("cannot be written: it or its folder is read-only", false))
        }
        Some(ErrorCode::DiskFull) => Some(("cannot grow: the disk is full", true)),
        _ => None,
    };
    match known {
        // the code says it all: SQLite's words would repeat it
        Some((what, transient)) => StoreError::Backend {
            message: format!("{shown} {what}"),
            transient,
            source: None,
        },
        None => StoreError::Backend {
            message: format!("{shown} {what}"),
            transient: false,
            source: Some(Box::new(e)),
        },
    }
}

fn corrupt(what: String, source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Corrupt {
        what,
        source: Box::new(source),
    }
}

fn row_of<R: DeserializeOwned>(
    key: &RowKey,
    state: Option<String>,
) -> Result<Option<R>, StoreError> {
    state.map(|text| decode(key, &text)).transpose()
}

/// A revision or version as SQLite's integer (they stay far below 2^63).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What one commit writes, encoded before the lock is taken.
struct Encoded<'u> {
    rows: Vec<(&'u RowKey, i64, Option<String>)>,
    ledger: Vec<(&'u str, i64, i64, Option<String>, bool)>,
}

fn encode<R: Serialize>(unit: &Unit<R>) -> Result<Encoded<'_>, StoreError> {
    let mut rows = Vec::with_capacity(unit.rows.len());
    for write in &unit.rows {
        let state = match &write.row {
            Some(row) => Some(json_of(&write.key, row)?),
            None => None,
        };
        rows.push((&write.key, int(write.expected), state));
    }
    let mut ledger = Vec::with_capacity(unit.ledger.len());
    for write in &unit.ledger {
        let parked = write.ledger.parked.as_ref().map(parked_json).transpose()?;
        // applied events move a stream on only while it is not parked
        let moves = write.ledger.parked.is_none() && write.ledger.version > write.expected;
        ledger.push((
            write.stream.as_str(),
            int(write.expected),
            int(write.ledger.version),
            parked,
            moves,
        ));
    }
    Ok(Encoded { rows, ledger })
}

fn json_of<R: Serialize>(key: &RowKey, row: &R) -> Result<String, StoreError> {
    key.check().map_err(|e| StoreError::Row {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    serde_json::to_string(row).map_err(|e| StoreError::Row {
        key: key.clone(),
        reason: format!("does not encode as JSON: {e}"),
    })
}

/// Writes an encoded unit in `tx`: `false` when a row or stream is not
/// where the unit expects (the caller rolls back).
fn write_unit(tx: &Transaction<'_>, unit: &Encoded<'_>) -> rusqlite::Result<bool> {
    {
        let mut insert = tx.prepare_cached(
            "insert into evs_rows (model, key, revision, state) values (?1, ?2, 1, ?3)
             on conflict (model, key) do nothing",
        )?;
        let mut update = tx.prepare_cached(
            "update evs_rows set revision = ?3 + 1, state = ?4
             where model = ?1 and key = ?2 and revision = ?3",
        )?;
        for (key, expected, state) in &unit.rows {
            let changed = if *expected == 0 {
                insert.execute(params![key.model.as_ref(), key.key, state])?
            } else {
                update.execute(params![key.model.as_ref(), key.key, expected, state])?
            };
            if changed != 1 {
                return Ok(false);
            }
        }
    }
    // one statement per stream, changing one entry only where the unit
    // expects it (and, for a write that moves the stream on, only while it
    // is not parked): no entry changed is a conflict. Expecting 0 inserts
    // an absent entry or updates one at 0.
    let mut create = tx.prepare_cached(
        "insert into evs_ledger (stream, version, parked) values (?1, ?2, ?3)
         on conflict (stream) do update set version = excluded.version, parked = excluded.parked
         where evs_ledger.version = 0 and not (?4 and evs_ledger.parked is not null)",
    )?;
    let mut update = tx.prepare_cached(
        "update evs_ledger set version = ?2, parked = ?3
         where stream = ?1 and version = ?5 and not (?4 and parked is not null)",
    )?;
    for (stream, expected, version, parked, moves) in &unit.ledger {
        let changed = if *expected == 0 {
            create.execute(params![stream, version, parked, moves])?
        } else {
            update.execute(params![stream, version, parked, moves, expected])?
        };
        if changed != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}

#[async_trait]
impl<R, T> RowStore<R> for SqliteRowStore<T>
where
    R: Serialize + DeserializeOwned + Send + Sync + 'static,
    T: SqliteTables<R>,
{
    fn max_items(&self) -> usize {
        // no limit of SQLite's: a bound on one transaction's memory
        50_000
    }

    fn check_row(&self, key: &RowKey, row: &R) -> Result<(), StoreError> {
        json_of(key, row).map(|_| ())
    }

    async fn load_ledger(&self, streams: &[String]) -> Result<Vec<Ledger>, StoreError> {
        let conn = self.lock();
        let read = || -> rusqlite::Result<Vec<(i64, Option<String>)>> {
            let mut stmt =
                conn.prepare_cached("select version, parked from evs_ledger where stream = ?1")?;
            streams
                .iter()
                .map(|s| {
                    stmt.query_row(params![s], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                        .map(|found| found.unwrap_or((0, None)))
                })
                .collect()
        };
        let found = read().map_err(|e| backend(&self.shown(), "cannot be read", e))?;
        streams
            .iter()
            .zip(found)
            .map(|(s, (version, parked))| ledger_of(s, version, parked))
            .collect()
    }

    async fn load_rows(&self, keys: &[RowKey]) -> Result<Vec<Stored<R>>, StoreError> {
        let conn = self.lock();
        let read = || -> rusqlite::Result<Vec<Option<(i64, Option<String>)>>> {
            let mut stmt = conn.prepare_cached(
                "select revision, state from evs_rows where model = ?1 and key = ?2",
            )?;
            keys.iter()
                .map(|k| {
                    stmt.query_row(params![k.model.as_ref(), k.key], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                })
                .collect()
        };
        let found = read().map_err(|e| backend(&self.shown(), "cannot be read", e))?;
        keys.iter()
            .zip(found)
            .map(|(key, found)| match found {
                None => Ok(Stored::default()),
                Some((revision, state)) => Ok(Stored {
                    revision: unsigned(revision, || format!("row {key}"))?,
                    row: row_of(key, state)?,
                }),
            })
            .collect()
    }

    async fn commit(&self, unit: &Unit<R>) -> Result<Commit, StoreError> {
        let max = RowStore::<R>::max_items(self);
        if unit.items() > max {
            return Err(StoreError::UnitTooLarge {
                items: unit.items(),
                reason: format!("at most {max} items in one SQLite transaction"),
            });
        }
        let encoded = encode(unit)?;
        let shown = self.shown();
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| backend(&shown, "cannot start a transaction", e))?;
        let written =
            write_unit(&tx, &encoded).map_err(|e| backend(&shown, "cannot be written", e))?;
        if !written {
            // dropping the transaction rolls it back
            return Ok(Commit::Conflict);
        }
        for write in &unit.rows {
            self.tables
                .write(&tx, &write.key, write.row.as_ref())
                .map_err(|e| backend(&shown, "the projection's tables cannot be written", e))?;
        }
        tx.commit()
            .map_err(|e| backend(&shown, "cannot commit", e))?;
        Ok(Commit::Done)
    }

    async fn versions(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.lock();
        let read = || -> rusqlite::Result<Vec<(String, i64)>> {
            let mut stmt =
                conn.prepare_cached("select stream, version from evs_ledger order by stream")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        let found = read().map_err(|e| backend(&self.shown(), "cannot be read", e))?;
        Ok(found
            .into_iter()
            .map(|(s, v)| (s, u64::try_from(v).unwrap_or(0)))
            .collect())
    }

    async fn parked(&self) -> Result<Vec<(String, Ledger)>, StoreError> {
        let conn = self.lock();
        let read = || -> rusqlite::Result<Vec<(String, i64, Option<String>)>> {
            let mut stmt = conn.prepare_cached(
                "select stream, version, parked from evs_ledger
                 where parked is not null order by stream",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        };
        let found = read().map_err(|e| backend(&self.shown(), "cannot be read", e))?;
        found
            .into_iter()
            .map(|(s, v, p)| ledger_of(&s, v, p).map(|l| (s, l)))
            .collect()
    }

    async fn rows(&self) -> Result<Vec<(RowKey, R)>, StoreError> {
        let conn = self.lock();
        let read = || -> rusqlite::Result<Vec<(String, String, String)>> {
            let mut stmt = conn.prepare_cached(
                "select model, key, state from evs_rows
                 where state is not null order by model, key",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        };
        let found = read().map_err(|e| backend(&self.shown(), "cannot be read", e))?;
        found
            .into_iter()
            .map(|(model, key, state)| {
                let key = RowKey::new(model, key);
                let row =
                    serde_json::from_str(&state).map_err(|e| corrupt(format!("row {key}"), e))?;
                Ok((key, row))
            })
            .collect()
    }
}
