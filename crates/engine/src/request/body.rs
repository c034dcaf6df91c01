//! Request bodies: media type, size, JSON syntax, then every field typed and
//! checked against the schema. All failing fields are reported together.

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::error::{ApiError, Code};
use crate::schema::shape::{FieldShape, Mode, Presence, shape};
use crate::schema::{ColumnRole, Resource};
use crate::value::{self, FieldCode, FieldError, Value};

/// Most rows accepted in one bulk create.
pub const MAX_BULK: usize = 1000;

/// Column name → typed value, in schema order for the columns the client sent.
pub type Record = IndexMap<String, Value>;

/// What the body is for: decides which fields are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// POST: required fields must be present; client keys are required.
    Create,
    /// PATCH: any subset of writable fields.
    Patch,
    /// PUT: a whole representation; required fields must be present.
    Replace,
}

/// A parsed body: one object, or an array for bulk creates.
#[derive(Debug, Clone)]
pub enum Body {
    /// A single object.
    One(Record),
    /// An array of objects (POST only).
    Many(Vec<Record>),
}

/// Checks that the request carries JSON.
pub fn check_media_type(content_type: Option<&str>) -> Result<(), ApiError> {
    let Some(ct) = content_type else {
        return Err(ApiError::UnsupportedMediaType);
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Parses and validates a body for `resource`. `path_id` is the id in the URL
/// for PATCH/PUT: a key in the body must equal it.
pub fn parse(
    resource: &Resource,
    mode: BodyMode,
    bytes: &[u8],
    path_id: Option<&Value>,
) -> Result<Body, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            Code::MissingBody,
            "a JSON body is required",
        ));
    }
    let json: Json = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    // Once per body, not once per item of a bulk create.
    let fields = shape(resource, mode.into());
    match json {
        Json::Object(map) => {
            let mut errors = Vec::new();
            let record = parse_object(resource, &fields, &map, path_id, "", &mut errors);
            if errors.is_empty() {
                Ok(Body::One(record))
            } else {
                Err(ApiError::Validation { errors })
            }
        }
        Json::Array(items) if mode == BodyMode::Create => {
            if items.is_empty() {
                return Err(ApiError::bad_request(
                    Code::EmptyArray,
                    "a bulk create needs at least one object",
                ));
            }
            if items.len() > MAX_BULK {
                return Err(ApiError::bad_request(
                    Code::TooManyItems,
                    format!("a bulk create takes at most {MAX_BULK} objects"),
                ));
            }
            let mut errors = Vec::new();
            let mut records = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let prefix = format!("[{i}].");
                match item {
                    Json::Object(map) => records.push(parse_object(
                        resource,
                        &fields,
                        map,
                        None,
                        &prefix,
                        &mut errors,
                    )),
                    _ => errors.push(FieldError::new(
                        &format!("[{i}]"),
                        FieldCode::Type,
                        "must be an object",
                    )),
                }
            }
            if errors.is_empty() {
                Ok(Body::Many(records))
            } else {
                Err(ApiError::Validation { errors })
            }
        }
        _ => Err(ApiError::bad_request(
            Code::MalformedBody,
            if mode == BodyMode::Create {
                "the body must be a JSON object or an array of objects"
            } else {
                "the body must be a JSON object"
            },
        )),
    }
}

/// Parses one object of a body whose mode gives `fields` their shape.
fn parse_object(
    resource: &Resource,
    fields: &[FieldShape<'_>],
    map: &serde_json::Map<String, Json>,
    path_id: Option<&Value>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) -> Record {
    let mut push = |mut e: FieldError| {
        e.field = format!("{prefix}{}", e.field);
        errors.push(e);
    };
    for key in map.keys() {
        match fields.iter().find(|f| &f.column.name == key) {
            None => push(FieldError::new(
                key,
                FieldCode::UnknownField,
                format!("{} has no field \"{key}\"", resource.name),
            )),
            Some(f) if f.presence == Presence::ReadOnly => push(FieldError::new(
                key,
                FieldCode::ReadOnly,
                "is read-only and set by the server",
            )),
            Some(_) => {}
        }
    }
    let mut record = Record::new();
    for field in fields {
        if field.presence == Presence::ReadOnly {
            continue;
        }
        let column = field.column;
        match map.get(&column.name) {
            Some(json) => {
                let parsed = value::from_json(column, json)
                    .and_then(|v| value::check(column, &v).map(|_| v));
                match parsed {
                    Ok(v) => {
                        if column.role == ColumnRole::Id
                            && let Some(id) = path_id
                            && &v != id
                        {
                            push(FieldError::new(
                                &column.name,
                                FieldCode::KeyMismatch,
                                "must equal the id in the URL (keys cannot be changed)",
                            ));
                        }
                        record.insert(column.name.clone(), v);
                    }
                    Err(e) => push(e),
                }
            }
            None if field.presence == Presence::Required => push(FieldError::new(
                &column.name,
                FieldCode::Required,
                "is required",
            )),
            None => {}
        }
    }
    record
}

impl From<BodyMode> for Mode {
    fn from(mode: BodyMode) -> Mode {
        match mode {
            BodyMode::Create => Mode::Create,
            BodyMode::Patch => Mode::Update,
            BodyMode::Replace => Mode::Replace,
        }
    }
}
