//! The OpenAPI 3.1 document: served at `/openapi.json` (ETag, 304, HEAD),
//! printed by `anteroom openapi`, describing every field type, constraint,
//! rule and auth method exactly as the server enforces them, and, for every
//! example, identical to its reviewed snapshot under `tests/snapshots/`
//! (regenerate on purpose with `UPDATE_SNAPSHOTS=1 cargo test --test openapi`).

mod common;

use common::{Server, cli, repo_root, schema_dir};
use serde_json::{Value, json};

const SECRET: &str = "openapi-secret-0123456789abcdefghijklmnop";

/// Every field type, constraint, rule and auth method.
const EVERYTHING: &str = r#"
[app]
name = "everything"

[auth]
jwt = { algorithms = ["HS256"], secret_env = "JWT_SECRET" }
api_keys = { env = "APP_TOKEN", header = "x-api-key", query = "app_token", role = "service" }
accounts = { secret_env = "ACCOUNTS_SECRET" }

[resources.colleges]
id = { type = "integer" }
fields.name = { type = "string", required = true, min_length = 2, max_length = 80, pattern = "[A-Z][a-z ]+" }
fields.tld  = { type = "string", required = true, unique = true, lowercase = true }
rules = { list = "public", read = "public", create = "role:admin", update = "role:admin", delete = "none" }

[resources.things]
fields.s     = { type = "string", format = "email" }
fields.u     = { type = "string", format = "url" }
fields.t     = { type = "text", max_length = 5000 }
fields.i     = { type = "integer", min = 1, max = 10, default = 5 }
fields.f     = { type = "float", min = 0.5 }
fields.dec   = { type = "decimal" }
fields.b     = { type = "boolean", required = true, default = true }
fields.ts    = { type = "timestamp" }
fields.d     = { type = "date" }
fields.uu    = { type = "uuid" }
fields.j     = { type = "json" }
fields.e     = { type = "enum", values = ["low", "high"] }
fields.college_id = { type = "ref", to = "colleges", required = true }
fields.secret = { type = "string", hidden = true }
fields.level  = { type = "string", writable = "role:admin" }
rules = { list = "authenticated", read = "owner", create = "authenticated", update = "owner", delete = "owner" }

[resources.keys]
id = { type = "string", name = "code", max_length = 16 }
fields.v = { type = "string" }
rules = { list = "public", read = "public", create = "public", update = "public", delete = "public" }
"#;

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("JWT_SECRET", SECRET),
        ("APP_TOKEN", SECRET),
        ("ACCOUNTS_SECRET", SECRET),
    ]
}

async fn everything() -> (Server, Value) {
    let server = Server::start_with_env(EVERYTHING, &[], &env()).await;
    let doc = server.get("/openapi.json").await.expect(200);
    (server, doc)
}

#[track_caller]
fn at<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("the document has nothing at {pointer}"))
}

fn param<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc["components"]["parameters"]
        .as_object()
        .unwrap()
        .values()
        .find(|p| p["name"] == name)
}

#[tokio::test]
async fn the_document_is_served_with_an_etag_revalidated_with_304_and_answers_head() {
    let server = Server::start(
        "[app]\nname='small'\n[resources.notes]\nfields.title={type='string',required=true}\n",
    )
    .await;
    let reply = server.get("/openapi.json").await;
    let doc = reply.expect(200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    let etag = reply.header("etag").expect("etag");
    let again = server
        .send("GET", "/openapi.json", None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, 304);
    assert!(again.bytes.is_empty());
    let head = server.send("HEAD", "/openapi.json", None, &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.bytes.is_empty());
    assert_eq!(head.header("etag"), Some(etag));
    server
        .send("POST", "/openapi.json", None, &[])
        .await
        .expect_problem(405, "method_not_allowed");
    // The document describes itself too.
    assert!(doc["paths"]["/openapi.json"]["get"].is_object());
}

#[tokio::test]
async fn a_weak_a_listed_or_a_star_etag_in_if_none_match_also_answers_304() {
    let server = Server::start(
        "[app]\nname='small'\n[resources.notes]\nfields.title={type='string',required=true}\n",
    )
    .await;
    let etag = server
        .get("/openapi.json")
        .await
        .header("etag")
        .expect("etag");
    let status = async |value: &str| {
        server
            .send("GET", "/openapi.json", None, &[("if-none-match", value)])
            .await
            .status
    };
    assert_eq!(status(&format!("W/{etag}")).await, 304);
    assert_eq!(status(&format!("\"other\", W/{etag}")).await, 304);
    assert_eq!(status(&format!("\"other\",{etag}")).await, 304);
    assert_eq!(status("*").await, 304);
    assert_eq!(status("\"other\", W/\"another\"").await, 200);
}

#[tokio::test]
async fn the_cli_prints_exactly_the_document_the_server_serves() {
    let (server, served) = everything().await;
    let out = cli(&["openapi", server.schema_path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(printed, served);
}

#[tokio::test]
async fn every_field_type_and_constraint_is_in_the_schemas_as_the_server_enforces_it() {
    let (_server, doc) = everything().await;
    let colleges = at(&doc, "/components/schemas/colleges.create");
    assert_eq!(colleges["additionalProperties"], false);
    assert_eq!(colleges["required"], json!(["name", "tld"]));
    let name = &colleges["properties"]["name"];
    assert_eq!(name["minLength"], 2);
    assert_eq!(name["maxLength"], 80);
    assert_eq!(name["pattern"], "^(?:[A-Z][a-z ]+)$");
    // Strings without max_length are 255 characters at most.
    assert_eq!(colleges["properties"]["tld"]["maxLength"], 255);

    let things = at(&doc, "/components/schemas/things.create");
    let p = &things["properties"];
    assert_eq!(p["s"]["format"], "email");
    assert_eq!(p["s"]["type"], json!(["string", "null"]));
    assert_eq!(p["u"]["format"], "uri");
    assert_eq!(p["t"]["maxLength"], 5000);
    assert_eq!(p["i"]["minimum"], 1);
    assert_eq!(p["i"]["maximum"], 10);
    assert_eq!(p["i"]["default"], 5);
    assert_eq!(p["f"]["minimum"], 0.5);
    assert_eq!(p["dec"]["type"], json!(["string", "number", "null"]));
    assert_eq!(p["b"]["type"], "boolean");
    assert_eq!(p["ts"]["format"], "date-time");
    assert_eq!(p["d"]["format"], "date");
    assert_eq!(p["uu"]["format"], "uuid");
    assert_eq!(p["e"]["enum"], json!(["low", "high", null]));
    assert_eq!(p["college_id"]["type"], "integer");
    assert!(
        p["level"]["description"]
            .as_str()
            .unwrap()
            .contains("role admin")
    );
    // Server-set fields are not in request bodies; hidden ones are write-only.
    for absent in ["id", "created_at", "created_by"] {
        assert!(p.get(absent).is_none(), "{absent} in things.create");
    }
    assert_eq!(p["secret"]["writeOnly"], true);
    // A required field with a default (b) is optional.
    assert_eq!(things["required"], json!(["college_id"]));
    assert_eq!(
        at(&doc, "/components/schemas/things.update")["required"],
        json!([])
    );

    let read = at(&doc, "/components/schemas/things");
    assert_eq!(read["properties"]["id"]["readOnly"], true);
    assert_eq!(read["properties"]["created_at"]["readOnly"], true);
    assert!(read["properties"].get("secret").is_none());
    assert!(read["properties"]["dec"]["type"] == json!(["string", "null"]));

    // A client-chosen key is the path parameter, and required on create.
    let key = at(&doc, "/paths/~1keys~1{code}/parameters/0");
    assert_eq!(key["name"], "code");
    assert_eq!(key["schema"]["maxLength"], 16);
    assert_eq!(
        at(&doc, "/components/schemas/keys.create")["required"],
        json!(["code"])
    );
    assert!(
        at(&doc, "/paths/~1keys~1{code}/put/responses")
            .get("201")
            .is_some()
    );
}

#[tokio::test]
async fn filters_exist_exactly_for_the_operators_each_type_accepts() {
    let (_server, doc) = everything().await;
    assert!(param(&doc, "s[ilike]").is_some());
    assert!(param(&doc, "i[ilike]").is_none());
    assert!(param(&doc, "i[gte]").is_some());
    assert!(param(&doc, "b[gt]").is_none());
    assert!(param(&doc, "j[null]").is_some());
    assert!(param(&doc, "j[eq]").is_none() && param(&doc, "j").is_none());
    assert!(
        param(&doc, "secret").is_none(),
        "hidden fields are not filters"
    );
    // An [in] list travels as one comma-separated string; integer ones have a pattern.
    let in_list = param(&doc, "college_id[in]").unwrap();
    assert_eq!(in_list["schema"]["type"], "string");
    assert_eq!(in_list["schema"]["pattern"], "^[+-]?[0-9]+(,[+-]?[0-9]+)*$");
    assert!(
        param(&doc, "s[in]").unwrap()["schema"]
            .get("pattern")
            .is_none()
    );
    let e = param(&doc, "e").unwrap();
    assert_eq!(e["schema"]["enum"], json!(["low", "high"]));
    let sort = doc["components"]["parameters"]["things.sort"]["schema"]["items"]["enum"]
        .as_array()
        .unwrap();
    assert!(sort.contains(&json!("-ts")) && !sort.contains(&json!("j")));
    let limit = param(&doc, "limit").unwrap();
    assert_eq!(limit["schema"]["maximum"], 1000);
}

#[tokio::test]
async fn security_follows_each_operations_rule_and_problems_list_the_catalogue() {
    let (_server, doc) = everything().await;
    let schemes = at(&doc, "/components/securitySchemes");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["apiKeyHeader"]["name"], "x-api-key");
    assert_eq!(schemes["apiKeyQuery"]["in"], "query");
    // Public: credentials optional. Authenticated: required.
    let public = at(&doc, "/paths/~1colleges/get/security")
        .as_array()
        .unwrap();
    assert!(public.contains(&json!({})));
    let private = at(&doc, "/paths/~1things/get/security").as_array().unwrap();
    assert!(!private.contains(&json!({})) && private.contains(&json!({"bearer": []})));
    // 403 only where a role can refuse.
    assert!(
        at(&doc, "/paths/~1colleges/post/responses")
            .get("403")
            .is_some()
    );
    assert!(
        at(&doc, "/paths/~1things/post/responses")
            .get("403")
            .is_none()
    );
    // The problem schema lists exactly the catalogue's codes.
    let codes = at(&doc, "/components/schemas/Problem/properties/code/enum")
        .as_array()
        .unwrap()
        .len();
    assert_eq!(codes, anteroom_engine::error::Code::ALL.len());
    // Routes: accounts, nested children, HEAD wherever GET is.
    for path in [
        "/auth/signup",
        "/auth/login",
        "/auth/me",
        "/auth/password",
        "/auth/logout-all",
        "/colleges/{college_id}/things",
        "/health",
        "/",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert_eq!(
            item.get("get").is_some(),
            item.get("head").is_some(),
            "{path}"
        );
    }
    // Created rows link to reading, updating and deleting them.
    let links = at(&doc, "/paths/~1things/post/responses/201/links");
    assert_eq!(links["read"]["operationId"], "read_things");
}

#[tokio::test]
async fn a_pattern_json_schema_would_read_differently_is_refused_by_check() {
    let schema = "[app]\nname='p'\n[resources.a]\nfields.code={type='string',pattern='\\d{3}'}\n";
    let (dir, path) = schema_dir(schema);
    let out = cli(&["check", path.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("resources.a.fields.code.pattern"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("[0-9]"), "{}", out.stderr);
    drop(dir);
}

#[test]
fn every_examples_document_matches_its_reviewed_snapshot() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut stale = Vec::new();
    for example in ["office-hours", "users", "accounts", "courses", "records"] {
        let schema = repo_root().join(format!("examples/{example}/anteroom.toml"));
        let out = cli(&["openapi", schema.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{example}: {}", out.stderr);
        let snapshot = repo_root().join(format!(
            "crates/anteroom/tests/snapshots/{example}.openapi.json"
        ));
        if update {
            std::fs::write(&snapshot, &out.stdout).expect("write snapshot");
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if expected != out.stdout {
            stale.push(example);
        }
    }
    assert!(
        stale.is_empty(),
        "the documents of {stale:?} changed: review the difference and regenerate with \
         UPDATE_SNAPSHOTS=1 cargo test -p anteroom --test openapi"
    );
}
