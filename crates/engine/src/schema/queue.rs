//! The model of a waiting-room queue (`[queues.NAME]`): who joins (a member
//! resource), how the line is split (partition fields copied from the member
//! at join time), who may do what, and the tables that hold it. A queue's
//! entries are a synthesized [`Resource`], so field parsing, validation, row
//! decoding, rendering and migrations are the ones resources use; only the
//! transitions between statuses are the queue's own (`storage::queue`).

use super::model::{Column, ColumnRole, Constraints, FieldType, IdKind, RefSpec, Resource, Rule};

/// Every status of an entry, in the order an entry may pass through them:
/// `waiting → serving → done | no_show`, and `waiting → left`.
pub const STATUSES: [&str; 5] = ["waiting", "serving", "done", "no_show", "left"];

/// The statuses of an entry that still holds its member's place: a member
/// has at most one entry in one of these per queue.
pub const ACTIVE_STATUSES: [&str; 2] = ["waiting", "serving"];

/// The status of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// In the line.
    Waiting,
    /// Claimed by `next`, being served.
    Serving,
    /// Served.
    Done,
    /// Called, but did not show up.
    NoShow,
    /// Left the line before being called.
    Left,
}

impl Status {
    /// The stored and rendered spelling (one of [`STATUSES`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => STATUSES[0],
            Status::Serving => STATUSES[1],
            Status::Done => STATUSES[2],
            Status::NoShow => STATUSES[3],
            Status::Left => STATUSES[4],
        }
    }
}

/// Column names of an entry that the engine maintains.
pub mod columns {
    /// The joining member's id (the only required body field of a join).
    pub const MEMBER: &str = "member_id";
    /// Per-partition ticket, from the partition's counter.
    pub const TICKET: &str = "ticket";
    /// One of [`super::STATUSES`].
    pub const STATUS: &str = "status";
    /// The subject that called the entry (`next`).
    pub const SERVED_BY: &str = "served_by";
    /// When `next` claimed it.
    pub const CALLED_AT: &str = "called_at";
    /// When it became done, no_show or left.
    pub const ENDED_AT: &str = "ended_at";
    /// The partition's values, canonically encoded: the line it is in.
    pub const PARTITION_KEY: &str = "partition_key";
    /// The subject owning the member row (what `owner` rules compare).
    pub const MEMBER_OWNER: &str = "member_owner";
    /// The member while active, NULL otherwise (uniquely indexed).
    pub const ACTIVE_MEMBER: &str = "active_member";
    /// The join's `Idempotency-Key`, prefixed by its subject (uniquely indexed).
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
    /// A hash of the join's body, to tell a retry from a reuse of its key.
    pub const REQUEST_HASH: &str = "request_hash";
    /// Partition counter: the last ticket issued.
    pub const LAST_TICKET: &str = "last_ticket";
    /// Partition counter: the ticket of the last entry `next` claimed.
    pub const CALLED_UPTO: &str = "called_upto";
    /// Partition counter: entries waiting.
    pub const WAITING: &str = "waiting";
    /// Partition: when `next` last claimed an entry.
    pub const LAST_CALLED_AT: &str = "last_called_at";
    /// Partition: the rolling mean time between two calls, in milliseconds
    /// (see [`super::SERVICE_SMOOTHING`]); NULL until a second call.
    pub const CALL_INTERVAL_MS: &str = "call_interval_ms";
    /// Queue state: whether joins are accepted.
    pub const OPEN: &str = "open";
}

/// Names a queue field may not take: the engine's columns of an entry.
pub const ENTRY_COLUMNS: [&str; 11] = [
    columns::MEMBER,
    columns::TICKET,
    columns::STATUS,
    columns::SERVED_BY,
    columns::CALLED_AT,
    columns::ENDED_AT,
    columns::PARTITION_KEY,
    columns::MEMBER_OWNER,
    columns::ACTIVE_MEMBER,
    columns::IDEMPOTENCY_KEY,
    columns::REQUEST_HASH,
];

/// Longest `Idempotency-Key` accepted, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// The engine's table of every queue's state (open or closed).
pub const STATE_TABLE: &str = "_anteroom_queues";

/// Weight of the newest sample in a partition's rolling call interval (an
/// exponentially weighted mean: about the last 10 calls count).
pub const SERVICE_SMOOTHING: f64 = 0.2;

/// Longest canonical partition key, in characters (it is a primary key).
pub const MAX_PARTITION_KEY: usize = 512;

/// Rules per queue action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRules {
    /// `POST /queues/{q}/entries`: `owner` means the caller owns the member row.
    pub join: Rule,
    /// `DELETE /queues/{q}/entries/{id}`.
    pub leave: Rule,
    /// Reading an entry, the line and the queue's state.
    pub view: Rule,
    /// `next`, `done`, `no-show`.
    pub serve: Rule,
    /// Opening and closing the queue.
    pub manage: Rule,
}

impl QueueRules {
    /// Every action public (no `[auth]`).
    pub fn public() -> Self {
        QueueRules {
            join: Rule::Public,
            leave: Rule::Public,
            view: Rule::Public,
            serve: Rule::Public,
            manage: Rule::Public,
        }
    }
}

/// One waiting-room queue.
#[derive(Debug, Clone)]
pub struct Queue {
    /// URL name (`/queues/{name}`).
    pub name: String,
    /// The resource whose rows join.
    pub member: String,
    /// Member fields copied onto the entry at join time; one line per
    /// distinct combination of their values.
    pub partition_by: Vec<String>,
    /// Most entries waiting in one partition, when limited.
    pub capacity: Option<u64>,
    /// A `serving` entry not finished this long after its call becomes
    /// `no_show` (checked by `next` on its line and by a sweep every
    /// [`Queue::sweep_every`] on each instance).
    pub serve_timeout: Option<std::time::Duration>,
    /// What a member's entry does when its partition fields change.
    pub on_member_change: MemberChange,
    /// Who may do what.
    pub rules: QueueRules,
    /// The entries table (named like the queue).
    pub entries: Resource,
    /// The per-partition counters table (`{name}_partitions`).
    pub partitions: Resource,
}

/// `on_member_change`: what an active entry does when the member's partition
/// fields change (a student changing major).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// A waiting entry leaves the line (status `left`), as the origin did.
    Leave,
    /// The entry stays in the line it joined.
    Stay,
}

impl Queue {
    /// How often each instance sweeps expired `serving` entries: a quarter of
    /// the timeout, at most 30 s and at least 1 s.
    pub fn sweep_every(&self) -> Option<std::time::Duration> {
        self.serve_timeout.map(|t| {
            (t / 4).clamp(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(30),
            )
        })
    }

    /// The partition columns of an entry, in `partition_by` order.
    pub fn partition_columns(&self) -> impl Iterator<Item = &Column> {
        self.partition_by
            .iter()
            .filter_map(|name| self.entries.column(name))
    }
}

fn maintained(name: &str, ty: FieldType, required: bool) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        role: ColumnRole::Maintained,
        constraints: Constraints {
            required,
            max_length: None,
            ..Constraints::default()
        },
        writable: None,
        hidden: false,
    }
}

fn hidden(mut column: Column) -> Column {
    column.hidden = true;
    column
}

fn text(name: &str, max_length: usize, required: bool) -> Column {
    let mut c = maintained(name, FieldType::String, required);
    c.constraints.max_length = Some(max_length);
    c
}

/// The type an entry stores a copy of a member field in: refs become their
/// key's plain type (a copy is not a reference: deleting a major must not
/// be blocked by the history of its line).
fn copied_type(column: &Column) -> (FieldType, Option<usize>) {
    match &column.ty {
        FieldType::Ref(r) => match r.key {
            IdKind::Uuid => (FieldType::Uuid, None),
            IdKind::Integer => (FieldType::Integer, None),
            IdKind::Key { max_length } => (FieldType::String, Some(max_length)),
        },
        other => (other.clone(), column.constraints.max_length),
    }
}

/// The entries resource of a queue: its id, the member reference, the
/// declared `fields`, the partition copies, the engine's columns and the
/// audit columns, with the index that answers positions and the unique
/// index that holds one active entry per member.
pub(crate) fn entries_resource(
    name: &str,
    member: &Resource,
    partition: &[&Column],
    fields: Vec<Column>,
    audit: Vec<Column>,
) -> Resource {
    let member_ref = FieldType::Ref(RefSpec {
        to: member.name.clone(),
        key: member.id_kind.clone(),
        on_delete: super::model::OnDelete::Restrict,
    });
    // The member's key type, not a reference: `member_id` holds the foreign
    // key, and a generated column cannot carry one on every database.
    let (active_ty, active_length) = copied_type(&Column {
        ty: member_ref.clone(),
        ..maintained(columns::ACTIVE_MEMBER, FieldType::Integer, false)
    });
    let mut columns = vec![
        Column {
            name: "id".to_owned(),
            ty: FieldType::Uuid,
            role: ColumnRole::Id,
            constraints: Constraints {
                required: true,
                ..Constraints::default()
            },
            writable: None,
            hidden: false,
        },
        Column {
            name: columns::MEMBER.to_owned(),
            ty: member_ref,
            role: ColumnRole::Field,
            constraints: Constraints {
                required: true,
                index: true,
                ..Constraints::default()
            },
            writable: None,
            hidden: false,
        },
    ];
    columns.extend(fields);
    for source in partition {
        let (ty, max_length) = copied_type(source);
        let mut copy = maintained(&source.name, ty, false);
        copy.constraints.max_length = max_length;
        columns.push(copy);
    }
    columns.extend([
        maintained(columns::TICKET, FieldType::Integer, true),
        // A short string rather than an enum: it is part of the position
        // index, and MySQL indexes only bounded strings.
        text(columns::STATUS, 16, true),
        text(columns::SERVED_BY, 255, false),
        maintained(columns::CALLED_AT, FieldType::Timestamp, false),
        maintained(columns::ENDED_AT, FieldType::Timestamp, false),
        hidden(text(columns::PARTITION_KEY, MAX_PARTITION_KEY, true)),
        hidden(Column {
            role: ColumnRole::Owner,
            ..text(columns::MEMBER_OWNER, 255, false)
        }),
        hidden(Column {
            name: columns::ACTIVE_MEMBER.to_owned(),
            ty: active_ty,
            role: ColumnRole::Active,
            constraints: Constraints {
                unique: true,
                max_length: active_length,
                ..Constraints::default()
            },
            writable: None,
            hidden: true,
        }),
        hidden(Column {
            constraints: Constraints {
                unique: true,
                max_length: Some(512),
                ..Constraints::default()
            },
            ..text(columns::IDEMPOTENCY_KEY, 512, false)
        }),
        hidden(text(columns::REQUEST_HASH, 16, false)),
    ]);
    columns.extend(audit);
    Resource {
        name: name.to_owned(),
        id_kind: IdKind::Uuid,
        columns,
        cache_control: None,
        indexes: vec![
            // Positions, the line and `next`.
            vec![
                columns::PARTITION_KEY.to_owned(),
                columns::STATUS.to_owned(),
                columns::TICKET.to_owned(),
            ],
            // Stats over a recent window of calls.
            vec![
                columns::PARTITION_KEY.to_owned(),
                columns::CALLED_AT.to_owned(),
            ],
        ],
        rules: super::model::Rules::public(),
        tokens: None,
    }
}

fn counter(name: &str) -> Column {
    let mut c = maintained(name, FieldType::Integer, true);
    c.constraints.default = Some(serde_json::json!(0));
    c
}

/// The partitions table of a queue: one row per line, keyed by the
/// canonical partition key, holding the counters every transition keeps in
/// its own transaction (and the partition values, for reading).
pub(crate) fn partitions_resource(
    name: &str,
    entries: &Resource,
    partition_by: &[String],
) -> Resource {
    let mut columns = vec![Column {
        name: columns::PARTITION_KEY.to_owned(),
        ty: FieldType::String,
        role: ColumnRole::Id,
        constraints: Constraints {
            required: true,
            max_length: Some(MAX_PARTITION_KEY),
            ..Constraints::default()
        },
        writable: None,
        hidden: false,
    }];
    columns.extend(
        partition_by
            .iter()
            .filter_map(|p| entries.column(p))
            .cloned(),
    );
    columns.extend([
        counter(columns::LAST_TICKET),
        counter(columns::CALLED_UPTO),
        counter(columns::WAITING),
        maintained(columns::LAST_CALLED_AT, FieldType::Timestamp, false),
        maintained(columns::CALL_INTERVAL_MS, FieldType::Integer, false),
    ]);
    Resource {
        name: format!("{name}_partitions"),
        id_kind: IdKind::Key {
            max_length: MAX_PARTITION_KEY,
        },
        columns,
        cache_control: None,
        indexes: Vec::new(),
        rules: super::model::Rules::public(),
        tokens: None,
    }
}

/// The engine's table of queue states: one row per queue that was ever
/// opened or closed (a queue without a row is open).
pub(crate) fn state_resource() -> Resource {
    let mut open = maintained(columns::OPEN, FieldType::Boolean, true);
    open.constraints.default = Some(serde_json::json!(true));
    Resource {
        name: STATE_TABLE.to_owned(),
        id_kind: IdKind::Key { max_length: 63 },
        columns: vec![
            Column {
                name: "name".to_owned(),
                ty: FieldType::String,
                role: ColumnRole::Id,
                constraints: Constraints {
                    required: true,
                    max_length: Some(63),
                    ..Constraints::default()
                },
                writable: None,
                hidden: false,
            },
            open,
            maintained("updated_at", FieldType::Timestamp, false),
            text("updated_by", 255, false),
        ],
        cache_control: None,
        indexes: Vec::new(),
        rules: super::model::Rules::public(),
        tokens: None,
    }
}
