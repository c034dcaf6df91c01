//! Field shapes: how each column of a resource appears in each mode —
//! create, update (PATCH), replace (PUT) and read. Body parsing, rendering and
//! the OpenAPI document read these, so what a body must carry, what it may
//! not, and what a response shows are decided in this one place.

use serde_json::Value as Json;

use super::model::{Column, ColumnRole, Resource, Rule};

/// A way a resource is written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `POST` (and the row a `PUT` creates).
    Create,
    /// `PATCH`: any subset of writable fields.
    Update,
    /// `PUT`: a whole representation.
    Replace,
    /// Responses.
    Read,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 4] = [Mode::Create, Mode::Update, Mode::Replace, Mode::Read];
}

/// Whether and how a field appears in a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Bodies must carry it.
    Required,
    /// Bodies may carry it (its default applies on create and replace).
    Optional,
    /// The server sets it: a body carrying it is refused (`read_only`);
    /// responses show it.
    ReadOnly,
    /// Never in a body nor in a response (hidden fields).
    Absent,
}

/// One field in one mode.
#[derive(Debug, Clone)]
pub struct FieldShape<'m> {
    /// The column.
    pub column: &'m Column,
    /// Whether and how it appears.
    pub presence: Presence,
    /// Whether `null` is a value of it.
    pub nullable: bool,
    /// A rule the caller must also meet to write it (`role`, password hashes…).
    pub writable_by: Option<&'m Rule>,
    /// The value a create or replace gives it when the body omits it.
    pub default: Option<&'m Json>,
}

/// The shape of every column of `resource` in `mode`, in column order.
pub fn shape(resource: &Resource, mode: Mode) -> Vec<FieldShape<'_>> {
    resource
        .columns
        .iter()
        .map(|column| FieldShape {
            presence: presence(resource, column, mode),
            nullable: column.nullable(),
            writable_by: column.writable.as_ref(),
            default: column.constraints.default.as_ref(),
            column,
        })
        .collect()
}

fn presence(resource: &Resource, column: &Column, mode: Mode) -> Presence {
    let client_key = column.role == ColumnRole::Id && resource.has_client_key();
    if mode == Mode::Read {
        return if column.hidden {
            Presence::Absent
        } else {
            Presence::ReadOnly
        };
    }
    if client_key {
        // The key is the URL's on PATCH and PUT: a body may repeat it (it must match).
        return match mode {
            Mode::Create => Presence::Required,
            _ => Presence::Optional,
        };
    }
    if !column.is_writable() {
        return Presence::ReadOnly;
    }
    if column.writable.is_some() {
        // Never demanded from a caller who may not be allowed to send it.
        return Presence::Optional;
    }
    let required = column.constraints.required && column.constraints.default.is_none();
    match mode {
        Mode::Create | Mode::Replace if required => Presence::Required,
        _ => Presence::Optional,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::load_str;

    fn presences(schema: &str, resource: &str, mode: Mode) -> Vec<(String, Presence)> {
        let model = load_str(schema).unwrap();
        shape(model.resource(resource).unwrap(), mode)
            .iter()
            .map(|f| (f.column.name.clone(), f.presence))
            .collect::<Vec<_>>()
    }

    #[test]
    fn required_fields_are_required_on_create_and_replace_but_not_on_update() {
        let schema = "[app]\nname='t'\n[resources.notes]\nfields.title={type='string',required=true}\nfields.n={type='integer',required=true,default=1}\n";
        let get = |mode| presences(schema, "notes", mode);
        assert_eq!(get(Mode::Create)[1], ("title".into(), Presence::Required));
        assert_eq!(get(Mode::Replace)[1], ("title".into(), Presence::Required));
        assert_eq!(get(Mode::Update)[1], ("title".into(), Presence::Optional));
        assert_eq!(get(Mode::Create)[2], ("n".into(), Presence::Optional));
        assert_eq!(get(Mode::Create)[0], ("id".into(), Presence::ReadOnly));
        assert_eq!(
            get(Mode::Create)[3],
            ("created_at".into(), Presence::ReadOnly)
        );
    }

    #[test]
    fn a_client_key_is_required_on_create_only_and_hidden_fields_are_never_read() {
        let schema = "[app]\nname='t'\n[resources.users]\nid={type='string',name='userId'}\nfields.secret={type='string',hidden=true}\n";
        assert_eq!(
            presences(schema, "users", Mode::Create)[0].1,
            Presence::Required
        );
        assert_eq!(
            presences(schema, "users", Mode::Replace)[0].1,
            Presence::Optional
        );
        assert_eq!(
            presences(schema, "users", Mode::Read)[1].1,
            Presence::Absent
        );
    }
}
