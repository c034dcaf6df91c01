//! Stage 3, execute: runs a [`Plan`] on a [`Storage`] and gathers what the
//! response needs, including `expand` (one query per expanded reference for
//! the whole page, never one per row).

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use crate::error::{ApiError, Code};
use crate::plan::Plan;
use crate::request::query::encode_cursor;
use crate::schema::Resource;
use crate::storage::{DeleteOutcome, Storage, StoredRow, UpdateOutcome, approx_size};
use crate::value::{self, Value};

/// Expanded rows by ref column, then by the referenced id rendered as a string.
pub type Expansions = HashMap<String, HashMap<String, Map<String, Json>>>;

/// How a single row came to be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    /// Read: 200, cacheable, `If-None-Match` honoured.
    Read,
    /// Updated: 200 with the new ETag.
    Updated,
    /// Created (POST or PUT upsert): 201 with `Location`.
    Created,
}

/// Projection and expansion to apply when rendering rows.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Only these columns, when set.
    pub fields: Option<Vec<String>>,
    /// Expanded references.
    pub expansions: Expansions,
}

impl Shape {
    /// Whether rows render exactly as stored (strong ETags apply).
    pub fn is_plain(&self) -> bool {
        self.fields.is_none() && self.expansions.is_empty()
    }
}

/// What the response stage renders.
#[derive(Debug)]
pub enum Outcome<'m> {
    /// A page of rows.
    Page {
        /// The listed resource.
        resource: &'m Resource,
        /// The rows.
        rows: Vec<StoredRow>,
        /// Cursor of the next page.
        next_cursor: Option<String>,
        /// Matching rows, when asked.
        total: Option<u64>,
        /// Projection and expansion.
        shape: Shape,
    },
    /// One row.
    Row {
        /// Its resource.
        resource: &'m Resource,
        /// The row.
        row: StoredRow,
        /// 200 or 201.
        status: RowStatus,
        /// Projection and expansion.
        shape: Shape,
    },
    /// Rows created by a bulk POST.
    Rows {
        /// Their resource.
        resource: &'m Resource,
        /// The rows, in body order.
        rows: Vec<StoredRow>,
    },
    /// 204.
    Deleted,
    /// 204: written, but the caller may not read the result.
    Written,
}

fn missing(resource: &Resource, id: &Value) -> ApiError {
    let id_text = match value::to_json(id) {
        Json::String(s) => s,
        other => other.to_string(),
    };
    ApiError::not_found(format!(
        "no {} with {} {id_text}",
        resource.name,
        resource.id_column().name
    ))
}

/// The string a JSON id is matched by across queries.
fn id_key(json: &Json) -> Option<String> {
    match json {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Runs a plan.
pub async fn execute<'m>(storage: &dyn Storage, plan: Plan<'m>) -> Result<Outcome<'m>, ApiError> {
    match plan {
        Plan::List(p) => {
            require_parent(storage, &p.parent).await?;
            let page = storage.list(&p).await?;
            let (mut rows, mut has_more) = (page.rows, page.has_more);
            // Expanded rows share the page's byte budget: a page whose
            // references would not fit is cut in half until they do.
            let expansions = loop {
                let used: usize = rows.iter().map(|r| approx_size(&r.values)).sum();
                let budget = if rows.len() > 1 {
                    p.byte_budget.saturating_sub(used)
                } else {
                    usize::MAX
                };
                if let Some(expansions) = expand_rows(storage, &rows, &p.expand, budget).await? {
                    break expansions;
                }
                rows.truncate(rows.len().div_ceil(2));
                has_more = true;
            };
            let next_cursor = if has_more {
                rows.last().map(|r| encode_cursor(&p.sort, &r.values))
            } else {
                None
            };
            strip_hidden(p.resource, &mut rows);
            Ok(Outcome::Page {
                resource: p.resource,
                rows,
                next_cursor,
                total: page.total,
                shape: Shape {
                    fields: p.fields,
                    expansions,
                },
            })
        }
        Plan::Read(p) => {
            require_parent(storage, &p.parent).await?;
            let mut row = storage
                .read(&p)
                .await?
                .ok_or_else(|| missing(p.resource, &p.id))?;
            let expansions =
                expand_rows(storage, std::slice::from_ref(&row), &p.expand, usize::MAX)
                    .await?
                    .unwrap_or_default();
            strip_hidden(p.resource, std::slice::from_mut(&mut row));
            Ok(Outcome::Row {
                resource: p.resource,
                row,
                status: RowStatus::Read,
                shape: Shape {
                    fields: p.fields,
                    expansions,
                },
            })
        }
        Plan::Insert(p) => {
            check_refs(storage, &p.ref_checks, p.rows.iter()).await?;
            let mut rows = storage.insert(&p).await?;
            if !rows.iter().all(|r| visible(&p.readback, r)) {
                return Ok(Outcome::Written);
            }
            strip_hidden(p.resource, &mut rows);
            if p.bulk {
                Ok(Outcome::Rows {
                    resource: p.resource,
                    rows,
                })
            } else {
                Ok(Outcome::Row {
                    resource: p.resource,
                    row: rows
                        .pop()
                        .ok_or_else(|| ApiError::internal("insert returned no row"))?,
                    status: RowStatus::Created,
                    shape: Shape::default(),
                })
            }
        }
        Plan::Update(p) => {
            check_refs(
                storage,
                &p.ref_checks,
                std::iter::once(&p.set).chain(p.insert.as_ref()),
            )
            .await?;
            let (mut row, status) = match storage.update(&p).await? {
                UpdateOutcome::Updated(row) => (row, RowStatus::Updated),
                UpdateOutcome::Created(row) => (row, RowStatus::Created),
                UpdateOutcome::NotFound => return Err(missing(p.resource, &p.id)),
                UpdateOutcome::PreconditionFailed => return Err(ApiError::PreconditionFailed),
            };
            if !visible(&p.readback, &row) {
                return Ok(Outcome::Written);
            }
            strip_hidden(p.resource, std::slice::from_mut(&mut row));
            Ok(Outcome::Row {
                resource: p.resource,
                row,
                status,
                shape: Shape::default(),
            })
        }
        Plan::Delete(p) => match storage.delete(&p).await? {
            DeleteOutcome::Deleted => Ok(Outcome::Deleted),
            DeleteOutcome::NotFound => Err(missing(p.resource, &p.id)),
            DeleteOutcome::PreconditionFailed => Err(ApiError::PreconditionFailed),
        },
    }
}

/// Refuses references to rows the caller may not read, exactly as references
/// to rows that do not exist (409 naming the field).
async fn check_refs<'a>(
    storage: &dyn Storage,
    checks: &[crate::plan::RefCheck<'_>],
    rows: impl Iterator<Item = &'a crate::request::Record> + Clone,
) -> Result<(), ApiError> {
    for check in checks {
        let mut ids: Vec<Value> = Vec::new();
        for row in rows.clone() {
            if let Some(v) = row.get(&check.column).filter(|v| **v != Value::Null)
                && !ids.contains(v)
            {
                ids.push(v.clone());
            }
        }
        if ids.is_empty() {
            continue;
        }
        let found = storage
            .fetch_by_ids(check.target, &ids, Some(&check.scope), usize::MAX)
            .await?
            .unwrap_or_default();
        if found.len() < ids.len() {
            return Err(ApiError::Conflict {
                code: Code::ForeignKeyViolation,
                detail: format!(
                    "{} refers to a row of {} that does not exist",
                    check.column, check.target.name
                ),
                field: Some(check.column.clone()),
            });
        }
    }
    Ok(())
}

/// Whether the caller may see a row it just wrote.
fn visible(readback: &crate::plan::Readback, row: &StoredRow) -> bool {
    match readback {
        crate::plan::Readback::All => true,
        crate::plan::Readback::Nothing => false,
        crate::plan::Readback::Matching(condition) => {
            condition.holds(&|column| row.values.get(column).cloned())
        }
    }
}

/// Nested routes answer 404 when the parent row does not exist.
async fn require_parent(
    storage: &dyn Storage,
    parent: &Option<crate::plan::ParentCheck<'_>>,
) -> Result<(), ApiError> {
    if let Some(p) = parent
        && storage
            .fetch_by_ids(
                p.resource,
                std::slice::from_ref(&p.id),
                p.scope.as_ref(),
                usize::MAX,
            )
            .await?
            .is_none_or(|rows| rows.is_empty())
    {
        return Err(missing(p.resource, &p.id));
    }
    Ok(())
}

/// One `WHERE id IN (…)` query per expanded reference for all `rows`,
/// restricted by the target's read rule; hidden fields are removed. `None`
/// when the expanded rows together would hold more than `byte_budget` bytes.
async fn expand_rows(
    storage: &dyn Storage,
    rows: &[StoredRow],
    expansions: &[crate::plan::Expansion<'_>],
    mut byte_budget: usize,
) -> Result<Option<Expansions>, ApiError> {
    let mut out = Expansions::new();
    for expansion in expansions {
        let target = expansion.target;
        let id_column = target.id_column();
        let mut seen = std::collections::HashSet::new();
        let mut ids = Vec::new();
        for row in rows {
            let Some(json) = row.values.get(&expansion.column) else {
                continue;
            };
            if let Some(key) = id_key(json)
                && seen.insert(key)
                && let Ok(v) = value::from_json(id_column, json)
            {
                ids.push(v);
            }
        }
        let Some(mut fetched) = storage
            .fetch_by_ids(target, &ids, expansion.scope.as_ref(), byte_budget)
            .await?
        else {
            return Ok(None);
        };
        let size: usize = fetched.iter().map(|r| approx_size(&r.values)).sum();
        byte_budget = byte_budget.saturating_sub(size);
        strip_hidden(target, &mut fetched);
        let by_id = fetched
            .into_iter()
            .filter_map(|r| {
                let key = id_key(r.values.get(&id_column.name)?)?;
                Some((key, r.values))
            })
            .collect();
        out.insert(expansion.column.clone(), by_id);
    }
    Ok(Some(out))
}

/// Removes the resource's hidden fields from rows about to be rendered.
fn strip_hidden(resource: &Resource, rows: &mut [StoredRow]) {
    use crate::schema::shape::{Mode, Presence, shape};
    let read = shape(resource, Mode::Read);
    let hidden: Vec<&str> = read
        .iter()
        .filter(|f| f.presence == Presence::Absent)
        .map(|f| f.column.name.as_str())
        .collect();
    if hidden.is_empty() {
        return;
    }
    for row in rows {
        for name in &hidden {
            row.values.shift_remove(*name);
        }
    }
}
