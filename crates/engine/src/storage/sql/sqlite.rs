//! SQLite: the embedded default. WAL journal, a busy timeout, one writer
//! connection (SQLite serialises writers anyway; one connection avoids lock
//! contention, measured at p99 13 ms vs 728 ms for a 4-connection pool) and
//! two pools of readers (primary-key lookups; lists and counts, which carry a
//! statement deadline). Values SQLite has no type for are stored as text in
//! sortable forms (UUIDs hyphenated, timestamps RFC 3339 UTC with microseconds,
//! dates ISO 8601, decimals canonical; JSON as its text). This file is the only
//! place that knows SQLite's types, pragmas and error messages.

use std::str::FromStr;
use std::sync::Arc;

use sea_query::{BinOper, Expr, ExprTrait, Func, SqliteQueryBuilder};
use serde_json::{Map, Value as Json};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqlitePoolOptions, SqliteQueryResult, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use super::{Backend, Deadline, Dialect, Failure, SCHEMA_TABLE, SqlStorage};
use crate::error::ApiError;
use crate::request::query::LikePattern;
use crate::schema::{AppModel, Resource, Scalar};
use crate::storage::migrate::ColumnSpec;
use crate::storage::{ConnectOptions, StoredRow};
use crate::value::{Value, format_timestamp};

/// SQLite's SQL flavour.
#[derive(Debug, Clone, Default)]
pub struct SqliteDialect {
    /// Primary-key reads on the calling thread (none for an in-memory database).
    inline: Option<Arc<super::sqlite_inline::InlineReaders>>,
}

impl Dialect for SqliteDialect {
    type Builder = SqliteQueryBuilder;

    fn bind(&self, value: &Value, _scalar: Scalar) -> sea_query::Value {
        match value {
            Value::Null => sea_query::Value::String(None),
            Value::Bool(b) => sea_query::Value::BigInt(Some(i64::from(*b))),
            Value::Int(i) => sea_query::Value::BigInt(Some(*i)),
            Value::Float(f) => sea_query::Value::Double(Some(*f)),
            Value::Decimal(d) => sea_query::Value::String(Some(d.normalize().to_string())),
            Value::Text(s) => sea_query::Value::String(Some(s.clone())),
            Value::Uuid(u) => sea_query::Value::String(Some(u.hyphenated().to_string())),
            Value::Timestamp(t) => sea_query::Value::String(Some(format_timestamp(t))),
            Value::Date(d) => sea_query::Value::String(Some(d.format("%Y-%m-%d").to_string())),
            Value::Json(j) => sea_query::Value::String(Some(j.to_string())),
        }
    }

    /// Decimals are stored as canonical text: equality compares that text
    /// exactly; ordering casts to REAL (SQLite has no exact decimal type).
    fn column_expr(&self, name: &str, scalar: Scalar, exact: bool) -> Expr {
        let column = Expr::col(sea_query::Alias::new(name));
        if scalar == Scalar::Decimal && !exact {
            Func::cast_as(column, sea_query::Alias::new("REAL")).into()
        } else {
            column
        }
    }

    fn compare_value(&self, value: &Value, scalar: Scalar, exact: bool) -> Expr {
        match (value, scalar) {
            (Value::Decimal(d), Scalar::Decimal) if !exact => {
                Expr::val(d.to_string().parse::<f64>().unwrap_or(0.0))
            }
            _ => Expr::val(self.bind(value, scalar)),
        }
    }

    /// SQLite's `lower()` and `LIKE` fold ASCII only; ILIKE becomes a
    /// case-insensitive, Unicode-aware REGEXP (Rust `regex`, registered on
    /// every connection) anchored at both ends.
    fn ilike(&self, column: Expr, pattern: &LikePattern) -> Expr {
        column.binary(BinOper::Custom("REGEXP"), Expr::val(pattern.regex()))
    }

    fn quote(&self, ident: &str) -> String {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }

    fn column_type(&self, spec: &ColumnSpec) -> String {
        match spec.scalar {
            Scalar::Int | Scalar::Bool => "INTEGER",
            Scalar::Float => "REAL",
            _ => "TEXT",
        }
        .to_owned()
    }

    /// SQLite cannot add a constraint to an existing table, and checks
    /// references only when rows are written, so a table may name one that
    /// is created after it.
    fn inline_foreign_keys(&self) -> bool {
        true
    }

    /// SQLite alters no column in place: `render` rebuilds the table (and
    /// its types ignore lengths, so widening needs nothing).
    fn rebuilds_to_alter(&self) -> bool {
        true
    }

    fn alter_column(&self, _: &str, _: &str, _: &ColumnSpec, _: &ColumnSpec) -> Vec<String> {
        Vec::new()
    }

    fn char_length(&self) -> &'static str {
        "LENGTH"
    }

    fn id_definition(&self, name: &str, kind: &str, spec: &ColumnSpec) -> String {
        match kind {
            "integer" => format!("{} INTEGER PRIMARY KEY AUTOINCREMENT", self.quote(name)),
            _ => format!(
                "{} {} NOT NULL PRIMARY KEY",
                self.quote(name),
                self.column_type(spec)
            ),
        }
    }
}

impl Backend for SqliteDialect {
    type Db = Sqlite;
    const NAME: &'static str = "sqlite";
    const RETURNING: bool = true;
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");

    fn select_inline(
        &self,
        resource: &Resource,
        sql: &str,
        values: &sea_query_sqlx::SqlxValues,
    ) -> Option<Result<Vec<StoredRow>, ApiError>> {
        self.inline.as_ref()?.select(resource, sql, &values.0)
    }

    fn list_inline(
        &self,
        model: &Arc<AppModel>,
        resource: &str,
        read: impl FnOnce() -> super::sqlite_inline::ListRead,
        timeout: std::time::Duration,
    ) -> Option<super::InlineList> {
        let readers = self.inline.clone()?;
        let read = read();
        let (model, name) = (model.clone(), resource.to_owned());
        let deadline = Deadline::after(timeout);
        let keep_going = deadline.keep_going();
        Some(Box::pin(async move {
            // Dropped with the request (its client went away): the progress
            // handler then interrupts the statement.
            let _deadline = deadline;
            // At most --max-connections lists at once, as sqlx's pool allowed.
            let _permit = match readers.list_permit().await {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            let task = tokio::task::spawn_blocking(move || {
                readers.list(model.resource(&name)?, &read, keep_going)
            });
            task.await
                .unwrap_or_else(|e| Some(Err(ApiError::internal(e))))
        }))
    }

    fn decode(&self, resource: &Resource, row: &SqliteRow) -> Result<StoredRow, ApiError> {
        let mut values = Map::with_capacity(resource.columns.len());
        for (i, column) in resource.columns.iter().enumerate() {
            let json = match column.scalar() {
                Scalar::Int => row
                    .try_get::<Option<i64>, _>(i)
                    .map(|v| v.map_or(Json::Null, Json::from)),
                Scalar::Bool => row
                    .try_get::<Option<bool>, _>(i)
                    .map(|v| v.map_or(Json::Null, Json::Bool)),
                Scalar::Float => row.try_get::<Option<f64>, _>(i).map(|v| {
                    v.and_then(serde_json::Number::from_f64)
                        .map_or(Json::Null, Json::Number)
                }),
                Scalar::Json => row.try_get::<Option<String>, _>(i).map(|v| {
                    v.map_or(Json::Null, |s| {
                        serde_json::from_str(&s).unwrap_or(Json::String(s))
                    })
                }),
                Scalar::Decimal => row
                    .try_get::<Option<String>, _>(i)
                    .map(|v| v.map_or(Json::Null, |s| crate::value::decimal_text_json(s, column))),
                _ => row
                    .try_get::<Option<String>, _>(i)
                    .map(|v| v.map_or(Json::Null, Json::String)),
            }
            .map_err(ApiError::internal)?;
            values.insert(column.name.clone(), json);
        }
        let version = row
            .try_get::<i64, _>(resource.columns.len())
            .map_err(ApiError::internal)?;
        Ok(StoredRow { values, version })
    }

    fn classify(&self, _model: &AppModel, error: &sqlx::Error) -> Failure {
        match error {
            e if super::is_connection_failure(e) => Failure::Unavailable,
            sqlx::Error::Database(d) => {
                let message = d.message();
                if let Some(rest) = message.strip_prefix("UNIQUE constraint failed: ") {
                    // "UNIQUE constraint failed: students.email"
                    let field = rest
                        .split(',')
                        .next()
                        .and_then(|c| c.trim().split_once('.'))
                        .map(|(_, f)| f.to_owned());
                    // The store compares the field with the resource's key.
                    Failure::Unique {
                        field,
                        primary_key: false,
                    }
                } else if message.contains("FOREIGN KEY constraint failed") {
                    // SQLite does not say which key: the store finds the dangling one.
                    Failure::ForeignKey { field: None }
                } else if message.contains("database is locked") || message == "interrupted" {
                    // "interrupted": the statement passed its deadline, as
                    // PostgreSQL's statement timeout (57014) is classified.
                    Failure::Unavailable
                } else {
                    Failure::Other
                }
            }
            _ => Failure::Other,
        }
    }

    fn last_insert_id(result: &SqliteQueryResult) -> Option<i64> {
        Some(result.last_insert_rowid())
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn migration_session(
        &self,
    ) -> (
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    ) {
        // The single writer connection plus BEGIN IMMEDIATE is SQLite's
        // migration lock. Foreign keys are off while a rebuild drops and
        // swaps tables (SQLite ignores the pragma inside a transaction), and
        // `foreign_key_check` runs before the commit instead.
        (
            &["PRAGMA foreign_keys = OFF", "BEGIN IMMEDIATE"],
            &["COMMIT", "PRAGMA foreign_keys = ON"],
            &["ROLLBACK", "PRAGMA foreign_keys = ON"],
        )
    }

    fn foreign_key_check(&self) -> Option<&'static str> {
        Some("PRAGMA foreign_key_check")
    }

    fn schema_table_ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, snapshot TEXT NOT NULL)"
        )
    }

    fn schema_table_count(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{SCHEMA_TABLE}'"
        )
    }

    /// SQLite has no statement timeout: a progress handler, replaced at every
    /// acquire, interrupts the connection's statements past the deadline or
    /// once the request that holds the connection is gone. One function call
    /// (LIKE, REGEXP) is a single step, which is why patterns are bounded at parse time.
    async fn arm(
        conn: &mut SqliteConnection,
        limit: std::time::Duration,
    ) -> Result<Option<Deadline>, sqlx::Error> {
        let deadline = Deadline::after(limit);
        conn.lock_handle()
            .await?
            .set_progress_handler(PROGRESS_STEPS, deadline.keep_going());
        Ok(Some(deadline))
    }

    /// `BEGIN` succeeds only outside a transaction: if it does, SQLite had
    /// rolled the open one back (the connection is discarded after this).
    async fn transaction_lost(conn: &mut SqliteConnection) -> bool {
        use sqlx::Executor;
        conn.execute("BEGIN").await.is_ok()
    }
}

/// Rows read ahead per statement (see `connect`).
const ROW_CHANNEL: usize = 8;

/// Virtual-machine steps between two deadline checks (microseconds of work).
const PROGRESS_STEPS: i32 = 1000;

/// The most connections [`connect`] opens for `max_connections`: the writer,
/// the checkpointer, two sqlx reader pools of `max_connections` each (the fallback of the
/// inline path), and the inline readers: `max_connections` lists at once plus
/// one primary-key read per runtime worker.
pub(crate) fn connections(max_connections: u32) -> u64 {
    let max = u64::from(Ord::max(max_connections, 1));
    2 + 3 * max + inline_workers() as u64
}

/// Primary-key reads run on the runtime's workers: at most one per worker at a time.
fn inline_workers() -> usize {
    std::thread::available_parallelism().map_or(4, std::num::NonZero::get)
}

/// File descriptors one connection holds: the database, its `-wal` and its `-shm`.
pub(crate) const FILES_PER_CONNECTION: u64 = 3;

/// Puts the database in WAL mode (a permanent property of the file) before
/// any pool opens. The switch needs an exclusive lock that SQLite does not
/// wait for with its busy timeout, so instances starting together on a new
/// file got `database is locked` from whichever lost the race; here the
/// loser retries until `patience` runs out. A file already in WAL mode
/// answers at once.
async fn switch_to_wal(
    options: &SqliteConnectOptions,
    patience: std::time::Duration,
) -> Result<(), String> {
    use sqlx::Connection;
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        let attempt = async {
            let mut conn = SqliteConnection::connect_with(options).await?;
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(&mut conn)
                .await?;
            conn.close().await?;
            Ok::<_, sqlx::Error>(mode)
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            // SQLITE_BUSY and its extended codes (BUSY_RECOVERY, ...).
            Err(sqlx::Error::Database(e))
                if e.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .map(|c| c & 0xff)
                    == Some(5)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = Ord::min(pause * 2, std::time::Duration::from_millis(100));
            }
            Err(sqlx::Error::Database(e)) => return Err(e.message().to_owned()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The database file `url` names; `None` for an in-memory database or a
/// URL that is not SQLite's.
pub(crate) fn file_of(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") || url.contains("mode=memory") {
        return None;
    }
    let file = SqliteConnectOptions::from_str(url)
        .ok()?
        .get_filename()
        .to_path_buf();
    let name = file.to_string_lossy();
    (!name.is_empty() && !name.starts_with(":memory:") && !name.starts_with("file:sqlx-in-memory"))
        .then_some(file)
}

/// Opens (creating if missing) the SQLite database at `url`: one writer
/// connection and two pools of readers ([`connections`] in all).
pub async fn connect(
    url: &str,
    options: &ConnectOptions,
    model: Arc<AppModel>,
) -> Result<SqlStorage<SqliteDialect>, String> {
    let base = SqliteConnectOptions::from_str(url)
        .map_err(|e| format!("invalid SQLite URL {url}: {e}"))?
        .create_if_missing(true)
        .busy_timeout(options.busy_timeout);
    switch_to_wal(&base, options.busy_timeout)
        .await
        .map_err(|e| {
            format!(
                "SQLite file {}: {e}; check that its directory exists and that this user may write there",
                base.get_filename().display()
            )
        })?;
    let base = base
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true)
        .pragma("case_sensitive_like", "ON")
        // Rows the connection's worker thread decodes ahead of the reader:
        // sqlx's default of 50 let one page of large rows pass its byte budget
        // by 50 rows before the store could stop reading.
        .row_buffer_size(ROW_CHANNEL)
        .with_regexp();
    let file = base.get_filename();
    let in_memory = file.as_os_str().is_empty()
        || file.to_string_lossy().starts_with(":memory:")
        || url.contains("mode=memory");
    // A file database is written through group commit's one connection; the
    // writer pool then opens a connection only for migrations and closes it
    // once idle. Each connection to an in-memory database is a database of
    // its own: there the writer pool's one connection does everything.
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(u32::from(in_memory))
        .idle_timeout((!in_memory).then_some(std::time::Duration::from_secs(30)))
        .acquire_timeout(options.busy_timeout)
        .connect_with(base.clone())
        .await
        .map_err(|e| e.to_string())?;
    let reader_pool = || {
        SqlitePoolOptions::new()
            .max_connections(Ord::max(options.max_connections, 1))
            .acquire_timeout(options.busy_timeout)
            .connect_with(base.clone())
    };
    // Two reader pools: primary-key lookups never carry a progress handler;
    // lists and counts get theirs replaced at every acquire (see `arm`).
    let readers = reader_pool().await.map_err(|e| e.to_string())?;
    let scanners = reader_pool().await.map_err(|e| e.to_string())?;
    let inline = if in_memory {
        None
    } else {
        let lists = Ord::max(options.max_connections, 1) as usize;
        Some(Arc::new(super::sqlite_inline::InlineReaders::open(
            file.to_path_buf(),
            options.busy_timeout,
            lists,
            lists + inline_workers(),
        )?))
    };
    let storage = SqlStorage::new(
        SqliteDialect { inline },
        model,
        writer,
        readers,
        scanners,
        options.statement_timeout,
    );
    if in_memory {
        return Ok(storage);
    }
    let group = super::group_commit::GroupCommit::open(
        base.clone()
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT.to_string()),
        options.statement_timeout,
        options.busy_timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    let checkpoints = sqlx::ConnectOptions::connect(&base.clone().busy_timeout(RESTART_PATIENCE))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(checkpointer(group.pauser(), checkpoints));
    Ok(storage.with_group_commit(group))
}

/// How often the checkpointer copies what the writer appended to the WAL
/// (when the writer committed since its last look): at 8,000 POSTs a
/// second the log grows by about 1,000 pages in this time.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// WAL frames (pages) past which the checkpointer restarts the log:
/// SQLite's own automatic checkpoint size.
const RESTART_AFTER_FRAMES: i64 = 1000;
/// The writer's own automatic checkpoint, a backstop for when the
/// checkpointer cannot restart the log (a reader holding an old snapshot).
const WRITER_AUTOCHECKPOINT: i64 = 2 * RESTART_AFTER_FRAMES;
/// How long a restart waits for readers to leave the old log while writes
/// are held; past it, the checkpointer tries again at its next turn.
const RESTART_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

/// Keeps the write-ahead log short without making a commit pay for it.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses 1,000
/// WAL pages: that commit, and every write grouped with or queued behind
/// it, waited for the copy and two syncs (the long tail of POST latency).
/// Here a connection of its own copies the log into the database every
/// [`CHECKPOINT_EVERY`] (`PASSIVE`: alongside the writer, which keeps
/// appending). But SQLite starts the log over only when a write
/// transaction begins after a checkpoint that copied every frame, which
/// back-to-back groups never leave room for (the log grew by 40 MB a second
/// when only that was tried). So once the log is [`RESTART_AFTER_FRAMES`]
/// long, the checkpointer holds the writer between two groups and runs a
/// `RESTART` checkpoint, which copies the few frames appended since its last
/// pass and makes the next group start the log over.
async fn checkpointer(
    writer: super::group_commit::Pauser<SqliteDialect>,
    mut conn: SqliteConnection,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = writer.commits();
    loop {
        tick.tick().await;
        if writer.is_gone() {
            let _ = sqlx::Connection::close(conn).await;
            return;
        }
        let commits = writer.commits();
        if commits == seen {
            continue;
        }
        seen = commits;
        let copied: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut conn)
                .await;
        let frames = match copied {
            Ok((_, frames, _)) => frames,
            Err(e) => {
                tracing::debug!(error = %e, "background checkpoint failed");
                continue;
            }
        };
        if frames < RESTART_AFTER_FRAMES {
            continue;
        }
        let asked = std::time::Instant::now();
        let Some(paused) = writer.pause().await else {
            return;
        };
        let held = std::time::Instant::now();
        let restarted: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
                .fetch_one(&mut conn)
                .await;
        drop(paused);
        match restarted {
            Ok((0, _, copied)) => tracing::debug!(
                frames,
                copied,
                waited_ms = held.duration_since(asked).as_secs_f64() * 1e3,
                held_ms = held.elapsed().as_secs_f64() * 1e3,
                "WAL restarted"
            ),
            Ok(_) => tracing::debug!("WAL restart postponed: a reader holds an old snapshot"),
            Err(e) => tracing::debug!(error = %e, "WAL restart failed"),
        }
    }
}
