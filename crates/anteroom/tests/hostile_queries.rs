//! Hostile query strings and oversized pages, on every backend: patterns,
//! lists and bytes that used to reach a database limit (500s), burn minutes
//! of CPU, or hold hundreds of megabytes are refused at parse time (400),
//! cut at the statement deadline (503), or paged by bytes.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Backend, Server, id_of};
use serde_json::{Value, json};

const SCHEMA: &str = r#"[app]
name = "hostile"

[resources.things]
id = { type = "integer" }
fields.s = { type = "string" }
fields.t = { type = "text" }
fields.n = { type = "integer" }

[resources.parents]
id = { type = "integer" }
fields.blob = { type = "text" }

[resources.children]
id = { type = "integer" }
fields.parent_id = { type = "ref", to = "parents" }
"#;

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn pathological_like_patterns_are_a_400_before_any_database_sees_them() {
    let server = Server::start(SCHEMA).await;
    server
        .post(
            "/things",
            json!({"s": "a".repeat(200), "t": "ab".repeat(500)}),
        )
        .await
        .expect(201);
    let bomb = format!("%{}c%", "a_".repeat(950));
    let cases = [
        ("s[ilike]", bomb.clone()),
        ("t[ilike]", bomb.clone()),
        ("t[like]", bomb),
        ("s[ilike]", "_".repeat(20_000)),
        ("t[like]", "x".repeat(50_001)),
        ("s[like]", format!("{}x", "%".repeat(17))),
    ];
    for (key, pattern) in cases {
        let started = Instant::now();
        let reply = server
            .get(&format!("/things?{key}={}", encode(&pattern)))
            .await;
        let problem = reply.expect_problem(400, "invalid_filter_value");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{key} took {:?}",
            started.elapsed()
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("at most"),
            "the detail says the bound: {problem}"
        );
    }
    assert!(
        !server.log_text().contains("ERROR"),
        "refused patterns are not errors of the server:\n{}",
        server.log_text()
    );
    // A pattern within the bounds still works.
    let page = server
        .get(&format!("/things?s[ilike]={}", encode("A%a_a")))
        .await
        .expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn more_in_values_than_any_backend_should_bind_are_a_400_not_a_database_limit() {
    let server = Server::start(SCHEMA).await;
    let list = vec!["7"; 1000].join(",");
    // 33 lists of 1,000 passed SQLite's 32,766-variable limit (a 500); the
    // bound is 1,000 values in all, whatever the URL length.
    let query: Vec<String> = (0..33)
        .map(|_| format!("n[in]={}", vec!["7"; 40].join(",")))
        .collect();
    let reply = server.get(&format!("/things?{}", query.join("&"))).await;
    let problem = reply.expect_problem(400, "invalid_filter_value");
    assert!(
        problem["detail"].as_str().unwrap().contains("1000"),
        "{problem}"
    );
    let reply = server.get(&format!("/things?n[in]={list},7")).await;
    reply.expect_problem(400, "invalid_filter_value");
    let many: Vec<String> = (0..51).map(|i| format!("n[ne]={i}")).collect();
    let reply = server.get(&format!("/things?{}", many.join("&"))).await;
    reply.expect_problem(400, "malformed_query");
    // The largest list accepted still answers.
    server
        .get(&format!("/things?n[in]={list}"))
        .await
        .expect(200);
}

#[tokio::test]
async fn a_nul_in_any_filter_value_or_cursor_is_a_400_never_a_500() {
    let server = Server::start(SCHEMA).await;
    server
        .post("/things", json!({"s": "x", "n": 1}))
        .await
        .expect(201);
    for query in [
        "s=a%00",
        "s[ne]=%00",
        "s[in]=a,%00",
        "s[gt]=%00",
        "s[like]=%25%00%25",
        "s[ilike]=%00",
    ] {
        server
            .get(&format!("/things?{query}"))
            .await
            .expect_problem(400, "invalid_filter_value");
    }
    let token = json!({"s": "s,id", "v": ["a\u{0}", 1]}).to_string();
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
    server
        .get(&format!("/things?sort=s&cursor={cursor}"))
        .await
        .expect_problem(400, "invalid_cursor");
    assert!(
        !server.log_text().contains("ERROR"),
        "{}",
        server.log_text()
    );
}

/// Bytes of text per big row: each POST stays under the 1 MiB body limit.
const BIG: usize = 900 * 1024;

async fn all_pages(server: &Server, first: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let page = server.get(&path).await.expect(200);
        pages.push(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("{first}&cursor={c}"),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn a_page_of_big_rows_stops_at_its_byte_budget_and_its_cursor_continues_without_gaps() {
    let server = Server::start(SCHEMA).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let row = server
            .post("/things", json!({"n": i, "t": "x".repeat(BIG)}))
            .await
            .expect(201);
        ids.push(row["id"].clone());
    }
    let pages = all_pages(&server, "/things?limit=1000&sort=n").await;
    assert!(pages.len() >= 3, "12 rows of 900 KB: {} pages", pages.len());
    for page in &pages {
        assert!(!page.is_empty());
        let bytes: usize = page.iter().map(|r| r.to_string().len()).sum();
        assert!(
            bytes <= 4 * 1024 * 1024 + BIG + 1024,
            "a page holds {bytes} bytes"
        );
    }
    let seen: Vec<Value> = pages.iter().flatten().map(|r| r["id"].clone()).collect();
    assert_eq!(seen, ids, "every row once, in order");
}

#[tokio::test]
async fn four_concurrent_pages_of_big_rows_keep_the_servers_memory_bounded() {
    let server = Server::start(SCHEMA).await;
    for i in 0..40 {
        server
            .post("/things", json!({"n": i, "t": "y".repeat(BIG)}))
            .await
            .expect(201);
    }
    let (_, before) = server.memory_kib();
    let requests = (0..4).map(|_| server.get("/things?limit=1000"));
    for reply in futures_util::future::join_all(requests).await {
        let page = reply.expect(200);
        assert!(page["items"].as_array().unwrap().len() < 40);
        assert!(page["next_cursor"].is_string());
    }
    let (_, peak) = server.memory_kib();
    let grown_mib = peak.saturating_sub(before) / 1024;
    println!(
        "peak RSS {} MiB before the pages, {} MiB after (+{grown_mib} MiB)",
        before / 1024,
        peak / 1024
    );
    // 40 rows are 36 MB of text; four unbounded pages held several copies each.
    assert!(
        grown_mib < 80,
        "{}: peak RSS grew {grown_mib} MiB",
        Backend::current().name()
    );
}

#[tokio::test]
async fn expanded_references_share_the_page_budget_and_every_child_keeps_its_parent() {
    let server = Server::start(SCHEMA).await;
    let mut children = Vec::new();
    for _ in 0..10 {
        let parent = server
            .post("/parents", json!({"blob": "p".repeat(BIG)}))
            .await
            .expect(201);
        let child = server
            .post("/children", json!({"parent_id": parent["id"]}))
            .await
            .expect(201);
        children.push((child["id"].clone(), parent["id"].clone()));
    }
    let pages = all_pages(&server, "/children?limit=1000&expand=parent").await;
    assert!(pages.len() >= 2, "{} pages", pages.len());
    for page in &pages {
        let bytes: usize = page.iter().map(|r| r.to_string().len()).sum();
        assert!(
            bytes <= 4 * 1024 * 1024 + 2 * BIG,
            "a page holds {bytes} bytes"
        );
    }
    let seen: Vec<(Value, Value)> = pages
        .iter()
        .flatten()
        .map(|c| (c["id"].clone(), c["parent"]["id"].clone()))
        .collect();
    assert_eq!(
        seen, children,
        "every child once, each with its parent expanded"
    );
}

/// Rows whose `t` makes `LIKE '%a%a…a{150}b'` cost about a millisecond each.
async fn seed_slow_rows(server: &Server) {
    let text = match Backend::current() {
        Backend::Sqlite => "printf('%.*c', 4000, 'a')",
        _ => "repeat('a', 4000)",
    };
    let now = match Backend::current() {
        Backend::Sqlite => "'2026-01-01T00:00:00.000000Z'",
        Backend::Postgres => "now()",
        Backend::Mysql => "NOW(6)",
    };
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
    server
        .execute(&format!(
            "INSERT INTO \"things\" (\"t\", \"created_at\", \"updated_at\") \
             SELECT {text}, {now}, {now} FROM {digits} a, {digits} b, {digits} c, {digits} d"
        ))
        .await;
}

fn slow_pattern() -> String {
    format!("{}%{}b", "%a".repeat(14), "a".repeat(150))
}

#[tokio::test]
async fn a_statement_past_the_timeout_is_a_503_and_the_server_keeps_answering() {
    let server = Server::start_with_args(SCHEMA, &["--statement-timeout", "1s"]).await;
    seed_slow_rows(&server).await;
    let started = Instant::now();
    let reply = server
        .get(&format!(
            "/things?t[like]={}&count=true",
            encode(&slow_pattern())
        ))
        .await;
    let elapsed = started.elapsed();
    let problem = reply.expect_problem(503, "database_unavailable");
    assert_eq!(
        reply.header("retry-after").as_deref(),
        Some("1"),
        "{problem}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "{}: cut after {elapsed:?}",
        Backend::current().name()
    );
    server.get("/health").await.expect(200);
    let one = server.get("/things?limit=1").await.expect(200);
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    let id = id_of(&one["items"][0]["id"]);
    server.get(&format!("/things/{id}")).await.expect(200);
}
