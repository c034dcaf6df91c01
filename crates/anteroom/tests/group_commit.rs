//! Group commit on SQLite: concurrent writes share one transaction, each in
//! a savepoint of its own. What users must see is what they saw with one
//! transaction per request: a failing write is refused alone, every 201 is
//! in the database when it is answered, and a write answered 503 left
//! nothing behind — even when SQLite rolled back a whole group. These run on
//! SQLite whatever `ANTEROOM_TEST_BACKEND` says (PostgreSQL and MySQL keep a
//! transaction per request).

mod common;

use std::collections::HashSet;

use common::Server;
use serde_json::json;

const SCHEMA: &str = r#"[app]
name = "groups"

[resources.owners]
id = { type = "integer" }
fields.name = { type = "string", required = true }

[resources.items]
id = { type = "integer" }
fields.email = { type = "string", required = true, unique = true }
fields.owner_id = { type = "ref", to = "owners", required = true, on_delete = "cascade" }
"#;

async fn sqlite_server(args: &[&str]) -> Server {
    Server::start_sqlite(SCHEMA, args).await
}

/// Sends every body at once and returns (body, status, reply JSON) in order.
async fn post_all(
    server: &Server,
    bodies: Vec<serde_json::Value>,
) -> Vec<(serde_json::Value, u16, serde_json::Value)> {
    let client = reqwest::Client::new();
    let sends = bodies.into_iter().map(|body| {
        let client = client.clone();
        let url = format!("{}/items", server.base);
        async move {
            let reply = client.post(url).json(&body).send().await.unwrap();
            let status = reply.status().as_u16();
            let json = reply.json().await.unwrap_or(serde_json::Value::Null);
            (body, status, json)
        }
    });
    futures_util::future::join_all(sends).await
}

async fn emails_in_database(server: &Server) -> HashSet<String> {
    server
        .all("items")
        .await
        .into_iter()
        .map(|row| row["email"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn concurrent_writes_that_fail_are_refused_alone_and_the_rest_are_committed() {
    let server = sqlite_server(&[]).await;
    server
        .post("/owners", json!({"name": "ada"}))
        .await
        .expect(201);
    server
        .post(
            "/items",
            json!({"email": "taken@example.com", "owner_id": 1}),
        )
        .await
        .expect(201);
    // 48 writes at once: every third repeats a taken email, every fifth
    // names an owner that does not exist; the rest are fine.
    let bodies = (0..48)
        .map(|i| match i {
            i if i % 3 == 0 => json!({"email": "taken@example.com", "owner_id": 1}),
            i if i % 5 == 0 => json!({"email": format!("ghost{i}@example.com"), "owner_id": 99}),
            i => json!({"email": format!("ok{i}@example.com"), "owner_id": 1}),
        })
        .collect();
    let replies = post_all(&server, bodies).await;
    let mut created = HashSet::new();
    for (body, status, reply) in &replies {
        let email = body["email"].as_str().unwrap();
        if email == "taken@example.com" {
            assert_eq!(*status, 409, "{email}: {reply}");
            assert_eq!(reply["code"], "unique_violation", "{reply}");
        } else if body["owner_id"] == 99 {
            assert_eq!(*status, 409, "{email}: {reply}");
            assert_eq!(reply["code"], "foreign_key_violation", "{reply}");
            assert_eq!(reply["field"], "owner_id", "{reply}");
        } else {
            assert_eq!(*status, 201, "{email}: {reply}");
            assert_eq!(reply["email"], email);
            created.insert(email.to_owned());
        }
    }
    assert_eq!(created.len(), 48 - 16 - 6);
    created.insert("taken@example.com".to_owned());
    assert_eq!(emails_in_database(&server).await, created);
    assert_eq!(
        server.count_in_database("items").await,
        created.len() as i64
    );
}

#[tokio::test]
async fn a_write_is_in_the_database_file_when_its_201_arrives() {
    let server = sqlite_server(&[]).await;
    server
        .post("/owners", json!({"name": "ada"}))
        .await
        .expect(201);
    for i in 0..20 {
        let email = format!("seen{i}@example.com");
        let reply = server
            .post("/items", json!({"email": email, "owner_id": 1}))
            .await
            .expect(201);
        // Read through a connection of the test's own, not the server's.
        let id = reply["id"].as_i64().unwrap();
        assert_eq!(
            server
                .query_i64(&format!("SELECT COUNT(*) FROM items WHERE id = {id}"))
                .await,
            1,
            "row {id} not committed when its 201 was sent"
        );
    }
}

#[tokio::test]
async fn when_sqlite_rolls_back_a_whole_group_every_write_in_it_is_answered_503() {
    // A cascade over 100,000 rows outlives the 40 ms deadline: SQLite
    // interrupts it and rolls back the whole transaction, including the
    // writes that joined the group before it. None of those may be
    // acknowledged; every acknowledged one must be in the database.
    let server = sqlite_server(&["--statement-timeout", "40ms"]).await;
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
    server
        .post("/owners", json!({"name": "kept"}))
        .await
        .expect(201);
    let mut lost_with_the_group = 0;
    for round in 0..8 {
        let doomed = server
            .post("/owners", json!({"name": format!("doomed{round}")}))
            .await
            .expect(201);
        let doomed = doomed["id"].as_i64().unwrap();
        server
            .execute(&format!(
                "INSERT INTO items (email, owner_id, created_at, updated_at) \
                 SELECT 'bulk{round}-' || (a.d || b.d || c.d || d.d || e.d), {doomed}, \
                 '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z' \
                 FROM {digits} a, {digits} b, {digits} c, {digits} d, {digits} e"
            ))
            .await;
        let bodies = (0..24)
            .map(|i| json!({"email": format!("r{round}-{i}@example.com"), "owner_id": 1}))
            .collect::<Vec<_>>();
        let client = reqwest::Client::new();
        let delete = client
            .delete(format!("{}/owners/{doomed}", server.base))
            .send();
        let (replies, deleted) = tokio::join!(post_all(&server, bodies), delete);
        let deleted = deleted.unwrap();
        assert_eq!(deleted.status().as_u16(), 503, "the cascade was not cut");
        for (body, status, reply) in &replies {
            let email = body["email"].as_str().unwrap();
            let stored = server
                .query_i64(&format!(
                    "SELECT COUNT(*) FROM items WHERE email = '{email}'"
                ))
                .await;
            match status {
                201 => assert_eq!(stored, 1, "{email} answered 201 but is missing"),
                503 => {
                    assert_eq!(stored, 0, "{email} answered 503 but is stored");
                    assert_eq!(reply["code"], "database_unavailable", "{reply}");
                    lost_with_the_group += 1;
                }
                other => panic!("{email}: unexpected {other}: {reply}"),
            }
        }
        // The cascade left nothing half done: the owner and its rows are there.
        assert_eq!(
            server
                .query_i64(&format!(
                    "SELECT COUNT(*) FROM items WHERE owner_id = {doomed}"
                ))
                .await,
            100_000
        );
        server.get(&format!("/owners/{doomed}")).await.expect(200);
        if lost_with_the_group > 0 && round >= 1 {
            break;
        }
    }
    assert!(
        lost_with_the_group > 0,
        "no write ever shared a group with the interrupted cascade: the rollback path was not exercised"
    );
    // The writer recovered: writes work again.
    server
        .post(
            "/items",
            json!({"email": "after@example.com", "owner_id": 1}),
        )
        .await
        .expect(201);
}

#[tokio::test]
async fn sustained_concurrent_writes_keep_the_write_ahead_log_bounded() {
    // SQLite starts the WAL over only when a write transaction begins after
    // a complete checkpoint. With checkpoints only on a connection of their
    // own (tried), back-to-back groups never saw one complete, and the WAL
    // grew by 40 MB a second; these 4,000 rows left 19 MB. The checkpointer
    // now holds the writer between two groups to restart the log.
    let server = Server::start_sqlite_env(
        SCHEMA,
        &[],
        &[(
            "ANTEROOM_LOG",
            "info,sqlx=warn,anteroom_engine::storage::sql::sqlite=debug",
        )],
    )
    .await;
    server
        .post("/owners", json!({"name": "ada"}))
        .await
        .expect(201);
    let client = reqwest::Client::new();
    let writers = (0..32).map(|w| {
        let client = client.clone();
        let url = format!("{}/items", server.base);
        async move {
            for i in 0..125 {
                let body = json!({"email": format!("w{w}-{i}@example.com"), "owner_id": 1});
                let reply = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(reply.status().as_u16(), 201);
            }
        }
    });
    futures_util::future::join_all(writers).await;
    assert_eq!(server.count_in_database("items").await, 4000);
    let path = server
        .database_url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let wal = std::fs::metadata(format!("{path}-wal")).unwrap().len();
    assert!(
        wal < 12 * 1024 * 1024,
        "the WAL grew to {} MB",
        wal / 1024 / 1024
    );
    // Restarted by the checkpointer, not only by the writer's backstop
    // checkpoint inside a commit.
    assert!(
        server.log_text().contains("WAL restarted"),
        "the checkpointer never restarted the log:\n{}",
        server.log_text()
    );
}
