//! SQLite primary-key reads on the calling thread. sqlx runs every SQLite
//! statement on a worker thread per connection and hands rows back through a
//! channel: for a lookup that takes microseconds, the two thread switches cost
//! more than the query (a profile of `GET /students/{id}` under load spent
//! about 45% of its CPU in the kernel's task switching). SQLite is a library,
//! so these reads run where the request already is, on a small pool of
//! read-only rusqlite connections to the same file (rusqlite links the same
//! `libsqlite3-sys` as sqlx), with their prepared statements cached.
//!
//! Only bounded reads come here: a primary-key lookup, or up to a thousand of
//! them (`expand`). Anything this path cannot take as it is — a value it does
//! not bind, a statement that does not prepare (a function only sqlx's
//! connections register) — falls back to the sqlx pool, so the answer never
//! depends on which path served it. Lists and counts, which can run long and
//! carry the statement deadline, stay on sqlx.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value as Json};

use crate::error::ApiError;
use crate::schema::{Resource, Scalar};
use crate::storage::StoredRow;

/// Read-only connections for primary-key reads.
#[derive(Debug)]
pub(crate) struct InlineReaders {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl InlineReaders {
    /// Readers of the database file at `path`, keeping up to `keep` idle.
    pub(crate) fn open(
        path: PathBuf,
        busy_timeout: Duration,
        keep: usize,
    ) -> Result<InlineReaders, String> {
        let readers = InlineReaders {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
        };
        let first = readers.connect().map_err(|e| e.to_string())?;
        readers.give_back(first);
        Ok(readers)
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(64);
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
        let params = values
            .iter()
            .map(bindable)
            .collect::<Option<Vec<SqlValue>>>()?;
        let conn = match self.take() {
            Ok(conn) => conn,
            Err(e) => return Some(Err(failure(e))),
        };
        let result = (|| {
            let mut statement = match conn.prepare_cached(sql) {
                Ok(s) => s,
                // Not ours to run (e.g. REGEXP, which only sqlx's connections have).
                Err(e) => return Ok(Err(e)),
            };
            let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(decode(resource, row)?);
            }
            Ok(Ok(out))
        })();
        self.give_back(conn);
        match result {
            Ok(Ok(rows)) => Some(Ok(rows)),
            Ok(Err(unprepared)) => {
                tracing::debug!(error = %unprepared, "an inline read fell back to the pool");
                None
            }
            Err(e) => Some(Err(failure(e))),
        }
    }
}

/// The error a failed read answers: busy or unreachable is 503, the rest 500.
fn failure(e: rusqlite::Error) -> ApiError {
    match e.sqlite_error_code() {
        Some(
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::CannotOpen,
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
            (_, ValueRef::Text(t)) => Json::String(
                std::str::from_utf8(t)
                    .map_err(|e| rusqlite::Error::Utf8Error(i, e))?
                    .to_owned(),
            ),
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
