//! Migrations as a conformance suite: the same restarts, additive changes and
//! refusals on every backend (`ANTEROOM_TEST_BACKEND`), and instances that
//! start together on one empty database applying each migration once.

mod common;

use std::sync::Arc;

use common::{Server, Started, TestDatabase, id_of, schema_dir};
use serde_json::json;

const V1: &str = r#"
[app]
name = "notes"

[resources.notes]
fields.title = { type = "string", required = true, max_length = 100 }
fields.body  = { type = "text" }
"#;

const V2_ADDITIVE: &str = r#"
[app]
name = "notes"

[resources.notes]
fields.title    = { type = "string", required = true, max_length = 100, unique = true }
fields.body     = { type = "text" }
fields.pinned   = { type = "boolean" }
fields.priority = { type = "integer", required = true, default = 3 }
fields.due      = { type = "timestamp", index = true }
fields.owner_id = { type = "ref", to = "owners" }
indexes = [["priority", "pinned"]]

[resources.owners]
id = { type = "integer" }
fields.name = { type = "string", required = true }
"#;

async fn up(started: Started) -> Server {
    match started {
        Started::Up(server) => server,
        Started::Exited(code, log) => panic!("server refused to start ({code}):\n{log}"),
    }
}

async fn seeded() -> (Server, Vec<String>) {
    let server = Server::start(V1).await;
    let mut ids = Vec::new();
    for title in ["first", "second", "third"] {
        let row = server
            .post("/notes", json!({"title": title, "body": "…"}))
            .await
            .expect(201);
        ids.push(id_of(&row["id"]));
    }
    (server, ids)
}

#[tokio::test]
async fn an_additive_change_is_applied_on_restart_and_keeps_every_row() {
    let (server, ids) = seeded().await;
    let server = up(server.restart_with_schema(V2_ADDITIVE).await).await;
    for (id, title) in ids.iter().zip(["first", "second", "third"]) {
        let row = server.get(&format!("/notes/{id}")).await.expect(200);
        assert_eq!(row["title"], title);
        assert_eq!(row["pinned"], serde_json::Value::Null);
        assert_eq!(row["priority"], 3, "existing rows get the default: {row}");
    }
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM notes WHERE priority = 3")
            .await,
        3
    );
    let owner = server
        .post("/owners", json!({"name": "Ada"}))
        .await
        .expect(201);
    let patched = server
        .patch(
            &format!("/notes/{}", ids[0]),
            json!({"pinned": true, "owner_id": owner["id"], "due": "2027-01-01T00:00:00Z"}),
        )
        .await
        .expect(200);
    assert_eq!(patched["owner_id"], owner["id"]);
    server
        .patch(&format!("/notes/{}", ids[1]), json!({"owner_id": 999}))
        .await
        .expect_problem(409, "foreign_key_violation");
    server
        .post("/notes", json!({"title": "second"}))
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(
        server
            .get("/notes?pinned=true&expand=owner")
            .await
            .expect(200)["items"][0]["owner"]["name"],
        "Ada"
    );
}

#[tokio::test]
async fn an_unchanged_schema_restarts_without_a_new_schema_version() {
    let (server, _) = seeded().await;
    let before = server
        .query_i64("SELECT MAX(version) FROM _anteroom_schema")
        .await;
    let server = up(server.restart_with_schema(V1).await).await;
    assert_eq!(
        server
            .query_i64("SELECT MAX(version) FROM _anteroom_schema")
            .await,
        before
    );
    assert_eq!(server.count_in_database("notes").await, 3);
}

#[tokio::test]
async fn destructive_changes_are_refused_naming_what_would_be_lost_and_the_data_survives() {
    let (server, ids) = seeded().await;
    let removed_field = V1.replace("fields.body  = { type = \"text\" }\n", "");
    let changed_type = V1.replace(
        "fields.body  = { type = \"text\" }",
        "fields.body  = { type = \"integer\" }",
    );
    let new_required = format!("{V1}fields.rank = {{ type = \"integer\", required = true }}\n");
    let removed_resource = format!(
        "{}\n[resources.other]\nfields.x = {{ type = \"string\" }}\n",
        "[app]\nname = \"notes\"\n"
    );
    let mut server = Some(server);
    for (schema, needle) in [
        (removed_field.as_str(), "notes.body"),
        (changed_type.as_str(), "notes.body"),
        (new_required.as_str(), "notes.rank"),
        (removed_resource.as_str(), "\"notes\""),
    ] {
        let current = server.take().unwrap();
        let dir = current.dir.clone();
        let url = current.database_url.clone();
        match current.restart_with_schema(schema).await {
            Started::Up(_) => panic!("a destructive change was applied:\n{schema}"),
            Started::Exited(code, log) => {
                assert_ne!(code, 0);
                assert!(
                    log.contains("refusing to migrate") && log.contains(needle),
                    "{needle}: {log}"
                );
            }
        }
        std::fs::write(dir.path().join("anteroom.toml"), V1).unwrap();
        let restored = up(Server::spawn(dir, url, &[]).await).await;
        for id in &ids {
            restored.get(&format!("/notes/{id}")).await.expect(200);
        }
        server = Some(restored);
    }
}

#[tokio::test]
async fn instances_starting_together_on_an_empty_database_migrate_once() {
    let (dir, _) = schema_dir(V2_ADDITIVE);
    let dir = Arc::new(dir);
    let db = Arc::new(TestDatabase::create(dir.path()).await);
    let starts =
        (0..3).map(|_| Server::spawn_with(dir.clone(), db.url.clone(), &[], Some(db.clone())));
    let servers: Vec<Server> = {
        let mut out = Vec::new();
        for started in futures_join(starts.collect()).await {
            out.push(up(started).await);
        }
        out
    };
    assert_eq!(
        servers[0]
            .query_i64("SELECT COUNT(*) FROM _anteroom_schema")
            .await,
        1
    );
    for (i, server) in servers.iter().enumerate() {
        server
            .post("/owners", json!({"name": format!("owner {i}")}))
            .await
            .expect(201);
    }
    assert_eq!(servers[2].count_in_database("owners").await, 3);
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future<Output = Started> + Send + 'static>(
    futures: Vec<F>,
) -> Vec<Started> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}
