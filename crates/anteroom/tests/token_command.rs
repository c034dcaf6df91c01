//! `anteroom token`: development tokens for a schema's `[auth.jwt]` HMAC
//! secret. A minted token is used against the real server (whatever
//! `ANTEROOM_TEST_BACKEND` says: only signing is tested here), its claims
//! are read back, and every configuration it cannot sign for is refused
//! with what to do instead.

mod common;

use base64::Engine;
use common::{CliOutput, Server, cli, cli_env, fixture, schema_dir};
use serde_json::{Value, json};

/// The secret servers and the command read from `LIB_SECRET` (38 bytes).
const SECRET: &str = "library-dev-secret-0123456789abcdefgh";

fn library(jwt: &str) -> String {
    format!(
        r#"[app]
name = "library"

[auth]
jwt = {jwt}

[resources.loans]
rules = {{ list = "role:librarian", read = "role:librarian", create = "role:librarian", update = "role:librarian", delete = "role:librarian" }}
fields.title = {{ type = "string", required = true }}
"#
    )
}

const HS256: &str = r#"{ algorithms = ["HS256"], secret_env = "LIB_SECRET" }"#;

fn token(schema: &std::path::Path, args: &[&str]) -> CliOutput {
    let mut all = vec!["token", schema.to_str().unwrap()];
    all.extend_from_slice(args);
    cli_env(&all, &[("LIB_SECRET", SECRET)])
}

fn minted(out: &CliOutput) -> String {
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.trim().to_owned()
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

#[tokio::test]
async fn a_minted_token_opens_what_its_role_may_and_nothing_more() {
    let schema = library(HS256);
    let server = Server::start_with_env(&schema, &[], &[("LIB_SECRET", SECRET)]).await;
    let path = server.schema_path();
    let librarian = minted(&token(&path, &["--sub", "alice", "--role", "librarian"]));
    let member = minted(&token(&path, &["--sub", "bob", "--role", "member"]));

    let bearer = format!("Bearer {librarian}");
    let created = server
        .send(
            "POST",
            "/loans",
            Some(json!({"title": "Dune"})),
            &[("authorization", &bearer)],
        )
        .await
        .expect(201);
    assert_eq!(created["created_by"], "alice");
    let listed = server
        .send("GET", "/loans", None, &[("authorization", &bearer)])
        .await
        .expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    let bearer = format!("Bearer {member}");
    let refused = server
        .send("GET", "/loans", None, &[("authorization", &bearer)])
        .await
        .expect_problem(403, "forbidden");
    // The rule and what the caller brought, nothing of any row.
    assert_eq!(
        refused["detail"],
        "you may not list loans: the rule asks for the role librarian, and this caller has the role member"
    );
    let roleless = minted(&token(&path, &["--sub", "dave"]));
    let refused = server
        .send(
            "GET",
            "/loans",
            None,
            &[("authorization", &format!("Bearer {roleless}"))],
        )
        .await
        .expect_problem(403, "forbidden");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .ends_with("this caller has no role (check that the token carries its roles where [auth] role_claim reads them)"),
        "{refused}"
    );
    server
        .send(
            "POST",
            "/loans",
            Some(json!({"title": "Emma"})),
            &[("authorization", &bearer)],
        )
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(server.count_in_database("loans").await, 1);
}

#[tokio::test]
async fn claims_go_where_the_schema_reads_them_with_the_issuer_audience_and_lifetime_asked() {
    let jwt = r#"{ algorithms = ["HS384", "HS256"], secret_env = "LIB_SECRET", issuer = "https://id.library.test/", audience = "library-api", subject_claim = "uid", role_claim = "realm.roles" }"#;
    let server = Server::start_with_env(&library(jwt), &[], &[("LIB_SECRET", SECRET)]).await;
    let out = token(
        &server.schema_path(),
        &[
            "--sub",
            "carol",
            "--role",
            "librarian",
            "--role",
            "auditor",
            "--ttl",
            "15m",
        ],
    );
    let token = minted(&out);
    let header = payload(&format!("x.{}", token.split('.').next().unwrap()));
    assert_eq!(header["alg"], "HS384", "the first pinned HMAC algorithm");
    let claims = payload(&token);
    assert_eq!(claims["uid"], "carol");
    assert_eq!(claims["realm"]["roles"], json!(["librarian", "auditor"]));
    assert_eq!(claims["iss"], "https://id.library.test/");
    assert_eq!(claims["aud"], "library-api");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        15 * 60
    );
    let bearer = format!("Bearer {token}");
    let created = server
        .send(
            "POST",
            "/loans",
            Some(json!({"title": "Middlemarch"})),
            &[("authorization", &bearer)],
        )
        .await
        .expect(201);
    assert_eq!(created["created_by"], "carol");
}

#[test]
fn a_public_key_configuration_is_refused_because_only_the_private_key_can_sign() {
    let jwt = format!(
        r#"{{ algorithms = ["RS256"], public_key_file = '{}' }}"#,
        fixture("rsa_public.pem")
    );
    let (_dir, path) = schema_dir(&library(&jwt));
    let out = token(&path, &["--sub", "alice"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("--private-key FILE"), "{}", out.stderr);
    let hmac = schema_dir(&library(HS256));
    let out = token(
        &hmac.1,
        &[
            "--sub",
            "alice",
            "--private-key",
            &fixture("rsa_private.pem"),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("drop --private-key"), "{}", out.stderr);
}

#[tokio::test]
async fn with_the_private_key_a_public_key_schema_gets_a_token_its_server_accepts() {
    let root = common::repo_root().join("examples/courses");
    // The schema names its public key relative to itself.
    let schema = std::fs::read_to_string(root.join("anteroom.toml"))
        .unwrap()
        .replace(
            "\"keys/demo_public.pem\"",
            &format!("'{}'", root.join("keys/demo_public.pem").display()),
        );
    let server = Server::start_with_args(&schema, &[]).await;
    let path = root.join("anteroom.toml");
    let key = root.join("keys/demo_private.pem");
    let author = minted(&token(
        &path,
        &[
            "--sub",
            "ada",
            "--role",
            "author",
            "--private-key",
            key.to_str().unwrap(),
        ],
    ));
    let claims = payload(&author);
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(claims["aud"], "courses");
    assert_eq!(claims["roles"], "author");
    let created = server
        .send(
            "POST",
            "/courses",
            Some(json!({"title": "Rust"})),
            &[("authorization", &format!("Bearer {author}"))],
        )
        .await
        .expect(201);
    assert_eq!(created["created_by"], "ada");
}

#[test]
fn a_missing_secret_is_named() {
    let (_dir, path) = schema_dir(&library(HS256));
    let out = cli(&["token", path.to_str().unwrap(), "--sub", "alice"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains("LIB_SECRET") && out.stderr.contains("empty or unset"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_schema_without_jwt_says_where_its_tokens_come_from() {
    let (_dir, open) = schema_dir(
        "[app]\nname = \"open\"\n\n[resources.notes]\nfields.text = { type = \"string\" }\n",
    );
    let out = token(&open, &["--sub", "alice"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("[auth.jwt]"), "{}", out.stderr);

    let (_dir, accounts) = schema_dir(
        "[app]\nname = \"acc\"\n\n[auth.accounts]\nsecret_env = \"LIB_SECRET\"\n\n[resources.notes]\nrules = { list = \"authenticated\" }\nfields.text = { type = \"string\" }\n",
    );
    let out = token(&accounts, &["--sub", "alice"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("/auth/login"), "{}", out.stderr);
}
