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
use crate::schema::{Resource, Rule};
use crate::value::Value;

/// What one request may do, decided once from its operation's rules.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Conditions every affected row must meet (`owner` rules); empty: any row.
    pub rows: Vec<Condition>,
    /// A `PUT` on a client-chosen key may also create it (the caller passes
    /// the create rule too).
    pub may_create: bool,
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
        // Creating has no rows to restrict: `owner` only requires a caller.
        grant.rows.clear();
    }
    grant.may_create = matches!(operation, Operation::Replace { .. })
        && resource.has_client_key()
        && ctx.allow(&rules.create, resource, "create").is_ok();
    Ok(grant)
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
    let held = match identity.roles.as_slice() {
        [] => "no role (check that the token carries its roles where [auth] role_claim reads them)"
            .to_owned(),
        [one] => format!("the role {one}"),
        many => format!("the roles {}", many.join(", ")),
    };
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
    }
}

/// Whether `identity` may set a field guarded by `rule` (owner means any
/// authenticated caller: the row being written is theirs).
pub fn may_write(rule: &Rule, identity: Option<&Identity>) -> bool {
    match rule {
        Rule::Public => true,
        Rule::Authenticated | Rule::Owner => identity.is_some(),
        Rule::Roles(roles) => identity.is_some_and(|i| i.has_any_role(roles)),
        Rule::Denied => false,
    }
}
