//! Server-Sent Events of queue entries and lines, end to end against the
//! real binary on the run's backend (`ANTEROOM_TEST_BACKEND`): what a
//! stream sends and when, `Last-Event-ID` resumption, the end of an entry's
//! stream, heartbeats past the idle timeout, the open-stream bound, rules,
//! and changes made through another instance reaching a stream.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Server, Started, TestDatabase, schema_dir};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
[app]
name = "office-hours"

[resources.students]
id = { type = "integer" }
fields.email    = { type = "string", required = true, unique = true }
fields.major_id = { type = "integer" }

[queues.advising]
member       = "students"
partition_by = ["major_id"]
"#;

const LINE: &str = "major_id=1";

/// How long a test waits for an event that must come.
const PATIENCE: Duration = Duration::from_secs(10);

/// One event as the stream sent it.
#[derive(Debug)]
struct Event {
    event: String,
    id: String,
    data: Value,
}

/// An open event stream, read as the bytes arrive.
struct Stream {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines seen so far (heartbeats).
    comments: Vec<String>,
}

impl Stream {
    /// Opens `path`; panics unless the answer is a 200 event stream.
    async fn open(server: &Server, path: &str, headers: &[(&str, &str)]) -> Stream {
        let response = request(server, path, headers).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{path}"
        );
        assert_eq!(response.headers()["cache-control"], "no-cache");
        Stream {
            response,
            buffer: String::new(),
            comments: Vec::new(),
        }
    }

    /// The next event within `within`; `None` when the stream ended.
    async fn next_within(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    event: "message".into(),
                    id: String::new(),
                    data: Value::Null,
                };
                let mut saw_field = false;
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        self.comments.push(comment.to_owned());
                    } else if let Some((field, value)) = line.split_once(": ") {
                        saw_field = true;
                        match field {
                            "event" => event.event = value.to_owned(),
                            "id" => event.id = value.to_owned(),
                            "data" => event.data = serde_json::from_str(value).expect("JSON data"),
                            _ => {}
                        }
                    } else if line.starts_with("retry:") {
                        saw_field = true;
                    }
                }
                if saw_field && event.data != Value::Null {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}; so far: {:?}", self.buffer))
                .expect("stream read");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    async fn next(&mut self) -> Event {
        self.next_within(PATIENCE)
            .await
            .expect("the stream ended early")
    }

    /// Asserts nothing but heartbeats arrives for `quiet`.
    async fn nothing_for(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => break,
                Ok(Ok(Some(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(other) => panic!("the stream ended: {other:?}"),
            }
        }
        assert!(
            !self.buffer.contains("data:"),
            "an event came with nothing changed: {:?}",
            self.buffer
        );
    }
}

async fn request(server: &Server, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = server.client.get(format!("{}{}", server.base, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

async fn students(server: &Server, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let s = server
            .post(
                "/students",
                json!({"email": format!("s{i}@uni.test"), "major_id": 1}),
            )
            .await
            .expect(201);
        ids.push(s["id"].as_i64().unwrap());
    }
    ids
}

async fn join(server: &Server, student: i64) -> Value {
    server
        .post("/queues/advising/entries", json!({"member_id": student}))
        .await
        .expect(201)
}

fn events_of(entry: &Value) -> String {
    format!(
        "/queues/advising/entries/{}/events",
        entry["id"].as_str().unwrap()
    )
}

#[tokio::test]
async fn an_entry_stream_sends_each_change_of_position_and_status_and_ends_after_the_last() {
    let server = Server::start(SCHEMA).await;
    let ids = students(&server, 3).await;
    let first = join(&server, ids[0]).await;
    let second = join(&server, ids[1]).await;
    let third = join(&server, ids[2]).await;

    let mut stream = Stream::open(&server, &events_of(&third), &[]).await;
    let now = stream.next().await;
    assert_eq!(now.event, "entry");
    assert_eq!(now.data["position"], 3);
    assert_eq!(now.data["status"], "waiting");
    // The id is the entry's ETag without quotes.
    let etag = server
        .get(&format!(
            "/queues/advising/entries/{}",
            third["id"].as_str().unwrap()
        ))
        .await
        .header("etag")
        .unwrap();
    assert_eq!(format!("\"{}\"", now.id), etag);

    // Someone ahead leaves; then the head is called.
    server
        .delete(&format!(
            "/queues/advising/entries/{}",
            second["id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(stream.next().await.data["position"], 2);
    server
        .send("POST", &format!("/queues/advising/next?{LINE}"), None, &[])
        .await
        .expect(200);
    assert_eq!(stream.next().await.data["position"], 1);
    // A change elsewhere in the line that does not move this entry (the
    // called one finishing) sends nothing.
    server
        .send(
            "POST",
            &format!(
                "/queues/advising/entries/{}/done",
                first["id"].as_str().unwrap()
            ),
            None,
            &[],
        )
        .await
        .expect(200);
    stream.nothing_for(Duration::from_millis(800)).await;

    // Called, then finished: the last event, and the stream ends.
    server
        .send("POST", &format!("/queues/advising/next?{LINE}"), None, &[])
        .await
        .expect(200);
    let called = stream.next().await;
    assert_eq!(called.data["status"], "serving");
    assert_eq!(called.data["position"], Value::Null);
    server
        .send(
            "POST",
            &format!(
                "/queues/advising/entries/{}/done",
                third["id"].as_str().unwrap()
            ),
            None,
            &[],
        )
        .await
        .expect(200);
    let done = stream.next().await;
    assert_eq!(done.data["status"], "done");
    assert!(stream.next_within(PATIENCE).await.is_none(), "still open");

    // Reconnecting with the last id: 204, which stops EventSource.
    let again = request(&server, &events_of(&third), &[("last-event-id", &done.id)]).await;
    assert_eq!(again.status(), 204);
    // Without it, the final state once more, then the end.
    let mut fresh = Stream::open(&server, &events_of(&third), &[]).await;
    assert_eq!(fresh.next().await.data["status"], "done");
    assert!(fresh.next_within(PATIENCE).await.is_none());
}

#[tokio::test]
async fn a_stream_resumed_with_the_current_id_sends_only_what_changes_after_it() {
    let server = Server::start(SCHEMA).await;
    let ids = students(&server, 2).await;
    let head = join(&server, ids[0]).await;
    let mine = join(&server, ids[1]).await;
    let mut stream = Stream::open(&server, &events_of(&mine), &[]).await;
    let seen = stream.next().await;
    drop(stream);

    let mut resumed =
        Stream::open(&server, &events_of(&mine), &[("last-event-id", &seen.id)]).await;
    resumed.nothing_for(Duration::from_millis(600)).await;
    server
        .delete(&format!(
            "/queues/advising/entries/{}",
            head["id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    let moved = resumed.next().await;
    assert_eq!(moved.data["position"], 1);
    assert_ne!(moved.id, seen.id);

    // An id from elsewhere (stale): the current state at once.
    let mut stale = Stream::open(&server, &events_of(&mine), &[("last-event-id", &seen.id)]).await;
    assert_eq!(stale.next().await.data["position"], 1);
}

#[tokio::test]
async fn a_line_stream_sends_the_line_as_listed_whenever_it_changes() {
    let server = Server::start(SCHEMA).await;
    let ids = students(&server, 3).await;
    join(&server, ids[0]).await;
    let mut stream = Stream::open(&server, &format!("/queues/advising/events?{LINE}"), &[]).await;
    let now = stream.next().await;
    assert_eq!(now.event, "line");
    let listed = server
        .get(&format!("/queues/advising/entries?{LINE}"))
        .await
        .expect(200);
    assert_eq!(now.data, listed);
    assert_eq!(now.data["items"].as_array().unwrap().len(), 1);

    join(&server, ids[1]).await;
    let grown = stream.next().await;
    assert_eq!(grown.data["items"].as_array().unwrap().len(), 2);
    assert_ne!(grown.id, now.id);
    server
        .send("POST", &format!("/queues/advising/next?{LINE}"), None, &[])
        .await
        .expect(200);
    let called = stream.next().await;
    assert_eq!(called.data["items"][0]["member_id"], ids[1]);
    assert_eq!(called.data["items"][0]["position"], 1);

    // Another line's change sends nothing here.
    server
        .post(
            "/students",
            json!({"email": "other@uni.test", "major_id": 2}),
        )
        .await
        .expect(201);
    let other = server.all("students").await.last().unwrap()["id"].clone();
    server
        .post("/queues/advising/entries", json!({"member_id": other}))
        .await
        .expect(201);
    stream.nothing_for(Duration::from_millis(800)).await;
}

#[tokio::test]
async fn stream_requests_fail_like_their_plain_routes_and_head_answers_without_a_stream() {
    let server = Server::start(SCHEMA).await;
    let missing = "/queues/advising/entries/0190a0a0-0000-7000-8000-000000000000/events";
    server.get(missing).await.expect_problem(404, "not_found");
    server
        .get("/queues/advising/entries/not-a-uuid/events")
        .await
        .expect_problem(404, "not_found");
    server
        .get("/queues/advising/events")
        .await
        .expect_problem(400, "malformed_query");
    server
        .get("/queues/advising/events?major_id=x")
        .await
        .expect_problem(400, "invalid_filter_value");
    server
        .get("/queues/advising/events?major_id=1&limit=0")
        .await
        .expect_problem(400, "malformed_query");
    server
        .get("/queues/advising/events?major_id=1&colour=red")
        .await
        .expect_problem(400, "unknown_parameter");
    server
        .send("POST", "/queues/advising/events?major_id=1", None, &[])
        .await
        .expect_problem(405, "method_not_allowed");
    let head = server
        .send(
            "HEAD",
            &format!("/queues/advising/events?{LINE}"),
            None,
            &[],
        )
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type").unwrap(), "text/event-stream");
    assert!(head.bytes.is_empty());
}

#[tokio::test]
async fn past_the_open_stream_bound_a_new_stream_gets_503_busy_until_one_closes() {
    let server = Server::start_with_args(SCHEMA, &["--max-streams", "1"]).await;
    let ids = students(&server, 1).await;
    let entry = join(&server, ids[0]).await;
    let mut first = Stream::open(&server, &events_of(&entry), &[]).await;
    first.next().await;
    let refused = server.get(&format!("/queues/advising/events?{LINE}")).await;
    refused.expect_problem(503, "busy");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    // Plain requests still pass.
    server
        .get(&format!("/queues/advising/entries?{LINE}"))
        .await
        .expect(200);
    drop(first);
    // The closed stream's place comes back once the server sees the close.
    let mut admitted = None;
    for _ in 0..50 {
        let response = request(&server, &format!("/queues/advising/events?{LINE}"), &[]).await;
        if response.status() == 200 {
            admitted = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted.is_some(), "the place never came back");
}

#[tokio::test]
async fn heartbeats_keep_a_quiet_stream_open_past_the_idle_timeout() {
    let server = Server::start_with_args(SCHEMA, &["--idle-timeout", "2s"]).await;
    let ids = students(&server, 1).await;
    let entry = join(&server, ids[0]).await;
    let mut stream = Stream::open(&server, &events_of(&entry), &[]).await;
    stream.next().await;
    stream.nothing_for(Duration::from_millis(4500)).await;
    // One comment a second (half the idle timeout) over 4.5 s.
    let beats = stream.buffer.matches(": heartbeat\n").count();
    assert!(
        (3..=6).contains(&beats),
        "{beats} heartbeats: {:?}",
        stream.buffer
    );
    // Still open and still live.
    server
        .delete(&format!(
            "/queues/advising/entries/{}",
            entry["id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    stream.buffer.clear();
    assert_eq!(stream.next().await.data["status"], "left");
}

#[tokio::test]
async fn a_change_made_through_another_instance_reaches_the_stream() {
    let (dir, _) = schema_dir(SCHEMA);
    let dir = Arc::new(dir);
    let db = Arc::new(TestDatabase::create(dir.path()).await);
    let mut servers = Vec::new();
    for _ in 0..2 {
        match Server::spawn_with(dir.clone(), db.url.clone(), &[], Some(db.clone())).await {
            Started::Up(s) => servers.push(s),
            Started::Exited(code, log) => panic!("instance exited with {code}:\n{log}"),
        }
    }
    let (a, b) = (&servers[0], &servers[1]);
    let ids = students(a, 2).await;
    let head = join(a, ids[0]).await;
    let mine = join(a, ids[1]).await;
    let mut on_a = Stream::open(a, &events_of(&mine), &[]).await;
    assert_eq!(on_a.next().await.data["position"], 2);
    let mut line_on_a = Stream::open(a, &format!("/queues/advising/events?{LINE}"), &[]).await;
    line_on_a.next().await;

    // Through the other instance.
    b.send("POST", &format!("/queues/advising/next?{LINE}"), None, &[])
        .await
        .expect(200);
    let started = std::time::Instant::now();
    assert_eq!(on_a.next().await.data["position"], 1);
    let reached = started.elapsed();
    assert_eq!(
        line_on_a.next().await.data["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    b.send(
        "POST",
        &format!(
            "/queues/advising/entries/{}/done",
            head["id"].as_str().unwrap()
        ),
        None,
        &[],
    )
    .await
    .expect(200);
    b.delete(&format!(
        "/queues/advising/entries/{}",
        mine["id"].as_str().unwrap()
    ))
    .await
    .expect(200);
    assert_eq!(on_a.next().await.data["status"], "left");
    eprintln!("a change through another instance reached the stream in {reached:?}");
}

fn bearer(sub: &str, role: &str) -> String {
    format!("Bearer {}", common::queue_rules_token(sub, role))
}

#[tokio::test]
async fn streams_follow_the_view_rule_owners_see_their_own_entry_and_staff_the_line() {
    let server = Server::start_with_env(
        &common::queue_rules_schema(),
        &[],
        &[("JWT_SECRET", common::QUEUE_RULES_SECRET)],
    )
    .await;
    let (alice, bob, ada) = (
        bearer("alice", "student"),
        bearer("bob", "student"),
        bearer("ada", "advisor"),
    );
    let as_ = |auth: &str| [("authorization", auth.to_owned())];
    let send = |method: &'static str, path: String, body: Option<Value>, auth: String| {
        let server = &server;
        async move {
            server
                .send(method, &path, body, &[("authorization", &auth)])
                .await
        }
    };
    let student = send(
        "POST",
        "/students".into(),
        Some(json!({"email": "a@uni.test", "major_id": 1})),
        alice.clone(),
    )
    .await
    .expect(201);
    let entry = send(
        "POST",
        "/queues/advising/entries".into(),
        Some(json!({"member_id": student["id"]})),
        alice.clone(),
    )
    .await
    .expect(201);
    let path = events_of(&entry);

    server.get(&path).await.expect_problem(401, "unauthorized");
    // Bob cannot see that the entry exists.
    send("GET", path.clone(), None, bob.clone())
        .await
        .expect_problem(404, "not_found");
    let [(k, v)] = as_(&alice);
    let mut own = Stream::open(&server, &path, &[(k, &v)]).await;
    assert_eq!(own.next().await.data["position"], 1);
    // The advisor may view (serving implies viewing) every entry and the line.
    let [(k, v)] = as_(&ada);
    let mut line = Stream::open(
        &server,
        &format!("/queues/advising/events?{LINE}"),
        &[(k, &v)],
    )
    .await;
    assert_eq!(line.next().await.data["items"].as_array().unwrap().len(), 1);
    // Bob's line stream shows only his (no) entries.
    let [(k, v)] = as_(&bob);
    let mut bobs = Stream::open(
        &server,
        &format!("/queues/advising/events?{LINE}"),
        &[(k, &v)],
    )
    .await;
    assert_eq!(bobs.next().await.data["items"], json!([]));
}

#[tokio::test]
async fn on_sigterm_open_streams_end_at_once_and_the_server_exits_without_waiting_for_them() {
    let mut server = Server::start_with_args(SCHEMA, &["--shutdown-timeout", "30s"]).await;
    let ids = students(&server, 1).await;
    let entry = join(&server, ids[0]).await;
    let mut stream = Stream::open(&server, &events_of(&entry), &[]).await;
    stream.next().await;
    let started = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        stream.next_within(PATIENCE).await.is_none(),
        "the stream outlived the shutdown"
    );
    let code = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    // Well inside the 30 s a stream would otherwise have held it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
