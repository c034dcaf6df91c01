//! Access rules: whether an identity may perform an operation, and for
//! `owner` rules the SQL condition (`created_by = subject`) that restricts it
//! to the caller's rows — so lists never return or count a row the caller may
//! not read, and a forbidden row answers exactly like a missing one.

use super::Identity;
use crate::error::ApiError;
use crate::plan::{Compare, Condition};
use crate::schema::{ColumnRole, Resource, Rule};
use crate::value::Value;

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
                .columns
                .iter()
                .find(|c| c.role == ColumnRole::CreatedBy)
                .map_or_else(|| "created_by".to_owned(), |c| c.name.clone());
            Ok(Some(Condition::Compare {
                column,
                op: Compare::Eq,
                value: Value::Text(identity.subject.clone()),
            }))
        }
        Rule::Roles(roles) => match identity {
            Some(i) if i.has_any_role(roles) => Ok(None),
            other => Err(refuse(other, verb, resource)),
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
