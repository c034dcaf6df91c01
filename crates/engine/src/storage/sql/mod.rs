//! SQL shared by every dialect: plans become `sea-query` statements with every
//! value bound as a parameter and every identifier taken from the schema (never
//! from the client), and migration steps become DDL. What differs between
//! databases is behind [`Dialect`], implemented once per database.

mod group_commit;
pub mod mysql;
pub mod postgres;
mod queue;
pub(crate) mod rds_iam;
mod request_pool;
pub mod sqlite;
pub mod sqlite_inline;
pub mod store;

pub use store::SqlStorage;

use sea_query::{
    Alias, Cond, Condition as SqlCondition, DeleteStatement, Expr, ExprTrait, InsertStatement,
    LikeExpr, NullOrdering, Order, Query, SelectStatement, UpdateStatement,
};
use sea_query_sqlx::{SqlxBinder, SqlxValues};

use crate::plan::{Compare, Condition, Expect};
use crate::request::query::LikePattern;
use crate::request::{Direction, SortKey};
use crate::schema::{Resource, Scalar};
use crate::value::Value;

use std::collections::HashSet;

use super::migrate::{ColumnSpec, Count, IndexSpec, Snapshot, Step, TableSpec};

/// The hidden column that counts writes; strong ETags are built from it.
pub const VERSION_COLUMN: &str = "_version";

/// The table that records applied schema snapshots.
pub const SCHEMA_TABLE: &str = "_anteroom_schema";

/// What one SQL database does differently.
pub trait Dialect: Send + Sync + 'static {
    /// sea-query's renderer for this database.
    type Builder: sea_query::QueryBuilder + Default;
    /// Renders a select with its bound values.
    fn build_select(&self, stmt: &SelectStatement) -> (String, SqlxValues) {
        stmt.build_sqlx(Self::Builder::default())
    }
    /// Renders an insert.
    fn build_insert(&self, stmt: &InsertStatement) -> (String, SqlxValues) {
        stmt.build_sqlx(Self::Builder::default())
    }
    /// Renders an update.
    fn build_update(&self, stmt: &UpdateStatement) -> (String, SqlxValues) {
        stmt.build_sqlx(Self::Builder::default())
    }
    /// Renders a delete.
    fn build_delete(&self, stmt: &DeleteStatement) -> (String, SqlxValues) {
        stmt.build_sqlx(Self::Builder::default())
    }
    /// A value as this database binds it; `scalar` types NULLs, which strict
    /// databases need (a text NULL is not a bigint NULL to PostgreSQL).
    fn bind(&self, value: &Value, scalar: Scalar) -> sea_query::Value;
    /// A column as it is compared and sorted. `exact` is set for equality
    /// (`eq`, `ne`, `in`) and unset for ordering (`gt`…, `sort`), so a dialect
    /// may order decimals stored as text numerically yet match them exactly.
    fn column_expr(&self, name: &str, scalar: Scalar, exact: bool) -> Expr {
        let _ = (scalar, exact);
        Expr::col(Alias::new(name))
    }
    /// A value as it is compared against [`Dialect::column_expr`].
    fn compare_value(&self, value: &Value, scalar: Scalar, exact: bool) -> Expr {
        let _ = exact;
        Expr::val(self.bind(value, scalar))
    }
    /// Case-insensitive LIKE.
    fn ilike(&self, column: Expr, pattern: &LikePattern) -> Expr;
    /// Case-sensitive LIKE.
    fn like(&self, column: Expr, pattern: &LikePattern) -> Expr {
        column.like(LikeExpr::new(pattern.sql()))
    }
    /// Quotes an identifier for DDL.
    fn quote(&self, ident: &str) -> String;
    /// The SQL type of a column.
    fn column_type(&self, spec: &ColumnSpec) -> String;
    /// The primary key column definition for an id kind.
    fn id_definition(&self, name: &str, kind: &str, spec: &ColumnSpec) -> String;
    /// Appended after `CREATE TABLE … (…)` (MySQL: engine and collation).
    fn table_options(&self) -> &'static str {
        ""
    }
    /// Whether foreign keys are declared with their table or column (SQLite,
    /// which cannot add one to an existing table but does not need the
    /// referenced table to exist yet) rather than added once every table
    /// exists.
    fn inline_foreign_keys(&self) -> bool {
        false
    }
    /// Whether columns cannot be altered or dropped in place, so a table
    /// whose columns change is rebuilt (SQLite: `render` creates it anew,
    /// copies the rows and swaps it in).
    fn rebuilds_to_alter(&self) -> bool {
        false
    }
    /// Statements changing a column's type (length) and nullability in place.
    fn alter_column(
        &self,
        table: &str,
        column: &str,
        from: &ColumnSpec,
        to: &ColumnSpec,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let (table, column) = (self.quote(table), self.quote(column));
        if self.column_type(from) != self.column_type(to) {
            out.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {column} TYPE {}",
                self.column_type(to)
            ));
        }
        if from.nullable != to.nullable {
            out.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {column} {} NOT NULL",
                if to.nullable { "DROP" } else { "SET" }
            ));
        }
        out
    }
    /// `ALTER TABLE … DROP CONSTRAINT` for a foreign key.
    fn drop_foreign_key(&self, table: &str, name: &str) -> String {
        format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            self.quote(table),
            self.quote(name)
        )
    }
    /// Statements renaming what the database named after a table when the
    /// table is renamed (PostgreSQL's primary key index and id sequence), so
    /// the names the schema loader reserves stay true.
    fn rename_table_companions(&self, from: &str, to: &str) -> Vec<String> {
        let _ = (from, to);
        Vec::new()
    }
    /// Whether a constraint can be renamed (else it is dropped and added).
    fn renames_constraints(&self) -> bool {
        false
    }
    /// The function counting a string's characters.
    fn char_length(&self) -> &'static str {
        "CHAR_LENGTH"
    }
    /// A column as an index names it (MySQL: a prefix of a TEXT column).
    fn index_part(&self, column: &str, spec: Option<&ColumnSpec>) -> String {
        let _ = spec;
        self.quote(column)
    }
    /// `DROP INDEX`.
    fn drop_index(&self, table: &str, name: &str) -> String {
        let _ = table;
        format!("DROP INDEX {}", self.quote(name))
    }
    /// A `DEFAULT` literal for an added column (values come from the schema file only).
    fn default_literal(&self, value: &serde_json::Value, spec: &ColumnSpec) -> String {
        match value {
            serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
            other => {
                let _ = spec;
                format!("'{}'", other.to_string().replace('\'', "''"))
            }
        }
    }
}

/// What a failed statement means, as far as the pipeline cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A unique index refused the write; the field when the backend can tell.
    Unique {
        /// The field the index is on.
        field: Option<String>,
        /// The primary key itself (the field is the id of the written resource).
        primary_key: bool,
    },
    /// A foreign key refused the write or delete; the field when the backend can tell.
    ForeignKey {
        /// The referencing field.
        field: Option<String>,
    },
    /// The database cannot be reached (503, retry later).
    Unavailable,
    /// The transaction lost a deadlock or serialization race: running it again may succeed.
    Transient,
    /// Anything else (500, logged).
    Other,
}

/// The most connections of the sqlx pool a client-server database keeps
/// for migrations and queue notifications; requests borrow from
/// [`request_pool`] instead.
pub(crate) const SERVICE_CONNECTIONS: u32 = 2;

/// The settings of a client-server database's (PostgreSQL, MySQL) sqlx
/// pool, which serves migrations and queue notifications: its size
/// ([`SERVICE_CONNECTIONS`]) and acquire timeout, idle and lifetime limits, and a ping only
/// for a connection that sat idle past `ping_after_idle`. A ping on every
/// acquire doubled the round trips of a GET; one on a connection idle that
/// long costs nothing under load and replaces a connection that died while
/// nobody used it (a thawed Lambda's, one a firewall dropped) instead of
/// failing its request.
///
/// With RDS IAM authentication (`tokens`), an acquire also replaces a token
/// that went stale while the process was frozen, before any connection
/// opens with it.
pub(crate) fn pool_options<DB: sqlx::Database>(
    options: &crate::storage::ConnectOptions,
    tokens: Option<std::sync::Arc<rds_iam::Refresher<DB>>>,
) -> sqlx::pool::PoolOptions<DB> {
    let ping_after = options.ping_after_idle;
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(SERVICE_CONNECTIONS)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            if let Some(tokens) = &tokens {
                tokens.refresh_if_stale();
            }
            Box::pin(async move {
                if meta.idle_for >= ping_after {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(options.idle_timeout)
        .max_lifetime(options.max_lifetime)
}

/// Where a client-server database was looked for, to say so when it could
/// not be opened.
pub(crate) struct Endpoint<'a> {
    /// `PostgreSQL` or `MySQL`.
    pub(crate) kind: &'static str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) database: &'a str,
    pub(crate) user: &'a str,
}

/// Why a database could not be opened, in the user's terms: which server,
/// which database and user, and what to check next.
pub(crate) fn describe_connect_error(at: &Endpoint<'_>, error: &sqlx::Error) -> String {
    let Endpoint {
        kind,
        host,
        port,
        database,
        user,
    } = at;
    match error {
        sqlx::Error::Database(e) => {
            let code = e.code().unwrap_or_default();
            let next = match code.as_ref() {
                // PostgreSQL invalid_catalog_name; MySQL ER_BAD_DB_ERROR.
                "3D000" | "42000" if e.message().contains(database) => {
                    "create it, or correct the database name at the end of the URL".to_owned()
                }
                // PostgreSQL invalid_password / invalid_authorization; MySQL access denied.
                "28P01" | "28000" => {
                    "check the user and password in the URL (user:password@host)".to_owned()
                }
                _ => "check the database URL".to_owned(),
            };
            format!(
                "the {kind} server at {host}:{port} refused database \"{database}\" for user \"{user}\": {}; {next}",
                e.message()
            )
        }
        sqlx::Error::Io(e) => format!(
            "cannot reach the {kind} server at {host}:{port}: {e}; check that it runs and that the URL's host and port are right"
        ),
        sqlx::Error::Tls(e) => format!(
            "TLS with the {kind} server at {host}:{port} failed: {e}; check sslmode/ssl-mode in the URL"
        ),
        sqlx::Error::PoolTimedOut => format!(
            "no connection to the {kind} server at {host}:{port} within the acquire timeout; check that it runs and accepts connections"
        ),
        other => format!("cannot open {kind} database \"{database}\" at {host}:{port}: {other}"),
    }
}

/// The error to describe when a pool could not open its first connection:
/// the pool retries until its acquire timeout and then says only that it
/// timed out, so one direct attempt learns the cause (refused, unknown
/// database, bad password).
pub(crate) async fn first_connect_error<O>(
    options: &O,
    pool_error: sqlx::Error,
    patience: std::time::Duration,
) -> sqlx::Error
where
    O: sqlx::ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(patience, options.connect()).await {
        Ok(Err(direct)) => direct,
        _ => pool_error,
    }
}

/// Driver errors meaning the database cannot be reached, on every backend
/// (503). A protocol error is one: a connection cut while TLS is negotiated
/// reads as an unexpected answer to the TLS request, not as an I/O error.
pub fn is_connection_failure(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// A statement deadline held by the request that acquired a connection. The
/// connection's statements are interrupted once `limit` has passed, or as soon
/// as the guard is dropped while one still runs (the client went away and the
/// request future was dropped). Only backends without a server-side statement
/// timeout (SQLite) need one.
#[derive(Debug)]
pub struct Deadline(std::sync::Arc<DeadlineState>);

#[derive(Debug)]
struct DeadlineState {
    at: std::time::Instant,
    released: std::sync::atomic::AtomicBool,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: std::time::Duration) -> Deadline {
        Deadline(std::sync::Arc::new(DeadlineState {
            at: std::time::Instant::now() + limit,
            released: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// A check for the database's progress callback: `false` means interrupt.
    pub fn keep_going(&self) -> impl FnMut() -> bool + Send + 'static {
        let state = self.0.clone();
        move || {
            !state.released.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < state.at
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.0
            .released
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A list running outside the driver's pool; `None` when it could not run there.
pub type InlineList = futures_util::future::BoxFuture<
    'static,
    Option<Result<sqlite_inline::Listed, crate::error::ApiError>>,
>;

/// A SQL database: its dialect plus what the generic [`SqlStorage`] needs to
/// run plans on it. One implementation per database, in its own module.
pub trait Backend: Dialect {
    /// The sqlx driver.
    type Db: sqlx::Database + sqlx::database::HasStatementCache;
    /// `sqlite`, `postgres` or `mysql`.
    const NAME: &'static str;
    /// Whether INSERT and UPDATE support `RETURNING`.
    const RETURNING: bool;
    /// The statement opening a write transaction, when not the driver's `BEGIN`.
    const BEGIN_WRITE: Option<&'static str>;
    /// Whether a prepared statement's plan is cached per connection and
    /// kept until the table's statistics change (PostgreSQL's generic
    /// plans): statements whose best plan depends on how the data grew are
    /// then sent unprepared, planned at each execution.
    const CACHES_PLANS: bool = false;
    /// Decodes a row selected with [`select_columns`].
    fn decode(
        &self,
        resource: &Resource,
        row: &<Self::Db as sqlx::Database>::Row,
    ) -> Result<crate::storage::StoredRow, crate::error::ApiError>;
    /// Runs a list (and its count) without the driver's pool, where the
    /// database allows it (SQLite: on the blocking pool, see
    /// [`sqlite_inline`]), under the statement `timeout`. `None`, or a
    /// future answering `None`: the caller uses the pool.
    fn list_inline(
        &self,
        _model: &std::sync::Arc<crate::schema::AppModel>,
        _resource: &str,
        _read: impl FnOnce() -> sqlite_inline::ListRead,
        _timeout: std::time::Duration,
    ) -> Option<InlineList> {
        None
    }
    /// Classifies a driver error.
    /// Runs a primary-key select without the driver's pool, where the
    /// database allows it (SQLite: on the calling thread, see
    /// [`sqlite_inline`]); `None` means the caller uses the pool.
    fn select_inline(
        &self,
        _resource: &Resource,
        _sql: &str,
        _values: &SqlxValues,
    ) -> Option<Result<Vec<crate::storage::StoredRow>, crate::error::ApiError>> {
        None
    }
    fn classify(&self, model: &crate::schema::AppModel, error: &sqlx::Error) -> Failure;
    /// The autoincrement id of the row just inserted (without `RETURNING`).
    fn last_insert_id(result: &<Self::Db as sqlx::Database>::QueryResult) -> Option<i64>;
    /// Rows changed by a statement.
    fn rows_affected(result: &<Self::Db as sqlx::Database>::QueryResult) -> u64;
    /// Statements run on one connection to take the migration lock, to
    /// commit and release it, and to roll back and release it.
    fn migration_session(
        &self,
    ) -> (
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );
    /// A statement listing rows whose references dangle, run before a
    /// migration commits where the migration runs with foreign keys off
    /// (SQLite: `PRAGMA foreign_key_check`).
    fn foreign_key_check(&self) -> Option<&'static str> {
        None
    }
    /// `CREATE TABLE IF NOT EXISTS _anteroom_schema (…)` in this dialect.
    fn schema_table_ddl(&self) -> String;
    /// A query counting the tables named [`SCHEMA_TABLE`] (0 or 1), for a
    /// dry run, which must not create it.
    fn schema_table_count(&self) -> String;
    /// Bounds what `conn` runs until the returned guard is dropped (see
    /// [`Deadline`]): the store arms the connections of lists, counts and
    /// writes (scans, patterns, cascades); primary-key lookups are bounded by
    /// construction. PostgreSQL and MySQL enforce their statement timeout in
    /// the server, set once per session: nothing to do per request.
    fn arm(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        limit: std::time::Duration,
    ) -> impl std::future::Future<Output = Result<Option<Deadline>, sqlx::Error>> + Send {
        let _ = (conn, limit);
        async { Ok(None) }
    }
    /// Whether the database rolled back the open transaction of `conn` on
    /// its own after a failed statement (SQLite does on an interrupted
    /// statement or a full disk): asked by group commit after a write fails.
    fn transaction_lost(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl std::future::Future<Output = bool> + Send {
        let _ = conn;
        async { false }
    }
    /// Pushes queue changes ([`crate::storage::queue::LineSignal`]
    /// payloads) to every instance listening, where the database can push:
    /// PostgreSQL's `NOTIFY`. Elsewhere nothing: instances poll.
    fn announce(
        pool: &sqlx::Pool<Self::Db>,
        payloads: Vec<String>,
    ) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send {
        let _ = (pool, payloads);
        async { Ok(()) }
    }
    /// The pushed queue changes, where the database can push.
    fn subscribe(
        pool: &sqlx::Pool<Self::Db>,
    ) -> Option<tokio::sync::mpsc::Receiver<crate::storage::queue::LineSignal>> {
        let _ = pool;
        None
    }
}

/// The field behind an index or foreign key name this engine generated.
pub fn field_of_constraint(
    model: &crate::schema::AppModel,
    table: Option<&str>,
    name: &str,
) -> Option<String> {
    for (tname, spec) in &model.snapshot().tables {
        if table.is_some_and(|t| t != tname) {
            continue;
        }
        if let Some(index) = spec.indexes.get(name) {
            return index.columns.first().cloned();
        }
        for (column, cspec) in &spec.columns {
            if cspec.foreign_key.as_deref() == Some(name) {
                return Some(column.clone());
            }
        }
    }
    None
}

fn col(name: &str) -> Alias {
    Alias::new(name)
}

/// The columns every select reads, in order: the resource's then the version.
pub fn select_columns(resource: &Resource) -> Vec<Alias> {
    resource
        .columns
        .iter()
        .map(|c| col(&c.name))
        .chain(std::iter::once(col(VERSION_COLUMN)))
        .collect()
}

fn scalar_of(resource: &Resource, column: &str) -> Scalar {
    resource.column(column).map_or(Scalar::Text, |c| c.scalar())
}

/// A plan condition as SQL.
pub fn condition<D: Dialect + ?Sized>(d: &D, resource: &Resource, c: &Condition) -> SqlCondition {
    match c {
        Condition::All(items) => items
            .iter()
            .fold(Cond::all(), |acc, i| acc.add(condition(d, resource, i))),
        Condition::Any(items) if items.is_empty() => Cond::all().add(Expr::cust("1 = 0")),
        Condition::Any(items) => items
            .iter()
            .fold(Cond::any(), |acc, i| acc.add(condition(d, resource, i))),
        Condition::Compare { column, op, value } => {
            let scalar = scalar_of(resource, column);
            let exact = matches!(op, Compare::Eq | Compare::Ne);
            let left = d.column_expr(column, scalar, exact);
            let right = d.compare_value(value, scalar, exact);
            let expr = match op {
                Compare::Eq => left.eq(right),
                Compare::Ne => left.ne(right),
                Compare::Gt => left.gt(right),
                Compare::Gte => left.gte(right),
                Compare::Lt => left.lt(right),
                Compare::Lte => left.lte(right),
            };
            Cond::all().add(expr)
        }
        Condition::In { column, values } => {
            let scalar = scalar_of(resource, column);
            let values: Vec<Expr> = values
                .iter()
                .map(|v| d.compare_value(v, scalar, true))
                .collect();
            Cond::all().add(d.column_expr(column, scalar, true).is_in(values))
        }
        Condition::Like {
            column,
            pattern,
            case_insensitive,
        } => {
            let left = Expr::col(col(column));
            Cond::all().add(if *case_insensitive {
                d.ilike(left, pattern)
            } else {
                d.like(left, pattern)
            })
        }
        Condition::IsNull { column, null } => {
            let e = Expr::col(col(column));
            Cond::all().add(if *null { e.is_null() } else { e.is_not_null() })
        }
    }
}

/// `SELECT … FROM resource WHERE condition ORDER BY sort LIMIT n OFFSET m`.
pub fn select<D: Dialect + ?Sized>(
    d: &D,
    resource: &Resource,
    cond: &Condition,
    sort: &[SortKey],
    limit: Option<u64>,
    offset: u64,
) -> SelectStatement {
    let mut stmt = Query::select();
    stmt.columns(select_columns(resource))
        .from(col(&resource.name))
        .cond_where(condition(d, resource, cond));
    for key in sort {
        let scalar = scalar_of(resource, &key.column);
        let (order, nulls) = match key.direction {
            Direction::Asc => (Order::Asc, NullOrdering::First),
            Direction::Desc => (Order::Desc, NullOrdering::Last),
        };
        let nullable = resource.column(&key.column).is_some_and(|c| c.nullable());
        if nullable {
            stmt.order_by_expr_with_nulls(d.column_expr(&key.column, scalar, false), order, nulls);
        } else {
            stmt.order_by_expr(d.column_expr(&key.column, scalar, false), order);
        }
    }
    if let Some(limit) = limit {
        stmt.limit(limit);
    }
    if offset > 0 {
        stmt.offset(offset);
    }
    stmt
}

/// `SELECT COUNT(*) FROM resource WHERE condition`.
pub fn count<D: Dialect + ?Sized>(d: &D, resource: &Resource, cond: &Condition) -> SelectStatement {
    let mut stmt = Query::select();
    stmt.expr(Expr::cust("COUNT(*)"))
        .from(col(&resource.name))
        .cond_where(condition(d, resource, cond));
    stmt
}

/// `INSERT INTO resource (columns…, _version) VALUES (…, 1) RETURNING …`.
pub fn insert<D: Dialect + ?Sized>(
    d: &D,
    resource: &Resource,
    row: &crate::request::Record,
    returning: bool,
) -> InsertStatement {
    let mut stmt = Query::insert();
    let mut columns: Vec<Alias> = row.keys().map(|k| col(k)).collect();
    columns.push(col(VERSION_COLUMN));
    let mut values: Vec<Expr> = row
        .iter()
        .map(|(name, v)| Expr::val(d.bind(v, scalar_of(resource, name))))
        .collect();
    values.push(Expr::val(1i64));
    stmt.into_table(col(&resource.name))
        .columns(columns)
        .values_panic(values);
    if returning {
        stmt.returning(Query::returning().columns(select_columns(resource)));
    }
    stmt
}

fn version_condition(expect: &Expect) -> Option<Expr> {
    match expect {
        Expect::Versions(versions) if versions.is_empty() => Some(Expr::cust("1 = 0")),
        Expect::Versions(versions) => {
            Some(Expr::col(col(VERSION_COLUMN)).is_in(versions.iter().copied()))
        }
        // An existing row fails the precondition: nothing may be written to it.
        Expect::Absent => Some(Expr::cust("1 = 0")),
        Expect::NotVersions(versions) if versions.is_empty() => None,
        Expect::NotVersions(versions) => {
            Some(Expr::col(col(VERSION_COLUMN)).is_not_in(versions.iter().copied()))
        }
        Expect::Nothing | Expect::Exists => None,
    }
}

fn id_expr<D: Dialect + ?Sized>(d: &D, resource: &Resource, id: &Value) -> Expr {
    let id_column = resource.id_column();
    Expr::col(col(&id_column.name)).eq(Expr::val(d.bind(id, id_column.scalar())))
}

/// `UPDATE resource SET … , _version = _version + 1 WHERE id = ? [AND _version IN (…)] RETURNING …`.
pub fn update<D: Dialect + ?Sized>(
    d: &D,
    plan: &crate::plan::UpdatePlan<'_>,
    returning: bool,
) -> UpdateStatement {
    let (resource, id, set, expect) = (plan.resource, &plan.id, &plan.set, &plan.expect);
    let (scope, bump) = (plan.scope.as_ref(), plan.bump.as_ref());
    let mut stmt = Query::update();
    stmt.table(col(&resource.name));
    // First: MySQL evaluates assignments left to right, so a comparison placed
    // after `role = ?` would see the new role rather than the stored one.
    if let Some(bump) = bump {
        let step: Expr = if bump.unless_unchanged.is_empty() {
            Expr::val(1i64)
        } else {
            let unchanged = bump
                .unless_unchanged
                .iter()
                .fold(Cond::all(), |acc, (c, v)| {
                    acc.add(Expr::col(col(c)).eq(Expr::val(d.bind(v, scalar_of(resource, c)))))
                });
            Expr::case(unchanged, Expr::val(0i64))
                .finally(Expr::val(1i64))
                .into()
        };
        stmt.value(col(&bump.column), Expr::col(col(&bump.column)).add(step));
    }
    for (name, value) in set {
        stmt.value(
            col(name),
            Expr::val(d.bind(value, scalar_of(resource, name))),
        );
    }
    stmt.value(col(VERSION_COLUMN), Expr::col(col(VERSION_COLUMN)).add(1));
    stmt.and_where(id_expr(d, resource, id));
    if let Some(v) = version_condition(expect) {
        stmt.and_where(v);
    }
    if let Some(scope) = scope {
        stmt.cond_where(condition(d, resource, scope));
    }
    if returning {
        stmt.returning(Query::returning().columns(select_columns(resource)));
    }
    stmt
}

/// `DELETE FROM resource WHERE id = ? [AND _version IN (…)]`.
pub fn delete<D: Dialect + ?Sized>(
    d: &D,
    resource: &Resource,
    id: &Value,
    expect: &Expect,
    scope: Option<&Condition>,
) -> DeleteStatement {
    let mut stmt = Query::delete();
    stmt.from_table(col(&resource.name))
        .and_where(id_expr(d, resource, id));
    if let Some(v) = version_condition(expect) {
        stmt.and_where(v);
    }
    if let Some(scope) = scope {
        stmt.cond_where(condition(d, resource, scope));
    }
    stmt
}

/// `SELECT _version FROM resource WHERE id = ? [AND scope]`: tells 404 from
/// 412 after a write matched nothing.
pub fn version_of<D: Dialect + ?Sized>(
    d: &D,
    resource: &Resource,
    id: &Value,
    scope: Option<&Condition>,
) -> SelectStatement {
    let mut stmt = Query::select();
    stmt.column(col(VERSION_COLUMN))
        .from(col(&resource.name))
        .and_where(id_expr(d, resource, id));
    if let Some(scope) = scope {
        stmt.cond_where(condition(d, resource, scope));
    }
    stmt
}

/// `SELECT 1 FROM table WHERE column = ? LIMIT 1`: used to name the failing constraint.
pub fn exists<D: Dialect + ?Sized>(
    d: &D,
    table: &str,
    column: &str,
    value: &Value,
    scalar: Scalar,
) -> SelectStatement {
    let mut stmt = Query::select();
    stmt.expr(Expr::val(1i64))
        .from(col(table))
        .and_where(Expr::col(col(column)).eq(Expr::val(d.bind(value, scalar))))
        .limit(1);
    stmt
}

pub(super) fn column_definition<D: Dialect + ?Sized>(
    d: &D,
    name: &str,
    spec: &ColumnSpec,
    with_default: bool,
) -> String {
    let mut def = format!("{} {}", d.quote(name), d.column_type(spec));
    if let Some(g) = &spec.generated {
        // The same syntax on the three databases; `is_in` holds engine
        // constants (statuses), never client text.
        let values: Vec<String> = g
            .is_in
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect();
        def.push_str(&format!(
            " GENERATED ALWAYS AS (CASE WHEN {} IN ({}) THEN {} END) STORED",
            d.quote(&g.when),
            values.join(", "),
            d.quote(&g.value)
        ));
        return def;
    }
    def.push_str(if spec.nullable { " NULL" } else { " NOT NULL" });
    if with_default && let Some(default) = &spec.default {
        def.push_str(" DEFAULT ");
        def.push_str(&d.default_literal(default, spec));
    }
    def
}

fn action(on_delete: crate::schema::OnDelete) -> &'static str {
    match on_delete {
        crate::schema::OnDelete::Restrict => "RESTRICT",
        crate::schema::OnDelete::Cascade => "CASCADE",
        crate::schema::OnDelete::SetNull => "SET NULL",
    }
}

/// `REFERENCES target (id) ON DELETE …`.
fn references<D: Dialect + ?Sized>(
    d: &D,
    target: &str,
    target_id: &str,
    on_delete: crate::schema::OnDelete,
) -> String {
    format!(
        "REFERENCES {} ({}) ON DELETE {}",
        d.quote(target),
        d.quote(target_id),
        action(on_delete)
    )
}

/// `CONSTRAINT name ` when the foreign key has a stored name.
fn constraint<D: Dialect + ?Sized>(d: &D, spec: &ColumnSpec) -> String {
    spec.foreign_key
        .as_ref()
        .map_or_else(String::new, |name| format!("CONSTRAINT {} ", d.quote(name)))
}

/// The DDL of one migration step. `target_id` gives each table's id column (for references).
pub fn ddl<D: Dialect + ?Sized>(
    d: &D,
    step: &Step,
    target_id: &dyn Fn(&str) -> String,
    target: &Snapshot,
) -> Vec<String> {
    let add_constraint = |table: &str, column: &str, name: &str, target: &str, on_delete| {
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) {}",
            d.quote(table),
            d.quote(name),
            d.quote(column),
            references(d, target, &target_id(target), on_delete)
        )
    };
    match step {
        Step::CreateTable { table, spec } => vec![create_table(d, table, spec, target_id)],
        Step::RenameTable { from, to } => {
            let mut out = vec![format!(
                "ALTER TABLE {} RENAME TO {}",
                d.quote(from),
                d.quote(to)
            )];
            out.extend(d.rename_table_companions(from, to));
            out
        }
        Step::RenameColumn { table, from, to } => vec![format!(
            "ALTER TABLE {} RENAME COLUMN {} TO {}",
            d.quote(table),
            d.quote(from),
            d.quote(to)
        )],
        // SQLite's errors never name a constraint.
        Step::RenameForeignKey { .. } if d.inline_foreign_keys() => vec![],
        Step::RenameForeignKey {
            table, from, to, ..
        } if d.renames_constraints() => {
            vec![format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                d.quote(table),
                d.quote(from),
                d.quote(to)
            )]
        }
        Step::RenameForeignKey {
            table,
            column,
            from,
            to,
            target,
            on_delete,
        } => vec![
            d.drop_foreign_key(table, from),
            add_constraint(table, column, to, target, *on_delete),
        ],
        Step::AddColumn {
            table,
            column,
            spec,
        } => {
            let mut def = column_definition(d, column, spec, true);
            if d.inline_foreign_keys()
                && let Some((to, on_delete)) = &spec.references
            {
                def.push(' ');
                def.push_str(&constraint(d, spec));
                def.push_str(&references(d, to, &target_id(to), *on_delete));
            }
            vec![format!("ALTER TABLE {} ADD COLUMN {def}", d.quote(table))]
        }
        Step::AlterColumn {
            table,
            column,
            from,
            to,
        } => d.alter_column(table, column, from, to),
        Step::FillNulls {
            table,
            column,
            spec,
        } => match &spec.default {
            Some(default) => vec![format!(
                "UPDATE {} SET {} = {} WHERE {} IS NULL",
                d.quote(table),
                d.quote(column),
                d.default_literal(default, spec),
                d.quote(column)
            )],
            None => vec![],
        },
        Step::CreateIndex { table, name, spec } => {
            vec![create_index(d, table, name, spec, target.tables.get(table))]
        }
        Step::DropIndex { table, name } => vec![d.drop_index(table, name)],
        // Declared with the table or column instead.
        Step::AddForeignKey { .. } | Step::DropForeignKey { .. } if d.inline_foreign_keys() => {
            vec![]
        }
        Step::AddForeignKey {
            table,
            column,
            name,
            target,
            on_delete,
        } => vec![add_constraint(table, column, name, target, *on_delete)],
        Step::DropForeignKey { table, name } => vec![d.drop_foreign_key(table, name)],
        Step::RunSql { name, text } => vec![format!(
            "-- {}/{name}\n{}",
            super::migrate::SQL_FOLDER,
            text.trim_end()
        )],
        Step::DropColumn { table, column } => vec![format!(
            "ALTER TABLE {} DROP COLUMN {}",
            d.quote(table),
            d.quote(column)
        )],
        Step::DropTable { table } => vec![format!("DROP TABLE {}", d.quote(table))],
    }
}

/// The DDL of a migration to `target`, in order. Where columns cannot be
/// altered in place ([`Dialect::rebuilds_to_alter`]), every table whose
/// columns change, lose a foreign key or become required is rebuilt at the
/// end instead: its own column, index and foreign key steps are left out,
/// and the rebuild creates the table as `target` has it, copies every
/// column it still has (converted ones are recreated empty) and swaps it in.
pub(crate) fn render<D: Dialect + ?Sized>(d: &D, steps: &[Step], target: &Snapshot) -> Vec<String> {
    let id_of = |table: &str| {
        target
            .tables
            .get(table)
            .map_or_else(|| "id".to_owned(), |t| t.id.clone())
    };
    if !d.rebuilds_to_alter() {
        return steps
            .iter()
            .flat_map(|s| ddl(d, s, &id_of, target))
            .collect();
    }
    let dropped: HashSet<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::DropTable { table } => Some(table.as_str()),
            _ => None,
        })
        .collect();
    let mut rebuilt: Vec<&str> = Vec::new();
    let mut recreated: HashSet<(&str, &str)> = HashSet::new();
    for step in steps {
        let table = match step {
            Step::DropForeignKey { table, .. } => table,
            Step::DropColumn { table, column } => {
                recreated.insert((table, column));
                table
            }
            Step::AlterColumn {
                table, from, to, ..
            } if from.nullable != to.nullable => table,
            Step::AddColumn { table, spec, .. } if !spec.nullable && spec.default.is_none() => {
                table
            }
            _ => continue,
        };
        if !dropped.contains(table.as_str()) && !rebuilt.contains(&table.as_str()) {
            rebuilt.push(table);
        }
    }
    let mut absent: HashSet<(&str, &str)> = HashSet::new();
    let mut out = Vec::new();
    for step in steps {
        let skip = match step {
            Step::AddColumn {
                table,
                column,
                spec,
            } if rebuilt.contains(&table.as_str())
                && (recreated.contains(&(table, column))
                    || (!spec.nullable && spec.default.is_none())) =>
            {
                absent.insert((table, column));
                true
            }
            Step::DropColumn { table, .. }
            | Step::AlterColumn { table, .. }
            | Step::DropForeignKey { table, .. }
            | Step::AddForeignKey { table, .. }
            | Step::CreateIndex { table, .. } => rebuilt.contains(&table.as_str()),
            _ => false,
        };
        if !skip {
            out.extend(ddl(d, step, &id_of, target));
        }
    }
    for table in rebuilt {
        let spec = &target.tables[table];
        // Each column as the rebuild fills it: copied, or, when it is
        // added or recreated by this migration, its default (as ADD COLUMN
        // gives it on the other databases) or nothing.
        let filled: Vec<(String, String)> = spec
            .columns
            .iter()
            .filter(|(_, c)| c.generated.is_none())
            .filter_map(|(column, c)| {
                if !absent.contains(&(table, column.as_str())) {
                    return Some((column.clone(), d.quote(column)));
                }
                c.default
                    .as_ref()
                    .map(|v| (column.clone(), d.default_literal(v, c)))
            })
            .collect();
        out.extend(rebuild(d, table, spec, &filled, &id_of));
    }
    out
}

/// Rebuilds `table` as `spec`, filling each of `filled` (a column and the
/// expression over the old row that gives its value) and keeping every
/// row's version: SQLite's way to alter columns. Run with foreign keys off
/// (see the SQLite migration session), so dropping the old table neither
/// cascades nor breaks the references to it, which name the table.
fn rebuild<D: Dialect + ?Sized>(
    d: &D,
    table: &str,
    spec: &TableSpec,
    filled: &[(String, String)],
    target_id: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let scratch = format!("_anteroom_rebuild_{table}");
    let literal = |name: &str| format!("'{}'", name.replace('\'', "''"));
    let version = d.quote(VERSION_COLUMN);
    let columns: Vec<String> = filled
        .iter()
        .map(|(c, _)| d.quote(c))
        .chain(std::iter::once(version.clone()))
        .collect();
    let values: Vec<String> = filled
        .iter()
        .map(|(_, e)| e.clone())
        .chain(std::iter::once(version))
        .collect();
    let mut out = vec![create_table(d, &scratch, spec, target_id)];
    if spec.id_kind == "integer" {
        // AUTOINCREMENT's high-water mark moves with the rows, so ids of
        // deleted rows are never given again.
        out.push(format!(
            "UPDATE sqlite_sequence SET name = {} WHERE name = {}",
            literal(&scratch),
            literal(table)
        ));
    }
    out.push(format!(
        "INSERT INTO {} ({}) SELECT {} FROM {}",
        d.quote(&scratch),
        columns.join(", "),
        values.join(", "),
        d.quote(table)
    ));
    out.push(format!("DROP TABLE {}", d.quote(table)));
    out.push(format!(
        "ALTER TABLE {} RENAME TO {}",
        d.quote(&scratch),
        d.quote(table)
    ));
    for (name, index) in &spec.indexes {
        out.push(create_index(d, table, name, index, Some(spec)));
    }
    out
}

/// The query counting what a migration would lose or cannot do.
pub(crate) fn count_query<D: Dialect + ?Sized>(d: &D, count: &Count) -> String {
    match count {
        Count::Rows { table } => format!("SELECT COUNT(*) FROM {}", d.quote(table)),
        Count::Values { table, column } => {
            format!("SELECT COUNT({}) FROM {}", d.quote(column), d.quote(table))
        }
        Count::Missing { table, column } => format!(
            "SELECT COUNT(*) FROM {} WHERE {} IS NULL",
            d.quote(table),
            d.quote(column)
        ),
        Count::Longer { table, column, max } => format!(
            "SELECT COUNT(*) FROM {} WHERE {}({}) > {max}",
            d.quote(table),
            d.char_length(),
            d.quote(column)
        ),
        Count::Duplicates { table, column } => format!(
            "SELECT COUNT(*) FROM (SELECT {c} FROM {t} WHERE {c} IS NOT NULL GROUP BY {c} HAVING COUNT(*) > 1) shared",
            c = d.quote(column),
            t = d.quote(table)
        ),
    }
}

/// The DDL that would create `model`'s tables on an empty database of each
/// backend, computed without one: `anteroom check` runs the naming, ordering
/// and rendering `migrate` runs, so it meets the same problems.
pub fn dry_run(
    model: &crate::schema::AppModel,
) -> Result<Vec<(&'static str, Vec<String>)>, Vec<String>> {
    let target = model.snapshot();
    let steps = super::migrate::plan(&Snapshot::default(), target, &[])?.steps;
    Ok(vec![
        (
            <sqlite::SqliteDialect as Backend>::NAME,
            render(&sqlite::SqliteDialect::default(), &steps, target),
        ),
        (
            <postgres::PostgresDialect as Backend>::NAME,
            render(&postgres::PostgresDialect, &steps, target),
        ),
        (
            <mysql::MysqlDialect as Backend>::NAME,
            render(&mysql::MysqlDialect::mariadb(), &steps, target),
        ),
    ])
}

fn create_table<D: Dialect + ?Sized>(
    d: &D,
    table: &str,
    spec: &TableSpec,
    target_id: &dyn Fn(&str) -> String,
) -> String {
    let mut parts = Vec::new();
    for (name, cspec) in &spec.columns {
        if name == &spec.id {
            parts.push(d.id_definition(name, &spec.id_kind, cspec));
        } else {
            parts.push(column_definition(d, name, cspec, false));
        }
    }
    parts.push(format!(
        "{} BIGINT NOT NULL DEFAULT 1",
        d.quote(VERSION_COLUMN)
    ));
    if d.inline_foreign_keys() {
        for (name, cspec) in &spec.columns {
            if let Some((to, on_delete)) = &cspec.references {
                parts.push(format!(
                    "{}FOREIGN KEY ({}) {}",
                    constraint(d, cspec),
                    d.quote(name),
                    references(d, to, &target_id(to), *on_delete)
                ));
            }
        }
    }
    format!(
        "CREATE TABLE {} (\n  {}\n){}",
        d.quote(table),
        parts.join(",\n  "),
        d.table_options()
    )
}

fn create_index<D: Dialect + ?Sized>(
    d: &D,
    table: &str,
    name: &str,
    spec: &IndexSpec,
    columns_of: Option<&TableSpec>,
) -> String {
    let columns: Vec<String> = spec
        .columns
        .iter()
        .map(|c| d.index_part(c, columns_of.and_then(|t| t.columns.get(c))))
        .collect();
    format!(
        "CREATE {}INDEX {} ON {} ({})",
        if spec.unique { "UNIQUE " } else { "" },
        d.quote(name),
        d.quote(table),
        columns.join(", ")
    )
}
