//! The request pipeline for queue routes, chained in [`handle`] like the
//! resources' one: authenticate → authorize (from the head, by
//! [`crate::policy`]) → parse (path, query, body) → execute (over the
//! [`QueueStore`]) → render. The invariants live in the store's
//! transactions; this module only translates HTTP to them and back.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value as Json, json};

use crate::error::{ApiError, Code};
use crate::plan::{Condition, PlanContext};
use crate::request::body::{self, BodyMode};
use crate::request::{EntityTags, Record};
use crate::routes::{Action, BodyKind, Matched, QueryKind, Target};
use crate::schema::Rule;
use crate::schema::queue::{Queue, Status, columns};
use crate::storage::queue::{
    Entry, IdempotencyKey, JoinPlan, Joined, Moved, Partition, QueueStore, Stamp,
};
use crate::streams::{Read, Snapshot};
use crate::value::{self, Value};
use crate::{AppState, pipeline, policy};

/// Entries a line page holds unless `limit` says otherwise.
const DEFAULT_LINE_LIMIT: u64 = 50;
/// Most entries a line page holds.
const MAX_LINE_LIMIT: u64 = 1000;
/// The stats' window unless `window_s` says otherwise: the last hour.
const DEFAULT_STATS_WINDOW_S: i64 = 3600;
/// The longest stats window: a day.
const MAX_STATS_WINDOW_S: i64 = 86_400;
/// Most calls the stats read (the most recent ones of the window).
const MAX_STATS_CALLS: u64 = 10_000;

/// What a queue request asks, once parsed.
enum Ask {
    State,
    SetOpen(bool),
    Join(Record, Option<String>),
    Line {
        partition: Partition,
        after: Option<i64>,
        limit: u64,
    },
    Read(Value, EntityTags),
    Leave(Value),
    Next(Partition),
    Stats(Partition, i64),
    Finish(Value, Status),
    /// An entry's event stream, from the client's `Last-Event-ID`.
    WatchEntry(Value, Option<String>),
    /// A line's event stream (its first `limit` entries after `after`).
    WatchLine {
        partition: Partition,
        after: Option<i64>,
        limit: u64,
        last_event_id: Option<String>,
    },
}

/// Starts this instance's sweep of expired `serving` entries: every queue
/// with a `serve_timeout` is swept every [`Queue::sweep_every`], so a called
/// entry nobody finished becomes `no_show` within that long after its
/// timeout, even on a line where nobody calls `next`. Every instance sweeps;
/// the sweep is one conditional update per line, so instances never undo
/// each other. Nothing to do (no task) when no queue has a timeout.
pub fn start_sweeper(state: &AppState) {
    let Some(every) = state
        .model
        .queues
        .values()
        .filter_map(Queue::sweep_every)
        .min()
    else {
        return;
    };
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for queue in state.model.queues.values() {
                match state.storage.queues().expire(queue, value::now()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(queue = %queue.name, entries = n, "serve timeout: marked no_show");
                        state.streams.changed(&queue.name, None);
                    }
                    Err(e) => {
                        tracing::warn!(queue = %queue.name, error = %e, "serve timeout sweep failed; retrying")
                    }
                }
            }
        }
    });
}

/// Handles a request the route table sent to a queue route.
pub(crate) async fn handle(state: &AppState, matched: &Matched<'_>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let result = async {
        let Target::Queue { queue } = &matched.route.target else {
            return Err(ApiError::internal("a queue handler for a non-queue route"));
        };
        let queue = state
            .model
            .queues
            .get(queue)
            .ok_or_else(|| ApiError::internal("a queue route without its queue"))?;
        let (ctx, query) = pipeline::caller(state, &parts).await?;
        let action = matched.endpoint.action;
        let (scope, member_scope) = authorize(state, queue, action, &ctx)?;
        let query = query.as_deref();
        let bytes = match matched.endpoint.body {
            BodyKind::None => bytes::Bytes::new(),
            _ => {
                body::check_media_type(
                    parts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok()),
                )?;
                pipeline::read_body(body, &parts.headers, &state.settings).await?
            }
        };
        let ask = parse(queue, matched, query, &parts.headers, &bytes)?;
        if matched.endpoint.action.streams() && parts.method == http::Method::HEAD {
            return Ok(crate::streams::head());
        }
        let stamp = Stamp {
            now: ctx.now,
            subject: ctx.subject.clone(),
        };
        run(state, queue, ask, scope, member_scope, &ctx, &stamp).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The rule of the endpoint's action, applied: refused, or allowed on the
/// entries a condition selects (`owner`: entries whose member the caller
/// owns). A join's `owner` condition is on the member row instead.
fn authorize(
    state: &AppState,
    queue: &Queue,
    action: Action,
    ctx: &PlanContext,
) -> Result<(Option<Condition>, Option<Condition>), ApiError> {
    let Some(queue_action) = action.queue_rule() else {
        return Err(ApiError::internal("a queue route without a queue action"));
    };
    let rule = queue_action.rule(&queue.rules);
    let identity = ctx.identity.as_ref();
    let verb = format!("{} the queue", queue_action.as_str());
    // Whoever may serve may view; whoever may manage may remove anyone: the
    // broader of the two grants applies.
    let own = policy::check(rule, identity, &queue.entries, &verb);
    let implied = queue_action.implied_by().map(|stronger| {
        policy::check(stronger.rule(&queue.rules), identity, &queue.entries, &verb)
    });
    let scope = match (own, implied) {
        (Ok(None), _) | (_, Some(Ok(None))) => None,
        (Ok(Some(a)), Some(Ok(Some(b)))) => Some(Condition::Any(vec![a, b])),
        (Ok(Some(a)), _) => Some(a),
        (Err(_), Some(Ok(Some(b)))) => Some(b),
        (Err(refused), _) => return Err(refused),
    };
    if action != Action::Join || *rule != Rule::Owner {
        return Ok((scope, None));
    }
    let member = state
        .model
        .resource(&queue.member)
        .ok_or_else(|| ApiError::internal("a queue without its member resource"))?;
    Ok((None, policy::check(rule, identity, member, &verb)?))
}

fn parse(
    queue: &Queue,
    matched: &Matched<'_>,
    query: Option<&str>,
    headers: &http::HeaderMap,
    bytes: &[u8],
) -> Result<Ask, ApiError> {
    let endpoint = matched.endpoint;
    if endpoint.query == QueryKind::None {
        crate::request::query::parse_none(query)?;
    }
    let entry_id = || {
        let raw = matched.params.first().map_or("", String::as_str);
        value::from_text(queue.entries.id_column(), raw)
            .map_err(|_| ApiError::not_found(format!("no {} entry with id {raw}", queue.name)))
    };
    Ok(match endpoint.action {
        Action::QueueState => Ask::State,
        Action::QueueManage => Ask::SetOpen(parse_state(bytes)?),
        Action::Join => match body::parse(&queue.entries, BodyMode::Create, bytes, None)? {
            body::Body::One(record) => Ask::Join(record, idempotency_key(headers)?),
            body::Body::Many(_) => {
                return Err(ApiError::bad_request(
                    Code::MalformedBody,
                    "join with one object: one member joins at a time",
                ));
            }
        },
        Action::Line | Action::LineEvents => {
            let (partition, rest) = parse_partition(queue, query, &["limit", "after"])?;
            let mut after = None;
            let mut limit = DEFAULT_LINE_LIMIT;
            for (key, raw) in rest {
                let number = raw.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(
                        Code::MalformedQuery,
                        format!("{key} must be an integer, not \"{raw}\""),
                    )
                })?;
                match key.as_str() {
                    "limit" if (1..=MAX_LINE_LIMIT as i64).contains(&number) => {
                        limit = number as u64;
                    }
                    "limit" => {
                        return Err(ApiError::bad_request(
                            Code::MalformedQuery,
                            format!("limit must be between 1 and {MAX_LINE_LIMIT}"),
                        ));
                    }
                    _ => after = Some(number),
                }
            }
            if endpoint.action == Action::LineEvents {
                Ask::WatchLine {
                    partition,
                    after,
                    limit,
                    last_event_id: last_event_id(headers)?,
                }
            } else {
                Ask::Line {
                    partition,
                    after,
                    limit,
                }
            }
        }
        Action::EntryEvents => Ask::WatchEntry(entry_id()?, last_event_id(headers)?),
        Action::ReadEntry => Ask::Read(
            entry_id()?,
            EntityTags::parse(headers, header::IF_NONE_MATCH)?,
        ),
        Action::Leave => Ask::Leave(entry_id()?),
        Action::Next => Ask::Next(parse_partition(queue, query, &[])?.0),
        Action::Stats => {
            let (partition, rest) = parse_partition(queue, query, &["window_s"])?;
            let mut window = DEFAULT_STATS_WINDOW_S;
            if let Some((_, raw)) = rest.first() {
                window = raw
                    .parse::<i64>()
                    .ok()
                    .filter(|w| (60..=MAX_STATS_WINDOW_S).contains(w))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            Code::MalformedQuery,
                            format!(
                                "window_s must be a number of seconds from 60 to {MAX_STATS_WINDOW_S}, not \"{raw}\""
                            ),
                        )
                    })?;
            }
            Ask::Stats(partition, window)
        }
        Action::Done => Ask::Finish(entry_id()?, Status::Done),
        Action::NoShow => Ask::Finish(entry_id()?, Status::NoShow),
        _ => return Err(ApiError::internal("a queue route with a resource action")),
    })
}

/// The `Idempotency-Key` header: 1 to 200 visible ASCII characters.
fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let max = crate::schema::queue::MAX_IDEMPOTENCY_KEY;
    let malformed = || {
        ApiError::bad_request(
            Code::MalformedHeader,
            format!(
                "Idempotency-Key must be one value of 1 to {max} visible ASCII characters (a UUID is a good key)"
            ),
        )
    };
    let key = value.to_str().map_err(|_| malformed())?;
    if values.next().is_some()
        || key.is_empty()
        || key.len() > max
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(malformed());
    }
    Ok(Some(key.to_owned()))
}

/// `Last-Event-ID`: what an EventSource sends back when it reconnects.
fn last_event_id(headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request(
                    Code::MalformedHeader,
                    "Last-Event-ID must be the id of an event this stream sent",
                )
            })
        })
        .transpose()
}

/// `{"open": true|false}`.
fn parse_state(bytes: &[u8]) -> Result<bool, ApiError> {
    let json: Json = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let invalid = |message: &str| ApiError::Validation {
        errors: vec![value::FieldError::new(
            "open",
            value::FieldCode::Type,
            message,
        )],
    };
    match json {
        Json::Object(map) => {
            if let Some(other) = map.keys().find(|k| *k != "open") {
                return Err(ApiError::Validation {
                    errors: vec![value::FieldError::new(
                        other,
                        value::FieldCode::UnknownField,
                        "a queue's state has only `open`",
                    )],
                });
            }
            match map.get("open") {
                Some(Json::Bool(open)) => Ok(*open),
                Some(_) => Err(invalid("must be true or false")),
                None => Err(ApiError::Validation {
                    errors: vec![value::FieldError::new(
                        "open",
                        value::FieldCode::Required,
                        "send {\"open\": true} or {\"open\": false}",
                    )],
                }),
            }
        }
        _ => Err(ApiError::bad_request(
            Code::MalformedBody,
            "the body must be an object: {\"open\": true|false}",
        )),
    }
}

/// The partition a query string names (every `partition_by` field, once;
/// an empty value is null), and the other parameters among `also`.
fn parse_partition(
    queue: &Queue,
    query: Option<&str>,
    also: &[&str],
) -> Result<(Partition, Vec<(String, String)>), ApiError> {
    let mut given: Record = Record::new();
    let mut rest = Vec::new();
    for (key, raw) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let key = key.into_owned();
        let repeated = || {
            ApiError::bad_request(
                Code::MalformedQuery,
                format!("\"{key}\" is given twice; give it once"),
            )
        };
        if also.contains(&key.as_str()) {
            if rest.iter().any(|(k, _)| *k == key) {
                return Err(repeated());
            }
            rest.push((key, raw.into_owned()));
            continue;
        }
        let Some(column) = queue.partition_columns().find(|c| c.name == key) else {
            let mut accepted: Vec<&str> = queue.partition_by.iter().map(String::as_str).collect();
            accepted.extend(also);
            return Err(ApiError::bad_request(
                Code::UnknownParameter,
                format!(
                    "\"{key}\" is not accepted here; this route takes {}",
                    if accepted.is_empty() {
                        "no parameters".to_owned()
                    } else {
                        accepted.join(", ")
                    }
                ),
            ));
        };
        if given.contains_key(&key) {
            return Err(repeated());
        }
        let value = if raw.is_empty() {
            Value::Null
        } else {
            value::from_text(column, &raw).map_err(|e| {
                ApiError::bad_request(Code::InvalidFilterValue, format!("{key}: {}", e.message))
            })?
        };
        given.insert(key, value);
    }
    let mut values = Record::new();
    for column in queue.partition_columns() {
        match given.get(&column.name) {
            Some(v) => values.insert(column.name.clone(), v.clone()),
            None => {
                return Err(ApiError::bad_request(
                    Code::MalformedQuery,
                    format!(
                        "name the line: add ?{} (an empty value is null)",
                        queue
                            .partition_by
                            .iter()
                            .map(|p| format!("{p}=…"))
                            .collect::<Vec<_>>()
                            .join("&")
                    ),
                ));
            }
        };
    }
    Ok((Partition::new(values), rest))
}

async fn run(
    state: &AppState,
    queue: &Queue,
    ask: Ask,
    scope: Option<Condition>,
    member_scope: Option<Condition>,
    ctx: &PlanContext,
    stamp: &Stamp,
) -> Result<Response, ApiError> {
    let store = state.storage.queues();
    match ask {
        Ask::WatchEntry(id, last_event_id) => {
            return watch_entry(state, queue, id, scope, last_event_id).await;
        }
        Ask::WatchLine {
            partition,
            after,
            limit,
            last_event_id,
        } => {
            let page = LinePage {
                partition,
                after,
                limit,
            };
            return watch_line(state, queue, page, scope, last_event_id).await;
        }
        _ => {}
    }
    let scope = scope.as_ref();
    // The line a transition changed: its streams here are woken, and the
    // other instances told.
    let changed = |entry: &Entry| {
        let key = crate::storage::queue::partition_key_of(&entry.row);
        state.streams.changed(&queue.name, Some(&key));
    };
    Ok(match ask {
        Ask::State => render_state(queue, store.is_open(queue).await?),
        Ask::SetOpen(open) => {
            store.set_open(queue, open, stamp).await?;
            render_state(queue, open)
        }
        Ask::Join(record, key) => {
            let member = record.get(columns::MEMBER).cloned().unwrap_or(Value::Null);
            let key = key.map(|k| {
                let canonical: std::collections::BTreeMap<&String, Json> =
                    record.iter().map(|(k, v)| (k, value::to_json(v))).collect();
                IdempotencyKey::new(ctx.subject.as_deref(), &k, &json!(canonical))
            });
            if let Some(key) = &key
                && let Some((entry, hash)) = store.entry_by_key(queue, &key.stored).await?
            {
                return replay(queue, &entry, &hash, key);
            }
            let mut row = crate::plan::complete_row(&queue.entries, &record, ctx);

            if let Some(key) = &key {
                row.insert(
                    columns::IDEMPOTENCY_KEY.to_owned(),
                    Value::Text(key.stored.clone()),
                );
                row.insert(
                    columns::REQUEST_HASH.to_owned(),
                    Value::Text(key.request_hash.clone()),
                );
            }
            let plan = JoinPlan {
                queue,
                member: member.clone(),
                member_scope,
                row,
            };
            match store.join(&plan).await? {
                Joined::Entry(entry) => {
                    changed(&entry);
                    created(queue, &entry, StatusCode::CREATED)
                }
                Joined::Closed => {
                    return Err(conflict(
                        Code::QueueClosed,
                        format!(
                            "the {} queue is closed; try again once it opens",
                            queue.name
                        ),
                    ));
                }
                Joined::Full { capacity } => {
                    return Err(conflict(
                        Code::QueueFull,
                        format!(
                            "this line of the {} queue already has {capacity} waiting; try again later",
                            queue.name
                        ),
                    ));
                }
                Joined::NoMember => {
                    return Err(ApiError::not_found(format!(
                        "no {} row with id {} that you may join with",
                        queue.member,
                        shown(&member)
                    )));
                }
                Joined::AlreadyActive { id } => {
                    // A concurrent retry with the same key won the race.
                    if let Some(key) = &key
                        && let Some((entry, hash)) = store.entry_by_key(queue, &key.stored).await?
                    {
                        return replay(queue, &entry, &hash, key);
                    }
                    let place = id
                        .and_then(|id| id.as_str().map(str::to_owned))
                        .map(|id| format!(": /queues/{}/entries/{id}", queue.name))
                        .unwrap_or_default();
                    return Err(conflict(
                        Code::AlreadyInQueue,
                        format!(
                            "{} {} already has an active entry in the {} queue{place}",
                            queue.member,
                            shown(&member),
                            queue.name
                        ),
                    ));
                }
                Joined::PartitionTooLong => {
                    return Err(ApiError::bad_request(
                        Code::MalformedBody,
                        "the member's partition values are too long to name a line",
                    ));
                }
            }
        }
        Ask::Line {
            partition,
            after,
            limit,
        } => {
            let page = LinePage {
                partition,
                after,
                limit,
            };
            (
                StatusCode::OK,
                axum::Json(line_json(store, queue, &page, scope).await?),
            )
                .into_response()
        }
        Ask::Read(id, if_none_match) => {
            let entry = store
                .entry(queue, &id, scope)
                .await?
                .ok_or_else(|| not_found(queue, &id))?;
            let etag = entry_etag(&entry);
            if if_none_match.matches_weakly(&etag) {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                set_etag(&mut response, &etag);
                response
            } else {
                render_entry(queue, &entry, StatusCode::OK)
            }
        }
        Ask::Leave(id) => {
            let outcome = store.leave(queue, &id, scope, stamp).await?;
            if let Moved::Entry(entry) = &outcome {
                changed(entry);
            }
            moved(queue, &id, outcome, "waiting", "leave")?
        }
        Ask::Stats(partition, _) if scope.is_some_and(|c| !c.holds_for(&partition.values)) => {
            // A server limited to some lines sees the figures of those only.
            return Err(ApiError::Forbidden {
                detail: format!(
                    "you may see the figures of the {} queue's lines you may serve only: the serve rule allows {}",
                    queue.name, queue.rules.serve
                ),
            });
        }
        Ask::Stats(partition, window_s) => {
            let since = stamp.now - chrono::Duration::seconds(window_s);
            let activity = store
                .activity(queue, &partition, since, MAX_STATS_CALLS)
                .await?;
            (StatusCode::OK, axum::Json(stats(&activity, window_s))).into_response()
        }
        Ask::Next(partition) => match store.next(queue, &partition, scope, stamp).await? {
            Some(entry) => {
                changed(&entry);
                render_entry(queue, &entry, StatusCode::OK)
            }
            None => StatusCode::NO_CONTENT.into_response(),
        },
        Ask::Finish(id, to) => {
            let verb = match to {
                Status::NoShow => "mark as no-show",
                _ => "finish",
            };
            let outcome = store.finish(queue, &id, scope, to, stamp).await?;
            if let Moved::Entry(entry) = &outcome {
                changed(entry);
            }
            moved(queue, &id, outcome, "serving", verb)?
        }
        Ask::WatchEntry(..) | Ask::WatchLine { .. } => {
            return Err(ApiError::internal("a stream reached the plain handler"));
        }
    })
}

/// Which page of a line: its partition, after a ticket, how many.
#[derive(Clone)]
struct LinePage {
    partition: Partition,
    after: Option<i64>,
    limit: u64,
}

/// A page of a line as `GET …/entries` answers it.
async fn line_json(
    store: &dyn QueueStore,
    queue: &Queue,
    page: &LinePage,
    scope: Option<&Condition>,
) -> Result<Json, ApiError> {
    let entries = store
        .line(queue, &page.partition, scope, page.after, page.limit)
        .await?;
    let next_after = (entries.len() as u64 == page.limit)
        .then(|| {
            entries
                .last()
                .and_then(|e| e.row.values.get(columns::TICKET))
                .cloned()
        })
        .flatten();
    let items: Vec<Json> = entries.iter().map(|e| entry_json(queue, e)).collect();
    Ok(json!({"items": items, "next_after": next_after}))
}

/// An entry as its stream sends it: the entry as read, under its ETag
/// (without quotes) as the event id; the last one once it is finished.
fn entry_snapshot(queue: &Queue, entry: &Entry) -> Snapshot {
    let status = entry
        .row
        .values
        .get(columns::STATUS)
        .and_then(Json::as_str)
        .unwrap_or_default();
    Snapshot {
        event: "entry",
        id: entry_etag(entry).trim_matches('"').to_owned(),
        data: entry_json(queue, entry).to_string(),
        last: [Status::Done, Status::NoShow, Status::Left]
            .iter()
            .any(|s| s.as_str() == status),
    }
}

/// `GET …/entries/{id}/events`: the entry now and at each change of its
/// position or status, until it is finished.
async fn watch_entry(
    state: &AppState,
    queue: &Queue,
    id: Value,
    scope: Option<Condition>,
    last_event_id: Option<String>,
) -> Result<Response, ApiError> {
    let permit = state.streams.admit()?;
    let store = state.storage.queues();
    let entry = store
        .entry(queue, &id, scope.as_ref())
        .await?
        .ok_or_else(|| not_found(queue, &id))?;
    let woken = state.streams.watch(
        &queue.name,
        &crate::storage::queue::partition_key_of(&entry.row),
    );
    // Read again now that changes wake us: none can fall in between.
    let entry = store
        .entry(queue, &id, scope.as_ref())
        .await?
        .ok_or_else(|| not_found(queue, &id))?;
    let first = entry_snapshot(queue, &entry);
    if first.last && last_event_id.as_deref() == Some(first.id.as_str()) {
        // The client has seen the end: 204 stops EventSource's reconnecting.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (state2, name) = (state.clone(), queue.name.clone());
    let read: Read = Box::new(move || {
        let (state, name, id, scope) = (state2.clone(), name.clone(), id.clone(), scope.clone());
        Box::pin(async move {
            let Some(queue) = state.model.queues.get(&name) else {
                return Ok(None);
            };
            let entry = state
                .storage
                .queues()
                .entry(queue, &id, scope.as_ref())
                .await?;
            Ok(entry.map(|e| entry_snapshot(queue, &e)))
        })
    });
    Ok(state
        .streams
        .respond(permit, woken, first, last_event_id, read))
}

/// `GET …/events?{partition}`: a line's first page now and at each change
/// of the line.
async fn watch_line(
    state: &AppState,
    queue: &Queue,
    page: LinePage,
    scope: Option<Condition>,
    last_event_id: Option<String>,
) -> Result<Response, ApiError> {
    let permit = state.streams.admit()?;
    let woken = state.streams.watch(&queue.name, &page.partition.key);
    let snapshot = |line: Json| {
        let data = line.to_string();
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        data.hash(&mut hasher);
        Snapshot {
            event: "line",
            id: format!("{:016x}", hasher.finish()),
            data,
            last: false,
        }
    };
    let first = snapshot(line_json(state.storage.queues(), queue, &page, scope.as_ref()).await?);
    let (state2, name) = (state.clone(), queue.name.clone());
    let read: Read = Box::new(move || {
        let (state, name, page, scope) =
            (state2.clone(), name.clone(), page.clone(), scope.clone());
        Box::pin(async move {
            let Some(queue) = state.model.queues.get(&name) else {
                return Ok(None);
            };
            let line = line_json(state.storage.queues(), queue, &page, scope.as_ref()).await?;
            Ok(Some(snapshot(line)))
        })
    });
    Ok(state
        .streams
        .respond(permit, woken, first, last_event_id, read))
}

/// A join answered again: the entry it created (200, as it is now), or 422
/// when the key came with another body.
fn replay(
    queue: &Queue,
    entry: &Entry,
    hash: &str,
    key: &IdempotencyKey,
) -> Result<Response, ApiError> {
    if hash != key.request_hash {
        return Err(ApiError::Unprocessable {
            code: Code::IdempotencyKeyReused,
            detail: "this Idempotency-Key was already used to join with another body; \
                     send a new key for a new join"
                .to_owned(),
        });
    }
    Ok(created(queue, entry, StatusCode::OK))
}

/// An entry with the `Location` of its own route.
fn created(queue: &Queue, entry: &Entry, status: StatusCode) -> Response {
    let mut response = render_entry(queue, entry, status);
    if let Some(id) = entry.row.values.get("id").and_then(Json::as_str)
        && let Ok(location) = HeaderValue::from_str(&format!("/queues/{}/entries/{id}", queue.name))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn conflict(code: Code, detail: String) -> ApiError {
    ApiError::Conflict {
        code,
        detail,
        field: None,
    }
}

fn not_found(queue: &Queue, id: &Value) -> ApiError {
    ApiError::not_found(format!("no {} entry with id {}", queue.name, shown(id)))
}

/// A value as a message shows it: text without JSON quotes.
fn shown(value: &Value) -> String {
    match value::to_json(value) {
        Json::String(s) => s,
        other => other.to_string(),
    }
}

/// A transition's outcome as a response.
fn moved(
    queue: &Queue,
    id: &Value,
    outcome: Moved,
    from: &str,
    verb: &str,
) -> Result<Response, ApiError> {
    match outcome {
        Moved::Entry(entry) => Ok(render_entry(queue, &entry, StatusCode::OK)),
        Moved::NotFound => Err(not_found(queue, id)),
        Moved::WrongStatus(status) => Err(conflict(
            Code::InvalidTransition,
            format!("the entry is {status}; only a {from} entry can {verb}"),
        )),
    }
}

/// A line's stats over its window: counts, waits (join to call) at the
/// median and 95th percentile (nearest rank), calls per hour, and calls per
/// server.
fn stats(activity: &crate::storage::queue::Activity, window_s: i64) -> Json {
    let time = crate::storage::queue::timestamp;
    let mut waits: Vec<f64> = activity
        .calls
        .iter()
        .filter_map(|row| {
            let wait = time(row, columns::CALLED_AT)? - time(row, "created_at")?;
            Some(wait.num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    waits.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let n = waits.len();
        (n > 0).then(|| waits[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
    };
    let status_count = |status: Status| {
        activity
            .calls
            .iter()
            .filter(|r| {
                r.values.get(columns::STATUS).and_then(Json::as_str) == Some(status.as_str())
            })
            .count()
    };
    let mut servers: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for row in &activity.calls {
        let by = row
            .values
            .get(columns::SERVED_BY)
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned();
        *servers.entry(by).or_default() += 1;
    }
    let called = activity.calls.len();
    json!({
        "window_s": window_s,
        "waiting": activity.waiting,
        "serving": activity.serving,
        "called": called,
        "done": status_count(Status::Done),
        "no_show": status_count(Status::NoShow),
        "wait_p50_s": rank(0.5),
        "wait_p95_s": rank(0.95),
        "calls_per_hour": called as f64 * 3600.0 / window_s as f64,
        "call_interval_s": activity.interval_ms.map(|ms| ms as f64 / 1000.0),
        "servers": servers,
        "truncated": activity.truncated,
    })
}

/// An entry as clients see it: its visible columns and its position.
fn entry_json(queue: &Queue, entry: &Entry) -> Json {
    let mut out = Map::new();
    for column in queue.entries.columns.iter().filter(|c| !c.hidden) {
        if let Some(v) = entry.row.values.get(&column.name) {
            out.insert(column.name.clone(), v.clone());
        }
    }
    out.insert("position".into(), json!(entry.position));
    out.insert("estimated_wait_s".into(), json!(entry.estimated_wait_s));
    Json::Object(out)
}

/// Changes exactly when what the caller sees does: the row's version
/// (status, transitions) or its position.
fn entry_etag(entry: &Entry) -> String {
    match entry.position {
        Some(p) => format!("\"{}.{p}\"", entry.row.version),
        None => format!("\"{}\"", entry.row.version),
    }
}

fn set_etag(response: &mut Response, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
}

fn render_entry(queue: &Queue, entry: &Entry, status: StatusCode) -> Response {
    let mut response = (status, axum::Json(entry_json(queue, entry))).into_response();
    set_etag(&mut response, &entry_etag(entry));
    response
}

fn render_state(queue: &Queue, open: bool) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({
            "name": queue.name,
            "member": queue.member,
            "partition_by": queue.partition_by,
            "capacity": queue.capacity,
            "open": open,
        })),
    )
        .into_response()
}
