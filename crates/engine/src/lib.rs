//! Anteroom's engine: a schema file becomes a REST backend.
//!
//! A request to a resource flows through four stages, each a module:
//! [`request`] (parse) → [`plan`] → [`execute`] (over a [`storage::Storage`])
//! → [`response`] (render), chained in [`pipeline`]. [`app`] builds the one
//! router that the HTTP server ([`server`]), the Lambda adapter ([`lambda`])
//! and tests all serve; [`config`] is the one configuration they start from.

pub mod auth;
pub mod config;
mod cors;
pub mod deploy;
mod docs_page;
pub mod error;
pub mod execute;
pub mod lambda;
pub mod openapi;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod queues;
pub mod request;
pub mod response;
pub mod routes;
pub mod schema;
pub mod seed;
pub mod server;
pub mod settings;
pub mod storage;
pub mod streams;
pub mod value;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

pub use error::ApiError;
pub use settings::Settings;

/// What every handler shares: the model, the storage and the HTTP settings.
#[derive(Clone)]
pub struct AppState {
    /// The application model, loaded once at start.
    pub model: Arc<schema::AppModel>,
    /// The database.
    pub storage: Arc<dyn storage::Storage>,
    /// Limits and CORS.
    pub settings: Arc<Settings>,
    /// Credential verification (`[auth]`).
    pub auth: Arc<auth::Authenticator>,
    /// Every route the server answers, built from the model.
    pub routes: Arc<routes::RouteTable>,
    /// The OpenAPI document, rendered once.
    pub description: Arc<Description>,
    /// The event streams open on this instance.
    pub streams: Arc<streams::Streams>,
}

/// The OpenAPI document as served: its bytes and their strong ETag.
#[derive(Debug)]
pub struct Description {
    /// The JSON text.
    pub body: bytes::Bytes,
    /// A hash of the body.
    pub etag: String,
}

impl Description {
    /// Renders the document of `model`.
    pub fn new(model: &schema::AppModel, routes: &routes::RouteTable) -> Description {
        let body = serde_json::to_vec_pretty(&openapi::document(model, routes)).unwrap_or_default();
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        body.hash(&mut hasher);
        Description {
            etag: format!("\"{:016x}\"", hasher.finish()),
            body: body.into(),
        }
    }
}

/// The router every adapter serves: one dispatcher over the route table.
pub fn app(state: AppState) -> Router {
    // Browsers may send the API key header only if CORS allows it.
    let extra_headers: Vec<http::HeaderName> = state
        .model
        .auth
        .as_ref()
        .and_then(|a| a.api_key.as_ref())
        .and_then(|k| k.header.as_deref())
        .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
        .into_iter()
        .collect();
    let cors = cors::Cors::new(&state.settings, &extra_headers).map(Arc::new);
    let router = Router::new()
        .fallback(move |State(state): State<AppState>, mut req: Request| {
            let cors = cors.clone();
            async move {
                // Only the Origin and the external base path outlive the
                // request, which dispatch consumes.
                let origin = cors
                    .as_ref()
                    .and_then(|_| req.headers().get(http::header::ORIGIN).cloned());
                let base = match req.extensions_mut().remove::<lambda::BasePath>() {
                    Some(base) => Some(base.0),
                    None => state.settings.base_path.clone().inspect(|base| {
                        strip_base_path(&mut req, base);
                    }),
                };
                let mut response = dispatch(&state, cors.as_deref(), req).await;
                if let Some(cors) = &cors {
                    cors.decorate(origin.as_ref(), &mut response);
                }
                if let Some(base) = base {
                    response::prefix_location(&mut response, &base);
                }
                response
            }
        })
        .with_state(state);
    server::with_middleware(router)
}

/// Removes the configured base path from the front of a request's path, if
/// it is there as whole segments (a proxy may have removed it already).
fn strip_base_path(req: &mut Request, base: &str) {
    let Some(rest) = routes::strip_segment_prefix(req.uri().path(), base) else {
        return;
    };
    let target = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    if let Ok(uri) = target.parse() {
        *req.uri_mut() = uri;
    }
}

/// Routes one request through the table and hands it to its handler.
async fn dispatch(state: &AppState, cors: Option<&cors::Cors>, req: Request) -> Response {
    let segments = match routes::segments(req.uri().path()) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Some(cors) = cors
        && cors::Cors::is_preflight(req.method(), req.headers())
    {
        return match state.routes.route(&segments) {
            Some((route, _)) => cors.preflight(req.headers(), &route.methods()),
            None => {
                ApiError::not_found(format!("no route for {}", req.uri().path())).into_response()
            }
        };
    }
    let matched = match state.routes.find(&state.model, req.method(), &segments) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    use routes::Target;
    // Resource routes parse their query string in the pipeline (where
    // authentication has removed the API key from it); the server's own
    // endpoints that take no parameter refuse any here, the API key's aside.
    if matched.endpoint.query == routes::QueryKind::None
        && matched.route.target.resource().is_none()
    {
        let api_key = state
            .model
            .auth
            .as_ref()
            .and_then(|a| a.api_key.as_ref())
            .and_then(|k| k.query.as_deref());
        if let Err(e) = request::query::parse_none_but(req.uri().query(), api_key) {
            return e.into_response();
        }
    }
    match &matched.route.target {
        Target::Root => index(state),
        Target::Health => health(state).await,
        Target::OpenApi => describe(state, &req),
        Target::Docs => docs_page::page(req.method(), req.uri(), req.headers()),
        Target::DocsAsset => docs_page::asset(req.method(), req.uri(), req.headers()),
        Target::Signup => auth::accounts::signup(state, req).await,
        Target::Login => auth::accounts::login(state, req).await,
        Target::Me => auth::accounts::me(state, req).await,
        Target::Password => auth::accounts::password(state, req).await,
        Target::LogoutAll => auth::accounts::logout_all(state, req).await,
        Target::Collection { .. }
        | Target::Item { .. }
        | Target::NestedCollection { .. }
        | Target::NestedItem { .. } => pipeline::handle(state, &matched, req).await,
        Target::Queue { .. } => queues::handle(state, &matched, req).await,
    }
}

/// `GET /openapi.json`: the document, revalidated with its ETag.
fn describe(state: &AppState, req: &Request) -> Response {
    let d = &state.description;
    // An If-None-Match that is not text cannot name this ETag: a plain 200.
    let matches = request::EntityTags::parse(req.headers(), http::header::IF_NONE_MATCH)
        .is_ok_and(|tags| tags.matches_weakly(&d.etag));
    let mut response = if matches {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(axum::body::Body::from(d.body.clone()));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    if let Ok(etag) = http::HeaderValue::from_str(&d.etag) {
        response.headers_mut().insert(http::header::ETAG, etag);
    }
    response
}

/// `GET /`: where to find the description of this API.
fn index(state: &AppState) -> Response {
    let body = serde_json::json!({
        "name": state.model.name,
        "openapi": "/openapi.json",
        "docs": "/docs",
        "health": "/health",
        "resources": state.model.resources.keys().collect::<Vec<_>>(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `GET /health`: 200 when the database answers, 503 problem+json when not.
async fn health(state: &AppState) -> Response {
    match state.storage.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok", "database": state.storage.backend()})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
