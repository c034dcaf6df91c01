//! SQLite's statement deadline, which the engine enforces itself (SQLite has
//! no statement timeout): a statement is interrupted at `--statement-timeout`,
//! and as soon as its client goes away, so an abandoned expensive query never
//! holds a reader connection. These run on SQLite whatever
//! `ANTEROOM_TEST_BACKEND` says: PostgreSQL and MySQL enforce the timeout in
//! the server (covered for every backend in `hostile_queries.rs`).

mod common;

use std::time::{Duration, Instant};

use common::Server;

const SCHEMA: &str = r#"[app]
name = "deadlines"

[resources.things]
id = { type = "integer" }
fields.t = { type = "text" }
"#;

async fn sqlite_server(args: &[&str]) -> Server {
    Server::start_sqlite(SCHEMA, args).await
}

/// 10,000 rows of 4,000 characters: `LIKE '%a%a…a{150}b'` costs ~1.6 ms a row.
async fn seed(server: &Server) {
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
    server
        .execute(&format!(
            "INSERT INTO things (t, created_at, updated_at) \
             SELECT printf('%.*c', 4000, 'a'), '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z' \
             FROM {digits} a, {digits} b, {digits} c, {digits} d"
        ))
        .await;
}

fn slow_query() -> String {
    let pattern = format!("{}%{}b", "%a".repeat(14), "a".repeat(150));
    let encoded: String = url::form_urlencoded::byte_serialize(pattern.as_bytes()).collect();
    format!("/things?t[like]={encoded}")
}

#[tokio::test]
async fn a_long_statement_is_interrupted_at_the_deadline_and_answered_503() {
    let server = sqlite_server(&["--statement-timeout", "500ms"]).await;
    seed(&server).await;
    let started = Instant::now();
    let reply = server.get(&slow_query()).await;
    reply.expect_problem(503, "database_unavailable");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "cut after {elapsed:?}");
    server.get("/health").await.expect(200);
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_reader_at_once() {
    // One reader connection: if the abandoned statement kept it, every other
    // read would wait for it (the unbounded query runs ~16 s here).
    let server = sqlite_server(&["--max-connections", "1"]).await;
    seed(&server).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .get(format!("{}{}", server.base, slow_query()))
        .send()
        .await;
    assert!(gone.is_err(), "the slow query answered within 300 ms");
    let started = Instant::now();
    server.get("/health").await.expect(200);
    server.get("/things?limit=1").await.expect(200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the reader stayed busy for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reads_after_a_finished_list_are_never_interrupted_by_its_deadline() {
    // One connection per pool: every read meets the connection the lists used.
    let server = sqlite_server(&["--max-connections", "1"]).await;
    let row = server
        .post("/things", serde_json::json!({"t": "x"}))
        .await
        .expect(201);
    let path = format!("/things/{}", row["id"]);
    // SQLite counts a cached statement's steps across executions, so after a
    // few hundred reads one of them reaches a progress check.
    for round in 0..60 {
        server.get("/things?t[like]=x%25&limit=5").await.expect(200);
        for _ in 0..10 {
            let reply = server.get(&path).await;
            assert_eq!(reply.status, 200, "round {round}: {:?}", reply.json());
        }
    }
}
