//! Regressions from the security review of the auth code: caching of
//! per-caller answers, write responses the caller may not read, references
//! probing unreadable rows, hidden refs through nested routes and expand,
//! API key laundering, oversized offsets, trailing-space subjects, and schema
//! rules that could never work. Runs on every backend.

mod common;

use common::{Reply, Server, id_of, schema_dir};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "review-secret-review-secret-review-secret";
const APP_TOKEN: &str = "app-token-app-token-app-token-app-token";

const SCHEMA: &str = r#"
[app]
name = "review"

[auth]
jwt = { algorithms = ["HS256"], secret_env = "JWT_SECRET" }
api_keys = { env = "APP_TOKEN", header = "x-api-key", query = "app_token", role = "service" }

[resources.notes]
cache_control = "public, max-age=300"
fields.title = { type = "string", required = true }
rules = { list = "owner", read = "owner", create = "authenticated", update = "owner", delete = "owner" }

[resources.memos]
fields.body = { type = "string", required = true }
rules = { list = "owner", read = "owner", create = "authenticated", update = "authenticated", delete = "owner" }

[resources.comments]
fields.text    = { type = "string", required = true }
fields.note_id = { type = "ref", to = "notes" }
rules = { list = "public", read = "public", create = "authenticated", update = "owner", delete = "owner" }

[resources.secrets]
fields.value = { type = "string", required = true }
rules = { list = "role:admin", read = "role:admin", create = "role:admin", update = "none", delete = "none" }

[resources.links]
fields.label     = { type = "string", required = true }
fields.secret_id = { type = "ref", to = "secrets" }
rules = { list = "public", read = "public", create = "role:admin", update = "none", delete = "none" }

[resources.reviewers]
fields.name = { type = "string", required = true }
rules = { list = "public", read = "public", create = "authenticated", update = "none", delete = "none" }

[resources.papers]
fields.title       = { type = "string", required = true }
fields.reviewer_id = { type = "ref", to = "reviewers", hidden = true }
rules = { list = "public", read = "public", create = "authenticated", update = "none", delete = "none" }
"#;

fn token(sub: &str, role: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "role": role, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn start() -> Server {
    Server::start_with_env(
        SCHEMA,
        &[],
        &[("JWT_SECRET", SECRET), ("APP_TOKEN", APP_TOKEN)],
    )
    .await
}

async fn as_user(
    server: &Server,
    who: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> common::Reply {
    let bearer = format!("Bearer {}", token(who, "user"));
    server
        .send(method, path, body, &[("authorization", &bearer)])
        .await
}

#[tokio::test]
async fn answers_that_depend_on_the_caller_are_never_publicly_cacheable() {
    let server = start().await;
    let note = as_user(
        &server,
        "alice",
        "POST",
        "/notes",
        Some(json!({"title": "mine"})),
    )
    .await
    .expect(201);
    for path in [
        "/notes".to_owned(),
        format!("/notes/{}", id_of(&note["id"])),
    ] {
        let reply = as_user(&server, "alice", "GET", &path, None).await;
        reply.expect(200);
        assert_eq!(
            reply.header("cache-control").as_deref(),
            Some("private, max-age=300"),
            "{path}"
        );
        assert_eq!(
            reply.header("vary").as_deref(),
            Some("Authorization"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_write_the_caller_may_not_read_back_answers_204_without_the_row() {
    let server = start().await;
    let doc = as_user(
        &server,
        "alice",
        "POST",
        "/memos",
        Some(json!({"body": "alice's"})),
    )
    .await
    .expect(201);
    let path = format!("/memos/{}", id_of(&doc["id"]));
    let reply = as_user(&server, "bob", "PATCH", &path, Some(json!({}))).await;
    assert_eq!(reply.status, 204);
    assert!(
        reply.bytes.is_empty(),
        "{}",
        String::from_utf8_lossy(&reply.bytes)
    );
    as_user(&server, "bob", "GET", &path, None)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn a_reference_to_a_row_the_caller_cannot_read_answers_like_a_missing_one() {
    let server = start().await;
    let note = as_user(
        &server,
        "alice",
        "POST",
        "/notes",
        Some(json!({"title": "hidden"})),
    )
    .await
    .expect(201);
    let hidden = as_user(
        &server,
        "bob",
        "POST",
        "/comments",
        Some(json!({"text": "x", "note_id": note["id"]})),
    )
    .await;
    let missing = as_user(
        &server,
        "bob",
        "POST",
        "/comments",
        Some(json!({"text": "x", "note_id": "01a20a4f-7af9-731e-b1c3-be31d25197fd"})),
    )
    .await;
    let a = hidden.expect_problem(409, "foreign_key_violation");
    let b = missing.expect_problem(409, "foreign_key_violation");
    assert_eq!(
        a, b,
        "the two answers must not tell a hidden row from a missing one"
    );
    assert_eq!(server.count_in_database("comments").await, 0);
    as_user(
        &server,
        "alice",
        "POST",
        "/comments",
        Some(json!({"text": "mine", "note_id": note["id"]})),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn hidden_references_cannot_be_reached_through_nested_routes_or_expand() {
    let server = start().await;
    let reviewer = as_user(
        &server,
        "alice",
        "POST",
        "/reviewers",
        Some(json!({"name": "R"})),
    )
    .await
    .expect(201);
    let rid = id_of(&reviewer["id"]);
    as_user(
        &server,
        "alice",
        "POST",
        "/papers",
        Some(json!({"title": "P", "reviewer_id": reviewer["id"]})),
    )
    .await
    .expect(201);
    server
        .get(&format!("/reviewers/{rid}/papers"))
        .await
        .expect_problem(404, "not_found");
    server
        .get("/papers?expand=reviewer")
        .await
        .expect_problem(400, "unknown_expand");
}

#[tokio::test]
async fn expanding_into_an_unreadable_resource_renders_null() {
    let server = start().await;
    let admin = format!("Bearer {}", token("root", "admin"));
    let secret = server
        .send(
            "POST",
            "/secrets",
            Some(json!({"value": "s3cret"})),
            &[("authorization", &admin)],
        )
        .await
        .expect(201);
    server
        .send(
            "POST",
            "/links",
            Some(json!({"label": "l", "secret_id": secret["id"]})),
            &[("authorization", &admin)],
        )
        .await
        .expect(201);
    let page = server.get("/links?expand=secret").await.expect(200);
    assert_eq!(page["items"][0]["secret"], Value::Null);
    assert!(!page.to_string().contains("s3cret"));
}

#[tokio::test]
async fn a_good_api_key_never_launders_a_bad_one() {
    let server = start().await;
    let good = format!("/comments?app_token={APP_TOKEN}");
    server.get(&good).await.expect(200);
    server
        .get(&format!("/comments?app_token=wrong&app_token={APP_TOKEN}"))
        .await
        .expect_problem(401, "unauthorized");
    server
        .get(&format!("/comments?app_token={APP_TOKEN}&app_token=wrong"))
        .await
        .expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn an_offset_beyond_what_a_database_can_take_is_a_400() {
    let server = start().await;
    server
        .get("/comments?offset=18446744073709551615")
        .await
        .expect_problem(400, "malformed_query");
    server
        .get("/comments?offset=9223372036854775807")
        .await
        .expect(200);
}

#[tokio::test]
async fn a_subject_with_trailing_spaces_is_another_subject() {
    let server = start().await;
    let note = as_user(
        &server,
        "alice",
        "POST",
        "/notes",
        Some(json!({"title": "mine"})),
    )
    .await
    .expect(201);
    let path = format!("/notes/{}", id_of(&note["id"]));
    as_user(&server, "alice  ", "GET", &path, None)
        .await
        .expect_problem(404, "not_found");
    let page = as_user(&server, "alice  ", "GET", "/notes?count=true", None)
        .await
        .expect(200);
    assert_eq!(page["total"], 0);
}

#[tokio::test]
async fn rules_that_could_never_work_are_schema_errors() {
    for (schema, needle) in [
        (SCHEMA.replace("fields.title = { type = \"string\", required = true }\nrules = { list = \"owner\"", "fields.title = { type = \"string\", required = true, writable = \"owner\" }\nrules = { list = \"owner\""), "not a field rule"),
        (SCHEMA.replace("fields.body = { type = \"string\", required = true }", "fields.body = { type = \"string\", required = true, writable = false }"), "needs a default"),
        (SCHEMA.replace("algorithms = [\"HS256\"]", "algorithms = [\"HS256\", \"HS384\"], leeway_s = 100000"), "300 seconds"),
    ] {
        assert_ne!(schema, SCHEMA, "the replacement applied");
        let (dir, path) = schema_dir(&schema);
        let out = common::cli(&["check", path.to_str().unwrap()]);
        assert_ne!(out.code, 0, "{schema}");
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
        drop(dir);
    }
}

#[tokio::test]
async fn account_names_and_emails_are_unique_whatever_their_case() {
    let schema = r#"
[app]
name = "acc"

[auth.accounts]
secret_env = "ACCOUNTS_SECRET"
"#;
    let server = Server::start_with_env(schema, &[], &[("ACCOUNTS_SECRET", SECRET)]).await;
    server
        .post(
            "/auth/signup",
            json!({"username": "alice", "email": "alice@example.com", "password": "correct horse"}),
        )
        .await
        .expect(201);
    let problem = server
        .post(
            "/auth/signup",
            json!({"username": "ALICE", "email": "other@example.com", "password": "correct horse"}),
        )
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "username");
    server
        .post(
            "/auth/signup",
            json!({"username": "bob", "email": "Alice@Example.com", "password": "correct horse"}),
        )
        .await
        .expect_problem(409, "unique_violation");
    let login = server
        .post(
            "/auth/login",
            json!({"username": "Alice", "password": "correct horse"}),
        )
        .await
        .expect(200);
    assert_eq!(login["user"]["username"], "alice");
    assert_eq!(server.count_in_database("users").await, 1);
}

#[tokio::test]
async fn signup_and_login_read_names_by_the_rules_of_every_other_write() {
    // A declared username without the template's pattern: only the value
    // rules shared by every write keep a NUL out of it.
    let schema = r#"
[app]
name = "acc"

[auth.accounts]
secret_env = "ACCOUNTS_SECRET"

[resources.users]
fields.username = { type = "string", required = true, unique = true, max_length = 32 }
"#;
    let server = Server::start_with_env(schema, &[], &[("ACCOUNTS_SECRET", SECRET)]).await;
    let problem = server
        .post(
            "/auth/signup",
            json!({"username": "al\u{0}ice", "email": "alice@example.com", "password": "correct horse"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "username", "{problem}");
    assert_eq!(problem["errors"][0]["code"], "type", "{problem}");
    assert_eq!(server.count_in_database("users").await, 0);
    server
        .post(
            "/auth/signup",
            json!({"username": "  Alice ", "email": " Alice@Example.com", "password": "correct horse"}),
        )
        .await
        .expect(201);
    for login in ["ALICE  ", " alice@EXAMPLE.com"] {
        server
            .post(
                "/auth/login",
                json!({"username": login, "password": "correct horse"}),
            )
            .await
            .expect(200);
    }
    // A login no account field can hold names nobody: the usual 401.
    server
        .post(
            "/auth/login",
            json!({"username": "al\u{0}ice", "password": "correct horse"}),
        )
        .await
        .expect_problem(401, "invalid_credentials");
}

// ------------------------------------------------- account writes and tokens

/// Accounts whose owners may edit themselves (username, display name).
const SELF_SERVICE: &str = r#"
[app]
name = "acc"

[auth.accounts]
secret_env = "ACCOUNTS_SECRET"

[resources.users]
fields.display_name = { type = "string", max_length = 100 }
rules = { list = "authenticated", read = "authenticated", create = "none", update = "owner", delete = "role:admin" }
"#;

/// Accounts that only admins may change (roles included).
const ADMINISTERED: &str = r#"
[app]
name = "acc"

[auth.accounts]
secret_env = "ACCOUNTS_SECRET"

[resources.users]
fields.display_name = { type = "string", max_length = 100 }
rules = { list = "authenticated", read = "authenticated", create = "none", update = "role:admin", delete = "role:admin" }
"#;

const PASSWORD: &str = "correct horse battery";

/// Signs `username` up; returns (account id, token).
async fn account(server: &Server, username: &str) -> (String, String) {
    let body = server
        .post(
            "/auth/signup",
            json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD}),
        )
        .await
        .expect(201);
    (
        id_of(&body["user"]["id"]),
        body["token"].as_str().unwrap().to_owned(),
    )
}

async fn login(server: &Server, username: &str, password: &str) -> Reply {
    server
        .post(
            "/auth/login",
            json!({"username": username, "password": password}),
        )
        .await
}

async fn login_token(server: &Server, username: &str) -> String {
    login(server, username, PASSWORD).await.expect(200)["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn as_caller(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> Reply {
    let bearer = format!("Bearer {token}");
    server
        .send(method, path, body, &[("authorization", &bearer)])
        .await
}

/// The one way to make an admin today: straight in the database (issue 12
/// adds a first-admin command).
async fn make_admin(server: &Server, username: &str) {
    server
        .execute(&format!(
            "UPDATE \"users\" SET \"role\" = 'admin' WHERE \"username\" = '{username}'"
        ))
        .await;
}

#[tokio::test]
async fn patch_and_put_store_account_names_lowercased_so_no_case_variant_can_squat() {
    let server = Server::start_with_env(SELF_SERVICE, &[], &[("ACCOUNTS_SECRET", SECRET)]).await;
    account(&server, "alice").await;
    let (bob, bob_token) = account(&server, "bob").await;
    let path = format!("/users/{bob}");
    for method in ["PATCH", "PUT"] {
        let problem = as_caller(
            &server,
            method,
            &path,
            Some(json!({"username": "Alice", "email": "bob@example.com"})),
            &bob_token,
        )
        .await
        .expect_problem(409, "unique_violation");
        assert_eq!(problem["field"], "username", "{method}: {problem}");
        let problem = as_caller(
            &server,
            method,
            &path,
            Some(json!({"username": "bob", "email": "ALICE@example.com"})),
            &bob_token,
        )
        .await
        .expect_problem(409, "unique_violation");
        assert_eq!(problem["field"], "email", "{method}: {problem}");
    }
    let renamed = as_caller(
        &server,
        "PATCH",
        &path,
        Some(json!({"username": " Robert "})),
        &bob_token,
    )
    .await
    .expect(200);
    assert_eq!(renamed["username"], "robert");
    assert_eq!(rows_where_username(&server, "robert").await, 1);
    // Both accounts still log in as themselves, in any case.
    assert_eq!(
        login(&server, "ROBERT", PASSWORD).await.expect(200)["user"]["id"],
        json!(bob)
    );
    assert_eq!(
        login(&server, "Alice", PASSWORD).await.expect(200)["user"]["username"],
        "alice"
    );
    // Filters compare the normalised value too.
    let found = as_caller(&server, "GET", "/users?username=Robert", None, &bob_token)
        .await
        .expect(200);
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
}

async fn rows_where_username(server: &Server, username: &str) -> i64 {
    server
        .query_i64(&format!(
            "SELECT COUNT(*) FROM \"users\" WHERE \"username\" = '{username}'"
        ))
        .await
}

#[tokio::test]
async fn a_demoted_admins_token_can_no_longer_do_what_only_admins_may() {
    let server = Server::start_with_env(ADMINISTERED, &[], &[("ACCOUNTS_SECRET", SECRET)]).await;
    account(&server, "root").await;
    let (boss, _) = account(&server, "boss").await;
    let (victim, _) = account(&server, "victim").await;
    make_admin(&server, "root").await;
    make_admin(&server, "boss").await;
    let root = login_token(&server, "root").await;
    let boss_token = login_token(&server, "boss").await;
    // A change that is not a role keeps tokens valid.
    as_caller(
        &server,
        "PATCH",
        &format!("/users/{boss}"),
        Some(json!({"display_name": "B"})),
        &root,
    )
    .await
    .expect(200);
    as_caller(&server, "GET", "/auth/me", None, &boss_token)
        .await
        .expect(200);
    // The demotion revokes the old token.
    as_caller(
        &server,
        "PATCH",
        &format!("/users/{boss}"),
        Some(json!({"role": "user"})),
        &root,
    )
    .await
    .expect(200);
    let refused = as_caller(
        &server,
        "DELETE",
        &format!("/users/{victim}"),
        None,
        &boss_token,
    )
    .await;
    let problem = refused.expect_problem(401, "unauthorized");
    assert!(
        problem["detail"].as_str().unwrap().contains("revoked"),
        "{problem}"
    );
    assert_eq!(server.count_in_database("users").await, 3);
    // Logged in again, the boss is a user.
    let demoted = login_token(&server, "boss").await;
    as_caller(
        &server,
        "DELETE",
        &format!("/users/{victim}"),
        None,
        &demoted,
    )
    .await
    .expect_problem(403, "forbidden");
    // The admin's own token was never touched.
    as_caller(&server, "GET", "/auth/me", None, &root)
        .await
        .expect(200);
}

#[tokio::test]
async fn a_deleted_accounts_token_no_longer_authenticates() {
    let server = Server::start_with_env(ADMINISTERED, &[], &[("ACCOUNTS_SECRET", SECRET)]).await;
    account(&server, "root").await;
    let (gone, gone_token) = account(&server, "gone").await;
    make_admin(&server, "root").await;
    let root = login_token(&server, "root").await;
    as_caller(&server, "DELETE", &format!("/users/{gone}"), None, &root)
        .await
        .expect(204);
    for path in ["/auth/me", "/users"] {
        as_caller(&server, "GET", path, None, &gone_token)
            .await
            .expect_problem(401, "unauthorized");
    }
}

#[tokio::test]
async fn logout_all_revokes_every_token_of_the_account_and_only_of_that_account() {
    let server = Server::start_with_env(SELF_SERVICE, &[], &[("ACCOUNTS_SECRET", SECRET)]).await;
    let (_, first) = account(&server, "ann").await;
    let (_, other) = account(&server, "ben").await;
    let second = login_token(&server, "ann").await;
    as_caller(&server, "POST", "/auth/logout-all", None, &second)
        .await
        .expect(204);
    for token in [&first, &second] {
        as_caller(&server, "GET", "/auth/me", None, token)
            .await
            .expect_problem(401, "unauthorized");
    }
    as_caller(&server, "GET", "/auth/me", None, &other)
        .await
        .expect(200);
    let third = login_token(&server, "ann").await;
    as_caller(&server, "GET", "/auth/me", None, &third)
        .await
        .expect(200);
    server
        .post("/auth/logout-all", json!({}))
        .await
        .expect_problem(401, "unauthorized");
    server
        .send("GET", "/auth/logout-all", None, &[])
        .await
        .expect_problem(405, "method_not_allowed");
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_revokes_old_tokens_and_returns_a_new_one() {
    let server = Server::start_with_env(SELF_SERVICE, &[], &[("ACCOUNTS_SECRET", SECRET)]).await;
    let (_, old) = account(&server, "cat").await;
    let new_password = "a brand new passphrase";
    as_caller(
        &server,
        "POST",
        "/auth/password",
        Some(json!({"password": "wrong guess!", "new_password": new_password})),
        &old,
    )
    .await
    .expect_problem(403, "forbidden");
    let problem = as_caller(
        &server,
        "POST",
        "/auth/password",
        Some(json!({"password": PASSWORD, "new_password": "short"})),
        &old,
    )
    .await
    .expect_problem(422, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "new_password");
    as_caller(&server, "GET", "/auth/me", None, &old)
        .await
        .expect(200);
    let changed = as_caller(
        &server,
        "POST",
        "/auth/password",
        Some(json!({"password": PASSWORD, "new_password": new_password})),
        &old,
    )
    .await
    .expect(200);
    let fresh = changed["token"].as_str().unwrap();
    assert!(changed["user"].get("password_hash").is_none(), "{changed}");
    as_caller(&server, "GET", "/auth/me", None, &old)
        .await
        .expect_problem(401, "unauthorized");
    as_caller(&server, "GET", "/auth/me", None, fresh)
        .await
        .expect(200);
    login(&server, "cat", PASSWORD)
        .await
        .expect_problem(401, "invalid_credentials");
    login(&server, "cat", new_password).await.expect(200);
}
