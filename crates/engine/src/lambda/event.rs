//! Lambda events → HTTP requests. Reads the four shapes that carry an HTTP
//! request — API Gateway REST API (payload 1.0, also an HTTP API's 1.0
//! payload), HTTP API (2.0), Function URL (2.0 as well) and ALB, with or
//! without multi-value headers — into one `http::Request` the router serves,
//! plus what the reply needs: the shape to answer in and the external path
//! prefix (the stage or custom-domain base path) the client sees before the
//! API's own paths.
//!
//! Why not `lambda_http`'s conversion: it panics on a body that is not
//! base64 and on a path that is not a URI (we answer 400), it puts a REST
//! API's stage into the path with no way to strip it from an HTTP API's,
//! knows no custom-domain base path, keeps one value of repeated HTTP API
//! response headers, and treats a response without `Content-Type` as text.
//! The events are plain JSON read here with serde; `lambda_runtime` still
//! speaks the Runtime API.

use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::auth::GatewayContext;
use crate::error::{ApiError, Code};
use crate::routes::strip_segment_prefix;

/// The event format a reply must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// API Gateway payload 1.0: `multiValueHeaders` in the reply.
    V1,
    /// API Gateway HTTP API 2.0 and Function URLs: `headers` and `cookies`.
    V2,
    /// An Application Load Balancer target group, which answers in the
    /// header form the event used.
    Alb {
        /// The target group has multi-value headers on.
        multi_value: bool,
    },
}

/// The external path prefix of a request: what the client's path had before
/// the API's own path (`/dev` for a REST API stage, `/api` for a custom
/// domain's base path). `Location` headers carry it.
#[derive(Debug, Clone)]
pub(crate) struct BasePath(pub String);

/// An event, read.
pub(crate) struct Incoming {
    /// How to answer.
    pub shape: Shape,
    /// The request, or why the event is not one (answered as a 400 in `shape`).
    pub request: Result<Request<Body>, ApiError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Event {
    version: Option<String>,
    http_method: Option<String>,
    path: Option<String>,
    raw_path: Option<String>,
    raw_query_string: Option<String>,
    headers: Option<Map<String, Json>>,
    multi_value_headers: Option<Map<String, Json>>,
    query_string_parameters: Option<Map<String, Json>>,
    multi_value_query_string_parameters: Option<Map<String, Json>>,
    cookies: Option<Vec<String>>,
    body: Option<String>,
    is_base64_encoded: bool,
    request_context: Option<Json>,
}

/// What a raw query string may hold as it is; the rest is percent-encoded.
/// A `%` stays only where it starts an escape (see [`encode`]).
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^')
    .add(b'[')
    .add(b']');
/// What a path may hold as it is: a query's characters but `?`.
const PATH: &AsciiSet = &QUERY.add(b'?');

/// `text` made a valid URI part: characters a URI cannot hold are
/// percent-encoded, and so is a `%` that does not start an escape. API
/// Gateway hands REST API paths over decoded and HTTP API paths as sent;
/// both come out as one valid path that the router decodes once.
fn encode(text: &str, set: &'static AsciiSet) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let escape = bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            out.extend(utf8_percent_encode(&text[start..i], set));
            out.push_str(if escape { "%" } else { "%25" });
            start = i + 1;
        }
    }
    out.extend(utf8_percent_encode(&text[start..], set));
    out
}

fn malformed(detail: String) -> ApiError {
    ApiError::bad_request(Code::MalformedEvent, detail)
}

/// The strings of a header or parameter map value: a string, an array of
/// strings, or null (nothing).
fn strings(value: &Json) -> Result<Vec<&str>, String> {
    match value {
        Json::Null => Ok(Vec::new()),
        Json::String(s) => Ok(vec![s]),
        Json::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| "a value that is not a string".to_owned())
            })
            .collect(),
        _ => Err("a value that is not a string".to_owned()),
    }
}

/// Reads an event. `None` when it is not an HTTP event at all (no shape to
/// answer in). `base_path` is the configured custom-domain base path.
pub(crate) fn read(event: Json, aws_request_id: &str, base_path: Option<&str>) -> Option<Incoming> {
    let event: Event = serde_json::from_value(event).ok()?;
    let context = event.request_context.clone().unwrap_or(Json::Null);
    let shape = if context.get("elb").is_some() {
        Shape::Alb {
            multi_value: event.multi_value_headers.is_some(),
        }
    } else if event.version.as_deref() == Some("2.0") {
        Shape::V2
    } else if event.http_method.is_some() {
        Shape::V1
    } else {
        return None;
    };
    let request = request(event, shape, context, aws_request_id, base_path);
    Some(Incoming { shape, request })
}

fn request(
    event: Event,
    shape: Shape,
    context: Json,
    aws_request_id: &str,
    base_path: Option<&str>,
) -> Result<Request<Body>, ApiError> {
    let text = |v: &Json, key: &str| v.get(key).and_then(Json::as_str).map(str::to_owned);
    let method = match shape {
        Shape::V2 => context.get("http").and_then(|h| text(h, "method")),
        _ => event.http_method.clone(),
    }
    .ok_or_else(|| malformed("the event names no HTTP method".to_owned()))?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| malformed(format!("{method:?} is not an HTTP method")))?;

    // The path as the API sees it, and the prefix the client saw before it.
    let raw_path = match shape {
        Shape::V2 => event.raw_path.clone(),
        _ => event.path.clone(),
    }
    .filter(|p| p.starts_with('/'))
    .unwrap_or_else(|| "/".to_owned());
    let mut path = raw_path.as_str();
    let mut prefix = String::new();
    if shape == Shape::V2
        && let Some(stage) = text(&context, "stage").filter(|s| s != "$default")
        && let Some(rest) = strip_segment_prefix(path, &format!("/{stage}"))
    {
        // An HTTP API's named stage stays in rawPath.
        prefix = format!("/{stage}");
        path = rest;
    }
    if let Some(base) = base_path
        && let Some(rest) = strip_segment_prefix(path, base)
    {
        prefix.push_str(base);
        path = rest;
    } else if shape == Shape::V1
        && let Some(outer) = text(&context, "path")
        && let Some(before) = outer.strip_suffix(path).filter(|b| b.starts_with('/'))
    {
        // A REST API's path leaves out its stage (and a custom domain's
        // base path); the context's path has them in front.
        prefix = before.trim_end_matches('/').to_owned();
    }

    let query = match shape {
        Shape::V2 => event.raw_query_string.as_deref().map(|q| encode(q, QUERY)),
        Shape::V1 | Shape::Alb { .. } => {
            let params = event
                .multi_value_query_string_parameters
                .as_ref()
                .or(event.query_string_parameters.as_ref());
            let mut pairs = Vec::new();
            for (name, values) in params.into_iter().flatten() {
                let values = strings(values)
                    .map_err(|e| malformed(format!("query parameter {name:?} has {e}")))?;
                for value in values {
                    pairs.push((name.as_str(), value));
                }
            }
            if matches!(shape, Shape::Alb { .. }) {
                // A load balancer passes parameters as the client sent them.
                let joined: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        if v.is_empty() && !k.is_empty() {
                            encode(k, QUERY)
                        } else {
                            format!("{}={}", encode(k, QUERY), encode(v, QUERY))
                        }
                    })
                    .collect();
                Some(joined.join("&"))
            } else {
                // API Gateway decodes them; they are encoded again here.
                let mut serializer = form_urlencoded::Serializer::new(String::new());
                serializer.extend_pairs(pairs);
                Some(serializer.finish())
            }
        }
    }
    .filter(|q| !q.is_empty());
    let uri = match &query {
        Some(q) => format!("{}?{q}", encode(path, PATH)),
        None => encode(path, PATH),
    };

    let mut headers = HeaderMap::new();
    let given = event
        .multi_value_headers
        .as_ref()
        .or(event.headers.as_ref());
    for (name, values) in given.into_iter().flatten() {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| malformed(format!("{name:?} is not a valid header name")))?;
        let values = strings(values).map_err(|e| malformed(format!("header {name:?} has {e}")))?;
        for value in values {
            let value = HeaderValue::from_str(value)
                .map_err(|_| malformed(format!("header {name:?} has a value that is not valid")))?;
            headers.append(header.clone(), value);
        }
    }
    if let Some(cookies) = event.cookies.filter(|c| !c.is_empty()) {
        let value = HeaderValue::from_str(&cookies.join("; "))
            .map_err(|_| malformed("a cookie that is not valid header text".to_owned()))?;
        headers.insert(http::header::COOKIE, value);
    }
    // The invocation's id names the request unless the client named it: the
    // response and every log line carry it.
    if !headers.contains_key(crate::server::REQUEST_ID)
        && let Ok(id) = HeaderValue::from_str(aws_request_id)
    {
        headers.insert(crate::server::REQUEST_ID, id);
    }

    let body = match event.body {
        Some(text) if event.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| malformed("the event's body is marked base64 but is not".to_owned()))?,
        Some(text) => text.into_bytes(),
        None => Vec::new(),
    };

    let mut request = Request::builder()
        .method(method)
        .uri(&uri)
        .body(Body::from(body))
        .map_err(|_| malformed(format!("{uri:?} is not a valid request target")))?;
    *request.headers_mut() = headers;
    if !prefix.is_empty() {
        request.extensions_mut().insert(BasePath(prefix));
    }
    if context.get("authorizer").is_some() {
        request
            .extensions_mut()
            .insert(GatewayContext(Arc::new(context)));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_valid_uris_without_decoding_an_escape_twice() {
        assert_eq!(encode("/students/a b", PATH), "/students/a%20b");
        assert_eq!(encode("/students/a%20b", PATH), "/students/a%20b");
        assert_eq!(encode("/100%", PATH), "/100%25");
        assert_eq!(encode("/é?#", PATH), "/%C3%A9%3F%23");
        assert_eq!(encode("a=1&b=x y", QUERY), "a=1&b=x%20y");
    }

    #[test]
    fn a_prefix_is_stripped_only_as_whole_segments() {
        assert_eq!(
            strip_segment_prefix("/dev/students", "/dev"),
            Some("/students")
        );
        assert_eq!(strip_segment_prefix("/dev", "/dev"), Some("/"));
        assert_eq!(strip_segment_prefix("/devices", "/dev"), None);
        assert_eq!(strip_segment_prefix("/students", ""), None);
    }
}
