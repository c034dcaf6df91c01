//! The one implementation of [`Storage`] for SQL databases, generic over a
//! [`Backend`] (SQLite, PostgreSQL, MySQL). It owns the flow of every
//! operation — transactions, conditional writes, 404-versus-412, upserts,
//! naming the constraint behind a 409 — so the three databases behave the
//! same; each backend only supplies SQL flavour, row decoding and error
//! classification.

use std::sync::Arc;

use async_trait::async_trait;
use sea_query_sqlx::SqlxValues;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, Database, Executor, IntoArguments, Pool};

use super::group_commit::{GroupCommit, Member};
use super::request_pool::{Lent, RequestPool};
use super::{Backend, Deadline, Failure, SCHEMA_TABLE};
use crate::error::{ApiError, Code};
use crate::plan::{Condition, DeletePlan, Expect, InsertPlan, ListPlan, ReadPlan, UpdatePlan};
use crate::request::Record;
use crate::schema::{AppModel, FieldType, OnDelete, Resource};
use crate::storage::migrate::{self, MigrationError, MigrationReport, Snapshot};
use crate::storage::{DeleteOutcome, MigrateMode, Page, Storage, StoredRow, UpdateOutcome};
use crate::value::{Value, format_timestamp};

/// A SQL database behind a backend.
pub struct SqlStorage<B: Backend> {
    pub(super) backend: B,
    pub(super) model: Arc<AppModel>,
    /// Writes (SQLite: a single connection; others: the pool).
    pub(super) writer: Pool<B::Db>,
    /// Primary-key reads (SQLite: a separate pool; others: the same pool).
    /// Never armed with a deadline: they are bounded by construction.
    pub(super) readers: Pool<B::Db>,
    /// Lists and counts, armed with the deadline at every acquire (SQLite: a
    /// pool of its own, so that a reader never meets a handler left by an
    /// earlier request; others: the same pool).
    pub(super) scanners: Pool<B::Db>,
    /// Longest a statement may run (armed per acquire where the server does not enforce it).
    statement_timeout: std::time::Duration,
    /// SQLite: the one writer connection, shared by concurrent writes that
    /// commit together (then `writer` serves migrations only).
    group: Option<GroupCommit<B>>,
    /// PostgreSQL and MySQL: what every request borrows, whatever its role
    /// (then the pools above serve migrations and notifications only).
    requests: Option<RequestPool<B::Db>>,
}

/// The connection a write runs on: a pooled one, or a turn on the group
/// commit writer. Either way the write calls [`WriteConn::settle`] after
/// committing and before answering.
pub(super) enum WriteConn<B: Backend> {
    Pooled(Armed<B::Db>),
    Grouped(Member<B>),
}

impl<B: Backend> WriteConn<B> {
    /// Whether this write shares a group's transaction.
    pub(super) fn grouped(&self) -> bool {
        matches!(self, WriteConn::Grouped(_))
    }

    /// Gives up a write that changed the database outside a savepoint and
    /// then failed: nothing of its transaction may commit.
    fn poison(self) {
        match self {
            // Dropped unfinished: its transaction rolls back.
            WriteConn::Pooled(conn) => drop(conn),
            WriteConn::Grouped(member) => member.poison(),
        }
    }

    /// Returns once the write is durable: at once for a pooled connection
    /// (its transaction has committed); for group commit, once the group's
    /// transaction has.
    pub(super) async fn settle(self) -> Result<(), ApiError> {
        match self {
            WriteConn::Pooled(conn) => {
                conn.finish();
                Ok(())
            }
            WriteConn::Grouped(member) => member.settle().await,
        }
    }
}

impl<B: Backend> std::ops::Deref for WriteConn<B> {
    type Target = <B::Db as Database>::Connection;
    fn deref(&self) -> &Self::Target {
        match self {
            WriteConn::Pooled(c) => c,
            WriteConn::Grouped(m) => m,
        }
    }
}

impl<B: Backend> std::ops::DerefMut for WriteConn<B> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            WriteConn::Pooled(c) => c,
            WriteConn::Grouped(m) => m,
        }
    }
}

/// A pooled connection armed with the statement deadline for as long as the
/// request holds it. Call [`Armed::finish`] once its work completed.
pub(super) struct Armed<DB: Database> {
    conn: Held<DB>,
    _deadline: Option<Deadline>,
}

/// Where a request's connection came from: a sqlx pool (SQLite) or the
/// request pool (PostgreSQL, MySQL).
enum Held<DB: Database> {
    Pooled(PoolConnection<DB>),
    Lent(Lent<DB>),
}

impl<DB: Database> Armed<DB> {
    /// Says the connection's statements completed and its transactions
    /// ended, so the request pool takes it back without checking it (see
    /// [`super::request_pool`]). Dropping it instead is always safe.
    pub(super) fn finish(self) {
        if let Held::Lent(lent) = self.conn {
            lent.finish();
        }
    }
}

impl<DB: Database> std::ops::Deref for Armed<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        match &self.conn {
            Held::Pooled(c) => c,
            Held::Lent(c) => c,
        }
    }
}

impl<DB: Database> std::ops::DerefMut for Armed<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match &mut self.conn {
            Held::Pooled(c) => c,
            Held::Lent(c) => c,
        }
    }
}

/// A conflict of one item of a bulk create, named as validation names the
/// item's fields (`[2].email`), so the client knows which object to fix.
fn in_item(error: ApiError, index: usize) -> ApiError {
    match error {
        ApiError::Conflict {
            code,
            detail,
            field,
        } => ApiError::Conflict {
            code,
            detail: format!("item {index}: {detail}; nothing was created"),
            field: Some(match field {
                Some(f) => format!("[{index}].{f}"),
                None => format!("[{index}]"),
            }),
        },
        other => other,
    }
}

pub(super) fn sql(text: String) -> AssertSqlSafe<String> {
    // Every statement is built by sea-query or the DDL renderer from schema
    // identifiers; client values are bound parameters.
    AssertSqlSafe(text)
}

impl<B: Backend> SqlStorage<B> {
    /// Wraps pools opened by a backend.
    pub fn new(
        backend: B,
        model: Arc<AppModel>,
        writer: Pool<B::Db>,
        readers: Pool<B::Db>,
        scanners: Pool<B::Db>,
        statement_timeout: std::time::Duration,
    ) -> Self {
        SqlStorage {
            backend,
            model,
            writer,
            readers,
            scanners,
            statement_timeout,
            group: None,
            requests: None,
        }
    }

    /// Requests borrow from `requests` instead of the sqlx pools.
    pub(super) fn with_request_pool(mut self, requests: RequestPool<B::Db>) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Writes go through group commit on `group` instead of the writer pool.
    pub(super) fn with_group_commit(mut self, group: GroupCommit<B>) -> Self {
        self.group = Some(group);
        self
    }
}

impl<B> SqlStorage<B>
where
    B: Backend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'c> &'c Pool<B::Db>: Executor<'c, Database = B::Db>,
    SqlxValues: IntoArguments<B::Db>,
    i64: sqlx::Type<B::Db> + for<'r> sqlx::Decode<'r, B::Db>,
    usize: sqlx::ColumnIndex<<B::Db as Database>::Row>,
{
    pub(super) fn unavailable_or_internal(&self, e: sqlx::Error) -> ApiError {
        match self.backend.classify(&self.model, &e) {
            Failure::Unavailable | Failure::Transient => ApiError::Unavailable {
                cause: e.to_string(),
            },
            _ => ApiError::internal(e),
        }
    }

    /// A connection for `pool`'s role (from the request pool where there is
    /// one), its statements bounded by the statement timeout.
    pub(super) async fn acquire(&self, pool: &Pool<B::Db>) -> Result<Armed<B::Db>, ApiError> {
        let fail = |e| self.unavailable_or_internal(e);
        let mut conn = self.borrow(pool).await?;
        let deadline = B::arm(&mut conn, self.statement_timeout)
            .await
            .map_err(fail)?;
        Ok(Armed {
            _deadline: deadline,
            ..conn
        })
    }

    /// A connection for a point read, never armed: a reader must not keep a
    /// deadline's handler for the next request, and point reads are
    /// bounded by construction.
    pub(super) async fn reader(&self) -> Result<Armed<B::Db>, ApiError> {
        self.borrow(&self.readers).await
    }

    async fn borrow(&self, pool: &Pool<B::Db>) -> Result<Armed<B::Db>, ApiError> {
        let fail = |e| self.unavailable_or_internal(e);
        let conn = match &self.requests {
            Some(requests) => Held::Lent(requests.acquire().await.map_err(fail)?),
            None => Held::Pooled(pool.acquire().await.map_err(fail)?),
        };
        Ok(Armed {
            conn,
            _deadline: None,
        })
    }

    /// The connection for a write: a turn on the group commit writer, or an
    /// armed connection from the writer pool.
    pub(super) async fn write_conn(&self) -> Result<WriteConn<B>, ApiError> {
        Ok(match &self.group {
            Some(group) => WriteConn::Grouped(group.join().await?),
            None => WriteConn::Pooled(self.acquire(&self.writer).await?),
        })
    }

    /// Opens a write's transaction: its own, or its savepoint in the group's.
    pub(super) async fn begin_write<'a>(
        &self,
        conn: &'a mut WriteConn<B>,
    ) -> Result<sqlx::Transaction<'a, B::Db>, ApiError> {
        let grouped = matches!(conn, WriteConn::Grouped(_));
        let conn: &mut <B::Db as Database>::Connection = conn;
        let tx = match B::BEGIN_WRITE {
            Some(statement) if !grouped => conn.begin_with(statement).await,
            _ => conn.begin().await,
        };
        tx.map_err(|e| self.unavailable_or_internal(e))
    }

    /// Decodes rows from `rows` until `max` are held or, once at least one
    /// is, their rendered size reaches `byte_budget`; says whether a row followed.
    async fn collect(
        &self,
        resource: &Resource,
        mut rows: futures_util::stream::BoxStream<
            '_,
            Result<<B::Db as Database>::Row, sqlx::Error>,
        >,
        max: usize,
        byte_budget: usize,
    ) -> Result<(Vec<StoredRow>, bool), ApiError> {
        use futures_util::TryStreamExt;
        let mut out = Vec::new();
        let mut held = 0usize;
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| self.unavailable_or_internal(e))?
        {
            if out.len() >= max || (held >= byte_budget && !out.is_empty()) {
                return Ok((out, true));
            }
            let stored = self.backend.decode(resource, &row)?;
            held += crate::storage::approx_size(&stored.values);
            out.push(stored);
        }
        Ok((out, false))
    }

    /// A failed write becomes the 409 that names its field, or 503/500.
    pub(super) async fn write_error(
        &self,
        e: sqlx::Error,
        resource: &Resource,
        rows: &[&Record],
    ) -> ApiError {
        match self.backend.classify(&self.model, &e) {
            Failure::Unique { field, primary_key } => {
                let field = if primary_key {
                    resource.id_column().name.clone()
                } else {
                    field.unwrap_or_default()
                };
                let detail = if field == resource.id_column().name {
                    format!(
                        "a row of {} with this {field} already exists",
                        resource.name
                    )
                } else if field.is_empty() {
                    format!("another row of {} already has these values", resource.name)
                } else {
                    format!("another row of {} already has this {field}", resource.name)
                };
                ApiError::Conflict {
                    code: Code::UniqueViolation,
                    detail,
                    field: (!field.is_empty()).then_some(field),
                }
            }
            Failure::ForeignKey { field } => {
                let field = match field {
                    Some(f) => Some(f),
                    None => self.dangling_reference(resource, rows).await,
                };
                let detail = match &field {
                    Some(f) => {
                        let target = resource.column(f).and_then(|c| match &c.ty {
                            FieldType::Ref(r) => Some(r.to.clone()),
                            _ => None,
                        });
                        format!(
                            "{f} refers to a row of {} that does not exist",
                            target.as_deref().unwrap_or("referenced")
                        )
                    }
                    None => "a reference points to a row that does not exist".to_owned(),
                };
                ApiError::Conflict {
                    code: Code::ForeignKeyViolation,
                    detail,
                    field,
                }
            }
            Failure::Unavailable | Failure::Transient => ApiError::Unavailable {
                cause: e.to_string(),
            },
            Failure::Other => ApiError::internal(e),
        }
    }

    /// When the database does not say which reference failed, find one that points nowhere.
    async fn dangling_reference(&self, resource: &Resource, rows: &[&Record]) -> Option<String> {
        for row in rows {
            for column in &resource.columns {
                let FieldType::Ref(r) = &column.ty else {
                    continue;
                };
                let Some(value) = row.get(&column.name).filter(|v| **v != Value::Null) else {
                    continue;
                };
                let target_id = self
                    .model
                    .resource(&r.to)
                    .map(|t| t.id_column().name.clone())?;
                if !self
                    .exists_where(&r.to, &target_id, value, column.scalar())
                    .await
                    .unwrap_or(true)
                {
                    return Some(column.name.clone());
                }
            }
        }
        None
    }

    async fn exists_where(
        &self,
        table: &str,
        column: &str,
        value: &Value,
        scalar: crate::schema::Scalar,
    ) -> Result<bool, ApiError> {
        let (q, v) =
            self.backend
                .build_select(&super::exists(&self.backend, table, column, value, scalar));
        // An indexed lookup (ids and refs are indexed): bounded, no deadline needed.
        let mut conn = self.reader().await?;
        let row = sqlx::query_with(sql(q), v)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.unavailable_or_internal(e))?;
        conn.finish();
        Ok(row.is_some())
    }

    /// A delete refused by a RESTRICT reference names the referencing field.
    async fn delete_error(&self, e: sqlx::Error, resource: &Resource, id: &Value) -> ApiError {
        match self.backend.classify(&self.model, &e) {
            Failure::ForeignKey { .. } => {}
            Failure::Unavailable | Failure::Transient => {
                return ApiError::Unavailable {
                    cause: e.to_string(),
                };
            }
            _ => return ApiError::internal(e),
        }
        for child in self.model.resources.values() {
            for column in child.refs_to(&resource.name) {
                let FieldType::Ref(r) = &column.ty else {
                    continue;
                };
                if r.on_delete != OnDelete::Restrict {
                    continue;
                }
                if self
                    .exists_where(&child.name, &column.name, id, column.scalar())
                    .await
                    .unwrap_or(false)
                {
                    return ApiError::Conflict {
                        code: Code::StillReferenced,
                        detail: format!(
                            "{} rows still refer to this {} row through {}",
                            child.name, resource.name, column.name
                        ),
                        field: Some(format!("{}.{}", child.name, column.name)),
                    };
                }
            }
        }
        ApiError::Conflict {
            code: Code::StillReferenced,
            detail: format!("other rows still refer to this {} row", resource.name),
            field: None,
        }
    }

    /// Whether the row exists, read inside the write transaction after a
    /// conditional write matched nothing (tells 404 from 412).
    async fn exists_in(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        resource: &Resource,
        id: &Value,
        scope: Option<&Condition>,
    ) -> Result<bool, ApiError> {
        let d = &self.backend;
        let (q, v) = d.build_select(&super::version_of(d, resource, id, scope));
        let current: Option<i64> = sqlx::query_scalar_with(sql(q), v)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.unavailable_or_internal(e))?;
        Ok(current.is_some())
    }

    /// Reads one row by id inside `conn` (after writes on databases without RETURNING).
    async fn reread(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        resource: &Resource,
        id: &Value,
    ) -> Result<Option<StoredRow>, sqlx::Error> {
        let cond = Condition::Compare {
            column: resource.id_column().name.clone(),
            op: crate::plan::Compare::Eq,
            value: id.clone(),
        };
        let (q, v) = self.backend.build_select(&super::select(
            &self.backend,
            resource,
            &cond,
            &[],
            Some(1),
            0,
        ));
        let row = sqlx::query_with(sql(q), v)
            .fetch_optional(&mut *conn)
            .await?;
        row.map(|r| self.backend.decode(resource, &r))
            .transpose()
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))
    }

    /// One attempt of an update or upsert; `None` when a concurrent insert of
    /// the same key won the race and the whole write must be retried.
    async fn update_once(&self, plan: &UpdatePlan<'_>) -> Result<Option<UpdateOutcome>, ApiError> {
        let d = &self.backend;
        let mut conn = self.write_conn().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let (q, v) = d.build_update(&super::update(d, plan, B::RETURNING));
        let updated = if B::RETURNING {
            match sqlx::query_with(sql(q), v).fetch_optional(&mut *tx).await {
                Ok(r) => r.map(|r| d.decode(plan.resource, &r)).transpose()?,
                Err(e) => {
                    drop(tx);
                    if self.backend.classify(&self.model, &e) == Failure::Transient {
                        return Ok(None);
                    }
                    return Err(self.write_error(e, plan.resource, &[&plan.set]).await);
                }
            }
        } else {
            match sqlx::query_with(sql(q), v).execute(&mut *tx).await {
                Ok(done) if B::rows_affected(&done) > 0 => self
                    .reread(&mut tx, plan.resource, &plan.id)
                    .await
                    .map_err(|e| self.unavailable_or_internal(e))?,
                Ok(_) => None,
                Err(e) => {
                    drop(tx);
                    if self.backend.classify(&self.model, &e) == Failure::Transient {
                        return Ok(None);
                    }
                    return Err(self.write_error(e, plan.resource, &[&plan.set]).await);
                }
            }
        };
        if let Some(row) = updated {
            if let Some(after) = &plan.after
                && !after.holds(&|column| row.values.get(column).cloned())
            {
                drop(tx);
                return Err(crate::policy::moved_outside(plan.resource));
            }
            // A member whose line changed leaves it, in this transaction.
            self.member_changed(&mut tx, plan, &row).await?;
            tx.commit()
                .await
                .map_err(|e| self.unavailable_or_internal(e))?;
            conn.settle().await?;
            return Ok(Some(UpdateOutcome::Updated(row)));
        }
        let scope = plan.scope.as_ref();
        if self
            .exists_in(&mut tx, plan.resource, &plan.id, scope)
            .await?
        {
            // Our UPDATE matched nothing but the row exists: either its version
            // differs (412), or it was inserted since by a concurrent PUT (retry).
            return Ok(match plan.expect {
                Expect::Nothing => None,
                _ => Some(UpdateOutcome::PreconditionFailed),
            });
        }
        if plan.insert.is_some()
            && scope.is_some()
            && self
                .exists_in(&mut tx, plan.resource, &plan.id, None)
                .await?
        {
            // Someone else's row: answered as missing, never overwritten.
            return Ok(Some(UpdateOutcome::NotFound));
        }
        match (&plan.insert, &plan.expect) {
            (Some(_), Expect::Exists | Expect::Versions(_)) => {
                Ok(Some(UpdateOutcome::PreconditionFailed))
            }
            (Some(row), Expect::Nothing | Expect::Absent | Expect::NotVersions(_)) => {
                crate::plan::check_creatable(
                    plan.resource,
                    plan.insert_within.as_ref(),
                    row,
                    None,
                )?;
                match self.insert_one(&mut tx, plan.resource, row).await {
                    Ok(stored) => {
                        tx.commit()
                            .await
                            .map_err(|e| self.unavailable_or_internal(e))?;
                        conn.settle().await?;
                        Ok(Some(UpdateOutcome::Created(stored)))
                    }
                    Err(e) => {
                        drop(tx);
                        let key = &plan.resource.id_column().name;
                        match self.backend.classify(&self.model, &e) {
                            Failure::Unique { field, primary_key }
                                if primary_key || field.as_ref() == Some(key) =>
                            {
                                Ok(None)
                            }
                            Failure::Transient => Ok(None),
                            _ => Err(self.write_error(e, plan.resource, &[row]).await),
                        }
                    }
                }
            }
            (None, _) => Ok(Some(UpdateOutcome::NotFound)),
        }
    }

    /// Inserts one row inside `conn`, returning it as stored.
    /// One row inserted by one statement in the group's transaction,
    /// without a savepoint: a statement that fails changes nothing (SQLite
    /// backs out the statement and keeps the transaction; when it rolls
    /// the whole transaction back, the group finds out as for any failed
    /// write). Two fewer round trips to SQLite's worker thread per POST.
    async fn insert_alone(
        &self,
        mut conn: WriteConn<B>,
        resource: &Resource,
        row: &Record,
    ) -> Result<Vec<StoredRow>, ApiError> {
        let (q, v) = self
            .backend
            .build_insert(&super::insert(&self.backend, resource, row, true));
        let inserted = match sqlx::query_with(sql(q), v).fetch_one(&mut *conn).await {
            Ok(inserted) => inserted,
            Err(e) => {
                drop(conn);
                return Err(self.write_error(e, resource, &[row]).await);
            }
        };
        match self.backend.decode(resource, &inserted) {
            Ok(stored) => {
                conn.settle().await?;
                Ok(vec![stored])
            }
            Err(e) => {
                conn.poison();
                Err(e)
            }
        }
    }

    pub(super) async fn insert_one(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        resource: &Resource,
        row: &Record,
    ) -> Result<StoredRow, sqlx::Error> {
        let (q, v) =
            self.backend
                .build_insert(&super::insert(&self.backend, resource, row, B::RETURNING));
        if B::RETURNING {
            let r = sqlx::query_with(sql(q), v).fetch_one(&mut *conn).await?;
            return self
                .backend
                .decode(resource, &r)
                .map_err(|e| sqlx::Error::Protocol(e.to_string()));
        }
        let done = sqlx::query_with(sql(q), v).execute(&mut *conn).await?;
        let id_column = &resource.id_column().name;
        let id = match row.get(id_column) {
            Some(id) => id.clone(),
            None => Value::Int(B::last_insert_id(&done).ok_or(sqlx::Error::RowNotFound)?),
        };
        self.reread(conn, resource, &id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

#[async_trait]
impl<B> Storage for SqlStorage<B>
where
    B: Backend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'c> &'c Pool<B::Db>: Executor<'c, Database = B::Db>,
    SqlxValues: IntoArguments<B::Db>,
    i64: sqlx::Type<B::Db> + for<'r> sqlx::Decode<'r, B::Db>,
    usize: sqlx::ColumnIndex<<B::Db as Database>::Row>,
    String: sqlx::Type<B::Db> + for<'r> sqlx::Decode<'r, B::Db> + for<'r> sqlx::Encode<'r, B::Db>,
    (i64, String): for<'r> sqlx::FromRow<'r, <B::Db as Database>::Row>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
{
    fn backend(&self) -> &'static str {
        B::NAME
    }

    async fn ping(&self) -> Result<(), ApiError> {
        let mut conn = self.reader().await?;
        sqlx::query(sql("SELECT 1".to_owned()))
            .execute(&mut *conn)
            .await
            .map_err(|e| self.unavailable_or_internal(e))?;
        conn.finish();
        Ok(())
    }

    async fn list(&self, plan: &ListPlan<'_>) -> Result<Page, ApiError> {
        let d = &self.backend;
        let stmt = super::select(
            d,
            plan.resource,
            &plan.condition,
            &plan.sort,
            Some(u64::from(plan.limit) + 1),
            plan.offset,
        );
        let limit = plan.limit as usize;
        // Built only by a backend that lists inline: the others pay nothing.
        let read = || super::sqlite_inline::ListRead {
            select: {
                let (q, v) = d.build_select(&stmt);
                (q, v.0)
            },
            count: plan.count_condition.as_ref().map(|c| {
                let (q, v) = d.build_select(&super::count(d, plan.resource, c));
                (q, v.0)
            }),
            max: limit,
            byte_budget: plan.byte_budget,
        };
        if let Some(inline) = d.list_inline(
            &self.model,
            &plan.resource.name,
            read,
            self.statement_timeout,
        ) && let Some(listed) = inline.await
        {
            let (rows, has_more, total) = listed?;
            return Ok(Page {
                rows,
                has_more,
                total: total.map(|n| u64::try_from(n).unwrap_or(0)),
            });
        }
        let (q, v) = d.build_select(&stmt);
        let fail = |e| self.unavailable_or_internal(e);
        let mut conn = self.acquire(&self.scanners).await?;
        let ((rows, has_more), total) = match &plan.count_condition {
            // Page and total from one read transaction: one snapshot, consistent numbers.
            Some(c) => {
                let mut tx = conn.begin().await.map_err(fail)?;
                let page = self
                    .collect(
                        plan.resource,
                        sqlx::query_with(sql(q), v).fetch(&mut *tx),
                        limit,
                        plan.byte_budget,
                    )
                    .await?;
                let (q, v) = d.build_select(&super::count(d, plan.resource, c));
                let n: i64 = sqlx::query_scalar_with(sql(q), v)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                (page, Some(u64::try_from(n).unwrap_or(0)))
            }
            None => (
                self.collect(
                    plan.resource,
                    sqlx::query_with(sql(q), v).fetch(&mut *conn),
                    limit,
                    plan.byte_budget,
                )
                .await?,
                None,
            ),
        };
        // A page that stopped one row short of the end leaves that row
        // unread: sqlx drains it before the connection's next command, so
        // the connection goes back as finished all the same.
        conn.finish();
        Ok(Page {
            rows,
            has_more,
            total,
        })
    }

    async fn read(&self, plan: &ReadPlan<'_>) -> Result<Option<StoredRow>, ApiError> {
        let d = &self.backend;
        // No LIMIT: the key selects one row at most, and a bound LIMIT
        // makes SQLite prepare the statement again at every execution.
        let (q, v) = d.build_select(&super::select(
            d,
            plan.resource,
            &plan.condition,
            &[],
            None,
            0,
        ));
        // A primary-key lookup is bounded by construction: it skips the
        // statement deadline, and on SQLite the pool's worker thread.
        if let Some(rows) = d.select_inline(plan.resource, &q, &v) {
            return rows.map(|rows| rows.into_iter().next());
        }
        let mut conn = self.reader().await?;
        let row = sqlx::query_with(sql(q), v)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.unavailable_or_internal(e))?;
        conn.finish();
        row.map(|r| d.decode(plan.resource, &r)).transpose()
    }

    async fn fetch_by_ids(
        &self,
        resource: &Resource,
        ids: &[Value],
        scope: Option<&Condition>,
        byte_budget: usize,
    ) -> Result<Option<Vec<StoredRow>>, ApiError> {
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let d = &self.backend;
        let mut all = vec![Condition::In {
            column: resource.id_column().name.clone(),
            values: ids.to_vec(),
        }];
        all.extend(scope.cloned());
        let cond = Condition::All(all);
        let (q, v) = d.build_select(&super::select(d, resource, &cond, &[], None, 0));
        // At most 1,000 primary-key lookups: bounded, no deadline needed.
        let mut conn = self.reader().await?;
        let (rows, more) = self
            .collect(
                resource,
                sqlx::query_with(sql(q), v).fetch(&mut *conn),
                usize::MAX,
                byte_budget,
            )
            .await?;
        // Rows left unread past the byte budget are drained by sqlx before
        // the connection's next command.
        conn.finish();
        Ok((!more).then_some(rows))
    }

    async fn insert(&self, plan: &InsertPlan<'_>) -> Result<Vec<StoredRow>, ApiError> {
        let mut conn = self.write_conn().await?;
        if let [row] = plan.rows.as_slice()
            && !plan.bulk
            && B::RETURNING
            && conn.grouped()
        {
            return self.insert_alone(conn, plan.resource, row).await;
        }
        let mut tx = self.begin_write(&mut conn).await?;
        let mut out = Vec::with_capacity(plan.rows.len());
        for (i, row) in plan.rows.iter().enumerate() {
            match self.insert_one(&mut tx, plan.resource, row).await {
                Ok(stored) => out.push(stored),
                Err(e) => {
                    drop(tx);
                    let error = self.write_error(e, plan.resource, &[row]).await;
                    return Err(if plan.bulk { in_item(error, i) } else { error });
                }
            }
        }
        tx.commit()
            .await
            .map_err(|e| self.unavailable_or_internal(e))?;
        conn.settle().await?;
        Ok(out)
    }

    async fn update(&self, plan: &UpdatePlan<'_>) -> Result<UpdateOutcome, ApiError> {
        // A PUT that creates a key can race another PUT creating the same key:
        // the loser's insert hits the primary key, and it retries as an update.
        for attempt in 0..8u64 {
            if let Some(outcome) = self.update_once(plan).await? {
                return Ok(outcome);
            }
            // Jittered backoff so racing writers stop colliding in lockstep.
            let jitter = u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
                    % 7,
            );
            tokio::time::sleep(std::time::Duration::from_millis(1 + attempt * 3 + jitter)).await;
        }
        Err(ApiError::Unavailable {
            cause: "PUT upsert kept racing concurrent inserts of the same key".to_owned(),
        })
    }

    async fn delete(&self, plan: &DeletePlan<'_>) -> Result<DeleteOutcome, ApiError> {
        let d = &self.backend;
        let mut conn = self.write_conn().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let (q, v) = d.build_delete(&super::delete(
            d,
            plan.resource,
            &plan.id,
            &plan.expect,
            plan.scope.as_ref(),
        ));
        let done = match sqlx::query_with(sql(q), v).execute(&mut *tx).await {
            Ok(done) => done,
            Err(e) => {
                drop(tx);
                return Err(self.delete_error(e, plan.resource, &plan.id).await);
            }
        };
        if B::rows_affected(&done) > 0 {
            tx.commit()
                .await
                .map_err(|e| self.unavailable_or_internal(e))?;
            conn.settle().await?;
            return Ok(DeleteOutcome::Deleted);
        }
        Ok(
            if self
                .exists_in(&mut tx, plan.resource, &plan.id, plan.scope.as_ref())
                .await?
            {
                DeleteOutcome::PreconditionFailed
            } else {
                DeleteOutcome::NotFound
            },
        )
    }

    fn queues(&self) -> &dyn crate::storage::queue::QueueStore {
        self
    }

    async fn migrate(
        &self,
        target: &Snapshot,
        sql_files: &[migrate::SqlFile],
        mode: MigrateMode,
    ) -> Result<MigrationReport, MigrationError> {
        let dbe = |e: sqlx::Error| MigrationError::Database(e.to_string());
        // Group commit's writer stays idle, its last group committed, while
        // the migration holds the database's write lock on its own connection.
        let _paused = match &self.group {
            Some(group) => Some(group.pause().await),
            None => None,
        };
        let mut conn = self.writer.acquire().await.map_err(dbe)?;
        let (lock, unlock, rollback) = self.backend.migration_session();
        let mut locked = Ok(());
        for statement in lock {
            if let Err(e) = sqlx::query(sql((*statement).to_owned()))
                .execute(&mut *conn)
                .await
            {
                locked = Err(dbe(e));
                break;
            }
        }
        let mut result = match locked {
            Ok(()) => {
                self.migrate_locked(&mut conn, target, sql_files, mode)
                    .await
            }
            Err(e) => Err(e),
        };
        let closing: &[&str] = if result.as_ref().is_ok_and(|r| r.applied) {
            unlock
        } else {
            rollback
        };
        // Every closing statement runs (the last ones restore the session),
        // and the first failure is the answer.
        for statement in closing {
            if let Err(e) = sqlx::query(sql((*statement).to_owned()))
                .execute(&mut *conn)
                .await
                && result.is_ok()
            {
                result = Err(dbe(e));
            }
        }
        result
    }
}

impl<B> SqlStorage<B>
where
    B: Backend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'c> &'c Pool<B::Db>: Executor<'c, Database = B::Db>,
    SqlxValues: IntoArguments<B::Db>,
    i64: sqlx::Type<B::Db> + for<'r> sqlx::Decode<'r, B::Db>,
    usize: sqlx::ColumnIndex<<B::Db as Database>::Row>,
    String: sqlx::Type<B::Db> + for<'r> sqlx::Decode<'r, B::Db> + for<'r> sqlx::Encode<'r, B::Db>,
    (i64, String): for<'r> sqlx::FromRow<'r, <B::Db as Database>::Row>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
{
    /// The migration itself, run while the backend's migration lock is held.
    async fn migrate_locked(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        target: &Snapshot,
        sql_files: &[migrate::SqlFile],
        mode: MigrateMode,
    ) -> Result<MigrationReport, MigrationError> {
        let dbe = |e: sqlx::Error| MigrationError::Database(e.to_string());
        // A dry run creates nothing, not even the table recording versions
        // (MySQL would keep it: its DDL commits at once).
        let recorded = if !mode.apply {
            let tables: i64 = sqlx::query_scalar(sql(self.backend.schema_table_count()))
                .fetch_one(&mut *conn)
                .await
                .map_err(dbe)?;
            tables > 0
        } else {
            sqlx::query(sql(self.backend.schema_table_ddl()))
                .execute(&mut *conn)
                .await
                .map_err(dbe)?;
            true
        };
        let last: Option<(i64, String)> = if recorded {
            sqlx::query_as(sql(format!(
                "SELECT version, snapshot FROM {SCHEMA_TABLE} ORDER BY version DESC LIMIT 1"
            )))
            .fetch_optional(&mut *conn)
            .await
            .map_err(dbe)?
        } else {
            None
        };
        let (version, current) = match last {
            Some((version, text)) => (
                version,
                serde_json::from_str::<Snapshot>(&text).map_err(|e| {
                    MigrationError::Database(format!("unreadable schema snapshot: {e}"))
                })?,
            ),
            None => (0, Snapshot::default()),
        };
        // Planned, counted and checked in full before any statement runs:
        // MySQL cannot roll DDL back.
        let plan = migrate::plan(&current, target, sql_files).map_err(MigrationError::Refused)?;
        let mut counts = Vec::with_capacity(plan.concerns.len());
        for concern in &plan.concerns {
            counts.push(match &concern.count {
                Some(count) => Some(
                    sqlx::query_scalar::<_, i64>(sql(super::count_query(&self.backend, count)))
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(dbe)?,
                ),
                None => None,
            });
        }
        let losses = migrate::judge(&plan.concerns, &counts, mode.allow_destructive)
            .map_err(MigrationError::Refused)?;
        let statements = super::render(&self.backend, &plan.steps, target);
        if !mode.allow_destructive && !losses.is_empty() {
            return Err(MigrationError::Destructive(losses));
        }
        if !mode.apply || (plan.steps.is_empty() && version > 0) {
            return Ok(MigrationReport {
                statements,
                losses,
                applied: false,
                version,
            });
        }
        for statement in &statements {
            sqlx::raw_sql(sql(statement.clone()))
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    MigrationError::Database(format!("{e} (while running: {statement})"))
                })?;
        }
        if let Some(check) = self.backend.foreign_key_check() {
            let broken = sqlx::raw_sql(sql(check.to_owned()))
                .fetch_all(&mut *conn)
                .await
                .map_err(dbe)?;
            if !broken.is_empty() {
                return Err(MigrationError::Database(format!(
                    "after the migration {} would refer to rows that do not exist (`{check}` lists them); nothing was changed",
                    if broken.len() == 1 {
                        "1 row".to_owned()
                    } else {
                        format!("{} rows", broken.len())
                    }
                )));
            }
        }
        let mut target = target.clone();
        target.sql = plan.sql;
        let snapshot =
            serde_json::to_string(&target).map_err(|e| MigrationError::Database(e.to_string()))?;
        let mut insert = sea_query::Query::insert();
        insert
            .into_table(sea_query::Alias::new(SCHEMA_TABLE))
            .columns([
                sea_query::Alias::new("version"),
                sea_query::Alias::new("applied_at"),
                sea_query::Alias::new("snapshot"),
            ])
            .values_panic([
                sea_query::Expr::val(version + 1),
                sea_query::Expr::val(format_timestamp(&crate::value::now())),
                sea_query::Expr::val(snapshot),
            ]);
        let (q, v) = self.backend.build_insert(&insert);
        sqlx::query_with(sql(q), v)
            .execute(&mut *conn)
            .await
            .map_err(dbe)?;
        Ok(MigrationReport {
            statements,
            losses,
            applied: true,
            version: version + 1,
        })
    }
}
