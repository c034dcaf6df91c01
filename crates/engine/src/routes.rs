//! The route table: every route the server answers, built once from the
//! [`AppModel`] at start — health, the API description, the docs page, the
//! account routes and every resource, item and nested route — each with its
//! methods and, per method, the action it performs, the query parameters and
//! body it takes and the outcomes it can answer. Routing, `405` + `Allow`
//! (`HEAD` wherever `GET` is), CORS preflights, authorization and the OpenAPI
//! document all read this one table: adding a route is adding an entry here.

use http::{Method, StatusCode};

use crate::error::{ApiError, Code};
use crate::request::BodyMode;
use crate::schema::{AppModel, Resource, Rule};

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// Matches any one segment, captured under this name.
    Param(String),
}

/// What a route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/`: links to the description and the docs page.
    Root,
    /// `/health`.
    Health,
    /// `/openapi.json`.
    OpenApi,
    /// `/docs`.
    Docs,
    /// `/docs/{asset}`.
    DocsAsset,
    /// `/auth/signup`.
    Signup,
    /// `/auth/login`.
    Login,
    /// `/auth/me`.
    Me,
    /// `/auth/password`.
    Password,
    /// `/auth/logout-all`.
    LogoutAll,
    /// `/{resource}`.
    Collection {
        /// The resource.
        resource: String,
    },
    /// `/{resource}/{id}`.
    Item {
        /// The resource.
        resource: String,
    },
    /// `/{parent}/{parent_id}/{child}`: children whose `via` ref points at the parent.
    NestedCollection {
        /// The parent resource.
        parent: String,
        /// The listed resource.
        child: String,
        /// The child's ref column to the parent.
        via: String,
    },
    /// `/queues/{queue}/…`: one of a queue's routes.
    Queue {
        /// The queue.
        queue: String,
    },
    /// `/{parent}/{parent_id}/{child}/{id}`.
    NestedItem {
        /// The parent resource.
        parent: String,
        /// The read resource.
        child: String,
        /// The child's ref column to the parent.
        via: String,
    },
}

impl Target {
    /// The resource a resource route is about.
    pub fn resource(&self) -> Option<&str> {
        match self {
            Target::Collection { resource } | Target::Item { resource } => Some(resource),
            Target::NestedCollection { child, .. } | Target::NestedItem { child, .. } => {
                Some(child)
            }
            _ => None,
        }
    }
}

/// What an endpoint does: the authorization action and the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Links to the description and the docs.
    Index,
    /// Database health.
    Health,
    /// The OpenAPI document.
    Describe,
    /// The docs page and its assets.
    Docs,
    /// Create an account.
    Signup,
    /// Log in (JSON or HTTP Basic).
    Login,
    /// The caller's account.
    Me,
    /// Change the caller's password.
    ChangePassword,
    /// Revoke every token of the caller's account.
    LogoutAll,
    /// A page of rows.
    List,
    /// One row.
    Read,
    /// Insert one row or many.
    Create,
    /// Partial update.
    Update,
    /// Whole replacement (or creation of a client-chosen key).
    Replace,
    /// Delete one row.
    Delete,
    /// A queue's state (open or closed).
    QueueState,
    /// Open or close a queue.
    QueueManage,
    /// Join a queue.
    Join,
    /// A partition's line, in order.
    Line,
    /// One entry, with its position.
    ReadEntry,
    /// Leave the line.
    Leave,
    /// Claim the head of a partition's line.
    Next,
    /// Finish serving an entry.
    Done,
    /// Mark a called entry as not shown up.
    NoShow,
    /// A line's counts, waits and service rate.
    Stats,
    /// Server-Sent Events of one entry's position and status.
    EntryEvents,
    /// Server-Sent Events of a line (its first page), for staff.
    LineEvents,
}

impl Action {
    /// Whether the endpoint answers with a stream of Server-Sent Events
    /// (`text/event-stream`) rather than JSON.
    pub fn streams(self) -> bool {
        matches!(self, Action::EntryEvents | Action::LineEvents)
    }

    /// The queue action whose rule decides this endpoint.
    pub fn queue_rule(self) -> Option<QueueAction> {
        Some(match self {
            Action::QueueState
            | Action::Line
            | Action::ReadEntry
            | Action::EntryEvents
            | Action::LineEvents => QueueAction::View,
            Action::QueueManage => QueueAction::Manage,
            Action::Join => QueueAction::Join,
            Action::Leave => QueueAction::Leave,
            Action::Next | Action::Done | Action::NoShow | Action::Stats => QueueAction::Serve,
            _ => return None,
        })
    }
}

/// The actions a queue's rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    /// `rules.join`.
    Join,
    /// `rules.leave`.
    Leave,
    /// `rules.view`.
    View,
    /// `rules.serve`.
    Serve,
    /// `rules.manage`.
    Manage,
}

impl QueueAction {
    /// The schema-file name of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueAction::Join => "join",
            QueueAction::Leave => "leave",
            QueueAction::View => "view",
            QueueAction::Serve => "serve",
            QueueAction::Manage => "manage",
        }
    }

    /// The action whose permission includes this one: serving staff may
    /// view the line, and managers may remove anyone from it.
    pub fn implied_by(self) -> Option<QueueAction> {
        match self {
            QueueAction::View => Some(QueueAction::Serve),
            QueueAction::Leave => Some(QueueAction::Manage),
            _ => None,
        }
    }

    /// This action's rule in `rules`.
    pub fn rule(self, rules: &crate::schema::queue::QueueRules) -> &Rule {
        match self {
            QueueAction::Join => &rules.join,
            QueueAction::Leave => &rules.leave,
            QueueAction::View => &rules.view,
            QueueAction::Serve => &rules.serve,
            QueueAction::Manage => &rules.manage,
        }
    }
}

/// The query parameters an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// None: any parameter is a 400 `unknown_parameter`.
    None,
    /// Filters, `sort`, `limit`, `offset`, `cursor`, `fields`, `expand`, `count`.
    List,
    /// `fields` and `expand`.
    Read,
    /// Anything (the docs page ignores its query string).
    Ignored,
    /// A queue partition: one parameter per `partition_by` field, all required.
    Partition,
    /// A queue partition, `limit` and `after` (the last ticket of the previous page).
    Line,
    /// A queue partition and `window_s` (the stats' window).
    Stats,
}

/// The body an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// A row of the resource, in this mode (create also takes an array).
    Row(BodyMode),
    /// `{username, email, password}`.
    Signup,
    /// `{username | email, password}` (or HTTP Basic on GET).
    Login,
    /// `{password, new_password}`.
    Password,
    /// `{member_id, …queue fields}`.
    Join,
    /// `{open}`.
    QueueState,
}

/// One possible answer of an endpoint: a status and, for errors, the codes
/// of the catalogue it can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status.
    pub status: StatusCode,
    /// Problem codes (empty for successes).
    pub codes: Vec<Code>,
}

/// One method of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The method (`HEAD` is listed wherever `GET` is).
    pub method: Method,
    /// What it does.
    pub action: Action,
    /// The query parameters it takes.
    pub query: QueryKind,
    /// The body it takes.
    pub body: BodyKind,
    /// Every status it can answer, in order.
    pub outcomes: Vec<Outcome>,
}

/// One route: a path template and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The template's segments.
    pub segments: Vec<Segment>,
    /// What it serves.
    pub target: Target,
    /// Its endpoints, one per method.
    pub endpoints: Vec<Endpoint>,
}

impl Route {
    /// The template as OpenAPI writes it: `/colleges/{college_id}/majors`.
    pub fn template(&self) -> String {
        if self.segments.is_empty() {
            return "/".to_owned();
        }
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                Segment::Param(p) => format!("/{{{p}}}"),
            })
            .collect()
    }

    /// The methods it accepts, for `Allow` and CORS.
    pub fn methods(&self) -> Vec<Method> {
        self.endpoints.iter().map(|e| e.method.clone()).collect()
    }

    /// The endpoint for `method`.
    pub fn endpoint(&self, method: &Method) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.method == method)
    }
}

/// A request matched to its route and endpoint, with the captured segments.
#[derive(Debug)]
pub struct Matched<'t> {
    /// The route.
    pub route: &'t Route,
    /// The endpoint of the request's method.
    pub endpoint: &'t Endpoint,
    /// Captured (decoded) path parameters, in template order.
    pub params: Vec<String>,
}

/// Every route of one application.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// Names resources may not take: the server's own first segments.
pub const RESERVED_NAMES: &[&str] = &["auth", "docs", "health", "openapi", "queues"];

fn outcome(status: StatusCode, codes: &[Code]) -> Outcome {
    Outcome {
        status,
        codes: codes.to_vec(),
    }
}

fn success(status: StatusCode) -> Outcome {
    outcome(status, &[])
}

/// Codes every query-string parser can answer.
const LIST_QUERY_CODES: &[Code] = &[
    Code::UnknownField,
    Code::UnknownOperator,
    Code::UnsupportedOperator,
    Code::InvalidFilterValue,
    Code::UnknownExpand,
    Code::UnsortableField,
    Code::MalformedQuery,
    Code::InvalidCursor,
    Code::MalformedHeader,
];
const READ_QUERY_CODES: &[Code] = &[
    Code::UnknownField,
    Code::UnknownExpand,
    Code::MalformedQuery,
    Code::UnknownParameter,
    Code::MalformedHeader,
];
const BODY_CODES: &[Code] = &[
    Code::MalformedJson,
    Code::MalformedBody,
    Code::MissingBody,
    Code::UnreadableBody,
    Code::UnknownParameter,
    Code::MalformedHeader,
];

/// The 401/403 outcomes a rule allows for.
fn refusals(rule: &Rule, auth_on: bool) -> Vec<Outcome> {
    let mut out = Vec::new();
    if auth_on {
        // Invalid credentials are refused on every route, public ones included.
        out.push(outcome(StatusCode::UNAUTHORIZED, &[Code::Unauthorized]));
        if rule.may_refuse_identity() {
            out.push(outcome(StatusCode::FORBIDDEN, &[Code::Forbidden]));
        }
    }
    out
}

/// Outcomes every endpoint that reaches the database can answer.
fn database_outcomes() -> Vec<Outcome> {
    vec![
        outcome(StatusCode::INTERNAL_SERVER_ERROR, &[Code::InternalError]),
        outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            &[Code::DatabaseUnavailable, Code::KeysUnavailable],
        ),
    ]
}

fn sorted(mut outcomes: Vec<Outcome>) -> Vec<Outcome> {
    outcomes.sort_by_key(|o| o.status);
    // One entry per status: merge the codes of equal statuses.
    let mut merged: Vec<Outcome> = Vec::new();
    for o in outcomes {
        match merged.last_mut() {
            Some(last) if last.status == o.status => {
                for c in o.codes {
                    if !last.codes.contains(&c) {
                        last.codes.push(c);
                    }
                }
            }
            _ => merged.push(o),
        }
    }
    merged
}

fn get_and_head(action: Action, query: QueryKind, outcomes: Vec<Outcome>) -> Vec<Endpoint> {
    let get = Endpoint {
        method: Method::GET,
        action,
        query,
        body: BodyKind::None,
        outcomes: sorted(outcomes),
    };
    let head = Endpoint {
        method: Method::HEAD,
        ..get.clone()
    };
    vec![get, head]
}

/// `/docs` (`/docs/` redirects there) and its assets (`docs_page.rs`).
fn docs_routes() -> Vec<Route> {
    let page = vec![
        success(StatusCode::OK),
        success(StatusCode::NOT_MODIFIED),
        success(StatusCode::PERMANENT_REDIRECT),
    ];
    let asset = vec![
        success(StatusCode::OK),
        success(StatusCode::NOT_MODIFIED),
        outcome(StatusCode::NOT_FOUND, &[Code::NotFound]),
    ];
    vec![
        Route {
            segments: literal(&["docs"]),
            target: Target::Docs,
            endpoints: get_and_head(Action::Docs, QueryKind::Ignored, page),
        },
        Route {
            segments: vec![
                Segment::Literal("docs".into()),
                Segment::Param("asset".into()),
            ],
            target: Target::DocsAsset,
            endpoints: get_and_head(Action::Docs, QueryKind::Ignored, asset),
        },
    ]
}

fn literal(parts: &[&str]) -> Vec<Segment> {
    parts
        .iter()
        .map(|p| Segment::Literal((*p).to_owned()))
        .collect()
}

impl RouteTable {
    /// Builds the table of `model`.
    pub fn new(model: &AppModel) -> RouteTable {
        let auth_on = model.auth.is_some();
        // The server's own routes take no query parameter.
        let unknown_parameter = || outcome(StatusCode::BAD_REQUEST, &[Code::UnknownParameter]);
        let mut routes = vec![
            Route {
                segments: Vec::new(),
                target: Target::Root,
                endpoints: get_and_head(
                    Action::Index,
                    QueryKind::None,
                    vec![success(StatusCode::OK), unknown_parameter()],
                ),
            },
            Route {
                segments: literal(&["health"]),
                target: Target::Health,
                endpoints: get_and_head(
                    Action::Health,
                    QueryKind::None,
                    vec![
                        success(StatusCode::OK),
                        unknown_parameter(),
                        outcome(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &[Code::DatabaseUnavailable],
                        ),
                    ],
                ),
            },
            Route {
                segments: literal(&["openapi.json"]),
                target: Target::OpenApi,
                endpoints: get_and_head(
                    Action::Describe,
                    QueryKind::None,
                    vec![
                        success(StatusCode::OK),
                        success(StatusCode::NOT_MODIFIED),
                        unknown_parameter(),
                    ],
                ),
            },
        ];
        if model.auth.as_ref().is_some_and(|a| a.accounts.is_some()) {
            routes.extend(account_routes());
        }
        for resource in model.resources.values() {
            routes.extend(resource_routes(model, resource, auth_on));
        }
        for queue in model.queues.values() {
            routes.extend(queue_routes(queue, auth_on));
        }
        routes.extend(docs_routes());
        RouteTable { routes }
    }

    /// Every route, in table order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route whose template matches `path` (already percent-decoded per
    /// segment, a trailing slash tolerated), with the captured parameters.
    pub fn route(&self, segments: &[String]) -> Option<(&Route, Vec<String>)> {
        // Literals win over parameters: `/docs/x` is the docs asset even if a
        // resource were named `docs` (a reserved name).
        let mut best: Option<(&Route, Vec<String>, usize)> = None;
        for route in &self.routes {
            if route.segments.len() != segments.len() {
                continue;
            }
            let mut params = Vec::new();
            let mut literals = 0;
            let matches = route.segments.iter().zip(segments).all(|(t, s)| match t {
                Segment::Literal(l) => {
                    literals += 1;
                    l == s
                }
                Segment::Param(_) => {
                    params.push(s.clone());
                    true
                }
            });
            if matches && best.as_ref().is_none_or(|(_, _, n)| literals > *n) {
                best = Some((route, params, literals));
            }
        }
        best.map(|(r, p, _)| (r, p))
    }

    /// Routes a request: 404 when no route matches the path, 405 with
    /// `Allow` when the route does not take the method.
    pub fn find(
        &self,
        model: &AppModel,
        method: &Method,
        segments: &[String],
    ) -> Result<Matched<'_>, ApiError> {
        let Some((route, params)) = self.route(segments) else {
            return Err(ApiError::not_found(not_found_detail(model, segments)));
        };
        let endpoint = route
            .endpoint(method)
            .ok_or_else(|| ApiError::MethodNotAllowed {
                allow: route.methods(),
            })?;
        Ok(Matched {
            route,
            endpoint,
            params,
        })
    }
}

/// Splits a request path into decoded segments: `/a/b%20c/` → `["a", "b c"]`.
/// A segment that is not UTF-8 once decoded, or that decodes to a `/`, can
/// name nothing (404).
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| ApiError::not_found("no route for a path that is not UTF-8"))?;
            if decoded.contains('/') {
                return Err(ApiError::not_found(format!("no route for {path}")));
            }
            Ok(decoded.into_owned())
        })
        .collect()
}

/// `path` without `prefix` (a whole segment or more), if it starts with it.
pub(crate) fn strip_segment_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix.is_empty() || prefix == "/" {
        return None;
    }
    match path.strip_prefix(prefix)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// Why nothing answers at these segments, as helpfully as the model allows.
fn not_found_detail(model: &AppModel, segments: &[String]) -> String {
    let unknown = |name: &str| format!("no resource named \"{name}\"");
    match segments {
        [] => "no route for /".to_owned(),
        [queues, name, ..] if queues == "queues" && !model.queues.contains_key(name) => {
            format!("no queue named \"{name}\"")
        }
        [queues, ..] if queues == "queues" => {
            format!("no route for /{}", segments.join("/"))
        }
        [first, ..] if model.resource(first).is_none() => unknown(first),
        [parent, _, child, ..] => match model.resource(child) {
            None => unknown(child),
            Some(c) => match c.refs_to(parent).count() {
                0 => format!("{child} has no reference to {parent}"),
                1 => format!("no route for /{}", segments.join("/")),
                _ => format!(
                    "{child} has several references to {parent}; filter /{child} by the field instead"
                ),
            },
        },
        _ => format!("no route for /{}", segments.join("/")),
    }
}

fn account_routes() -> Vec<Route> {
    let post = |action, body, mut outcomes: Vec<Outcome>| {
        outcomes.extend(database_outcomes());
        Endpoint {
            method: Method::POST,
            action,
            query: QueryKind::Ignored,
            body,
            outcomes: sorted(outcomes),
        }
    };
    let body_errors = || {
        vec![
            outcome(StatusCode::BAD_REQUEST, BODY_CODES),
            outcome(StatusCode::PAYLOAD_TOO_LARGE, &[Code::PayloadTooLarge]),
            outcome(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &[Code::UnsupportedMediaType],
            ),
            outcome(StatusCode::UNPROCESSABLE_ENTITY, &[Code::ValidationFailed]),
            outcome(StatusCode::SERVICE_UNAVAILABLE, &[Code::Busy]),
        ]
    };
    let authed = || {
        vec![
            outcome(StatusCode::UNAUTHORIZED, &[Code::Unauthorized]),
            outcome(StatusCode::NOT_FOUND, &[Code::NotFound]),
        ]
    };
    let login_outcomes = {
        let mut o = body_errors();
        o.push(success(StatusCode::OK));
        o.push(outcome(
            StatusCode::UNAUTHORIZED,
            &[Code::InvalidCredentials],
        ));
        o
    };
    let mut login_get = get_and_head(Action::Login, QueryKind::Ignored, {
        let mut o = login_outcomes.clone();
        o.extend(database_outcomes());
        o
    });
    for endpoint in &mut login_get {
        endpoint.body = BodyKind::Login;
    }
    vec![
        Route {
            segments: literal(&["auth", "signup"]),
            target: Target::Signup,
            endpoints: vec![post(Action::Signup, BodyKind::Signup, {
                let mut o = body_errors();
                o.push(success(StatusCode::CREATED));
                o.push(outcome(StatusCode::CONFLICT, &[Code::UniqueViolation]));
                o
            })],
        },
        Route {
            segments: literal(&["auth", "login"]),
            target: Target::Login,
            endpoints: {
                login_get.push(post(Action::Login, BodyKind::Login, login_outcomes));
                login_get
            },
        },
        Route {
            segments: literal(&["auth", "me"]),
            target: Target::Me,
            endpoints: get_and_head(Action::Me, QueryKind::Ignored, {
                let mut o = authed();
                o.push(success(StatusCode::OK));
                o.extend(database_outcomes());
                o
            }),
        },
        Route {
            segments: literal(&["auth", "password"]),
            target: Target::Password,
            endpoints: vec![post(Action::ChangePassword, BodyKind::Password, {
                let mut o = body_errors();
                o.extend(authed());
                o.push(success(StatusCode::OK));
                o.push(outcome(StatusCode::FORBIDDEN, &[Code::Forbidden]));
                o
            })],
        },
        Route {
            segments: literal(&["auth", "logout-all"]),
            target: Target::LogoutAll,
            endpoints: vec![post(Action::LogoutAll, BodyKind::None, {
                let mut o = authed();
                o.push(success(StatusCode::NO_CONTENT));
                o
            })],
        },
    ]
}

/// Codes a partition query string can answer.
const PARTITION_QUERY_CODES: &[Code] = &[
    Code::UnknownParameter,
    Code::InvalidFilterValue,
    Code::MalformedQuery,
    Code::MalformedHeader,
];

/// `/queues/{q}`, its entries, an entry, its transitions and `next`.
fn queue_routes(queue: &crate::schema::queue::Queue, auth_on: bool) -> Vec<Route> {
    let target = Target::Queue {
        queue: queue.name.clone(),
    };
    let rules = &queue.rules;
    let endpoint = |method: Method,
                    action: Action,
                    query: QueryKind,
                    body: BodyKind,
                    mut outcomes: Vec<Outcome>| {
        if let Some(a) = action.queue_rule() {
            outcomes.extend(refusals(a.rule(rules), auth_on));
            if let Some(stronger) = a.implied_by() {
                outcomes.extend(refusals(stronger.rule(rules), auth_on));
            }
        }
        outcomes.extend(database_outcomes());
        if body != BodyKind::None {
            outcomes.extend([
                outcome(StatusCode::BAD_REQUEST, BODY_CODES),
                outcome(StatusCode::PAYLOAD_TOO_LARGE, &[Code::PayloadTooLarge]),
                outcome(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &[Code::UnsupportedMediaType],
                ),
                outcome(StatusCode::UNPROCESSABLE_ENTITY, &[Code::ValidationFailed]),
            ]);
        }
        let query_codes = match query {
            QueryKind::Partition | QueryKind::Line | QueryKind::Stats => PARTITION_QUERY_CODES,
            _ => &[Code::UnknownParameter, Code::MalformedHeader][..],
        };
        outcomes.push(outcome(StatusCode::BAD_REQUEST, query_codes));
        Endpoint {
            method,
            action,
            query,
            body,
            outcomes: sorted(outcomes),
        }
    };
    let get = |action, query, outcomes: Vec<Outcome>| {
        let get = endpoint(Method::GET, action, query, BodyKind::None, outcomes);
        let head = Endpoint {
            method: Method::HEAD,
            ..get.clone()
        };
        vec![get, head]
    };
    let not_found = || outcome(StatusCode::NOT_FOUND, &[Code::NotFound]);
    let transition = || outcome(StatusCode::CONFLICT, &[Code::InvalidTransition]);
    let base = vec![
        Segment::Literal("queues".into()),
        Segment::Literal(queue.name.clone()),
    ];
    let under = |more: &[Segment]| {
        let mut s = base.clone();
        s.extend_from_slice(more);
        s
    };
    let lit = |l: &str| Segment::Literal(l.to_owned());
    let id = Segment::Param("entry_id".into());
    // The transitions that finish a called entry: one route each.
    let finishing =
        [("done", Action::Done), ("no-show", Action::NoShow)].map(|(name, action)| Route {
            segments: under(&[lit("entries"), id.clone(), lit(name)]),
            target: target.clone(),
            endpoints: vec![endpoint(
                Method::POST,
                action,
                QueryKind::None,
                BodyKind::None,
                vec![success(StatusCode::OK), not_found(), transition()],
            )],
        });
    let mut routes = vec![
        Route {
            segments: base.clone(),
            target: target.clone(),
            endpoints: {
                let mut e = get(
                    Action::QueueState,
                    QueryKind::None,
                    vec![success(StatusCode::OK)],
                );
                e.push(endpoint(
                    Method::PATCH,
                    Action::QueueManage,
                    QueryKind::None,
                    BodyKind::QueueState,
                    vec![success(StatusCode::OK)],
                ));
                e
            },
        },
        Route {
            segments: under(&[lit("entries")]),
            target: target.clone(),
            endpoints: {
                let mut e = get(Action::Line, QueryKind::Line, vec![success(StatusCode::OK)]);
                e.push(endpoint(
                    Method::POST,
                    Action::Join,
                    QueryKind::None,
                    BodyKind::Join,
                    vec![
                        success(StatusCode::CREATED),
                        // The same Idempotency-Key and body again.
                        success(StatusCode::OK),
                        outcome(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            &[Code::IdempotencyKeyReused],
                        ),
                        not_found(),
                        outcome(
                            StatusCode::CONFLICT,
                            &[Code::AlreadyInQueue, Code::QueueClosed, Code::QueueFull],
                        ),
                    ],
                ));
                e
            },
        },
        Route {
            segments: under(&[lit("entries"), id.clone()]),
            target: target.clone(),
            endpoints: {
                let mut e = get(
                    Action::ReadEntry,
                    QueryKind::None,
                    vec![
                        success(StatusCode::OK),
                        success(StatusCode::NOT_MODIFIED),
                        not_found(),
                    ],
                );
                e.push(endpoint(
                    Method::DELETE,
                    Action::Leave,
                    QueryKind::None,
                    BodyKind::None,
                    vec![success(StatusCode::OK), not_found(), transition()],
                ));
                e
            },
        },
    ];
    // Then the transitions that finish an entry, the streams, the stats and next.
    routes.extend(finishing);
    // Streams: 503 `busy` past the open-stream bound; an entry's is 204
    // once the client has seen its final state (EventSource stops there).
    let busy = || outcome(StatusCode::SERVICE_UNAVAILABLE, &[Code::Busy]);
    routes.extend([
        Route {
            segments: under(&[lit("entries"), id.clone(), lit("events")]),
            target: target.clone(),
            endpoints: get(
                Action::EntryEvents,
                QueryKind::None,
                vec![
                    success(StatusCode::OK),
                    success(StatusCode::NO_CONTENT),
                    not_found(),
                    busy(),
                ],
            ),
        },
        Route {
            segments: under(&[lit("events")]),
            target: target.clone(),
            endpoints: get(
                Action::LineEvents,
                QueryKind::Line,
                vec![success(StatusCode::OK), busy()],
            ),
        },
    ]);
    routes.extend([
        Route {
            segments: under(&[lit("stats")]),
            target: target.clone(),
            endpoints: get(
                Action::Stats,
                QueryKind::Stats,
                vec![success(StatusCode::OK)],
            ),
        },
        Route {
            segments: under(&[lit("next")]),
            target,
            endpoints: vec![endpoint(
                Method::POST,
                Action::Next,
                QueryKind::Partition,
                BodyKind::None,
                vec![success(StatusCode::OK), success(StatusCode::NO_CONTENT)],
            )],
        },
    ]);
    routes
}

/// The write endpoints of an item route.
fn write_endpoint(
    method: Method,
    action: Action,
    body: BodyKind,
    rule: &Rule,
    auth_on: bool,
    mut outcomes: Vec<Outcome>,
) -> Endpoint {
    outcomes.extend(refusals(rule, auth_on));
    outcomes.extend(database_outcomes());
    Endpoint {
        method,
        action,
        query: QueryKind::None,
        body,
        outcomes: sorted(outcomes),
    }
}

fn resource_routes(model: &AppModel, resource: &Resource, auth_on: bool) -> Vec<Route> {
    let rules = &resource.rules;
    let name = resource.name.clone();
    let id = resource.id_column().name.clone();
    let list_outcomes = |nested: bool| {
        let mut o = vec![
            success(StatusCode::OK),
            success(StatusCode::NOT_MODIFIED),
            outcome(StatusCode::BAD_REQUEST, LIST_QUERY_CODES),
        ];
        if nested {
            o.push(outcome(StatusCode::NOT_FOUND, &[Code::NotFound]));
        }
        o.extend(refusals(&rules.list, auth_on));
        o.extend(refusals(&rules.read, auth_on));
        o.extend(database_outcomes());
        o
    };
    let read_outcomes = || {
        let mut o = vec![
            success(StatusCode::OK),
            success(StatusCode::NOT_MODIFIED),
            outcome(StatusCode::BAD_REQUEST, READ_QUERY_CODES),
            outcome(StatusCode::NOT_FOUND, &[Code::NotFound]),
        ];
        o.extend(refusals(&rules.read, auth_on));
        o.extend(database_outcomes());
        o
    };
    let body_errors = |mode: BodyMode| {
        let mut codes = BODY_CODES.to_vec();
        if mode == BodyMode::Create {
            codes.extend([Code::EmptyArray, Code::TooManyItems]);
        }
        vec![
            outcome(StatusCode::BAD_REQUEST, &codes),
            outcome(StatusCode::PAYLOAD_TOO_LARGE, &[Code::PayloadTooLarge]),
            outcome(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &[Code::UnsupportedMediaType],
            ),
            outcome(StatusCode::UNPROCESSABLE_ENTITY, &[Code::ValidationFailed]),
            outcome(
                StatusCode::CONFLICT,
                &[Code::UniqueViolation, Code::ForeignKeyViolation],
            ),
        ]
    };
    let mut routes = vec![
        Route {
            segments: literal(&[&name]),
            target: Target::Collection {
                resource: name.clone(),
            },
            endpoints: {
                let mut e = get_and_head(Action::List, QueryKind::List, list_outcomes(false));
                e.push(write_endpoint(
                    Method::POST,
                    Action::Create,
                    BodyKind::Row(BodyMode::Create),
                    &rules.create,
                    auth_on,
                    {
                        let mut o = body_errors(BodyMode::Create);
                        o.push(success(StatusCode::CREATED));
                        o.push(success(StatusCode::NO_CONTENT));
                        o
                    },
                ));
                e
            },
        },
        Route {
            segments: vec![Segment::Literal(name.clone()), Segment::Param(id.clone())],
            target: Target::Item {
                resource: name.clone(),
            },
            endpoints: {
                let mut e = get_and_head(Action::Read, QueryKind::Read, read_outcomes());
                let preconditions =
                    outcome(StatusCode::PRECONDITION_FAILED, &[Code::PreconditionFailed]);
                let not_found = outcome(StatusCode::NOT_FOUND, &[Code::NotFound]);
                e.push(write_endpoint(
                    Method::PATCH,
                    Action::Update,
                    BodyKind::Row(BodyMode::Patch),
                    &rules.update,
                    auth_on,
                    {
                        let mut o = body_errors(BodyMode::Patch);
                        o.extend([
                            success(StatusCode::OK),
                            success(StatusCode::NO_CONTENT),
                            not_found.clone(),
                            preconditions.clone(),
                        ]);
                        o
                    },
                ));
                e.push(write_endpoint(
                    Method::PUT,
                    Action::Replace,
                    BodyKind::Row(BodyMode::Replace),
                    &rules.update,
                    auth_on,
                    {
                        let mut o = body_errors(BodyMode::Replace);
                        o.extend([
                            success(StatusCode::OK),
                            success(StatusCode::NO_CONTENT),
                            not_found.clone(),
                            preconditions.clone(),
                        ]);
                        if resource.has_client_key() {
                            o.push(success(StatusCode::CREATED));
                        }
                        o
                    },
                ));
                e.push(write_endpoint(
                    Method::DELETE,
                    Action::Delete,
                    BodyKind::None,
                    &rules.delete,
                    auth_on,
                    vec![
                        success(StatusCode::NO_CONTENT),
                        outcome(
                            StatusCode::BAD_REQUEST,
                            &[Code::UnknownParameter, Code::MalformedHeader],
                        ),
                        not_found,
                        outcome(StatusCode::CONFLICT, &[Code::StillReferenced]),
                        preconditions,
                    ],
                ));
                e
            },
        },
    ];
    // Nested routes: under every parent this resource refers to exactly once.
    for parent in model.resources.values() {
        let mut refs = resource.refs_to(&parent.name);
        let (Some(via), None) = (refs.next(), refs.next()) else {
            continue;
        };
        let via = via.name.clone();
        let parent_segments = vec![
            Segment::Literal(parent.name.clone()),
            Segment::Param(via.clone()),
            Segment::Literal(name.clone()),
        ];
        let mut item_segments = parent_segments.clone();
        // The child's id parameter must not share the parent's name.
        let child_id = if id == via {
            format!("{name}_{id}")
        } else {
            id.clone()
        };
        item_segments.push(Segment::Param(child_id));
        let mut nested_read = read_outcomes();
        nested_read.extend(refusals(&parent.rules.read, auth_on));
        let mut nested_list = list_outcomes(true);
        nested_list.extend(refusals(&parent.rules.read, auth_on));
        routes.push(Route {
            segments: parent_segments,
            target: Target::NestedCollection {
                parent: parent.name.clone(),
                child: name.clone(),
                via: via.clone(),
            },
            endpoints: get_and_head(Action::List, QueryKind::List, nested_list),
        });
        routes.push(Route {
            segments: item_segments,
            target: Target::NestedItem {
                parent: parent.name.clone(),
                child: name.clone(),
                via,
            },
            endpoints: get_and_head(Action::Read, QueryKind::Read, nested_read),
        });
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::load_str;

    fn table() -> (AppModel, RouteTable) {
        let model = load_str(
            "[app]\nname='t'\n[resources.colleges]\nid={type='integer'}\nfields.name={type='string'}\n\
             [resources.majors]\nfields.college_id={type='ref',to='colleges'}\n\
             [resources.pairs]\nfields.a_id={type='ref',to='colleges'}\nfields.b_id={type='ref',to='colleges'}\n",
        )
        .unwrap();
        let table = RouteTable::new(&model);
        (model, table)
    }

    fn segs(path: &str) -> Vec<String> {
        segments(path).unwrap()
    }

    #[test]
    fn every_route_with_get_also_takes_head() {
        let (_, table) = table();
        for route in table.routes() {
            let methods = route.methods();
            assert_eq!(
                methods.contains(&Method::GET),
                methods.contains(&Method::HEAD),
                "{}",
                route.template()
            );
        }
    }

    #[test]
    fn a_wrong_method_is_a_405_listing_the_routes_methods() {
        let (model, table) = table();
        let err = table
            .find(&model, &Method::POST, &segs("/colleges/1"))
            .unwrap_err();
        let ApiError::MethodNotAllowed { allow } = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            allow,
            [
                Method::GET,
                Method::HEAD,
                Method::PATCH,
                Method::PUT,
                Method::DELETE
            ]
        );
    }

    #[test]
    fn nested_routes_exist_only_for_a_single_reference() {
        let (model, table) = table();
        let found = table
            .find(&model, &Method::GET, &segs("/colleges/3/majors/"))
            .unwrap();
        assert_eq!(found.params, ["3"]);
        assert_eq!(found.route.template(), "/colleges/{college_id}/majors");
        let err = table
            .find(&model, &Method::GET, &segs("/colleges/3/pairs"))
            .unwrap_err();
        assert!(err.to_string().contains("several references"), "{err}");
    }

    #[test]
    fn the_table_names_unknown_resources_in_its_404() {
        let (model, table) = table();
        let err = table
            .find(&model, &Method::GET, &segs("/nope"))
            .unwrap_err();
        assert_eq!(err.to_string(), "no resource named \"nope\"");
    }

    #[test]
    fn every_outcome_lists_only_codes_the_catalogue_answers_with_its_status() {
        // Every kind of route: accounts, credentials, rules that refuse,
        // nested routes and client-chosen keys.
        let model = load_str(
            "[app]\nname='t'\n\
             [auth]\njwt={algorithms=['HS256'],secret_env='J'}\n\
             api_keys={env='K',query='app_token'}\n[auth.accounts]\nsecret_env='A'\n\
             [resources.colleges]\nid={type='integer'}\nfields.name={type='string'}\n\
             rules={list='public',read='public',create='role:admin',update='owner',delete='none'}\n\
             [resources.majors]\nfields.college_id={type='ref',to='colleges'}\n\
             [resources.keys]\nid={type='string',name='code'}\nfields.v={type='string'}\n",
        )
        .unwrap();
        let table = RouteTable::new(&model);
        let mut checked = 0;
        for route in table.routes() {
            for endpoint in &route.endpoints {
                for outcome in &endpoint.outcomes {
                    for code in &outcome.codes {
                        assert_eq!(
                            code.status(),
                            outcome.status,
                            "{} {} lists {code:?} under {}",
                            endpoint.method,
                            route.template(),
                            outcome.status
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} codes checked");
    }

    #[test]
    fn a_public_route_without_auth_answers_no_401() {
        let (_, table) = table();
        let (route, _) = table.route(&segs("/colleges")).unwrap();
        let statuses: Vec<u16> = route.endpoints[0]
            .outcomes
            .iter()
            .map(|o| o.status.as_u16())
            .collect();
        assert!(!statuses.contains(&401), "{statuses:?}");
        assert!(statuses.windows(2).all(|w| w[0] < w[1]), "{statuses:?}");
    }
}
