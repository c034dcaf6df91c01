//! Resource routing: `(method, path)` → which operation on which resource, with
//! the path ids already typed. Unknown resources are 404, known routes with the
//! wrong method are 405 with `Allow`. Trailing slashes are tolerated.

use http::Method;

use crate::error::ApiError;
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

fn method_not_allowed(allow: &[Method]) -> ApiError {
    ApiError::MethodNotAllowed {
        allow: allow.to_vec(),
    }
}

fn nested<'m>(
    model: &'m AppModel,
    parent_name: &str,
    parent_id: &str,
    child_name: &str,
) -> Result<Scope<'m>, ApiError> {
    let parent = resource(model, parent_name)?;
    let child = resource(model, child_name)?;
    let mut refs = child.refs_to(&parent.name);
    let via = match (refs.next(), refs.next()) {
        (Some(via), None) => via,
        (None, _) => {
            return Err(ApiError::not_found(format!(
                "{child_name} has no reference to {parent_name}"
            )));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::not_found(format!(
                "{child_name} has several references to {parent_name}; filter /{child_name} by the field instead"
            )));
        }
    };
    Ok(Scope {
        parent,
        parent_id: parse_id(parent, parent_id)?,
        via,
    })
}

const COLLECTION: [Method; 2] = [Method::GET, Method::POST];
const ITEM: [Method; 4] = [Method::GET, Method::PATCH, Method::PUT, Method::DELETE];
const READ_ONLY: [Method; 1] = [Method::GET];

/// Routes a request to a resource operation.
pub fn route<'m>(
    model: &'m AppModel,
    method: &Method,
    path: &str,
) -> Result<Operation<'m>, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        [name] if !name.is_empty() => {
            let resource = resource(model, name)?;
            match *method {
                _ if get => Ok(Operation::List {
                    resource,
                    scope: None,
                }),
                Method::POST => Ok(Operation::Create { resource }),
                _ => Err(method_not_allowed(&COLLECTION)),
            }
        }
        [name, id] => {
            let resource = resource(model, name)?;
            if !(get || matches!(*method, Method::PATCH | Method::PUT | Method::DELETE)) {
                return Err(method_not_allowed(&ITEM));
            }
            let id = parse_id(resource, id)?;
            Ok(match *method {
                _ if get => Operation::Get {
                    resource,
                    id,
                    scope: None,
                },
                Method::PATCH => Operation::Update { resource, id },
                Method::PUT => Operation::Replace { resource, id },
                _ => Operation::Delete { resource, id },
            })
        }
        [parent, pid, child] => {
            let scope = nested(model, parent, pid, child)?;
            if !get {
                return Err(method_not_allowed(&READ_ONLY));
            }
            Ok(Operation::List {
                resource: resource(model, child)?,
                scope: Some(scope),
            })
        }
        [parent, pid, child, id] => {
            let scope = nested(model, parent, pid, child)?;
            if !get {
                return Err(method_not_allowed(&READ_ONLY));
            }
            let resource = resource(model, child)?;
            Ok(Operation::Get {
                id: parse_id(resource, id)?,
                resource,
                scope: Some(scope),
            })
        }
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    }
}
