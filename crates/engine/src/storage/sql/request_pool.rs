//! The connections requests borrow on PostgreSQL and MySQL.
//!
//! sqlx's pool pings every connection it takes back, whatever its options:
//! one more round trip for every request, which halved what a primary-key
//! GET could do against `pgbench -S`. The ping is there for a connection
//! whose holder was dropped mid-statement (its stream unread, its rollback
//! unsent). Here the holder says when it is done with [`Lent::finish`]: a
//! finished connection goes straight back; one dropped unfinished (an error
//! path, a request cancelled mid-query) is pinged first, within
//! [`RELEASE_PING_LIMIT`], and closed if the ping fails or takes longer.
//!
//! The rest is what sqlx's pool does for us elsewhere: at most
//! `max_connections` lent at once, an acquire that gives up after the
//! acquire timeout (a 503), a ping for a connection idle past
//! `ping_after_idle`, and connections closed past their idle timeout or
//! lifetime. Connect options are read from the sqlx pool at each connect,
//! so the RDS IAM refresher that keeps that pool's token fresh keeps ours
//! fresh too; the sqlx pool still serves migrations and queue
//! notifications.
//!
//! A circuit breaker keeps an outage from costing every request the acquire
//! timeout: after [`CIRCUIT_THRESHOLD`] attempts in a row to open a
//! connection fail, the circuit opens and requests that would need a new
//! connection fail at once (503) while one background probe tries to
//! connect every [`PROBE_EVERY`]; its first connection closes the circuit
//! and is lent to the next request.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::{ConnectOptions as _, Connection as _, Database};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::rds_iam::Refresher;

/// How long a connection dropped unfinished may take to answer its ping
/// before it is closed instead of lent again.
pub(crate) const RELEASE_PING_LIMIT: Duration = Duration::from_secs(5);

/// Failed attempts in a row to open a connection that open the circuit.
pub(crate) const CIRCUIT_THRESHOLD: u32 = 3;

/// How often an open circuit's probe tries to connect.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Runs on every new connection before it is first lent (MySQL's session
/// settings).
pub(crate) type Prepare<DB> = Arc<
    dyn for<'c> Fn(&'c mut <DB as Database>::Connection) -> BoxFuture<'c, Result<(), sqlx::Error>>
        + Send
        + Sync,
>;

/// The limits of a [`RequestPool`], from [`crate::storage::ConnectOptions`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) ping_after_idle: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_lifetime: Duration,
}

impl From<&crate::storage::ConnectOptions> for Limits {
    fn from(o: &crate::storage::ConnectOptions) -> Self {
        Limits {
            max_connections: Ord::max(o.max_connections, 1),
            acquire_timeout: o.acquire_timeout,
            ping_after_idle: o.ping_after_idle,
            idle_timeout: o.idle_timeout,
            max_lifetime: o.max_lifetime,
        }
    }
}

/// Connections lent to requests; cheap to clone.
pub(crate) struct RequestPool<DB: Database>(Arc<Shared<DB>>);

impl<DB: Database> Clone for RequestPool<DB> {
    fn clone(&self) -> Self {
        RequestPool(self.0.clone())
    }
}

struct Shared<DB: Database> {
    /// Where connect options come from (kept fresh by `tokens`).
    options: sqlx::Pool<DB>,
    tokens: Option<Arc<Refresher<DB>>>,
    prepare: Option<Prepare<DB>>,
    limits: Limits,
    permits: Arc<Semaphore>,
    /// Newest last: the busiest connections are reused, the oldest age out.
    idle: Mutex<Vec<Idle<DB>>>,
    /// Failed attempts in a row to open a connection.
    failures: AtomicU32,
    /// Since when the circuit is open (`None`: closed).
    open_since: Mutex<Option<Instant>>,
}

struct Idle<DB: Database> {
    conn: DB::Connection,
    opened: Instant,
    since: Instant,
}

impl<DB: Database> RequestPool<DB> {
    /// A pool opening connections with `options`' connect options, running
    /// `prepare` on each new one.
    pub(crate) fn new(
        options: sqlx::Pool<DB>,
        tokens: Option<Arc<Refresher<DB>>>,
        prepare: Option<Prepare<DB>>,
        limits: Limits,
    ) -> Self {
        let shared = Arc::new(Shared {
            options,
            tokens,
            prepare,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections as usize)),
            idle: Mutex::new(Vec::new()),
            failures: AtomicU32::new(0),
            open_since: Mutex::new(None),
        });
        reap_idle(Arc::downgrade(&shared), limits.idle_timeout);
        RequestPool(shared)
    }

    /// A connection, once one is free: an idle one (pinged if it sat idle
    /// past `ping_after_idle`) or a new one. Fails with
    /// [`sqlx::Error::PoolTimedOut`] after the acquire timeout, or with the
    /// error that opening a connection met.
    pub(crate) async fn acquire(&self) -> Result<Lent<DB>, sqlx::Error> {
        let shared = &self.0;
        // An open circuit answers at once, without queueing for a permit,
        // unless a connection is at hand.
        if let Some(since) = shared.open_since()
            && shared.lock_idle().is_empty()
        {
            return Err(circuit_open(since));
        }
        let deadline = tokio::time::Instant::now() + shared.limits.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, shared.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        while let Some(mut idle) = shared.take_idle() {
            if idle.opened.elapsed() >= shared.limits.max_lifetime {
                close(idle.conn);
                continue;
            }
            if idle.since.elapsed() >= shared.limits.ping_after_idle
                && !matches!(
                    tokio::time::timeout_at(deadline, idle.conn.ping()).await,
                    Ok(Ok(()))
                )
            {
                // Dead while idle (a restarted server, a dropped firewall
                // entry): replaced, not handed to the request.
                continue;
            }
            return Ok(Lent::new(shared, idle.conn, idle.opened, permit));
        }
        if let Some(since) = shared.open_since() {
            return Err(circuit_open(since));
        }
        let opened = Instant::now();
        match tokio::time::timeout_at(deadline, shared.connect()).await {
            Ok(Ok(conn)) => {
                shared.connected();
                Ok(Lent::new(shared, conn, opened, permit))
            }
            Ok(Err(e)) => {
                shared.failed_to_connect();
                Err(e)
            }
            Err(_) => {
                shared.failed_to_connect();
                Err(sqlx::Error::PoolTimedOut)
            }
        }
    }

    /// Since when the circuit has been open, if it is (for tests and
    /// diagnostics).
    #[cfg(test)]
    pub(crate) fn circuit_open_since(&self) -> Option<Instant> {
        self.0.open_since()
    }

    /// Connections open and not lent (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.0.lock_idle().len()
    }
}

/// The error of a request refused while the circuit is open.
fn circuit_open(since: Instant) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!(
            "the database has been unreachable for {:.1} s ({CIRCUIT_THRESHOLD} attempts in a row to connect failed): requests fail at once until a background probe reconnects",
            since.elapsed().as_secs_f64()
        ),
    ))
}

impl<DB: Database> Shared<DB> {
    /// A new connection, prepared.
    async fn connect(&self) -> Result<DB::Connection, sqlx::Error> {
        if let Some(tokens) = &self.tokens {
            tokens.refresh_if_stale();
        }
        let mut conn = self.options.connect_options().connect().await?;
        if let Some(prepare) = &self.prepare {
            prepare(&mut conn).await?;
        }
        Ok(conn)
    }

    fn open_since(&self) -> Option<Instant> {
        // Every request asks: a closed circuit answers from the counter,
        // without the lock (it opens only past the threshold, and a probe's
        // success resets the counter as it closes it).
        if self.failures.load(Ordering::Relaxed) < CIRCUIT_THRESHOLD {
            return None;
        }
        *self.open_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failed attempt to connect; the one that reaches the
    /// threshold opens the circuit and starts its probe.
    fn failed_to_connect(self: &Arc<Self>) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < CIRCUIT_THRESHOLD {
            return;
        }
        {
            let mut open = self.open_since.lock().unwrap_or_else(|p| p.into_inner());
            if open.is_some() {
                return;
            }
            *open = Some(Instant::now());
        }
        tracing::warn!(
            failures,
            "the database is unreachable: requests fail at once while a probe reconnects"
        );
        probe(Arc::downgrade(self));
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle<DB>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_idle(&self) -> Option<Idle<DB>> {
        self.lock_idle().pop()
    }

    fn give_back(&self, conn: DB::Connection, opened: Instant) {
        if opened.elapsed() >= self.limits.max_lifetime {
            close(conn);
            return;
        }
        self.lock_idle().push(Idle {
            conn,
            opened,
            since: Instant::now(),
        });
    }
}

/// Tries to connect every [`PROBE_EVERY`] (each attempt bounded by the
/// acquire timeout) until one succeeds, which closes the circuit and leaves
/// the connection idle for the next request; stops when the pool is gone.
fn probe<DB: Database>(shared: Weak<Shared<DB>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let Some(pool) = shared.upgrade() else {
                return;
            };
            let limit = pool.limits.acquire_timeout;
            if let Ok(Ok(conn)) = tokio::time::timeout(limit, pool.connect()).await {
                let down = pool.open_since().map(|s| s.elapsed());
                pool.give_back(conn, Instant::now());
                pool.connected();
                *pool.open_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(?down, "the database answers again: the circuit is closed");
                return;
            }
        }
    });
}

/// Closes idle connections past the idle timeout, checking as often as
/// the timeout is long (at most once a minute), until the pool is gone.
fn reap_idle<DB: Database>(shared: Weak<Shared<DB>>, idle_timeout: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let every = idle_timeout.clamp(Duration::from_secs(1), Duration::from_secs(60));
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let expired: Vec<Idle<DB>> = {
                let mut idle = shared.lock_idle();
                // Oldest first: the expired ones are a prefix.
                let keep = idle
                    .iter()
                    .position(|i| i.since.elapsed() < idle_timeout)
                    .unwrap_or(idle.len());
                idle.drain(..keep).collect()
            };
            for idle in expired {
                close(idle.conn);
            }
        }
    });
}

/// Closes `conn` politely (the server sees a goodbye, not a dropped socket)
/// without making anyone wait for it.
fn close<C: sqlx::Connection>(conn: C) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let closing = conn.close();
        runtime.spawn(async move {
            let _ = tokio::time::timeout(RELEASE_PING_LIMIT, closing).await;
        });
    }
}

/// A connection lent to one request. Call [`Lent::finish`] once its last
/// statement completed; dropped without, it is checked before reuse.
pub(crate) struct Lent<DB: Database> {
    conn: Option<DB::Connection>,
    opened: Instant,
    finished: bool,
    shared: Arc<Shared<DB>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<DB: Database> Lent<DB> {
    fn new(
        shared: &Arc<Shared<DB>>,
        conn: DB::Connection,
        opened: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Lent {
            conn: Some(conn),
            opened,
            finished: false,
            shared: shared.clone(),
            permit: Some(permit),
        }
    }

    /// Says every statement run on this connection completed and every
    /// transaction ended: it goes back without a ping.
    pub(crate) fn finish(mut self) {
        self.finished = true;
    }
}

impl<DB: Database> std::ops::Deref for Lent<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        self.conn
            .as_ref()
            .expect("a lent connection is held until dropped")
    }
}

impl<DB: Database> std::ops::DerefMut for Lent<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn
            .as_mut()
            .expect("a lent connection is held until dropped")
    }
}

impl<DB: Database> Drop for Lent<DB> {
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        if self.finished && !conn.is_in_transaction() {
            self.shared.give_back(conn, self.opened);
            drop(permit);
            return;
        }
        // Unfinished: a stream may be unread or a rollback unsent. The ping
        // flushes both (sqlx drains a connection before its next command);
        // the permit is held until then, so the pool never lends more than
        // its size.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        let opened = self.opened;
        runtime.spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(RELEASE_PING_LIMIT, conn.ping()).await {
                shared.give_back(conn, opened);
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    //! The pool's own rules, on private in-memory SQLite connections: each
    //! is a database of its own, so a table created on one shows which
    //! connection a later borrower got (PostgreSQL and MySQL run it in
    //! `tests/distributed.rs`).

    use super::*;
    use sqlx::{Executor as _, Sqlite};

    async fn pool(limits: Limits) -> RequestPool<Sqlite> {
        let options = sqlx::pool::PoolOptions::<Sqlite>::new()
            // A private cache: every connection is a database of its own.
            .connect_lazy("sqlite://?mode=memory&cache=private")
            .expect("lazy in-memory pool");
        RequestPool::new(options, None, None, limits)
    }

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(200),
            ping_after_idle: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1800),
        }
    }

    async fn has_marker(conn: &mut Lent<Sqlite>) -> bool {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE name = 'marker'")
                .fetch_optional(&mut **conn)
                .await
                .expect("query the schema");
        found.is_some()
    }

    #[tokio::test]
    async fn a_finished_connection_goes_straight_back_and_is_lent_again() {
        let pool = pool(limits()).await;
        let mut conn = pool.acquire().await.expect("first");
        conn.execute("CREATE TABLE marker (x)").await.expect("mark");
        conn.finish();
        // Back at once, not after a ping in the background.
        assert_eq!(pool.idle_count(), 1);
        let mut again = pool.acquire().await.expect("second");
        assert!(
            has_marker(&mut again).await,
            "a different connection was lent"
        );
    }

    #[tokio::test]
    async fn a_connection_dropped_mid_transaction_comes_back_rolled_back() {
        let pool = pool(limits()).await;
        let mut conn = pool.acquire().await.expect("first");
        conn.execute("CREATE TABLE marker (x)").await.expect("mark");
        let mut tx = conn.begin().await.expect("begin");
        tx.execute("INSERT INTO marker VALUES (1)")
            .await
            .expect("insert");
        // A request cancelled here: its transaction and connection are
        // dropped, in that order, without finish.
        drop(tx);
        drop(conn);
        let mut again = pool.acquire().await.expect("after the ping");
        assert!(has_marker(&mut again).await, "the connection was replaced");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM marker")
            .fetch_one(&mut *again)
            .await
            .expect("count");
        assert_eq!(rows, 0, "the abandoned transaction's insert survived");
        assert!(!again.is_in_transaction());
    }

    #[tokio::test]
    async fn a_connection_finished_inside_a_transaction_is_not_trusted() {
        let pool = pool(limits()).await;
        let mut conn = pool.acquire().await.expect("first");
        let mut tx = conn.begin().await.expect("begin");
        tx.execute("CREATE TABLE marker (x)").await.expect("mark");
        std::mem::forget(tx);
        assert!(conn.is_in_transaction());
        conn.finish();
        // Not put back as clean: it waits for its ping.
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_borrower_past_the_size_waits_then_gets_pool_timed_out() {
        let pool = pool(limits()).await;
        let held = pool.acquire().await.expect("first");
        let started = Instant::now();
        let refused = pool.acquire().await.err().expect("a second one was lent");
        assert!(matches!(refused, sqlx::Error::PoolTimedOut), "{refused:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        held.finish();
        pool.acquire().await.expect("free again");
    }

    #[tokio::test]
    async fn a_connection_past_its_lifetime_is_replaced() {
        let pool = pool(Limits {
            max_lifetime: Duration::from_millis(50),
            ..limits()
        })
        .await;
        let mut conn = pool.acquire().await.expect("first");
        conn.execute("CREATE TABLE marker (x)").await.expect("mark");
        conn.finish();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let mut again = pool.acquire().await.expect("second");
        assert!(
            !has_marker(&mut again).await,
            "an expired connection was lent"
        );
    }

    #[tokio::test]
    async fn a_connection_idle_past_ping_after_idle_is_pinged_and_lent() {
        let pool = pool(Limits {
            ping_after_idle: Duration::ZERO,
            ..limits()
        })
        .await;
        let mut conn = pool.acquire().await.expect("first");
        conn.execute("CREATE TABLE marker (x)").await.expect("mark");
        conn.finish();
        let mut again = pool.acquire().await.expect("second");
        assert!(
            has_marker(&mut again).await,
            "a live connection was replaced"
        );
    }

    #[tokio::test]
    async fn after_three_failed_connects_requests_fail_at_once_until_the_probe_reconnects() {
        let missing = std::env::temp_dir().join(format!(
            "anteroom-circuit-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let options = sqlx::pool::PoolOptions::<Sqlite>::new()
            .connect_lazy(&format!(
                "sqlite://{}/db.sqlite?mode=rwc",
                missing.display()
            ))
            .expect("lazy pool");
        let pool = RequestPool::new(options, None, None, limits());
        // The directory is missing: every connect fails, and the third opens
        // the circuit.
        for attempt in 1..=CIRCUIT_THRESHOLD {
            assert!(pool.circuit_open_since().is_none(), "open after {attempt}");
            let error = pool.acquire().await.err().expect("no database yet");
            assert!(!error.to_string().contains("unreachable"), "{error}");
        }
        assert!(pool.circuit_open_since().is_some());
        let error = pool.acquire().await.err().expect("circuit open");
        assert!(
            error
                .to_string()
                .contains("requests fail at once until a background probe reconnects"),
            "{error}"
        );
        // The database comes back: the probe closes the circuit by itself,
        // and its connection is the next one lent.
        std::fs::create_dir(&missing).expect("create the directory");
        let waited = Instant::now();
        while pool.circuit_open_since().is_some() {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the probe never reconnected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.idle_count(), 1);
        pool.acquire().await.expect("connected again").finish();
        let _ = std::fs::remove_dir_all(&missing);
    }
}
