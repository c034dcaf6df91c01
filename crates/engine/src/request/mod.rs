//! Stage 1, parse: an HTTP request (method, path, query, headers, body bytes)
//! becomes an [`ApiRequest`] whose every name is checked against the schema
//! and whose every value is typed. Nothing later re-parses client input.

pub mod body;
pub mod query;
pub mod route;

use http::{HeaderMap, Method, header};

pub use body::{Body, BodyMode, Record};
pub use query::{Direction, Filter, ListQuery, Op, Operand, SortKey};
pub use route::{Operation, Scope};

use crate::error::{ApiError, Code};
#[cfg(test)]
use crate::schema::AppModel;

/// An `If-Match` / `If-None-Match` header, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EntityTags {
    /// Header absent.
    #[default]
    Absent,
    /// `*`.
    Any,
    /// A list of entity tags, as sent (quotes included, `W/` kept).
    Tags(Vec<String>),
}

impl EntityTags {
    pub(crate) fn parse(headers: &HeaderMap, name: header::HeaderName) -> Result<Self, ApiError> {
        let mut tags = Vec::new();
        let mut any = false;
        let mut present = false;
        for value in headers.get_all(&name) {
            present = true;
            let text = value.to_str().map_err(|_| {
                ApiError::bad_request(Code::MalformedHeader, format!("{name} is not valid text"))
            })?;
            for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    any = true;
                } else {
                    tags.push(tag.to_owned());
                }
            }
        }
        Ok(match (present, any) {
            (false, _) => EntityTags::Absent,
            (true, true) => EntityTags::Any,
            (true, false) => EntityTags::Tags(tags),
        })
    }

    /// Row versions named by strong tags (`"3"`); weak tags never match `If-Match`.
    pub fn strong_versions(&self) -> Vec<i64> {
        match self {
            EntityTags::Tags(tags) => tags
                .iter()
                .filter_map(|t| t.strip_prefix('"')?.strip_suffix('"')?.parse().ok())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Row versions named by strong or weak tags (`"3"`, `W/"3"`): what
    /// `If-None-Match` compares against on writes.
    pub fn weak_versions(&self) -> Vec<i64> {
        match self {
            EntityTags::Tags(tags) => tags
                .iter()
                .filter_map(|t| {
                    let t = t.strip_prefix("W/").unwrap_or(t);
                    t.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Weak comparison against a response ETag (for `If-None-Match`).
    pub fn matches_weakly(&self, etag: &str) -> bool {
        let strip = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_owned();
        match self {
            EntityTags::Absent => false,
            EntityTags::Any => true,
            EntityTags::Tags(tags) => tags.iter().any(|t| strip(t) == strip(etag)),
        }
    }
}

/// Conditional-request headers.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    /// `If-Match` (writes).
    pub if_match: EntityTags,
    /// `If-None-Match` (reads).
    pub if_none_match: EntityTags,
}

/// A fully parsed resource request.
#[derive(Debug)]
pub struct ApiRequest<'m> {
    /// What to do, on which resource, with typed path ids.
    pub operation: Operation<'m>,
    /// The query string (lists and reads; empty otherwise).
    pub query: ListQuery,
    /// The body (writes).
    pub body: Option<Body>,
    /// Conditional headers.
    pub preconditions: Preconditions,
    /// HEAD: render the GET without its body.
    pub head: bool,
}

/// The raw parts of an HTTP request that resource routes read.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    /// Method.
    pub method: &'a Method,
    /// Percent-encoded path.
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// Body bytes (already bounded by the size limit).
    pub body: &'a [u8],
}

/// Routes and parses a resource request in one go (the plans' unit tests;
/// the server routes once, in the dispatcher, and authorizes before parsing).
#[cfg(test)]
pub(crate) fn parse<'m>(
    model: &'m AppModel,
    raw: &RawRequest<'_>,
) -> Result<ApiRequest<'m>, ApiError> {
    let table = crate::routes::RouteTable::new(model);
    let segments = crate::routes::segments(raw.path)?;
    let matched = table.find(model, raw.method, &segments)?;
    parse_operation(route::operation(model, &matched)?, raw)
}

/// Parses the query string, conditional headers and body of an operation the
/// caller has already been authorized for: a caller who may not perform it
/// never has its query or body looked at.
pub(crate) fn parse_operation<'m>(
    operation: Operation<'m>,
    raw: &RawRequest<'_>,
) -> Result<ApiRequest<'m>, ApiError> {
    let resource = operation.resource();
    let preconditions = Preconditions {
        if_match: EntityTags::parse(raw.headers, header::IF_MATCH)?,
        if_none_match: EntityTags::parse(raw.headers, header::IF_NONE_MATCH)?,
    };
    let content_type = raw
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (query, body) = match &operation {
        Operation::List { .. } => (query::parse_list(resource, raw.query)?, None),
        Operation::Get { .. } => (query::parse_read(resource, raw.query)?, None),
        Operation::Delete { .. } => {
            query::parse_none(raw.query)?;
            (ListQuery::default(), None)
        }
        Operation::Create { .. } | Operation::Update { .. } | Operation::Replace { .. } => {
            query::parse_none(raw.query)?;
            if !raw.body.is_empty() || content_type.is_some() {
                body::check_media_type(content_type)?;
            }
            let (mode, path_id) = match &operation {
                Operation::Create { .. } => (BodyMode::Create, None),
                Operation::Update { id, .. } => (BodyMode::Patch, Some(id)),
                Operation::Replace { id, .. } => (BodyMode::Replace, Some(id)),
                _ => unreachable!("only writes carry bodies"),
            };
            (
                ListQuery::default(),
                Some(body::parse(resource, mode, raw.body, path_id)?),
            )
        }
    };
    Ok(ApiRequest {
        operation,
        query,
        body,
        preconditions,
        head: raw.method == Method::HEAD,
    })
}
