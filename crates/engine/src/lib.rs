//! Anteroom's engine: a schema file becomes a REST backend.
//!
//! A request to a resource flows through four stages, each a module:
//! [`request`] (parse) → [`plan`] → [`execute`] (over a [`storage::Storage`])
//! → [`response`] (render), chained in [`pipeline`]. [`app`] builds the one
//! router that the HTTP server ([`server`]), tests and (later) the Lambda
//! adapter all serve.

pub mod auth;
pub mod error;
pub mod execute;
pub mod pipeline;
pub mod plan;
pub mod request;
pub mod response;
pub mod schema;
pub mod seed;
pub mod server;
pub mod settings;
pub mod storage;
pub mod value;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{Method, StatusCode};

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
}

/// The router every adapter serves: `/health` plus every resource route.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
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
    let mut router = Router::new().route("/health", any(health));
    if state.auth.accounts.is_some() {
        router = router
            .route("/auth/signup", any(auth::accounts::signup))
            .route("/auth/login", any(auth::accounts::login))
            .route("/auth/me", any(auth::accounts::me))
            .route("/auth/password", any(auth::accounts::password))
            .route("/auth/logout-all", any(auth::accounts::logout_all));
    }
    let router = router.fallback(pipeline::handle).with_state(state);
    server::with_middleware(router, &settings, &extra_headers)
}

/// `GET /health`: 200 when the database answers, 503 problem+json when not.
async fn health(State(state): State<AppState>, method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed {
            allow: vec![Method::GET, Method::HEAD],
        }
        .into_response();
    }
    match state.storage.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok", "database": state.storage.backend()})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
