//! The three authentication examples served by the real binary, exactly as
//! their READMEs run them: `examples/accounts` (built-in signup and login with
//! JSON or HTTP Basic, `last_login_at`, argon2id hashes that never leave the
//! server), `examples/records` (audit subjects taken from the JWT `sub`) and
//! `examples/courses` (RS256 pinned to one key, public cacheable reads,
//! author-only writes, a free-form `json` field). Tokens for the external
//! issuers are signed here with `jsonwebtoken`; the courses key pair is the
//! `rsa_*.pem` test fixture.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Reply, Server, cli_env, cli_stdin, fixture, id_of, repo_root};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The accounts signing secret (32+ bytes, as the engine requires).
const ACCOUNTS_SECRET: &str = "accounts-e2e-secret-0123456789abcdefghijklmnop";
/// The records HS256 secret (32+ bytes).
const RECORDS_SECRET: &str = "records-e2e-secret-0123456789abcdefghijklmnopq";
/// A password distinctive enough to be searched for in bodies and logs.
const PASSWORD: &str = "Correct-Horse-Battery-Staple-7731";
const OTHER_PASSWORD: &str = "Tr0ub4dor&3-Plainly-Distinct-4412";

fn example(name: &str) -> String {
    std::fs::read_to_string(
        repo_root()
            .join("examples")
            .join(name)
            .join("anteroom.toml"),
    )
    .expect("example schema")
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("seconds fit i64")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// GET with a bearer token.
async fn get_as(server: &Server, path: &str, token: &str) -> Reply {
    server
        .send("GET", path, None, &[("authorization", &bearer(token))])
        .await
}

/// A request with a JSON body and a bearer token.
async fn send_as(server: &Server, method: &str, path: &str, body: Value, token: &str) -> Reply {
    server
        .send(
            method,
            path,
            Some(body),
            &[("authorization", &bearer(token))],
        )
        .await
}

/// DELETE with a bearer token.
async fn delete_as(server: &Server, path: &str, token: &str) -> Reply {
    server
        .send("DELETE", path, None, &[("authorization", &bearer(token))])
        .await
}

/// The response's headers except those that differ per response by nature.
fn stable_headers(reply: &Reply) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| !["date", "x-request-id"].contains(&name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().expect("text header").to_owned(),
            )
        })
        .collect();
    headers.sort();
    headers
}

/// The field names of a 422's `errors`, with their codes.
fn field_errors(problem: &Value) -> Vec<(String, String)> {
    let mut errors: Vec<(String, String)> = problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {problem}"))
        .iter()
        .map(|e| {
            (
                e["field"].as_str().expect("field").to_owned(),
                e["code"].as_str().expect("code").to_owned(),
            )
        })
        .collect();
    errors.sort();
    errors
}

/// The fields a 422 names.
fn fields_named(problem: &Value) -> Vec<String> {
    let mut fields: Vec<String> = field_errors(problem).into_iter().map(|(f, _)| f).collect();
    fields.dedup();
    fields
}

/// A timestamp as the engine renders it (RFC 3339, UTC, microseconds), which
/// therefore orders correctly as text.
#[track_caller]
fn timestamp(value: &Value) -> String {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
        .to_owned();
    assert!(
        text.len() == "2024-01-01T00:00:00.000000Z".len() && text.ends_with('Z'),
        "not an RFC 3339 UTC timestamp with microseconds: {text}"
    );
    text
}

// ---------------------------------------------------------------- accounts

async fn accounts() -> Server {
    Server::start_with_env(
        &example("accounts"),
        &[],
        &[("ACCOUNTS_SECRET", ACCOUNTS_SECRET)],
    )
    .await
}

/// Signs up and returns the 201 body.
async fn signup(server: &Server, username: &str, email: &str, password: &str) -> Value {
    server
        .post(
            "/auth/signup",
            json!({"username": username, "email": email, "password": password}),
        )
        .await
        .expect(201)
}

/// `GET /auth/login` with HTTP Basic credentials.
async fn basic_login(server: &Server, user: &str, password: &str) -> Reply {
    let response = server
        .client
        .get(format!("{}/auth/login", server.base))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("request");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        bytes: response.bytes().await.expect("body").to_vec(),
    }
}

/// `POST /auth/login` with a JSON body.
async fn json_login(server: &Server, body: Value) -> Reply {
    server.post("/auth/login", body).await
}

/// Asserts the 200 login body and returns it.
#[track_caller]
fn logged_in(reply: &Reply) -> Value {
    let body = reply.expect(200);
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["expires_in"], 3600);
    assert!(body["user"].is_object(), "{body}");
    body
}

/// Asserts the one answer every failed login gets.
#[track_caller]
fn refused_login(reply: &Reply) {
    reply.expect_problem(401, "invalid_credentials");
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some("Basic realm=\"anteroom\", charset=\"UTF-8\"")
    );
}

/// `anteroom accounts create` against `server`'s schema and database.
fn create_account(
    server: &Server,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> common::CliOutput {
    let schema = server.schema_path();
    let mut all = vec![
        "accounts",
        "create",
        schema.to_str().unwrap(),
        "--database-url",
        &server.database_url,
    ];
    all.extend_from_slice(args);
    let mut env = env.to_vec();
    env.push(("ACCOUNTS_SECRET", ACCOUNTS_SECRET));
    match stdin {
        Some(input) => cli_stdin(&all, &env, input),
        None => cli_env(&all, &env),
    }
}

#[tokio::test]
async fn the_first_admin_is_created_from_the_command_line_and_can_log_in_and_administer() {
    let server = accounts().await;
    let member = signup(&server, "member", "member@example.com", OTHER_PASSWORD).await;
    let created = create_account(
        &server,
        &[
            "--username",
            "Root",
            "--email",
            "root@example.com",
            "--role",
            "admin",
        ],
        &[("ANTEROOM_PASSWORD", PASSWORD)],
        None,
    );
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created
            .stdout
            .starts_with("created account root (role admin, id "),
        "{}",
        created.stdout
    );
    let admin = logged_in(&basic_login(&server, "root", PASSWORD).await);
    assert_eq!(admin["user"]["role"], "admin");
    let token = admin["token"].as_str().unwrap();
    delete_as(
        &server,
        &format!("/users/{}", member["user"]["id"].as_str().unwrap()),
        token,
    )
    .await
    .expect(204);
    // The password may come on standard input instead, never as a flag.
    let piped = create_account(
        &server,
        &["--username", "second", "--email", "second@example.com"],
        &[],
        Some(&format!("{OTHER_PASSWORD}\n")),
    );
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(piped.stdout.contains("(role user,"), "{}", piped.stdout);
    logged_in(&basic_login(&server, "second", OTHER_PASSWORD).await);
    // What signup refuses, this refuses too, and writes nothing.
    for (args, password, says) in [
        (
            ["--username", "third", "--email", "third@example.com"],
            "short",
            "password must be 8 to 128 characters long",
        ),
        (
            ["--username", "root", "--email", "other@example.com"],
            PASSWORD,
            "username",
        ),
        (
            ["--username", "x", "--email", "not-an-email"],
            PASSWORD,
            "email",
        ),
    ] {
        let refused = create_account(&server, &args, &[("ANTEROOM_PASSWORD", password)], None);
        assert_eq!(refused.code, 2, "{}", refused.stderr);
        assert!(refused.stderr.contains(says), "{says}: {}", refused.stderr);
    }
    let empty = create_account(
        &server,
        &["--username", "fourth", "--email", "fourth@example.com"],
        &[],
        Some(""),
    );
    assert_eq!(empty.code, 2);
    assert!(
        empty.stderr.contains("standard input held no password"),
        "{}",
        empty.stderr
    );
    assert_eq!(server.count_in_database("users").await, 2);
}

#[tokio::test]
async fn seeded_accounts_get_their_password_hashed_and_can_log_in() {
    let server = accounts().await;
    let schema = server.schema_path();
    let seed = server.dir.path().join("seed.json");
    let run = |rows: Value| {
        std::fs::write(&seed, json!({"users": rows}).to_string()).unwrap();
        cli_env(
            &[
                "seed",
                schema.to_str().unwrap(),
                seed.to_str().unwrap(),
                "--database-url",
                &server.database_url,
            ],
            &[("ACCOUNTS_SECRET", ACCOUNTS_SECRET)],
        )
    };
    let hashed =
        run(json!([{"username": "x", "email": "x@example.com", "password_hash": "$argon2id$…"}]));
    assert_ne!(hashed.code, 0);
    assert!(
        hashed
            .stderr
            .contains("users[0].password_hash: give \"password\" instead"),
        "{}",
        hashed.stderr
    );
    let seeded = run(json!([
        {"username": "boss", "email": "boss@example.com", "role": "admin", "password": PASSWORD}
    ]));
    assert_eq!(seeded.code, 0, "{}", seeded.stderr);
    let boss = logged_in(&basic_login(&server, "boss", PASSWORD).await);
    assert_eq!(boss["user"]["role"], "admin");
    assert!(!boss.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn signup_returns_a_bearer_token_the_account_and_its_location() {
    let server = accounts().await;
    let reply = server
        .post(
            "/auth/signup",
            json!({"username": "ada", "email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    let body = reply.expect(201);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["token"].as_str().is_some_and(|t| t.len() > 20));
    let user = &body["user"];
    let id = id_of(&user["id"]);
    assert_eq!(
        reply.header("location").as_deref(),
        Some(format!("/users/{id}").as_str())
    );
    assert_eq!(user["username"], "ada");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["role"], "user");
    assert_eq!(user.get("last_login_at"), Some(&Value::Null), "{user}");
    assert!(user.get("password_hash").is_none(), "{user}");
    assert!(user.get("password").is_none(), "{user}");
    // The token works at once and names this account.
    let me = get_as(&server, "/auth/me", body["token"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["username"], "ada");
    assert_eq!(server.count_in_database("users").await, 1);
}

#[tokio::test]
async fn signup_lists_every_missing_or_invalid_field_and_writes_nothing() {
    let server = accounts().await;

    let empty = server.post("/auth/signup", json!({})).await;
    let problem = empty.expect_problem(422, "validation_failed");
    assert_eq!(
        field_errors(&problem),
        [
            ("email".to_owned(), "required".to_owned()),
            ("password".to_owned(), "required".to_owned()),
            ("username".to_owned(), "required".to_owned()),
        ]
    );

    let wrong_types = server
        .post(
            "/auth/signup",
            json!({"username": 42, "email": ["a@example.com"], "password": null}),
        )
        .await;
    let problem = wrong_types.expect_problem(422, "validation_failed");
    assert_eq!(fields_named(&problem), ["email", "password", "username"]);

    let invalid = server
        .post(
            "/auth/signup",
            json!({"username": "no spaces allowed", "email": "not-an-email", "password": "short"}),
        )
        .await;
    let problem = invalid.expect_problem(422, "validation_failed");
    assert_eq!(fields_named(&problem), ["email", "password", "username"]);
    let detail = problem["detail"].as_str().unwrap();
    for field in ["username", "email", "password"] {
        assert!(
            detail.contains(field),
            "detail should name {field}: {detail}"
        );
    }

    let too_short_name = server
        .post(
            "/auth/signup",
            json!({"username": "ab", "email": "ab@example.com", "password": PASSWORD}),
        )
        .await;
    let problem = too_short_name.expect_problem(422, "validation_failed");
    assert_eq!(fields_named(&problem), ["username"]);

    let too_long = "x".repeat(129);
    for password in ["1234567", "", too_long.as_str()] {
        let reply = server
            .post(
                "/auth/signup",
                json!({"username": "bob", "email": "bob@example.com", "password": password}),
            )
            .await;
        let problem = reply.expect_problem(422, "validation_failed");
        assert_eq!(
            field_errors(&problem),
            [("password".to_owned(), "min_length".to_owned())],
            "password of {} characters",
            password.len()
        );
    }

    let unknown = server
        .post(
            "/auth/signup",
            json!({
                "username": "carol",
                "email": "carol@example.com",
                "password": PASSWORD,
                "role": "admin",
            }),
        )
        .await;
    let problem = unknown.expect_problem(422, "validation_failed");
    assert_eq!(
        field_errors(&problem),
        [("role".to_owned(), "unknown_field".to_owned())]
    );

    let not_an_object = server
        .post(
            "/auth/signup",
            json!(["dave", "dave@example.com", PASSWORD]),
        )
        .await;
    assert_eq!(not_an_object.status, 400, "{not_an_object:?}");

    assert_eq!(server.count_in_database("users").await, 0);

    // Exactly at the limits is accepted.
    signup(&server, "bob", "bob@example.com", "12345678").await;
    signup(&server, "eve", "eve@example.com", &"y".repeat(128)).await;
    assert_eq!(server.count_in_database("users").await, 2);
}

#[tokio::test]
async fn signup_refuses_a_duplicate_username_or_email_with_409_naming_the_field() {
    let server = accounts().await;
    signup(&server, "ada", "ada@example.com", PASSWORD).await;

    let same_name = server
        .post(
            "/auth/signup",
            json!({"username": "ada", "email": "other@example.com", "password": OTHER_PASSWORD}),
        )
        .await;
    let problem = same_name.expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "username", "{problem}");

    let same_email = server
        .post(
            "/auth/signup",
            json!({"username": "other", "email": "ada@example.com", "password": OTHER_PASSWORD}),
        )
        .await;
    let problem = same_email.expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "email", "{problem}");

    assert_eq!(server.count_in_database("users").await, 1);
    // The original account is untouched: its password still works, the other does not.
    logged_in(&json_login(&server, json!({"username": "ada", "password": PASSWORD})).await);
    refused_login(
        &json_login(
            &server,
            json!({"username": "ada", "password": OTHER_PASSWORD}),
        )
        .await,
    );
    // Neither refused signup left a usable account behind.
    refused_login(
        &json_login(
            &server,
            json!({"username": "other", "password": OTHER_PASSWORD}),
        )
        .await,
    );
}

#[tokio::test]
async fn login_with_json_by_username_or_email_and_with_basic_returns_a_working_token() {
    let server = accounts().await;
    let created = signup(&server, "ada", "ada@example.com", PASSWORD).await;
    let id = created["user"]["id"].clone();

    let by_username =
        logged_in(&json_login(&server, json!({"username": "ada", "password": PASSWORD})).await);
    let by_email = logged_in(
        &json_login(
            &server,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await,
    );
    let by_basic = logged_in(&basic_login(&server, "ada", PASSWORD).await);
    let by_basic_email = logged_in(&basic_login(&server, "ada@example.com", PASSWORD).await);

    for body in [&by_username, &by_email, &by_basic, &by_basic_email] {
        assert_eq!(body["user"]["id"], id, "{body}");
        assert_eq!(body["user"]["username"], "ada");
        assert!(body["user"].get("password_hash").is_none(), "{body}");
        let me = get_as(&server, "/auth/me", body["token"].as_str().unwrap())
            .await
            .expect(200);
        assert_eq!(me["id"], id);
        assert_eq!(me["email"], "ada@example.com");
        assert!(me.get("password_hash").is_none(), "{me}");
    }

    // A login without a password is not a login.
    let missing = json_login(&server, json!({"username": "ada"})).await;
    let problem = missing.expect_problem(422, "validation_failed");
    assert_eq!(fields_named(&problem), ["password"]);
    // No credentials at all on GET is the same 401 as wrong ones.
    refused_login(&server.get("/auth/login").await);
}

#[tokio::test]
async fn last_login_at_is_null_after_signup_and_moves_forward_on_every_login() {
    let server = accounts().await;
    let created = signup(&server, "ada", "ada@example.com", PASSWORD).await;
    let token = created["token"].as_str().unwrap().to_owned();
    let created_at = timestamp(&created["user"]["created_at"]);
    assert_eq!(created["user"].get("last_login_at"), Some(&Value::Null));
    let me = get_as(&server, "/auth/me", &token).await.expect(200);
    assert_eq!(me.get("last_login_at"), Some(&Value::Null), "{me}");

    let mut previous = created_at;
    for how in ["json username", "json email", "basic"] {
        let reply = match how {
            "json username" => {
                json_login(&server, json!({"username": "ada", "password": PASSWORD})).await
            }
            "json email" => {
                json_login(
                    &server,
                    json!({"email": "ada@example.com", "password": PASSWORD}),
                )
                .await
            }
            _ => basic_login(&server, "ada", PASSWORD).await,
        };
        let body = logged_in(&reply);
        let at = timestamp(&body["user"]["last_login_at"]);
        assert!(
            at > previous,
            "{how}: last_login_at {at} is not after {previous}"
        );
        // The stored value is the one the login answered with.
        let me = get_as(&server, "/auth/me", body["token"].as_str().unwrap())
            .await
            .expect(200);
        assert_eq!(timestamp(&me["last_login_at"]), at, "{how}");
        let listed = get_as(&server, "/users", &token).await.expect(200);
        assert_eq!(timestamp(&listed["items"][0]["last_login_at"]), at, "{how}");
        previous = at;
    }

    // A failed login does not move it.
    refused_login(
        &json_login(
            &server,
            json!({"username": "ada", "password": OTHER_PASSWORD}),
        )
        .await,
    );
    refused_login(&basic_login(&server, "ada", OTHER_PASSWORD).await);
    let me = get_as(&server, "/auth/me", &token).await.expect(200);
    assert_eq!(timestamp(&me["last_login_at"]), previous);
}

#[tokio::test]
async fn auth_me_answers_401_without_a_valid_token() {
    let server = accounts().await;
    let ada = signup(&server, "ada", "ada@example.com", PASSWORD).await;
    let bob = signup(&server, "bob", "bob@example.com", OTHER_PASSWORD).await;
    let token = ada["token"].as_str().unwrap();

    let anonymous = server.get("/auth/me").await;
    anonymous.expect_problem(401, "unauthorized");
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{anonymous:?}"
    );

    // Ada's signature on a payload naming Bob.
    let forged_claims = json!({
        "sub": id_of(&bob["user"]["id"]),
        "role": "admin",
        "iss": "anteroom",
        "iat": now(),
        "exp": now() + 3600,
    });
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("anteroom-accounts".to_owned());
    let wrong_key = jsonwebtoken::encode(
        &header,
        &forged_claims,
        &EncodingKey::from_secret(b"not-the-accounts-secret-but-long-enough-0123"),
    )
    .unwrap();
    let genuine_signature = token.rsplit('.').next().unwrap();
    let (forged_head_and_body, _) = wrong_key.rsplit_once('.').unwrap();
    let tampered = format!("{forged_head_and_body}.{genuine_signature}");
    // Ada's own token with one signature character changed.
    let mut flipped = token.to_owned();
    let position = flipped.len() - 5;
    let replacement = if &flipped[position..=position] == "A" {
        "B"
    } else {
        "A"
    };
    flipped.replace_range(position..=position, replacement);
    let unsigned = format!("{forged_head_and_body}.");

    for (what, authorization) in [
        ("payload swapped", bearer(&tampered)),
        ("signed with another secret", bearer(&wrong_key)),
        ("signature altered", bearer(&flipped)),
        ("signature removed", bearer(&unsigned)),
        ("not a JWT", bearer("not.a.token")),
        ("empty bearer", "Bearer ".to_owned()),
        (
            "basic instead of bearer",
            "Basic YWRhOnNlY3JldA==".to_owned(),
        ),
        ("token without a scheme", token.to_owned()),
    ] {
        let reply = server
            .send(
                "GET",
                "/auth/me",
                None,
                &[("authorization", &authorization)],
            )
            .await;
        reply.expect_problem(401, "unauthorized");
        assert!(
            reply.header("www-authenticate").is_some(),
            "{what}: {reply:?}"
        );
        let body = String::from_utf8_lossy(&reply.bytes);
        assert!(!body.contains("bob@example.com"), "{what}: {body}");
    }

    // The genuine token still works and is still Ada.
    let me = get_as(&server, "/auth/me", token).await.expect(200);
    assert_eq!(me["username"], "ada");
}

#[tokio::test]
async fn a_failed_login_answers_the_same_for_an_unknown_user_and_a_wrong_password() {
    let server = accounts().await;
    signup(&server, "ada", "ada@example.com", PASSWORD).await;

    let attempts = [
        (
            "json, wrong password",
            json_login(
                &server,
                json!({"username": "ada", "password": OTHER_PASSWORD}),
            )
            .await,
        ),
        (
            "json, unknown user",
            json_login(
                &server,
                json!({"username": "nobody", "password": OTHER_PASSWORD}),
            )
            .await,
        ),
        (
            "json, wrong password by email",
            json_login(
                &server,
                json!({"email": "ada@example.com", "password": OTHER_PASSWORD}),
            )
            .await,
        ),
        (
            "json, unknown email",
            json_login(
                &server,
                json!({"email": "nobody@example.com", "password": OTHER_PASSWORD}),
            )
            .await,
        ),
        (
            "basic, wrong password",
            basic_login(&server, "ada", OTHER_PASSWORD).await,
        ),
        (
            "basic, unknown user",
            basic_login(&server, "nobody", OTHER_PASSWORD).await,
        ),
        (
            "basic, right password with a different case",
            basic_login(&server, "ada", &PASSWORD.to_lowercase()).await,
        ),
    ];
    let (_, reference) = &attempts[0];
    refused_login(reference);
    for (what, reply) in &attempts {
        refused_login(reply);
        assert_eq!(reply.status, reference.status, "{what}");
        assert_eq!(
            String::from_utf8_lossy(&reply.bytes),
            String::from_utf8_lossy(&reference.bytes),
            "{what}: body differs"
        );
        assert_eq!(
            stable_headers(reply),
            stable_headers(reference),
            "{what}: headers differ"
        );
    }
}

#[tokio::test]
async fn the_password_and_its_hash_never_appear_in_a_response_or_the_log() {
    let server = accounts().await;
    let mut replies: Vec<(&str, Reply)> = Vec::new();

    let created = server
        .post(
            "/auth/signup",
            json!({"username": "ada", "email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    let ada = created.expect(201);
    replies.push(("signup", created));
    let token = ada["token"].as_str().unwrap().to_owned();
    let id = id_of(&ada["user"]["id"]);
    let bob = signup(&server, "bob", "bob@example.com", OTHER_PASSWORD).await;
    let bob_id = id_of(&bob["user"]["id"]);

    replies.push((
        "duplicate signup",
        server
            .post(
                "/auth/signup",
                json!({"username": "ada", "email": "x@example.com", "password": PASSWORD}),
            )
            .await,
    ));
    replies.push((
        "invalid signup",
        server
            .post(
                "/auth/signup",
                json!({"username": "x y", "email": "x@example.com", "password": PASSWORD, "extra": PASSWORD}),
            )
            .await,
    ));
    replies.push((
        "json login",
        json_login(&server, json!({"username": "ada", "password": PASSWORD})).await,
    ));
    replies.push(("basic login", basic_login(&server, "ada", PASSWORD).await));
    replies.push((
        "failed login",
        json_login(&server, json!({"username": "bob", "password": PASSWORD})).await,
    ));
    replies.push((
        "failed basic login",
        basic_login(&server, "bob", PASSWORD).await,
    ));
    replies.push(("me", get_as(&server, "/auth/me", &token).await));
    replies.push(("list", get_as(&server, "/users", &token).await));
    replies.push((
        "list with count",
        get_as(&server, "/users?count=true&sort=-username", &token).await,
    ));
    replies.push((
        "read",
        get_as(&server, &format!("/users/{id}"), &token).await,
    ));
    replies.push((
        "read another",
        get_as(&server, &format!("/users/{bob_id}"), &token).await,
    ));
    replies.push((
        "update",
        send_as(
            &server,
            "PATCH",
            &format!("/users/{id}"),
            json!({"display_name": "Ada L."}),
            &token,
        )
        .await,
    ));
    replies.push((
        "update of the hash",
        send_as(
            &server,
            "PATCH",
            &format!("/users/{id}"),
            json!({"password_hash": PASSWORD}),
            &token,
        )
        .await,
    ));

    for (what, reply) in &replies {
        let body = String::from_utf8_lossy(&reply.bytes);
        assert!(reply.status < 500, "{what}: {body}");
        assert!(!body.contains("argon2"), "{what} leaks a hash: {body}");
        assert!(
            !body.contains(PASSWORD),
            "{what} echoes the password: {body}"
        );
        assert!(
            !body.contains(OTHER_PASSWORD),
            "{what} echoes a password: {body}"
        );
        assert!(
            !body.contains("\"password_hash\":"),
            "{what} renders the hash field: {body}"
        );
    }
    let listed = get_as(&server, "/users", &token).await.expect(200);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for user in items {
        assert!(user.get("password_hash").is_none(), "{user}");
        assert!(user.get("last_login_at").is_some(), "{user}");
    }

    // The hash cannot be selected, filtered or sorted on (a filter would be an oracle).
    for query in [
        "fields=id,password_hash",
        "password_hash=x",
        "password_hash[like]=%24argon2%25",
        "sort=password_hash",
    ] {
        let reply = get_as(&server, &format!("/users?{query}"), &token).await;
        reply.expect_problem(400, "unknown_field");
        let body = String::from_utf8_lossy(&reply.bytes);
        assert!(!body.contains("argon2"), "{query}: {body}");
    }

    let log = server.log_text();
    assert!(!log.is_empty());
    for secret in [
        PASSWORD,
        OTHER_PASSWORD,
        "$argon2",
        "argon2id$",
        token.as_str(),
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}

#[tokio::test]
async fn users_cannot_set_their_role_hash_or_last_login_and_cannot_touch_another_user() {
    let server = accounts().await;
    let ada = signup(&server, "ada", "ada@example.com", PASSWORD).await;
    let bob = signup(&server, "bob", "bob@example.com", OTHER_PASSWORD).await;
    let token = ada["token"].as_str().unwrap().to_owned();
    let id = id_of(&ada["user"]["id"]);
    let bob_id = id_of(&bob["user"]["id"]);
    let own = format!("/users/{id}");

    for (field, value) in [
        ("role", json!("admin")),
        (
            "password_hash",
            json!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        ),
        ("last_login_at", json!("2030-01-01T00:00:00Z")),
        ("created_by", json!(bob_id)),
    ] {
        let reply = send_as(&server, "PATCH", &own, json!({ field: value }), &token).await;
        let problem = reply.expect_problem(422, "validation_failed");
        assert_eq!(
            field_errors(&problem),
            [(field.to_owned(), "read_only".to_owned())],
            "PATCH {field}"
        );
    }
    let all_at_once = send_as(
        &server,
        "PATCH",
        &own,
        json!({"role": "admin", "password_hash": "x", "last_login_at": null, "display_name": "Ada"}),
        &token,
    )
    .await;
    let problem = all_at_once.expect_problem(422, "validation_failed");
    assert_eq!(
        fields_named(&problem),
        ["last_login_at", "password_hash", "role"]
    );
    let put = send_as(
        &server,
        "PUT",
        &own,
        json!({"username": "ada", "email": "ada@example.com", "role": "admin"}),
        &token,
    )
    .await;
    let problem = put.expect_problem(422, "validation_failed");
    assert!(
        field_errors(&problem).contains(&("role".to_owned(), "read_only".to_owned())),
        "PUT with a role: {problem}"
    );

    // Nothing changed: still a user, the same password still logs in.
    let me = get_as(&server, "/auth/me", &token).await.expect(200);
    assert_eq!(me["role"], "user");
    assert_eq!(me.get("display_name"), Some(&Value::Null), "{me}");
    assert_eq!(me.get("last_login_at"), Some(&Value::Null), "{me}");
    let relogin =
        logged_in(&json_login(&server, json!({"username": "ada", "password": PASSWORD})).await);
    assert_eq!(relogin["user"]["role"], "user");

    // Writable fields of one's own row are fine.
    let updated = send_as(
        &server,
        "PATCH",
        &own,
        json!({"display_name": "Ada Lovelace"}),
        &token,
    )
    .await
    .expect(200);
    assert_eq!(updated["display_name"], "Ada Lovelace");
    assert_eq!(updated["role"], "user");

    // Another user's row answers like a missing one, and is not changed.
    let other = format!("/users/{bob_id}");
    send_as(
        &server,
        "PATCH",
        &other,
        json!({"display_name": "hacked"}),
        &token,
    )
    .await
    .expect_problem(404, "not_found");
    let bob_me = get_as(&server, "/auth/me", bob["token"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(bob_me.get("display_name"), Some(&Value::Null), "{bob_me}");

    // Deleting needs the admin role; creating rows bypassing signup is never allowed.
    delete_as(&server, &other, &token)
        .await
        .expect_problem(403, "forbidden");
    send_as(
        &server,
        "POST",
        "/users",
        json!({"username": "mallory", "email": "m@example.com"}),
        &token,
    )
    .await
    .expect_problem(403, "forbidden");
    assert_eq!(server.count_in_database("users").await, 2);
}

#[tokio::test]
async fn listing_or_reading_users_needs_authentication() {
    let server = accounts().await;
    let ada = signup(&server, "ada", "ada@example.com", PASSWORD).await;
    let bob = signup(&server, "bob", "bob@example.com", OTHER_PASSWORD).await;
    let id = id_of(&ada["user"]["id"]);

    let anonymous_list = server.get("/users").await;
    anonymous_list.expect_problem(401, "unauthorized");
    assert!(!String::from_utf8_lossy(&anonymous_list.bytes).contains("ada"));
    server
        .get(&format!("/users/{id}"))
        .await
        .expect_problem(401, "unauthorized");
    server
        .get("/users?count=true")
        .await
        .expect_problem(401, "unauthorized");

    let listed = get_as(&server, "/users?count=true", bob["token"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(listed["total"], 2);
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"ada") && names.contains(&"bob"),
        "{names:?}"
    );
    let one = get_as(
        &server,
        &format!("/users/{id}"),
        bob["token"].as_str().unwrap(),
    )
    .await
    .expect(200);
    assert_eq!(one["username"], "ada");
    assert!(one.get("password_hash").is_none(), "{one}");
}

// ----------------------------------------------------------------- records

async fn records() -> Server {
    Server::start_with_env(
        &example("records"),
        &[],
        &[("RECORDS_JWT_SECRET", RECORDS_SECRET)],
    )
    .await
}

/// An HS256 token from the records issuer.
fn records_token(subject: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": subject, "iss": "records-demo", "iat": now(), "exp": now() + 600}),
        &EncodingKey::from_secret(RECORDS_SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn records_take_created_by_and_updated_by_from_the_token_subject() {
    let server = records().await;
    let alice = records_token("alice");
    let bob = records_token("bob");

    let reply = send_as(
        &server,
        "POST",
        "/records",
        json!({"title": "first", "payload": {"any": ["json", 1, true]}}),
        &alice,
    )
    .await;
    let created = reply.expect(201);
    assert_eq!(created["created_by"], "alice");
    assert_eq!(created["updated_by"], "alice");
    assert_eq!(created["payload"], json!({"any": ["json", 1, true]}));
    let path = format!("/records/{}", id_of(&created["id"]));
    assert_eq!(reply.header("location").as_deref(), Some(path.as_str()));

    let updated = send_as(&server, "PATCH", &path, json!({"title": "second"}), &bob)
        .await
        .expect(200);
    assert_eq!(updated["title"], "second");
    assert_eq!(updated["created_by"], "alice");
    assert_eq!(updated["updated_by"], "bob");

    let read = get_as(&server, &path, &alice).await.expect(200);
    assert_eq!(read["created_by"], "alice");
    assert_eq!(read["updated_by"], "bob");

    // A full replacement by Carol keeps the creator and records Carol.
    let carol = records_token("carol");
    let replaced = send_as(
        &server,
        "PUT",
        &path,
        json!({"title": "third", "payload": null}),
        &carol,
    )
    .await;
    let replaced = replaced.expect(200);
    assert_eq!(replaced["title"], "third");
    assert_eq!(replaced["payload"], Value::Null);
    assert_eq!(replaced["created_by"], "alice");
    assert_eq!(replaced["updated_by"], "carol");
    let read = get_as(&server, &path, &bob).await.expect(200);
    assert_eq!(read["created_by"], "alice");

    // Anonymous callers and other issuers get nothing.
    server
        .get("/records")
        .await
        .expect_problem(401, "unauthorized");
    let foreign = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "iss": "someone-else", "exp": now() + 600}),
        &EncodingKey::from_secret(RECORDS_SECRET.as_bytes()),
    )
    .unwrap();
    get_as(&server, "/records", &foreign)
        .await
        .expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn records_refuse_client_supplied_audit_subjects() {
    let server = records().await;
    let alice = records_token("alice");
    let mallory = records_token("mallory");

    for field in ["created_by", "updated_by"] {
        let reply = send_as(
            &server,
            "POST",
            "/records",
            json!({"title": "forged", field: "alice"}),
            &mallory,
        )
        .await;
        let problem = reply.expect_problem(422, "validation_failed");
        assert_eq!(
            field_errors(&problem),
            [(field.to_owned(), "read_only".to_owned())],
            "POST {field}"
        );
    }
    assert_eq!(server.count_in_database("records").await, 0);

    let created = send_as(
        &server,
        "POST",
        "/records",
        json!({"title": "mine"}),
        &alice,
    )
    .await
    .expect(201);
    let path = format!("/records/{}", id_of(&created["id"]));
    for field in ["created_by", "updated_by"] {
        let reply = send_as(
            &server,
            "PATCH",
            &path,
            json!({"title": "taken", field: "mallory"}),
            &mallory,
        )
        .await;
        let problem = reply.expect_problem(422, "validation_failed");
        assert_eq!(
            field_errors(&problem),
            [(field.to_owned(), "read_only".to_owned())],
            "PATCH {field}"
        );
    }
    let read = get_as(&server, &path, &alice).await.expect(200);
    assert_eq!(read["title"], "mine");
    assert_eq!(read["created_by"], "alice");
    assert_eq!(read["updated_by"], "alice");
    assert_eq!(server.count_in_database("records").await, 1);
}

#[tokio::test]
async fn only_the_creator_may_delete_a_record() {
    let server = records().await;
    let alice = records_token("alice");
    let bob = records_token("bob");
    let created = send_as(
        &server,
        "POST",
        "/records",
        json!({"title": "keep"}),
        &alice,
    )
    .await
    .expect(201);
    let path = format!("/records/{}", id_of(&created["id"]));

    delete_as(&server, &path, &bob)
        .await
        .expect_problem(404, "not_found");
    server
        .delete(&path)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(server.count_in_database("records").await, 1);
    get_as(&server, &path, &bob).await.expect(200);

    let deleted = delete_as(&server, &path, &alice).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert!(deleted.bytes.is_empty());
    assert_eq!(server.count_in_database("records").await, 0);
    get_as(&server, &path, &alice)
        .await
        .expect_problem(404, "not_found");
}

// ----------------------------------------------------------------- courses

const COURSES_ISSUER: &str = "https://auth.example.com";

/// The courses schema with its key path made absolute (the harness copies
/// only the schema text into a temporary directory).
fn courses_schema() -> String {
    let key = repo_root()
        .join("examples/courses/keys/demo_public.pem")
        .canonicalize()
        .expect("demo public key");
    let schema = example("courses");
    let relative = "public_key_file = \"keys/demo_public.pem\"";
    assert!(schema.contains(relative), "the courses schema changed");
    schema.replace(
        relative,
        &format!("public_key_file = \"{}\"", key.display()),
    )
}

async fn courses() -> Server {
    Server::start_with_env(&courses_schema(), &[], &[]).await
}

/// An RS256 token from the courses issuer, signed with the demo key.
fn course_token(subject: &str, roles: &[&str]) -> String {
    let pem = std::fs::read(fixture("rsa_private.pem")).expect("test key");
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({
            "sub": subject,
            "iss": COURSES_ISSUER,
            "aud": "courses",
            "roles": roles,
            "iat": now(),
            "exp": now() + 600,
        }),
        &EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
    )
    .expect("sign")
}

/// Nested, mixed JSON, as a course's free-form metadata.
fn metadata() -> Value {
    json!({
        "level": "intro",
        "tags": ["rust", "async", "web"],
        "duration": {"weeks": 6, "hours_per_week": 4.5},
        "prerequisites": [],
        "instructors": [{"name": "Ada", "links": {"site": "https://example.com/ada"}}],
        "certificate": true,
        "discontinued": null,
        "note": "Unicode: naïve café — 日本語 ✓, \"quoted\"",
    })
}

#[tokio::test]
async fn courses_are_publicly_readable_and_cacheable_with_etag_revalidation() {
    let server = courses().await;
    let author = course_token("author-1", &["author"]);
    let created = send_as(
        &server,
        "POST",
        "/courses",
        json!({"title": "Rust", "summary": "From zero", "metadata": metadata()}),
        &author,
    )
    .await
    .expect(201);
    let path = format!("/courses/{}", id_of(&created["id"]));

    for target in ["/courses", path.as_str()] {
        let first = server.get(target).await;
        let body = first.expect(200);
        assert_eq!(
            first.header("cache-control").as_deref(),
            Some("public, max-age=300"),
            "{target}"
        );
        let etag = first
            .header("etag")
            .unwrap_or_else(|| panic!("{target} has no ETag"));
        if target == "/courses" {
            assert_eq!(body["items"].as_array().unwrap().len(), 1);
            assert_eq!(body["items"][0]["metadata"], metadata());
        } else {
            assert_eq!(body["title"], "Rust");
        }

        let again = server
            .send("GET", target, None, &[("if-none-match", &etag)])
            .await;
        assert_eq!(again.status, 304, "{target}: {again:?}");
        assert!(again.bytes.is_empty(), "{target}");
        assert_eq!(again.header("etag").as_deref(), Some(etag.as_str()));

        let stale = server
            .send(
                "GET",
                target,
                None,
                &[("if-none-match", "\"not-the-etag\"")],
            )
            .await;
        assert_eq!(stale.status, 200, "{target}");
    }

    // A change gives the list a new ETag, so caches revalidate to the new body.
    let list_etag = server.get("/courses").await.header("etag").unwrap();
    send_as(&server, "PATCH", &path, json!({"published": true}), &author)
        .await
        .expect(200);
    let after = server
        .send("GET", "/courses", None, &[("if-none-match", &list_etag)])
        .await;
    let body = after.expect(200);
    assert_eq!(body["items"][0]["published"], true);
}

#[tokio::test]
async fn creating_a_course_needs_the_author_role() {
    let server = courses().await;
    let course = json!({"title": "Not allowed"});

    server
        .post("/courses", course.clone())
        .await
        .expect_problem(401, "unauthorized");
    let reader = course_token("reader-1", &["reader"]);
    send_as(&server, "POST", "/courses", course.clone(), &reader)
        .await
        .expect_problem(403, "forbidden");
    let nobody = course_token("reader-2", &[]);
    send_as(&server, "POST", "/courses", course.clone(), &nobody)
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(server.count_in_database("courses").await, 0);

    // Several roles, one of them author, is enough.
    let author = course_token("author-1", &["reader", "author"]);
    let created = send_as(&server, "POST", "/courses", course, &author)
        .await
        .expect(201);
    assert_eq!(created["created_by"], "author-1");
    assert_eq!(created["published"], false);
    assert_eq!(server.count_in_database("courses").await, 1);
}

#[tokio::test]
async fn a_caller_who_may_not_write_gets_401_or_403_before_the_body_is_judged() {
    let server = courses().await;
    // Invalid in every way: a wrong type, an unknown field, the required title missing.
    let invalid = json!({"summary": 5, "secret_field": true});
    server
        .post("/courses", invalid.clone())
        .await
        .expect_problem(401, "unauthorized");
    let reader = course_token("reader-1", &["reader"]);
    send_as(&server, "POST", "/courses", invalid.clone(), &reader)
        .await
        .expect_problem(403, "forbidden");

    let author = course_token("author-1", &["author"]);
    let created = send_as(
        &server,
        "POST",
        "/courses",
        json!({"title": "Rust"}),
        &author,
    )
    .await
    .expect(201);
    let path = format!("/courses/{}", id_of(&created["id"]));
    server
        .patch(&path, invalid)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(server.count_in_database("courses").await, 1);
}

#[tokio::test]
async fn an_author_gets_a_nested_metadata_object_back_verbatim() {
    let server = courses().await;
    let author = course_token("author-1", &["author"]);
    let created = send_as(
        &server,
        "POST",
        "/courses",
        json!({"title": "Rust", "metadata": metadata()}),
        &author,
    )
    .await
    .expect(201);
    assert_eq!(created["metadata"], metadata());
    let path = format!("/courses/{}", id_of(&created["id"]));

    let read = server.get(&path).await.expect(200);
    assert_eq!(read["metadata"], metadata());
    let listed = server.get("/courses").await.expect(200);
    assert_eq!(listed["items"][0]["metadata"], metadata());

    // Replacing the object keeps the new one, verbatim too.
    let replacement = json!({"level": "advanced", "modules": [{"n": 1}, {"n": 2}], "empty": {}});
    let updated = send_as(
        &server,
        "PATCH",
        &path,
        json!({"metadata": replacement}),
        &author,
    )
    .await
    .expect(200);
    assert_eq!(updated["metadata"], replacement);
    assert_eq!(server.get(&path).await.expect(200)["metadata"], replacement);
}

#[tokio::test]
async fn only_the_owning_author_may_update_or_delete_a_course() {
    let server = courses().await;
    let owner = course_token("author-1", &["author"]);
    let rival = course_token("author-2", &["author"]);
    let created = send_as(
        &server,
        "POST",
        "/courses",
        json!({"title": "Mine", "metadata": {"level": "intro"}}),
        &owner,
    )
    .await
    .expect(201);
    let path = format!("/courses/{}", id_of(&created["id"]));

    send_as(&server, "PATCH", &path, json!({"title": "Theirs"}), &rival)
        .await
        .expect_problem(404, "not_found");
    delete_as(&server, &path, &rival)
        .await
        .expect_problem(404, "not_found");
    server
        .patch(&path, json!({"title": "Anyone"}))
        .await
        .expect_problem(401, "unauthorized");
    let unchanged = server.get(&path).await.expect(200);
    assert_eq!(unchanged["title"], "Mine");
    assert_eq!(unchanged["created_by"], "author-1");

    let updated = send_as(
        &server,
        "PATCH",
        &path,
        json!({"title": "Still mine"}),
        &owner,
    )
    .await
    .expect(200);
    assert_eq!(updated["title"], "Still mine");
    assert_eq!(updated["updated_by"], "author-1");
    let deleted = delete_as(&server, &path, &owner).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    server.get(&path).await.expect_problem(404, "not_found");
    assert_eq!(server.count_in_database("courses").await, 0);
}

#[tokio::test]
async fn a_token_signed_with_hs256_using_the_public_key_is_refused() {
    let server = courses().await;
    let public_pem = std::fs::read(repo_root().join("examples/courses/keys/demo_public.pem"))
        .expect("public key");
    let claims = json!({
        "sub": "attacker",
        "iss": COURSES_ISSUER,
        "aud": "courses",
        "roles": ["author"],
        "iat": now(),
        "exp": now() + 600,
    });
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&public_pem),
    )
    .expect("sign");
    let reply = send_as(
        &server,
        "POST",
        "/courses",
        json!({"title": "Forged"}),
        &confused,
    )
    .await;
    reply.expect_problem(401, "unauthorized");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|v| v.contains("invalid_token")),
        "{reply:?}"
    );
    // Even a read, public without a token, refuses a forged one rather than ignoring it.
    get_as(&server, "/courses", &confused)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(server.count_in_database("courses").await, 0);

    // The same claims signed properly are accepted.
    let genuine = course_token("attacker", &["author"]);
    send_as(
        &server,
        "POST",
        "/courses",
        json!({"title": "Fine"}),
        &genuine,
    )
    .await
    .expect(201);
}
