//! Stage 4, render: an [`Outcome`] becomes an HTTP response: JSON body with
//! projection and expansion applied, `Location`, `ETag` (strong from the row
//! version for plain rows, weak from a body hash otherwise), `304` for a
//! matching `If-None-Match`, and the resource's `Cache-Control` on reads.

use std::hash::{Hash, Hasher};

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as Json};

use crate::execute::{Outcome, RowStatus, Shape};
use crate::request::Preconditions;
use crate::request::query::expand_key;
use crate::schema::Resource;
use crate::storage::StoredRow;

/// One stored row with projection and expansion applied, serialised by
/// reference: a page of large rows is written out without copying a value.
struct ShapedRow<'a> {
    row: &'a StoredRow,
    shape: &'a Shape,
}

impl Serialize for ShapedRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let values = &self.row.values;
        // Each expansion renders under `<name>` (`major_id` → `major`): in place
        // of a field of that name if there is one, else after the fields.
        let expansions: Vec<(&str, Option<&Map<String, Json>>)> = self
            .shape
            .expansions
            .iter()
            .map(|(column, targets)| {
                let target = match values.get(column) {
                    None | Some(Json::Null) => None,
                    Some(Json::String(s)) => targets.get(s),
                    Some(other) => targets.get(&other.to_string()),
                };
                (expand_key(column), target)
            })
            .collect();
        let mut placed = vec![false; expansions.len()];
        let mut map = serializer.serialize_map(None)?;
        let mut entry = |map: &mut S::SerializeMap, k: &str, v: &Json| match expansions
            .iter()
            .position(|(key, _)| *key == k)
        {
            Some(i) => {
                placed[i] = true;
                map.serialize_entry(k, &expansions[i].1)
            }
            None => map.serialize_entry(k, v),
        };
        match &self.shape.fields {
            None => {
                for (k, v) in values {
                    entry(&mut map, k, v)?;
                }
            }
            Some(fields) => {
                for f in fields {
                    if let Some(v) = values.get(f) {
                        entry(&mut map, f, v)?;
                    }
                }
            }
        }
        for ((key, target), placed) in expansions.iter().zip(placed) {
            if !placed {
                map.serialize_entry(key, target)?;
            }
        }
        map.end()
    }
}

fn shaped_json(row: &StoredRow, shape: &Shape) -> Vec<u8> {
    serde_json::to_vec(&ShapedRow { row, shape }).unwrap_or_default()
}

/// The body of a list response.
#[derive(serde::Serialize)]
struct Listing<'a> {
    items: Vec<ShapedRow<'a>>,
    next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
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
            let items: Vec<ShapedRow<'_>> = rows
                .iter()
                .map(|row| ShapedRow { row, shape: &shape })
                .collect();
            let bytes = serde_json::to_vec(&Listing {
                items,
                next_cursor,
                total,
            })
            .unwrap_or_default();
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
            let bytes = shaped_json(&row, &shape);
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
            let items: Vec<&Map<String, Json>> = rows.iter().map(|r| &r.values).collect();
            json_response(
                StatusCode::CREATED,
                serde_json::to_vec(&items).unwrap_or_default(),
            )
        }
        Outcome::Deleted | Outcome::Written => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    }
}

/// Puts the external base path (`/dev`: what the client's paths have before
/// the API's own, behind API Gateway) in front of a `Location` this API
/// wrote as one of its own paths.
pub(crate) fn prefix_location(response: &mut Response, base: &str) {
    let Some(location) = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|l| l.starts_with('/'))
    else {
        return;
    };
    if let Ok(value) = http::HeaderValue::from_str(&format!("{base}{location}")) {
        response.headers_mut().insert(header::LOCATION, value);
    }
}
