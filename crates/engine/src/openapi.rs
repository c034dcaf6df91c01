//! The OpenAPI 3.1 document of an application, generated from the same
//! sources that route, validate and render requests: the route table (paths,
//! methods, query and body kinds, outcomes), the field shapes (what each mode
//! requires, allows and shows), the operator catalogue (which `field[op]`
//! parameters exist) and the error catalogue (every problem `code`). Nothing
//! here is written by hand per resource, so the document cannot drift from
//! what the server does.

use http::{Method, StatusCode};
use serde_json::{Map, Value as Json, json};

use crate::auth::accounts::{MAX_PASSWORD, MIN_PASSWORD};
use crate::error::Code;
use crate::plan::PAGE_BYTE_BUDGET;
use crate::request::BodyMode;
use crate::request::body::MAX_BULK;
use crate::request::query::{
    DEFAULT_LIMIT, MAX_IN_VALUES, MAX_LIMIT, MAX_PATTERN_CHARS, Op, expand_key,
};
use crate::routes::{Action, BodyKind, Endpoint, Outcome, QueryKind, Route, RouteTable, Target};
use crate::schema::shape::{FieldShape, Mode, Presence, shape};
use crate::schema::{AppModel, Column, ColumnRole, FieldType, Format, IdKind, Resource, Rule};
use crate::settings::format_bytes;
use crate::value::{FieldCode, domain};

/// Builds the document.
pub fn document(model: &AppModel, routes: &RouteTable) -> Json {
    let mut paths = Map::new();
    let mut shared = SharedResponses::default();
    for route in routes.routes() {
        let mut item = Map::new();
        // Path parameters, and query parameters every method shares (GET and
        // HEAD of a list), are written once for the path.
        let mut common = path_parameters(model, route);
        let resource = route.target.resource().and_then(|r| model.resource(r));
        let all_list = route.endpoints.iter().all(|e| e.query == QueryKind::List);
        if all_list && let Some(r) = resource {
            common.extend(parameter_refs(r, list_parameters(r)));
        }
        if !common.is_empty() {
            item.insert("parameters".into(), Json::Array(common));
        }
        for endpoint in &route.endpoints {
            item.insert(
                endpoint.method.as_str().to_ascii_lowercase(),
                operation(model, route, endpoint, all_list, &mut shared),
            );
        }
        paths.insert(route.template(), Json::Object(item));
    }
    let mut schemas = Map::new();
    schemas.insert("Problem".into(), problem_schema());
    schemas.insert("FieldError".into(), field_error_schema());
    schemas.insert(
        "Health".into(),
        json!({"type": "object", "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "database": {"type": "string", "enum": ["sqlite", "postgres", "mysql"]}},
            "required": ["status", "database"]}),
    );
    schemas.insert(
        "Index".into(),
        json!({"type": "object", "properties": {
            "name": {"type": "string"}, "openapi": {"type": "string"}, "docs": {"type": "string"},
            "health": {"type": "string"},
            "resources": {"type": "array", "items": {"type": "string"}}},
            "required": ["name", "openapi", "docs", "health", "resources"]}),
    );
    for resource in model.resources.values() {
        for mode in Mode::ALL {
            schemas.insert(schema_name(resource, mode), resource_schema(resource, mode));
        }
        schemas.insert(
            page_name(resource),
            json!({
                "type": "object",
                "description": format!("A page of {}: follow next_cursor until it is null.", resource.name),
                "properties": {
                    "items": {"type": "array", "items": schema_ref(&schema_name(resource, Mode::Read))},
                    "next_cursor": {"type": ["string", "null"]},
                    "total": {"type": "integer", "minimum": 0},
                },
                "required": ["items", "next_cursor"],
                "additionalProperties": false,
            }),
        );
    }
    for queue in model.queues.values() {
        queue_schemas(queue, &mut schemas);
    }
    if let Some(accounts) = model.auth.as_ref().and_then(|a| a.accounts.as_ref())
        && let Some(users) = model.resource(&accounts.resource)
    {
        schemas.insert(
            "Session".into(),
            json!({
                "type": "object",
                "properties": {
                    "token": {"type": "string"},
                    "token_type": {"type": "string", "enum": ["Bearer"]},
                    "expires_in": {"type": "integer"},
                    "user": schema_ref(&schema_name(users, Mode::Read)),
                },
                "required": ["token", "token_type", "expires_in", "user"],
            }),
        );
    }
    // Query parameters once per resource; operations refer to them.
    let mut parameters = Map::new();
    for resource in model.resources.values() {
        for p in list_parameters(resource) {
            parameters.insert(parameter_name(resource, &p), p);
        }
    }
    let mut components = json!({
        "schemas": schemas,
        "parameters": parameters,
        "responses": shared.components,
        "headers": {
            "ETag": {"description": "The row's version (strong) or a hash of the body (weak).", "schema": {"type": "string"}},
            "Location": {"description": "The path of the created row.", "schema": {"type": "string"}},
            "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
            "WWWAuthenticate": {"schema": {"type": "string"}},
        },
    });
    let schemes = security_schemes(model);
    if !schemes.is_empty() {
        components["securitySchemes"] = Json::Object(schemes);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": model.name,
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The REST API of {}, served by Anteroom from its schema file. Errors are \
                 application/problem+json with a stable `code`; lists are paged with next_cursor.",
                model.name
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": components,
    })
}

/// The queue a queue route serves.
fn queue_of<'m>(model: &'m AppModel, route: &Route) -> Option<&'m crate::schema::queue::Queue> {
    match &route.target {
        Target::Queue { queue } => model.queues.get(queue),
        _ => None,
    }
}

/// A queue's entry (as read, with its position), its join body, a page of
/// its line, and the state every queue answers with.
fn queue_schemas(queue: &crate::schema::queue::Queue, schemas: &mut Map<String, Json>) {
    let entries = &queue.entries;
    schemas.insert(
        schema_name(entries, Mode::Create),
        resource_schema(entries, Mode::Create),
    );
    let mut entry = resource_schema(entries, Mode::Read);
    entry["description"] = json!(format!(
        "An entry of the {} queue. `position` is 1 for the head of its line, null unless waiting.",
        queue.name
    ));
    entry["properties"]["position"] = json!({"type": ["integer", "null"], "minimum": 1});
    entry["properties"]["estimated_wait_s"] = json!({"type": ["integer", "null"], "minimum": 0,
        "description": "position × the line's rolling mean time between calls; null until the line has had two calls."});
    entry["properties"][crate::schema::queue::columns::STATUS] =
        json!({"type": "string", "enum": crate::schema::queue::STATUSES});
    schemas.insert(format!("{}.entry", entries.name), entry);
    schemas.insert(
        format!("{}.line", entries.name),
        json!({
            "type": "object",
            "description": "Waiting entries in line order; while next_after is not null, ask again with after=next_after.",
            "properties": {
                "items": {"type": "array", "items": schema_ref(&format!("{}.entry", entries.name))},
                "next_after": {"type": ["integer", "null"]},
            },
            "required": ["items", "next_after"],
            "additionalProperties": false,
        }),
    );
    let number_or_null = json!({"type": ["number", "null"]});
    schemas.insert(
        "QueueStats".into(),
        json!({
            "type": "object",
            "description": "A line's activity over the window: entries called in it, their waits from join to call (nearest-rank percentiles), calls per hour and per server; call_interval_s is the rolling mean time between calls that estimated_wait_s uses.",
            "properties": {
                "window_s": {"type": "integer"},
                "waiting": {"type": "integer"},
                "serving": {"type": "integer"},
                "called": {"type": "integer"},
                "done": {"type": "integer"},
                "no_show": {"type": "integer"},
                "wait_p50_s": number_or_null,
                "wait_p95_s": number_or_null,
                "calls_per_hour": {"type": "number"},
                "call_interval_s": number_or_null,
                "servers": {"type": "object", "additionalProperties": {"type": "integer"}},
                "truncated": {"type": "boolean"},
            },
            "required": ["window_s", "waiting", "serving", "called", "done", "no_show",
                         "wait_p50_s", "wait_p95_s", "calls_per_hour", "call_interval_s",
                         "servers", "truncated"],
        }),
    );
    schemas.insert(
        "QueueState".into(),
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "member": {"type": "string"},
                "partition_by": {"type": "array", "items": {"type": "string"}},
                "capacity": {"type": ["integer", "null"]},
                "open": {"type": "boolean"},
            },
            "required": ["name", "member", "partition_by", "capacity", "open"],
        }),
    );
}

/// The query parameters naming a line (every partition field, required),
/// with `limit` and `after` for reading it.
fn partition_parameters(queue: &crate::schema::queue::Queue, query: QueryKind) -> Vec<Json> {
    let mut out: Vec<Json> = queue
        .partition_columns()
        .map(|c| {
            json!({
                "name": c.name, "in": "query", "required": true, "schema": value_schema(c, Mode::Read),
                "description": format!("The line's {} (an empty value names the line of members without one).", c.name),
            })
        })
        .collect();
    if query == QueryKind::Stats {
        out.push(json!({"name": "window_s", "in": "query",
            "schema": {"type": "integer", "minimum": 60, "maximum": 86400, "default": 3600},
            "description": "The window the stats cover, in seconds back from now."}));
    }
    if query == QueryKind::Line {
        out.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}));
        out.push(
            json!({"name": "after", "in": "query", "schema": {"type": "integer"},
            "description": "The ticket after which to continue (the previous page's next_after)."}),
        );
    }
    out
}

fn schema_ref(name: &str) -> Json {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Component names hold a `.`, which resource names cannot: no collisions.
fn schema_name(resource: &Resource, mode: Mode) -> String {
    match mode {
        Mode::Read => resource.name.clone(),
        Mode::Create => format!("{}.create", resource.name),
        Mode::Update => format!("{}.update", resource.name),
        Mode::Replace => format!("{}.replace", resource.name),
    }
}

fn page_name(resource: &Resource) -> String {
    format!("{}.page", resource.name)
}

fn problem_schema() -> Json {
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "object",
        "description": "An RFC 9457 problem. `code` is stable; `detail` says what to do.",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "code": {"type": "string", "enum": codes},
            "detail": {"type": "string"},
            "field": {"type": "string"},
            "errors": {"type": "array", "items": schema_ref("FieldError")},
        },
        "required": ["type", "title", "status", "code", "detail"],
    })
}

fn field_error_schema() -> Json {
    let codes: Vec<&str> = FieldCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "object",
        "properties": {
            "field": {"type": "string"},
            "code": {"type": "string", "enum": codes},
            "message": {"type": "string"},
        },
        "required": ["field", "code", "message"],
    })
}

/// 2^63, as the bounds of 64-bit integers.
const I64_MIN: i64 = i64::MIN;
const I64_MAX: i64 = i64::MAX;

/// The JSON Schema of a value of `column` (without nullability).
fn value_schema(column: &Column, mode: Mode) -> Json {
    let c = &column.constraints;
    match &column.ty {
        FieldType::String | FieldType::Text => {
            let mut s = json!({"type": "string"});
            if let Some(n) = c.max_length {
                s["maxLength"] = json!(n);
            }
            if let Some(n) = c.min_length {
                s["minLength"] = json!(n);
            }
            if let Some(p) = &c.pattern {
                // Anchored on the server; JSON Schema patterns are not.
                s["pattern"] = json!(format!("^(?:{})$", p.source));
            }
            match c.format {
                Some(Format::Email) => s["format"] = json!("email"),
                Some(Format::Url) => s["format"] = json!("uri"),
                Some(Format::Uuid) => s["format"] = json!("uuid"),
                None => {}
            }
            s
        }
        FieldType::Integer => {
            let lo = c.min.map_or(I64_MIN, |m| m.ceil() as i64);
            let hi = c.max.map_or(I64_MAX, |m| m.floor() as i64);
            json!({"type": "integer", "format": "int64", "minimum": lo, "maximum": hi})
        }
        FieldType::Float => {
            let mut s = json!({"type": "number", "format": "double"});
            if let Some(m) = c.min {
                s["minimum"] = json!(m);
            }
            if let Some(m) = c.max {
                s["maximum"] = json!(m);
            }
            s
        }
        FieldType::Decimal => {
            let description = match c.scale {
                Some(scale) => format!(
                    "A decimal: up to {} digits before the point and {scale} after, \
                     answered as a string with exactly {scale} (`scale`); exact when sent as one.",
                    domain::DECIMAL_INTEGER_DIGITS,
                ),
                None => format!(
                    "A decimal: up to {} digits before the point and {} after; \
                     answered as a string, exact when sent as one.",
                    domain::DECIMAL_INTEGER_DIGITS,
                    domain::DECIMAL_SCALE
                ),
            };
            if mode == Mode::Read {
                json!({"type": "string", "description": description})
            } else {
                json!({"type": ["string", "number"], "description": description})
            }
        }
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Timestamp => json!({
            "type": "string",
            "format": "date-time",
            "description": format!(
                "RFC 3339 with a time zone, years {:04}-{:04}; answered in UTC with microseconds.",
                domain::MIN_YEAR,
                domain::MAX_YEAR
            ),
        }),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Uuid => json!({"type": "string", "format": "uuid"}),
        FieldType::Json => json!({
            "description": format!(
                "Any JSON value, nested at most {} levels.",
                domain::MAX_JSON_DEPTH
            ),
        }),
        FieldType::Enum(values) => json!({"type": "string", "enum": values}),
        FieldType::Ref(r) => {
            let mut s = key_schema(&r.key);
            s["description"] = json!(format!("The id of a row of {}.", r.to));
            s
        }
    }
}

/// The schema of a key of `kind`.
fn key_schema(kind: &IdKind) -> Json {
    match kind {
        IdKind::Uuid => json!({"type": "string", "format": "uuid"}),
        IdKind::Integer => {
            json!({"type": "integer", "format": "int64", "minimum": I64_MIN, "maximum": I64_MAX})
        }
        IdKind::Key { max_length } => json!({
            "type": "string",
            "minLength": 1,
            "maxLength": max_length,
            "description": "A client-chosen key: not '.' or '..', without '/' or control characters.",
        }),
    }
}

/// The schema of a column in a mode, `null` included where allowed.
fn field_schema(resource: &Resource, field: &FieldShape<'_>, mode: Mode) -> Json {
    let column = field.column;
    let mut schema = if column.role == ColumnRole::Id {
        key_schema(&resource.id_kind)
    } else if matches!(column.role, ColumnRole::CreatedAt | ColumnRole::UpdatedAt) {
        json!({"type": "string", "format": "date-time"})
    } else if matches!(column.role, ColumnRole::CreatedBy | ColumnRole::UpdatedBy) {
        json!({"type": "string", "description": "The authenticated subject that wrote the row."})
    } else {
        value_schema(column, mode)
    };
    if field.nullable {
        allow_null(&mut schema);
    }
    if mode == Mode::Read
        && field.presence == Presence::ReadOnly
        && column.role != ColumnRole::Field
    {
        schema["readOnly"] = json!(true);
    }
    if mode != Mode::Read {
        if column.hidden {
            // Accepted in bodies, never shown in responses.
            schema["writeOnly"] = json!(true);
        }
        if let Some(default) = field.default {
            schema["default"] = default.clone();
        }
        if let Some(rule) = field.writable_by {
            schema["description"] = json!(format!("Only {} may set this field.", rule_text(rule)));
        }
    }
    schema
}

/// Adds `null` to a schema's type (or its enum).
fn allow_null(schema: &mut Json) {
    if let Some(values) = schema.get_mut("enum").and_then(Json::as_array_mut) {
        values.push(Json::Null);
    }
    match schema.get("type").cloned() {
        Some(Json::String(t)) => schema["type"] = json!([t, "null"]),
        Some(Json::Array(mut types)) => {
            types.push(json!("null"));
            schema["type"] = Json::Array(types);
        }
        _ => {}
    }
}

fn rule_text(rule: &Rule) -> String {
    match rule {
        Rule::Public => "anyone".into(),
        Rule::Authenticated | Rule::Owner => "authenticated callers".into(),
        Rule::Roles(roles) => format!("callers with the role {}", roles.join(" or ")),
        Rule::Denied => "nobody (the server sets it)".into(),
        other => format!("callers the rule `{other}` allows"),
    }
}

/// The object schema of a resource in one mode.
fn resource_schema(resource: &Resource, mode: Mode) -> Json {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in shape(resource, mode) {
        let include = match mode {
            Mode::Read => field.presence != Presence::Absent,
            _ => matches!(field.presence, Presence::Required | Presence::Optional),
        };
        if !include {
            continue;
        }
        // Rows carry every field unless `fields` selects some: a response
        // cannot mark them required.
        if mode != Mode::Read && field.presence == Presence::Required {
            required.push(field.column.name.clone());
        }
        properties.insert(
            field.column.name.clone(),
            field_schema(resource, &field, mode),
        );
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": mode == Mode::Read,
    });
    if mode == Mode::Read {
        schema["description"] = json!(format!(
            "A {} row: every field below unless `fields` selects some; `expand` adds the referenced rows.",
            resource.name
        ));
    }
    schema
}

fn security_schemes(model: &AppModel) -> Map<String, Json> {
    let mut schemes = Map::new();
    let Some(auth) = &model.auth else {
        return schemes;
    };
    if auth.jwt.is_some() || auth.accounts.is_some() {
        schemes.insert(
            "bearer".into(),
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}),
        );
    }
    if auth.accounts.is_some() {
        schemes.insert("basic".into(), json!({"type": "http", "scheme": "basic"}));
    }
    if let Some(key) = &auth.api_key {
        if let Some(header) = &key.header {
            schemes.insert(
                "apiKeyHeader".into(),
                json!({"type": "apiKey", "in": "header", "name": header}),
            );
        }
        if let Some(query) = &key.query {
            schemes.insert(
                "apiKeyQuery".into(),
                json!({"type": "apiKey", "in": "query", "name": query}),
            );
        }
    }
    schemes
}

/// The security requirement of an endpoint: none without `[auth]`, optional
/// credentials on public rules (and on operations nobody may perform: no
/// credential changes their 403), any accepted credential otherwise.
fn security(model: &AppModel, rules: &[&Rule]) -> Option<Json> {
    let schemes = security_schemes(model);
    if schemes.is_empty() {
        return None;
    }
    let mut alternatives: Vec<Json> = schemes
        .keys()
        .filter(|k| *k != "basic")
        .map(|k| json!({ k.as_str(): [] }))
        .collect();
    if rules.iter().all(|r| r.allows_anonymous()) || rules.contains(&&Rule::Denied) {
        alternatives.insert(0, json!({}));
    }
    Some(Json::Array(alternatives))
}

/// Identical responses written once under `components/responses`.
#[derive(Default)]
struct SharedResponses {
    components: Map<String, Json>,
    names: std::collections::HashMap<String, String>,
}

impl SharedResponses {
    /// A reference to `response`, registering it under a name from its status.
    fn reference(&mut self, status: StatusCode, response: Json) -> Json {
        let key = response.to_string();
        let name = match self.names.get(&key) {
            Some(name) => name.clone(),
            None => {
                let base = status.as_u16().to_string();
                let n = self
                    .components
                    .keys()
                    .filter(|k| k.split('.').next() == Some(&base))
                    .count();
                let name = format!("{base}.{}", n + 1);
                self.components.insert(name.clone(), response);
                self.names.insert(key, name.clone());
                name
            }
        };
        json!({"$ref": format!("#/components/responses/{name}")})
    }
}

fn parameter_refs(resource: &Resource, params: Vec<Json>) -> Vec<Json> {
    params
        .iter()
        .map(
            |p| json!({"$ref": format!("#/components/parameters/{}", parameter_name(resource, p))}),
        )
        .collect()
}

fn operation(
    model: &AppModel,
    route: &Route,
    endpoint: &Endpoint,
    list_on_path: bool,
    shared: &mut SharedResponses,
) -> Json {
    let queue = queue_of(model, route);
    let resource = route
        .target
        .resource()
        .and_then(|r| model.resource(r))
        .or(queue.map(|q| &q.entries));
    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id(route, endpoint)));
    op.insert("summary".into(), json!(summary(route, endpoint)));
    op.insert("tags".into(), json!([tag(route)]));
    let mut parameters = Vec::new();
    match (endpoint.query, resource) {
        (QueryKind::List, Some(r)) if !list_on_path => {
            parameters.extend(parameter_refs(r, list_parameters(r)));
        }
        (QueryKind::Read, Some(r)) => parameters.extend(parameter_refs(r, read_parameters(r))),
        (QueryKind::Partition | QueryKind::Line | QueryKind::Stats, _) => {
            if let Some(q) = queue {
                parameters.extend(partition_parameters(q, endpoint.query));
            }
        }
        _ => {}
    }
    parameters.extend(header_parameters(endpoint));
    if !parameters.is_empty() {
        op.insert("parameters".into(), Json::Array(parameters));
    }
    if let Some(body) = request_body(endpoint.body, resource) {
        op.insert("requestBody".into(), body);
    }
    let mut responses = Map::new();
    for outcome in &endpoint.outcomes {
        let one = response(model, endpoint, resource, outcome);
        // Problems repeat across operations; successes carry links and
        // headers of their own operation.
        let one = if outcome.codes.is_empty() {
            one
        } else {
            shared.reference(outcome.status, one)
        };
        responses.insert(outcome.status.as_u16().to_string(), one);
    }
    op.insert("responses".into(), Json::Object(responses));
    let rules = endpoint_rules(model, route, endpoint, resource);
    if let Some(security) = security(model, &rules) {
        op.insert("security".into(), security);
    }
    Json::Object(op)
}

/// The rules that decide who may call an endpoint.
fn endpoint_rules<'m>(
    model: &'m AppModel,
    route: &Route,
    endpoint: &Endpoint,
    resource: Option<&'m Resource>,
) -> Vec<&'m Rule> {
    static PUBLIC: Rule = Rule::Public;
    static AUTHENTICATED: Rule = Rule::Authenticated;
    if let Some(action) = endpoint.action.queue_rule()
        && let Some(q) = queue_of(model, route)
    {
        let rule = action.rule(&q.rules);
        // Where nobody may take the action itself, those who may take the
        // stronger one (serve for view, manage for leave) still may.
        return match action.implied_by() {
            Some(stronger) if *rule == Rule::Denied => vec![stronger.rule(&q.rules)],
            _ => vec![rule],
        };
    }
    let Some(r) = resource else {
        return match endpoint.action {
            Action::Me | Action::ChangePassword | Action::LogoutAll => vec![&AUTHENTICATED],
            _ => vec![&PUBLIC],
        };
    };
    let rules = &r.rules;
    let mut out = match endpoint.action {
        Action::List => vec![&rules.list, &rules.read],
        Action::Read => vec![&rules.read],
        Action::Create => vec![&rules.create],
        Action::Update | Action::Replace => vec![&rules.update],
        Action::Delete => vec![&rules.delete],
        _ => vec![&PUBLIC],
    };
    if let Target::NestedCollection { parent, .. } | Target::NestedItem { parent, .. } =
        &route.target
        && let Some(p) = model.resource(parent)
    {
        out.push(&p.rules.read);
    }
    out
}

fn tag(route: &Route) -> String {
    match &route.target {
        Target::Signup | Target::Login | Target::Me | Target::Password | Target::LogoutAll => {
            "auth".into()
        }
        Target::Queue { queue } => format!("queue {queue}"),
        t => t.resource().map_or_else(|| "server".into(), str::to_owned),
    }
}

fn operation_id(route: &Route, endpoint: &Endpoint) -> String {
    let verb = match endpoint.action {
        Action::Index => "index",
        Action::Health => "health",
        Action::Describe => "describe",
        Action::Docs => "docs",
        Action::Signup => "signup",
        Action::Login => "login",
        Action::Me => "me",
        Action::ChangePassword => "change_password",
        Action::LogoutAll => "logout_all",
        Action::List => "list",
        Action::Read => "read",
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "delete",
        Action::QueueState => "state",
        Action::QueueManage => "open_or_close",
        Action::Join => "join",
        Action::Line => "line",
        Action::ReadEntry => "read_entry",
        Action::Leave => "leave",
        Action::Next => "next",
        Action::Done => "done",
        Action::NoShow => "no_show",
        Action::Stats => "stats",
        Action::EntryEvents => "entry_events",
        Action::LineEvents => "line_events",
    };
    let subject = match &route.target {
        Target::Queue { queue } => format!("_{queue}"),
        Target::Collection { resource } | Target::Item { resource } => format!("_{resource}"),
        Target::NestedCollection { parent, child, .. }
        | Target::NestedItem { parent, child, .. } => format!("_{child}_of_{parent}"),
        Target::DocsAsset => "_asset".into(),
        Target::Login if endpoint.method == Method::POST => "_json".into(),
        Target::Login => "_basic".into(),
        _ => String::new(),
    };
    let head = if endpoint.method == Method::HEAD {
        "head_"
    } else {
        ""
    };
    format!("{head}{verb}{subject}")
}

fn summary(route: &Route, endpoint: &Endpoint) -> String {
    let what = match &route.target {
        Target::Collection { resource } | Target::Item { resource } => resource.clone(),
        Target::NestedCollection { parent, child, .. }
        | Target::NestedItem { parent, child, .. } => format!("{child} of one {parent} row"),
        _ => String::new(),
    };
    let text = match endpoint.action {
        Action::Index => "Where the description, the docs and the resources are".into(),
        Action::Health => "200 when the database answers, 503 when not".into(),
        Action::Describe => "This document".into(),
        Action::Docs if route.target == Target::DocsAsset => {
            "A file of the API reference page (script, style)".into()
        }
        Action::Docs => "The API reference page".into(),
        Action::Signup => "Create an account and get a token".into(),
        Action::Login => "Log in and get a token".into(),
        Action::Me => "The caller's account".into(),
        Action::ChangePassword => "Change the password; every earlier token is revoked".into(),
        Action::LogoutAll => "Revoke every token of the caller's account".into(),
        Action::List => format!("List {what}"),
        Action::Read => format!("Read one of {what}"),
        Action::Create => format!("Create {what} (an object, or an array of up to {MAX_BULK})"),
        Action::Update => format!("Update some fields of one of {what}"),
        Action::Replace => format!("Replace one of {what}"),
        Action::Delete => format!("Delete one of {what}"),
        Action::QueueState => "The queue: whether it is open, how it is partitioned".into(),
        Action::QueueManage => "Open or close the queue (a closed queue refuses joins with 409)".into(),
        Action::Join => "Join: a waiting entry with its ticket and position (409 if the member already has an active entry)".into(),
        Action::Line => "The waiting entries of one line, in order; page with after=next_after".into(),
        Action::ReadEntry => "One entry: status and position; poll with If-None-Match (304 while unchanged)".into(),
        Action::Leave => "Leave the line: status left; everyone behind moves up".into(),
        Action::Next => "Serve next: atomically claims the head of the line (status serving); 204 when nobody waits".into(),
        Action::Done => "Finish serving the entry (status done)".into(),
        Action::NoShow => "The called member did not show up (status no_show)".into(),
        Action::Stats => "A line's counts, waits (p50/p95), calls per hour and calls per server over a window".into(),
        Action::EntryEvents => "Server-Sent Events of one entry: `entry` (the entry as read) whenever its position or status changes, heartbeats, resumable with Last-Event-ID; ends after done, no_show or left (`gone` if it disappears)".into(),
        Action::LineEvents => "Server-Sent Events of one line: `line` (its first page, as listed) whenever the line changes, heartbeats, resumable with Last-Event-ID".into(),
    };
    if endpoint.method == Method::HEAD {
        format!("{text} (headers only)")
    } else {
        text
    }
}

fn path_parameters(model: &AppModel, route: &Route) -> Vec<Json> {
    let key_of = |name: &str| model.resource(name).map(|r| &r.id_kind);
    let mut out = Vec::new();
    let keys: Vec<Option<&IdKind>> = match &route.target {
        Target::Item { resource } => vec![key_of(resource)],
        Target::NestedCollection { parent, .. } => vec![key_of(parent)],
        Target::NestedItem { parent, child, .. } => vec![key_of(parent), key_of(child)],
        Target::DocsAsset => vec![None],
        Target::Queue { .. } => vec![Some(&IdKind::Uuid)],
        _ => Vec::new(),
    };
    let params = route.segments.iter().filter_map(|s| match s {
        crate::routes::Segment::Param(p) => Some(p),
        crate::routes::Segment::Literal(_) => None,
    });
    for (name, key) in params.zip(keys) {
        let schema = key.map_or_else(|| json!({"type": "string"}), key_schema);
        out.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
    }
    out
}

/// The component name of a resource's query parameter (`students.name[ilike]`
/// would not be a valid component name: brackets become `.`).
fn parameter_name(resource: &Resource, param: &Json) -> String {
    let name = param["name"].as_str().unwrap_or_default();
    format!(
        "{}.{}",
        resource.name,
        name.replace('[', ".").replace(']', "")
    )
}

/// A comma-separated list parameter (`a,b,c`).
fn list_param(name: &str, items: Json, description: &str) -> Json {
    json!({
        "name": name, "in": "query", "required": false,
        "style": "form", "explode": false,
        "description": description,
        "schema": {"type": "array", "items": items, "minItems": 1},
    })
}

/// The schema of a filter value of `column` as query text.
fn filter_value_schema(column: &Column) -> Json {
    match &column.ty {
        FieldType::Boolean => json!({"type": "string", "enum": ["true", "false", "1", "0"]}),
        FieldType::Enum(values) => json!({"type": "string", "enum": values}),
        FieldType::Integer => json!({"type": "integer", "format": "int64"}),
        FieldType::Float => json!({"type": "number"}),
        FieldType::Timestamp => json!({"type": "string", "format": "date-time"}),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Uuid => json!({"type": "string", "format": "uuid"}),
        FieldType::Ref(r) => key_schema(&r.key),
        _ => json!({"type": "string"}),
    }
}

/// An `[in]` list as it travels: one comma-separated string (so one value is
/// a list of one), with a pattern where the element type has one.
fn in_list_schema(element: &Json) -> Json {
    let item = match (element["type"].as_str(), element["format"].as_str()) {
        (Some("integer"), _) => Some(r"[+-]?[0-9]+"),
        (_, Some("uuid")) => {
            Some(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
        }
        _ => None,
    };
    let mut schema = json!({
        "type": "string",
        "description": format!("A comma-separated list of at most {MAX_IN_VALUES} values."),
    });
    if let Some(item) = item {
        schema["pattern"] = json!(format!("^{item}(,{item})*$"));
    }
    schema
}

fn filter_column_schema(resource: &Resource, column: &Column) -> Json {
    if column.role == ColumnRole::Id {
        return match &resource.id_kind {
            IdKind::Key { .. } => json!({"type": "string"}),
            kind => key_schema(kind),
        };
    }
    if matches!(column.role, ColumnRole::CreatedAt | ColumnRole::UpdatedAt) {
        return json!({"type": "string", "format": "date-time"});
    }
    filter_value_schema(column)
}

fn list_parameters(resource: &Resource) -> Vec<Json> {
    let visible: Vec<&Column> = resource.columns.iter().filter(|c| !c.hidden).collect();
    let mut out = Vec::new();
    for column in &visible {
        let value = filter_column_schema(resource, column);
        for op in Op::ALL {
            if !op.applies_to(column.scalar()) {
                continue;
            }
            let (name, schema) = match op {
                Op::Eq => (column.name.clone(), value.clone()),
                Op::In => (format!("{}[in]", column.name), in_list_schema(&value)),
                Op::Like | Op::Ilike => (
                    format!("{}[{}]", column.name, op.name()),
                    json!({"type": "string", "maxLength": MAX_PATTERN_CHARS}),
                ),
                Op::Null => (
                    format!("{}[null]", column.name),
                    json!({"type": "string", "enum": ["true", "false"]}),
                ),
                _ => (format!("{}[{}]", column.name, op.name()), value.clone()),
            };
            let param = json!({
                "name": name, "in": "query", "required": false,
                "description": op.description(),
                "schema": schema,
            });
            out.push(param);
        }
    }
    let sortable: Vec<String> = visible
        .iter()
        .filter(|c| c.scalar().is_ordered() || c.scalar() == crate::schema::Scalar::Bool)
        .flat_map(|c| [c.name.clone(), format!("-{}", c.name)])
        .collect();
    out.push(list_param(
        "sort",
        json!({"type": "string", "enum": sortable}),
        "Sort keys, `-` for descending; each field at most once. The id is always the last tiebreaker.",
    ));
    out.push(json!({"name": "limit", "in": "query", "required": false,
        "description": format!("Rows per page (a page also stops at {} of rows).", format_bytes(PAGE_BYTE_BUDGET)),
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}));
    out.push(json!({"name": "offset", "in": "query", "required": false,
        "description": "Rows to skip; not with cursor.",
        "schema": {"type": "integer", "minimum": 0, "maximum": I64_MAX}}));
    out.push(json!({"name": "cursor", "in": "query", "required": false,
        "description": "The next_cursor of the previous page, with the same sort.",
        "schema": {"type": "string"}}));
    out.push(json!({"name": "count", "in": "query", "required": false,
        "description": "Add total: the rows matching the filters.",
        "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}));
    out.extend(read_parameters(resource));
    out
}

fn read_parameters(resource: &Resource) -> Vec<Json> {
    let names: Vec<&str> = resource
        .columns
        .iter()
        .filter(|c| !c.hidden)
        .map(|c| c.name.as_str())
        .collect();
    let mut out = vec![list_param(
        "fields",
        json!({"type": "string", "enum": names}),
        "Return only these fields.",
    )];
    let refs: Vec<String> = resource
        .columns
        .iter()
        .filter(|c| !c.hidden && matches!(c.ty, FieldType::Ref(_)))
        .flat_map(|c| {
            let short = expand_key(&c.name).to_owned();
            if short == c.name {
                vec![short]
            } else {
                vec![short, c.name.clone()]
            }
        })
        .collect();
    if !refs.is_empty() {
        out.push(list_param(
            "expand",
            json!({"type": "string", "enum": refs}),
            "Add the referenced rows (under the reference's name without _id).",
        ));
    }
    out
}

fn header_parameters(endpoint: &Endpoint) -> Vec<Json> {
    let header = |name: &str, description: &str| {
        json!({"name": name, "in": "header", "required": false,
               "description": description, "schema": {"type": "string"}})
    };
    match endpoint.action {
        Action::List | Action::Read | Action::ReadEntry | Action::Describe | Action::Docs => {
            vec![header(
                "If-None-Match",
                "An ETag: answered 304 while it is current.",
            )]
        }
        Action::EntryEvents | Action::LineEvents => vec![header(
            "Last-Event-ID",
            "The id of the last event received (EventSource sends it when it reconnects): \
             the stream then starts with the next change instead of the current state.",
        )],
        Action::Join => {
            let mut key = header(
                "Idempotency-Key",
                "A key for this join (a UUID): retried with the same body, it answers 200 \
                 with the entry it created; with another body, 422.",
            );
            key["schema"] = json!({"type": "string", "minLength": 1,
                "maxLength": crate::schema::queue::MAX_IDEMPOTENCY_KEY, "pattern": "^[!-~]+$"});
            vec![key]
        }
        Action::Update | Action::Replace | Action::Delete => vec![
            header(
                "If-Match",
                "Write only if the row's ETag is one of these (`*`: it exists).",
            ),
            header(
                "If-None-Match",
                "Write only if the row's ETag is none of these (`*`: it does not exist).",
            ),
        ],
        _ => Vec::new(),
    }
}

fn request_body(body: BodyKind, resource: Option<&Resource>) -> Option<Json> {
    let content = |schema: Json| json!({"required": true, "content": {"application/json": {"schema": schema}}});
    let string = json!({"type": "string"});
    Some(match (body, resource) {
        (BodyKind::Row(mode), Some(r)) => {
            let one = schema_ref(&schema_name(r, Mode::from(mode)));
            if mode == BodyMode::Create {
                content(
                    json!({"oneOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_BULK}]}),
                )
            } else {
                content(one)
            }
        }
        (BodyKind::Signup, _) => content(json!({
            "type": "object",
            "properties": {"username": string, "email": {"type": "string", "format": "email"},
                           "password": {"type": "string", "minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD}},
            "required": ["username", "email", "password"], "additionalProperties": false})),
        (BodyKind::Login, _) => content(json!({
            "type": "object",
            "properties": {"username": string, "email": string, "password": string},
            "required": ["password"]})),
        (BodyKind::Join, Some(entries)) => content(schema_ref(&schema_name(entries, Mode::Create))),
        (BodyKind::QueueState, _) => content(json!({
            "type": "object",
            "properties": {"open": {"type": "boolean"}},
            "required": ["open"], "additionalProperties": false})),
        (BodyKind::Password, _) => content(json!({
            "type": "object",
            "properties": {"password": string,
                           "new_password": {"type": "string", "minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD}},
            "required": ["password", "new_password"], "additionalProperties": false})),
        _ => return None,
    })
}

fn response(
    model: &AppModel,
    endpoint: &Endpoint,
    resource: Option<&Resource>,
    outcome: &Outcome,
) -> Json {
    let status = outcome.status;
    let mut out = Map::new();
    out.insert(
        "description".into(),
        json!(status.canonical_reason().unwrap_or("Response")),
    );
    let mut headers = Map::new();
    if !outcome.codes.is_empty() {
        let codes: Vec<&str> = outcome.codes.iter().map(|c| c.as_str()).collect();
        let meanings: Vec<String> = outcome
            .codes
            .iter()
            .map(|c| format!("`{}`: {}", c.as_str(), c.description()))
            .collect();
        out.insert("description".into(), json!(meanings.join("; ")));
        out.insert(
            "content".into(),
            json!({"application/problem+json": {"schema": {
                "allOf": [schema_ref("Problem"), {"properties": {"code": {"enum": codes}}}]
            }}}),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                "Retry-After".into(),
                json!({"$ref": "#/components/headers/RetryAfter"}),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                "WWW-Authenticate".into(),
                json!({"$ref": "#/components/headers/WWWAuthenticate"}),
            );
        }
    } else if let Some(schema) = success_schema(model, endpoint, resource, status) {
        let body = if endpoint.method == Method::HEAD {
            None
        } else {
            Some(schema)
        };
        if let Some(schema) = body {
            let media = if endpoint.action.streams() {
                crate::streams::EVENT_STREAM
            } else {
                "application/json"
            };
            out.insert("content".into(), json!({ media: {"schema": schema} }));
        }
        if matches!(
            endpoint.action,
            Action::List | Action::Read | Action::Update | Action::Replace | Action::Create
        ) && status != StatusCode::NO_CONTENT
        {
            headers.insert("ETag".into(), json!({"$ref": "#/components/headers/ETag"}));
        }
        if status == StatusCode::CREATED && resource.is_some() {
            headers.insert(
                "Location".into(),
                json!({"$ref": "#/components/headers/Location"}),
            );
            if let Some(links) = created_links(endpoint, resource) {
                out.insert("links".into(), links);
            }
        }
    }
    if !headers.is_empty() {
        out.insert("headers".into(), Json::Object(headers));
    }
    Json::Object(out)
}

/// Links from a created row to reading, updating and deleting it (what a
/// stateful client, or a fuzzer, does next).
fn created_links(endpoint: &Endpoint, resource: Option<&Resource>) -> Option<Json> {
    let r = resource?;
    if endpoint.action != Action::Create {
        return None;
    }
    let id = &r.id_column().name;
    let param = json!({ id.as_str(): format!("$response.body#/{id}") });
    Some(json!({
        "read": {"operationId": format!("read_{}", r.name), "parameters": param},
        "update": {"operationId": format!("update_{}", r.name), "parameters": param},
        "delete": {"operationId": format!("delete_{}", r.name), "parameters": param},
    }))
}

fn success_schema(
    model: &AppModel,
    endpoint: &Endpoint,
    resource: Option<&Resource>,
    status: StatusCode,
) -> Option<Json> {
    if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        return None;
    }
    let users = || {
        model
            .auth
            .as_ref()
            .and_then(|a| a.accounts.as_ref())
            .and_then(|a| model.resource(&a.resource))
    };
    Some(match (endpoint.action, resource) {
        (Action::List, Some(r)) => schema_ref(&page_name(r)),
        (Action::Read | Action::Update | Action::Replace, Some(r)) => {
            schema_ref(&schema_name(r, Mode::Read))
        }
        (Action::Create, Some(r)) => {
            let one = schema_ref(&schema_name(r, Mode::Read));
            json!({"oneOf": [one, {"type": "array", "items": one}]})
        }
        (Action::Health, _) => schema_ref("Health"),
        (Action::Index, _) => schema_ref("Index"),
        (Action::Describe, _) => json!({"type": "object"}),
        (Action::Docs, _) => return None,
        (Action::Signup | Action::Login | Action::ChangePassword, _) => schema_ref("Session"),
        (Action::Me, _) => schema_ref(&schema_name(users()?, Mode::Read)),
        (Action::QueueState | Action::QueueManage, _) => schema_ref("QueueState"),
        (Action::Stats, _) => schema_ref("QueueStats"),
        (Action::EntryEvents | Action::LineEvents, _) => json!({
            "type": "string",
            "description": "`event:`, `id:` and `data:` lines (the data is the JSON the matching \
                            GET route answers), and `:heartbeat` comments",
        }),
        (Action::Line, Some(entries)) => schema_ref(&format!("{}.line", entries.name)),
        (
            Action::Join
            | Action::ReadEntry
            | Action::Leave
            | Action::Next
            | Action::Done
            | Action::NoShow,
            Some(entries),
        ) => schema_ref(&format!("{}.entry", entries.name)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::load_str;

    /// The document of a model with accounts and a field of every kind whose
    /// description states a bound.
    fn doc() -> Json {
        let model = load_str(
            "[app]\nname='t'\n[auth.accounts]\nsecret_env='S'\n\
             [resources.notes]\nfields.d={type='decimal'}\nfields.t={type='timestamp'}\n\
             fields.j={type='json'}\n",
        )
        .unwrap();
        document(&model, &RouteTable::new(&model))
    }

    /// The JSON text of what the document holds at `pointer`.
    #[track_caller]
    fn text_at(doc: &Json, pointer: &str) -> String {
        at(doc, pointer).to_string()
    }

    #[test]
    fn every_bound_the_document_states_is_the_constant_the_server_enforces() {
        let doc = doc();
        let schema = |name: &str| {
            text_at(
                &doc,
                &format!("/components/schemas/notes/properties/{name}"),
            )
        };
        let decimal = schema("d");
        assert!(
            decimal.contains(&format!("up to {} digits", domain::DECIMAL_INTEGER_DIGITS)),
            "{decimal}"
        );
        assert!(
            decimal.contains(&format!("and {} after", domain::DECIMAL_SCALE)),
            "{decimal}"
        );
        let timestamp = schema("t");
        assert!(
            timestamp.contains(&format!(
                "years {:04}-{:04}",
                domain::MIN_YEAR,
                domain::MAX_YEAR
            )),
            "{timestamp}"
        );
        let json = schema("j");
        assert!(
            json.contains(&format!("at most {} levels", domain::MAX_JSON_DEPTH)),
            "{json}"
        );

        let create = at(&doc, "/paths/~1notes/post");
        assert!(
            create["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("up to {MAX_BULK})"))
        );
        let bulk = &create["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1];
        assert_eq!(bulk["maxItems"], MAX_BULK);
        let limit = text_at(&doc, "/components/parameters/notes.limit/description");
        assert!(limit.contains(&format_bytes(PAGE_BYTE_BUDGET)), "{limit}");

        for path in ["/paths/~1auth~1signup/post", "/paths/~1auth~1password/post"] {
            let properties = &at(&doc, path)["requestBody"]["content"]["application/json"]["schema"]
                ["properties"];
            let password = if properties["new_password"].is_object() {
                &properties["new_password"]
            } else {
                &properties["password"]
            };
            assert_eq!(password["minLength"], MIN_PASSWORD, "{path}");
            assert_eq!(password["maxLength"], MAX_PASSWORD, "{path}");
        }

        let problems = text_at(&doc, "/components/responses");
        assert!(
            problems.contains(&format!("more than {MAX_BULK} objects")),
            "{problems}"
        );
        assert!(
            problems.contains(&format!(
                "(default {})",
                format_bytes(crate::settings::DEFAULT_BODY_LIMIT)
            )),
            "{problems}"
        );
    }

    #[track_caller]
    fn at<'a>(doc: &'a Json, pointer: &str) -> &'a Json {
        doc.pointer(pointer)
            .unwrap_or_else(|| panic!("nothing at {pointer}"))
    }
}
