//! The Lambda adapter on recorded event JSON (tests/fixtures/lambda/): every
//! event shape that carries an HTTP request — API Gateway REST API (payload
//! 1.0, with a stage, a custom domain, a base64 body, multi-value query
//! strings and a Cognito authorizer), HTTP API (2.0, with cookies and a JWT
//! authorizer), ALB with and without multi-value headers, Function URL —
//! answered by the same router the server uses, on a real SQLite database.
//! Each test asserts the reply the caller gets: status, headers, body, and
//! what the database holds afterwards. The binary against a real Runtime API
//! emulator is tests/lambda_runtime.rs.

mod common;

use std::path::Path;

use anteroom_engine::config::MigrateOnStart;
use anteroom_engine::storage::ConnectOptions;
use anteroom_engine::{Settings, app, lambda, server};
use axum::Router;
use base64::Engine;
use serde_json::{Value, json};

const AWS_REQUEST_ID: &str = "52fdfc07-2182-454f-963f-5f0f9a621d72";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lambda")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

/// The router of `schema` over a fresh SQLite file, configured as on Lambda
/// (no event streams).
async fn lambda_app(schema: &str) -> (tempfile::TempDir, Router) {
    let (dir, path) = common::schema_dir(schema);
    let url = format!("sqlite://{}", dir.path().join("lambda.db").display());
    let settings = Settings {
        max_streams: 0,
        ..Settings::default()
    };
    let state = server::prepare(
        &path,
        &url,
        &ConnectOptions::default(),
        settings,
        MigrateOnStart::Apply,
    )
    .await
    .expect("state");
    (dir, app(state))
}

fn schema() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lambda/anteroom.toml"),
    )
    .expect("schema")
}

async fn invoke(router: &Router, event: Value) -> Value {
    invoke_under(router, event, None).await
}

async fn invoke_under(router: &Router, event: Value, base_path: Option<&str>) -> Value {
    lambda::invoke(router.clone(), event, AWS_REQUEST_ID, base_path)
        .await
        .expect("an HTTP event")
}

/// The body of a reply as JSON, decoding base64 where the reply says so.
fn body(reply: &Value) -> Value {
    let text = reply["body"].as_str().expect("a body string");
    let bytes = if reply["isBase64Encoded"] == json!(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64")
    } else {
        text.as_bytes().to_vec()
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// A v1 event moved to another method, path and body, without a query.
fn v1_at(mut event: Value, method: &str, path: &str, body: Option<Value>) -> Value {
    event["queryStringParameters"] = Value::Null;
    event["multiValueQueryStringParameters"] = Value::Null;
    event["httpMethod"] = json!(method);
    event["path"] = json!(path);
    event["requestContext"]["path"] = json!(format!("/dev{path}"));
    event["requestContext"]["httpMethod"] = json!(method);
    match body {
        Some(b) => {
            event["body"] = json!(b.to_string());
            event["isBase64Encoded"] = json!(false);
        }
        None => {
            event["body"] = Value::Null;
            event["isBase64Encoded"] = json!(false);
        }
    }
    event
}

#[tokio::test]
async fn a_rest_api_event_with_a_stage_a_base64_body_and_cognito_claims_creates_a_row_owned_by_the_authorizers_subject()
 {
    let (_dir, router) = lambda_app(&schema()).await;
    let reply = invoke(&router, fixture("rest-v1-create-cognito.json")).await;

    assert_eq!(reply["statusCode"], 201, "{reply:#}");
    assert_eq!(reply["isBase64Encoded"], false);
    let headers = &reply["multiValueHeaders"];
    // The stage is the external base path: the client follows /dev/students/1.
    assert_eq!(headers["location"], json!(["/dev/students/1"]));
    assert_eq!(headers["content-type"], json!(["application/json"]));
    assert_eq!(headers["x-request-id"], json!([AWS_REQUEST_ID]));
    assert!(headers["etag"][0].as_str().unwrap().starts_with('"'));
    assert!(
        reply.get("headers").is_none(),
        "v1 replies use multiValueHeaders only"
    );
    let created = body(&reply);
    assert_eq!(created["name"], "Ada Lovelace");
    assert_eq!(
        created["created_by"],
        "7d8ca528-4931-4254-9273-ea5ee853f271"
    );
    assert_eq!(
        created["updated_by"],
        "7d8ca528-4931-4254-9273-ea5ee853f271"
    );

    // The row is in the database, readable at the path the Location named.
    let read = invoke(
        &router,
        v1_at(
            fixture("rest-v1-list-multi-value-query.json"),
            "GET",
            "/students/1",
            None,
        ),
    )
    .await;
    assert_eq!(read["statusCode"], 200);
    assert_eq!(body(&read)["created_by"], created["created_by"]);
}

#[tokio::test]
async fn a_rest_api_list_reads_its_multi_value_query_string_and_a_repeated_parameter_arrives_twice()
{
    let (_dir, router) = lambda_app(&schema()).await;
    let create = fixture("rest-v1-create-cognito.json");
    for (name, major) in [("Ada", "math"), ("Emmy", "math"), ("Marie", "physics")] {
        let event = v1_at(
            create.clone(),
            "POST",
            "/students",
            Some(json!({"name": name, "major": major})),
        );
        assert_eq!(invoke(&router, event).await["statusCode"], 201);
    }
    let reply = invoke(&router, fixture("rest-v1-list-multi-value-query.json")).await;
    assert_eq!(reply["statusCode"], 200, "{reply:#}");
    let names: Vec<Value> = body(&reply)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    // major=math, sort=-name.
    assert_eq!(names, [json!("Emmy"), json!("Ada")]);

    // Two values of one parameter reach the parser as two: `limit` may not repeat.
    let reply = invoke(&router, fixture("rest-v1-repeated-query-parameter.json")).await;
    assert_eq!(reply["statusCode"], 400, "{reply:#}");
    let problem = body(&reply);
    assert_eq!(problem["code"], "malformed_query");
    assert_eq!(
        reply["multiValueHeaders"]["content-type"],
        json!(["application/problem+json"])
    );
}

#[tokio::test]
async fn a_body_marked_base64_that_is_not_is_a_400_problem_in_the_events_format_and_writes_nothing()
{
    let (_dir, router) = lambda_app(&schema()).await;
    let reply = invoke(&router, fixture("rest-v1-body-not-base64.json")).await;
    assert_eq!(reply["statusCode"], 400, "{reply:#}");
    let problem = body(&reply);
    assert_eq!(problem["code"], "malformed_event");
    assert!(
        problem["detail"].as_str().unwrap().contains("base64"),
        "{problem}"
    );
    assert_eq!(
        reply["multiValueHeaders"]["x-request-id"],
        json!([AWS_REQUEST_ID])
    );

    // A header value API Gateway would never send, and a method that is not one.
    let mut event = fixture("rest-v1-list-multi-value-query.json");
    event["multiValueHeaders"]["X-Bad"] = json!(["line\nbreak"]);
    let reply = invoke(&router, event).await;
    assert_eq!(reply["statusCode"], 400);
    assert_eq!(body(&reply)["code"], "malformed_event");
    let mut event = fixture("rest-v1-list-multi-value-query.json");
    event["httpMethod"] = json!("GET / HTTP");
    assert_eq!(invoke(&router, event).await["statusCode"], 400);

    let list = invoke(&router, fixture("rest-v1-list-multi-value-query.json")).await;
    assert_eq!(body(&list)["items"], json!([]), "nothing was written");
}

#[tokio::test]
async fn a_custom_domain_base_path_is_stripped_from_the_path_and_carried_by_location() {
    let (_dir, router) = lambda_app(&schema()).await;
    let created = invoke(&router, fixture("rest-v1-create-cognito.json")).await;
    assert_eq!(created["statusCode"], 201);

    // The base path is derived from the request context's path.
    let reply = invoke(&router, fixture("rest-v1-custom-domain.json")).await;
    assert_eq!(reply["statusCode"], 200, "{reply:#}");
    assert_eq!(body(&reply)["name"], "Ada Lovelace");

    // Where the event's path keeps it, the configured base path strips it,
    // and Location carries it.
    let mut event = v1_at(
        fixture("rest-v1-create-cognito.json"),
        "POST",
        "/api/students",
        Some(json!({"name": "Emmy Noether"})),
    );
    event["requestContext"]["path"] = json!("/api/students");
    let reply = invoke_under(&router, event, Some("/api")).await;
    assert_eq!(reply["statusCode"], 201, "{reply:#}");
    assert_eq!(
        reply["multiValueHeaders"]["location"],
        json!(["/api/students/2"])
    );
    // A path outside the base path is not stripped: no such resource.
    let event = v1_at(
        fixture("rest-v1-list-multi-value-query.json"),
        "GET",
        "/apix/students",
        None,
    );
    let reply = invoke_under(&router, event, Some("/api")).await;
    assert_eq!(reply["statusCode"], 404);
}

#[tokio::test]
async fn an_http_api_event_loses_its_stage_sends_its_cookies_and_is_answered_in_the_v2_format() {
    let (_dir, router) = lambda_app(&schema()).await;
    let created = invoke(&router, fixture("http-v2-create-jwt-authorizer.json")).await;
    assert_eq!(created["statusCode"], 201, "{created:#}");
    // v2 replies: one value per header name, cookies apart.
    assert_eq!(created["headers"]["location"], "/dev/students/1");
    assert_eq!(created["cookies"], json!([]));
    assert!(created.get("multiValueHeaders").is_none());
    // The JWT authorizer's subject is the creator.
    assert_eq!(body(&created)["created_by"], "u-grace");

    let reply = invoke(&router, fixture("http-v2-get-with-cookies.json")).await;
    assert_eq!(reply["statusCode"], 200, "{reply:#}");
    assert_eq!(reply["headers"]["content-type"], "application/json");
    assert_eq!(reply["headers"]["x-request-id"], AWS_REQUEST_ID);
    // rawQueryString's fields=name,major: only those come back.
    assert_eq!(body(&reply), json!({"name": "Grace Hopper", "major": "cs"}));
}

#[tokio::test]
async fn a_load_balancer_is_answered_in_the_header_form_its_event_used() {
    let (_dir, router) = lambda_app(&schema()).await;
    let create = fixture("rest-v1-create-cognito.json");
    invoke(&router, create).await;

    for (file, multi) in [
        ("alb-multi-value.json", true),
        ("alb-single-value.json", false),
    ] {
        let reply = invoke(&router, fixture(file)).await;
        assert_eq!(reply["statusCode"], 200, "{file}: {reply:#}");
        assert_eq!(reply["statusDescription"], "200 OK");
        if multi {
            assert_eq!(
                reply["multiValueHeaders"]["content-type"],
                json!(["application/json"])
            );
            assert!(reply.get("headers").is_none());
        } else {
            assert_eq!(reply["headers"]["content-type"], "application/json");
            assert!(reply.get("multiValueHeaders").is_none());
        }
        // The balancer passes the query as sent: name=Ada%20Lovelace decodes once.
        let names: Vec<Value> = body(&reply)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].clone())
            .collect();
        assert_eq!(names, [json!("Ada Lovelace")], "{file}");
    }
}

#[tokio::test]
async fn a_function_url_event_is_served_and_its_iam_authorizer_is_no_identity() {
    let (_dir, router) = lambda_app(&schema()).await;
    invoke(&router, fixture("rest-v1-create-cognito.json")).await;
    let reply = invoke(&router, fixture("function-url-list-iam.json")).await;
    assert_eq!(reply["statusCode"], 200, "{reply:#}");
    assert_eq!(body(&reply)["items"][0]["name"], "Ada Lovelace");
    // No stage: nothing was stripped, and the reply is in the 2.0 format.
    assert_eq!(reply["cookies"], json!([]));

    // IAM auth names an AWS principal, not a user of this API: a create is 401.
    let mut event = fixture("function-url-list-iam.json");
    event["requestContext"]["http"]["method"] = json!("POST");
    event["rawQueryString"] = json!("");
    event["body"] = json!(r#"{"name":"Mallory"}"#);
    event["headers"]["content-type"] = json!("application/json");
    let reply = invoke(&router, event).await;
    assert_eq!(reply["statusCode"], 401, "{reply:#}");
    assert_eq!(body(&reply)["code"], "unauthorized");
}

#[tokio::test]
async fn queue_routes_work_through_events_and_event_streams_say_to_poll_instead() {
    let (_dir, router) = lambda_app(&schema()).await;
    let base = fixture("rest-v1-create-cognito.json");
    assert_eq!(invoke(&router, base.clone()).await["statusCode"], 201);

    // Ada (the claims' subject) joins with her own student row...
    let join = v1_at(
        base.clone(),
        "POST",
        "/queues/help/entries",
        Some(json!({"member_id": 1})),
    );
    let joined = invoke(&router, join).await;
    assert_eq!(joined["statusCode"], 201, "{joined:#}");
    let entry = body(&joined);
    assert_eq!(entry["status"], "waiting");
    let location = format!("/dev/queues/help/entries/{}", entry["id"].as_str().unwrap());
    assert_eq!(joined["multiValueHeaders"]["location"], json!([location]));

    // ...and, being staff too, calls the next one.
    let next = invoke(
        &router,
        v1_at(base.clone(), "POST", "/queues/help/next", None),
    )
    .await;
    assert_eq!(next["statusCode"], 200, "{next:#}");
    assert_eq!(body(&next)["status"], "serving");
    assert_eq!(body(&next)["id"], entry["id"]);

    // A stream cannot be held open through API Gateway: 501, with what to do.
    let path = format!(
        "/queues/help/entries/{}/events",
        entry["id"].as_str().unwrap()
    );
    let stream = invoke(&router, v1_at(base.clone(), "GET", &path, None)).await;
    assert_eq!(stream["statusCode"], 501, "{stream:#}");
    let problem = body(&stream);
    assert_eq!(problem["code"], "streams_unavailable");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("If-None-Match")
    );

    // Polling with the ETag is the answer: 304 until the entry changes.
    let path = format!("/queues/help/entries/{}", entry["id"].as_str().unwrap());
    let read = invoke(&router, v1_at(base.clone(), "GET", &path, None)).await;
    let etag = read["multiValueHeaders"]["etag"][0].clone();
    let mut poll = v1_at(base.clone(), "GET", &path, None);
    poll["multiValueHeaders"]["If-None-Match"] = json!([etag]);
    assert_eq!(invoke(&router, poll).await["statusCode"], 304);
}

#[tokio::test]
async fn claims_are_ignored_unless_the_schema_trusts_the_gateway() {
    // The same API verifying its own tokens instead of trusting the gateway.
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsa_public.pem");
    let untrusting = schema().replace(
        "gateway_claims = { subject_claim = \"sub\", role_claim = \"cognito:groups\" }",
        &format!(
            "jwt = {{ algorithms = [\"RS256\"], public_key_file = {:?} }}",
            key.display().to_string()
        ),
    );
    assert_ne!(untrusting, schema());
    let (_dir, router) = lambda_app(&untrusting).await;
    let reply = invoke(&router, fixture("rest-v1-create-cognito.json")).await;
    assert_eq!(reply["statusCode"], 401, "{reply:#}");
    let list = invoke(&router, fixture("rest-v1-list-multi-value-query.json")).await;
    assert_eq!(body(&list)["items"], json!([]));
}

#[tokio::test]
async fn over_plain_http_no_header_can_claim_an_authorizer_identity() {
    let server = common::Server::start(&schema()).await;
    let context = json!({"authorizer": {"claims": {"sub": "forged", "cognito:groups": "admin"}}});
    for header in [
        "x-amzn-request-context",
        "x-apigateway-context",
        "requestcontext",
    ] {
        let context = context.to_string();
        let reply = server
            .send(
                "POST",
                "/students",
                Some(json!({"name": "Mallory"})),
                &[(header, context.as_str())],
            )
            .await;
        reply.expect_problem(401, "unauthorized");
    }
    assert_eq!(server.count_in_database("students").await, 0);
}

#[tokio::test]
async fn an_event_that_is_not_an_http_request_is_an_invocation_error() {
    let (_dir, router) = lambda_app(&schema()).await;
    for event in [fixture("sqs-not-http.json"), json!("text"), json!(null)] {
        let result = lambda::invoke(router.clone(), event, AWS_REQUEST_ID, None).await;
        assert!(result.is_err(), "{result:?}");
    }
}
