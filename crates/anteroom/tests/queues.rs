//! Waiting-room queues end to end against the real binary on the run's
//! backend (`ANTEROOM_TEST_BACKEND`): joining, positions, leaving, serving
//! the head of a line, finishing, opening and closing, and every route's
//! failure modes — statuses, bodies, headers and the database afterwards.

mod common;

use common::Server;
use serde_json::{Value, json};

const OFFICE_HOURS: &str = r#"
[app]
name = "office-hours"

[resources.majors]
id = { type = "integer" }
fields.name = { type = "string", required = true }

[resources.students]
id = { type = "integer" }
fields.email            = { type = "string", required = true, unique = true }
fields.major_id         = { type = "ref", to = "majors", on_delete = "set_null" }
fields.is_undergraduate = { type = "boolean", default = true }

[queues.advising]
member       = "students"
partition_by = ["major_id", "is_undergraduate"]
capacity     = 3
fields.topic = { type = "string", max_length = 200 }
"#;

/// An entry's id.
fn eid(entry: &Value) -> String {
    entry["id"].as_str().expect("an entry id").to_owned()
}

async fn server() -> Server {
    Server::start(OFFICE_HOURS).await
}

/// Creates majors 1 and 2 and `n` students in major 1 (undergraduates),
/// returning the students' ids.
async fn students(server: &Server, n: usize) -> Vec<i64> {
    for name in ["History", "Physics"] {
        server
            .post("/majors", json!({"name": name}))
            .await
            .expect(201);
    }
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
        .post(
            "/queues/advising/entries",
            json!({"member_id": student, "topic": "registration"}),
        )
        .await
        .expect(201)
}

async fn position(server: &Server, entry: &Value) -> Value {
    server
        .get(&format!("/queues/advising/entries/{}", eid(entry)))
        .await
        .expect(200)["position"]
        .clone()
}

const LINE: &str = "major_id=1&is_undergraduate=true";

#[tokio::test]
async fn students_join_in_ticket_order_and_the_line_moves_up_as_people_leave_and_are_called() {
    let server = server().await;
    let ids = students(&server, 3).await;
    let reply = server
        .post(
            "/queues/advising/entries",
            json!({"member_id": ids[0], "topic": "registration"}),
        )
        .await;
    let first = reply.expect(201);
    assert_eq!(
        reply.header("location").unwrap(),
        format!("/queues/advising/entries/{}", eid(&first))
    );
    assert_eq!(first["status"], "waiting");
    assert_eq!(first["ticket"], 1);
    assert_eq!(first["position"], 1);
    assert_eq!(first["major_id"], 1);
    assert_eq!(first["is_undergraduate"], true);
    assert_eq!(first["topic"], "registration");
    assert!(first.get("partition_key").is_none(), "{first}");
    let second = join(&server, ids[1]).await;
    let third = join(&server, ids[2]).await;
    assert_eq!(
        (second["position"].clone(), third["position"].clone()),
        (json!(2), json!(3))
    );

    // The middle one leaves: the third moves up.
    let left = server
        .delete(&format!("/queues/advising/entries/{}", eid(&second)))
        .await
        .expect(200);
    assert_eq!(left["status"], "left");
    assert_eq!(left["position"], Value::Null);
    assert!(left["ended_at"].is_string(), "{left}");
    assert_eq!(position(&server, &third).await, 2);

    let line = server
        .get(&format!("/queues/advising/entries?{LINE}"))
        .await
        .expect(200);
    let tickets: Vec<Value> = line["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ticket"].clone())
        .collect();
    assert_eq!(tickets, [json!(1), json!(3)]);
    assert_eq!(line["next_after"], Value::Null);

    // An advisor calls the head of the line.
    let called = server
        .post(&format!("/queues/advising/next?{LINE}"), json!({}))
        .await
        .expect(200);
    assert_eq!(eid(&called), eid(&first));
    assert_eq!(called["status"], "serving");
    assert!(called["called_at"].is_string(), "{called}");
    assert_eq!(position(&server, &third).await, 1);

    let done = server
        .post(
            &format!("/queues/advising/entries/{}/done", eid(&first)),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(done["status"], "done");
    let called = server
        .post(&format!("/queues/advising/next?{LINE}"), json!({}))
        .await
        .expect(200);
    assert_eq!(eid(&called), eid(&third));
    server
        .post(
            &format!("/queues/advising/entries/{}/no-show", eid(&third)),
            json!({}),
        )
        .await
        .expect(200);

    // Nobody waits any more.
    let empty = server
        .send("POST", &format!("/queues/advising/next?{LINE}"), None, &[])
        .await;
    assert_eq!(
        empty.status,
        204,
        "{}",
        String::from_utf8_lossy(&empty.bytes)
    );
    let statuses = server
        .query_i64("SELECT COUNT(*) FROM advising WHERE status IN ('done', 'no_show', 'left')")
        .await;
    assert_eq!(statuses, 3);
    assert_eq!(
        server
            .query_i64("SELECT waiting FROM advising_partitions")
            .await,
        0
    );
}

#[tokio::test]
async fn each_line_has_its_own_tickets_and_positions() {
    let server = server().await;
    let ids = students(&server, 2).await;
    server
        .patch(&format!("/students/{}", ids[1]), json!({"major_id": 2}))
        .await
        .expect(200);
    let a = join(&server, ids[0]).await;
    let b = join(&server, ids[1]).await;
    assert_eq!(
        (a["ticket"].clone(), a["position"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (b["ticket"].clone(), b["position"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(b["major_id"], 2);
    let called = server
        .post(
            "/queues/advising/next?major_id=2&is_undergraduate=true",
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(eid(&called), eid(&b));
    assert_eq!(position(&server, &a).await, 1);
}

#[tokio::test]
async fn a_member_with_an_active_entry_is_refused_with_409_naming_it_and_may_join_again_once_served()
 {
    let server = server().await;
    let ids = students(&server, 1).await;
    let first = join(&server, ids[0]).await;
    let again = server
        .post("/queues/advising/entries", json!({"member_id": ids[0]}))
        .await;
    let problem = again.expect_problem(409, "already_in_queue");
    assert!(
        problem["detail"].as_str().unwrap().contains(&eid(&first)),
        "{problem}"
    );
    // Called, still active: still refused.
    server
        .post(&format!("/queues/advising/next?{LINE}"), json!({}))
        .await
        .expect(200);
    server
        .post("/queues/advising/entries", json!({"member_id": ids[0]}))
        .await
        .expect_problem(409, "already_in_queue");
    server
        .post(
            &format!("/queues/advising/entries/{}/done", eid(&first)),
            json!({}),
        )
        .await
        .expect(200);
    let second = join(&server, ids[0]).await;
    assert_eq!(second["ticket"], 2);
    assert_eq!(second["position"], 1);
    assert_eq!(server.count_in_database("advising").await, 2);
}

#[tokio::test]
async fn transitions_from_the_wrong_status_are_409_and_unknown_entries_404() {
    let server = server().await;
    let ids = students(&server, 1).await;
    let entry = join(&server, ids[0]).await;
    let path = format!("/queues/advising/entries/{}", eid(&entry));
    let problem = server
        .post(&format!("{path}/done"), json!({}))
        .await
        .expect_problem(409, "invalid_transition");
    assert!(
        problem["detail"].as_str().unwrap().contains("waiting"),
        "{problem}"
    );
    server.delete(&path).await.expect(200);
    server
        .delete(&path)
        .await
        .expect_problem(409, "invalid_transition");
    server
        .post(&format!("{path}/no-show"), json!({}))
        .await
        .expect_problem(409, "invalid_transition");
    let missing = "/queues/advising/entries/0192e4a0-0000-7000-8000-000000000000";
    server.get(missing).await.expect_problem(404, "not_found");
    server
        .delete(missing)
        .await
        .expect_problem(404, "not_found");
    server
        .get("/queues/advising/entries/not-a-uuid")
        .await
        .expect_problem(404, "not_found");
    server
        .get("/queues/nope/entries")
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn a_closed_queue_refuses_joins_and_a_full_line_refuses_the_one_over_capacity() {
    let server = server().await;
    let ids = students(&server, 4).await;
    let state = server
        .patch("/queues/advising", json!({"open": false}))
        .await
        .expect(200);
    assert_eq!(state["open"], false);
    assert_eq!(
        server.get("/queues/advising").await.expect(200)["open"],
        false
    );
    server
        .post("/queues/advising/entries", json!({"member_id": ids[0]}))
        .await
        .expect_problem(409, "queue_closed");
    // Closed whoever asks, an unknown member included.
    server
        .post("/queues/advising/entries", json!({"member_id": 999}))
        .await
        .expect_problem(409, "queue_closed");
    assert_eq!(server.count_in_database("advising").await, 0);
    server
        .patch("/queues/advising", json!({"open": true}))
        .await
        .expect(200);
    for id in &ids[..3] {
        join(&server, *id).await;
    }
    server
        .post("/queues/advising/entries", json!({"member_id": ids[3]}))
        .await
        .expect_problem(409, "queue_full");
    // A member already waiting in the full line is told where it waits.
    server
        .post("/queues/advising/entries", json!({"member_id": ids[0]}))
        .await
        .expect_problem(409, "already_in_queue");
    server
        .post("/queues/advising/entries", json!({"member_id": 999}))
        .await
        .expect_problem(404, "not_found");
    assert_eq!(server.count_in_database("advising").await, 3);
    server
        .patch("/queues/advising", json!({"open": "no"}))
        .await
        .expect_problem(422, "validation_failed");
    server
        .patch("/queues/advising", json!({"open": true, "x": 1}))
        .await
        .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn malformed_joins_and_partitions_are_4xx_that_change_nothing() {
    let server = server().await;
    students(&server, 1).await;
    server
        .post("/queues/advising/entries", json!({"topic": "x"}))
        .await
        .expect_problem(422, "validation_failed");
    server
        .post("/queues/advising/entries", json!({"member_id": 999}))
        .await
        .expect_problem(404, "not_found");
    server
        .post(
            "/queues/advising/entries",
            json!({"member_id": 1, "ticket": 1}),
        )
        .await
        .expect_problem(422, "validation_failed");
    server
        .post("/queues/advising/entries", json!([{"member_id": 1}]))
        .await
        .expect_problem(400, "malformed_body");
    server
        .post("/queues/advising/next", json!({}))
        .await
        .expect_problem(400, "malformed_query");
    server
        .post(
            "/queues/advising/next?major_id=abc&is_undergraduate=true",
            json!({}),
        )
        .await
        .expect_problem(400, "invalid_filter_value");
    server
        .post(&format!("/queues/advising/next?{LINE}&x=1"), json!({}))
        .await
        .expect_problem(400, "unknown_parameter");
    server
        .get(&format!("/queues/advising/entries?{LINE}&limit=0"))
        .await
        .expect_problem(400, "malformed_query");
    server
        .get("/queues/advising?x=1")
        .await
        .expect_problem(400, "unknown_parameter");
    assert_eq!(server.count_in_database("advising").await, 0);
    assert_eq!(server.count_in_database("advising_partitions").await, 0);
}

#[tokio::test]
async fn polling_an_entry_answers_304_until_its_position_changes() {
    let server = server().await;
    let ids = students(&server, 2).await;
    join(&server, ids[0]).await;
    let second = join(&server, ids[1]).await;
    let path = format!("/queues/advising/entries/{}", eid(&second));
    let reply = server.get(&path).await;
    reply.expect(200);
    let etag = reply.header("etag").unwrap();
    let again = server
        .send("GET", &path, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, 304);
    server
        .post(&format!("/queues/advising/next?{LINE}"), json!({}))
        .await
        .expect(200);
    let moved = server
        .send("GET", &path, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(moved.expect(200)["position"], 1);
    assert_ne!(moved.header("etag").unwrap(), etag);
}

#[tokio::test]
async fn the_openapi_document_describes_every_queue_route() {
    let server = server().await;
    let doc = server.get("/openapi.json").await.expect(200);
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/queues/advising", &["get", "patch"][..]),
        ("/queues/advising/entries", &["get", "post"][..]),
        (
            "/queues/advising/entries/{entry_id}",
            &["get", "delete"][..],
        ),
        ("/queues/advising/entries/{entry_id}/done", &["post"][..]),
        ("/queues/advising/entries/{entry_id}/no-show", &["post"][..]),
        ("/queues/advising/next", &["post"][..]),
        ("/queues/advising/stats", &["get", "head"][..]),
    ] {
        for method in methods {
            assert!(paths[path][method].is_object(), "{path} {method}");
        }
    }
    let next = &paths["/queues/advising/next"]["post"];
    let names: Vec<&str> = next["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["major_id", "is_undergraduate"]);
    let conflict = serde_json::to_string(&doc["components"]["responses"]).unwrap();
    assert!(conflict.contains("already_in_queue"), "{conflict}");
}

#[tokio::test]
async fn a_retried_join_with_the_same_idempotency_key_answers_the_same_entry_and_another_body_is_a_422()
 {
    let server = server().await;
    let ids = students(&server, 2).await;
    let join_with = |key: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .send(
                    "POST",
                    "/queues/advising/entries",
                    Some(body),
                    &[("idempotency-key", key)],
                )
                .await
        }
    };
    let body = json!({"member_id": ids[0], "topic": "credit transfer"});
    let first = join_with("k-1", body.clone()).await.expect(201);
    let retry = join_with("k-1", body.clone()).await;
    let again = retry.expect(200);
    assert_eq!(eid(&again), eid(&first));
    assert_eq!(again["ticket"], first["ticket"]);
    assert_eq!(
        retry.header("location").unwrap(),
        format!("/queues/advising/entries/{}", eid(&first))
    );
    // The same key with another body (another member) changes nothing.
    join_with("k-1", json!({"member_id": ids[1]}))
        .await
        .expect_problem(422, "idempotency_key_reused");
    assert_eq!(server.count_in_database("advising").await, 1);
    // Still the same entry once it is being served: the retry shows it now.
    server
        .post(&format!("/queues/advising/next?{LINE}"), json!({}))
        .await
        .expect(200);
    let later = join_with("k-1", body).await.expect(200);
    assert_eq!(later["status"], "serving");
    for bad in ["", "has space", &"k".repeat(201)] {
        server
            .send(
                "POST",
                "/queues/advising/entries",
                Some(json!({"member_id": ids[1]})),
                &[("idempotency-key", bad)],
            )
            .await
            .expect_problem(400, "malformed_header");
    }
    assert_eq!(server.count_in_database("advising").await, 1);
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

fn token(sub: &str, role: &str) -> String {
    common::queue_rules_token(sub, role)
}

struct As<'s> {
    server: &'s Server,
    auth: String,
}

impl As<'_> {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> common::Reply {
        self.server
            .send(method, path, body, &[("authorization", &self.auth)])
            .await
    }
}

fn caller<'s>(server: &'s Server, sub: &str, role: &str) -> As<'s> {
    As {
        server,
        auth: format!("Bearer {}", token(sub, role)),
    }
}

#[tokio::test]
async fn members_join_only_with_rows_they_own_and_see_and_leave_only_their_own_entries() {
    let server = Server::start_with_env(
        &common::queue_rules_schema(),
        &[],
        &[("JWT_SECRET", common::QUEUE_RULES_SECRET)],
    )
    .await;
    let alice = caller(&server, "alice", "student");
    let bob = caller(&server, "bob", "student");
    let advisor = caller(&server, "ada", "advisor");
    let admin = caller(&server, "root", "admin");
    let mine = alice
        .send(
            "POST",
            "/students",
            Some(json!({"email": "a@uni.test", "major_id": 1})),
        )
        .await
        .expect(201);
    let bobs = bob
        .send(
            "POST",
            "/students",
            Some(json!({"email": "b@uni.test", "major_id": 1})),
        )
        .await
        .expect(201);

    // Anonymous callers are asked to authenticate; bob cannot join as alice.
    server
        .post("/queues/advising/entries", json!({"member_id": mine["id"]}))
        .await
        .expect_problem(401, "unauthorized");
    bob.send(
        "POST",
        "/queues/advising/entries",
        Some(json!({"member_id": mine["id"]})),
    )
    .await
    .expect_problem(404, "not_found");
    let entry = alice
        .send(
            "POST",
            "/queues/advising/entries",
            Some(json!({"member_id": mine["id"]})),
        )
        .await
        .expect(201);
    let bob_entry = bob
        .send(
            "POST",
            "/queues/advising/entries",
            Some(json!({"member_id": bobs["id"]})),
        )
        .await
        .expect(201);
    assert_eq!(bob_entry["position"], 2);
    let path = format!("/queues/advising/entries/{}", eid(&entry));

    // Bob can neither read nor remove alice's entry: it answers as missing.
    bob.send("GET", &path, None)
        .await
        .expect_problem(404, "not_found");
    bob.send("DELETE", &path, None)
        .await
        .expect_problem(404, "not_found");
    let line = bob
        .send("GET", "/queues/advising/entries?major_id=1", None)
        .await
        .expect(200);
    let ids: Vec<String> = line["items"].as_array().unwrap().iter().map(eid).collect();
    assert_eq!(ids, [eid(&bob_entry)]);
    assert_eq!(line["items"][0]["position"], 2);
    alice.send("GET", &path, None).await.expect(200);

    // Students may not serve or manage; advisors serve and see the whole line.
    bob.send("POST", "/queues/advising/next?major_id=1", None)
        .await
        .expect_problem(403, "forbidden");
    advisor
        .send("PATCH", "/queues/advising", Some(json!({"open": false})))
        .await
        .expect_problem(403, "forbidden");
    let whole = advisor
        .send("GET", "/queues/advising/entries?major_id=1", None)
        .await
        .expect(200);
    assert_eq!(whole["items"].as_array().unwrap().len(), 2);
    let called = advisor
        .send("POST", "/queues/advising/next?major_id=1", None)
        .await
        .expect(200);
    assert_eq!(eid(&called), eid(&entry));
    assert_eq!(called["served_by"], "ada");
    assert_eq!(called["updated_by"], "ada");
    assert_eq!(called["created_by"], "alice");

    // An admin may remove anyone (manage implies leave).
    let removed = admin
        .send(
            "DELETE",
            &format!("/queues/advising/entries/{}", eid(&bob_entry)),
            None,
        )
        .await
        .expect(200);
    assert_eq!(removed["status"], "left");
    assert_eq!(removed["updated_by"], "root");
    admin
        .send("PATCH", "/queues/advising", Some(json!({"open": false})))
        .await
        .expect(200);
}

#[tokio::test]
async fn the_same_idempotency_key_from_two_callers_names_two_joins() {
    let server = Server::start_with_env(
        &common::queue_rules_schema(),
        &[],
        &[("JWT_SECRET", common::QUEUE_RULES_SECRET)],
    )
    .await;
    let alice = caller(&server, "alice", "student");
    let bob = caller(&server, "bob", "student");
    let mut entries = Vec::new();
    for (who, email) in [(&alice, "a@uni.test"), (&bob, "b@uni.test")] {
        let member = who
            .send(
                "POST",
                "/students",
                Some(json!({"email": email, "major_id": 1})),
            )
            .await
            .expect(201);
        let reply = server
            .send(
                "POST",
                "/queues/advising/entries",
                Some(json!({"member_id": member["id"]})),
                &[
                    ("authorization", &who.auth),
                    ("idempotency-key", "same-key"),
                ],
            )
            .await;
        entries.push(reply.expect(201));
    }
    assert_ne!(eid(&entries[0]), eid(&entries[1]));
}

#[tokio::test]
async fn stats_and_estimated_waits_come_from_the_lines_calls() {
    let server = server().await;
    let ids = students(&server, 3).await;
    for id in &ids {
        join(&server, *id).await;
    }
    let next_path = format!("/queues/advising/next?{LINE}");
    let next = || server.post(&next_path, json!({}));
    let first = next().await.expect(200);
    let waiting = server
        .get(&format!("/queues/advising/entries?{LINE}"))
        .await
        .expect(200);
    // One call: no interval between calls yet, so no estimate.
    assert_eq!(waiting["items"][0]["estimated_wait_s"], Value::Null);
    server
        .post(
            &format!("/queues/advising/entries/{}/done", eid(&first)),
            json!({}),
        )
        .await
        .expect(200);
    next().await.expect(200);
    let last = server
        .get(&format!("/queues/advising/entries?{LINE}"))
        .await
        .expect(200);
    assert_eq!(last["items"][0]["position"], 1);
    assert!(last["items"][0]["estimated_wait_s"].is_u64(), "{last}");

    let stats = server
        .get(&format!("/queues/advising/stats?{LINE}"))
        .await
        .expect(200);
    assert_eq!(stats["waiting"], 1, "{stats}");
    assert_eq!(stats["serving"], 1, "{stats}");
    assert_eq!(stats["called"], 2, "{stats}");
    assert_eq!(stats["done"], 1, "{stats}");
    assert_eq!(stats["no_show"], 0, "{stats}");
    assert!(stats["wait_p50_s"].as_f64().unwrap() >= 0.0, "{stats}");
    assert!(stats["wait_p95_s"].as_f64().unwrap() >= stats["wait_p50_s"].as_f64().unwrap());
    assert!(stats["call_interval_s"].is_number(), "{stats}");
    assert_eq!(stats["calls_per_hour"], 2.0);
    assert_eq!(stats["servers"][""], 2, "{stats}");
    // Another line has no activity; a window out of range is a 400.
    let other = server
        .get("/queues/advising/stats?major_id=2&is_undergraduate=true")
        .await
        .expect(200);
    assert_eq!(other["called"], 0);
    assert_eq!(other["wait_p50_s"], Value::Null);
    server
        .get(&format!("/queues/advising/stats?{LINE}&window_s=5"))
        .await
        .expect_problem(400, "malformed_query");
}

#[tokio::test]
async fn a_student_who_changes_major_leaves_the_line_and_other_edits_keep_the_place() {
    let server = server().await;
    let ids = students(&server, 2).await;
    let first = join(&server, ids[0]).await;
    let second = join(&server, ids[1]).await;
    // An edit outside the partition fields keeps the place.
    server
        .patch(
            &format!("/students/{}", ids[0]),
            json!({"email": "new@uni.test"}),
        )
        .await
        .expect(200);
    assert_eq!(position(&server, &second).await, 2);
    server
        .patch(&format!("/students/{}", ids[0]), json!({"major_id": 2}))
        .await
        .expect(200);
    let gone = server
        .get(&format!("/queues/advising/entries/{}", eid(&first)))
        .await
        .expect(200);
    assert_eq!(gone["status"], "left");
    assert_eq!(gone["major_id"], 1, "the entry keeps the line it was in");
    assert_eq!(position(&server, &second).await, 1);
    assert_eq!(
        server
            .query_i64("SELECT waiting FROM advising_partitions WHERE partition_key = '[1,true]'")
            .await,
        1
    );
    // The student may join the new major's line.
    let again = join(&server, ids[0]).await;
    assert_eq!(again["major_id"], 2);
    assert_eq!(again["position"], 1);
}

const TIMED: &str = r#"
[app]
name = "office-hours"

[resources.students]
id = { type = "integer" }
fields.email    = { type = "string", required = true }
fields.major_id = { type = "integer" }

[queues.advising]
member           = "students"
partition_by     = ["major_id"]
serve_timeout    = "1s"
on_member_change = "stay"
fields.topic     = { type = "string" }
"#;

#[tokio::test]
async fn a_called_entry_not_finished_within_the_serve_timeout_becomes_a_no_show() {
    let server = Server::start(TIMED).await;
    let mut entries = Vec::new();
    for i in 0..3 {
        let s = server
            .post(
                "/students",
                json!({"email": format!("s{i}@uni.test"), "major_id": 1}),
            )
            .await
            .expect(201);
        entries.push(join(&server, s["id"].as_i64().unwrap()).await);
    }
    let next = || server.post("/queues/advising/next?major_id=1", json!({}));
    next().await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // The next call first retires the timed-out one.
    next().await.expect(200);
    let first = server
        .get(&format!("/queues/advising/entries/{}", eid(&entries[0])))
        .await
        .expect(200);
    assert_eq!(first["status"], "no_show");
    server
        .post(
            &format!("/queues/advising/entries/{}/done", eid(&entries[0])),
            json!({}),
        )
        .await
        .expect_problem(409, "invalid_transition");
    // With nobody calling next, the instance's sweep retires the second.
    let mut status = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = server
            .get(&format!("/queues/advising/entries/{}", eid(&entries[1])))
            .await
            .expect(200)["status"]
            .clone();
        if status == "no_show" {
            break;
        }
    }
    assert_eq!(status, "no_show");
    // on_member_change = "stay": a change of major keeps the third in line.
    let third = &entries[2];
    server
        .patch(
            &format!("/students/{}", third["member_id"]),
            json!({"major_id": 2}),
        )
        .await
        .expect(200);
    assert_eq!(position(&server, third).await, 1);
}

#[tokio::test]
async fn when_the_head_leaves_the_line_settles_past_it_and_positions_stay_exact() {
    let server = server().await;
    let ids = students(&server, 4).await;
    let entries: Vec<Value> = {
        let mut out = Vec::new();
        for id in &ids[..3] {
            out.push(join(&server, *id).await);
        }
        out
    };
    // The second leaves (not the head): nothing to settle.
    server
        .delete(&format!("/queues/advising/entries/{}", eid(&entries[1])))
        .await
        .expect(200);
    let settled = || server.query_i64("SELECT MAX(called_upto) FROM advising_partitions");
    assert_eq!(settled().await, 0);
    // The head leaves: the line settles just before the new head (ticket 3),
    // past the leaver behind it.
    server
        .delete(&format!("/queues/advising/entries/{}", eid(&entries[0])))
        .await
        .expect(200);
    assert_eq!(settled().await, 2);
    assert_eq!(position(&server, &entries[2]).await, 1);
    let late = join(&server, ids[3]).await;
    assert_eq!(late["position"], 2);
    // The new head leaves too: settled just before the late joiner.
    server
        .delete(&format!("/queues/advising/entries/{}", eid(&entries[2])))
        .await
        .expect(200);
    assert_eq!(settled().await, 3);
    assert_eq!(position(&server, &late).await, 1);
    let called = server
        .send("POST", &format!("/queues/advising/next?{LINE}"), None, &[])
        .await
        .expect(200);
    assert_eq!(eid(&called), eid(&late));
    assert_eq!(settled().await, 4);
}
