//! Stage 3 for queues: the [`QueueStore`] trait, beside [`super::Storage`]
//! because its transitions are multi-statement transactions that hold row
//! locks, which the CRUD trait has no business knowing. One implementation
//! for the SQL databases lives in `sql::queue`.
//!
//! **Position.** The position of a waiting entry with ticket `t` is
//! 1 + the number of waiting entries of its partition with a smaller ticket.
//! Tickets are dense per partition (the counter is incremented in the join
//! transaction, and a rolled-back join rolls it back), and `next` always
//! claims the smallest waiting ticket, so every ticket up to the partition's
//! `called_upto` (the last call, moved on to just before the new head when
//! the head leaves) is no longer waiting. Hence
//! `position = t − called_upto − (entries that left with called_upto < ticket < t)`:
//! one primary-key read of the partition row and an index range count
//! bounded by the entries that left between the head and you, never a count
//! over the people waiting.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::StoredRow;
use crate::error::ApiError;
use crate::plan::Condition;
use crate::request::Record;
use crate::schema::queue::{Queue, Status};
use crate::value::Value;

/// The partition key an entry row holds: the line it is in.
pub(crate) fn partition_key_of(row: &StoredRow) -> String {
    row.values
        .get(crate::schema::queue::columns::PARTITION_KEY)
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// One line of a queue: the partition values and their canonical key.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// `[v1, v2, …]` as JSON text: the partition table's primary key.
    pub key: String,
    /// Partition column → value, in `partition_by` order.
    pub values: Record,
}

impl Partition {
    /// The partition of these values (in `partition_by` order).
    pub fn new(values: Record) -> Partition {
        let json: Vec<Json> = values.values().map(crate::value::to_json).collect();
        Partition {
            key: Json::Array(json).to_string(),
            values,
        }
    }
}

/// A timestamp column of a stored row (rendered RFC 3339), when set.
pub(crate) fn timestamp(row: &StoredRow, column: &str) -> Option<DateTime<Utc>> {
    let text = row.values.get(column)?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An entry as read, with its position while it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The entry row.
    pub row: StoredRow,
    /// 1 for the head of the line; `None` unless waiting.
    pub position: Option<u64>,
    /// `position ×` the line's rolling call interval, in seconds;
    /// `None` unless waiting or before the line's second call.
    pub estimated_wait_s: Option<u64>,
}

/// Who makes a transition, and when.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The transition's time.
    pub now: DateTime<Utc>,
    /// The caller's subject (`updated_by`, `served_by`).
    pub subject: Option<String>,
}

/// A join, planned: the member and the entry's client fields.
#[derive(Debug)]
pub struct JoinPlan<'m> {
    /// The queue.
    pub queue: &'m Queue,
    /// The joining member's id.
    pub member: Value,
    /// The member rows the caller may join with (`owner` rules).
    pub member_scope: Option<Condition>,
    /// The entry as completed by the planner: id, member, fields, audit
    /// columns, and the idempotency key and request hash when given.
    pub row: Record,
}

/// A join's `Idempotency-Key`, as stored: scoped to the caller, with a hash
/// of what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// `{len(subject)}:{subject}{key}`: the same key from two callers differs.
    pub stored: String,
    /// FNV-1a (64-bit, hex) of the canonical body.
    pub request_hash: String,
}

impl IdempotencyKey {
    /// The stored form of `key` sent by `subject` with `body` (the parsed
    /// join, in canonical JSON).
    pub fn new(subject: Option<&str>, key: &str, body: &Json) -> IdempotencyKey {
        let subject = subject.unwrap_or("");
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in body.to_string().bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        IdempotencyKey {
            stored: format!("{}:{subject}{key}", subject.len()),
            request_hash: format!("{hash:016x}"),
        }
    }
}

/// What a join did.
#[derive(Debug)]
pub enum Joined {
    /// A new waiting entry.
    Entry(Entry),
    /// The queue is closed.
    Closed,
    /// The member's partition already has `capacity` entries waiting.
    Full {
        /// The queue's capacity.
        capacity: u64,
    },
    /// No member row with that id that the caller may join with.
    NoMember,
    /// The member already has an active entry: its id.
    AlreadyActive {
        /// The active entry's id, when it could be read back.
        id: Option<Json>,
    },
    /// The member's partition values are too long to be a line's key.
    PartitionTooLong,
}

/// What a transition of one entry did.
#[derive(Debug)]
pub enum Moved {
    /// The entry after the transition.
    Entry(Entry),
    /// No entry with that id (or none the caller may touch).
    NotFound,
    /// The entry is not in the status the transition starts from: its status.
    WrongStatus(String),
}

/// What a partition's stats are computed from.
#[derive(Debug)]
pub struct Activity {
    /// Entries waiting (the partition's counter).
    pub waiting: i64,
    /// Entries being served.
    pub serving: i64,
    /// The rolling call interval, when there is one.
    pub interval_ms: Option<i64>,
    /// Entries called since the window's start, most recent first.
    pub calls: Vec<StoredRow>,
    /// Whether more calls than `calls` holds fell in the window.
    pub truncated: bool,
}

/// Queue operations, each one transaction.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Joins: checks the queue is open, reads the member (locked against a
    /// concurrent change) and its partition values, takes the next ticket
    /// from the partition's counter and inserts the entry; the database's
    /// unique index refuses a second active entry of the member.
    async fn join(&self, plan: &JoinPlan<'_>) -> Result<Joined, ApiError>;

    /// The entry a join with this idempotency key created, with the hash
    /// of that join's body.
    async fn entry_by_key(
        &self,
        queue: &Queue,
        key: &str,
    ) -> Result<Option<(Entry, String)>, ApiError>;

    /// One entry with its position.
    async fn entry(
        &self,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
    ) -> Result<Option<Entry>, ApiError>;

    /// The waiting entries of a partition in ticket order, after `after`
    /// (a ticket), at most `limit`.
    async fn line(
        &self,
        queue: &Queue,
        partition: &Partition,
        scope: Option<&Condition>,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Entry>, ApiError>;

    /// `waiting → left`.
    async fn leave(
        &self,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
        stamp: &Stamp,
    ) -> Result<Moved, ApiError>;

    /// Claims the head of a partition's line (`waiting → serving`); `None`
    /// when nobody waits. Claims of one partition are serialized by its
    /// counter row, so no entry is claimed twice and none is skipped.
    async fn next(
        &self,
        queue: &Queue,
        partition: &Partition,
        scope: Option<&Condition>,
        stamp: &Stamp,
    ) -> Result<Option<Entry>, ApiError>;

    /// `serving → done | no_show`.
    async fn finish(
        &self,
        queue: &Queue,
        id: &Value,
        scope: Option<&Condition>,
        to: Status,
        stamp: &Stamp,
    ) -> Result<Moved, ApiError>;

    /// A partition's counters and the entries called since `since` (at most
    /// `limit`, most recent first).
    async fn activity(
        &self,
        queue: &Queue,
        partition: &Partition,
        since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Activity, ApiError>;

    /// Entries `serving` past the queue's `serve_timeout` become `no_show`,
    /// on every line; how many did.
    async fn expire(&self, queue: &Queue, now: DateTime<Utc>) -> Result<u64, ApiError>;

    /// Whether the queue accepts joins.
    async fn is_open(&self, queue: &Queue) -> Result<bool, ApiError>;

    /// Opens or closes the queue.
    async fn set_open(&self, queue: &Queue, open: bool, stamp: &Stamp) -> Result<(), ApiError>;

    /// Every line of the queue with its version, which every transition of
    /// the line increments in its own transaction: what an instance polls to
    /// learn that another one changed a line.
    async fn line_versions(&self, queue: &Queue) -> Result<Vec<(String, i64)>, ApiError>;

    /// Tells the other instances that these lines changed (each a
    /// [`LineSignal::payload`]) when the database can push (PostgreSQL
    /// `NOTIFY`, all in one statement); nothing elsewhere, where instances
    /// poll [`QueueStore::line_versions`]. Best effort: a lost signal is
    /// caught by the next poll.
    async fn announce(&self, payloads: Vec<String>);

    /// The changes other instances [announce](QueueStore::announce), when
    /// the database can push; `None` when it cannot.
    async fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<LineSignal>>;
}

/// A change pushed by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineSignal {
    /// A line of `queue` changed (`key: None`: any of them).
    Changed {
        /// The queue.
        queue: String,
        /// The line's partition key.
        key: Option<String>,
    },
    /// The push channel was interrupted and is back: changes may have been missed.
    Lost,
}

impl LineSignal {
    /// The payload of a change (a queue name never holds a newline).
    pub(crate) fn payload(queue: &str, key: Option<&str>) -> String {
        match key {
            Some(key) => format!("{queue}\n{key}"),
            None => queue.to_owned(),
        }
    }

    /// The change a payload names.
    pub(crate) fn parse(payload: &str) -> LineSignal {
        match payload.split_once('\n') {
            Some((queue, key)) => LineSignal::Changed {
                queue: queue.to_owned(),
                key: Some(key.to_owned()),
            },
            None => LineSignal::Changed {
                queue: payload.to_owned(),
                key: None,
            },
        }
    }
}
