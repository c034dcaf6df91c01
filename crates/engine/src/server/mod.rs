//! The HTTP adapter: middleware shared by every adapter (request ids, tracing,
//! CORS), startup (schema → storage → migrations → state) and serving with
//! graceful shutdown; [`connections`] owns the accept loop and the life of
//! each client connection. No business logic lives here.

mod connections;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use http::{HeaderName, HeaderValue, Request};
use tokio::net::TcpListener;
use tower::util::MapRequestLayer;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::{MigrateOnStart, Mode, ServeConfig};
use crate::settings::ServerSettings;
use crate::storage::{self, ConnectOptions, MigrateMode};
use crate::{AppState, Settings, schema};

/// The request id header: a safe client value is kept, anything else is
/// replaced by a fresh one; echoed on every response and logged with it.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client request id that is kept.
pub(crate) const MAX_REQUEST_ID_LEN: usize = 128;

/// Longest request path written to the log; longer paths are cut (with `…`).
const MAX_LOGGED_PATH: usize = 256;

/// A new time-ordered request id (UUID v7).
pub(crate) fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Whether a client's request id may be echoed and logged as it is: 1 to
/// [`MAX_REQUEST_ID_LEN`] characters of `A-Z a-z 0-9 . _ : -`. That covers
/// UUIDs, ULIDs and the ids of common proxies and tracers, and nothing that
/// could forge or break a log line (spaces, tabs, `=`, `}`, quotes, non-ASCII).
pub(crate) fn is_safe_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

/// Keeps one safe client request id, or replaces whatever came (nothing, an
/// unsafe value, several values) by a fresh one. The tracing span and the
/// echoed header both read the header this leaves, so they always agree.
fn sanitize_request_id<B>(mut req: Request<B>) -> Request<B> {
    let mut values = req.headers().get_all(REQUEST_ID).iter();
    let keep = matches!(
        (values.next(), values.next()),
        (Some(v), None) if is_safe_request_id(v.as_bytes())
    );
    if !keep {
        req.headers_mut().insert(REQUEST_ID, new_request_id());
    }
    req
}

/// The path as logged: cut to [`MAX_LOGGED_PATH`] bytes so one request cannot
/// write kilobytes into every log line about it.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= MAX_LOGGED_PATH {
        path.into()
    } else {
        format!("{}…", &path[..path.floor_char_boundary(MAX_LOGGED_PATH)]).into()
    }
}

/// Wraps a router in the middleware every adapter uses.
pub fn with_middleware(router: Router) -> Router {
    router
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<axum::body::Body>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %loggable_path(req.uri().path()), request_id = %id)
            })
            .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(MapRequestLayer::new(sanitize_request_id::<axum::body::Body>))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The schema file is invalid.
    #[error("{0}")]
    Schema(#[from] schema::SchemaErrors),
    /// `[auth]` names a secret or key that is missing or unusable.
    #[error("authentication is misconfigured: {0}")]
    Auth(String),
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Database(String),
    /// The schema needs a migration that would lose data, or migrating failed.
    #[error("{0}")]
    Migration(#[from] storage::MigrationError),
    /// The seed file cannot be read or loaded.
    #[error("seeding {0} failed: {1}")]
    Seed(std::path::PathBuf, String),
    /// The database is behind the schema and this start may not migrate it.
    #[error(
        "the database is behind the schema ({0} statements to apply, schema version {1}): run `anteroom migrate` against it as a deploy step, or set ANTEROOM_MIGRATE=apply"
    )]
    Behind(usize, i64),
}

/// The SQLite URL used when none is given: `anteroom.db` next to the schema file.
pub fn default_database_url(schema_path: &Path) -> String {
    let dir = schema_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    format!("sqlite://{}", dir.join("anteroom.db").display())
}

/// Everything an adapter starts with, from its configuration: the state
/// ([`prepare`]), the seed data loaded, the queues' sweeper running and a
/// warning when the schema has no `[auth]`.
pub async fn start(config: &ServeConfig, mode: Mode) -> Result<AppState, StartError> {
    let state = prepare(
        &config.db.schema,
        &config.db.url(mode),
        &config.db.connect_options(mode),
        config.settings(mode),
        config.migrate_on_start(mode),
    )
    .await?;
    if let Some(file) = &config.seed {
        let failed = |e: String| StartError::Seed(file.clone(), e);
        let data: serde_json::Value = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(failed)?;
        let report = crate::seed::load(&state, &data)
            .await
            .map_err(|e| failed(e.to_string()))?;
        for (name, n) in &report.inserted {
            tracing::info!(resource = %name, rows = n, "seeded");
        }
    }
    crate::queues::start_sweeper(&state);
    if state.model.auth.is_none() {
        tracing::warn!(
            "{} has no [auth] section: every resource is PUBLIC (prototype mode); anyone who can reach this API can read and write everything",
            config.db.schema.display()
        );
    }
    Ok(state)
}

/// Loads the schema, opens the database, applies additive migrations (or,
/// with [`MigrateOnStart::Check`], refuses a database behind the schema).
pub async fn prepare(
    schema_path: &Path,
    database_url: &str,
    connect: &ConnectOptions,
    settings: Settings,
    migrate: MigrateOnStart,
) -> Result<AppState, StartError> {
    let model = Arc::new(schema::load_file(schema_path)?);
    for warning in &model.warnings {
        tracing::warn!(schema = %schema_path.display(), key = %warning.path, "{}", warning.message);
    }
    let base = schema_path.parent().unwrap_or(Path::new("."));
    let auth =
        crate::auth::Authenticator::new(model.auth.as_ref(), base).map_err(StartError::Auth)?;
    let storage = storage::connect(database_url, connect, model.clone())
        .await
        .map_err(StartError::Database)?;
    let mode = match migrate {
        MigrateOnStart::Apply => MigrateMode::APPLY,
        MigrateOnStart::Check => MigrateMode::DRY_RUN,
    };
    let files = storage::sql_files(schema_path).map_err(storage::MigrationError::Files)?;
    let report = storage.migrate(model.snapshot(), &files, mode).await?;
    if !report.applied && !report.statements.is_empty() {
        return Err(StartError::Behind(report.statements.len(), report.version));
    }
    if report.applied {
        tracing::info!(
            version = report.version,
            statements = report.statements.len(),
            "schema migrated"
        );
    }
    let routes = crate::routes::RouteTable::new(&model);
    Ok(AppState {
        description: Arc::new(crate::Description::new(&model, &routes)),
        routes: Arc::new(routes),
        model,
        storage,
        streams: Arc::new(crate::streams::Streams::new(
            settings.max_streams,
            settings.stream_heartbeat,
        )),
        settings: Arc::new(settings),
        auth: Arc::new(auth),
    })
}

/// Serves `router` until SIGINT or SIGTERM, with the timeouts and the
/// connection cap of `settings`; then calls `on_shutdown` (which ends what
/// would never finish by itself: event streams), lets in-flight requests
/// finish until the shutdown deadline and closes whatever is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServerSettings,
    on_shutdown: impl FnOnce() + Send,
) -> std::io::Result<()> {
    let shutdown = async {
        shutdown_signal().await;
        on_shutdown();
    };
    connections::serve(listener, router, settings, shutdown).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
