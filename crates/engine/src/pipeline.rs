//! The request pipeline for resource routes, in one visible function:
//! parse → plan → execute → render. Each stage is its own module; this one
//! only chains them and turns the first error into a problem response.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header;

use crate::error::{ApiError, Code};
use crate::plan::PlanContext;
use crate::request::RawRequest;
use crate::routes::{BodyKind, Matched};
use crate::{AppState, Settings};
use crate::{execute, plan, policy, request, response};

/// Reads the body, refusing it with 413 past `settings.body_limit` bytes and
/// with 408 when it has not fully arrived within `settings.body_timeout` (a
/// client trickling its body must not hold a connection and a task forever).
pub(crate) async fn read_body(
    body: Body,
    headers: &http::HeaderMap,
    settings: &Settings,
) -> Result<bytes::Bytes, ApiError> {
    let limit = settings.body_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    use http_body_util::BodyExt;
    let collect = http_body_util::Limited::new(body, limit).collect();
    let Ok(collected) = tokio::time::timeout(settings.body_timeout, collect).await else {
        return Err(ApiError::RequestTimeout {
            part: "body",
            timeout: settings.body_timeout,
        });
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::bad_request(
            Code::UnreadableBody,
            format!("could not read the body: {e}"),
        )),
    }
}

/// Who is calling, from the request head: the plan context of the caller's
/// identity, and the query string without the credentials it carried (an
/// API key parameter is not a filter).
pub(crate) async fn caller(
    state: &AppState,
    parts: &http::request::Parts,
) -> Result<(PlanContext, Option<String>), ApiError> {
    let authenticated = state
        .auth
        .authenticate(
            &parts.headers,
            &parts.extensions,
            parts.uri.query(),
            &*state.storage,
            &state.model,
        )
        .await?;
    Ok((
        PlanContext::for_caller(authenticated.identity),
        authenticated.query,
    ))
}

/// Handles a request the route table sent to a resource endpoint:
/// authenticate and authorize from the head alone, and only then — and only
/// where the endpoint takes one — read the body. An anonymous or forbidden
/// client cannot make the server buffer a body.
pub(crate) async fn handle(state: &AppState, matched: &Matched<'_>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let result = async {
        let (ctx, query) = caller(state, &parts).await?;
        let operation = request::route::operation(&state.model, matched)?;
        let grant = policy::authorize(&operation, &ctx)?;
        let bytes = match matched.endpoint.body {
            BodyKind::None => bytes::Bytes::new(),
            _ => read_body(body, &parts.headers, &state.settings).await?,
        };
        let raw = RawRequest {
            method: &parts.method,
            path: parts.uri.path(),
            query: query.as_deref(),
            headers: &parts.headers,
            body: &bytes,
        };
        let request = request::parse_operation(operation, &raw)?;
        plan_and_run(state, request, grant, &ctx).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// authorize → parse → plan → execute → render for an already-established
/// caller whose request is fully in memory (seed data).
pub(crate) async fn run_as(
    state: &AppState,
    matched: &Matched<'_>,
    raw: &RawRequest<'_>,
    ctx: PlanContext,
) -> Result<Response, ApiError> {
    let operation = request::route::operation(&state.model, matched)?;
    let grant = policy::authorize(&operation, &ctx)?;
    let request = request::parse_operation(operation, raw)?;
    plan_and_run(state, request, grant, &ctx).await
}

/// plan → execute → render.
async fn plan_and_run(
    state: &AppState,
    request: request::ApiRequest<'_>,
    grant: policy::Grant,
    ctx: &PlanContext,
) -> Result<Response, ApiError> {
    let preconditions = request.preconditions.clone();
    let head = request.head;
    let plan = plan::plan(&state.model, request, grant, ctx)?;
    let outcome = execute::execute(&*state.storage, plan).await?;
    Ok(response::render(outcome, &preconditions, head))
}
