//! Group commit for a database written through one connection (SQLite).
//!
//! Concurrent writes share one transaction. Each request runs its statements
//! in a savepoint of its own, so a failing statement rolls back only that
//! request, and a request is answered only once the transaction holding its
//! write has committed: durability is what it was with one transaction per
//! request, and the commit (SQLite's WAL append and lock hand-over) is paid
//! once per group instead of once per request.
//!
//! The connection sits behind a fair mutex. While one request writes, the
//! others queue for it; the first request of a group wakes a committer task,
//! which queues behind them and commits them all at once. A single writer
//! therefore commits alone, and 32 concurrent writers commit up to 32 at a
//! time, with no timer and no batch size to tune.
//!
//! When SQLite rolls a whole transaction back after an error (an interrupted
//! statement, a full disk), every write of the group is answered 503 and
//! the connection is replaced: nothing is acknowledged that was not committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection, Database, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

use super::{Backend, Deadline};
use crate::error::ApiError;

type Conn<B> = <<B as Backend>::Db as Database>::Connection;
type Options<B> = <Conn<B> as Connection>::Options;
type Manager<B> = <<B as Backend>::Db as Database>::TransactionManager;

/// The single writer connection, shared by group commit.
pub(super) struct GroupCommit<B: Backend> {
    slot: Arc<Mutex<Slot<B>>>,
    wake: Arc<Notify>,
    /// How long a write waits for its turn before a 503.
    patience: Duration,
    /// Groups committed so far (the slot's counter, readable without it).
    commits: Arc<AtomicU64>,
}

/// The writer connection and the group using it.
pub(super) struct Slot<B: Backend> {
    /// `None` once discarded after a failure: reopened by the next write.
    conn: Option<Conn<B>>,
    options: Options<B>,
    /// Bounds every statement of the group, per SQLite's progress handler.
    statement_timeout: Duration,
    /// The group's transaction is open.
    open: bool,
    deadline: Option<Deadline>,
    /// The requests whose writes the open transaction holds.
    acks: Vec<oneshot::Sender<Result<(), String>>>,
    /// A request left without settling: its savepoint was rolled back, and
    /// the database may have rolled the whole transaction back with it.
    dirty: bool,
    /// A request wrote outside a savepoint and then failed: the group's
    /// transaction holds a write nobody will acknowledge, so it must not
    /// commit.
    poisoned: bool,
    /// Groups committed so far.
    commits: Arc<AtomicU64>,
}

impl<B: Backend> GroupCommit<B> {
    /// Opens the writer connection and starts the committer.
    pub(super) async fn open(
        options: Options<B>,
        statement_timeout: Duration,
        patience: Duration,
    ) -> Result<Self, sqlx::Error> {
        let conn = options.connect().await?;
        let commits = Arc::new(AtomicU64::new(0));
        let slot = Arc::new(Mutex::new(Slot {
            conn: Some(conn),
            options,
            statement_timeout,
            open: false,
            deadline: None,
            acks: Vec::new(),
            dirty: false,
            poisoned: false,
            commits: commits.clone(),
        }));
        let wake = Arc::new(Notify::new());
        tokio::spawn(committer(Arc::downgrade(&slot), wake.clone()));
        Ok(GroupCommit {
            slot,
            wake,
            patience,
            commits,
        })
    }

    /// Waits for the writer and joins the open group (opening one if none is).
    pub(super) async fn join(&self) -> Result<Member<B>, ApiError> {
        let mut slot = tokio::time::timeout(self.patience, self.slot.clone().lock_owned())
            .await
            .map_err(|_| ApiError::Unavailable {
                cause: format!(
                    "no turn to write within {} ms: the writer is busy",
                    self.patience.as_millis()
                ),
            })?;
        slot.begin().await?;
        Ok(Member {
            slot: Some(slot),
            wake: self.wake.clone(),
        })
    }

    /// The writer with no group open, held until the guard is dropped
    /// (migrations run on their own connection meanwhile).
    pub(super) async fn pause(&self) -> OwnedMutexGuard<Slot<B>> {
        paused(self.slot.clone()).await
    }

    /// A handle that pauses the writer as [`GroupCommit::pause`] does, for
    /// as long as the group commit exists (SQLite's checkpointer).
    pub(super) fn pauser(&self) -> Pauser<B> {
        Pauser {
            slot: Arc::downgrade(&self.slot),
            commits: self.commits.clone(),
        }
    }
}

/// The writer once its open group committed, held until the guard drops.
async fn paused<B: Backend>(slot: Arc<Mutex<Slot<B>>>) -> OwnedMutexGuard<Slot<B>> {
    let mut slot = slot.lock_owned().await;
    slot.commit().await;
    slot
}

/// Pauses the writer of a [`GroupCommit`] that may be gone.
pub(super) struct Pauser<B: Backend> {
    slot: Weak<Mutex<Slot<B>>>,
    commits: Arc<AtomicU64>,
}

impl<B: Backend> Pauser<B> {
    /// The writer with no group open, held until the guard is dropped;
    /// `None` once the group commit was dropped.
    pub(super) async fn pause(&self) -> Option<OwnedMutexGuard<Slot<B>>> {
        Some(paused(self.slot.upgrade()?).await)
    }

    /// Whether the group commit was dropped.
    pub(super) fn is_gone(&self) -> bool {
        self.slot.strong_count() == 0
    }

    /// Groups committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

impl<B: Backend> Drop for GroupCommit<B> {
    fn drop(&mut self) {
        // The committer finds the slot gone and stops.
        self.wake.notify_one();
    }
}

impl<B: Backend> Slot<B> {
    /// Makes sure a group's transaction is open on a live connection.
    async fn begin(&mut self) -> Result<(), ApiError> {
        self.recover().await;
        if self.open {
            return Ok(());
        }
        let unavailable = |e: sqlx::Error| ApiError::Unavailable {
            cause: e.to_string(),
        };
        if self.conn.is_none() {
            self.conn = Some(self.options.connect().await.map_err(unavailable)?);
        }
        let timeout = self.statement_timeout;
        let Some(conn) = self.conn.as_mut() else {
            return Err(ApiError::internal("the writer connection vanished"));
        };
        let opened = async {
            let deadline = B::arm(conn, timeout).await?;
            Manager::<B>::begin(conn, B::BEGIN_WRITE.map(SqlSafeStr::into_sql_str)).await?;
            Ok::<_, sqlx::Error>(deadline)
        };
        match opened.await {
            Ok(deadline) => {
                self.open = true;
                self.deadline = deadline;
                Ok(())
            }
            Err(e) => {
                // Busy past the timeout, or broken: start afresh next time.
                self.conn = None;
                Err(unavailable(e))
            }
        }
    }

    /// After a request left without settling, checks that the group's
    /// transaction survived; if the database rolled it back, the group's
    /// writes are lost, and their requests are told so.
    async fn recover(&mut self) {
        let poisoned = std::mem::take(&mut self.poisoned);
        if !std::mem::take(&mut self.dirty) || !self.open {
            return;
        }
        let lost = poisoned
            || match &mut self.conn {
                Some(conn) => B::transaction_lost(conn).await,
                None => true,
            };
        if lost {
            self.fail("the database rolled back a group of writes after an error in one of them; retry the request");
        }
    }

    /// Commits the open group and answers its requests.
    async fn commit(&mut self) {
        self.recover().await;
        if !self.open {
            return;
        }
        let result = match &mut self.conn {
            Some(conn) => Manager::<B>::commit(conn).await,
            None => Err(sqlx::Error::WorkerCrashed),
        };
        self.open = false;
        self.deadline = None;
        match result {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                for ack in self.acks.drain(..) {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) => self.fail(&format!("commit failed: {e}")),
        }
    }

    /// Answers every request of the group with a 503 and discards the
    /// connection, whose transaction state is no longer known.
    fn fail(&mut self, cause: &str) {
        for ack in self.acks.drain(..) {
            let _ = ack.send(Err(cause.to_owned()));
        }
        self.conn = None;
        self.open = false;
        self.deadline = None;
    }
}

/// Commits whatever group is open each time it is woken, after the writes
/// queued before it (the mutex is fair).
async fn committer<B: Backend>(slot: Weak<Mutex<Slot<B>>>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(slot) = slot.upgrade() else {
            return;
        };
        slot.lock().await.commit().await;
    }
}

/// One request's turn on the writer, inside the open group.
pub(super) struct Member<B: Backend> {
    slot: Option<OwnedMutexGuard<Slot<B>>>,
    wake: Arc<Notify>,
}

impl<B: Backend> Member<B> {
    /// Leaves without settling after writing outside a savepoint: the
    /// group is rolled back and each of its writes answered 503.
    pub(super) fn poison(mut self) {
        if let Some(slot) = self.slot.as_mut() {
            slot.poisoned = true;
        }
    }

    /// Hands the writer on and waits until the group holding this request's
    /// write has committed. Called after the request's savepoint is released.
    pub(super) async fn settle(mut self) -> Result<(), ApiError> {
        let Some(mut slot) = self.slot.take() else {
            return Ok(());
        };
        let (ack, committed) = oneshot::channel();
        slot.acks.push(ack);
        drop(slot);
        self.wake.notify_one();
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(cause)) => Err(ApiError::Unavailable { cause }),
            Err(_) => Err(ApiError::Unavailable {
                cause: "the writer stopped before committing".to_owned(),
            }),
        }
    }
}

impl<B: Backend> Drop for Member<B> {
    fn drop(&mut self) {
        if let Some(mut slot) = self.slot.take() {
            slot.dirty = true;
            drop(slot);
            // The group may hold nobody else: commit it so that the
            // database's write lock is not held until the next write.
            self.wake.notify_one();
        }
    }
}

impl<B: Backend> std::ops::Deref for Member<B> {
    type Target = Conn<B>;
    fn deref(&self) -> &Conn<B> {
        self.slot
            .as_ref()
            .and_then(|s| s.conn.as_ref())
            .expect("a member holds a live connection until it settles")
    }
}

impl<B: Backend> std::ops::DerefMut for Member<B> {
    fn deref_mut(&mut self) -> &mut Conn<B> {
        self.slot
            .as_mut()
            .and_then(|s| s.conn.as_mut())
            .expect("a member holds a live connection until it settles")
    }
}
