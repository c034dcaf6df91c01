//! The AWS Lambda adapter: the same router as the TCP server, fed by the
//! Lambda Runtime API instead of a socket. [`run`] starts from the
//! environment ([`ServeConfig::from_env`]) once per execution environment —
//! schema, pool, keys and prepared statements then live across warm
//! invocations — and [`invoke`] turns each event into a request
//! ([`event`]), lets the router answer it and turns the response into the
//! event shape's reply ([`reply`]). No business logic lives here: the only
//! things this adapter adds to a request are the API Gateway request
//! context (where an authorizer's claims are, [`crate::auth::GatewayContext`])
//! and the external base path `Location` headers carry.

mod event;
mod reply;

use axum::Router;
use serde_json::Value as Json;
use tower::ServiceExt;

use crate::config::{Mode, ServeConfig};
use crate::server::{self, StartError};

pub(crate) use event::BasePath;

/// Why an invocation got no HTTP reply: the event is not an HTTP event.
#[derive(Debug, thiserror::Error)]
#[error(
    "the event is not an API Gateway (REST or HTTP API), Application Load Balancer or Function URL request"
)]
pub struct NotAnHttpEvent;

/// Answers one event with `router`: the reply in the event's own format, a
/// 400 problem in that format when the event is not a valid HTTP request,
/// or [`NotAnHttpEvent`]. `aws_request_id` names the request where the
/// client did not (`X-Request-Id`); `base_path` is a custom domain's base
/// path, stripped from request paths and added to `Location`.
pub async fn invoke(
    router: Router,
    event: Json,
    aws_request_id: &str,
    base_path: Option<&str>,
) -> Result<Json, NotAnHttpEvent> {
    let incoming = event::read(event, aws_request_id, base_path).ok_or(NotAnHttpEvent)?;
    let response = match incoming.request {
        Ok(request) => match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(problem) => {
            tracing::info!(%problem, request_id = aws_request_id, "a malformed event was refused");
            let mut response = axum::response::IntoResponse::into_response(problem);
            // What the router's middleware does for the requests it sees.
            if let Ok(id) = http::HeaderValue::from_str(aws_request_id) {
                response.headers_mut().insert(server::REQUEST_ID, id);
            }
            response
        }
    };
    Ok(reply::render(incoming.shape, response).await)
}

/// Why the Lambda adapter stopped.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// The configuration in the environment is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The function could not start (schema, database, migrations).
    #[error("{0}")]
    Start(#[from] StartError),
    /// The Runtime API failed.
    #[error("the Lambda runtime failed: {0}")]
    Runtime(String),
}

/// Serves invocations until the execution environment ends.
pub async fn run() -> Result<(), LambdaError> {
    let config = ServeConfig::from_env().map_err(LambdaError::Config)?;
    let mode = Mode::Lambda;
    config.init_logging(mode);
    let started = std::time::Instant::now();
    let state = server::start(&config, mode).await?;
    tracing::info!(
        app = %state.model.name,
        database = state.storage.backend(),
        init_ms = started.elapsed().as_millis() as u64,
        "ready for Lambda invocations"
    );
    let router = crate::app(state);
    let base_path = config.base_path();
    let handler = lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<Json>| {
        let router = router.clone();
        let base_path = base_path.clone();
        async move {
            invoke(
                router,
                event.payload,
                &event.context.request_id,
                base_path.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())
        }
    });
    lambda_runtime::run(handler)
        .await
        .map_err(|e| LambdaError::Runtime(e.to_string()))
}
