//! Stage 2, plan: an [`ApiRequest`] becomes a [`Plan`], plain data that says
//! exactly what storage must do: which conditions (filters, parent scope,
//! keyset position), which complete rows to insert (ids, timestamps and
//! defaults filled in), which versions a write is conditional on. Pure: the
//! clock and id generator come in through [`PlanContext`], so plans are unit
//! tested without a database.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::Identity;
use crate::error::{ApiError, Code};
use crate::policy::{self, Grant};
use crate::request::{
    ApiRequest, Body, Direction, EntityTags, Filter, ListQuery, Op, Operand, Operation, Record,
    SortKey, query,
};
use crate::schema::{Column, ColumnRole, FieldType, IdKind, Resource, Rule};
use crate::value::{self, FieldCode, Value};

/// A boolean condition over one resource's columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `column <op> value`.
    Compare {
        /// Column name.
        column: String,
        /// Comparison.
        op: Compare,
        /// Right-hand value (never NULL).
        value: Value,
    },
    /// `column IN (values…)`.
    In {
        /// Column name.
        column: String,
        /// Candidate values.
        values: Vec<Value>,
    },
    /// `column LIKE pattern`, optionally case-insensitive.
    Like {
        /// Column name.
        column: String,
        /// The bounded pattern, bound as a parameter.
        pattern: crate::request::query::LikePattern,
        /// `ilike`.
        case_insensitive: bool,
    },
    /// `column IS [NOT] NULL`.
    IsNull {
        /// Column name.
        column: String,
        /// `true` for IS NULL.
        null: bool,
    },
    /// Every condition holds (empty: true).
    All(Vec<Condition>),
    /// At least one holds (empty: false).
    Any(Vec<Condition>),
}

impl Condition {
    /// Whether a row (its fields as JSON, as rendered) meets the condition,
    /// the way the database would decide it: NULL meets no comparison.
    /// Rules produce equality and inequality, `IN`, `IS NULL`, `All` and
    /// `Any`; ranges and patterns, which they never produce, meet nothing.
    pub(crate) fn holds(&self, field: &dyn Fn(&str) -> Option<serde_json::Value>) -> bool {
        let value = |column: &str| field(column).filter(|v| !v.is_null());
        match self {
            Condition::Compare {
                column,
                op,
                value: v,
            } => {
                let Some(stored) = value(column) else {
                    return false;
                };
                match op {
                    Compare::Eq => stored == value::to_json(v),
                    Compare::Ne => stored != value::to_json(v),
                    _ => false,
                }
            }
            Condition::In { column, values } => value(column)
                .is_some_and(|stored| values.iter().any(|v| stored == value::to_json(v))),
            Condition::IsNull { column, null } => value(column).is_none() == *null,
            Condition::Like { .. } => false,
            Condition::All(all) => all.iter().all(|c| c.holds(field)),
            Condition::Any(any) => any.iter().any(|c| c.holds(field)),
        }
    }

    /// [`Condition::holds`] for a row about to be written.
    pub(crate) fn holds_for(&self, record: &Record) -> bool {
        self.holds(&|column| record.get(column).map(value::to_json))
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
}

/// A parent row that must exist (and be readable) for a nested route to answer.
#[derive(Debug, Clone)]
pub struct ParentCheck<'m> {
    /// The parent resource.
    pub resource: &'m Resource,
    /// The parent id from the path.
    pub id: Value,
    /// The caller's read restriction on the parent.
    pub scope: Option<Condition>,
}

/// A reference to expand: fetched for the whole page in one query.
#[derive(Debug, Clone)]
pub struct Expansion<'m> {
    /// The ref column.
    pub column: String,
    /// The referenced resource.
    pub target: &'m Resource,
    /// The caller's read restriction on the target (unreadable rows expand to null).
    pub scope: Option<Condition>,
}

/// Read a page of rows.
#[derive(Debug, Clone)]
pub struct ListPlan<'m> {
    /// The resource listed.
    pub resource: &'m Resource,
    /// On nested routes, the parent that must exist (else 404).
    pub parent: Option<ParentCheck<'m>>,
    /// Filters, parent scope and keyset position, all ANDed.
    pub condition: Condition,
    /// Filters and scope only (what `total` counts).
    pub count_condition: Option<Condition>,
    /// Total order: the client's keys then the id.
    pub sort: Vec<SortKey>,
    /// Rows to return; storage fetches one more to know if a next page exists.
    pub limit: u32,
    /// Rendered bytes after which the page stops early (its `next_cursor`
    /// continues after the last row returned), so memory per request is bounded.
    pub byte_budget: usize,
    /// Rows to skip.
    pub offset: u64,
    /// Projection applied when rendering.
    pub fields: Option<Vec<String>>,
    /// References to expand.
    pub expand: Vec<Expansion<'m>>,
}

/// Bytes of rows (and of their expansions) one page holds at most: a page
/// stops early past it, whatever `limit` says (at least one row is returned).
pub const PAGE_BYTE_BUDGET: usize = 4 * 1024 * 1024;

/// Read one row.
#[derive(Debug, Clone)]
pub struct ReadPlan<'m> {
    /// The resource read.
    pub resource: &'m Resource,
    /// On nested routes, the parent that must exist (else 404).
    pub parent: Option<ParentCheck<'m>>,
    /// Id plus any parent scope.
    pub condition: Condition,
    /// The id, for messages.
    pub id: Value,
    /// Projection applied when rendering.
    pub fields: Option<Vec<String>>,
    /// References to expand.
    pub expand: Vec<Expansion<'m>>,
}

/// Whether the caller may see what it wrote (a write rule can be wider than the read rule).
#[derive(Debug, Clone, PartialEq)]
pub enum Readback {
    /// Render the written row.
    All,
    /// Render it only if it meets the read rule's condition.
    Matching(Condition),
    /// Never render it: answer 204.
    Nothing,
}

impl Readback {
    fn for_caller(resource: &Resource, ctx: &PlanContext) -> Readback {
        match ctx.allow(&resource.rules.read, resource, "read") {
            Ok(None) => Readback::All,
            Ok(Some(condition)) => Readback::Matching(condition),
            Err(_) => Readback::Nothing,
        }
    }
}

/// A reference the caller is writing to a resource it may not fully read:
/// the referenced rows must be ones it can read, or the write answers as if
/// they did not exist (409), so references cannot probe hidden rows.
#[derive(Debug, Clone)]
pub struct RefCheck<'m> {
    /// The ref column written.
    pub column: String,
    /// The referenced resource.
    pub target: &'m Resource,
    /// The caller's read restriction on it (`Any([])` when it may read none).
    pub scope: Condition,
}

fn ref_checks<'m>(
    model: &'m crate::schema::AppModel,
    resource: &'m Resource,
    ctx: &PlanContext,
) -> Vec<RefCheck<'m>> {
    let mut checks = Vec::new();
    for column in &resource.columns {
        let FieldType::Ref(r) = &column.ty else {
            continue;
        };
        let Some(target) = model.resource(&r.to) else {
            continue;
        };
        let scope = match ctx.allow(&target.rules.read, target, "read") {
            Ok(None) => continue,
            Ok(Some(scope)) => scope,
            Err(_) => Condition::Any(Vec::new()),
        };
        checks.push(RefCheck {
            column: column.name.clone(),
            target,
            scope,
        });
    }
    checks
}

/// Insert rows, all or none.
#[derive(Debug, Clone)]
pub struct InsertPlan<'m> {
    /// References to check against what the caller may read.
    pub ref_checks: Vec<RefCheck<'m>>,
    /// Whether the caller may see the inserted rows.
    pub readback: Readback,
    /// The resource written.
    pub resource: &'m Resource,
    /// Complete rows (every column but an autoincrement id).
    pub rows: Vec<Record>,
    /// Whether the client sent an array (renders an array).
    pub bulk: bool,
}

/// What a conditional write requires of the current row (`If-Match` and
/// `If-None-Match` combined, RFC 9110 §13.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No precondition.
    Nothing,
    /// `If-Match: *`: the row must exist.
    Exists,
    /// The row's version must be one of these (empty: nothing can match → 412).
    Versions(Vec<i64>),
    /// `If-None-Match: *`: the row must not exist (PUT creates only).
    Absent,
    /// `If-None-Match: "v"…`: the row's version must be none of these.
    NotVersions(Vec<i64>),
}

/// Update one row; for PUT on client-key resources, insert it when absent.
#[derive(Debug, Clone)]
pub struct UpdatePlan<'m> {
    /// References to check against what the caller may read.
    pub ref_checks: Vec<RefCheck<'m>>,
    /// Whether the caller may see the updated row.
    pub readback: Readback,
    /// The resource written.
    pub resource: &'m Resource,
    /// The row's id.
    pub id: Value,
    /// Columns to set (including `updated_at`).
    pub set: Record,
    /// Version precondition.
    pub expect: Expect,
    /// The complete row to insert if the id does not exist (PUT upsert).
    pub insert: Option<Record>,
    /// What that row must meet if it is inserted (the create rule's
    /// condition): decided only once the id turns out not to exist, so an
    /// update is never refused by the create rule.
    pub insert_within: Option<Condition>,
    /// Access restriction (`owner` rules): rows outside it answer as missing.
    pub scope: Option<Condition>,
    /// What the row must still meet once written (the update rule's
    /// condition): a write that would move it outside is refused (403)
    /// and rolled back.
    pub after: Option<Condition>,
    /// Accounts: the token version to bump when the write revokes tokens.
    pub bump: Option<TokenBump>,
}

/// Increments an account's token version in the same UPDATE, unless every
/// watched field keeps its current value (an empty list always bumps).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBump {
    /// The token version column.
    pub column: String,
    /// Field and value written: the bump applies if any of them differs from the row.
    pub unless_unchanged: Vec<(String, Value)>,
}

impl TokenBump {
    /// The bump a write of `set` to `resource` needs, if it touches a revoking field.
    pub fn for_write(resource: &Resource, set: &Record) -> Option<TokenBump> {
        let tokens = resource.tokens.as_ref()?;
        let watched: Vec<(String, Value)> = tokens
            .revoked_by
            .iter()
            .filter_map(|c| set.get(c).map(|v| (c.clone(), v.clone())))
            .collect();
        (!watched.is_empty()).then(|| TokenBump {
            column: tokens.version_column.clone(),
            unless_unchanged: watched,
        })
    }

    /// An unconditional bump (logout everywhere, a new password).
    pub fn always(resource: &Resource) -> Option<TokenBump> {
        resource.tokens.as_ref().map(|t| TokenBump {
            column: t.version_column.clone(),
            unless_unchanged: Vec::new(),
        })
    }
}

/// Delete one row.
#[derive(Debug, Clone)]
pub struct DeletePlan<'m> {
    /// The resource deleted from.
    pub resource: &'m Resource,
    /// The row's id.
    pub id: Value,
    /// Version precondition.
    pub expect: Expect,
    /// Access restriction (`owner` rules): rows outside it answer as missing.
    pub scope: Option<Condition>,
}

/// What storage must do for one request.
#[derive(Debug, Clone)]
pub enum Plan<'m> {
    /// A page of rows.
    List(ListPlan<'m>),
    /// One row.
    Read(ReadPlan<'m>),
    /// Insert.
    Insert(InsertPlan<'m>),
    /// Update or upsert.
    Update(Box<UpdatePlan<'m>>),
    /// Delete.
    Delete(DeletePlan<'m>),
}

/// The impure inputs of planning.
#[derive(Debug, Clone)]
pub struct PlanContext {
    /// The request's timestamp.
    pub now: DateTime<Utc>,
    /// The authenticated subject, for `created_by`/`updated_by`.
    pub subject: Option<String>,
    /// The caller, for access rules.
    pub identity: Option<Identity>,
    /// Engine-internal work (seeding): rules do not apply.
    pub system: bool,
}

impl PlanContext {
    /// A context for a caller, stamped with the current time.
    pub fn for_caller(identity: Option<Identity>) -> Self {
        PlanContext {
            now: value::now(),
            subject: identity.as_ref().map(|i| i.subject.clone()),
            identity,
            system: false,
        }
    }

    /// A context for the engine itself (seed data): no rules, no subject.
    pub fn system() -> Self {
        PlanContext {
            now: value::now(),
            subject: None,
            identity: None,
            system: true,
        }
    }

    /// Applies a resource's rule for one operation (see [`policy::check`]).
    pub(crate) fn allow(
        &self,
        rule: &Rule,
        resource: &Resource,
        verb: &'static str,
    ) -> Result<Option<Condition>, ApiError> {
        if self.system {
            return Ok(None);
        }
        policy::check(rule, self.identity.as_ref(), resource, verb)
    }

    /// Whether the caller may set `column`.
    fn may_write(&self, column: &Column) -> bool {
        self.system
            || column
                .writable
                .as_ref()
                .is_none_or(|rule| policy::may_write(rule, self.identity.as_ref()))
    }
}

/// Fields in `records` the caller may not set: a 422 listing each.
fn check_writable(
    resource: &Resource,
    records: &[&Record],
    ctx: &PlanContext,
    bulk: bool,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    for (i, record) in records.iter().enumerate() {
        for column in resource.writable_columns() {
            if record.contains_key(&column.name) && !ctx.may_write(column) {
                let field = if bulk {
                    format!("[{i}].{}", column.name)
                } else {
                    column.name.clone()
                };
                errors.push(value::FieldError::new(
                    &field,
                    FieldCode::ReadOnly,
                    "you may not set this field",
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation { errors })
    }
}

fn id_condition(resource: &Resource, id: &Value) -> Condition {
    Condition::Compare {
        column: resource.id_column().name.clone(),
        op: Compare::Eq,
        value: id.clone(),
    }
}

fn filter_condition(filter: &Filter) -> Condition {
    let column = filter.column.clone();
    match &filter.operand {
        Operand::IsNull(null) => Condition::IsNull {
            column,
            null: *null,
        },
        Operand::Many(values) => Condition::In {
            column,
            values: values.clone(),
        },
        Operand::Pattern(pattern) => Condition::Like {
            column,
            pattern: pattern.clone(),
            case_insensitive: filter.op == Op::Ilike,
        },
        Operand::One(value) => Condition::Compare {
            column,
            op: match filter.op {
                Op::Ne => Compare::Ne,
                Op::Gt => Compare::Gt,
                Op::Gte => Compare::Gte,
                Op::Lt => Compare::Lt,
                Op::Lte => Compare::Lte,
                _ => Compare::Eq,
            },
            value: value.clone(),
        },
    }
}

/// Rows strictly after `values` in `sort` order, where NULL sorts before every
/// value (first ascending, last descending) on every backend.
pub fn keyset_after(sort: &[SortKey], values: &[Value]) -> Condition {
    let mut alternatives = Vec::new();
    let mut equal_so_far: Vec<Condition> = Vec::new();
    for (key, value) in sort.iter().zip(values) {
        let column = key.column.clone();
        let is_null = value == &Value::Null;
        let strictly_after = match (key.direction, is_null) {
            (Direction::Asc, true) => Some(Condition::IsNull {
                column: column.clone(),
                null: false,
            }),
            (Direction::Asc, false) => Some(Condition::Compare {
                column: column.clone(),
                op: Compare::Gt,
                value: value.clone(),
            }),
            (Direction::Desc, true) => None,
            (Direction::Desc, false) => Some(Condition::Any(vec![
                Condition::Compare {
                    column: column.clone(),
                    op: Compare::Lt,
                    value: value.clone(),
                },
                Condition::IsNull {
                    column: column.clone(),
                    null: true,
                },
            ])),
        };
        if let Some(after) = strictly_after {
            let mut branch = equal_so_far.clone();
            branch.push(after);
            alternatives.push(Condition::All(branch));
        }
        equal_so_far.push(if is_null {
            Condition::IsNull { column, null: true }
        } else {
            Condition::Compare {
                column,
                op: Compare::Eq,
                value: value.clone(),
            }
        });
    }
    Condition::Any(alternatives)
}

/// The precondition of a write: `If-Match` (strong comparison), then
/// `If-None-Match` (weak comparison), both of which must hold.
fn expect(p: &crate::request::Preconditions) -> Expect {
    let if_match = match &p.if_match {
        EntityTags::Absent => Expect::Nothing,
        EntityTags::Any => Expect::Exists,
        tags => Expect::Versions(tags.strong_versions()),
    };
    match (if_match, &p.if_none_match) {
        (m, EntityTags::Absent) => m,
        (Expect::Nothing, EntityTags::Any) => Expect::Absent,
        // Must exist and must not: never true.
        (_, EntityTags::Any) => Expect::Versions(Vec::new()),
        (Expect::Versions(v), none) => {
            let excluded = none.weak_versions();
            Expect::Versions(v.into_iter().filter(|v| !excluded.contains(v)).collect())
        }
        (_, none) => Expect::NotVersions(none.weak_versions()),
    }
}

/// Fills in what a create needs beyond the client's fields: id, defaults,
/// timestamps and subjects, in column order.
pub(crate) fn complete_row(resource: &Resource, given: &Record, ctx: &PlanContext) -> Record {
    let mut row = Record::new();
    for column in &resource.columns {
        let value = match column.role {
            ColumnRole::Id => match resource.id_kind {
                IdKind::Uuid => Value::Uuid(Uuid::now_v7()),
                IdKind::Integer => continue,
                IdKind::Key { .. } => given.get(&column.name).cloned().unwrap_or(Value::Null),
            },
            // Computed by the database.
            ColumnRole::Active => continue,
            ColumnRole::Field | ColumnRole::Maintained | ColumnRole::Owner => {
                match given.get(&column.name) {
                    Some(v) => v.clone(),
                    None => match &column.constraints.default {
                        Some(json) => value::from_json(column, json).unwrap_or(Value::Null),
                        None => Value::Null,
                    },
                }
            }
            ColumnRole::CreatedAt | ColumnRole::UpdatedAt => Value::Timestamp(ctx.now),
            ColumnRole::CreatedBy | ColumnRole::UpdatedBy => {
                ctx.subject.clone().map_or(Value::Null, Value::Text)
            }
        };
        row.insert(column.name.clone(), value);
    }
    row
}

fn list_plan<'m>(
    resource: &'m Resource,
    scope: Vec<Condition>,
    parent: Option<ParentCheck<'m>>,
    expand: Vec<Expansion<'m>>,
    query: ListQuery,
) -> ListPlan<'m> {
    let sort = query::total_sort(resource, &query.sort);
    let mut base: Vec<Condition> = query.filters.iter().map(filter_condition).collect();
    base.extend(scope);
    let count_condition = query.count.then(|| Condition::All(base.clone()));
    let mut all = base;
    if let Some(after) = &query.after {
        all.push(keyset_after(&sort, after));
    }
    ListPlan {
        resource,
        parent,
        condition: Condition::All(all),
        count_condition,
        sort,
        limit: query.limit,
        byte_budget: PAGE_BYTE_BUDGET,
        offset: query.offset,
        fields: query.fields,
        expand,
    }
}

/// The expansions a query asks for, each restricted by the target's read rule.
fn expansions<'m>(
    model_lookup: &dyn Fn(&str) -> Option<&'m Resource>,
    resource: &'m Resource,
    names: &[String],
    ctx: &PlanContext,
) -> Result<Vec<Expansion<'m>>, ApiError> {
    let mut out = Vec::new();
    for name in names {
        let Some(FieldType::Ref(r)) = resource.column(name).map(|c| &c.ty) else {
            continue;
        };
        let Some(target) = model_lookup(&r.to) else {
            continue;
        };
        // Rows the caller may not read expand to null, like missing ones.
        let scope = ctx
            .allow(&target.rules.read, target, "read")
            .unwrap_or(Some(Condition::Any(Vec::new())));
        out.push(Expansion {
            column: name.clone(),
            target,
            scope,
        });
    }
    Ok(out)
}

/// Plans a parsed request.
pub fn plan<'m>(
    model: &'m crate::schema::AppModel,
    request: ApiRequest<'m>,
    grant: Grant,
    ctx: &PlanContext,
) -> Result<Plan<'m>, ApiError> {
    let lookup = &|name: &str| model.resource(name);
    let ApiRequest {
        operation,
        query,
        body,
        preconditions,
        ..
    } = request;
    let scope_condition = |scope: &Option<crate::request::Scope<'_>>| {
        scope.as_ref().map(|s| Condition::Compare {
            column: s.via.name.clone(),
            op: Compare::Eq,
            value: s.parent_id.clone(),
        })
    };
    Ok(match operation {
        Operation::List { resource, scope } => {
            // A list shows only rows the caller may read: both rules filter in SQL.
            let mut conditions: Vec<Condition> = scope_condition(&scope).into_iter().collect();
            conditions.extend(grant.rows);
            let expand = expansions(lookup, resource, &query.expand, ctx)?;
            let parent = parent_check(&scope, ctx)?;
            Plan::List(list_plan(resource, conditions, parent, expand, query))
        }
        Operation::Get {
            resource,
            id,
            scope,
        } => {
            let mut all = vec![id_condition(resource, &id)];
            all.extend(scope_condition(&scope));
            all.extend(grant.rows);
            Plan::Read(ReadPlan {
                resource,
                parent: parent_check(&scope, ctx)?,
                condition: Condition::All(all),
                id,
                expand: expansions(lookup, resource, &query.expand, ctx)?,
                fields: query.fields,
            })
        }
        Operation::Create { resource } => {
            let (records, bulk) = match body {
                Some(Body::One(r)) => (vec![r], false),
                Some(Body::Many(rs)) => (rs, true),
                None => {
                    return Err(ApiError::bad_request(
                        Code::MissingBody,
                        "a JSON body is required",
                    ));
                }
            };
            check_writable(resource, &records.iter().collect::<Vec<_>>(), ctx, bulk)?;
            let rows: Vec<Record> = records
                .iter()
                .map(|r| complete_row(resource, r, ctx))
                .collect();
            for (i, row) in rows.iter().enumerate() {
                check_creatable(resource, grant.create.as_ref(), row, bulk.then_some(i))?;
            }
            Plan::Insert(InsertPlan {
                ref_checks: ref_checks(model, resource, ctx),
                readback: Readback::for_caller(resource, ctx),
                resource,
                rows,
                bulk,
            })
        }
        Operation::Update { resource, id } => {
            let scope = grant.scope();
            let given = single(body)?;
            check_writable(resource, &[&given], ctx, false)?;
            let mut set = Record::new();
            for column in resource.writable_columns() {
                if let Some(v) = given.get(&column.name) {
                    set.insert(column.name.clone(), v.clone());
                }
            }
            stamp_update(resource, &mut set, ctx);
            let bump = TokenBump::for_write(resource, &set);
            Plan::Update(Box::new(UpdatePlan {
                ref_checks: ref_checks(model, resource, ctx),
                readback: Readback::for_caller(resource, ctx),
                resource,
                id,
                set,
                expect: expect(&preconditions),
                insert: None,
                insert_within: None,
                bump,
                after: scope.clone(),
                scope,
            }))
        }
        Operation::Replace { resource, id } => {
            let scope = grant.scope();
            let mut given = single(body)?;
            check_writable(resource, &[&given], ctx, false)?;
            let mut set = Record::new();
            // A replace resets what the caller may write; fields it may not write keep their value.
            for column in resource.writable_columns().filter(|c| ctx.may_write(c)) {
                let value = match given.get(&column.name) {
                    Some(v) => v.clone(),
                    None => match &column.constraints.default {
                        Some(json) => value::from_json(column, json).unwrap_or(Value::Null),
                        None => Value::Null,
                    },
                };
                set.insert(column.name.clone(), value);
            }
            stamp_update(resource, &mut set, ctx);
            // PUT creates a client key only for callers who may create.
            let insert = grant.may_create.then(|| {
                given.insert(resource.id_column().name.clone(), id.clone());
                complete_row(resource, &given, ctx)
            });

            let bump = TokenBump::for_write(resource, &set);
            Plan::Update(Box::new(UpdatePlan {
                ref_checks: ref_checks(model, resource, ctx),
                readback: Readback::for_caller(resource, ctx),
                resource,
                id,
                set,
                expect: expect(&preconditions),
                insert_within: insert.as_ref().and(grant.create),
                insert,
                bump,
                after: scope.clone(),
                scope,
            }))
        }
        Operation::Delete { resource, id } => Plan::Delete(DeletePlan {
            scope: grant.scope(),
            resource,
            id,
            expect: expect(&preconditions),
        }),
    })
}

/// A row to create must meet the create rule's condition (`item`: its
/// index in a bulk body): a caller cannot create a row it could not own.
pub(crate) fn check_creatable(
    resource: &Resource,
    condition: Option<&Condition>,
    row: &Record,
    item: Option<usize>,
) -> Result<(), ApiError> {
    match condition {
        Some(condition) if !condition.holds_for(row) => Err(ApiError::Forbidden {
            detail: format!(
                "{}you may not create this row of {}: the create rule allows {}, and the row does not meet it",
                item.map_or_else(String::new, |i| format!("item {i}: ")),
                resource.name,
                resource.rules.create
            ),
        }),
        _ => Ok(()),
    }
}

fn parent_check<'m>(
    scope: &Option<crate::request::Scope<'m>>,
    ctx: &PlanContext,
) -> Result<Option<ParentCheck<'m>>, ApiError> {
    let Some(s) = scope else { return Ok(None) };
    // A parent the caller may not read answers like a missing one.
    let read = ctx.allow(&s.parent.rules.read, s.parent, "read");
    let scope = match read {
        Ok(scope) => scope,
        Err(_) => {
            return Err(ApiError::not_found(format!(
                "no {} with {} {}",
                s.parent.name,
                s.parent.id_column().name,
                match value::to_json(&s.parent_id) {
                    serde_json::Value::String(t) => t,
                    other => other.to_string(),
                }
            )));
        }
    };
    Ok(Some(ParentCheck {
        resource: s.parent,
        id: s.parent_id.clone(),
        scope,
    }))
}

fn single(body: Option<Body>) -> Result<Record, ApiError> {
    match body {
        Some(Body::One(record)) => Ok(record),
        _ => Err(ApiError::bad_request(
            Code::MalformedBody,
            "the body must be a JSON object",
        )),
    }
}

pub(crate) fn stamp_update(resource: &Resource, set: &mut Record, ctx: &PlanContext) {
    for column in &resource.columns {
        match column.role {
            ColumnRole::UpdatedAt => {
                set.insert(column.name.clone(), Value::Timestamp(ctx.now));
            }
            ColumnRole::UpdatedBy => {
                set.insert(
                    column.name.clone(),
                    ctx.subject.clone().map_or(Value::Null, Value::Text),
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{RawRequest, parse};
    use crate::schema::load_str;
    use http::{HeaderMap, Method};

    fn model() -> crate::schema::AppModel {
        load_str(
            "[app]\nname='t'\n[resources.colleges]\nid={type='integer'}\nfields.name={type='string'}\n\
             [resources.majors]\nfields.name={type='string',required=true}\nfields.rank={type='integer',default=5}\n\
             fields.college_id={type='ref',to='colleges',required=true}\n",
        )
        .unwrap()
    }

    fn plan_for<'m>(
        model: &'m crate::schema::AppModel,
        method: Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
        headers: HeaderMap,
    ) -> Result<Plan<'m>, ApiError> {
        let mut headers = headers;
        if !body.is_empty() {
            headers.insert(
                http::header::CONTENT_TYPE,
                "application/json".parse().unwrap(),
            );
        }
        let raw = RawRequest {
            method: &method,
            path,
            query,
            headers: &headers,
            body,
        };
        let ctx = PlanContext::for_caller(None);
        let request = parse(model, &raw)?;
        let grant = policy::authorize(&request.operation, &ctx)?;
        plan(model, request, grant, &ctx)
    }

    #[test]
    fn a_create_fills_in_the_id_timestamps_and_defaults() {
        let m = model();
        let Plan::Insert(p) = plan_for(
            &m,
            Method::POST,
            "/majors",
            None,
            br#"{"name":"Math","college_id":1}"#,
            HeaderMap::new(),
        )
        .unwrap() else {
            panic!("expected an insert");
        };
        let row = &p.rows[0];
        assert!(matches!(row["id"], Value::Uuid(_)));
        assert_eq!(row["rank"], Value::Int(5));
        assert_eq!(row["created_at"], row["updated_at"]);
        assert!(!p.bulk);
    }

    #[test]
    fn a_nested_list_is_scoped_to_its_parent() {
        let m = model();
        let Plan::List(p) = plan_for(
            &m,
            Method::GET,
            "/colleges/3/majors",
            Some("name=Math"),
            b"",
            HeaderMap::new(),
        )
        .unwrap() else {
            panic!("expected a list");
        };
        let Condition::All(all) = &p.condition else {
            panic!()
        };
        assert!(all.contains(&Condition::Compare {
            column: "college_id".into(),
            op: Compare::Eq,
            value: Value::Int(3)
        }));
        assert_eq!(p.sort.last().unwrap().column, "id");
    }

    #[test]
    fn if_match_becomes_a_version_precondition() {
        let m = model();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::IF_MATCH, "\"4\", W/\"5\"".parse().unwrap());
        let Plan::Delete(p) =
            plan_for(&m, Method::DELETE, "/colleges/1", None, b"", headers).unwrap()
        else {
            panic!("expected a delete");
        };
        assert_eq!(p.expect, Expect::Versions(vec![4]));
    }

    #[test]
    fn a_patch_sets_only_the_given_fields_and_updated_at() {
        let m = model();
        let Plan::Update(p) = plan_for(
            &m,
            Method::PATCH,
            "/colleges/1",
            None,
            br#"{"name":"X"}"#,
            HeaderMap::new(),
        )
        .unwrap() else {
            panic!("expected an update");
        };
        let keys: Vec<_> = p.set.keys().map(String::as_str).collect();
        assert_eq!(keys, ["name", "updated_at", "updated_by"]);
        assert!(p.insert.is_none());
    }

    #[test]
    fn keyset_after_a_null_ascending_value_takes_the_non_nulls_and_later_ids() {
        let sort = vec![
            SortKey {
                column: "rank".into(),
                direction: Direction::Asc,
            },
            SortKey {
                column: "id".into(),
                direction: Direction::Asc,
            },
        ];
        let c = keyset_after(&sort, &[Value::Null, Value::Int(9)]);
        assert_eq!(
            c,
            Condition::Any(vec![
                Condition::All(vec![Condition::IsNull {
                    column: "rank".into(),
                    null: false
                }]),
                Condition::All(vec![
                    Condition::IsNull {
                        column: "rank".into(),
                        null: true
                    },
                    Condition::Compare {
                        column: "id".into(),
                        op: Compare::Gt,
                        value: Value::Int(9)
                    },
                ]),
            ])
        );
    }
}
