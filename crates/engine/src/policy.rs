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
    decide(rule, identity, resource).ok_or_else(|| refusal(rule, identity, resource, verb))
}

/// What `rule` allows `identity` on `resource`: `Some(None)` every row,
/// `Some(Some(c))` the rows matching `c`, `None` nothing. It builds no
/// message: it runs per request, and an any-of rule tries alternatives
/// that refuse while another allows.
fn decide(
    rule: &Rule,
    identity: Option<&Identity>,
    resource: &Resource,
) -> Option<Option<Condition>> {
    match rule {
        Rule::Public => Some(None),
        Rule::Authenticated => identity.map(|_| None),
        Rule::Owner => identity.map(|identity| {
            let column = resource
                .owner_column()
                .map_or_else(|| "created_by".to_owned(), |c| c.name.clone());
            Some(Condition::Compare {
                column,
                op: Compare::Eq,
                value: Value::Text(identity.subject.clone()),
            })
        }),
        Rule::Roles(roles) => identity.filter(|i| i.has_any_role(roles)).map(|_| None),
        Rule::Denied => None,
        Rule::Row(test) => row_condition(test, identity, resource).ok().map(Some),
        Rule::All(parts) => {
            let mut conditions = Vec::new();
            for part in parts {
                conditions.extend(decide(part, identity, resource)?);
            }
            Some(match conditions.len() {
                0 => None,
                1 => conditions.pop(),
                _ => Some(Condition::All(conditions)),
            })
        }
        Rule::Any(alternatives) => {
            let mut conditions = Vec::new();
            for alternative in alternatives {
                match decide(alternative, identity, resource) {
                    Some(None) => return Some(None),
                    Some(Some(condition)) => conditions.push(condition),
                    None => {}
                }
            }
            (!conditions.is_empty()).then_some(Some(Condition::Any(conditions)))
        }
    }
}

/// Why `rule` refuses `identity` (called only once [`decide`] did): 401
/// for an anonymous caller, else a 403 naming the rule and what the caller
/// brought, never anything of a row.
fn refusal(rule: &Rule, identity: Option<&Identity>, resource: &Resource, verb: &str) -> ApiError {
    let forbidden = |detail| ApiError::Forbidden { detail };
    match (rule, identity) {
        (Rule::Denied, _) => forbidden(format!("nobody may {verb} {}", resource.name)),
        // The first part that refuses says why.
        (Rule::All(parts), _) => parts
            .iter()
            .find(|p| decide(p, identity, resource).is_none())
            .map_or_else(
                || refuse(identity, verb, resource),
                |part| refusal(part, identity, resource, verb),
            ),
        (_, None) => refuse(None, verb, resource),
        (Rule::Roles(roles), Some(identity)) => {
            forbidden(lacking_role(identity, roles, verb, resource))
        }
        (Rule::Row(test), Some(identity)) => match row_condition(test, Some(identity), resource) {
            Err(why) => forbidden(format!(
                "you may not {verb} {}: {}",
                resource.name,
                why.explain(test, identity)
            )),
            Ok(_) => refuse(Some(identity), verb, resource),
        },
        (Rule::Any(_), Some(identity)) => forbidden(format!(
            "you may not {verb} {}: the rule allows {rule}, and this caller has {}{}",
            resource.name,
            held_roles(identity),
            missing_claims(rule, identity)
        )),
        (_, Some(identity)) => refuse(Some(identity), verb, resource),
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

/// Why a row test cannot apply to a caller; worded only for a 403.
#[derive(Debug, Clone, Copy)]
enum RowRefusal {
    /// The field is not the resource's (the schema loader refuses this).
    NotAField,
    /// The literal does not fit the field (the schema loader refuses this).
    BadLiteral,
    /// The test reads a claim and there is no caller.
    Anonymous,
    /// The caller's credential lacks the claim.
    NoClaim,
    /// The claim is not a value of the field.
    BadClaim,
}

impl RowRefusal {
    fn explain(self, test: &RowTest, identity: &Identity) -> String {
        let name = match &test.operand {
            Operand::Claim(name) => name.as_str(),
            Operand::Literal(_) => "",
        };
        match self {
            RowRefusal::NotAField => {
                format!("the rule compares \"{}\", which is not a field", test.field)
            }
            RowRefusal::BadLiteral | RowRefusal::Anonymous => {
                format!("the rule's condition on {} cannot be met", test.field)
            }
            RowRefusal::NoClaim => format!(
                "the rule compares {} with the caller's \"{name}\" claim, and its token carries none",
                test.field
            ),
            RowRefusal::BadClaim => format!(
                "the caller's \"{name}\" claim ({}) is not a valid {}",
                identity.claim(name).cloned().unwrap_or_default(),
                test.field
            ),
        }
    }
}

/// A row test as a condition on `resource`, or why it cannot apply to this
/// caller (an anonymous caller, or a claim missing or of the wrong type).
fn row_condition(
    test: &RowTest,
    identity: Option<&Identity>,
    resource: &Resource,
) -> Result<Condition, RowRefusal> {
    let column = resource.column(&test.field).ok_or(RowRefusal::NotAField)?;
    let value = match &test.operand {
        Operand::Literal(json) => {
            crate::value::from_json(column, json).map_err(|_| RowRefusal::BadLiteral)?
        }
        Operand::Claim(name) => {
            let claim = identity
                .ok_or(RowRefusal::Anonymous)?
                .claim(name)
                .ok_or(RowRefusal::NoClaim)?;
            claim_value(column, claim).ok_or(RowRefusal::BadClaim)?
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
