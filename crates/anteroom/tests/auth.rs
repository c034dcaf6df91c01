//! Authentication and access rules end to end, against the real binary on the
//! run's backend (`ANTEROOM_TEST_BACKEND`):
//!
//! - the attack table: `alg: none`, algorithm confusion (HS256 signed with the
//!   RSA public key), an algorithm outside the pinned list, expired and not yet
//!   valid tokens, wrong `iss`/`aud`, wrong signature, unknown `kid`, malformed
//!   tokens, a token in the wrong header, an empty bearer, Basic credentials and
//!   an API key one character off — each a 401 that changes nothing, even on
//!   public routes;
//! - accepted credentials: RS256 from a PEM file and from a JWKS (by `kid`),
//!   ES256, EdDSA, HS256 from an env secret, the leeway, roles from Cognito's
//!   `cognito:groups` and other claim paths, API keys in a header or the query
//!   string, and the subject recorded in `created_by`/`updated_by`;
//! - start-up refusals: short or missing secrets, mixed or `none` algorithms;
//! - rules: owner-only writes (another user's row is a 404), role-gated
//!   creates, lists that neither return nor count other users' rows, forbidden
//!   reads answering like missing rows, fields users may not set on
//!   themselves, hidden fields, expansions and nested routes under rows the
//!   caller cannot read, operations without a rule;
//! - without `[auth]`, a prototype where everything is public.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Reply, Server, Started, TestDatabase, fixture, id_of, schema_dir};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Schema and server
// ---------------------------------------------------------------------------

const ISSUER: &str = "https://issuer.anteroom.test/";
const AUDIENCE: &str = "anteroom-tests";
/// The API key servers read from `APP_TOKEN` (40 bytes).
const API_KEY: &str = "ak_live_0123456789abcdef0123456789abcdef";
/// The HMAC secret servers read from `JWT_SECRET` (34 bytes).
const HMAC_SECRET: &str = "hs256-test-secret-0123456789abcdef";

const RESOURCES: &str = r#"
[resources.notes]
rules = { list = "owner", read = "owner", create = "authenticated", update = "owner", delete = "owner" }
fields.title = { type = "string", required = true }
fields.body  = { type = "text" }

[resources.slots]
id = { type = "string", max_length = 64 }
rules = { list = "owner", read = "owner", create = "authenticated", update = "owner", delete = "owner" }
fields.label = { type = "string", required = true }

[resources.bulletins]
rules = { list = "public", read = "public", create = "authenticated", update = "authenticated", delete = "role:admin|kiosk" }
fields.text   = { type = "string", required = true }
fields.pinned = { type = "boolean", default = false, writable = "role:admin" }

[resources.courses]
rules = { list = "public", read = "public", create = "role:admin", update = ["role:admin", "role:teacher"], delete = "role:admin" }
fields.name = { type = "string", required = true, min_length = 2 }

[resources.profiles]
rules = { list = "authenticated", read = "authenticated", create = "authenticated", update = "owner", delete = "none" }
fields.name = { type = "string", required = true }
fields.role = { type = "string", default = "user", writable = false }
fields.plan = { type = "string", default = "free", writable = "role:admin" }

[resources.projects]
rules = { list = "owner", read = "owner", create = "authenticated", update = "owner", delete = "owner" }
fields.name        = { type = "string", required = true }
fields.budget_code = { type = "string", hidden = true }

[resources.tasks]
rules = { list = "authenticated", read = "authenticated", create = "authenticated", update = "owner", delete = "owner" }
fields.title      = { type = "string", required = true }
fields.project_id = { type = "ref", to = "projects", on_delete = "cascade" }

[resources.archive]
rules = { list = "public", read = "public" }
fields.entry = { type = "string" }

[resources.vault]
fields.entry = { type = "string" }
"#;

/// The `[auth] jwt` value of most tests: RS256 only, a PEM public key, `iss` and `aud`.
fn rs256_pem() -> String {
    format!(
        r#"{{ algorithms = ["RS256"], public_key_file = '{}', issuer = "{ISSUER}", audience = "{AUDIENCE}" }}"#,
        fixture("rsa_public.pem")
    )
}

/// RS256 with keys from the JWKS fixture (kids k1 and k2).
fn rs256_jwks() -> String {
    format!(
        r#"{{ algorithms = ["RS256"], jwks_file = '{}', issuer = "{ISSUER}", audience = "{AUDIENCE}" }}"#,
        fixture("jwks.json")
    )
}

/// A schema with `jwt` as its `[auth] jwt` value and an API key (role `kiosk`).
fn schema(jwt: &str) -> String {
    format!(
        r#"[app]
name = "auth-suite"

[auth]
jwt = {jwt}
api_keys = {{ env = "APP_TOKEN", header = "x-api-key", query = "app_token", role = "kiosk", subject = "kiosk" }}
{RESOURCES}"#
    )
}

async fn start(jwt: &str) -> Server {
    Server::start_with_env(
        &schema(jwt),
        &[],
        &[("APP_TOKEN", API_KEY), ("JWT_SECRET", HMAC_SECRET)],
    )
    .await
}

async fn start_rs256() -> Server {
    start(&rs256_pem()).await
}

/// Spawns a server for `schema` with `env`, expecting it to refuse to start.
async fn refused_start(schema: &str, env: &[(&str, &str)]) -> (i32, String) {
    let (dir, _) = schema_dir(schema);
    let db = TestDatabase::create(dir.path()).await;
    let url = db.url.clone();
    match Server::spawn_env(Arc::new(dir), url, &[], env, Some(Arc::new(db))).await {
        Started::Up(server) => panic!(
            "the server started but should have refused:\n{}",
            server.log_text()
        ),
        Started::Exited(code, log) => {
            assert_ne!(code, 0, "a refused start exits non-zero:\n{log}");
            (code, log)
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("read key fixture")
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem("rsa_private.pem")).expect("RSA key")
}

fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem("rsa2_private.pem")).expect("second RSA key")
}

/// Valid claims for ten minutes, from the configured issuer for the configured audience.
fn claims(sub: &str, role: Value) -> Value {
    json!({
        "sub": sub,
        "role": role,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
    })
}

/// `claims` with `key` set to `value`.
fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// `claims` without `key`.
fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign token")
}

fn rs256(claims: &Value) -> String {
    sign(Algorithm::RS256, &rsa_key(), None, claims)
}

fn user_token(sub: &str) -> String {
    rs256(&claims(sub, json!("user")))
}

fn admin_token(sub: &str) -> String {
    rs256(&claims(sub, json!("admin")))
}

/// Unpadded base64url, for tokens built by hand.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A token assembled from a header, claims and a signature segment.
fn hand_made(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

// ---------------------------------------------------------------------------
// Callers and assertions
// ---------------------------------------------------------------------------

/// Someone calling the server with fixed credentials.
struct Caller<'s> {
    server: &'s Server,
    headers: Vec<(String, String)>,
}

impl<'s> Caller<'s> {
    fn anonymous(server: &'s Server) -> Self {
        Self::with_headers(server, &[])
    }

    fn bearer(server: &'s Server, token: &str) -> Self {
        Self::with_headers(server, &[("authorization", &format!("Bearer {token}"))])
    }

    fn user(server: &'s Server, sub: &str) -> Self {
        Self::bearer(server, &user_token(sub))
    }

    fn admin(server: &'s Server, sub: &str) -> Self {
        Self::bearer(server, &admin_token(sub))
    }

    fn api_key(server: &'s Server) -> Self {
        Self::with_headers(server, &[("x-api-key", API_KEY)])
    }

    fn with_headers(server: &'s Server, headers: &[(&str, &str)]) -> Self {
        Caller {
            server,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.server.send(method, path, body, &headers).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send("PATCH", path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.send("PUT", path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, None).await
    }

    /// POST that must answer 201; returns the created row.
    async fn create(&self, path: &str, body: Value) -> Value {
        self.post(path, body).await.expect(201)
    }

    /// Every row a cursor walk over `path` (which has a query string) shows.
    async fn walk(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let page_path = match &cursor {
                Some(c) => format!("{path}&cursor={c}"),
                None => path.to_owned(),
            };
            let page = self.get(&page_path).await.expect(200);
            out.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("the cursor walk over {path} did not end");
    }
}

/// A 401 problem with the `WWW-Authenticate` challenge; `invalid_token` when
/// credentials were presented and refused.
#[track_caller]
fn expect_unauthorized(reply: &Reply, invalid_token: bool) {
    reply.expect_problem(401, "unauthorized");
    let expected = if invalid_token {
        r#"Bearer realm="anteroom", error="invalid_token""#
    } else {
        r#"Bearer realm="anteroom""#
    };
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some(expected),
        "WWW-Authenticate of a 401"
    );
}

/// The `(field, code)` pairs of a 422.
#[track_caller]
fn field_errors(reply: &Reply) -> Vec<(String, String)> {
    let body = reply.expect_problem(422, "validation_failed");
    body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["field"].as_str().expect("field").to_owned(),
                e["code"].as_str().expect("code").to_owned(),
            )
        })
        .collect()
}

#[track_caller]
fn expect_read_only(reply: &Reply, fields: &[&str]) {
    let expected: Vec<(String, String)> = fields
        .iter()
        .map(|f| ((*f).to_owned(), "read_only".to_owned()))
        .collect();
    assert_eq!(field_errors(reply), expected);
}

/// Titles of a list's items, sorted.
fn titles(items: &[Value], key: &str) -> Vec<String> {
    let mut out: Vec<String> = items
        .iter()
        .map(|i| i[key].as_str().expect("text field").to_owned())
        .collect();
    out.sort();
    out
}

/// Rows of `table` where `column` holds `value` (all test values are plain ASCII).
async fn rows_where(server: &Server, table: &str, column: &str, value: &str) -> i64 {
    server
        .query_i64(&format!(
            "SELECT COUNT(*) FROM \"{table}\" WHERE \"{column}\" = '{value}'"
        ))
        .await
}

/// Presents refused credentials (`headers`, and `query` appended to every
/// path) to every bulletin route — public reads included — and checks each
/// is a 401 with `error="invalid_token"` that changes nothing.
async fn assert_refused(server: &Server, headers: &[(&str, &str)], query: &str) {
    static SEEDS: AtomicUsize = AtomicUsize::new(0);
    let original = format!("original {}", SEEDS.fetch_add(1, Ordering::Relaxed));
    let seeded = Caller::api_key(server)
        .create("/bulletins", json!({"text": original}))
        .await;
    let id = id_of(&seeded["id"]);
    let before = server.count_in_database("bulletins").await;
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let attacker = Caller::with_headers(server, headers);
    let replies = [
        attacker
            .post(&format!("/bulletins{q}"), json!({"text": "injected"}))
            .await,
        attacker
            .patch(&format!("/bulletins/{id}{q}"), json!({"text": "defaced"}))
            .await,
        attacker
            .put(&format!("/bulletins/{id}{q}"), json!({"text": "replaced"}))
            .await,
        attacker.delete(&format!("/bulletins/{id}{q}")).await,
        attacker.get(&format!("/bulletins{q}")).await,
        attacker.get(&format!("/bulletins/{id}{q}")).await,
    ];
    for reply in &replies {
        expect_unauthorized(reply, true);
    }
    assert_eq!(server.count_in_database("bulletins").await, before);
    assert_eq!(
        server
            .query_i64(&format!(
                "SELECT COUNT(*) FROM \"bulletins\" WHERE \"text\" = '{original}' AND \"updated_by\" = 'kiosk'"
            ))
            .await,
        1,
        "the bulletin is unchanged"
    );
    assert_eq!(
        server
            .query_i64(
                "SELECT COUNT(*) FROM \"bulletins\" WHERE \"text\" IN ('injected', 'defaced', 'replaced')"
            )
            .await,
        0
    );
}

/// [`assert_refused`] for a bearer token.
async fn assert_token_refused(server: &Server, token: &str) {
    assert_refused(server, &[("authorization", &format!("Bearer {token}"))], "").await;
}

// ---------------------------------------------------------------------------
// The attack table: each a 401 that changes nothing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_token_with_alg_none_is_refused_and_changes_nothing() {
    let server = start_rs256().await;
    let claims = claims("mallory", json!("admin"));
    let unsigned = hand_made(&json!({"alg": "none", "typ": "JWT"}), &claims, "");
    assert_token_refused(&server, &unsigned).await;
    // With a real signature copied from a valid token, and with other spellings.
    let valid = admin_token("mallory");
    let signature = valid.rsplit('.').next().unwrap();
    for alg in ["none", "None", "NONE"] {
        let token = hand_made(&json!({"alg": alg, "typ": "JWT"}), &claims, signature);
        assert_token_refused(&server, &token).await;
    }
    // The same claims properly signed are accepted: the refusals were about `alg`.
    Caller::bearer(&server, &valid)
        .create("/bulletins", json!({"text": "signed"}))
        .await;
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_is_refused_and_changes_nothing() {
    let server = start_rs256().await;
    let public_pem = pem("rsa_public.pem");
    let claims = claims("mallory", json!("admin"));
    for secret in [public_pem.clone(), public_pem.trim_ascii_end().to_vec()] {
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&secret),
            None,
            &claims,
        );
        assert_token_refused(&server, &forged).await;
    }
}

#[tokio::test]
async fn a_correctly_signed_token_with_an_algorithm_outside_the_pinned_list_is_refused() {
    let server = start_rs256().await;
    let claims = claims("mallory", json!("admin"));
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = sign(alg, &rsa_key(), None, &claims);
        assert_token_refused(&server, &token).await;
    }
}

#[tokio::test]
async fn a_token_expired_beyond_the_leeway_is_refused() {
    let server = start_rs256().await;
    let expired = with(claims("alice", json!("user")), "exp", json!(now() - 120));
    assert_token_refused(&server, &rs256(&expired)).await;
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let server = start_rs256().await;
    let forever = without(claims("alice", json!("user")), "exp");
    assert_token_refused(&server, &rs256(&forever)).await;
}

#[tokio::test]
async fn a_token_missing_a_required_claim_is_told_which() {
    let server = start_rs256().await;
    let detail_without = |name: &'static str| {
        let token = rs256(&without(claims("alice", json!("user")), name));
        let server = &server;
        async move {
            let reply = server
                .send(
                    "GET",
                    "/bulletins",
                    None,
                    &[("authorization", &format!("Bearer {token}"))],
                )
                .await;
            reply.expect_problem(401, "unauthorized")["detail"].clone()
        }
    };
    for name in ["exp", "iss", "aud"] {
        assert_eq!(
            detail_without(name).await,
            format!("the token lacks the \"{name}\" claim, which this server requires")
        );
    }
    assert_eq!(
        detail_without("sub").await,
        "the token has no subject in its \"sub\" claim (subject_claim)"
    );
}

#[tokio::test]
async fn a_token_not_yet_valid_beyond_the_leeway_is_refused() {
    let server = start_rs256().await;
    let early = with(claims("alice", json!("user")), "nbf", json!(now() + 120));
    assert_token_refused(&server, &rs256(&early)).await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let server = start_rs256().await;
    let other = with(
        claims("alice", json!("user")),
        "iss",
        json!("https://evil.example/"),
    );
    assert_token_refused(&server, &rs256(&other)).await;
}

#[tokio::test]
async fn a_token_without_an_issuer_is_refused_when_one_is_configured() {
    let server = start_rs256().await;
    let no_iss = without(claims("alice", json!("user")), "iss");
    assert_token_refused(&server, &rs256(&no_iss)).await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let server = start_rs256().await;
    let other = with(claims("alice", json!("user")), "aud", json!("another-api"));
    assert_token_refused(&server, &rs256(&other)).await;
    let others = with(claims("alice", json!("user")), "aud", json!(["a", "b"]));
    assert_token_refused(&server, &rs256(&others)).await;
}

#[tokio::test]
async fn a_token_without_an_audience_is_refused_when_one_is_configured() {
    let server = start_rs256().await;
    let no_aud = without(claims("alice", json!("user")), "aud");
    assert_token_refused(&server, &rs256(&no_aud)).await;
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    let server = start_rs256().await;
    let claims = claims("alice", json!("admin"));
    let forged = sign(Algorithm::RS256, &rsa2_key(), None, &claims);
    assert_token_refused(&server, &forged).await;
    // A valid token whose payload was swapped for another keeps a now-wrong signature.
    let genuine = user_token("alice");
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_token_refused(&server, &tampered).await;
}

#[tokio::test]
async fn a_jwks_server_refuses_an_unknown_kid_a_missing_kid_and_a_kid_of_another_key() {
    let server = start(&rs256_jwks()).await;
    let claims = claims("alice", json!("admin"));
    for kid in [Some("k3"), Some(""), None] {
        let token = sign(Algorithm::RS256, &rsa_key(), kid, &claims);
        assert_token_refused(&server, &token).await;
    }
    // kid k1 names the first key; a token signed by the second key is refused.
    let mislabelled = sign(Algorithm::RS256, &rsa2_key(), Some("k1"), &claims);
    assert_token_refused(&server, &mislabelled).await;
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let server = start_rs256().await;
    let valid = user_token("alice");
    let parts: Vec<&str> = valid.split('.').collect();
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let malformed = [
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "a.b.c".to_owned(),
        "...".to_owned(),
        "!!!.@@@.###".to_owned(),
        "not-a-jwt".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{valid}.{}", parts[2]),
        format!("{header}.{}.{}", b64url(b"not json"), parts[2]),
        format!("{}.{}.{}", b64url(b"not json"), parts[1], parts[2]),
        format!("{header}.%%%%.{}", parts[2]),
        format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
    ];
    for token in &malformed {
        assert_token_refused(&server, token).await;
    }
}

#[tokio::test]
async fn a_valid_token_in_the_wrong_header_counts_as_anonymous() {
    let server = start_rs256().await;
    let token = admin_token("alice");
    let bearer = format!("Bearer {token}");
    let cookie = format!("token={token}");
    for (name, value) in [
        ("x-token", token.as_str()),
        ("x-access-token", token.as_str()),
        ("proxy-authorization", bearer.as_str()),
        ("cookie", cookie.as_str()),
    ] {
        let caller = Caller::with_headers(&server, &[(name, value)]);
        let before = server.count_in_database("notes").await;
        expect_unauthorized(
            &caller.post("/notes", json!({"title": "sneaky"})).await,
            false,
        );
        expect_unauthorized(&caller.get("/notes").await, false);
        assert_eq!(server.count_in_database("notes").await, before, "{name}");
        // Public routes stay open to this anonymous caller.
        caller.get("/bulletins").await.expect(200);
    }
}

#[tokio::test]
async fn an_empty_bearer_is_refused() {
    let server = start_rs256().await;
    for value in ["Bearer ", "Bearer", "Bearer    ", "bearer  "] {
        assert_refused(&server, &[("authorization", value)], "").await;
    }
}

#[tokio::test]
async fn basic_and_other_schemes_in_authorization_are_refused() {
    let server = start_rs256().await;
    let token = user_token("alice");
    for value in [
        "Basic YWxpY2U6c2VjcmV0".to_owned(),
        format!("Token {token}"),
        format!("JWT {token}"),
        token.clone(),
        format!("Bearer {API_KEY}"),
    ] {
        assert_refused(&server, &[("authorization", &value)], "").await;
    }
}

#[tokio::test]
async fn an_api_key_differing_in_its_last_character_is_refused_in_the_header_and_in_the_query() {
    let server = start_rs256().await;
    let mut near = API_KEY.to_owned();
    near.pop();
    near.push('e');
    assert_ne!(near, API_KEY);
    let prefix = &API_KEY[..API_KEY.len() - 1];
    let longer = format!("{API_KEY}0");
    for wrong in [near.as_str(), prefix, longer.as_str(), ""] {
        assert_refused(&server, &[("x-api-key", wrong)], "").await;
        assert_refused(&server, &[], &format!("app_token={wrong}")).await;
    }
    // One good key does not excuse a bad one sent alongside it.
    assert_refused(
        &server,
        &[("x-api-key", API_KEY)],
        &format!("app_token={near}"),
    )
    .await;
    assert!(
        !server.log_text().contains(prefix),
        "the key (or a near miss) reached the log"
    );
}

/// Sends `head` over a fresh connection and never sends the body it
/// announces; returns the status line the server answers with, if any
/// within `within`.
async fn status_without_body(server: &Server, head: &str, within: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut received = vec![0u8; 512];
    match tokio::time::timeout(within, stream.read(&mut received)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&received[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        _ => String::from("no answer"),
    }
}

#[tokio::test]
async fn an_anonymous_write_is_refused_from_its_head_without_waiting_for_the_body() {
    let server = start_rs256().await;
    // The head promises 900 kB that never come: the server must not wait for
    // (or buffer) a body the caller may not send. The body timeout is 30 s.
    let head = "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n";
    let status = status_without_body(&server, head, std::time::Duration::from_secs(10)).await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status:?}");
    // A role the caller lacks is refused just as early.
    let token = user_token("alice");
    let head = format!(
        "PATCH /courses/0190f0f0-0000-7000-8000-000000000000 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n"
    );
    let status = status_without_body(&server, &head, std::time::Duration::from_secs(10)).await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status:?}");
}

// ---------------------------------------------------------------------------
// Accepted credentials
// ---------------------------------------------------------------------------

/// Creates a note with `caller` and checks the subject was recorded.
async fn creates_as(caller: &Caller<'_>, subject: &str) {
    let note = caller.create("/notes", json!({"title": "mine"})).await;
    assert_eq!(note["created_by"], subject, "{note}");
    assert_eq!(note["updated_by"], subject, "{note}");
    let listed = caller.get("/notes").await.expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test]
async fn rs256_tokens_verified_with_a_public_key_file_are_accepted() {
    let server = start_rs256().await;
    creates_as(&Caller::user(&server, "alice"), "alice").await;
    assert_eq!(rows_where(&server, "notes", "created_by", "alice").await, 1);
}

#[tokio::test]
async fn rs256_tokens_are_verified_with_the_jwks_key_their_kid_names() {
    let server = start(&rs256_jwks()).await;
    let claims_a = claims("alice", json!("user"));
    let k1 = sign(Algorithm::RS256, &rsa_key(), Some("k1"), &claims_a);
    creates_as(&Caller::bearer(&server, &k1), "alice").await;
    // The second key of the set (rotation) is accepted under its own kid.
    let k2 = sign(
        Algorithm::RS256,
        &rsa2_key(),
        Some("k2"),
        &claims("bob", json!("user")),
    );
    creates_as(&Caller::bearer(&server, &k2), "bob").await;
}

#[tokio::test]
async fn es256_tokens_are_accepted() {
    let server = start(&format!(
        r#"{{ algorithms = ["ES256"], public_key_file = '{}' }}"#,
        fixture("ec_public.pem")
    ))
    .await;
    let key = EncodingKey::from_ec_pem(&pem("ec_private.pem")).expect("EC key");
    let token = sign(
        Algorithm::ES256,
        &key,
        None,
        &claims("alice", json!("user")),
    );
    creates_as(&Caller::bearer(&server, &token), "alice").await;
    // An RS256 token is not accepted by an ES256 server.
    assert_token_refused(&server, &user_token("alice")).await;
}

#[tokio::test]
async fn eddsa_tokens_are_accepted() {
    let server = start(&format!(
        r#"{{ algorithms = ["EdDSA"], public_key_file = '{}' }}"#,
        fixture("ed_public.pem")
    ))
    .await;
    let key = EncodingKey::from_ed_pem(&pem("ed_private.pem")).expect("Ed25519 key");
    let token = sign(
        Algorithm::EdDSA,
        &key,
        None,
        &claims("alice", json!("user")),
    );
    creates_as(&Caller::bearer(&server, &token), "alice").await;
}

#[tokio::test]
async fn hs256_tokens_with_a_secret_from_the_environment_are_accepted() {
    let server = start(r#"{ algorithms = ["HS256"], secret_env = "JWT_SECRET" }"#).await;
    let key = EncodingKey::from_secret(HMAC_SECRET.as_bytes());
    let claims = claims("alice", json!("user"));
    let token = sign(Algorithm::HS256, &key, None, &claims);
    creates_as(&Caller::bearer(&server, &token), "alice").await;
    // Same secret, algorithm not pinned; right algorithm, wrong secret.
    assert_token_refused(&server, &sign(Algorithm::HS512, &key, None, &claims)).await;
    let other = EncodingKey::from_secret(b"another-secret-of-thirty-two-bytes!");
    assert_token_refused(&server, &sign(Algorithm::HS256, &other, None, &claims)).await;
    assert!(!server.log_text().contains(HMAC_SECRET));
}

#[tokio::test]
async fn a_token_within_the_leeway_is_accepted() {
    let server = start_rs256().await;
    let just_expired = with(claims("alice", json!("user")), "exp", json!(now() - 5));
    creates_as(&Caller::bearer(&server, &rs256(&just_expired)), "alice").await;
    let almost_valid = with(claims("bob", json!("user")), "nbf", json!(now() + 5));
    creates_as(&Caller::bearer(&server, &rs256(&almost_valid)), "bob").await;
}

#[tokio::test]
async fn roles_are_read_from_a_cognito_groups_array_claim() {
    let server = start(&format!(
        r#"{{ algorithms = ["RS256"], public_key_file = '{}', role_claim = "cognito:groups" }}"#,
        fixture("rsa_public.pem")
    ))
    .await;
    let cognito = |sub: &str, groups: Value| {
        let mut c = without(claims(sub, json!(null)), "role");
        c["cognito:groups"] = groups;
        c["token_use"] = json!("id");
        rs256(&c)
    };
    let admin = Caller::bearer(&server, &cognito("sub-admin", json!(["staff", "admin"])));
    let course = admin.create("/courses", json!({"name": "Databases"})).await;
    assert_eq!(course["created_by"], "sub-admin");
    let student = Caller::bearer(&server, &cognito("sub-student", json!(["students"])));
    student
        .post("/courses", json!({"name": "Hacking"}))
        .await
        .expect_problem(403, "forbidden");
    // A plain `role` claim means nothing once role_claim points elsewhere.
    let sneaky = rs256(&claims("sub-sneaky", json!("admin")));
    Caller::bearer(&server, &sneaky)
        .post("/courses", json!({"name": "Hacking"}))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(server.count_in_database("courses").await, 1);
}

#[tokio::test]
async fn roles_and_subjects_are_read_from_configured_claim_paths() {
    let server = start(&format!(
        r#"{{ algorithms = ["RS256"], public_key_file = '{}', role_claim = "realm_access.roles", subject_claim = "preferred_username" }}"#,
        fixture("rsa_public.pem")
    ))
    .await;
    let mut c = without(claims("ignored-sub", json!(null)), "role");
    c["realm_access"] = json!({"roles": ["offline_access", "admin"]});
    c["preferred_username"] = json!("carol");
    let carol = Caller::bearer(&server, &rs256(&c));
    let course = carol.create("/courses", json!({"name": "Compilers"})).await;
    assert_eq!(course["created_by"], "carol");
    // A token lacking the subject claim has no identity: refused.
    let anonymous = without(c, "preferred_username");
    assert_token_refused(&server, &rs256(&anonymous)).await;
}

#[tokio::test]
async fn a_token_without_a_subject_is_refused() {
    let server = start_rs256().await;
    let base = claims("alice", json!("admin"));
    assert_token_refused(&server, &rs256(&without(base.clone(), "sub"))).await;
    assert_token_refused(&server, &rs256(&with(base, "sub", json!("")))).await;
}

#[tokio::test]
async fn an_api_key_is_accepted_in_the_header_and_in_the_query_with_its_role_and_subject() {
    let server = start_rs256().await;
    let kiosk = Caller::api_key(&server);
    let by_header = kiosk.create("/bulletins", json!({"text": "header"})).await;
    assert_eq!(by_header["created_by"], "kiosk");
    let anonymous = Caller::anonymous(&server);
    let by_query = anonymous
        .post(
            &format!("/bulletins?app_token={API_KEY}"),
            json!({"text": "query"}),
        )
        .await
        .expect(201);
    assert_eq!(by_query["created_by"], "kiosk");
    // The key's role (kiosk) may delete bulletins; a plain user may not.
    let id = id_of(&by_query["id"]);
    Caller::user(&server, "alice")
        .delete(&format!("/bulletins/{id}"))
        .await
        .expect_problem(403, "forbidden");
    anonymous
        .delete(&format!("/bulletins/{id}?app_token={API_KEY}"))
        .await
        .expect(204);
    kiosk
        .delete(&format!("/bulletins/{}", id_of(&by_header["id"])))
        .await
        .expect(204);
    assert_eq!(server.count_in_database("bulletins").await, 0);
    // Owner rules see the key's subject like any other.
    kiosk.create("/notes", json!({"title": "kiosk note"})).await;
    Caller::user(&server, "alice")
        .create("/notes", json!({"title": "alice note"}))
        .await;
    let mine = anonymous
        .get(&format!("/notes?app_token={API_KEY}&count=true"))
        .await
        .expect(200);
    assert_eq!(
        titles(mine["items"].as_array().unwrap(), "title"),
        ["kiosk note"]
    );
    assert_eq!(mine["total"], 1);
    assert!(
        !server.log_text().contains(API_KEY),
        "the key reached the log"
    );
}

#[tokio::test]
async fn the_api_key_query_parameter_is_not_read_as_a_filter() {
    let server = start_rs256().await;
    let kiosk = Caller::api_key(&server);
    for text in ["hello", "world", "again"] {
        kiosk.create("/bulletins", json!({"text": text})).await;
    }
    let anonymous = Caller::anonymous(&server);
    let all = anonymous
        .get(&format!("/bulletins?app_token={API_KEY}&count=true"))
        .await
        .expect(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(all["total"], 3);
    let filtered = anonymous
        .get(&format!(
            "/bulletins?text=hello&app_token={API_KEY}&sort=text"
        ))
        .await
        .expect(200);
    assert_eq!(
        titles(filtered["items"].as_array().unwrap(), "text"),
        ["hello"]
    );
    // Cursors keep working with the key in the query string.
    let walked = anonymous
        .walk(&format!("/bulletins?limit=1&app_token={API_KEY}"))
        .await;
    assert_eq!(
        titles(&walked, "text"),
        ["again", "hello", "world"],
        "{walked:?}"
    );
    // A parameter that is not the key is still a filter (on an unknown field: 400).
    anonymous
        .get(&format!("/bulletins?api_token={API_KEY}"))
        .await
        .expect_problem(400, "unknown_field");
}

#[tokio::test]
async fn created_by_and_updated_by_record_the_subject_of_each_write() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let bob = Caller::user(&server, "bob");
    let created = alice.create("/bulletins", json!({"text": "v1"})).await;
    assert_eq!(created["created_by"], "alice");
    assert_eq!(created["updated_by"], "alice");
    let path = format!("/bulletins/{}", id_of(&created["id"]));
    let patched = bob.patch(&path, json!({"text": "v2"})).await.expect(200);
    assert_eq!(patched["created_by"], "alice");
    assert_eq!(patched["updated_by"], "bob");
    let replaced = Caller::admin(&server, "root")
        .put(&path, json!({"text": "v3"}))
        .await
        .expect(200);
    assert_eq!(replaced["created_by"], "alice");
    assert_eq!(replaced["updated_by"], "root");
    assert_eq!(
        server
            .query_i64(
                "SELECT COUNT(*) FROM \"bulletins\" WHERE \"created_by\" = 'alice' AND \"updated_by\" = 'root' AND \"text\" = 'v3'"
            )
            .await,
        1
    );
    // Bulk creates stamp every row.
    let rows = bob
        .post("/bulletins", json!([{"text": "b1"}, {"text": "b2"}]))
        .await
        .expect(201);
    for row in rows.as_array().expect("bulk reply") {
        assert_eq!(row["created_by"], "bob", "{row}");
    }
    assert_eq!(
        rows_where(&server, "bulletins", "created_by", "bob").await,
        2
    );
}

// ---------------------------------------------------------------------------
// Start-up refusals
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_short_empty_or_missing_hmac_secret_stops_the_server_naming_the_variable() {
    let hs256 = schema(r#"{ algorithms = ["HS256"], secret_env = "JWT_SECRET" }"#);
    let short = "0123456789abcdef0123456789abcde"; // 31 bytes
    assert_eq!(short.len(), 31);
    for env in [
        vec![("APP_TOKEN", API_KEY), ("JWT_SECRET", short)],
        vec![("APP_TOKEN", API_KEY), ("JWT_SECRET", "")],
        vec![("APP_TOKEN", API_KEY)],
    ] {
        let (_, log) = refused_start(&hs256, &env).await;
        assert!(log.contains("JWT_SECRET"), "{log}");
        assert!(!log.contains(short), "the secret reached the log: {log}");
    }
    // 32 bytes is enough.
    let enough = "0123456789abcdef0123456789abcdef";
    let server = Server::start_with_env(
        &hs256,
        &[],
        &[("APP_TOKEN", API_KEY), ("JWT_SECRET", enough)],
    )
    .await;
    server.get("/bulletins").await.expect(200);
}

#[tokio::test]
async fn a_short_api_key_stops_the_server_naming_the_variable() {
    let (_, log) = refused_start(
        &schema(&rs256_pem()),
        &[("APP_TOKEN", "too-short-to-be-a-key")],
    )
    .await;
    assert!(log.contains("APP_TOKEN"), "{log}");
    assert!(!log.contains("too-short-to-be-a-key"), "{log}");
}

#[tokio::test]
async fn a_jwt_config_mixing_hmac_and_public_keys_or_naming_none_is_refused_at_start() {
    let env = [("APP_TOKEN", API_KEY), ("JWT_SECRET", HMAC_SECRET)];
    let mixed = schema(&format!(
        r#"{{ algorithms = ["RS256", "HS256"], public_key_file = '{}' }}"#,
        fixture("rsa_public.pem")
    ));
    let (_, log) = refused_start(&mixed, &env).await;
    assert!(log.contains("auth.jwt.algorithms"), "{log}");
    let none = schema(&format!(
        r#"{{ algorithms = ["none"], public_key_file = '{}' }}"#,
        fixture("rsa_public.pem")
    ));
    let (_, log) = refused_start(&none, &env).await;
    assert!(log.contains("auth.jwt.algorithms"), "{log}");
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

#[tokio::test]
async fn anonymous_callers_get_401_on_non_public_operations_and_public_ones_stay_open() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let note = alice.create("/notes", json!({"title": "private"})).await;
    let path = format!("/notes/{}", id_of(&note["id"]));
    let anonymous = Caller::anonymous(&server);
    for reply in [
        anonymous.get("/notes").await,
        anonymous.get(&path).await,
        anonymous.post("/notes", json!({"title": "anon"})).await,
        anonymous.patch(&path, json!({"title": "anon"})).await,
        anonymous.put(&path, json!({"title": "anon"})).await,
        anonymous.delete(&path).await,
        anonymous.post("/bulletins", json!({"text": "anon"})).await,
    ] {
        expect_unauthorized(&reply, false);
    }
    assert_eq!(server.count_in_database("notes").await, 1);
    assert_eq!(rows_where(&server, "notes", "title", "private").await, 1);
    assert_eq!(server.count_in_database("bulletins").await, 0);
    anonymous.get("/bulletins").await.expect(200);
    anonymous.get("/courses").await.expect(200);
}

#[tokio::test]
async fn an_anonymous_create_is_a_401_before_the_body_is_validated() {
    let server = start_rs256().await;
    // An anonymous caller learns nothing about the fields of a non-public create.
    expect_unauthorized(
        &Caller::anonymous(&server)
            .post("/notes", json!({"nope": 1}))
            .await,
        false,
    );
    // Nor about the fields of a non-public list.
    expect_unauthorized(
        &Caller::anonymous(&server).get("/notes?nope=1").await,
        false,
    );
    assert_eq!(server.count_in_database("notes").await, 0);
}

#[tokio::test]
async fn a_create_without_the_role_is_a_403_before_the_body_is_validated() {
    let server = start_rs256().await;
    Caller::user(&server, "alice")
        .post("/courses", json!({"name": "x", "nope": 1}))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(server.count_in_database("courses").await, 0);
}

#[tokio::test]
async fn owners_alone_update_and_delete_their_rows() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let bob = Caller::user(&server, "bob");
    let note = alice
        .create("/notes", json!({"title": "original", "body": "by alice"}))
        .await;
    let path = format!("/notes/{}", id_of(&note["id"]));

    bob.patch(&path, json!({"title": "bob was here"}))
        .await
        .expect_problem(404, "not_found");
    bob.put(&path, json!({"title": "bob was here"}))
        .await
        .expect_problem(404, "not_found");
    bob.delete(&path).await.expect_problem(404, "not_found");
    // Preconditions do not tell a foreign row from a missing one either.
    let if_match = Caller::with_headers(
        &server,
        &[
            ("authorization", &format!("Bearer {}", user_token("bob"))),
            ("if-match", "*"),
        ],
    );
    if_match
        .delete(&path)
        .await
        .expect_problem(404, "not_found");
    if_match
        .patch(&path, json!({"title": "bob was here"}))
        .await
        .expect_problem(404, "not_found");
    // Even an admin is not the owner.
    Caller::admin(&server, "root")
        .delete(&path)
        .await
        .expect_problem(404, "not_found");

    assert_eq!(server.count_in_database("notes").await, 1);
    assert_eq!(
        server
            .query_i64(
                "SELECT COUNT(*) FROM \"notes\" WHERE \"title\" = 'original' AND \"updated_by\" = 'alice'"
            )
            .await,
        1
    );
    assert_eq!(alice.get(&path).await.expect(200), note);

    // The owner may.
    let patched = alice
        .patch(&path, json!({"title": "edited"}))
        .await
        .expect(200);
    assert_eq!(patched["title"], "edited");
    assert_eq!(patched["updated_by"], "alice");
    alice
        .put(&path, json!({"title": "replaced"}))
        .await
        .expect(200);
    alice.delete(&path).await.expect(204);
    assert_eq!(server.count_in_database("notes").await, 0);
}

#[tokio::test]
async fn a_put_on_another_users_client_chosen_key_is_a_404_and_overwrites_nothing() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let bob = Caller::user(&server, "bob");
    let created = alice
        .put("/slots/monday", json!({"label": "by alice"}))
        .await
        .expect(201);
    assert_eq!(created["created_by"], "alice");
    bob.put("/slots/monday", json!({"label": "by bob"}))
        .await
        .expect_problem(404, "not_found");
    bob.get("/slots/monday")
        .await
        .expect_problem(404, "not_found");
    assert_eq!(server.count_in_database("slots").await, 1);
    assert_eq!(rows_where(&server, "slots", "label", "by alice").await, 1);
    assert_eq!(rows_where(&server, "slots", "updated_by", "alice").await, 1);
    // A key nobody holds is created for the caller.
    bob.put("/slots/tuesday", json!({"label": "by bob"}))
        .await
        .expect(201);
    assert_eq!(
        titles(
            bob.get("/slots").await.expect(200)["items"]
                .as_array()
                .unwrap(),
            "label"
        ),
        ["by bob"]
    );
}

#[tokio::test]
async fn creating_a_role_gated_resource_needs_the_role() {
    let server = start_rs256().await;
    Caller::user(&server, "alice")
        .post("/courses", json!({"name": "Algebra"}))
        .await
        .expect_problem(403, "forbidden");
    Caller::api_key(&server)
        .post("/courses", json!({"name": "Algebra"}))
        .await
        .expect_problem(403, "forbidden");
    expect_unauthorized(
        &Caller::anonymous(&server)
            .post("/courses", json!({"name": "Algebra"}))
            .await,
        false,
    );
    assert_eq!(server.count_in_database("courses").await, 0);

    let course = Caller::admin(&server, "root")
        .create("/courses", json!({"name": "Algebra"}))
        .await;
    assert_eq!(course["created_by"], "root");
    assert_eq!(server.count_in_database("courses").await, 1);

    // update = ["role:admin", "role:teacher"]; the role claim may be an array.
    let path = format!("/courses/{}", id_of(&course["id"]));
    let teacher = rs256(&claims("tess", json!(["staff", "teacher"])));
    Caller::bearer(&server, &teacher)
        .patch(&path, json!({"name": "Linear Algebra"}))
        .await
        .expect(200);
    Caller::user(&server, "alice")
        .patch(&path, json!({"name": "Hacked"}))
        .await
        .expect_problem(403, "forbidden");
    Caller::bearer(&server, &teacher)
        .delete(&path)
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(
        rows_where(&server, "courses", "name", "Linear Algebra").await,
        1
    );
}

#[tokio::test]
async fn lists_return_and_count_only_the_callers_rows() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let bob = Caller::user(&server, "bob");
    for i in 0..5 {
        alice
            .create("/notes", json!({"title": format!("alice {i}")}))
            .await;
        bob.create("/notes", json!({"title": format!("bob {i}")}))
            .await;
    }
    bob.create("/notes", json!({"title": "bob 5"})).await;
    assert_eq!(server.count_in_database("notes").await, 11);

    let page = alice.get("/notes?count=true").await.expect(200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{page}");
    assert_eq!(page["total"], 5);
    assert!(items.iter().all(|i| i["created_by"] == "alice"), "{page}");
    let page = bob.get("/notes?count=true").await.expect(200);
    assert_eq!(page["total"], 6);

    // Cursor walks, in either order and with a sort, never reach the other user's rows.
    for query in [
        "/notes?limit=2",
        "/notes?limit=1&sort=-title",
        "/notes?limit=3&sort=title",
    ] {
        let walked = alice.walk(query).await;
        assert_eq!(
            titles(&walked, "title"),
            ["alice 0", "alice 1", "alice 2", "alice 3", "alice 4"],
            "{query}"
        );
    }
    // Asking for the other user's rows by filter finds nothing, and counts nothing.
    let page = alice
        .get("/notes?created_by=bob&count=true")
        .await
        .expect(200);
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["total"], 0);
    let page = alice
        .get("/notes?title[like]=bob*&count=true")
        .await
        .expect(200);
    assert_eq!(page["total"], 0);
    // Offsets past the caller's rows do not reach anyone else's.
    let page = alice.get("/notes?offset=5&count=true").await.expect(200);
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["total"], 5);
    // Someone with no rows sees an empty list.
    let page = Caller::user(&server, "carol")
        .get("/notes?count=true")
        .await
        .expect(200);
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["total"], 0);
}

#[tokio::test]
async fn reading_another_users_row_is_a_404_like_a_missing_row() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let bob = Caller::user(&server, "bob");
    let note = alice.create("/notes", json!({"title": "diary"})).await;
    let id = id_of(&note["id"]);
    let foreign = bob
        .get(&format!("/notes/{id}"))
        .await
        .expect_problem(404, "not_found");
    let missing_id = "01890000-0000-7000-8000-000000000000";
    let missing = bob
        .get(&format!("/notes/{missing_id}"))
        .await
        .expect_problem(404, "not_found");
    assert_eq!(
        foreign["detail"],
        missing["detail"].as_str().unwrap().replace(missing_id, &id),
        "a foreign row must answer exactly like a missing one"
    );
    // HEAD and projections do not tell either.
    assert_eq!(
        bob.send("HEAD", &format!("/notes/{id}"), None).await.status,
        404
    );
    bob.get(&format!("/notes/{id}?fields=id"))
        .await
        .expect_problem(404, "not_found");
    alice.get(&format!("/notes/{id}")).await.expect(200);
}

#[tokio::test]
async fn users_cannot_set_created_by_or_updated_by() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    for field in ["created_by", "updated_by"] {
        let mut body = json!({"title": "forged"});
        body[field] = json!("bob");
        expect_read_only(&alice.post("/notes", body).await, &[field]);
    }
    let admin = Caller::admin(&server, "root");
    expect_read_only(
        &admin
            .post("/notes", json!({"title": "forged", "created_by": "bob"}))
            .await,
        &["created_by"],
    );
    assert_eq!(server.count_in_database("notes").await, 0);

    let note = alice.create("/notes", json!({"title": "real"})).await;
    let path = format!("/notes/{}", id_of(&note["id"]));
    expect_read_only(
        &alice.patch(&path, json!({"created_by": "bob"})).await,
        &["created_by"],
    );
    expect_read_only(
        &alice
            .put(&path, json!({"title": "real", "created_by": "bob"}))
            .await,
        &["created_by"],
    );
    expect_read_only(
        &alice.patch(&path, json!({"updated_by": "bob"})).await,
        &["updated_by"],
    );
    assert_eq!(rows_where(&server, "notes", "created_by", "alice").await, 1);
    assert_eq!(rows_where(&server, "notes", "created_by", "bob").await, 0);
    assert_eq!(rows_where(&server, "notes", "updated_by", "bob").await, 0);
    assert_eq!(alice.get(&path).await.expect(200), note);
}

#[tokio::test]
async fn nobody_can_set_a_field_that_is_not_writable_and_a_put_keeps_its_value() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let root = Caller::admin(&server, "root");
    expect_read_only(
        &alice
            .post("/profiles", json!({"name": "Alice", "role": "admin"}))
            .await,
        &["role"],
    );
    // writable = false holds for admins too.
    expect_read_only(
        &root
            .post("/profiles", json!({"name": "Root", "role": "superuser"}))
            .await,
        &["role"],
    );
    // In a bulk create the offending item is named.
    expect_read_only(
        &alice
            .post(
                "/profiles",
                json!([{"name": "A"}, {"name": "B", "role": "admin"}]),
            )
            .await,
        &["[1].role"],
    );
    assert_eq!(server.count_in_database("profiles").await, 0);

    let profile = alice.create("/profiles", json!({"name": "Alice"})).await;
    assert_eq!(profile["role"], "user");
    assert_eq!(profile["created_by"], "alice");
    let path = format!("/profiles/{}", id_of(&profile["id"]));
    expect_read_only(
        &alice.patch(&path, json!({"role": "admin"})).await,
        &["role"],
    );
    expect_read_only(
        &alice
            .put(&path, json!({"name": "Alice", "role": "admin"}))
            .await,
        &["role"],
    );
    assert_eq!(rows_where(&server, "profiles", "role", "admin").await, 0);

    // A replace by the owner leaves the field it may not write as it was.
    let replaced = alice
        .put(&path, json!({"name": "Alice L."}))
        .await
        .expect(200);
    assert_eq!(replaced["name"], "Alice L.");
    assert_eq!(replaced["role"], "user");
    assert_eq!(replaced["plan"], "free");
    assert_eq!(rows_where(&server, "profiles", "role", "user").await, 1);
    // delete = "none": not even the owner.
    alice.delete(&path).await.expect_problem(403, "forbidden");
    assert_eq!(server.count_in_database("profiles").await, 1);
}

#[tokio::test]
async fn only_admins_can_set_a_field_writable_by_admins_and_a_users_put_keeps_it() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let root = Caller::admin(&server, "root");
    expect_read_only(
        &alice
            .post("/profiles", json!({"name": "Alice", "plan": "pro"}))
            .await,
        &["plan"],
    );
    assert_eq!(server.count_in_database("profiles").await, 0);
    let own = root
        .create("/profiles", json!({"name": "Root", "plan": "pro"}))
        .await;
    assert_eq!(own["plan"], "pro");
    assert_eq!(own["role"], "user");

    // bulletins.pinned is writable by admins; update is open to any user.
    let bulletin = alice.create("/bulletins", json!({"text": "hello"})).await;
    assert_eq!(bulletin["pinned"], false);
    let path = format!("/bulletins/{}", id_of(&bulletin["id"]));
    expect_read_only(
        &alice.patch(&path, json!({"pinned": true})).await,
        &["pinned"],
    );
    expect_read_only(
        &Caller::api_key(&server)
            .patch(&path, json!({"pinned": true}))
            .await,
        &["pinned"],
    );
    let pinned = root.patch(&path, json!({"pinned": true})).await.expect(200);
    assert_eq!(pinned["pinned"], true);
    // A user's PUT replaces what the user may write and keeps `pinned`.
    let replaced = alice
        .put(&path, json!({"text": "edited"}))
        .await
        .expect(200);
    assert_eq!(replaced["text"], "edited");
    assert_eq!(replaced["pinned"], true, "{replaced}");
    assert_eq!(
        Caller::anonymous(&server).get(&path).await.expect(200)["pinned"],
        true
    );
}

#[tokio::test]
async fn hidden_fields_never_appear_and_cannot_be_filtered_sorted_or_selected() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let reply = alice
        .post(
            "/projects",
            json!({"name": "Apollo", "budget_code": "BC-7"}),
        )
        .await;
    let project = reply.expect(201);
    let leaks = |reply: &Reply| String::from_utf8_lossy(&reply.bytes).contains("BC-");
    assert!(
        !leaks(&reply) && project.get("budget_code").is_none(),
        "{project}"
    );
    assert_eq!(
        rows_where(&server, "projects", "budget_code", "BC-7").await,
        1
    );
    let id = id_of(&project["id"]);
    let path = format!("/projects/{id}");

    let task = alice
        .create("/tasks", json!({"title": "launch", "project_id": id}))
        .await;
    let task_path = format!("/tasks/{}", id_of(&task["id"]));
    for reply in [
        alice.get(&path).await,
        alice.get("/projects").await,
        alice.get("/projects?count=true&limit=1").await,
        alice.get(&format!("{task_path}?expand=project")).await,
        alice.get("/tasks?expand=project").await,
        alice
            .get(&format!("/projects/{id}/tasks?expand=project"))
            .await,
        alice.patch(&path, json!({"name": "Apollo 11"})).await,
        alice
            .put(&path, json!({"name": "Apollo 12", "budget_code": "BC-8"}))
            .await,
    ] {
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.bytes)
        );
        assert!(
            !leaks(&reply) && !String::from_utf8_lossy(&reply.bytes).contains("budget_code"),
            "a hidden field leaked: {}",
            String::from_utf8_lossy(&reply.bytes)
        );
    }
    let expanded = alice
        .get(&format!("{task_path}?expand=project"))
        .await
        .expect(200);
    assert_eq!(expanded["project"]["name"], "Apollo 12", "{expanded}");
    assert_eq!(
        rows_where(&server, "projects", "budget_code", "BC-8").await,
        1
    );

    for query in [
        "budget_code=BC-8",
        "budget_code[like]=BC*",
        "budget_code[null]=false",
        "budget_code[in]=BC-7,BC-8",
        "sort=budget_code",
        "sort=-budget_code",
        "sort=name,budget_code",
        "fields=budget_code",
        "fields=id,budget_code",
    ] {
        alice
            .get(&format!("/projects?{query}"))
            .await
            .expect_problem(400, "unknown_field");
    }
    alice
        .get(&format!("{path}?fields=id,budget_code"))
        .await
        .expect_problem(400, "unknown_field");
}

#[tokio::test]
async fn an_expanded_reference_to_a_row_the_caller_cannot_read_is_null() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let bob = Caller::user(&server, "bob");
    let project = alice.create("/projects", json!({"name": "Apollo"})).await;
    let project_id = id_of(&project["id"]);
    let task = alice
        .create(
            "/tasks",
            json!({"title": "launch", "project_id": project_id}),
        )
        .await;
    let task_path = format!("/tasks/{}?expand=project", id_of(&task["id"]));

    let seen_by_alice = alice.get(&task_path).await.expect(200);
    assert_eq!(seen_by_alice["project"]["name"], "Apollo");

    let seen_by_bob = bob.get(&task_path).await.expect(200);
    assert_eq!(seen_by_bob["title"], "launch");
    assert!(
        seen_by_bob.as_object().unwrap().contains_key("project")
            && seen_by_bob["project"].is_null(),
        "{seen_by_bob}"
    );
    let listed = bob.get("/tasks?expand=project").await.expect(200);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0]["project"].is_null(), "{listed}");
    assert!(!listed.to_string().contains("Apollo"), "{listed}");
}

#[tokio::test]
async fn a_nested_route_under_a_parent_the_caller_cannot_read_is_a_404() {
    let server = start_rs256().await;
    let alice = Caller::user(&server, "alice");
    let bob = Caller::user(&server, "bob");
    let project = alice.create("/projects", json!({"name": "Apollo"})).await;
    let project_id = id_of(&project["id"]);
    let task = alice
        .create(
            "/tasks",
            json!({"title": "launch", "project_id": project_id}),
        )
        .await;
    let task_id = id_of(&task["id"]);

    let listed = alice
        .get(&format!("/projects/{project_id}/tasks"))
        .await
        .expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    alice
        .get(&format!("/projects/{project_id}/tasks/{task_id}"))
        .await
        .expect(200);

    let foreign = bob
        .get(&format!("/projects/{project_id}/tasks?count=true"))
        .await
        .expect_problem(404, "not_found");
    let missing_id = "01890000-0000-7000-8000-000000000000";
    let missing = bob
        .get(&format!("/projects/{missing_id}/tasks?count=true"))
        .await
        .expect_problem(404, "not_found");
    assert_eq!(
        foreign["detail"],
        missing["detail"]
            .as_str()
            .unwrap()
            .replace(missing_id, &project_id),
        "a foreign parent must answer exactly like a missing one"
    );
    bob.get(&format!("/projects/{project_id}/tasks/{task_id}"))
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn an_operation_without_a_rule_is_forbidden_for_everyone() {
    let server = start_rs256().await;
    let anonymous = Caller::anonymous(&server);
    let alice = Caller::user(&server, "alice");
    let root = Caller::admin(&server, "root");
    let kiosk = Caller::api_key(&server);
    for caller in [&anonymous, &alice, &root, &kiosk] {
        caller
            .post("/archive", json!({"entry": "x"}))
            .await
            .expect_problem(403, "forbidden");
        caller.get("/archive").await.expect(200);
        for reply in [
            caller.get("/vault").await,
            caller.post("/vault", json!({"entry": "x"})).await,
            caller
                .get("/vault/01890000-0000-7000-8000-000000000000")
                .await,
            caller
                .patch(
                    "/vault/01890000-0000-7000-8000-000000000000",
                    json!({"entry": "x"}),
                )
                .await,
            caller
                .delete("/vault/01890000-0000-7000-8000-000000000000")
                .await,
        ] {
            reply.expect_problem(403, "forbidden");
        }
    }
    assert_eq!(server.count_in_database("archive").await, 0);
    assert_eq!(server.count_in_database("vault").await, 0);
}

// ---------------------------------------------------------------------------
// Without [auth]
// ---------------------------------------------------------------------------

#[tokio::test]
async fn without_an_auth_section_everything_is_public() {
    let prototype = format!("[app]\nname = \"prototype\"\n{RESOURCES}");
    let server = Server::start(&prototype).await;
    let anonymous = Caller::anonymous(&server);
    let note = anonymous.create("/notes", json!({"title": "open"})).await;
    assert!(note["created_by"].is_null(), "{note}");
    let path = format!("/notes/{}", id_of(&note["id"]));
    anonymous.get(&path).await.expect(200);
    let page = anonymous.get("/notes?count=true").await.expect(200);
    assert_eq!(page["total"], 1);
    anonymous
        .patch(&path, json!({"title": "edited"}))
        .await
        .expect(200);
    anonymous.delete(&path).await.expect(204);
    // Role-gated and rule-less operations are open too.
    anonymous
        .create("/courses", json!({"name": "Open course"}))
        .await;
    let entry = anonymous.create("/vault", json!({"entry": "open"})).await;
    anonymous
        .delete(&format!("/vault/{}", id_of(&entry["id"])))
        .await
        .expect(204);
    // Hidden still means hidden.
    let project = anonymous
        .create("/projects", json!({"name": "P", "budget_code": "BC-1"}))
        .await;
    assert!(project.get("budget_code").is_none(), "{project}");
    assert_eq!(server.count_in_database("courses").await, 1);
}
