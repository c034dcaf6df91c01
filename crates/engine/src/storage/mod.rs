//! Stage 3, execute: the [`Storage`] trait that runs plans against a database,
//! and its implementations, one per SQL dialect under [`sql`]. Each
//! implementation translates its own driver's errors (unique, foreign key,
//! connection loss) into the same [`ApiError`]s in one place.

pub mod migrate;
pub mod queue;
pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value as Json};

use crate::error::ApiError;
use crate::plan::{DeletePlan, InsertPlan, ListPlan, ReadPlan, UpdatePlan};
use crate::schema::{AppModel, Resource};
use crate::value::Value;
pub use migrate::{MigrationError, MigrationReport, SqlFile, sql_files};

/// A row as stored: its rendered column values and its version (for ETags).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// Column name → JSON value, in column order.
    pub values: Map<String, Json>,
    /// Incremented by every write; the strong ETag is `"<version>"`.
    pub version: i64,
}

/// Roughly how many bytes a row takes once rendered as JSON: what page byte
/// budgets count (exact sizes would cost a serialisation per row).
pub fn approx_size(values: &Map<String, Json>) -> usize {
    fn size(j: &Json) -> usize {
        match j {
            Json::Null | Json::Bool(_) => 5,
            Json::Number(_) => 20,
            Json::String(s) => s.len() + 2,
            Json::Array(items) => 2 + items.iter().map(|i| size(i) + 1).sum::<usize>(),
            Json::Object(map) => {
                2 + map
                    .iter()
                    .map(|(k, v)| k.len() + 4 + size(v))
                    .sum::<usize>()
            }
        }
    }
    2 + values
        .iter()
        .map(|(k, v)| k.len() + 4 + size(v))
        .sum::<usize>()
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    /// At most `limit` rows, and fewer once they reach the plan's byte budget.
    pub rows: Vec<StoredRow>,
    /// Whether more rows follow the last one.
    pub has_more: bool,
    /// Rows matching the filters, when asked for.
    pub total: Option<u64>,
}

/// What an update did.
#[derive(Debug, Clone)]
pub enum UpdateOutcome {
    /// The row was updated.
    Updated(StoredRow),
    /// PUT on a client key that did not exist: the row was inserted.
    Created(StoredRow),
    /// No row with that id.
    NotFound,
    /// The row exists but `If-Match` did not match it.
    PreconditionFailed,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The row is gone.
    Deleted,
    /// No row with that id.
    NotFound,
    /// The row exists but `If-Match` did not match it.
    PreconditionFailed,
}

/// What `migrate` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateMode {
    /// Apply the statements and record the new schema version (else only
    /// compute and return them).
    pub apply: bool,
    /// Delete or narrow data where the schema says so
    /// (`--allow-destructive`); else such a migration is refused.
    pub allow_destructive: bool,
}

impl MigrateMode {
    /// Compute the statements; refuse what deletes or narrows data.
    pub const DRY_RUN: MigrateMode = MigrateMode {
        apply: false,
        allow_destructive: false,
    };
    /// Apply what keeps every stored value; refuse the rest.
    pub const APPLY: MigrateMode = MigrateMode {
        apply: true,
        allow_destructive: false,
    };
}

/// One database, as the pipeline sees it. Every method is one transaction.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// `sqlite`, `postgres` or `mysql`.
    fn backend(&self) -> &'static str;

    /// Answers when the database does.
    async fn ping(&self) -> Result<(), ApiError>;

    /// A page of rows (and the total, when planned).
    async fn list(&self, plan: &ListPlan<'_>) -> Result<Page, ApiError>;

    /// One row, or `None`.
    async fn read(&self, plan: &ReadPlan<'_>) -> Result<Option<StoredRow>, ApiError>;

    /// The rows of `resource` whose id is in `ids` (for `expand` and
    /// reference checks), in any order; `None` when they would hold more than
    /// `byte_budget` bytes (reading stops there).
    async fn fetch_by_ids(
        &self,
        resource: &Resource,
        ids: &[Value],
        scope: Option<&crate::plan::Condition>,
        byte_budget: usize,
    ) -> Result<Option<Vec<StoredRow>>, ApiError>;

    /// Inserts every row or none.
    async fn insert(&self, plan: &InsertPlan<'_>) -> Result<Vec<StoredRow>, ApiError>;

    /// Updates (or, for PUT on a client key, inserts) one row.
    async fn update(&self, plan: &UpdatePlan<'_>) -> Result<UpdateOutcome, ApiError>;

    /// Deletes one row.
    async fn delete(&self, plan: &DeletePlan<'_>) -> Result<DeleteOutcome, ApiError>;

    /// The queue operations of this database.
    fn queues(&self) -> &dyn queue::QueueStore;

    /// Brings the database to `target` and applies the SQL files of
    /// `migrations/` it has not run yet.
    async fn migrate(
        &self,
        target: &migrate::Snapshot,
        sql: &[migrate::SqlFile],
        mode: MigrateMode,
    ) -> Result<MigrationReport, MigrationError>;
}

/// The file of a SQLite URL naming one (`None` for in-memory databases
/// and other backends): what a dry run checks before opening, which
/// would create it.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    sql::sqlite::file_of(url)
}

/// The URL forms [`parse_database_url`] accepts, for error messages.
const URL_FORMS: &str = "sqlite://path/app.db (or just the file's path), postgres://user:password@host:5432/database or mysql://user:password@host:3306/database";

/// A database URL as given on the command line or in `DATABASE_URL`: a
/// known scheme, or a bare file path, which names a SQLite database
/// (`app.db` is `sqlite://app.db`). Anything else is refused with the
/// forms that work.
pub fn parse_database_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the database URL is empty: use {URL_FORMS}"));
    }
    let Some((scheme, _)) = text.split_once(':') else {
        return Ok(format!("sqlite://{text}"));
    };
    match scheme {
        "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb" => Ok(text.to_owned()),
        _ if !text.contains("://") => Err(format!(
            "\"{text}\" is neither a URL nor a file path: use {URL_FORMS}"
        )),
        _ => Err(format!(
            "unsupported database URL scheme \"{scheme}\": use {URL_FORMS}"
        )),
    }
}

/// Opens the storage a database URL names: `sqlite://…`, `postgres://…`
/// (or `postgresql://…`), `mysql://…` (or `mariadb://…`).
pub async fn connect(
    url: &str,
    options: &ConnectOptions,
    model: Arc<AppModel>,
) -> Result<Arc<dyn Storage>, String> {
    let scheme = url.split(':').next().unwrap_or("");
    match scheme {
        "sqlite" => Ok(Arc::new(sql::sqlite::connect(url, options, model).await?)),
        "postgres" | "postgresql" => {
            Ok(Arc::new(sql::postgres::connect(url, options, model).await?))
        }
        "mysql" => Ok(Arc::new(sql::mysql::connect(url, options, model).await?)),
        "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            Ok(Arc::new(sql::mysql::connect(&url, options, model).await?))
        }
        _ => Err(format!(
            "unsupported database URL scheme \"{scheme}\": use {URL_FORMS}"
        )),
    }
}

/// The most file descriptors the storage `url` names holds open with
/// `max_connections` (what the server keeps out of its client cap): three
/// per SQLite connection, of which there are one writer and two reader pools
/// ([`sql::sqlite::connections`]); one socket per connection of a server
/// database: those lent to requests, the service pool's
/// ([`sql::SERVICE_CONNECTIONS`]) and PostgreSQL's queue listener.
pub fn file_descriptors(url: &str, max_connections: u32) -> u64 {
    match url.split(':').next().unwrap_or("") {
        "sqlite" => sql::sqlite::FILES_PER_CONNECTION * sql::sqlite::connections(max_connections),
        _ => u64::from(Ord::max(max_connections, 1)) + u64::from(sql::SERVICE_CONNECTIONS) + 1,
    }
}

/// Pool and timeout settings shared by every backend.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Read connections (SQLite) or pool size (client-server databases).
    pub max_connections: u32,
    /// How long SQLite waits for a lock before failing.
    pub busy_timeout: std::time::Duration,
    /// How long a request waits for a pooled connection before a 503.
    pub acquire_timeout: std::time::Duration,
    /// Longest a single statement may run (PostgreSQL and MySQL in the server;
    /// SQLite through a progress handler that also stops when the client leaves).
    pub statement_timeout: std::time::Duration,
    /// A pooled connection (PostgreSQL, MySQL) idle this long is pinged
    /// before it is handed out, and replaced if the ping fails: one that died
    /// while idle (a frozen Lambda, a firewall, a database restart) costs a
    /// reconnection instead of a failed request. Busy connections skip it.
    pub ping_after_idle: std::time::Duration,
    /// Idle pooled connections are closed after this long.
    pub idle_timeout: std::time::Duration,
    /// Every pooled connection is replaced after this long.
    pub max_lifetime: std::time::Duration,
    /// PostgreSQL/MySQL: the password is an RDS IAM auth token signed with
    /// the environment's AWS credentials, and TLS is required.
    pub rds_iam: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 4,
            busy_timeout: std::time::Duration::from_secs(5),
            acquire_timeout: std::time::Duration::from_secs(3),
            statement_timeout: std::time::Duration::from_secs(30),
            ping_after_idle: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(10 * 60),
            max_lifetime: std::time::Duration::from_secs(30 * 60),
            rds_iam: false,
        }
    }
}
