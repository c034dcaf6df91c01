//! The one error type of the request pipeline, its one status mapping, and its
//! rendering as RFC 9457 `application/problem+json`. Internal errors are logged
//! here, once, with their cause; their bodies say nothing internal.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::json;

use crate::request::body::MAX_BULK;
use crate::settings::{DEFAULT_BODY_LIMIT, format_bytes};
use crate::value::FieldError;

/// The closed catalogue of problem codes: every `code` a problem body can
/// carry, with its status and a one-line meaning. The status of an error, the
/// docs' error table and the OpenAPI problem schema all read this one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 400: the body is not valid JSON.
    MalformedJson,
    /// 400: the JSON is not the expected shape (an object, or an array of objects).
    MalformedBody,
    /// 400: a write without a body.
    MissingBody,
    /// 400: a bulk create with an empty array.
    EmptyArray,
    /// 400: a bulk create with more objects than allowed.
    TooManyItems,
    /// 400: the body could not be read from the connection.
    UnreadableBody,
    /// 400: a header that is not valid text.
    MalformedHeader,
    /// 400: a Lambda event that is not a valid HTTP request.
    MalformedEvent,
    /// 400: a query string or body names a field the resource does not have.
    UnknownField,
    /// 400: a filter names an operator that does not exist.
    UnknownOperator,
    /// 400: the operator does not apply to the field's type.
    UnsupportedOperator,
    /// 400: a filter value is not of the field's type or is outside its domain.
    InvalidFilterValue,
    /// 400: `expand` names something that is not a reference.
    UnknownExpand,
    /// 400: `sort` names a field that cannot be sorted.
    UnsortableField,
    /// 400: a query parameter is malformed, repeated or out of range.
    MalformedQuery,
    /// 400: the cursor was not issued by this API for this sort.
    InvalidCursor,
    /// 400: a query parameter this request does not take.
    UnknownParameter,
    /// 401: credentials are missing or invalid (with `WWW-Authenticate`).
    Unauthorized,
    /// 401: a login with a wrong username or password.
    InvalidCredentials,
    /// 403: the caller may not do this.
    Forbidden,
    /// 404: no such route, resource or row.
    NotFound,
    /// 405: the route does not take this method (with `Allow`).
    MethodNotAllowed,
    /// 408: the request head or body did not arrive in time.
    RequestTimeout,
    /// 409: a unique field already holds this value.
    UniqueViolation,
    /// 409: a reference points at a row that does not exist (or cannot be read).
    ForeignKeyViolation,
    /// 409: a delete refused because other rows still refer to the row.
    StillReferenced,
    /// 409: the member already has an active entry in the queue.
    AlreadyInQueue,
    /// 409: the queue is closed to joins.
    QueueClosed,
    /// 409: the member's line already holds the queue's capacity.
    QueueFull,
    /// 409: the entry is not in the status the transition starts from.
    InvalidTransition,
    /// 422: an `Idempotency-Key` already used with another body.
    IdempotencyKeyReused,
    /// 412: `If-Match` or `If-None-Match` does not hold for the current version.
    PreconditionFailed,
    /// 413: the body is over the size limit.
    PayloadTooLarge,
    /// 415: a body that is not JSON.
    UnsupportedMediaType,
    /// 422: the body breaks the schema; `errors` lists every failing field.
    ValidationFailed,
    /// 500: a bug; the log has the cause.
    InternalError,
    /// 501: this deployment cannot hold an event stream open (AWS Lambda).
    StreamsUnavailable,
    /// 503: the database cannot be reached or a statement ran too long (with `Retry-After`).
    DatabaseUnavailable,
    /// 503: the identity provider's keys cannot be fetched (with `Retry-After`).
    KeysUnavailable,
    /// 503: too much at once: every connection busy, too many logins, or too many open event streams (with `Retry-After`).
    Busy,
}

impl Code {
    /// Every code, in the order the docs list them.
    pub const ALL: &'static [Code] = &[
        Code::MalformedJson,
        Code::MalformedBody,
        Code::MissingBody,
        Code::EmptyArray,
        Code::TooManyItems,
        Code::UnreadableBody,
        Code::MalformedHeader,
        Code::MalformedEvent,
        Code::UnknownField,
        Code::UnknownOperator,
        Code::UnsupportedOperator,
        Code::InvalidFilterValue,
        Code::UnknownExpand,
        Code::UnsortableField,
        Code::MalformedQuery,
        Code::InvalidCursor,
        Code::UnknownParameter,
        Code::Unauthorized,
        Code::InvalidCredentials,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::RequestTimeout,
        Code::UniqueViolation,
        Code::ForeignKeyViolation,
        Code::StillReferenced,
        Code::AlreadyInQueue,
        Code::QueueClosed,
        Code::QueueFull,
        Code::InvalidTransition,
        Code::PreconditionFailed,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::ValidationFailed,
        Code::IdempotencyKeyReused,
        Code::InternalError,
        Code::StreamsUnavailable,
        Code::DatabaseUnavailable,
        Code::KeysUnavailable,
        Code::Busy,
    ];

    /// The stable `code` string of the problem body.
    pub fn as_str(self) -> &'static str {
        self.entry().0
    }

    /// The HTTP status every error with this code answers.
    pub fn status(self) -> StatusCode {
        self.entry().1
    }

    /// What the code means, in one line (docs and the OpenAPI document).
    pub fn description(self) -> Cow<'static, str> {
        self.entry().2
    }

    fn entry(self) -> (&'static str, StatusCode, Cow<'static, str>) {
        use StatusCode as S;
        match self {
            Code::MalformedJson => (
                "malformed_json",
                S::BAD_REQUEST,
                "the body is not valid JSON".into(),
            ),
            Code::MalformedBody => (
                "malformed_body",
                S::BAD_REQUEST,
                "the JSON is not the expected shape (an object; an array of objects for bulk creates)".into(),
            ),
            Code::MissingBody => ("missing_body", S::BAD_REQUEST, "a write without a body".into()),
            Code::EmptyArray => (
                "empty_array",
                S::BAD_REQUEST,
                "a bulk create with an empty array".into(),
            ),
            Code::TooManyItems => (
                "too_many_items",
                S::BAD_REQUEST,
                format!("a bulk create with more than {MAX_BULK} objects").into(),
            ),
            Code::UnreadableBody => (
                "unreadable_body",
                S::BAD_REQUEST,
                "the body could not be read from the connection".into(),
            ),
            Code::MalformedHeader => (
                "malformed_header",
                S::BAD_REQUEST,
                "a header (If-Match, If-None-Match…) that is not valid text".into(),
            ),
            Code::MalformedEvent => (
                "malformed_event",
                S::BAD_REQUEST,
                "on AWS Lambda: an event that is not a valid HTTP request (a body marked base64 that is not, a header or method that is not valid)".into(),
            ),
            Code::StreamsUnavailable => (
                "streams_unavailable",
                S::NOT_IMPLEMENTED,
                "event streams are off (AWS Lambda, or `--max-streams 0`): poll the entry or line with If-None-Match instead".into(),
            ),
            Code::UnknownField => (
                "unknown_field",
                S::BAD_REQUEST,
                "the query string names a field the resource does not have".into(),
            ),
            Code::UnknownOperator => (
                "unknown_operator",
                S::BAD_REQUEST,
                "a filter names an operator that does not exist".into(),
            ),
            Code::UnsupportedOperator => (
                "unsupported_operator",
                S::BAD_REQUEST,
                "the operator does not apply to the field's type".into(),
            ),
            Code::InvalidFilterValue => (
                "invalid_filter_value",
                S::BAD_REQUEST,
                "a filter value is not of the field's type, is outside its domain, or is over a bound".into(),
            ),
            Code::UnknownExpand => (
                "unknown_expand",
                S::BAD_REQUEST,
                "`expand` names something that is not a reference".into(),
            ),
            Code::UnsortableField => (
                "unsortable_field",
                S::BAD_REQUEST,
                "`sort` names a json field".into(),
            ),
            Code::MalformedQuery => (
                "malformed_query",
                S::BAD_REQUEST,
                "a query parameter is malformed, repeated or out of range".into(),
            ),
            Code::InvalidCursor => (
                "invalid_cursor",
                S::BAD_REQUEST,
                "the cursor was not issued by this API for this sort".into(),
            ),
            Code::UnknownParameter => (
                "unknown_parameter",
                S::BAD_REQUEST,
                "a query parameter this request does not take".into(),
            ),
            Code::Unauthorized => (
                "unauthorized",
                S::UNAUTHORIZED,
                "credentials are missing, invalid or revoked (with WWW-Authenticate)".into(),
            ),
            Code::InvalidCredentials => (
                "invalid_credentials",
                S::UNAUTHORIZED,
                "a login with a wrong username or password".into(),
            ),
            Code::Forbidden => ("forbidden", S::FORBIDDEN, "the caller may not do this".into()),
            Code::NotFound => (
                "not_found",
                S::NOT_FOUND,
                "no such route, resource or row; the detail names the id".into(),
            ),
            Code::MethodNotAllowed => (
                "method_not_allowed",
                S::METHOD_NOT_ALLOWED,
                "the route does not take this method (with Allow)".into(),
            ),
            Code::RequestTimeout => (
                "request_timeout",
                S::REQUEST_TIMEOUT,
                "the request head or body did not arrive in time (the connection closes)".into(),
            ),
            Code::UniqueViolation => (
                "unique_violation",
                S::CONFLICT,
                "a unique field already holds this value (with field)".into(),
            ),
            Code::ForeignKeyViolation => (
                "foreign_key_violation",
                S::CONFLICT,
                "a reference points at a row that does not exist (with field)".into(),
            ),
            Code::StillReferenced => (
                "still_referenced",
                S::CONFLICT,
                "other rows still refer to the row being deleted (with field)".into(),
            ),
            Code::AlreadyInQueue => (
                "already_in_queue",
                S::CONFLICT,
                "the member already has an active entry in this queue (with its id)".into(),
            ),
            Code::QueueClosed => ("queue_closed", S::CONFLICT, "the queue is closed to joins".into()),
            Code::QueueFull => (
                "queue_full",
                S::CONFLICT,
                "the member's line already holds the queue's capacity".into(),
            ),
            Code::InvalidTransition => (
                "invalid_transition",
                S::CONFLICT,
                "the entry is not in the status this transition starts from".into(),
            ),
            Code::IdempotencyKeyReused => (
                "idempotency_key_reused",
                S::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used with another body; use a new key for a new request".into(),
            ),
            Code::PreconditionFailed => (
                "precondition_failed",
                S::PRECONDITION_FAILED,
                "If-Match is stale, or If-None-Match holds the current version".into(),
            ),
            Code::PayloadTooLarge => (
                "payload_too_large",
                S::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is over the size limit (default {})",
                    format_bytes(DEFAULT_BODY_LIMIT)
                )
                .into(),
            ),
            Code::UnsupportedMediaType => (
                "unsupported_media_type",
                S::UNSUPPORTED_MEDIA_TYPE,
                "a body that is not application/json".into(),
            ),
            Code::ValidationFailed => (
                "validation_failed",
                S::UNPROCESSABLE_ENTITY,
                "the body breaks the schema; errors lists every failing field".into(),
            ),
            Code::InternalError => (
                "internal_error",
                S::INTERNAL_SERVER_ERROR,
                "a bug; the body says nothing more, the log has the cause".into(),
            ),
            Code::DatabaseUnavailable => (
                "database_unavailable",
                S::SERVICE_UNAVAILABLE,
                "the database cannot be reached, or a statement ran past the timeout (with Retry-After)".into(),
            ),
            Code::KeysUnavailable => (
                "keys_unavailable",
                S::SERVICE_UNAVAILABLE,
                "the identity provider's keys cannot be fetched (with Retry-After)".into(),
            ),
            Code::Busy => (
                "busy",
                S::SERVICE_UNAVAILABLE,
                "every client connection is busy, too many logins at once, or every event stream place is taken (with Retry-After)".into(),
            ),
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422 that is not about fields: the request is understood but cannot be
    /// honoured as sent (an `Idempotency-Key` reused with another body).
    #[error("{detail}")]
    Unprocessable {
        /// A 422 code of the catalogue.
        code: Code,
        /// What to do instead.
        detail: String,
    },
    /// 400: the request cannot be understood (bad JSON, unknown query field or operator…).
    #[error("{detail}")]
    BadRequest {
        /// A 400 code of the catalogue (`malformed_json`, `unknown_field`, …).
        code: Code,
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
        code: Code,
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
    /// 503 with `Retry-After`: too many expensive requests (password hashing) or open event streams at once.
    #[error("the server is busy; retry shortly")]
    Busy,
    /// 501: event streams are off here (AWS Lambda buffers responses).
    #[error(
        "event streams are not available in this deployment (AWS Lambda buffers every response): poll the entry or the line with If-None-Match and its ETag instead"
    )]
    StreamsUnavailable,
    /// 500: a bug or an unexpected database answer; the cause goes to the log only.
    #[error("internal error")]
    Internal {
        /// The cause, for the log only.
        cause: String,
    },
}

impl ApiError {
    /// 400 with a code and detail.
    pub fn bad_request(code: Code, detail: impl Into<String>) -> Self {
        debug_assert_eq!(code.status(), StatusCode::BAD_REQUEST, "{code:?}");
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

    /// The HTTP status, from the catalogue: the only mapping from errors to statuses.
    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    /// The error's entry in the catalogue.
    pub fn code(&self) -> Code {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. } => *code,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::Unauthorized { .. } => Code::Unauthorized,
            ApiError::BadCredentials => Code::InvalidCredentials,
            ApiError::Forbidden { .. } => Code::Forbidden,
            ApiError::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            ApiError::PreconditionFailed => Code::PreconditionFailed,
            ApiError::PayloadTooLarge { .. } => Code::PayloadTooLarge,
            ApiError::RequestTimeout { .. } => Code::RequestTimeout,
            ApiError::UnsupportedMediaType => Code::UnsupportedMediaType,
            ApiError::Validation { .. } => Code::ValidationFailed,
            ApiError::Unavailable { .. } => Code::DatabaseUnavailable,
            ApiError::KeysUnavailable { .. } => Code::KeysUnavailable,
            ApiError::Busy => Code::Busy,
            ApiError::StreamsUnavailable => Code::StreamsUnavailable,
            ApiError::Internal { .. } => Code::InternalError,
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
            "code": self.code().as_str(),
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

#[cfg(test)]
mod tests {
    use super::Code;
    use crate::value::FieldCode;

    const API_DOCS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"));

    /// The cells of the markdown table whose header row is `header`.
    fn table(header: &str) -> Vec<Vec<String>> {
        let start = API_DOCS
            .find(&format!("\n{header}\n"))
            .unwrap_or_else(|| panic!("docs/api.md has no table `{header}`"));
        API_DOCS[start + 1..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| {
                        let c = c.trim();
                        // A cell that is one code span is the code itself.
                        match c.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
                            Some(code) if !code.contains('`') => code.to_owned(),
                            _ => c.to_owned(),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_docs_error_table_lists_exactly_the_catalogue() {
        let documented = table("| status | code | meaning |");
        let catalogue: Vec<Vec<String>> = Code::ALL
            .iter()
            .map(|c| {
                vec![
                    c.status().as_u16().to_string(),
                    c.as_str().to_owned(),
                    c.description().into_owned(),
                ]
            })
            .collect();
        assert_eq!(documented, catalogue);
    }

    #[test]
    fn the_docs_validation_table_lists_exactly_the_field_codes() {
        let documented = table("| code | meaning |");
        let catalogue: Vec<Vec<String>> = FieldCode::ALL
            .iter()
            .map(|c| vec![c.as_str().to_owned(), c.description().to_owned()])
            .collect();
        assert_eq!(documented, catalogue);
    }

    #[test]
    fn every_field_code_serializes_as_its_catalogue_string() {
        for code in FieldCode::ALL {
            assert_eq!(serde_json::json!(code), code.as_str());
        }
    }

    #[test]
    fn every_code_string_is_distinct() {
        let mut seen = std::collections::HashSet::new();
        assert!(Code::ALL.iter().all(|c| seen.insert(c.as_str())));
        let mut seen = std::collections::HashSet::new();
        assert!(FieldCode::ALL.iter().all(|c| seen.insert(c.as_str())));
    }
}
