//! Policy: what a caller may do, decided from the schema's rules. Identity
//! (who is calling) comes from [`crate::auth`]; this module only turns rules
//! into decisions — refused (401 for anonymous callers, 403 otherwise),
//! allowed on every row, or allowed on the rows an SQL condition selects
//! (`owner` rules) — so lists never return or count a row the caller may not
//! read, and a forbidden row answers exactly like a missing one. The decision
//! for a request is made once, when it is routed ([`authorize`]), and the
//! plan consumes it ([`Grant`]).

use crate::auth::Identity;
use crate::error::ApiError;
use crate::plan::{Compare, Condition, PlanContext};
use crate::request::Operation;
use crate::schema::{Operand, Resource, RowTest, Rule};
use crate::value::Value;

/// What one request may do, decided once from its operation's rules.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Conditions every affected row must meet (`owner` rules); empty: any row.
    pub rows: Vec<Condition>,
    /// A `PUT` on a client-chosen key may also create it (the caller passes
    /// the create rule too).
    pub may_create: bool,
    /// What a row created must meet (the create rule's row conditions).
    pub create: Option<Condition>,
}

impl Grant {
    /// The rows a write may touch: `None` for any row.
    pub fn scope(&self) -> Option<Condition> {
        match self.rows.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => Some(Condition::All(many.to_vec())),
        }
    }
}

/// Decides an operation for the caller, before its query or body are looked
/// at: a caller who may not perform it at all learns nothing about the
/// resource's fields. Row conditions come back in the [`Grant`].
pub fn authorize(operation: &Operation<'_>, ctx: &PlanContext) -> Result<Grant, ApiError> {
    let resource = operation.resource();
    let rules = &resource.rules;
    let checks: &[(&Rule, &str)] = match operation {
        Operation::List { .. } => &[(&rules.list, "list"), (&rules.read, "read")],
        Operation::Get { .. } => &[(&rules.read, "read")],
        Operation::Create { .. } => &[(&rules.create, "create")],
        Operation::Update { .. } | Operation::Replace { .. } => &[(&rules.update, "update")],
        Operation::Delete { .. } => &[(&rules.delete, "delete")],
    };
    let mut grant = Grant::default();
    for (rule, verb) in checks {
        grant.rows.extend(ctx.allow(rule, resource, verb)?);
    }
    if matches!(operation, Operation::Create { .. }) {
        // Creating has no rows to restrict: the rule's condition is what
        // the new row must meet (`owner`: it is the caller's, as it will be).
        grant.create = grant.scope();
        grant.rows.clear();
    }
    if matches!(operation, Operation::Replace { .. })
        && resource.has_client_key()
        && let Ok(create) = ctx.allow(&rules.create, resource, "create")
    {
        grant.may_create = true;
        grant.create = create;
    }
    Ok(grant)
}

/// The 403 of a write that would move a row outside what the rule allows.
pub(crate) fn moved_outside(resource: &Resource) -> ApiError {
    ApiError::Forbidden {
        detail: format!(
            "you may not update this row of {} so that it leaves what the update rule allows ({}); nothing was changed",
            resource.name, resource.rules.update
        ),
    }
}

/// 401 for anonymous callers (with `WWW-Authenticate`), 403 otherwise.
fn refuse(identity: Option<&Identity>, verb: &str, resource: &Resource) -> ApiError {
    let what = format!("{verb} {}", resource.name);
    match identity {
        None => ApiError::Unauthorized {
            detail: format!("authentication is required to {what}"),
            invalid_token: false,
        },
        Some(_) => ApiError::Forbidden {
            detail: format!("you may not {what}"),
        },
    }
}

/// A 403 that says what the rule asks and what the caller brought: its own
/// roles, never anything of a row.
fn lacking_role(identity: &Identity, roles: &[String], verb: &str, resource: &Resource) -> String {
    let needed = match roles {
        [one] => format!("the role {one}"),
        many => format!("one of the roles {}", many.join(", ")),
    };
    let held = held_roles(identity);
    format!(
        "you may not {verb} {}: the rule asks for {needed}, and this caller has {held}",
        resource.name
    )
}

/// Applies `rule` to `identity` for `verb` (`list`, `read`, …) on `resource`:
/// `Ok(None)` allows everything, `Ok(Some(c))` allows only rows matching `c`,
/// `Err` refuses. Messages are built only on refusal (this runs per request).
pub fn check(
    rule: &Rule,
    identity: Option<&Identity>,
    resource: &Resource,
    verb: &str,
) -> Result<Option<Condition>, ApiError> {
    match rule {
        Rule::Public => Ok(None),
        Rule::Authenticated => identity
            .map(|_| None)
            .ok_or_else(|| refuse(None, verb, resource)),
        Rule::Owner => {
            let identity = identity.ok_or_else(|| refuse(None, verb, resource))?;
            let column = resource
                .owner_column()
                .map_or_else(|| "created_by".to_owned(), |c| c.name.clone());
            Ok(Some(Condition::Compare {
                column,
                op: Compare::Eq,
                value: Value::Text(identity.subject.clone()),
            }))
        }
        Rule::Roles(roles) => match identity {
            Some(i) if i.has_any_role(roles) => Ok(None),
            Some(i) => Err(ApiError::Forbidden {
                detail: lacking_role(i, roles, verb, resource),
            }),
            None => Err(refuse(None, verb, resource)),
        },
        Rule::Denied => Err(ApiError::Forbidden {
            detail: format!("nobody may {verb} {}", resource.name),
        }),
        Rule::Row(test) => row_condition(test, identity, resource)
            .map(Some)
            .map_err(|why| match (identity, why) {
                (None, _) => refuse(None, verb, resource),
                (Some(_), why) => ApiError::Forbidden {
                    detail: format!("you may not {verb} {}: {why}", resource.name),
                },
            }),
        Rule::All(parts) => {
            let mut conditions = Vec::new();
            for part in parts {
                conditions.extend(check(part, identity, resource, verb)?);
            }
            Ok(match conditions.len() {
                0 => None,
                1 => conditions.pop(),
                _ => Some(Condition::All(conditions)),
            })
        }
        Rule::Any(alternatives) => {
            let mut conditions = Vec::new();
            let mut refusals = Vec::new();
            for alternative in alternatives {
                match check(alternative, identity, resource, verb) {
                    Ok(None) => return Ok(None),
                    Ok(Some(condition)) => conditions.push(condition),
                    Err(refusal) => refusals.push(refusal),
                }
            }
            if !conditions.is_empty() {
                return Ok(Some(Condition::Any(conditions)));
            }
            Err(match identity {
                None => refuse(None, verb, resource),
                Some(identity) => ApiError::Forbidden {
                    detail: format!(
                        "you may not {verb} {}: the rule allows {rule}, and this caller has {}{}",
                        resource.name,
                        held_roles(identity),
                        missing_claims(rule, identity)
                    ),
                },
            })
        }
    }
}

/// What the caller holds, for a 403.
fn held_roles(identity: &Identity) -> String {
    match identity.roles.as_slice() {
        [] => "no role (check that the token carries its roles where [auth] role_claim reads them)"
            .to_owned(),
        [one] => format!("the role {one}"),
        many => format!("the roles {}", many.join(", ")),
    }
}

/// `, and no "tenant" claim` for the claims a rule reads that the caller lacks.
fn missing_claims(rule: &Rule, identity: &Identity) -> String {
    fn walk<'r>(rule: &'r Rule, out: &mut Vec<&'r str>) {
        match rule {
            Rule::Row(RowTest {
                operand: Operand::Claim(name),
                ..
            }) => out.push(name),
            Rule::All(parts) | Rule::Any(parts) => parts.iter().for_each(|p| walk(p, out)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    walk(rule, &mut names);
    names.retain(|name| identity.claim(name).is_none());
    names.dedup();
    match names.as_slice() {
        [] => String::new(),
        names => format!(
            ", and no {} claim",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

/// A row test as a condition on `resource`, or why it cannot apply to this
/// caller (an anonymous caller, or a claim missing or of the wrong type).
fn row_condition(
    test: &RowTest,
    identity: Option<&Identity>,
    resource: &Resource,
) -> Result<Condition, String> {
    let column = resource
        .column(&test.field)
        .ok_or_else(|| format!("the rule compares \"{}\", which is not a field", test.field))?;
    let value = match &test.operand {
        Operand::Literal(json) => crate::value::from_json(column, json).map_err(|e| e.message)?,
        Operand::Claim(name) => {
            let identity = identity.ok_or_else(String::new)?;
            let claim = identity.claim(name).ok_or_else(|| {
                format!(
                    "the rule compares {} with the caller's \"{name}\" claim, and its token carries none",
                    test.field
                )
            })?;
            claim_value(column, claim).ok_or_else(|| {
                format!(
                    "the caller's \"{name}\" claim ({claim}) is not a valid {}",
                    test.field
                )
            })?
        }
    };
    Ok(Condition::Compare {
        column: test.field.clone(),
        op: if test.equal { Compare::Eq } else { Compare::Ne },
        value,
    })
}

/// A claim as a value of `column`: as it is, or a number written as text
/// (and the reverse), since issuers differ.
fn claim_value(column: &crate::schema::Column, claim: &serde_json::Value) -> Option<Value> {
    use serde_json::Value as Json;
    let value = crate::value::from_json(column, claim)
        .ok()
        .or_else(|| match claim {
            Json::String(s) => s
                .parse::<i64>()
                .ok()
                .and_then(|n| crate::value::from_json(column, &Json::from(n)).ok()),
            Json::Number(n) => crate::value::from_json(column, &Json::String(n.to_string())).ok(),
            _ => None,
        })?;
    (value != Value::Null).then_some(value)
}

/// Whether `identity` may set a field guarded by `rule` (owner means any
/// authenticated caller: the row being written is theirs). Field rules hold
/// no row conditions (the schema refuses them).
pub fn may_write(rule: &Rule, identity: Option<&Identity>) -> bool {
    match rule {
        Rule::Public => true,
        Rule::Authenticated | Rule::Owner => identity.is_some(),
        Rule::Roles(roles) => identity.is_some_and(|i| i.has_any_role(roles)),
        Rule::Denied | Rule::Row(_) => false,
        Rule::All(parts) => parts.iter().all(|p| may_write(p, identity)),
        Rule::Any(alternatives) => alternatives.iter().any(|a| may_write(a, identity)),
    }
}
