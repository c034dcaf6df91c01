//! Migrations as a conformance suite: the same restarts, additive changes and
//! refusals on every backend (`ANTEROOM_TEST_BACKEND`), and instances that
//! start together on one empty database applying each migration once.

mod common;

use std::sync::Arc;

use common::{CliOutput, Server, Started, TestDatabase, cli, id_of, schema_dir};
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
            .post("/notes", json!({"title": title, "body": "two words"}))
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
                    (log.contains("refusing to migrate") || log.contains("--allow-destructive"))
                        && log.contains(needle),
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

// ---------------------------------------------------------------------------
// Constraint names and creation order (issue 7): names that used to collide,
// mutual references, and databases created before names were stored.
// ---------------------------------------------------------------------------

/// `uq_a_b_c` twice under the old naming.
const UNIQUE_NAMES_COLLIDED: &str = r#"
[app]
name = "collide"

[resources.a]
fields.b_c = { type = "string", unique = true }

[resources.a_b]
fields.c = { type = "string", unique = true }
"#;

/// `ix_p_q_r_id` and `fk_p_q_r_id` twice under the old naming.
const REF_NAMES_COLLIDED: &str = r#"
[app]
name = "collide"

[resources.r]
fields.name = { type = "string" }

[resources.p]
fields.q_r_id = { type = "ref", to = "r" }

[resources.p_q]
fields.r_id = { type = "ref", to = "r" }
"#;

/// Each table refers to the other (and `a` to itself): no creation order
/// satisfies both foreign keys.
const MUTUAL_REFS: &str = r#"
[app]
name = "mutual"

[resources.a]
fields.b_id      = { type = "ref", to = "b" }
fields.parent_id = { type = "ref", to = "a" }

[resources.b]
fields.a_id = { type = "ref", to = "a" }
"#;

/// A well-formed id that no row has.
const NO_SUCH_ROW: &str = "01890000-0000-7000-8000-000000000000";

async fn schema_version(server: &Server) -> i64 {
    server
        .query_i64("SELECT MAX(version) FROM _anteroom_schema")
        .await
}

/// Restarts with the same schema and asserts no migration ran.
async fn restart_needs_no_migration(server: Server, schema: &str) -> Server {
    let before = schema_version(&server).await;
    let server = up(server.restart_with_schema(schema).await).await;
    assert_eq!(schema_version(&server).await, before, "a migration ran");
    server
}

#[tokio::test]
async fn two_unique_fields_whose_index_names_used_to_collide_both_migrate_and_each_violation_names_its_field()
 {
    let server = Server::start(UNIQUE_NAMES_COLLIDED).await;
    server.post("/a", json!({"b_c": "x"})).await.expect(201);
    // The same value in the other table is no violation: each index is on its own table.
    server.post("/a_b", json!({"c": "x"})).await.expect(201);
    let problem = server
        .post("/a", json!({"b_c": "x"}))
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "b_c", "{problem}");
    let problem = server
        .post("/a_b", json!({"c": "x"}))
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "c", "{problem}");
    restart_needs_no_migration(server, UNIQUE_NAMES_COLLIDED).await;
}

#[tokio::test]
async fn two_refs_whose_foreign_key_names_used_to_collide_both_migrate_and_each_dangling_ref_names_its_field()
 {
    let server = Server::start(REF_NAMES_COLLIDED).await;
    let r = server.post("/r", json!({"name": "r"})).await.expect(201);
    server
        .post("/p", json!({"q_r_id": r["id"]}))
        .await
        .expect(201);
    server
        .post("/p_q", json!({"r_id": r["id"]}))
        .await
        .expect(201);
    let problem = server
        .post("/p", json!({"q_r_id": NO_SUCH_ROW}))
        .await
        .expect_problem(409, "foreign_key_violation");
    assert_eq!(problem["field"], "q_r_id", "{problem}");
    let problem = server
        .post("/p_q", json!({"r_id": NO_SUCH_ROW}))
        .await
        .expect_problem(409, "foreign_key_violation");
    assert_eq!(problem["field"], "r_id", "{problem}");
    server
        .delete(&format!("/r/{}", id_of(&r["id"])))
        .await
        .expect_problem(409, "still_referenced");
    restart_needs_no_migration(server, REF_NAMES_COLLIDED).await;
}

#[tokio::test]
async fn mutual_and_self_references_migrate_and_every_foreign_key_is_enforced() {
    let server = Server::start(MUTUAL_REFS).await;
    let a1 = server.post("/a", json!({})).await.expect(201);
    let a1_path = format!("/a/{}", id_of(&a1["id"]));
    let b1 = server
        .post("/b", json!({"a_id": a1["id"]}))
        .await
        .expect(201);
    let b1_path = format!("/b/{}", id_of(&b1["id"]));
    server
        .patch(&a1_path, json!({"b_id": b1["id"]}))
        .await
        .expect(200);
    server
        .post("/a", json!({"parent_id": a1["id"]}))
        .await
        .expect(201);
    for (path, field) in [("/a", "b_id"), ("/a", "parent_id"), ("/b", "a_id")] {
        let problem = server
            .post(path, json!({ field: NO_SUCH_ROW }))
            .await
            .expect_problem(409, "foreign_key_violation");
        assert_eq!(problem["field"], field, "{problem}");
    }
    server
        .delete(&a1_path)
        .await
        .expect_problem(409, "still_referenced");
    server
        .delete(&b1_path)
        .await
        .expect_problem(409, "still_referenced");
    restart_needs_no_migration(server, MUTUAL_REFS).await;
}

#[tokio::test]
async fn an_index_renamed_because_a_new_resource_shares_its_name_is_rebuilt_and_keeps_every_row() {
    let before = REF_NAMES_COLLIDED.replace(
        "[resources.p_q]\nfields.r_id = { type = \"ref\", to = \"r\" }\n",
        "",
    );
    let server = Server::start(&before).await;
    let r = server.post("/r", json!({"name": "r"})).await.expect(201);
    let p = server
        .post("/p", json!({"q_r_id": r["id"]}))
        .await
        .expect(201);
    let server = up(server.restart_with_schema(REF_NAMES_COLLIDED).await).await;
    assert_eq!(
        server
            .get(&format!("/p/{}", id_of(&p["id"])))
            .await
            .expect(200)["q_r_id"],
        r["id"]
    );
    for (path, field) in [("/p", "q_r_id"), ("/p_q", "r_id")] {
        let problem = server
            .post(path, json!({ field: NO_SUCH_ROW }))
            .await
            .expect_problem(409, "foreign_key_violation");
        assert_eq!(problem["field"], field, "{problem}");
    }
    restart_needs_no_migration(server, REF_NAMES_COLLIDED).await;
}

#[tokio::test]
async fn a_new_resource_named_like_an_existing_index_is_created_once_the_index_is_renamed() {
    let before =
        "[app]\nname = \"t\"\n\n[resources.a]\nfields.b = { type = \"string\", unique = true }\n";
    let after = format!("{before}\n[resources.uq_a_b]\nfields.x = {{ type = \"string\" }}\n");
    let server = Server::start(before).await;
    server.post("/a", json!({"b": "x"})).await.expect(201);
    let server = up(server.restart_with_schema(&after).await).await;
    let problem = server
        .post("/a", json!({"b": "x"}))
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "b", "{problem}");
    server.post("/uq_a_b", json!({"x": "y"})).await.expect(201);
}

/// The schema `tests/fixtures/legacy_snapshot.json` was recorded for.
const LEGACY: &str = r#"
[app]
name = "legacy"

[resources.notes]
fields.title    = { type = "string", required = true, max_length = 100, unique = true }
fields.body     = { type = "text" }
fields.priority = { type = "integer", required = true, default = 3, index = true }
fields.owner_id = { type = "ref", to = "owners", on_delete = "cascade" }
fields.parent_id = { type = "ref", to = "notes", on_delete = "set_null" }
fields.a_rather_long_field_name_that_pushes_index_names_past_sixty = { type = "string", index = true }
indexes = [["priority", "owner_id"]]

[resources.owners]
id = { type = "integer" }
fields.name = { type = "string", required = true, unique = true }

[resources.tags]
id = { type = "string", name = "slug", max_length = 40 }
fields.note_id = { type = "ref", to = "notes" }
"#;

#[tokio::test]
async fn a_database_migrated_before_constraint_names_were_stored_needs_no_migration_for_its_schema()
{
    let server = Server::start(LEGACY).await;
    let legacy = std::fs::read_to_string(common::fixture("legacy_snapshot.json")).unwrap();
    server
        .execute(&format!(
            "UPDATE _anteroom_schema SET snapshot = '{}'",
            legacy.trim().replace('\'', "''")
        ))
        .await;
    let server = restart_needs_no_migration(server, LEGACY).await;
    let owner = server
        .post("/owners", json!({"name": "Ada"}))
        .await
        .expect(201);
    server
        .post("/notes", json!({"title": "t", "owner_id": owner["id"]}))
        .await
        .expect(201);
}

#[test]
fn check_accepts_the_schemas_whose_names_used_to_collide() {
    for schema in [
        UNIQUE_NAMES_COLLIDED,
        REF_NAMES_COLLIDED,
        MUTUAL_REFS,
        LEGACY,
    ] {
        let (_dir, path) = schema_dir(schema);
        let out = cli(&["check", path.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{schema}\n{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains(": ok ("), "{}", out.stdout);
    }
}

#[test]
fn check_reports_a_name_conflict_no_renaming_can_resolve_with_both_key_paths() {
    // PostgreSQL names the primary key index of `a` "a_pkey": a table of that
    // name cannot be created after it (and table names are the resources').
    let schema = r#"
[app]
name = "clash"

[resources.a]
fields.x = { type = "string" }

[resources.a_pkey]
fields.y = { type = "string" }
"#;
    let (_dir, path) = schema_dir(schema);
    let file = path.to_str().unwrap();
    let out = cli(&["check", file]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("a_pkey"))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    // FILE: key.path: message, naming the other key path too.
    assert!(line.starts_with(&format!("{file}: resources.")), "{line}");
    assert!(
        line.contains("resources.a_pkey")
            && line.replace("resources.a_pkey", "").contains("resources.a"),
        "{line}"
    );
    // serve and migrate refuse the same schema before touching a database.
    let out = cli(&["migrate", file, "--dry-run"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("a_pkey"), "{}", out.stderr);
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

#[tokio::test]
async fn a_dry_run_on_a_fresh_database_prints_the_migration_and_creates_no_table() {
    let (dir, path) = schema_dir(V1);
    let db = TestDatabase::create(dir.path()).await;
    let out = cli(&[
        "migrate",
        path.to_str().unwrap(),
        "--dry-run",
        "--database-url",
        &db.url,
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("CREATE TABLE"), "{}", out.stdout);
    assert!(
        out.stderr.contains("dry run: nothing was changed"),
        "{}",
        out.stderr
    );
    assert_eq!(tables_in(&db.url).await, 0, "a dry run created tables");
    // The real run then creates what the dry run printed.
    let applied = cli(&["migrate", path.to_str().unwrap(), "--database-url", &db.url]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(applied.stdout, out.stdout);
    assert!(tables_in(&db.url).await > 0);
}

/// Tables in the database at `url` (0 when a SQLite file does not exist).
async fn tables_in(url: &str) -> i64 {
    use sqlx::Connection;
    if let Some(file) = url.strip_prefix("sqlite://") {
        if !std::path::Path::new(file).exists() {
            return 0;
        }
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        return sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    }
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        return sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
    }
    let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_named_with_where_it_was_looked_for_and_what_to_check()
{
    let (dir, path) = schema_dir(V1);
    let schema = path.to_str().unwrap();
    let refused = |url: &str, says: &[&str]| {
        let out = cli(&["migrate", schema, "--database-url", url]);
        assert_eq!(out.code, 2, "{url}: {}{}", out.stdout, out.stderr);
        for part in says {
            assert!(
                out.stderr.contains(part),
                "{url}: no {part:?} in {}",
                out.stderr
            );
        }
    };
    let Some(admin) = common::Backend::current().server_url() else {
        let file = dir.path().join("no-such-dir").join("app.db");
        let file = file.to_str().unwrap();
        refused(
            file,
            &[file, "unable to open database file", "directory exists"],
        );
        return;
    };
    let server = url::Url::parse(&admin).unwrap();
    let at = format!("{}:{}", server.host_str().unwrap(), server.port().unwrap());
    let missing = common::with_database(&admin, "anteroom_no_such_database");
    refused(
        &missing,
        &[&at, "\"anteroom_no_such_database\"", "create it"],
    );
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut unreachable = server.clone();
    unreachable.set_host(Some("127.0.0.1")).unwrap();
    unreachable.set_port(Some(port)).unwrap();
    refused(
        unreachable.as_str(),
        &[
            "cannot reach",
            &format!("127.0.0.1:{port}"),
            "host and port",
        ],
    );
}

const V1_RELAXED: &str = r#"
[app]
name = "notes"

[resources.notes]
fields.title = { type = "string", max_length = 300 }
fields.body  = { type = "text" }
"#;

#[tokio::test]
async fn relaxing_required_and_widening_a_length_apply_on_restart_and_keep_every_row() {
    let (server, ids) = seeded().await;
    let server = up(server.restart_with_schema(V1_RELAXED).await).await;
    for (id, title) in ids.iter().zip(["first", "second", "third"]) {
        assert_eq!(
            server.get(&format!("/notes/{id}")).await.expect(200)["title"],
            title
        );
    }
    let untitled = server
        .post("/notes", json!({"body": "no title"}))
        .await
        .expect(201);
    assert_eq!(untitled["title"], serde_json::Value::Null);
    // MySQL sized the column VARCHAR(100): it is widened, not just validated.
    let long = "x".repeat(250);
    let created = server
        .post("/notes", json!({"title": long}))
        .await
        .expect(201);
    assert_eq!(
        server
            .get(&format!("/notes/{}", id_of(&created["id"])))
            .await
            .expect(200)["title"],
        long.as_str()
    );
    assert_eq!(server.count_in_database("notes").await, 5);
    restart_needs_no_migration(server, V1_RELAXED).await;
}

const LIBRARY: &str = r#"
[app]
name = "library"

[resources.authors]
id = { type = "integer" }
fields.name = { type = "string", required = true, unique = true }

[resources.books]
fields.title     = { type = "string", required = true, unique = true }
fields.author_id = { type = "ref", to = "authors", required = true }
"#;

const LIBRARY_RENAMED: &str = r#"
[app]
name = "library"

[resources.writers]
renamed_from = "authors"
id = { type = "integer" }
fields.name = { type = "string", required = true, unique = true }

[resources.books]
fields.heading   = { type = "string", required = true, unique = true, renamed_from = "title" }
fields.writer_id = { type = "ref", to = "writers", required = true, renamed_from = "author_id" }
"#;

#[tokio::test]
async fn renamed_resources_and_fields_keep_their_rows_ids_indexes_and_references() {
    let server = Server::start(LIBRARY).await;
    let ada = server
        .post("/authors", json!({"name": "Ada"}))
        .await
        .expect(201);
    let gone = server
        .post("/authors", json!({"name": "Gone"}))
        .await
        .expect(201);
    server
        .delete(&format!("/authors/{}", gone["id"]))
        .await
        .expect(204);
    let book = server
        .post("/books", json!({"title": "Dune", "author_id": ada["id"]}))
        .await
        .expect(201);
    let server = up(server.restart_with_schema(LIBRARY_RENAMED).await).await;

    assert_eq!(
        server
            .get(&format!("/writers/{}", ada["id"]))
            .await
            .expect(200)["name"],
        "Ada"
    );
    let read = server
        .get(&format!("/books/{}", id_of(&book["id"])))
        .await
        .expect(200);
    assert_eq!(read["heading"], "Dune");
    assert_eq!(read["writer_id"], ada["id"]);
    assert!(read.get("title").is_none(), "{read}");
    assert_eq!(server.get("/authors").await.status, 404);
    // The id sequence went with the table: a deleted row's id is not reused.
    let next = server
        .post("/writers", json!({"name": "Bo"}))
        .await
        .expect(201);
    assert_eq!(next["id"], gone["id"].as_i64().unwrap() + 1);
    // The renamed unique index and foreign key still hold, and name the new field.
    let duplicate = server
        .post("/books", json!({"heading": "Dune", "writer_id": ada["id"]}))
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(duplicate["field"], "heading");
    let dangling = server
        .post("/books", json!({"heading": "Emma", "writer_id": 999}))
        .await
        .expect_problem(409, "foreign_key_violation");
    assert_eq!(dangling["field"], "writer_id");
    assert_eq!(
        server
            .delete(&format!("/writers/{}", ada["id"]))
            .await
            .status,
        409,
        "a referenced writer cannot be deleted"
    );
    restart_needs_no_migration(server, LIBRARY_RENAMED).await;
}

fn migrate_cli(schema: &std::path::Path, url: &str, flags: &[&str]) -> CliOutput {
    let mut args = vec!["migrate", schema.to_str().unwrap(), "--database-url", url];
    args.extend_from_slice(flags);
    cli(&args)
}

#[tokio::test]
async fn a_destructive_change_names_what_it_loses_and_runs_with_allow_destructive_after_the_sql_files()
 {
    let (server, ids) = seeded().await;
    let dir = server.dir.clone();
    let url = server.database_url.clone();
    let folder = dir.path().join("migrations");
    std::fs::create_dir(&folder).unwrap();
    let words = folder.join("001_words.sql");
    std::fs::write(
        &words,
        // docs/schema.md's example, and a second statement.
        "-- migrations/001_words.sql\nUPDATE notes SET words = LENGTH(body) - LENGTH(REPLACE(body, ' ', '')) + 1 WHERE body IS NOT NULL;\nUPDATE notes SET words = words + 10 WHERE title = 'first';\n",
    )
    .unwrap();
    let v2 = V1.replace(
        "fields.body  = { type = \"text\" }",
        "fields.words = { type = \"integer\" }",
    );
    let loss = "field \"notes.body\" was removed: its column is dropped with its 3 stored values";
    match server.restart_with_schema(&v2).await {
        Started::Up(_) => panic!("the server dropped a column by itself"),
        Started::Exited(code, log) => {
            assert_ne!(code, 0);
            assert!(
                log.contains("anteroom migrate --allow-destructive") && log.contains(loss),
                "{log}"
            );
        }
    }
    let schema = dir.path().join("anteroom.toml");
    let refused = migrate_cli(&schema, &url, &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains(loss), "{}", refused.stderr);

    let predicted = migrate_cli(&schema, &url, &["--dry-run"]);
    assert_eq!(predicted.code, 2, "{}", predicted.stderr);
    assert!(predicted.stderr.contains(loss), "{}", predicted.stderr);
    let dry = migrate_cli(&schema, &url, &["--dry-run", "--allow-destructive"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("-- migrations/001_words.sql"),
        "{}",
        dry.stdout
    );
    assert!(dry.stderr.contains(loss), "{}", dry.stderr);

    let applied = migrate_cli(&schema, &url, &["--allow-destructive"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(applied.stderr.contains(loss), "{}", applied.stderr);

    let server = up(Server::spawn(dir.clone(), url.clone(), &[]).await).await;
    for (id, words) in ids.iter().zip([12, 2, 2]) {
        let row = server.get(&format!("/notes/{id}")).await.expect(200);
        assert_eq!(row["words"], words, "{row}");
        assert!(row.get("body").is_none(), "{row}");
    }
    drop(server);
    let again = migrate_cli(&schema, &url, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("up to date"), "{}", again.stderr);
    // A file runs once: editing it afterwards is refused, naming it.
    std::fs::write(&words, "UPDATE notes SET words = 0;\n").unwrap();
    let edited = migrate_cli(&schema, &url, &[]);
    assert_eq!(edited.code, 2, "{}", edited.stderr);
    assert!(
        edited
            .stderr
            .contains("migrations/001_words.sql changed after it was applied"),
        "{}",
        edited.stderr
    );
}

const SHELVES: &str = r#"
[app]
name = "shelves"

[resources.shelves]
id = { type = "integer" }
fields.label = { type = "string", required = true }

[resources.items]
id = { type = "integer" }
fields.name     = { type = "string", max_length = 40 }
fields.shelf_id = { type = "ref", to = "shelves", required = true }
"#;

#[tokio::test]
async fn a_field_becoming_required_gets_its_default_where_empty_and_a_changed_on_delete_applies() {
    let server = Server::start(SHELVES).await;
    let shelf = server
        .post("/shelves", json!({"label": "A"}))
        .await
        .expect(201);
    let named = server
        .post("/items", json!({"name": "lamp", "shelf_id": shelf["id"]}))
        .await
        .expect(201);
    let unnamed = server
        .post("/items", json!({"shelf_id": shelf["id"]}))
        .await
        .expect(201);
    let last = server
        .post("/items", json!({"shelf_id": shelf["id"]}))
        .await
        .expect(201);
    server
        .delete(&format!("/items/{}", last["id"]))
        .await
        .expect(204);
    let v2 = SHELVES
        .replace(
            "{ type = \"string\", max_length = 40 }",
            "{ type = \"string\", max_length = 40, required = true, default = \"unnamed\" }",
        )
        .replace(
            "to = \"shelves\", required = true }",
            "to = \"shelves\", required = true, on_delete = \"cascade\" }",
        );
    let loss = "field \"items.name\" becomes required: 1 row without a value will get its default \"unnamed\"";
    let mut output = None;
    let server = up(server
        .restart_with_schema_after(&v2, |schema, url| {
            let refused = migrate_cli(schema, url, &[]);
            assert_eq!(refused.code, 2, "{}", refused.stderr);
            output = Some(migrate_cli(schema, url, &["--allow-destructive"]));
        })
        .await)
    .await;
    let applied = output.unwrap();
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(applied.stderr.contains(loss), "{}", applied.stderr);

    assert_eq!(
        server
            .get(&format!("/items/{}", unnamed["id"]))
            .await
            .expect(200)["name"],
        "unnamed"
    );
    assert_eq!(
        server
            .get(&format!("/items/{}", named["id"]))
            .await
            .expect(200)["name"],
        "lamp"
    );
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM items WHERE name IS NULL")
            .await,
        0
    );
    // The ids of deleted rows stay retired, the reference is still enforced…
    let next = server
        .post("/items", json!({"name": "desk", "shelf_id": shelf["id"]}))
        .await
        .expect(201);
    assert_eq!(next["id"], last["id"].as_i64().unwrap() + 1);
    server
        .post("/items", json!({"name": "x", "shelf_id": 999}))
        .await
        .expect_problem(409, "foreign_key_violation");
    // …and deleting a shelf now deletes its items.
    server
        .delete(&format!("/shelves/{}", shelf["id"]))
        .await
        .expect(204);
    assert_eq!(server.count_in_database("items").await, 0);
    restart_needs_no_migration(server, &v2).await;
}

#[tokio::test]
async fn a_new_database_records_the_sql_files_without_running_them() {
    let (dir, _) = schema_dir(V1);
    // Written for an older schema: running it here would fail.
    std::fs::create_dir(dir.path().join("migrations")).unwrap();
    std::fs::write(
        dir.path().join("migrations/001_old.sql"),
        "UPDATE notes SET no_such_column = 1;\n",
    )
    .unwrap();
    let db = TestDatabase::create(dir.path()).await;
    let server =
        up(Server::spawn_with(Arc::new(dir), db.url.clone(), &[], Some(Arc::new(db))).await).await;
    server
        .post("/notes", json!({"title": "t"}))
        .await
        .expect(201);
    let recorded = server
        .query_i64("SELECT COUNT(*) FROM _anteroom_schema WHERE snapshot LIKE '%001_old.sql%'")
        .await;
    assert_eq!(recorded, 1, "the file is recorded as applied");
    restart_needs_no_migration(server, V1).await;
}

#[tokio::test]
async fn a_field_converted_to_a_required_type_with_a_default_gives_every_row_the_default() {
    let (server, ids) = seeded().await;
    let v2 = V1.replace(
        "fields.body  = { type = \"text\" }",
        "fields.body  = { type = \"integer\", required = true, default = 7 }",
    );
    let mut output = None;
    let server = up(server
        .restart_with_schema_after(&v2, |schema, url| {
            output = Some(migrate_cli(schema, url, &["--allow-destructive"]));
        })
        .await)
    .await;
    let applied = output.unwrap();
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    for id in &ids {
        assert_eq!(
            server.get(&format!("/notes/{id}")).await.expect(200)["body"],
            7
        );
    }
    restart_needs_no_migration(server, &v2).await;
}

#[tokio::test]
async fn a_field_becoming_unique_is_refused_while_rows_share_a_value_naming_how_many() {
    let (server, _) = seeded().await;
    server
        .post("/notes", json!({"title": "first"}))
        .await
        .expect(201);
    server
        .post("/notes", json!({"title": "first"}))
        .await
        .expect(201);
    let unique = V1.replace(
        "required = true, max_length = 100 }",
        "required = true, max_length = 100, unique = true }",
    );
    match server.restart_with_schema(&unique).await {
        Started::Up(_) => panic!("a unique index over shared values was created"),
        Started::Exited(_, log) => assert!(
            log.contains("field \"notes.title\" becomes unique: it holds 1 stored value shared by several rows"),
            "{log}"
        ),
    }
}

const ENUM_INDEXES: &str = r#"
[app]
name = "tickets"

[resources.tickets]
fields.code   = { type = "enum", values = ["a", "b", "c"], unique = true }
fields.status = { type = "enum", values = ["open", "closed"], required = true, index = true }
indexes = [["status", "created_at"]]
"#;

#[tokio::test]
async fn enum_fields_are_indexed_alone_and_with_others_on_every_backend() {
    // MySQL keeps enums in TEXT columns, which it indexes by a prefix only.
    let server = Server::start(ENUM_INDEXES).await;
    server
        .post("/tickets", json!({"code": "a", "status": "open"}))
        .await
        .expect(201);
    let taken = server
        .post("/tickets", json!({"code": "a", "status": "closed"}))
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(taken["field"], "code");
    let open = server
        .get("/tickets?status=open&sort=-created_at")
        .await
        .expect(200);
    assert_eq!(open["items"].as_array().unwrap().len(), 1);
}

#[test]
fn check_refuses_an_index_no_database_can_hold_naming_it() {
    let (_dir, path) = schema_dir(
        "[app]\nname = \"x\"\n\n[resources.a]\nfields.t = { type = \"text\" }\nfields.u = { type = \"string\", max_length = 500 }\nfields.w = { type = \"string\", max_length = 500 }\nindexes = [[\"t\"], [\"u\", \"w\"]]\n",
    );
    let out = cli(&["check", path.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    for expected in [
        "resources.a.indexes[0]: \"t\": a text or json field cannot be indexed; use a string with a max_length",
        "resources.a.indexes[1]: its fields may hold 4000 bytes, and MySQL indexes at most 3072 (4 bytes a character): lower their max_length or index fewer fields",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
    }
}
