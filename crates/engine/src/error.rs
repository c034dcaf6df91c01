//! The one error type of the request pipeline, its one status mapping, and its
//! rendering as RFC 9457 `application/problem+json`. Internal errors are logged
//! here, once, with their cause; their bodies say nothing internal.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::json;

use crate::value::FieldError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be understood (bad JSON, unknown query field or operator…).
    #[error("{detail}")]
    BadRequest {
        /// Stable reason, e.g. `malformed_json`, `unknown_field`, `unknown_operator`.
        code: &'static str,
        /// Human-readable explanation naming the offending part.
        detail: String,
    },
    /// 401 with `WWW-Authenticate`: no or invalid credentials.
    #[error("{detail}")]
    Unauthorized {
        /// What is missing or wrong (never the token itself).
        detail: String,
        /// Credentials were presented and refused (`error="invalid_token"`).
        invalid_token: bool,
    },
    /// 401 from a login: unknown user and wrong password answer the same.
    #[error("invalid username or password")]
    BadCredentials,
    /// 403: authenticated, but not allowed.
    #[error("{detail}")]
    Forbidden {
        /// What is not allowed.
        detail: String,
    },
    /// 404: no such route or row.
    #[error("{detail}")]
    NotFound {
        /// What was not found.
        detail: String,
    },
    /// 405 with `Allow`.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the route does accept.
        allow: Vec<Method>,
    },
    /// 409: a unique or foreign-key constraint refused the write.
    #[error("{detail}")]
    Conflict {
        /// `unique_violation`, `foreign_key_violation` or `still_referenced`.
        code: &'static str,
        /// Explanation naming the constraint's field.
        detail: String,
        /// The field the constraint is on.
        field: Option<String>,
    },
    /// 412: `If-Match` or `If-None-Match` does not hold for the current version.
    #[error(
        "the current version of the row does not satisfy If-Match or If-None-Match; read its ETag again before writing"
    )]
    PreconditionFailed,
    /// 413: the body is over the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 408 with `Connection: close`: the request head or body did not arrive in time.
    #[error("the request {part} must arrive within {}", crate::settings::format_duration(*.timeout))]
    RequestTimeout {
        /// `headers` or `body`.
        part: &'static str,
        /// The limit that was exceeded.
        timeout: std::time::Duration,
    },
    /// 415: a body that is not JSON.
    #[error("request bodies must be application/json")]
    UnsupportedMediaType,
    /// 422: the body is JSON but breaks the schema; lists every failing field.
    #[error("the body does not match the schema")]
    Validation {
        /// One entry per failing field.
        errors: Vec<FieldError>,
    },
    /// 503 with `Retry-After`: the database cannot be reached.
    #[error("the database is unavailable")]
    Unavailable {
        /// The cause, for the log only.
        cause: String,
    },
    /// 503 with `Retry-After`: the identity provider's keys cannot be fetched.
    #[error("the identity provider's keys cannot be fetched")]
    KeysUnavailable {
        /// The cause, for the log only.
        cause: String,
    },
    /// 503 with `Retry-After`: too many expensive requests (password hashing) at once.
    #[error("the server is busy; retry shortly")]
    Busy,
    /// 500: a bug or an unexpected database answer; the cause goes to the log only.
    #[error("internal error")]
    Internal {
        /// The cause, for the log only.
        cause: String,
    },
}

impl ApiError {
    /// 400 with a code and detail.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// 404 with a detail.
    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::NotFound {
            detail: detail.into(),
        }
    }

    /// 500 carrying its cause to the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal {
            cause: cause.to_string(),
        }
    }

    /// The HTTP status: the only mapping from errors to statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } | ApiError::BadCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } | ApiError::KeysUnavailable { .. } | ApiError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code` string of the problem body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::NotFound { .. } => "not_found",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::BadCredentials => "invalid_credentials",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PreconditionFailed => "precondition_failed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation { .. } => "validation_failed",
            ApiError::Unavailable { .. } => "database_unavailable",
            ApiError::KeysUnavailable { .. } => "keys_unavailable",
            ApiError::Busy => "busy",
            ApiError::Internal { .. } => "internal_error",
        }
    }
}

impl ApiError {
    /// The RFC 9457 problem body of this error.
    pub(crate) fn problem(&self) -> serde_json::Value {
        let status = self.status();
        let mut body = json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "code": self.code(),
        });
        let detail = match &self {
            ApiError::Validation { errors } => {
                body["errors"] = json!(errors);
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                format!("invalid fields: {}", fields.join(", "))
            }
            ApiError::Conflict { field, .. } => {
                if let Some(field) = field {
                    body["field"] = json!(field);
                }
                self.to_string()
            }
            other => other.to_string(),
        };
        body["detail"] = json!(detail);
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal { cause } => tracing::error!(%cause, "internal error"),
            ApiError::Unavailable { cause } => tracing::warn!(%cause, "database unavailable"),
            ApiError::KeysUnavailable { cause } => tracing::warn!(%cause, "JWKS unavailable"),
            _ => {}
        }
        let body = self.problem();
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                let allow: Vec<&str> = allow.iter().map(Method::as_str).collect();
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(header::ALLOW, v);
                }
            }
            ApiError::Unavailable { .. } | ApiError::KeysUnavailable { .. } | ApiError::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RequestTimeout { .. } => {
                // The rest of a late request may still be on its way: the
                // connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::BadCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"anteroom\", charset=\"UTF-8\""),
                );
            }
            ApiError::Unauthorized { invalid_token, .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(if *invalid_token {
                        "Bearer realm=\"anteroom\", error=\"invalid_token\""
                    } else {
                        "Bearer realm=\"anteroom\""
                    }),
                );
            }
            _ => {}
        }
        response
    }
}
