//! The one implementation of [`QueueStore`] for SQL databases, generic over
//! a [`Backend`]. Lock order, the same in every transition, so two of them
//! never deadlock: the member row (join), then the partition row, then
//! entries. The partition row is the lock that serializes a line: joins
//! take it by incrementing its ticket counter, `next` and `leave` with
//! `FOR UPDATE` (SQLite has one writer: `BEGIN IMMEDIATE` already
//! serializes). `next` does not need `SKIP LOCKED`: it must update the
//! partition row anyway, and skipping a head row locked by a `leave` that
//! then rolls back would serve the line out of order.

use async_trait::async_trait;
use sea_query::{
    Alias, Asterisk, Expr, ExprTrait, Func, LockType, OnConflict, Order, Query, SelectStatement,
};
use sea_query_sqlx::SqlxValues;
use sqlx::{Database, Executor, IntoArguments, Pool, Row};

use super::store::sql;
use super::{Backend, Failure, SqlStorage, VERSION_COLUMN};
use crate::error::ApiError;
use crate::plan::{Compare, Condition};
use crate::schema::Scalar;
use crate::schema::queue::{Queue, STATE_TABLE, Status, columns};
use crate::storage::StoredRow;
use crate::storage::queue::{
    Activity, Entry, JoinPlan, Joined, Moved, Partition, QueueStore, Stamp, partition_key_of,
    timestamp,
};
use crate::value::Value;

fn col(name: &str) -> Alias {
    Alias::new(name)
}

fn entry_alias() -> Alias {
    Alias::new("e")
}

/// Restricts a select of entries joined with their line ([`entry_select`])
/// to `scope`, through the entry's id: a scope names entry columns
/// unqualified, and the line's table has some of the same names (its
/// partition columns).
fn within_scope<D: super::Dialect + ?Sized>(
    d: &D,
    queue: &Queue,
    stmt: &mut SelectStatement,
    scope: &Condition,
) {
    let id = &queue.entries.id_column().name;
    let mut ids = Query::select();
    ids.column(col(id))
        .from(col(&queue.entries.name))
        .cond_where(super::condition(d, &queue.entries, scope));
    stmt.and_where(Expr::col((entry_alias(), col(id))).in_subquery(ids));
}

fn partition_alias() -> Alias {
    Alias::new("p")
}

/// `SELECT e.*, e._version, p.called_upto, (left ahead) FROM entries e
/// JOIN partitions p USING (partition_key)`: an entry and what its position
/// needs, in one statement (one snapshot, so positions never go backwards).
/// Run with [`planned_each_time`]: a plan cached while the table was
/// small counted the leavers through the wrong index, in time growing with
/// the line (PostgreSQL without autovacuum: joins fell from 1,000/s to
/// 430/s over 16,000 entries).
fn entry_select(queue: &Queue) -> SelectStatement {
    let entries = &queue.entries;
    let (e, p) = (entry_alias(), partition_alias());
    let mut stmt = Query::select();
    for column in &entries.columns {
        stmt.column((e.clone(), col(&column.name)));
    }
    stmt.column((e.clone(), col(VERSION_COLUMN)));
    stmt.column((p.clone(), col(columns::CALLED_UPTO)));
    stmt.column((p.clone(), col(columns::CALL_INTERVAL_MS)));
    let l = Alias::new("l");
    let left_ahead = Query::select()
        .expr(Func::count(Expr::col(Asterisk)))
        .from_as(col(&entries.name), l.clone())
        .and_where(
            Expr::col((l.clone(), col(columns::PARTITION_KEY)))
                .equals((e.clone(), col(columns::PARTITION_KEY))),
        )
        // A literal, not a parameter: the planner then knows from the
        // statistics that few entries have left.
        .and_where(
            Expr::col((l.clone(), col(columns::STATUS)))
                .eq(Expr::cust(format!("'{}'", Status::Left.as_str()))),
        )
        .and_where(
            Expr::col((l.clone(), col(columns::TICKET)))
                .gt(Expr::col((p.clone(), col(columns::CALLED_UPTO)))),
        )
        .and_where(
            Expr::col((l.clone(), col(columns::TICKET)))
                .lt(Expr::col((e.clone(), col(columns::TICKET)))),
        )
        .to_owned();
    stmt.expr(Expr::SubQuery(
        None,
        Box::new(sea_query::SubQueryStatement::SelectStatement(left_ahead)),
    ));
    stmt.from_as(col(&entries.name), e.clone()).join_as(
        sea_query::JoinType::InnerJoin,
        col(&queue.partitions.name),
        p.clone(),
        Expr::col((p, col(columns::PARTITION_KEY))).equals((e, col(columns::PARTITION_KEY))),
    );
    stmt
}

/// A statement that must not keep a plan made for other data (see
/// [`Backend::CACHES_PLANS`]).
fn planned_each_time<B: Backend>(
    q: String,
    v: SqlxValues,
) -> sqlx::query::Query<'static, B::Db, SqlxValues>
where
    SqlxValues: IntoArguments<B::Db>,
{
    sqlx::query_with(sql(q), v).persistent(!B::CACHES_PLANS)
}

/// A failed attempt of a queue transaction: worth running again (the
/// database chose it as a deadlock or serialization victim and rolled it
/// back), or final.
enum Attempt {
    /// Rolled back by the database; running it again may succeed.
    Again(ApiError),
    /// The answer.
    Final(ApiError),
}

impl From<ApiError> for Attempt {
    fn from(e: ApiError) -> Self {
        Attempt::Final(e)
    }
}

impl Attempt {
    /// The error to answer with, once no attempt is left.
    fn into_error(self) -> ApiError {
        match self {
            Attempt::Again(e) | Attempt::Final(e) => e,
        }
    }
}

/// Attempts of one transition before its deadlock is answered with 503.
const ATTEMPTS: u32 = 5;

/// Runs a transition until it is not a deadlock victim (at most [`ATTEMPTS`]
/// times, with a short growing pause), answering with its result.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut tries = 1;
        loop {
            match $attempt.await {
                Err(Attempt::Again(_)) if tries < ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(tries) * 5))
                        .await;
                    tries += 1;
                }
                other => break other.map_err(Attempt::into_error),
            }
        }
    }};
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
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
    /// A driver error as an attempt's failure.
    fn db(&self, e: sqlx::Error) -> Attempt {
        let transient = self.backend.classify(&self.model, &e) == Failure::Transient;
        let error = self.unavailable_or_internal(e);
        if transient {
            Attempt::Again(error)
        } else {
            Attempt::Final(error)
        }
    }

    /// Decodes a row of [`entry_select`].
    fn decode_entry(
        &self,
        queue: &Queue,
        row: &<B::Db as Database>::Row,
    ) -> Result<Entry, ApiError> {
        let stored = self.backend.decode(&queue.entries, row)?;
        let n = queue.entries.columns.len() + 1;
        let called_upto: i64 = row.try_get(n).map_err(ApiError::internal)?;
        let interval_ms: Option<i64> = row.try_get(n + 1).map_err(ApiError::internal)?;
        let left_ahead: i64 = row.try_get(n + 2).map_err(ApiError::internal)?;
        Ok(entry_of(stored, called_upto, left_ahead, interval_ms))
    }

    /// One entry by id on `conn`, with its position.
    async fn read_entry(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
    ) -> Result<Option<Entry>, Attempt> {
        let d = &self.backend;
        let mut stmt = entry_select(queue);
        stmt.and_where(
            Expr::col((entry_alias(), col("id"))).eq(Expr::val(d.bind(id, Scalar::Uuid))),
        );
        if let Some(scope) = scope {
            within_scope(d, queue, &mut stmt, scope);
        }
        let (q, v) = d.build_select(&stmt);
        let row = planned_each_time::<B>(q, v)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(row.map(|r| self.decode_entry(queue, &r)).transpose()?)
    }

    /// Locks a partition's counter row (the line's lock) and reads it, or
    /// `None` when the partition has never had an entry.
    async fn lock_partition(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        queue: &Queue,
        key: &str,
    ) -> Result<Option<StoredRow>, Attempt> {
        let d = &self.backend;
        let cond = Condition::Compare {
            column: columns::PARTITION_KEY.to_owned(),
            op: Compare::Eq,
            value: text(key),
        };
        let mut stmt = super::select(d, &queue.partitions, &cond, &[], Some(1), 0);
        stmt.lock(LockType::Update);
        let (q, v) = d.build_select(&stmt);
        let row = sqlx::query_with(sql(q), v)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(row.map(|r| d.decode(&queue.partitions, &r)).transpose()?)
    }

    /// Entries of this line still `serving` `serve_timeout` after their call
    /// become `no_show`; how many did.
    async fn expire_on(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        queue: &Queue,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, Attempt> {
        let Some(timeout) = queue.serve_timeout else {
            return Ok(0);
        };
        let d = &self.backend;
        let deadline = now - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let at = |t| Expr::val(d.bind(&Value::Timestamp(t), Scalar::Timestamp));
        let mut stmt = Query::update();
        stmt.table(col(&queue.entries.name))
            .value(col(columns::STATUS), Status::NoShow.as_str())
            .value(col(columns::ENDED_AT), at(now))
            .value(col("updated_at"), at(now))
            .value(col(VERSION_COLUMN), Expr::col(col(VERSION_COLUMN)).add(1))
            .and_where(
                Expr::col(col(columns::PARTITION_KEY))
                    .eq(Expr::val(d.bind(&text(key), Scalar::Text))),
            )
            .and_where(Expr::col(col(columns::STATUS)).eq(Status::Serving.as_str()))
            .and_where(Expr::col(col(columns::CALLED_AT)).lt(at(deadline)));
        let (q, v) = d.build_update(&stmt);
        let done = sqlx::query_with(sql(q), v)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(B::rows_affected(&done))
    }

    /// After a member row was updated in `conn`'s transaction: for every
    /// queue with `on_member_change = "leave"`, the member's waiting entry
    /// leaves its line if the member's partition values changed.
    pub(super) async fn member_changed(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        plan: &crate::plan::UpdatePlan<'_>,
        member_row: &StoredRow,
    ) -> Result<(), ApiError> {
        let model = self.model.clone();
        let queues = model.queues.values().filter(|q| {
            q.member == plan.resource.name
                && q.on_member_change == crate::schema::queue::MemberChange::Leave
                && !q.partition_by.is_empty()
        });
        for queue in queues {
            let d = &self.backend;
            let mine = Condition::All(vec![
                Condition::Compare {
                    column: columns::ACTIVE_MEMBER.to_owned(),
                    op: Compare::Eq,
                    value: plan.id.clone(),
                },
                Condition::Compare {
                    column: columns::STATUS.to_owned(),
                    op: Compare::Eq,
                    value: text(Status::Waiting.as_str()),
                },
            ]);
            let (q, v) = d.build_select(&super::select(d, &queue.entries, &mine, &[], Some(1), 0));
            let Some(row) = sqlx::query_with(sql(q), v)
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| self.unavailable_or_internal(e))?
            else {
                continue;
            };
            let entry = d.decode(&queue.entries, &row)?;
            let old_key = partition_key_of(&entry);
            if partition_of(queue, member_row).key == old_key {
                continue;
            }
            let id = crate::value::from_json(
                queue.entries.id_column(),
                entry.values.get("id").unwrap_or(&serde_json::Value::Null),
            )
            .map_err(|e| ApiError::internal(e.message))?;
            let stamp = Stamp {
                now: match plan.set.get("updated_at") {
                    Some(Value::Timestamp(t)) => *t,
                    _ => crate::value::now(),
                },
                subject: match plan.set.get("updated_by") {
                    Some(Value::Text(s)) => Some(s.clone()),
                    _ => None,
                },
            };
            self.lock_partition(conn, queue, &old_key)
                .await
                .map_err(Attempt::into_error)?;
            let left = self
                .transition(
                    conn,
                    queue,
                    &id,
                    (Status::Waiting, Status::Left),
                    None,
                    &stamp,
                )
                .await
                .map_err(Attempt::into_error)?;
            if left {
                self.count_partition(conn, queue, &old_key, -1, None)
                    .await
                    .map_err(Attempt::into_error)?;
            }
        }
        Ok(())
    }

    /// Sets an entry's status (and the columns that go with it) if it is in
    /// `from`; whether it was.
    async fn transition(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        queue: &Queue,
        id: &Value,
        (from, to): (Status, Status),
        scope: Option<&Condition>,
        stamp: &Stamp,
    ) -> Result<bool, Attempt> {
        let d = &self.backend;
        let now = Expr::val(d.bind(&Value::Timestamp(stamp.now), Scalar::Timestamp));
        let subject = Expr::val(d.bind(
            &stamp.subject.clone().map_or(Value::Null, Value::Text),
            Scalar::Text,
        ));
        let mut stmt = Query::update();
        stmt.table(col(&queue.entries.name))
            .value(col(columns::STATUS), to.as_str())
            .value(col("updated_at"), now.clone())
            .value(col("updated_by"), subject.clone())
            .value(col(VERSION_COLUMN), Expr::col(col(VERSION_COLUMN)).add(1))
            .and_where(Expr::col(col("id")).eq(Expr::val(d.bind(id, Scalar::Uuid))))
            .and_where(Expr::col(col(columns::STATUS)).eq(from.as_str()));
        match to {
            Status::Serving => {
                stmt.value(col(columns::CALLED_AT), now)
                    .value(col(columns::SERVED_BY), subject);
            }
            _ => {
                stmt.value(col(columns::ENDED_AT), now);
            }
        }
        if let Some(scope) = scope {
            stmt.cond_where(super::condition(d, &queue.entries, scope));
        }
        let (q, v) = d.build_update(&stmt);
        let done = sqlx::query_with(sql(q), v)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(B::rows_affected(&done) == 1)
    }

    /// After a transition matched nothing: 404 or the entry's actual status.
    async fn why_not(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
    ) -> Result<Moved, Attempt> {
        Ok(match self.read_entry(conn, queue, id, scope).await? {
            None => Moved::NotFound,
            Some(entry) => Moved::WrongStatus(
                entry
                    .row
                    .values
                    .get(columns::STATUS)
                    .and_then(|s| s.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            ),
        })
    }

    /// Adds `delta` to the partition's waiting count (and sets `called_upto`).
    async fn count_partition(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        queue: &Queue,
        key: &str,
        delta: i64,
        called: Option<&Called>,
    ) -> Result<(), Attempt> {
        let d = &self.backend;
        let mut stmt = Query::update();
        stmt.table(col(&queue.partitions.name))
            .value(
                col(columns::WAITING),
                Expr::col(col(columns::WAITING)).add(delta),
            )
            .value(col(VERSION_COLUMN), Expr::col(col(VERSION_COLUMN)).add(1))
            .and_where(
                Expr::col(col(columns::PARTITION_KEY))
                    .eq(Expr::val(d.bind(&text(key), Scalar::Text))),
            );
        if let Some(called) = called {
            stmt.value(col(columns::CALLED_UPTO), called.ticket)
                .value(
                    col(columns::LAST_CALLED_AT),
                    Expr::val(d.bind(&Value::Timestamp(called.at), Scalar::Timestamp)),
                )
                .value(
                    col(columns::CALL_INTERVAL_MS),
                    Expr::val(d.bind(
                        &called.interval_ms.map_or(Value::Null, Value::Int),
                        Scalar::Int,
                    )),
                );
        }
        let (q, v) = d.build_update(&stmt);
        sqlx::query_with(sql(q), v)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// The active entry of a member, read after a join was refused for it.
    async fn active_entry_of(&self, queue: &Queue, member: &Value) -> Option<serde_json::Value> {
        let d = &self.backend;
        let active = Condition::Compare {
            column: columns::ACTIVE_MEMBER.to_owned(),
            op: Compare::Eq,
            value: member.clone(),
        };
        let (q, v) = d.build_select(&super::select(d, &queue.entries, &active, &[], Some(1), 0));
        let mut conn = self.reader().await.ok()?;
        let row = sqlx::query_with(sql(q), v)
            .fetch_optional(&mut *conn)
            .await
            .ok()
            .flatten()?;
        conn.finish();
        let stored = d.decode(&queue.entries, &row).ok()?;
        stored.values.get("id").cloned()
    }

    async fn join_once(&self, plan: &JoinPlan<'_>) -> Result<Joined, Attempt> {
        let d = &self.backend;
        let queue = plan.queue;
        let fail = |e| self.db(e);
        let mut conn = self.write_conn().await?;
        let mut tx = self.begin_write(&mut conn).await?;

        // The member and its partition values, read (and share-locked where
        // the database has row locks) inside this transaction, with whether
        // the queue is closed in the same round trip.
        let member = self.model.resource(&queue.member).ok_or_else(|| {
            ApiError::internal(format!("queue {} has no member resource", queue.name))
        })?;
        let mut cond = vec![Condition::Compare {
            column: member.id_column().name.clone(),
            op: Compare::Eq,
            value: plan.member.clone(),
        }];
        cond.extend(plan.member_scope.clone());
        let mut stmt = super::select(d, member, &Condition::All(cond), &[], Some(1), 0);
        stmt.expr(Expr::SubQuery(None, Box::new(self.closed(queue).into())))
            .lock(LockType::Share);
        let (q, v) = d.build_select(&stmt);
        let Some(row) = sqlx::query_with(sql(q), v)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?
        else {
            if !self.is_open_on(&mut tx, queue).await? {
                return Ok(Joined::Closed);
            }
            return Ok(Joined::NoMember);
        };
        let closed: i64 = row.try_get(member.columns.len() + 1).map_err(fail)?;
        if closed > 0 {
            return Ok(Joined::Closed);
        }
        let member_row = d.decode(member, &row)?;
        let partition = partition_of(queue, &member_row);
        if partition.key.chars().count() > crate::schema::queue::MAX_PARTITION_KEY {
            return Ok(Joined::PartitionTooLong);
        }
        // A member already in a line is refused by the unique index on the
        // insert below, and told which entry holds its place.
        let owner = member
            .owner_column()
            .and_then(|c| member_row.values.get(&c.name))
            .and_then(|v| v.as_str())
            .map_or(Value::Null, text);

        // The next ticket: the counter row is created or incremented, and
        // stays locked by this transaction until it commits.
        let mut insert = Query::insert();
        let mut names = vec![col(columns::PARTITION_KEY)];
        let mut vals = vec![Expr::val(d.bind(&text(&partition.key), Scalar::Text))];
        for (name, value) in &partition.values {
            names.push(col(name));
            let scalar = queue
                .partitions
                .column(name)
                .map_or(Scalar::Text, |c| c.scalar());
            vals.push(Expr::val(d.bind(value, scalar)));
        }
        names.extend([
            col(columns::LAST_TICKET),
            col(columns::CALLED_UPTO),
            col(columns::WAITING),
            col(VERSION_COLUMN),
        ]);
        vals.extend([
            Expr::val(1i64),
            Expr::val(0i64),
            Expr::val(1i64),
            Expr::val(1i64),
        ]);
        insert
            .into_table(col(&queue.partitions.name))
            .columns(names)
            .values_panic(vals)
            .on_conflict({
                // Qualified: PostgreSQL would read a bare name as ambiguous
                // between the row and EXCLUDED.
                let current = |c: &str| Expr::col((col(&queue.partitions.name), col(c)));
                OnConflict::column(col(columns::PARTITION_KEY))
                    .value(
                        col(columns::LAST_TICKET),
                        current(columns::LAST_TICKET).add(1),
                    )
                    .value(col(columns::WAITING), current(columns::WAITING).add(1))
                    .value(col(VERSION_COLUMN), current(VERSION_COLUMN).add(1))
                    .to_owned()
            });
        // Every round trip from here to the commit holds the line's lock:
        // the counters come back with the upsert where the database can
        // return them.
        let counters = [col(columns::LAST_TICKET), col(columns::WAITING)];
        let row = if B::RETURNING {
            insert.returning(Query::returning().columns(counters));
            let (q, v) = d.build_insert(&insert);
            sqlx::query_with(sql(q), v)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail)?
        } else {
            let (q, v) = d.build_insert(&insert);
            sqlx::query_with(sql(q), v)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            let mut select = Query::select();
            select
                .columns(counters)
                .from(col(&queue.partitions.name))
                .and_where(
                    Expr::col(col(columns::PARTITION_KEY))
                        .eq(Expr::val(d.bind(&text(&partition.key), Scalar::Text))),
                );
            let (q, v) = d.build_select(&select);
            sqlx::query_with(sql(q), v)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail)?
        };
        let ticket: i64 = row.try_get(0).map_err(fail)?;
        let waiting: i64 = row.try_get(1).map_err(fail)?;
        if let Some(capacity) = queue.capacity
            && u64::try_from(waiting).unwrap_or(0) > capacity
        {
            // A member already waiting is told where, rather than that the line is full.
            let _ = tx.rollback().await;
            drop(conn);
            return Ok(match self.active_entry_of(queue, &plan.member).await {
                Some(id) => Joined::AlreadyActive { id: Some(id) },
                None => Joined::Full { capacity },
            });
        }

        let mut entry = plan.row.clone();
        for (name, value) in &partition.values {
            entry.insert(name.clone(), value.clone());
        }
        entry.insert(columns::TICKET.to_owned(), Value::Int(ticket));
        entry.insert(columns::STATUS.to_owned(), text(Status::Waiting.as_str()));
        entry.insert(columns::PARTITION_KEY.to_owned(), text(&partition.key));
        entry.insert(columns::MEMBER_OWNER.to_owned(), owner);
        let id = entry.get("id").cloned().unwrap_or(Value::Null);
        // Inserted without reading it back (the read comes after the commit).
        let (q, v) = d.build_insert(&super::insert(d, &queue.entries, &entry, false));
        if let Err(e) = sqlx::query_with(sql(q), v).execute(&mut *tx).await {
            // Roll back and give the connection back before reading anything
            // else: the line's lock must not wait on the pool.
            let _ = tx.rollback().await;
            drop(conn);
            return match self.backend.classify(&self.model, &e) {
                Failure::Unique { .. } => Ok(Joined::AlreadyActive {
                    id: self.active_entry_of(queue, &plan.member).await,
                }),
                Failure::Transient => Err(self.db(e)),
                _ => Err(Attempt::Final(
                    self.write_error(e, &queue.entries, &[&entry]).await,
                )),
            };
        }
        tx.commit().await.map_err(fail)?;
        // Read back after the commit: the line's lock is not held for it,
        // and a position can only have moved forward since.
        let read = self.read_entry(&mut conn, queue, &id, None).await?;
        conn.settle().await?;
        Ok(read
            .map(Joined::Entry)
            .ok_or_else(|| ApiError::internal("a joined entry could not be read back"))?)
    }

    /// `SELECT COUNT(*)` of the queue's closed state rows: 1 when closed.
    /// Counted rather than decoded: a queue without a row is open.
    fn closed(&self, queue: &Queue) -> SelectStatement {
        let d = &self.backend;
        let mut stmt = Query::select();
        stmt.expr(Func::count(Expr::col(Asterisk)))
            .from(col(STATE_TABLE))
            .and_where(
                Expr::col(col("name")).eq(Expr::val(d.bind(&text(&queue.name), Scalar::Text))),
            )
            .and_where(
                Expr::col(col(columns::OPEN))
                    .eq(Expr::val(d.bind(&Value::Bool(false), Scalar::Bool))),
            );
        stmt
    }

    async fn is_open_on(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        queue: &Queue,
    ) -> Result<bool, Attempt> {
        let (q, v) = self.backend.build_select(&self.closed(queue));
        let closed: i64 = sqlx::query_scalar_with(sql(q), v)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(closed == 0)
    }

    /// Moves an entry `from → to` (leave: waiting → left; done and
    /// no-show: serving → …) and its line's counters: `waiting` by
    /// `waiting_delta`, the version always (the line's streams are told).
    async fn move_once(
        &self,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
        (from, to): (Status, Status),
        stamp: &Stamp,
    ) -> Result<Moved, Attempt> {
        let mut conn = self.write_conn().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let Some(entry) = self.read_entry(&mut tx, queue, id, scope).await? else {
            return Ok(Moved::NotFound);
        };
        let key = partition_key_of(&entry.row);
        // The line's lock, taken by the update of its counters (rolled back
        // below if the entry was not in `from`): one round trip fewer under
        // the lock than locking first.
        let waiting_delta = if from == Status::Waiting { -1 } else { 0 };
        self.count_partition(&mut tx, queue, &key, waiting_delta, None)
            .await?;
        if !self
            .transition(&mut tx, queue, id, (from, to), scope, stamp)
            .await?
        {
            return self.why_not(&mut tx, queue, id, scope).await;
        }
        if from == Status::Waiting && entry.position == Some(1) {
            self.settle_head(&mut tx, queue, &key).await?;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        let read = self.read_entry(&mut conn, queue, id, None).await?;
        conn.settle().await?;
        Ok(read.map_or(Moved::NotFound, Moved::Entry))
    }

    /// After the head of a line left: `called_upto` moves to just before
    /// the new head (every ticket up to it is no longer waiting: those
    /// called, and those that left), so positions count only the leavers
    /// behind the head, never every leaver since the last call (a line
    /// that nobody serves while people come and go would otherwise make
    /// each position read count more leavers). Under the line's lock.
    async fn settle_head(
        &self,
        conn: &mut <B::Db as Database>::Connection,
        queue: &Queue,
        key: &str,
    ) -> Result<(), Attempt> {
        let d = &self.backend;
        let this_line = || {
            Expr::col(col(columns::PARTITION_KEY)).eq(Expr::val(d.bind(&text(key), Scalar::Text)))
        };
        let head = Query::select()
            .expr(Func::min(Expr::col(col(columns::TICKET))))
            .from(col(&queue.entries.name))
            .and_where(this_line())
            .and_where(
                Expr::col(col(columns::STATUS))
                    .eq(Expr::cust(format!("'{}'", Status::Waiting.as_str()))),
            )
            .to_owned();
        let mut stmt = Query::update();
        stmt.table(col(&queue.partitions.name))
            .value(
                col(columns::CALLED_UPTO),
                Func::coalesce([
                    Expr::SubQuery(None, Box::new(head.into())).sub(1),
                    Expr::col(col(columns::LAST_TICKET)),
                ]),
            )
            .and_where(this_line());
        let (q, v) = d.build_update(&stmt);
        sqlx::query_with(sql(q), v)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn next_once(
        &self,
        queue: &Queue,
        partition: &Partition,
        scope: Option<&Condition>,
        stamp: &Stamp,
    ) -> Result<Option<Entry>, Attempt> {
        let d = &self.backend;
        let fail = |e| self.db(e);
        let mut conn = self.write_conn().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        let Some(counters) = self.lock_partition(&mut tx, queue, &partition.key).await? else {
            return Ok(None);
        };
        self.expire_on(&mut tx, queue, &partition.key, stamp.now)
            .await?;
        // The first in line the caller may serve (the serve rule's row
        // conditions), so a scoped server never claims another's entry.
        let waiting = Condition::All(
            [
                Condition::Compare {
                    column: columns::PARTITION_KEY.to_owned(),
                    op: Compare::Eq,
                    value: text(&partition.key),
                },
                Condition::Compare {
                    column: columns::STATUS.to_owned(),
                    op: Compare::Eq,
                    value: text(Status::Waiting.as_str()),
                },
            ]
            .into_iter()
            .chain(scope.cloned())
            .collect(),
        );
        let by_ticket = [crate::request::SortKey {
            column: columns::TICKET.to_owned(),
            direction: crate::request::Direction::Asc,
        }];
        let mut head = super::select(d, &queue.entries, &waiting, &by_ticket, Some(1), 0);
        head.lock(LockType::Update);
        let (q, v) = d.build_select(&head);
        let Some(row) = sqlx::query_with(sql(q), v)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?
        else {
            return Ok(None);
        };
        let head = d.decode(&queue.entries, &row)?;
        let id = crate::value::from_json(
            queue.entries.id_column(),
            head.values.get("id").unwrap_or(&serde_json::Value::Null),
        )
        .map_err(|e| ApiError::internal(e.message))?;
        let ticket = head
            .values
            .get(columns::TICKET)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        if !self
            .transition(
                &mut tx,
                queue,
                &id,
                (Status::Waiting, Status::Serving),
                None,
                stamp,
            )
            .await?
        {
            return Err(ApiError::internal("the head of the line changed under its lock").into());
        }
        let called = Called {
            ticket,
            at: stamp.now,
            interval_ms: call_interval(&counters, &head, stamp.now),
        };
        self.count_partition(&mut tx, queue, &partition.key, -1, Some(&called))
            .await?;
        tx.commit().await.map_err(fail)?;
        let read = self.read_entry(&mut conn, queue, &id, None).await?;
        conn.settle().await?;
        Ok(read)
    }

    async fn expire_once(
        &self,
        queue: &Queue,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, Attempt> {
        if queue.serve_timeout.is_none() {
            return Ok(0);
        }
        // Every line (a handful: one per partition value combination).
        let keys = self.line_versions(queue).await?;
        let mut expired = 0;
        for (key, _) in keys {
            let mut conn = self.write_conn().await?;
            let mut tx = self.begin_write(&mut conn).await?;
            self.lock_partition(&mut tx, queue, &key).await?;
            let n = self.expire_on(&mut tx, queue, &key, now).await?;
            if n > 0 {
                self.count_partition(&mut tx, queue, &key, 0, None).await?;
            }
            tx.commit().await.map_err(|e| self.db(e))?;
            conn.settle().await?;
            expired += n;
        }
        Ok(expired)
    }

    async fn set_open_once(&self, queue: &Queue, open: bool, stamp: &Stamp) -> Result<(), Attempt> {
        let d = &self.backend;
        let now = Expr::val(d.bind(&Value::Timestamp(stamp.now), Scalar::Timestamp));
        let subject = Expr::val(d.bind(
            &stamp.subject.clone().map_or(Value::Null, Value::Text),
            Scalar::Text,
        ));
        let mut insert = Query::insert();
        insert
            .into_table(col(STATE_TABLE))
            .columns([
                col("name"),
                col(columns::OPEN),
                col("updated_at"),
                col("updated_by"),
                col(VERSION_COLUMN),
            ])
            .values_panic([
                Expr::val(d.bind(&text(&queue.name), Scalar::Text)),
                Expr::val(d.bind(&Value::Bool(open), Scalar::Bool)),
                now.clone(),
                subject.clone(),
                Expr::val(1i64),
            ])
            .on_conflict(
                OnConflict::column(col("name"))
                    .value(
                        col(columns::OPEN),
                        Expr::val(d.bind(&Value::Bool(open), Scalar::Bool)),
                    )
                    .value(col("updated_at"), now)
                    .value(col("updated_by"), subject)
                    .value(
                        col(VERSION_COLUMN),
                        Expr::col((col(STATE_TABLE), col(VERSION_COLUMN))).add(1),
                    )
                    .to_owned(),
            );
        let (q, v) = d.build_insert(&insert);
        let mut conn = self.write_conn().await?;
        let mut tx = self.begin_write(&mut conn).await?;
        sqlx::query_with(sql(q), v)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        conn.settle().await?;
        Ok(())
    }
}

/// The line a member row belongs to: its partition values, as the entry
/// stores them.
fn partition_of(queue: &Queue, member_row: &StoredRow) -> Partition {
    let mut values = crate::request::Record::new();
    for column in queue.partition_columns() {
        let json = member_row
            .values
            .get(&column.name)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let value = crate::value::from_json(column, &json).unwrap_or(Value::Null);
        values.insert(column.name.clone(), value);
    }
    Partition::new(values)
}

/// What `next` records on the partition row.
struct Called {
    /// The claimed ticket (the new `called_upto`).
    ticket: i64,
    /// The claim's time (the new `last_called_at`).
    at: chrono::DateTime<chrono::Utc>,
    /// The new rolling call interval.
    interval_ms: Option<i64>,
}

/// The partition's rolling call interval after calling `head` at `now`: an
/// exponentially weighted mean of the time each call took to come, counted
/// from the later of the previous call and the head's join (time when nobody
/// waited is not service time). NULL until a second call.
fn call_interval(
    counters: &StoredRow,
    head: &StoredRow,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<i64> {
    let previous = counters
        .values
        .get(columns::CALL_INTERVAL_MS)
        .and_then(serde_json::Value::as_i64);
    let Some(last) = timestamp(counters, columns::LAST_CALLED_AT) else {
        return previous;
    };
    let since =
        timestamp(head, "created_at").map_or(last, |joined| std::cmp::Ord::max(joined, last));
    let sample = std::cmp::Ord::max((now - since).num_milliseconds(), 0);
    let alpha = crate::schema::queue::SERVICE_SMOOTHING;
    Some(match previous {
        None => sample,
        Some(mean) => (alpha * sample as f64 + (1.0 - alpha) * mean as f64).round() as i64,
    })
}

/// An entry row and its position from the partition's counter.
fn entry_of(row: StoredRow, called_upto: i64, left_ahead: i64, interval_ms: Option<i64>) -> Entry {
    let waiting =
        row.values.get(columns::STATUS).and_then(|s| s.as_str()) == Some(Status::Waiting.as_str());
    let ticket = row
        .values
        .get(columns::TICKET)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    let position = waiting.then(|| u64::try_from(ticket - called_upto - left_ahead).unwrap_or(1));
    // One mean call interval for everyone ahead and for this entry's own call.
    let estimated_wait_s = position
        .zip(interval_ms)
        .map(|(p, ms)| (p * u64::try_from(ms).unwrap_or(0)).div_ceil(1000));
    Entry {
        row,
        position,
        estimated_wait_s,
    }
}

#[async_trait]
impl<B> QueueStore for SqlStorage<B>
where
    B: Backend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'c> &'c Pool<B::Db>: Executor<'c, Database = B::Db>,
    SqlxValues: IntoArguments<B::Db>,
    i64: sqlx::Type<B::Db> + for<'r> sqlx::Decode<'r, B::Db>,
    usize: sqlx::ColumnIndex<<B::Db as Database>::Row>,
{
    async fn join(&self, plan: &JoinPlan<'_>) -> Result<Joined, ApiError> {
        retrying!(self.join_once(plan))
    }

    async fn entry_by_key(
        &self,
        queue: &Queue,
        key: &str,
    ) -> Result<Option<(Entry, String)>, ApiError> {
        let d = &self.backend;
        let mut stmt = entry_select(queue);
        stmt.and_where(
            Expr::col((entry_alias(), col(columns::IDEMPOTENCY_KEY)))
                .eq(Expr::val(d.bind(&text(key), Scalar::Text))),
        );
        let (q, v) = d.build_select(&stmt);
        let mut conn = self.reader().await?;
        let row = planned_each_time::<B>(q, v)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.unavailable_or_internal(e))?;
        conn.finish();
        let Some(row) = row else {
            return Ok(None);
        };
        let entry = self.decode_entry(queue, &row)?;
        let hash = entry
            .row
            .values
            .get(columns::REQUEST_HASH)
            .and_then(|h| h.as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(Some((entry, hash)))
    }

    async fn entry(
        &self,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
    ) -> Result<Option<Entry>, ApiError> {
        let mut conn = self.reader().await?;
        let entry = self
            .read_entry(&mut conn, queue, id, scope)
            .await
            .map_err(Attempt::into_error)?;
        conn.finish();
        Ok(entry)
    }

    async fn line(
        &self,
        queue: &Queue,
        partition: &Partition,
        scope: Option<&Condition>,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Entry>, ApiError> {
        let d = &self.backend;
        let e = entry_alias();
        let mut stmt = entry_select(queue);
        stmt.and_where(
            Expr::col((e.clone(), col(columns::PARTITION_KEY)))
                .eq(Expr::val(d.bind(&text(&partition.key), Scalar::Text))),
        )
        .and_where(Expr::col((e.clone(), col(columns::STATUS))).eq(Status::Waiting.as_str()))
        .order_by((e.clone(), col(columns::TICKET)), Order::Asc)
        .limit(limit);
        if let Some(after) = after {
            stmt.and_where(Expr::col((e, col(columns::TICKET))).gt(after));
        }
        if let Some(scope) = scope {
            within_scope(d, queue, &mut stmt, scope);
        }
        let (q, v) = d.build_select(&stmt);
        let mut conn = self.acquire(&self.scanners).await?;
        let rows = planned_each_time::<B>(q, v)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.unavailable_or_internal(e))?;
        conn.finish();
        rows.iter().map(|r| self.decode_entry(queue, r)).collect()
    }

    async fn leave(
        &self,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
        stamp: &Stamp,
    ) -> Result<Moved, ApiError> {
        retrying!(self.move_once(queue, id, scope, (Status::Waiting, Status::Left), stamp))
    }

    async fn next(
        &self,
        queue: &Queue,
        partition: &Partition,
        scope: Option<&Condition>,
        stamp: &Stamp,
    ) -> Result<Option<Entry>, ApiError> {
        retrying!(self.next_once(queue, partition, scope, stamp))
    }

    async fn finish(
        &self,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
        to: Status,
        stamp: &Stamp,
    ) -> Result<Moved, ApiError> {
        retrying!(self.move_once(queue, id, scope, (Status::Serving, to), stamp))
    }

    async fn activity(
        &self,
        queue: &Queue,
        partition: &Partition,
        since: chrono::DateTime<chrono::Utc>,
        limit: u64,
    ) -> Result<Activity, ApiError> {
        let d = &self.backend;
        let fail = |e| self.unavailable_or_internal(e);
        let in_partition = || Condition::Compare {
            column: columns::PARTITION_KEY.to_owned(),
            op: Compare::Eq,
            value: text(&partition.key),
        };
        let mut conn = self.acquire(&self.scanners).await?;
        let (q, v) = d.build_select(&super::select(
            d,
            &queue.partitions,
            &in_partition(),
            &[],
            Some(1),
            0,
        ));
        let counters = sqlx::query_with(sql(q), v)
            .fetch_optional(&mut *conn)
            .await
            .map_err(fail)?
            .map(|r| d.decode(&queue.partitions, &r))
            .transpose()?;
        let number = |column: &str| {
            counters
                .as_ref()
                .and_then(|c| c.values.get(column))
                .and_then(serde_json::Value::as_i64)
        };
        let mut serving = Query::select();
        serving
            .expr(Func::count(Expr::col(Asterisk)))
            .from(col(&queue.entries.name))
            .and_where(
                Expr::col(col(columns::PARTITION_KEY))
                    .eq(Expr::val(d.bind(&text(&partition.key), Scalar::Text))),
            )
            .and_where(Expr::col(col(columns::STATUS)).eq(Status::Serving.as_str()));
        let (q, v) = d.build_select(&serving);
        let serving: i64 = sqlx::query_scalar_with(sql(q), v)
            .fetch_one(&mut *conn)
            .await
            .map_err(fail)?;
        let recent = Condition::All(vec![
            in_partition(),
            Condition::Compare {
                column: columns::CALLED_AT.to_owned(),
                op: Compare::Gte,
                value: Value::Timestamp(since),
            },
        ]);
        let newest_first = [crate::request::SortKey {
            column: columns::CALLED_AT.to_owned(),
            direction: crate::request::Direction::Desc,
        }];
        let (q, v) = d.build_select(&super::select(
            d,
            &queue.entries,
            &recent,
            &newest_first,
            Some(limit + 1),
            0,
        ));
        let rows = sqlx::query_with(sql(q), v)
            .fetch_all(&mut *conn)
            .await
            .map_err(fail)?;
        conn.finish();
        let truncated = rows.len() as u64 > limit;
        let calls = rows
            .iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|r| d.decode(&queue.entries, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Activity {
            waiting: number(columns::WAITING).unwrap_or(0),
            serving,
            interval_ms: number(columns::CALL_INTERVAL_MS),
            calls,
            truncated,
        })
    }

    async fn expire(
        &self,
        queue: &Queue,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, ApiError> {
        retrying!(self.expire_once(queue, now))
    }

    async fn is_open(&self, queue: &Queue) -> Result<bool, ApiError> {
        let mut conn = self.reader().await?;
        let open = self
            .is_open_on(&mut conn, queue)
            .await
            .map_err(Attempt::into_error)?;
        conn.finish();
        Ok(open)
    }

    async fn set_open(&self, queue: &Queue, open: bool, stamp: &Stamp) -> Result<(), ApiError> {
        retrying!(self.set_open_once(queue, open, stamp))
    }

    async fn line_versions(&self, queue: &Queue) -> Result<Vec<(String, i64)>, ApiError> {
        let d = &self.backend;
        let every = Condition::All(Vec::new());
        let (q, v) = d.build_select(&super::select(d, &queue.partitions, &every, &[], None, 0));
        let mut conn = self.reader().await?;
        let rows = sqlx::query_with(sql(q), v)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.unavailable_or_internal(e))?;
        conn.finish();
        rows.iter()
            .map(|row| {
                let line = d.decode(&queue.partitions, row)?;
                Ok((partition_key_of(&line), line.version))
            })
            .collect()
    }

    async fn announce(&self, payloads: Vec<String>) {
        if let Err(e) = B::announce(&self.writer, payloads).await {
            tracing::debug!(error = %e, "queue changes not announced; other instances poll");
        }
    }

    async fn subscribe(
        &self,
    ) -> Option<tokio::sync::mpsc::Receiver<crate::storage::queue::LineSignal>> {
        B::subscribe(&self.writer)
    }
}
