//! A request routed by the [`crate::routes`] table to a resource endpoint
//! becomes an [`Operation`]: which resource, which action, and the path ids
//! typed by their columns (a malformed id cannot exist, so it is a 404).

use crate::error::ApiError;
use crate::routes::{Action, Matched, Target};
use crate::schema::{AppModel, Column, Resource};
use crate::value::{self, Value};

/// A restriction of a route to the children of one parent row
/// (`/colleges/{id}/majors` → majors whose `college_id` is `id`).
#[derive(Debug, Clone)]
pub struct Scope<'m> {
    /// The parent resource.
    pub parent: &'m Resource,
    /// The parent row's id.
    pub parent_id: Value,
    /// The child's ref column that points at the parent.
    pub via: &'m Column,
}

/// What a resource request asks for.
#[derive(Debug, Clone)]
pub enum Operation<'m> {
    /// `GET /{res}` or `GET /{parent}/{pid}/{res}`.
    List {
        /// The listed resource.
        resource: &'m Resource,
        /// Parent restriction of a nested route.
        scope: Option<Scope<'m>>,
    },
    /// `POST /{res}`.
    Create {
        /// The resource created.
        resource: &'m Resource,
    },
    /// `GET /{res}/{id}` or `GET /{parent}/{pid}/{res}/{id}`.
    Get {
        /// The resource read.
        resource: &'m Resource,
        /// The row's id.
        id: Value,
        /// Parent restriction of a nested route.
        scope: Option<Scope<'m>>,
    },
    /// `PATCH /{res}/{id}`.
    Update {
        /// The resource updated.
        resource: &'m Resource,
        /// The row's id.
        id: Value,
    },
    /// `PUT /{res}/{id}`.
    Replace {
        /// The resource replaced.
        resource: &'m Resource,
        /// The row's id.
        id: Value,
    },
    /// `DELETE /{res}/{id}`.
    Delete {
        /// The resource deleted from.
        resource: &'m Resource,
        /// The row's id.
        id: Value,
    },
}

/// The resource being operated on.
impl<'m> Operation<'m> {
    /// The resource the operation is about.
    pub fn resource(&self) -> &'m Resource {
        match self {
            Operation::List { resource, .. }
            | Operation::Create { resource }
            | Operation::Get { resource, .. }
            | Operation::Update { resource, .. }
            | Operation::Replace { resource, .. }
            | Operation::Delete { resource, .. } => resource,
        }
    }
}

fn resource<'m>(model: &'m AppModel, name: &str) -> Result<&'m Resource, ApiError> {
    model
        .resource(name)
        .ok_or_else(|| ApiError::not_found(format!("no resource named \"{name}\"")))
}

/// Parses a path id into the resource's key type; a malformed id cannot exist, so it is a 404.
pub fn parse_id(resource: &Resource, raw: &str) -> Result<Value, ApiError> {
    let column = resource.id_column();
    let missing =
        || ApiError::not_found(format!("no {} with {} {raw}", resource.name, column.name));
    let id = value::from_text(column, raw).map_err(|_| missing())?;
    value::check(column, &id).map_err(|_| missing())?;
    Ok(id)
}

/// The operation a resource endpoint performs, with its path ids typed.
pub fn operation<'m>(
    model: &'m AppModel,
    matched: &Matched<'_>,
) -> Result<Operation<'m>, ApiError> {
    let action = matched.endpoint.action;
    let param = |i: usize| {
        matched
            .params
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| ApiError::internal("a route template without its parameter"))
    };
    let scope = |parent: &str, child: &'m Resource, via: &str| -> Result<Scope<'m>, ApiError> {
        let parent = resource(model, parent)?;
        Ok(Scope {
            parent,
            parent_id: parse_id(parent, param(0)?)?,
            via: child
                .column(via)
                .ok_or_else(|| ApiError::internal("a nested route through an unknown column"))?,
        })
    };
    Ok(match (&matched.route.target, action) {
        (Target::Collection { resource: name }, Action::List) => Operation::List {
            resource: resource(model, name)?,
            scope: None,
        },
        (Target::Collection { resource: name }, Action::Create) => Operation::Create {
            resource: resource(model, name)?,
        },
        (Target::Item { resource: name }, action) => {
            let resource = resource(model, name)?;
            let id = parse_id(resource, param(0)?)?;
            match action {
                Action::Read => Operation::Get {
                    resource,
                    id,
                    scope: None,
                },
                Action::Update => Operation::Update { resource, id },
                Action::Replace => Operation::Replace { resource, id },
                Action::Delete => Operation::Delete { resource, id },
                other => return Err(not_a_resource_action(other)),
            }
        }
        (Target::NestedCollection { parent, child, via }, Action::List) => {
            let child = resource(model, child)?;
            Operation::List {
                scope: Some(scope(parent, child, via)?),
                resource: child,
            }
        }
        (Target::NestedItem { parent, child, via }, Action::Read) => {
            let child = resource(model, child)?;
            let scope = scope(parent, child, via)?;
            Operation::Get {
                id: parse_id(child, param(1)?)?,
                resource: child,
                scope: Some(scope),
            }
        }
        (_, other) => return Err(not_a_resource_action(other)),
    })
}

fn not_a_resource_action(action: Action) -> ApiError {
    ApiError::internal(format!("{action:?} is not an action on a resource"))
}
