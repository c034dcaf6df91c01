//! CORS, answered from the route table: a preflight lists exactly the
//! methods of the route it asks about (tower-http's layer takes one fixed list
//! for the whole server), and actual responses carry the allowed origin and
//! the headers a browser may read. Origins come from `--cors-origin`; without
//! any, no CORS header is ever sent and `OPTIONS` is answered like any other
//! method a route does not take (405).

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use crate::Settings;

/// Seconds a browser may cache a preflight answer.
const MAX_AGE: &str = "600";

/// Headers a browser may send (plus the API key header, when configured).
const ALLOWED_HEADERS: &[&str] = &[
    "content-type",
    "authorization",
    "if-match",
    "if-none-match",
    "x-request-id",
];

/// Response headers a browser may read.
const EXPOSED_HEADERS: &str = "etag, location, x-request-id";

/// The CORS policy of one server.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    allow_headers: HeaderValue,
}

impl Cors {
    /// The policy `settings` configure, `None` when CORS is off.
    pub(crate) fn new(settings: &Settings, extra_headers: &[HeaderName]) -> Option<Cors> {
        if settings.cors_origins.is_empty() {
            return None;
        }
        let names: Vec<&str> = ALLOWED_HEADERS
            .iter()
            .copied()
            .chain(extra_headers.iter().map(HeaderName::as_str))
            .collect();
        Some(Cors {
            any_origin: settings.cors_origins.iter().any(|o| o == "*"),
            origins: settings
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            allow_headers: HeaderValue::from_str(&names.join(", "))
                .unwrap_or_else(|_| HeaderValue::from_static("content-type")),
        })
    }

    /// Whether `headers` make this request a preflight.
    pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if self.any_origin {
            Some(HeaderValue::from_static("*"))
        } else {
            self.origins.contains(origin).then(|| origin.clone())
        }
    }

    /// The answer to a preflight for a route taking `methods`: 204, and the
    /// CORS headers only when the origin is allowed.
    pub(crate) fn preflight(&self, headers: &HeaderMap, methods: &[Method]) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        if let Some(origin) = self.allow_origin(headers.get(header::ORIGIN)) {
            let methods: Vec<&str> = methods.iter().map(Method::as_str).collect();
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
                out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
            }
            out.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                self.allow_headers.clone(),
            );
            out.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
        }
        response
    }

    /// Adds the CORS headers of an actual (non-preflight) response to a
    /// request that carried `origin` (its `Origin` header, if any).
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, response: &mut Response) {
        let out = response.headers_mut();
        out.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = self.allow_origin(origin) {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            out.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
        }
    }
}
