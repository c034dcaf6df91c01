//! `GET /docs`: the interactive API reference, served from the binary.
//!
//! Owns the page (Swagger UI booted on `./openapi.json`, "try it out" open,
//! authorizations kept across reloads) and its assets: the vendored
//! `swagger-ui-dist` files under `crates/engine/assets/` and the page's own
//! HTML, JS and CSS, all embedded with `include_bytes!`. Nothing is fetched
//! from anywhere but the serving origin: the page's Content-Security-Policy
//! allows `'self'` only.
//!
//! Assets are served at `/docs/{build}-{name}`, where `build` is a hash of
//! every embedded file: their URLs change whenever their bytes do, so they
//! are `immutable`; the page itself is revalidated (`no-cache`) and answers
//! 304 to a matching `If-None-Match`. Query strings are ignored. The OpenAPI
//! document is not served here.
//!
//! The route table (`routes.rs`) maps `/docs` and `/docs/{asset}` here; both
//! handlers read only the method, the URI and the headers.

use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use crate::error::ApiError;
use crate::request::EntityTags;

/// The vendored Swagger UI release (see its README for how to update it).
macro_rules! swagger_ui {
    ($file:literal) => {
        include_bytes!(concat!("../assets/swagger-ui-dist-5.35.0/", $file))
    };
}

/// The page's own files.
macro_rules! page_file {
    ($file:literal) => {
        include_bytes!(concat!("../assets/docs-page/", $file))
    };
}

/// Every file served as `/docs/{build}-{name}`: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        swagger_ui!("swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        swagger_ui!("swagger-ui.css"),
    ),
    (
        "favicon-32x32.png",
        "image/png",
        swagger_ui!("favicon-32x32.png"),
    ),
    // The licence and notices travel with the code they cover.
    (
        "swagger-ui-bundle.js.LICENSE.txt",
        "text/plain; charset=utf-8",
        swagger_ui!("swagger-ui-bundle.js.LICENSE.txt"),
    ),
    (
        "LICENSE",
        "text/plain; charset=utf-8",
        swagger_ui!("LICENSE"),
    ),
    ("NOTICE", "text/plain; charset=utf-8", swagger_ui!("NOTICE")),
    (
        "docs-page.js",
        "text/javascript; charset=utf-8",
        page_file!("docs-page.js"),
    ),
    (
        "docs-page.css",
        "text/css; charset=utf-8",
        page_file!("docs-page.css"),
    ),
];

/// The page, with `{build}` where each asset's build prefix goes.
const PAGE_TEMPLATE: &str = include_str!("../assets/docs-page/index.html");

/// Only this origin: scripts and styles from files (Swagger UI sets styles
/// through the DOM, which `style-src` does not govern), images from files or
/// `data:` URLs (the CSS's icons), requests (the document, "try it") to the
/// origin itself.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Assets change only with the binary, and then under another URL.
const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// The page: revalidated on every visit, so a new binary's assets are found.
const PAGE_CACHE_CONTROL: &str = "no-cache";

/// What is computed once from the embedded files.
struct Built {
    /// The prefix of this build's asset names (16 hex digits).
    build: String,
    /// The page's HTML and strong ETag.
    page: (String, String),
    /// The strong ETag of each entry of [`ASSETS`].
    etags: Vec<String>,
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

static BUILT: LazyLock<Built> = LazyLock::new(|| {
    let hashes: Vec<u64> = ASSETS.iter().map(|(_, _, b)| hash_of(b)).collect();
    let mut all = std::hash::DefaultHasher::new();
    hashes.hash(&mut all);
    let build = format!("{:016x}", all.finish());
    let html = PAGE_TEMPLATE.replace("{build}", &build);
    let page_etag = format!("\"{:016x}\"", hash_of(html.as_bytes()));
    Built {
        etags: hashes.iter().map(|h| format!("\"{h:016x}\"")).collect(),
        build,
        page: (html, page_etag),
    }
});

/// `GET /docs`: the HTML page that boots the reference. `/docs/` redirects
/// there: the page's relative links (`./openapi.json`, `docs/…`) assume it.
pub(crate) fn page(method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    if uri.path().ends_with('/') {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        // Relative, so that it holds behind a proxy that adds a path prefix.
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("../docs"));
        return response;
    }
    let (html, etag) = &BUILT.page;
    let mut response = respond(method, headers, PAGE, html.as_bytes(), etag);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// `GET /docs/{build}-{name}` (the last segment of the path): one embedded
/// asset of this build.
pub(crate) fn asset(method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let segment = uri.path().rsplit('/').next().unwrap_or_default();
    let found = segment
        .split_once('-')
        .filter(|(build, _)| *build == BUILT.build)
        .and_then(|(_, name)| ASSETS.iter().position(|(n, _, _)| *n == name));
    let Some(i) = found else {
        return ApiError::not_found(format!(
            "{segment} is not an asset of this build's docs page; reload /docs"
        ))
        .into_response();
    };
    let (_, content_type, bytes) = ASSETS[i];
    let kind = Kind {
        content_type,
        cache_control: ASSET_CACHE_CONTROL,
    };
    respond(method, headers, kind, bytes, &BUILT.etags[i])
}

/// How a file is served.
#[derive(Clone, Copy)]
struct Kind {
    content_type: &'static str,
    cache_control: &'static str,
}

const PAGE: Kind = Kind {
    content_type: "text/html; charset=utf-8",
    cache_control: PAGE_CACHE_CONTROL,
};

/// A file's answer to GET or HEAD (the only methods the route table sends
/// here), 304 when `If-None-Match` names `etag`.
fn respond(
    method: &Method,
    headers: &HeaderMap,
    kind: Kind,
    bytes: &'static [u8],
    etag: &str,
) -> Response {
    // An If-None-Match that is not text cannot name this ETag: a plain 200.
    let not_modified = EntityTags::parse(headers, header::IF_NONE_MATCH)
        .is_ok_and(|tags| tags.matches_weakly(etag));
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else if method == Method::HEAD {
        (StatusCode::OK, Body::empty())
    } else {
        (StatusCode::OK, Body::from(bytes))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    if status == StatusCode::OK {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(kind.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    if let Ok(etag) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(kind.cache_control),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_only_assets_it_serves() {
        let (html, _) = &BUILT.page;
        let prefix = format!("docs/{}-", BUILT.build);
        let mut linked = 0;
        for part in html.split('"').filter(|p| p.starts_with("docs/")) {
            let name = part
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{part} is not under {prefix}"));
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "{name} is not served"
            );
            linked += 1;
        }
        assert_eq!(linked, 5, "{html}");
        assert!(!html.contains("{build}"));
    }

    #[test]
    fn asset_names_are_unique() {
        for (i, (name, _, _)) in ASSETS.iter().enumerate() {
            assert!(
                ASSETS[i + 1..].iter().all(|(n, _, _)| n != name),
                "{name} twice"
            );
        }
    }
}
