//! Stage 4, render: an [`Outcome`] becomes an HTTP response: JSON body with
//! projection and expansion applied, `Location`, `ETag` (strong from the row
//! version for plain rows, weak from a body hash otherwise), `304` for a
//! matching `If-None-Match`, and the resource's `Cache-Control` on reads.

use std::hash::{Hash, Hasher};

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value as Json, json};

use crate::execute::{Outcome, RowStatus, Shape};
use crate::request::Preconditions;
use crate::request::query::expand_key;
use crate::schema::Resource;
use crate::storage::StoredRow;

/// Applies projection and expansion to one stored row.
pub fn shape_row(row: &StoredRow, shape: &Shape) -> Map<String, Json> {
    let mut out = match &shape.fields {
        None => row.values.clone(),
        Some(fields) => fields
            .iter()
            .filter_map(|f| row.values.get(f).map(|v| (f.clone(), v.clone())))
            .collect(),
    };
    for (column, targets) in &shape.expansions {
        let id = row.values.get(column).cloned().unwrap_or(Json::Null);
        let key = match &id {
            Json::Null => None,
            Json::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        let expanded = key
            .and_then(|k| targets.get(&k))
            .map_or(Json::Null, |m| Json::Object(m.clone()));
        out.insert(expand_key(column).to_owned(), expanded);
    }
    out
}

fn weak_etag(body: &[u8]) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("W/\"{:016x}\"", hasher.finish())
}

/// The strong ETag of a stored row.
pub fn strong_etag(row: &StoredRow) -> String {
    format!("\"{}\"", row.version)
}

/// Characters escaped in a path segment (RFC 3986 `pchar` keeps the rest).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The canonical URL path of a row.
pub fn location(resource: &Resource, row: &StoredRow) -> Option<String> {
    let id = row.values.get(&resource.id_column().name)?;
    let text = match id {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let encoded = percent_encoding::utf8_percent_encode(&text, PATH_SEGMENT);
    Some(format!("/{}/{}", resource.name, encoded))
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn set(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

/// A read response with ETag, Cache-Control and If-None-Match handling.
fn cacheable(
    resource: &Resource,
    shared: bool,
    body: Vec<u8>,
    etag: String,
    preconditions: &Preconditions,
    head: bool,
) -> Response {
    let not_modified = preconditions.if_none_match.matches_weakly(&etag);
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if head {
        let mut r = json_response(StatusCode::OK, Vec::new());
        set(&mut r, header::CONTENT_LENGTH, &body.len().to_string());
        r
    } else {
        json_response(StatusCode::OK, body)
    };
    set(&mut response, header::ETAG, &etag);
    if let Some(cc) = &resource.cache_control {
        if shared {
            set(&mut response, header::CACHE_CONTROL, cc);
        } else {
            // The answer depends on who asks: no shared cache may keep it.
            let own: Vec<&str> = cc
                .split(',')
                .map(str::trim)
                .filter(|d| {
                    !d.eq_ignore_ascii_case("public")
                        && !d.to_ascii_lowercase().starts_with("s-maxage")
                })
                .collect();
            let value = std::iter::once("private")
                .chain(own)
                .collect::<Vec<_>>()
                .join(", ");
            set(&mut response, header::CACHE_CONTROL, &value);
            set(&mut response, header::VARY, "Authorization");
        }
    }
    response
}

/// Whether every caller gets the same answer from reads of `resource`.
fn publicly_readable(resource: &Resource, list: bool) -> bool {
    use crate::schema::Rule;
    resource.rules.read == Rule::Public && (!list || resource.rules.list == Rule::Public)
}

/// Renders an outcome.
pub fn render(outcome: Outcome<'_>, preconditions: &Preconditions, head: bool) -> Response {
    match outcome {
        Outcome::Page {
            resource,
            rows,
            next_cursor,
            total,
            shape,
        } => {
            let items: Vec<Json> = rows
                .iter()
                .map(|r| Json::Object(shape_row(r, &shape)))
                .collect();
            let mut body = json!({"items": items, "next_cursor": next_cursor});
            if let Some(total) = total {
                body["total"] = json!(total);
            }
            let bytes = body.to_string().into_bytes();
            let etag = weak_etag(&bytes);
            cacheable(
                resource,
                publicly_readable(resource, true),
                bytes,
                etag,
                preconditions,
                head,
            )
        }
        Outcome::Row {
            resource,
            row,
            status,
            shape,
        } => {
            let bytes = Json::Object(shape_row(&row, &shape))
                .to_string()
                .into_bytes();
            let etag = if shape.is_plain() {
                strong_etag(&row)
            } else {
                weak_etag(&bytes)
            };
            match status {
                RowStatus::Read => cacheable(
                    resource,
                    publicly_readable(resource, false),
                    bytes,
                    etag,
                    preconditions,
                    head,
                ),
                RowStatus::Updated => {
                    let mut response = json_response(StatusCode::OK, bytes);
                    set(&mut response, header::ETAG, &etag);
                    response
                }
                RowStatus::Created => {
                    let mut response = json_response(StatusCode::CREATED, bytes);
                    set(&mut response, header::ETAG, &etag);
                    if let Some(loc) = location(resource, &row) {
                        set(&mut response, header::LOCATION, &loc);
                    }
                    response
                }
            }
        }
        Outcome::Rows { rows, .. } => {
            let items: Vec<Json> = rows.into_iter().map(|r| Json::Object(r.values)).collect();
            json_response(
                StatusCode::CREATED,
                Json::Array(items).to_string().into_bytes(),
            )
        }
        Outcome::Deleted | Outcome::Written => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    }
}
