//! SQLite primary-key reads on the calling thread. sqlx runs every SQLite
//! statement on a worker thread per connection and hands rows back through a
//! channel: for a lookup that takes microseconds, the two thread switches cost
//! more than the query (a profile of `GET /students/{id}` under load spent
//! about 45% of its CPU in the kernel's task switching). SQLite is a library,
//! so these reads run where the request already is, on a small pool of
//! read-only rusqlite connections to the same file (rusqlite links the same
//! `libsqlite3-sys` as sqlx), with their prepared statements cached.
//!
//! A primary-key lookup runs inline: it is bounded by construction. A list
//! (and its count, in the same read transaction) can run long, so it runs
//! on tokio's blocking pool — one thread hop per request instead of one per
//! row through sqlx's channel — under the statement deadline: SQLite's
//! progress handler interrupts it once the deadline passes or as soon as
//! the request is dropped (its client went away). Anything this path cannot
//! take as it is — a value it does not bind, a statement that does not
//! prepare — falls back to the sqlx pool, so the answer never depends on
//! which path served it. The connections have what sqlx's have for reads:
//! `REGEXP` (case-insensitive `ilike`) and `case_sensitive_like`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value as Json};

use crate::error::ApiError;
use crate::schema::{Resource, Scalar};
use crate::storage::StoredRow;

/// Read-only connections for primary-key reads.
#[derive(Debug)]
pub struct InlineReaders {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    /// Lists running at once (each holds a connection on a blocking thread).
    lists: std::sync::Arc<tokio::sync::Semaphore>,
}

impl InlineReaders {
    /// Readers of the database file at `path`: at most `lists` lists at
    /// once, and up to `keep` connections kept idle.
    pub(crate) fn open(
        path: PathBuf,
        busy_timeout: Duration,
        lists: usize,
        keep: usize,
    ) -> Result<InlineReaders, String> {
        let readers = InlineReaders {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
            lists: std::sync::Arc::new(tokio::sync::Semaphore::new(lists.max(1))),
        };
        let first = readers.connect().map_err(|e| e.to_string())?;
        readers.give_back(first);
        Ok(readers)
    }

    /// A place for one list, waiting as long as SQLite waits for a lock;
    /// then 503, as when sqlx's pool had no connection to give.
    pub(crate) async fn list_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(self.busy_timeout, self.lists.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::Unavailable {
                cause: "every SQLite reader was busy with a list".to_owned(),
            }),
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "case_sensitive_like", "ON")?;
        conn.create_scalar_function(
            "regexp",
            2,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                let regex = ctx.get_or_create_aux(0, |pattern| -> Result<_, BoxError> {
                    Ok(regex::Regex::new(pattern.as_str()?)?)
                })?;
                Ok(match ctx.get_raw(1) {
                    ValueRef::Text(t) => std::str::from_utf8(t).ok().map(|t| regex.is_match(t)),
                    _ => None,
                })
            },
        )?;
        Ok(conn)
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.keep {
            idle.push(conn);
        }
    }

    /// The rows `sql` selects (the resource's columns and `_version`), or
    /// `None` when this path cannot run it and the caller should use sqlx.
    pub(crate) fn select(
        &self,
        resource: &Resource,
        sql: &str,
        values: &sea_query::Values,
    ) -> Option<Result<Vec<StoredRow>, ApiError>> {
        let params = bind_all(values)?;
        let conn = match self.take() {
            Ok(conn) => conn,
            Err(e) => return Some(Err(failure(e))),
        };
        let result = page(&conn, resource, sql, &params, usize::MAX, usize::MAX);
        self.give_back(conn);
        settle(result.map(|r| r.map(|(rows, _)| rows)), "read")
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A list read on the blocking pool: the page (at most `max` rows, fewer once
/// they hold `byte_budget`), whether more follow, and the count if asked.
#[derive(Debug)]
pub struct ListRead {
    /// The page's select (one row more than the page) and its values.
    pub select: (String, sea_query::Values),
    /// The count's select, when the total is asked for.
    pub count: Option<(String, sea_query::Values)>,
    /// Most rows in the page.
    pub max: usize,
    /// Rendered bytes after which the page stops early.
    pub byte_budget: usize,
}

/// What a list read found: rows, whether more follow, the total.
pub type Listed = (Vec<StoredRow>, bool, Option<i64>);

impl InlineReaders {
    /// Runs `read` for `resource` until `keep_going` says stop (the deadline,
    /// or the request dropped); `None` when this path cannot run it.
    pub(crate) fn list(
        &self,
        resource: &Resource,
        read: &ListRead,
        keep_going: impl FnMut() -> bool + Send + 'static,
    ) -> Option<Result<Listed, ApiError>> {
        let params = bind_all(&read.select.1)?;
        let count = match &read.count {
            Some((sql, values)) => Some((sql, bind_all(values)?)),
            None => None,
        };
        let conn = match self.take() {
            Ok(conn) => conn,
            Err(e) => return Some(Err(failure(e))),
        };
        // rusqlite interrupts when the handler answers true.
        let mut keep_going = keep_going;
        if let Err(e) = conn.progress_handler(PROGRESS_STEPS, Some(move || !keep_going())) {
            return Some(Err(failure(e)));
        }
        let result = (|| -> rusqlite::Result<Result<Listed, rusqlite::Error>> {
            // Page and total from one snapshot.
            if count.is_some() {
                conn.execute_batch("BEGIN")?;
            }
            let outcome = (|| {
                let (rows, more) = match page(
                    &conn,
                    resource,
                    &read.select.0,
                    &params,
                    read.max,
                    read.byte_budget,
                )? {
                    Ok(page) => page,
                    Err(unprepared) => return Ok(Err(unprepared)),
                };
                let total = match &count {
                    Some((sql, params)) => match conn.prepare_cached(sql) {
                        Ok(mut statement) => Some(
                            statement
                                .query_row(rusqlite::params_from_iter(params.iter()), |r| {
                                    r.get::<_, i64>(0)
                                })?,
                        ),
                        Err(unprepared) => return Ok(Err(unprepared)),
                    },
                    None => None,
                };
                Ok(Ok((rows, more, total)))
            })();
            if count.is_some() {
                // A failed read leaves nothing to keep either way.
                let _ = conn.execute_batch("COMMIT");
            }
            outcome
        })();
        // A connection whose handler cannot be removed is not reused.
        if conn.progress_handler(0, None::<fn() -> bool>).is_ok() {
            self.give_back(conn);
        }
        settle(result, "list")
    }
}

/// Every value of a statement bound, or `None` when one is of a kind this
/// path does not bind.
fn bind_all(values: &sea_query::Values) -> Option<Vec<SqlValue>> {
    values.iter().map(bindable).collect()
}

/// Up to `max` rows of `sql`, fewer once they hold `byte_budget` (as the
/// sqlx path's `collect`), and whether more follow. The inner error is a
/// statement that did not prepare (e.g. REGEXP's absence): not ours to run.
fn page(
    conn: &Connection,
    resource: &Resource,
    sql: &str,
    params: &[SqlValue],
    max: usize,
    byte_budget: usize,
) -> rusqlite::Result<Result<(Vec<StoredRow>, bool), rusqlite::Error>> {
    let mut statement = match conn.prepare_cached(sql) {
        Ok(s) => s,
        Err(unprepared) => return Ok(Err(unprepared)),
    };
    let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
    let (mut out, mut held) = (Vec::new(), 0usize);
    while let Some(row) = rows.next()? {
        if out.len() >= max || (held >= byte_budget && !out.is_empty()) {
            return Ok(Ok((out, true)));
        }
        let stored = decode(resource, row)?;
        held += crate::storage::approx_size(&stored.values);
        out.push(stored);
    }
    Ok(Ok((out, false)))
}

/// What a run answers: its rows, a 503/500, or `None` (fall back to sqlx)
/// when its statement did not prepare here.
fn settle<T>(
    result: rusqlite::Result<Result<T, rusqlite::Error>>,
    what: &str,
) -> Option<Result<T, ApiError>> {
    match result {
        Ok(Ok(done)) => Some(Ok(done)),
        Ok(Err(unprepared)) => {
            tracing::debug!(error = %unprepared, "an inline {what} fell back to the pool");
            None
        }
        Err(e) => Some(Err(failure(e))),
    }
}

/// Virtual-machine steps between two deadline checks (microseconds of work),
/// as on sqlx's connections.
const PROGRESS_STEPS: std::ffi::c_int = 1000;

/// The error a failed read answers: busy or unreachable is 503, the rest 500.
fn failure(e: rusqlite::Error) -> ApiError {
    match e.sqlite_error_code() {
        // Interrupted: the statement passed its deadline, as sqlx's path says.
        Some(
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::OperationInterrupted,
        ) => ApiError::Unavailable {
            cause: e.to_string(),
        },
        _ => ApiError::internal(e),
    }
}

/// A value as rusqlite binds it, for the kinds the SQLite dialect produces.
fn bindable(value: &sea_query::Value) -> Option<SqlValue> {
    use sea_query::Value as V;
    let int = |n: Option<i64>| n.map_or(SqlValue::Null, SqlValue::Integer);
    Some(match value {
        V::Bool(b) => int(b.map(i64::from)),
        V::TinyInt(n) => int(n.map(i64::from)),
        V::SmallInt(n) => int(n.map(i64::from)),
        V::Int(n) => int(n.map(i64::from)),
        V::BigInt(n) => int(*n),
        V::TinyUnsigned(n) => int(n.map(i64::from)),
        V::SmallUnsigned(n) => int(n.map(i64::from)),
        V::Unsigned(n) => int(n.map(i64::from)),
        V::BigUnsigned(n) => match n {
            Some(n) => SqlValue::Integer(i64::try_from(*n).ok()?),
            None => SqlValue::Null,
        },
        V::Float(f) => f.map_or(SqlValue::Null, |f| SqlValue::Real(f64::from(f))),
        V::Double(f) => f.map_or(SqlValue::Null, SqlValue::Real),
        V::String(s) => s.clone().map_or(SqlValue::Null, SqlValue::Text),
        _ => return None,
    })
}

/// A row as the sqlx SQLite decoder reads it ([`super::sqlite`]): the
/// resource's columns in order, then `_version`.
fn decode(resource: &Resource, row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    let mut values = Map::with_capacity(resource.columns.len());
    for (i, column) in resource.columns.iter().enumerate() {
        let cell = row.get_ref(i)?;
        let json = match (column.scalar(), cell) {
            (_, ValueRef::Null) => Json::Null,
            (Scalar::Int, ValueRef::Integer(n)) => Json::from(n),
            (Scalar::Bool, ValueRef::Integer(n)) => Json::Bool(n != 0),
            (Scalar::Float, ValueRef::Real(f)) => {
                serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
            }
            (Scalar::Float, ValueRef::Integer(n)) => {
                serde_json::Number::from_f64(n as f64).map_or(Json::Null, Json::Number)
            }
            (Scalar::Json, ValueRef::Text(t)) => {
                let s = String::from_utf8_lossy(t);
                serde_json::from_str(&s).unwrap_or_else(|_| Json::String(s.into_owned()))
            }
            (scalar, ValueRef::Text(t)) => {
                let text = std::str::from_utf8(t)
                    .map_err(|e| rusqlite::Error::Utf8Error(i, e))?
                    .to_owned();
                if scalar == Scalar::Decimal {
                    crate::value::decimal_text_json(text, column)
                } else {
                    Json::String(text)
                }
            }
            (_, other) => {
                return Err(rusqlite::Error::InvalidColumnType(
                    i,
                    column.name.clone(),
                    other.data_type(),
                ));
            }
        };
        values.insert(column.name.clone(), json);
    }
    let version = row.get::<_, i64>(resource.columns.len())?;
    Ok(StoredRow { values, version })
}
