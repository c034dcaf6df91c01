//! Bad input, end to end: every way a write or a read can be refused, checked
//! against the real binary. Each test asserts the status, that the body is
//! `application/problem+json` with its stable `code` (and, for validation, one
//! `errors` entry per failing field), that no error body leaks SQL or database
//! internals, and that the database is exactly as it was before the request.

mod common;

use std::time::Duration;

use common::{Reply, Server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One resource with a field of every type and every constraint, a referenced
/// parent, a client-keyed resource and a UUID-keyed one.
const SCHEMA: &str = r#"
[app]
name = "bad-input"

[resources.colleges]
id = { type = "integer" }
fields.name = { type = "string", required = true }

[resources.students]
id = { type = "integer" }
fields.name       = { type = "string", required = true, min_length = 2, max_length = 20 }
fields.email      = { type = "string", required = true, unique = true, format = "email" }
fields.homepage   = { type = "string", format = "url" }
fields.badge      = { type = "string", format = "uuid" }
fields.code       = { type = "string", pattern = "[A-Z]{3}-[0-9]{2}" }
fields.bio        = { type = "text", max_length = 40 }
fields.age        = { type = "integer", min = 16, max = 99 }
fields.gpa        = { type = "float", min = 0.0, max = 4.0 }
fields.balance    = { type = "decimal", min = -100, max = 100 }
fields.active     = { type = "boolean", default = true }
fields.seen_at    = { type = "timestamp" }
fields.born_on    = { type = "date" }
fields.external   = { type = "uuid" }
fields.level      = { type = "enum", values = ["freshman", "senior"] }
fields.college_id = { type = "ref", to = "colleges" }
fields.profile    = { type = "json" }

[resources.users]
id = { type = "string", name = "userId", max_length = 32 }
fields.name = { type = "string", required = true }

[resources.notes]
fields.body = { type = "text", required = true }
"#;

/// Referential actions: majors cascade with their college, advisors are
/// detached from it, students restrict the deletion of their major.
const REFS_SCHEMA: &str = r#"
[app]
name = "refs"

[resources.colleges]
id = { type = "integer" }
fields.name = { type = "string", required = true }

[resources.majors]
id = { type = "integer" }
fields.name       = { type = "string", required = true }
fields.college_id = { type = "ref", to = "colleges", required = true, on_delete = "cascade" }

[resources.advisors]
id = { type = "integer" }
fields.name       = { type = "string", required = true }
fields.college_id = { type = "ref", to = "colleges", on_delete = "set_null" }

[resources.students]
id = { type = "integer" }
fields.name     = { type = "string", required = true }
fields.major_id = { type = "ref", to = "majors" }
"#;

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Words that must never appear in an error body: SQL, driver and crash text.
fn assert_no_internals(text: &str) {
    for needle in ["SELECT", "INSERT", "UPDATE \"", "DELETE FROM", "PRAGMA"] {
        assert!(
            !text.contains(needle),
            "error body leaks {needle:?}: {text}"
        );
    }
    let lower = text.to_lowercase();
    for needle in [
        "sqlite",
        "sqlx",
        "constraint failed",
        "panicked",
        "stack backtrace",
        "src/",
    ] {
        assert!(
            !lower.contains(needle),
            "error body leaks {needle:?}: {text}"
        );
    }
}

/// Asserts a problem response (status, media type, code) that leaks nothing.
#[track_caller]
fn problem(reply: &Reply, status: u16, code: &str) -> Value {
    assert_no_internals(&String::from_utf8_lossy(&reply.bytes));
    let body = reply.expect_problem(status, code);
    assert_eq!(body["type"], "about:blank", "{body}");
    body
}

/// Asserts a 422 and returns its `(field, code)` pairs, sorted; every entry
/// must carry a human-readable message.
#[track_caller]
fn field_errors(reply: &Reply) -> Vec<(String, String)> {
    let body = problem(reply, 422, "validation_failed");
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("a 422 lists its errors: {body}"));
    let mut out: Vec<(String, String)> = errors
        .iter()
        .map(|e| {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "every error has a message: {e}"
            );
            (
                e["field"].as_str().expect("field").to_owned(),
                e["code"].as_str().expect("code").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The expected `(field, code)` pairs, sorted like [`field_errors`].
fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = expected
        .iter()
        .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
        .collect();
    out.sort();
    out
}

/// A valid student body.
fn student(name: &str, email: &str) -> Value {
    json!({"name": name, "email": email})
}

/// Creates a row and returns its body.
async fn create(server: &Server, resource: &str, body: Value) -> Value {
    server.post(&format!("/{resource}"), body).await.expect(201)
}

/// A row as the API returns it, with its ETag: compared before and after a
/// refused write to prove nothing changed (not even `updated_at` or the version).
async fn snapshot(server: &Server, path: &str) -> (Value, String) {
    let reply = server.get(path).await;
    let body = reply.expect(200);
    (body, reply.header("etag").expect("ETag on GET"))
}

/// Every row count of the main schema, read straight from the database.
async fn counts(server: &Server, tables: &[&str]) -> Vec<i64> {
    let mut out = Vec::new();
    for t in tables {
        out.push(server.count_in_database(t).await);
    }
    out
}

/// A response read off a raw TCP connection.
struct RawReply {
    status: u16,
    head: String,
    body: String,
}

/// Sends a hand-written HTTP/1.1 request (head plus body pieces written one by
/// one, so a chunked body can be streamed) and reads the response until the
/// server closes the connection. Write errors after the server has answered
/// are expected (it may stop reading an oversized body) and ignored.
async fn raw_http(server: &Server, head: &str, pieces: Vec<Vec<u8>>) -> RawReply {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    for piece in pieces {
        if stream.write_all(&piece).await.is_err() {
            break;
        }
    }
    let _ = stream.flush().await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    RawReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Frames `data` as chunks of `size` bytes, with the terminating chunk.
fn chunked(data: &[u8], size: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = data
        .chunks(size)
        .map(|c| {
            let mut piece = format!("{:x}\r\n", c.len()).into_bytes();
            piece.extend_from_slice(c);
            piece.extend_from_slice(b"\r\n");
            piece
        })
        .collect();
    out.push(b"0\r\n\r\n".to_vec());
    out
}

/// A JSON object for `notes` padded with spaces to exactly `len` bytes.
fn note_of_exact_len(len: usize) -> Vec<u8> {
    let mut body = br#"{"body":"x"}"#.to_vec();
    assert!(len >= body.len());
    let pad = len - body.len();
    body.splice(1..1, std::iter::repeat_n(b' ', pad));
    assert_eq!(body.len(), len);
    body
}

// ---------------------------------------------------------------------------
// the body as a whole: syntax, media type, shape, size
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_a_400_on_every_write_and_writes_nothing() {
    let server = Server::start(SCHEMA).await;
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    let bodies: [&[u8]; 6] = [
        br#"{"name": "Bo", "email": "#,
        br#"{"name": "Bo",}"#,
        br#"{'name': 'Bo'}"#,
        br#"{"name": "Bo"} trailing"#,
        br#"{"name": "Bo" "email": "bo@example.edu"}"#,
        b"{\"name\": \"B\no\"}",
    ];
    for body in bodies {
        for (method, target) in [("POST", "/students"), ("PATCH", &path), ("PUT", &path)] {
            let reply = server
                .send_raw(method, target, Some("application/json"), body.to_vec())
                .await;
            let problem = problem(&reply, 400, "malformed_json");
            assert!(
                problem["detail"].as_str().unwrap().contains("JSON"),
                "{problem}"
            );
        }
    }
    assert_eq!(server.count_in_database("students").await, 1);
    assert_eq!(snapshot(&server, &path).await, before);
}

#[tokio::test]
async fn invalid_utf8_in_a_json_body_is_a_400_malformed_json() {
    let server = Server::start(SCHEMA).await;
    let body = b"{\"name\": \"Bo\xff\xfe\", \"email\": \"bo@example.edu\"}".to_vec();
    let reply = server
        .send_raw("POST", "/students", Some("application/json"), body)
        .await;
    problem(&reply, 400, "malformed_json");
    // A lone surrogate escape is not a Unicode scalar value either.
    let body = br#"{"name": "Bo\ud800", "email": "bo@example.edu"}"#.to_vec();
    let reply = server
        .send_raw("POST", "/students", Some("application/json"), body)
        .await;
    problem(&reply, 400, "malformed_json");
    assert_eq!(server.count_in_database("students").await, 0);
}

#[tokio::test]
async fn a_deeply_nested_body_is_refused_as_malformed_json_without_crashing() {
    let server = Server::start(SCHEMA).await;
    let depth = 20_000;
    let body = format!(
        r#"{{"name":"Bo","email":"bo@example.edu","profile":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let reply = server
        .send_raw(
            "POST",
            "/students",
            Some("application/json"),
            body.into_bytes(),
        )
        .await;
    problem(&reply, 400, "malformed_json");
    assert_eq!(server.count_in_database("students").await, 0);
    // Still serving.
    server.get("/health").await.expect(200);
}

#[tokio::test]
async fn an_empty_body_is_a_400_missing_body_on_post_patch_and_put() {
    let server = Server::start(SCHEMA).await;
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    for (method, target) in [("POST", "/students"), ("PATCH", &path), ("PUT", &path)] {
        // No body at all, with and without a content type; and only whitespace.
        for (ct, body) in [
            (None, Vec::new()),
            (Some("application/json"), Vec::new()),
            (Some("application/json"), b" \r\n\t ".to_vec()),
        ] {
            let reply = server.send_raw(method, target, ct, body).await;
            problem(&reply, 400, "missing_body");
        }
    }
    assert_eq!(server.count_in_database("students").await, 1);
    assert_eq!(snapshot(&server, &path).await, before);
}

#[tokio::test]
async fn a_json_scalar_or_array_where_an_object_is_required_is_a_400_malformed_body() {
    let server = Server::start(SCHEMA).await;
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    for body in [
        json!("Ada"),
        json!(42),
        json!(true),
        json!(null),
        json!(1.5),
    ] {
        for (method, target) in [("POST", "/students"), ("PATCH", &path), ("PUT", &path)] {
            let reply = server.send(method, target, Some(body.clone()), &[]).await;
            problem(&reply, 400, "malformed_body");
        }
    }
    // Arrays are bulk creates on POST only; PATCH and PUT take one object.
    for body in [json!([]), json!([{"name": "Bo"}])] {
        for method in ["PATCH", "PUT"] {
            let reply = server.send(method, &path, Some(body.clone()), &[]).await;
            problem(&reply, 400, "malformed_body");
        }
    }
    assert_eq!(server.count_in_database("students").await, 1);
    assert_eq!(snapshot(&server, &path).await, before);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_unsupported_media_type() {
    let server = Server::start(SCHEMA).await;
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    let json_text = br#"{"name":"Bo","email":"bo@example.edu"}"#.to_vec();
    let cases: [(Option<&str>, Vec<u8>); 6] = [
        (Some("text/plain"), json_text.clone()),
        (Some("text/plain; charset=utf-8"), json_text.clone()),
        (
            Some("application/x-www-form-urlencoded"),
            b"name=Bo&email=bo%40example.edu".to_vec(),
        ),
        (
            Some("multipart/form-data; boundary=x"),
            b"--x\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nBo\r\n--x--\r\n".to_vec(),
        ),
        (
            Some("application/xml"),
            b"<student><name>Bo</name></student>".to_vec(),
        ),
        // A body without any content type is not assumed to be JSON.
        (None, json_text.clone()),
    ];
    for (ct, body) in cases {
        for (method, target) in [("POST", "/students"), ("PATCH", &path), ("PUT", &path)] {
            let reply = server.send_raw(method, target, ct, body.clone()).await;
            problem(&reply, 415, "unsupported_media_type");
        }
    }
    assert_eq!(server.count_in_database("students").await, 1);
    assert_eq!(snapshot(&server, &path).await, before);
}

#[tokio::test]
async fn a_body_over_the_configured_limit_is_a_413_and_one_at_the_limit_is_accepted() {
    let server = Server::start_with_args(SCHEMA, &["--body-limit", "1000"]).await;
    let reply = server
        .send_raw(
            "POST",
            "/notes",
            Some("application/json"),
            note_of_exact_len(1001),
        )
        .await;
    let body = problem(&reply, 413, "payload_too_large");
    assert!(body["detail"].as_str().unwrap().contains("1000"), "{body}");
    let big = json!({"body": "x".repeat(5000)});
    problem(&server.post("/notes", big).await, 413, "payload_too_large");
    assert_eq!(server.count_in_database("notes").await, 0);

    // Exactly at the limit is fine: the limit is inclusive.
    server
        .send_raw(
            "POST",
            "/notes",
            Some("application/json"),
            note_of_exact_len(1000),
        )
        .await
        .expect(201);
    assert_eq!(server.count_in_database("notes").await, 1);

    // PATCH and PUT share the limit.
    let id = server.all("notes").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/notes/{id}");
    let before = snapshot(&server, &path).await;
    for method in ["PATCH", "PUT"] {
        let reply = server
            .send_raw(
                method,
                &path,
                Some("application/json"),
                note_of_exact_len(1001),
            )
            .await;
        problem(&reply, 413, "payload_too_large");
    }
    assert_eq!(snapshot(&server, &path).await, before);
}

#[tokio::test]
async fn a_chunked_body_without_content_length_is_held_to_the_limit() {
    let server = Server::start_with_args(SCHEMA, &["--body-limit", "1000"]).await;
    let head = "POST /notes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

    // Under the limit, streamed in small chunks: accepted (the framing works).
    let small = chunked(&note_of_exact_len(900), 100);
    let reply = raw_http(&server, head, small).await;
    assert_eq!(reply.status, 201, "{}\n{}", reply.head, reply.body);
    assert_eq!(server.count_in_database("notes").await, 1);

    // Over the limit, no Content-Length anywhere: refused while streaming.
    let mut big = br#"{"body":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 4000));
    big.extend_from_slice(br#""}"#);
    let reply = raw_http(&server, head, chunked(&big, 256)).await;
    assert_eq!(reply.status, 413, "{}\n{}", reply.head, reply.body);
    assert!(
        reply
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{}",
        reply.head
    );
    assert_no_internals(&reply.body);
    let body: Value = serde_json::from_str(&reply.body).expect("problem JSON");
    assert_eq!(body["code"], "payload_too_large", "{body}");
    assert_eq!(body["status"], 413, "{body}");
    assert_eq!(server.count_in_database("notes").await, 1);
}

#[tokio::test]
async fn a_body_over_the_default_one_mebibyte_limit_is_a_413() {
    let server = Server::start(SCHEMA).await;
    const MIB: usize = 1024 * 1024;

    // Declared by Content-Length: refused before the body is read.
    let head = format!(
        "POST /notes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        MIB + 1
    );
    let reply = raw_http(&server, &head, vec![b"{\"body\":\"".to_vec()]).await;
    assert_eq!(reply.status, 413, "{}\n{}", reply.head, reply.body);
    let body: Value = serde_json::from_str(&reply.body).expect("problem JSON");
    assert_eq!(body["code"], "payload_too_large", "{body}");

    // Streamed without a length: refused once it passes 1 MiB.
    let head = "POST /notes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let reply = raw_http(
        &server,
        head,
        chunked(&note_of_exact_len(MIB + 1), 64 * 1024),
    )
    .await;
    assert_eq!(reply.status, 413, "{}\n{}", reply.head, reply.body);
    let body: Value = serde_json::from_str(&reply.body).expect("problem JSON");
    assert_eq!(body["code"], "payload_too_large", "{body}");
    assert_no_internals(&reply.body);
    assert_eq!(server.count_in_database("notes").await, 0);

    // Exactly 1 MiB is accepted.
    server
        .send_raw(
            "POST",
            "/notes",
            Some("application/json"),
            note_of_exact_len(MIB),
        )
        .await
        .expect(201);
    assert_eq!(server.count_in_database("notes").await, 1);
}

// ---------------------------------------------------------------------------
// validation: 422 with every failing field at once
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_failing_field_is_reported_at_once_with_its_code() {
    let server = Server::start(SCHEMA).await;
    let reply = server
        .post(
            "/students",
            json!({
                "name": "A",
                "email": "not-an-email",
                "homepage": "example.edu/~ada",
                "badge": "not-a-uuid",
                "code": "abc-12",
                "bio": "x".repeat(41),
                "age": 15,
                "gpa": 4.01,
                "balance": "-100.01",
                "level": "junior",
                "nickname": "Ace",
                "id": 7,
            }),
        )
        .await;
    assert_eq!(
        field_errors(&reply),
        pairs(&[
            ("name", "min_length"),
            ("email", "format"),
            ("homepage", "format"),
            ("badge", "format"),
            ("code", "pattern"),
            ("bio", "max_length"),
            ("age", "min"),
            ("gpa", "max"),
            ("balance", "min"),
            ("level", "enum"),
            ("nickname", "unknown_field"),
            ("id", "read_only"),
        ])
    );
    let body = reply.json();
    // The detail names the failing fields too.
    let detail = body["detail"].as_str().unwrap();
    for f in ["name", "email", "nickname"] {
        assert!(detail.contains(f), "{detail}");
    }
    assert_eq!(server.count_in_database("students").await, 0);
}

#[tokio::test]
async fn upper_bounds_are_reported_as_max_and_max_length() {
    let server = Server::start(SCHEMA).await;
    let reply = server
        .post(
            "/students",
            json!({
                "name": "x".repeat(21),
                "email": "ada@example.edu",
                "age": 100,
                "gpa": -0.5,
                "balance": 100.5,
            }),
        )
        .await;
    assert_eq!(
        field_errors(&reply),
        pairs(&[
            ("name", "max_length"),
            ("age", "max"),
            ("gpa", "min"),
            ("balance", "max"),
        ])
    );
    // Lengths count characters, not bytes: 20 two-byte characters fit.
    create(
        &server,
        "students",
        student(&"é".repeat(20), "ada@example.edu"),
    )
    .await;
    assert_eq!(server.count_in_database("students").await, 1);
}

#[tokio::test]
async fn missing_or_null_required_fields_are_a_422_required() {
    let server = Server::start(SCHEMA).await;
    let reply = server.post("/students", json!({})).await;
    assert_eq!(
        field_errors(&reply),
        pairs(&[("name", "required"), ("email", "required")])
    );
    let reply = server
        .post(
            "/students",
            json!({"name": null, "email": "ada@example.edu"}),
        )
        .await;
    assert_eq!(field_errors(&reply), pairs(&[("name", "required")]));
    // A client-keyed resource needs its key on POST.
    let reply = server.post("/users", json!({"name": "Ada"})).await;
    assert_eq!(field_errors(&reply), pairs(&[("userId", "required")]));
    assert_eq!(counts(&server, &["students", "users"]).await, [0, 0]);
}

#[tokio::test]
async fn the_server_maintained_columns_are_read_only() {
    let server = Server::start(SCHEMA).await;
    let system = json!({
        "id": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "created_by": "mallory",
        "updated_by": "mallory",
    });
    let expected = pairs(&[
        ("id", "read_only"),
        ("created_at", "read_only"),
        ("updated_at", "read_only"),
        ("created_by", "read_only"),
        ("updated_by", "read_only"),
    ]);
    let mut body = student("Ada", "ada@example.edu");
    body.as_object_mut()
        .unwrap()
        .extend(system.as_object().unwrap().clone());
    assert_eq!(
        field_errors(&server.post("/students", body.clone()).await),
        expected
    );
    assert_eq!(server.count_in_database("students").await, 0);

    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    assert_eq!(
        field_errors(&server.patch(&path, system.clone()).await),
        expected
    );
    assert_eq!(field_errors(&server.put(&path, body).await), expected);
    assert_eq!(snapshot(&server, &path).await, before);

    // On a client-keyed resource the key may be sent, the audit columns may not.
    let reply = server
        .put(
            "/users/ada",
            json!({"userId": "ada", "name": "Ada", "created_by": "mallory"}),
        )
        .await;
    assert_eq!(field_errors(&reply), pairs(&[("created_by", "read_only")]));
    assert_eq!(server.count_in_database("users").await, 0);
}

#[tokio::test]
async fn wrong_json_types_are_a_422_type_for_every_field_type() {
    let server = Server::start(SCHEMA).await;
    let cases: Vec<(&str, Vec<Value>)> = vec![
        (
            "name",
            vec![
                json!(42),
                json!(true),
                json!(["Ada"]),
                json!({"first": "Ada"}),
            ],
        ),
        ("bio", vec![json!(42), json!(false), json!(["x"])]),
        (
            "age",
            vec![
                json!(1.5),
                json!(20.5),
                json!("20"),
                json!(true),
                json!([20]),
                json!(9_223_372_036_854_775_808_u64),
            ],
        ),
        (
            "gpa",
            vec![json!("3.5"), json!(true), json!([3.5]), json!({})],
        ),
        (
            "balance",
            vec![
                json!(true),
                json!("abc"),
                json!("1,5"),
                json!([1]),
                json!({}),
            ],
        ),
        (
            "active",
            vec![json!("true"), json!(1), json!(0), json!("yes"), json!([])],
        ),
        (
            "seen_at",
            vec![
                json!("2026-01-02T03:04:05"),
                json!("2026-01-02 03:04:05"),
                json!("2026-01-02"),
                json!("2026-02-30T00:00:00Z"),
                json!(1_767_225_600),
                json!("yesterday"),
            ],
        ),
        (
            "born_on",
            vec![
                json!("2026-13-01"),
                json!("2026-02-30"),
                json!("02/01/2026"),
                json!("2026-01-02T00:00:00Z"),
                json!(20_260_102),
            ],
        ),
        (
            "external",
            vec![
                json!("not-a-uuid"),
                json!("123e4567-e89b-12d3-a456-42661417400"),
                json!(42),
                json!(true),
            ],
        ),
        ("level", vec![json!(1), json!(true), json!(["senior"])]),
        (
            "college_id",
            vec![json!("abc"), json!(1.5), json!({"id": 1}), json!(true)],
        ),
    ];
    for (field, values) in cases {
        for value in values {
            let mut body = student("Ada", "ada@example.edu");
            body[field] = value.clone();
            let reply = server.post("/students", body).await;
            assert_eq!(
                field_errors(&reply),
                pairs(&[(field, "type")]),
                "{field} = {value}"
            );
        }
    }
    // An enum value outside the list (case matters) is `enum`, not `type`.
    let mut body = student("Ada", "ada@example.edu");
    body["level"] = json!("Senior");
    assert_eq!(
        field_errors(&server.post("/students", body).await),
        pairs(&[("level", "enum")])
    );
    // The same checks apply to PATCH.
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    let reply = server
        .patch(
            &path,
            json!({"age": 1.5, "active": "true", "seen_at": "2026-01-02T03:04:05", "born_on": 1}),
        )
        .await;
    assert_eq!(
        field_errors(&reply),
        pairs(&[
            ("age", "type"),
            ("active", "type"),
            ("seen_at", "type"),
            ("born_on", "type"),
        ])
    );
    assert_eq!(server.count_in_database("students").await, 1);
    assert_eq!(snapshot(&server, &path).await, before);
}

#[tokio::test]
async fn nul_characters_in_strings_are_refused() {
    let server = Server::start(SCHEMA).await;
    let reply = server
        .post(
            "/students",
            json!({"name": "Ad\u{0}a", "email": "ada@example.edu", "bio": "\u{0}", "code": "ABC-1\u{0}"}),
        )
        .await;
    assert_eq!(
        field_errors(&reply),
        pairs(&[("name", "type"), ("bio", "type"), ("code", "type")])
    );
    let reply = server.put("/users/ada", json!({"name": "Ada\u{0}"})).await;
    assert_eq!(field_errors(&reply), pairs(&[("name", "type")]));
    assert_eq!(counts(&server, &["students", "users"]).await, [0, 0]);

    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    let reply = server.patch(&path, json!({"name": "Ad\u{0}a"})).await;
    assert_eq!(field_errors(&reply), pairs(&[("name", "type")]));
    assert_eq!(snapshot(&server, &path).await, before);

    // A key containing NUL cannot name a row.
    let reply = server.put("/users/a%00b", json!({"name": "Ada"})).await;
    problem(&reply, 404, "not_found");
    assert_eq!(server.count_in_database("users").await, 0);
}

#[tokio::test]
async fn a_decimal_just_past_its_bounds_is_refused_exactly() {
    // Decimals exist to be exact: a bound must not be checked through a float
    // that rounds 100.000…01 down to 100.
    let server = Server::start(SCHEMA).await;
    for (value, code) in [
        ("100.0000000001", "max"),
        ("100.00000000001", "type"),
        ("-100.0000000001", "min"),
        ("100.000000001", "max"),
    ] {
        let mut body = student("Ada", "ada@example.edu");
        body["balance"] = json!(value);
        let reply = server.post("/students", body).await;
        assert_eq!(
            field_errors(&reply),
            pairs(&[("balance", code)]),
            "balance = {value}"
        );
    }
    assert_eq!(server.count_in_database("students").await, 0);
    // The bounds themselves are allowed.
    let mut body = student("Ada", "ada@example.edu");
    body["balance"] = json!("100.000");
    create(&server, "students", body).await;
}

#[tokio::test]
async fn a_client_key_that_no_url_can_name_is_refused() {
    // A row must be reachable at the Location it is created with; a key that
    // no path segment can carry (empty, a dot segment, or containing a slash)
    // would make an orphan that can never be read, updated or deleted.
    let server = Server::start(SCHEMA).await;
    for key in ["", ".", "..", "a/b"] {
        let reply = server
            .post("/users", json!({"userId": key, "name": "Ada"}))
            .await;
        if reply.status == 201 {
            let location = reply.header("location").expect("Location");
            let row = server.get(&location).await;
            assert_eq!(
                (row.status, row.json()["userId"].clone()),
                (200, json!(key)),
                "key {key:?} was stored but its Location {location} does not name it: {}",
                String::from_utf8_lossy(&row.bytes)
            );
        } else {
            let errors = field_errors(&reply);
            assert!(
                errors.iter().any(|(f, _)| f == "userId"),
                "key {key:?}: {errors:?}"
            );
        }
    }
    // Keys that need percent-encoding but do name a segment are fine.
    for key in ["a b", "a?b", "a#b", "a%b", "é"] {
        let reply = server
            .post("/users", json!({"userId": key, "name": "Ada"}))
            .await;
        reply.expect(201);
        let location = reply.header("location").expect("Location");
        assert_eq!(server.get(&location).await.expect(200)["userId"], key);
    }
}

#[tokio::test]
async fn a_put_whose_key_differs_from_the_url_is_a_422_key_mismatch() {
    let server = Server::start(SCHEMA).await;
    server
        .put("/users/alice", json!({"name": "Alice"}))
        .await
        .expect(201);
    let before = snapshot(&server, "/users/alice").await;

    let reply = server
        .put("/users/alice", json!({"userId": "bob", "name": "Bob"}))
        .await;
    assert_eq!(field_errors(&reply), pairs(&[("userId", "key_mismatch")]));
    // Upserting a new key with a different one in the body is refused as well.
    let reply = server
        .put("/users/carol", json!({"userId": "bob", "name": "Bob"}))
        .await;
    assert_eq!(field_errors(&reply), pairs(&[("userId", "key_mismatch")]));
    // PATCH cannot rename a key either.
    let reply = server.patch("/users/alice", json!({"userId": "bob"})).await;
    assert_eq!(field_errors(&reply), pairs(&[("userId", "key_mismatch")]));

    assert_eq!(server.count_in_database("users").await, 1);
    assert_eq!(snapshot(&server, "/users/alice").await, before);
    problem(&server.get("/users/bob").await, 404, "not_found");
    problem(&server.get("/users/carol").await, 404, "not_found");
}

#[tokio::test]
async fn a_refused_patch_or_put_leaves_the_row_untouched() {
    let server = Server::start(SCHEMA).await;
    let mut body = student("Ada", "ada@example.edu");
    body["age"] = json!(20);
    let id = create(&server, "students", body).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;

    // PATCH: one bad field refuses the whole update, good fields included.
    let reply = server
        .patch(&path, json!({"name": "Adelaide", "age": 5, "email": null}))
        .await;
    assert_eq!(
        field_errors(&reply),
        pairs(&[("age", "min"), ("email", "required")])
    );
    // PUT is a whole representation: required fields must be there.
    let reply = server.put(&path, json!({"name": "Adelaide"})).await;
    assert_eq!(field_errors(&reply), pairs(&[("email", "required")]));
    let reply = server
        .put(&path, json!({"name": "Adelaide", "email": "x", "extra": 1}))
        .await;
    assert_eq!(
        field_errors(&reply),
        pairs(&[("email", "format"), ("extra", "unknown_field")])
    );
    assert_eq!(snapshot(&server, &path).await, before);
    assert_eq!(before.0["age"], 20);
}

// ---------------------------------------------------------------------------
// conflicts: unique, foreign keys, referential actions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_duplicate_email_is_a_409_naming_the_field() {
    let server = Server::start(SCHEMA).await;
    create(&server, "students", student("Ada", "ada@example.edu")).await;
    let bo = create(&server, "students", student("Bo", "bo@example.edu")).await;

    let reply = server
        .post("/students", student("Ada Two", "ada@example.edu"))
        .await;
    let body = problem(&reply, 409, "unique_violation");
    assert_eq!(body["field"], "email", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("email"), "{body}");
    assert_eq!(server.count_in_database("students").await, 2);

    // Updating another row onto the taken value is refused the same way.
    let path = format!("/students/{}", bo["id"]);
    let before = snapshot(&server, &path).await;
    for reply in [
        server
            .patch(&path, json!({"email": "ada@example.edu"}))
            .await,
        server.put(&path, student("Bo", "ada@example.edu")).await,
    ] {
        let body = problem(&reply, 409, "unique_violation");
        assert_eq!(body["field"], "email", "{body}");
    }
    assert_eq!(snapshot(&server, &path).await, before);
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM students WHERE email = 'ada@example.edu'")
            .await,
        1
    );
}

#[tokio::test]
async fn racing_duplicates_get_one_201_and_409s_never_a_500() {
    let server = std::sync::Arc::new(Server::start(SCHEMA).await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .post("/students", student("Ada", "same@example.edu"))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let reply = task.await.expect("join");
        if reply.status == 201 {
            created += 1;
        } else {
            let body = problem(&reply, 409, "unique_violation");
            assert_eq!(body["field"], "email", "{body}");
        }
    }
    assert_eq!(created, 1);
    assert_eq!(server.count_in_database("students").await, 1);
}

#[tokio::test]
async fn a_reference_to_a_missing_row_is_a_409_foreign_key_violation_naming_the_field() {
    let server = Server::start(SCHEMA).await;
    let college = create(&server, "colleges", json!({"name": "Arts"})).await;

    let mut body = student("Ada", "ada@example.edu");
    body["college_id"] = json!(999);
    let reply = server.post("/students", body).await;
    let problem_body = problem(&reply, 409, "foreign_key_violation");
    assert_eq!(problem_body["field"], "college_id", "{problem_body}");
    assert!(
        problem_body["detail"]
            .as_str()
            .unwrap()
            .contains("college_id"),
        "{problem_body}"
    );
    assert_eq!(server.count_in_database("students").await, 0);

    let mut body = student("Ada", "ada@example.edu");
    body["college_id"] = college["id"].clone();
    let id = create(&server, "students", body).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    let mut replacement = student("Ada", "ada@example.edu");
    replacement["college_id"] = json!(999);
    for reply in [
        server.patch(&path, json!({"college_id": 999})).await,
        server.put(&path, replacement).await,
    ] {
        let body = problem(&reply, 409, "foreign_key_violation");
        assert_eq!(body["field"], "college_id", "{body}");
    }
    assert_eq!(snapshot(&server, &path).await, before);
    assert_eq!(counts(&server, &["colleges", "students"]).await, [1, 1]);
}

#[tokio::test]
async fn deleting_a_parent_still_referenced_under_restrict_is_a_409_still_referenced() {
    let server = Server::start(SCHEMA).await;
    let college = create(&server, "colleges", json!({"name": "Arts"})).await;
    let mut body = student("Ada", "ada@example.edu");
    body["college_id"] = college["id"].clone();
    let ada = create(&server, "students", body).await;
    let college_path = format!("/colleges/{}", college["id"]);
    let before = snapshot(&server, &college_path).await;

    let reply = server.delete(&college_path).await;
    let body = problem(&reply, 409, "still_referenced");
    assert!(
        body["detail"].as_str().unwrap().contains("students"),
        "{body}"
    );
    assert_eq!(counts(&server, &["colleges", "students"]).await, [1, 1]);
    assert_eq!(snapshot(&server, &college_path).await, before);
    let ada_now = server
        .get(&format!("/students/{}", ada["id"]))
        .await
        .expect(200);
    assert_eq!(ada_now["college_id"], college["id"]);
}

#[tokio::test]
async fn on_delete_cascade_deletes_children_and_set_null_detaches_them() {
    let server = Server::start(REFS_SCHEMA).await;
    let arts = create(&server, "colleges", json!({"name": "Arts"})).await["id"].clone();
    let law = create(&server, "colleges", json!({"name": "Law"})).await["id"].clone();
    for (name, college) in [("Poetry", &arts), ("Painting", &arts), ("Torts", &law)] {
        create(
            &server,
            "majors",
            json!({"name": name, "college_id": college}),
        )
        .await;
    }
    for (name, college) in [("Ann", &arts), ("Len", &law)] {
        create(
            &server,
            "advisors",
            json!({"name": name, "college_id": college}),
        )
        .await;
    }

    server
        .delete(&format!("/colleges/{arts}"))
        .await
        .expect(204);

    assert_eq!(
        counts(&server, &["colleges", "majors", "advisors"]).await,
        [1, 1, 2]
    );
    assert_eq!(
        server
            .query_i64(&format!(
                "SELECT COUNT(*) FROM majors WHERE college_id = {arts}"
            ))
            .await,
        0
    );
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM advisors WHERE name = 'Ann' AND college_id IS NULL")
            .await,
        1
    );
    assert_eq!(
        server
            .query_i64(&format!(
                "SELECT COUNT(*) FROM advisors WHERE name = 'Len' AND college_id = {law}"
            ))
            .await,
        1
    );
    problem(
        &server.get(&format!("/colleges/{arts}")).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn a_cascade_blocked_by_a_restricting_grandchild_deletes_nothing() {
    let server = Server::start(REFS_SCHEMA).await;
    let arts = create(&server, "colleges", json!({"name": "Arts"})).await["id"].clone();
    let poetry = create(
        &server,
        "majors",
        json!({"name": "Poetry", "college_id": arts}),
    )
    .await["id"]
        .clone();
    create(
        &server,
        "majors",
        json!({"name": "Painting", "college_id": arts}),
    )
    .await;
    create(
        &server,
        "advisors",
        json!({"name": "Ann", "college_id": arts}),
    )
    .await;
    create(
        &server,
        "students",
        json!({"name": "Ada", "major_id": poetry}),
    )
    .await;

    // The major itself is restricted by the student.
    let reply = server.delete(&format!("/majors/{poetry}")).await;
    let body = problem(&reply, 409, "still_referenced");
    assert!(
        body["detail"].as_str().unwrap().contains("students"),
        "{body}"
    );

    // Deleting the college would cascade into that major: all or nothing.
    let reply = server.delete(&format!("/colleges/{arts}")).await;
    problem(&reply, 409, "still_referenced");
    assert_eq!(
        counts(&server, &["colleges", "majors", "advisors", "students"]).await,
        [1, 2, 1, 1]
    );
    assert_eq!(
        server
            .query_i64(&format!(
                "SELECT COUNT(*) FROM advisors WHERE college_id = {arts}"
            ))
            .await,
        1,
        "set_null was rolled back with the refused delete"
    );
}

// ---------------------------------------------------------------------------
// bulk creates: all or nothing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_bulk_create_with_bad_rows_is_a_422_with_indexed_paths_and_writes_nothing() {
    let server = Server::start(SCHEMA).await;
    let reply = server
        .post(
            "/students",
            json!([
                student("Ada", "ada@example.edu"),
                student("Bo", "bo@example.edu"),
                student("Cy", "not-an-email"),
                {"email": "dee@example.edu", "age": 3, "nick": "D"},
            ]),
        )
        .await;
    let errors = field_errors(&reply);
    assert_eq!(
        errors,
        pairs(&[
            ("[2].email", "format"),
            ("[3].name", "required"),
            ("[3].age", "min"),
            ("[3].nick", "unknown_field"),
        ])
    );
    assert_eq!(server.count_in_database("students").await, 0);

    // An item that is not an object is named by its index.
    let reply = server
        .post(
            "/students",
            json!([student("Ada", "ada@example.edu"), 42, "x"]),
        )
        .await;
    assert_eq!(
        field_errors(&reply),
        pairs(&[("[1]", "type"), ("[2]", "type")])
    );
    assert_eq!(server.count_in_database("students").await, 0);
}

#[tokio::test]
async fn a_bulk_create_whose_rows_collide_on_a_unique_field_is_a_409_and_writes_nothing() {
    let server = Server::start(SCHEMA).await;
    let reply = server
        .post(
            "/students",
            json!([
                student("Ada", "ada@example.edu"),
                student("Bo", "bo@example.edu"),
                student("Ada Two", "ada@example.edu"),
            ]),
        )
        .await;
    let body = problem(&reply, 409, "unique_violation");
    assert!(
        body["field"].as_str().is_some_and(|f| f.ends_with("email")),
        "{body}"
    );
    assert_eq!(server.count_in_database("students").await, 0);

    // A row colliding with one already stored refuses the whole batch too.
    create(&server, "students", student("Ada", "ada@example.edu")).await;
    let reply = server
        .post(
            "/students",
            json!([
                student("Bo", "bo@example.edu"),
                student("Ada", "ada@example.edu")
            ]),
        )
        .await;
    let body = problem(&reply, 409, "unique_violation");
    assert!(
        body["field"].as_str().is_some_and(|f| f.ends_with("email")),
        "{body}"
    );
    assert_eq!(server.count_in_database("students").await, 1);
}

#[tokio::test]
async fn a_bulk_create_with_a_dangling_reference_is_a_409_and_writes_nothing() {
    let server = Server::start(SCHEMA).await;
    let college = create(&server, "colleges", json!({"name": "Arts"})).await["id"].clone();
    let mut good = student("Ada", "ada@example.edu");
    good["college_id"] = college;
    let mut bad = student("Bo", "bo@example.edu");
    bad["college_id"] = json!(404);
    let reply = server.post("/students", json!([good, bad])).await;
    let body = problem(&reply, 409, "foreign_key_violation");
    assert!(
        body["field"]
            .as_str()
            .is_some_and(|f| f.ends_with("college_id")),
        "{body}"
    );
    assert_eq!(server.count_in_database("students").await, 0);
}

#[tokio::test]
async fn an_empty_or_oversized_bulk_array_is_a_400() {
    let server = Server::start(SCHEMA).await;
    problem(
        &server.post("/students", json!([])).await,
        400,
        "empty_array",
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| student("Ada", &format!("a{i}@example.edu")))
        .collect();
    problem(
        &server.post("/students", Value::Array(many)).await,
        400,
        "too_many_items",
    );
    assert_eq!(server.count_in_database("students").await, 0);
}

// ---------------------------------------------------------------------------
// ids, routes and parameters
// ---------------------------------------------------------------------------

#[tokio::test]
async fn get_patch_put_and_delete_of_a_missing_id_are_404s_naming_the_id() {
    let server = Server::start(SCHEMA).await;
    create(&server, "students", student("Ada", "ada@example.edu")).await;
    create(&server, "notes", json!({"body": "hi"})).await;
    let ghost_uuid = "0190b6c8-0000-7000-8000-000000000000";
    let cases = [
        ("/students/42", "42", Some(student("Bo", "bo@example.edu"))),
        (
            &format!("/notes/{ghost_uuid}") as &str,
            ghost_uuid,
            Some(json!({"body": "x"})),
        ),
        // PUT on a client-keyed resource creates, so it is not a 404 there.
        ("/users/ghost", "ghost", None),
    ];
    for (path, id, put_body) in cases {
        let mut replies = vec![
            server.get(path).await,
            server.patch(path, json!({})).await,
            server.delete(path).await,
        ];
        if let Some(body) = put_body {
            replies.push(server.put(path, body).await);
        }
        for reply in replies {
            let body = problem(&reply, 404, "not_found");
            assert!(
                body["detail"].as_str().unwrap().contains(id),
                "detail names {id}: {body}"
            );
        }
    }
    assert_eq!(
        counts(&server, &["students", "notes", "users"]).await,
        [1, 1, 0]
    );
}

#[tokio::test]
async fn a_malformed_id_is_a_404_not_a_400_or_500() {
    let server = Server::start(SCHEMA).await;
    create(&server, "students", student("Ada", "ada@example.edu")).await;
    create(&server, "notes", json!({"body": "hi"})).await;
    let long_key = "k".repeat(33);
    let paths = [
        "/students/abc".to_owned(),
        "/students/1.5".to_owned(),
        "/students/1e3".to_owned(),
        "/students/99999999999999999999".to_owned(),
        "/students/%20".to_owned(),
        "/students/1%27%20OR%201=1".to_owned(),
        "/notes/not-a-uuid".to_owned(),
        "/notes/42".to_owned(),
        format!("/users/{long_key}"),
    ];
    for path in &paths {
        for (method, body) in [
            ("GET", None),
            ("PATCH", Some(json!({"name": "x"}))),
            (
                "PUT",
                Some(json!({"name": "xx", "email": "x@example.edu", "body": "x"})),
            ),
            ("DELETE", None),
        ] {
            let reply = server.send(method, path, body, &[]).await;
            problem(&reply, 404, "not_found");
        }
    }
    assert_eq!(
        counts(&server, &["students", "notes", "users"]).await,
        [1, 1, 0]
    );
}

#[tokio::test]
async fn an_unknown_resource_is_a_404() {
    let server = Server::start(SCHEMA).await;
    for (method, path, body) in [
        ("GET", "/teachers", None),
        ("POST", "/teachers", Some(json!({"name": "Ada"}))),
        ("GET", "/teachers/1", None),
        ("PATCH", "/teachers/1", Some(json!({"name": "Ada"}))),
        ("DELETE", "/teachers/1", None),
        ("GET", "/colleges/1/teachers", None),
        ("GET", "/students/1/colleges/1/x", None),
    ] {
        let reply = server.send(method, path, body, &[]).await;
        problem(&reply, 404, "not_found");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_405_with_allow() {
    let server = Server::start(SCHEMA).await;
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    let reply = server
        .send("POST", &path, Some(student("Bo", "bo@example.edu")), &[])
        .await;
    problem(&reply, 405, "method_not_allowed");
    let allow = reply.header("allow").expect("Allow");
    for m in ["GET", "PATCH", "PUT", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    for method in ["DELETE", "PATCH", "PUT"] {
        let reply = server
            .send(
                method,
                "/students",
                Some(student("Bo", "bo@example.edu")),
                &[],
            )
            .await;
        problem(&reply, 405, "method_not_allowed");
        let allow = reply.header("allow").expect("Allow");
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    }
    assert_eq!(server.count_in_database("students").await, 1);
    assert_eq!(snapshot(&server, &path).await, before);
}

#[tokio::test]
async fn a_query_string_on_a_write_is_a_400_unknown_parameter() {
    let server = Server::start(SCHEMA).await;
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    let cases = [
        (
            "POST",
            "/students?upsert=true".to_owned(),
            Some(student("Bo", "bo@example.edu")),
        ),
        (
            "PATCH",
            format!("{path}?name=Bo"),
            Some(json!({"name": "Bo"})),
        ),
        (
            "PUT",
            format!("{path}?force=1"),
            Some(student("Bo", "bo@example.edu")),
        ),
        ("DELETE", format!("{path}?cascade=true"), None),
    ];
    for (method, target, body) in cases {
        let reply = server.send(method, &target, body, &[]).await;
        let problem = problem(&reply, 400, "unknown_parameter");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            ["upsert", "name", "force", "cascade"]
                .iter()
                .any(|p| detail.contains(p)),
            "the detail names the parameter: {detail}"
        );
    }
    assert_eq!(server.count_in_database("students").await, 1);
    assert_eq!(snapshot(&server, &path).await, before);
}

#[tokio::test]
async fn the_servers_own_routes_refuse_any_query_parameter_but_the_api_key() {
    const TOKEN: &str = "bad-input-app-token-0123456789abcdef";
    let schema = r#"
[app]
name = "keyed"

[auth]
api_keys = { env = "APP_TOKEN", query = "app_token" }

[resources.notes]
fields.title = { type = "string" }
rules = { list = "public", read = "public", create = "public", update = "public", delete = "public" }
"#;
    let server = Server::start_with_env(schema, &[], &[("APP_TOKEN", TOKEN)]).await;
    for path in ["/", "/health", "/openapi.json"] {
        let reply = server.get(&format!("{path}?verbose=1")).await;
        let body = problem(&reply, 400, "unknown_parameter");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("verbose"), "{path}: {detail}");
        let head = server.send("HEAD", &format!("{path}?x"), None, &[]).await;
        assert_eq!(head.status, 400, "HEAD {path}");
        // The API key may travel in every query string, these included.
        let keyed = server.get(&format!("{path}?app_token={TOKEN}")).await;
        assert_eq!(keyed.status, 200, "{path}: {keyed:?}");
        let reply = server
            .get(&format!("{path}?app_token={TOKEN}&verbose=1"))
            .await;
        problem(&reply, 400, "unknown_parameter");
    }
    // The docs page ignores its query string; resources read theirs.
    assert_eq!(server.get("/docs?tab=1").await.status, 200);
    let reply = server.get(&format!("/notes?app_token={TOKEN}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn a_stale_if_match_is_a_412_and_changes_nothing() {
    let server = Server::start(SCHEMA).await;
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let path = format!("/students/{id}");
    let before = snapshot(&server, &path).await;
    let stale = [("if-match", "\"999\"")];
    for (method, body) in [
        ("PATCH", Some(json!({"name": "Bo"}))),
        ("PUT", Some(student("Bo", "bo@example.edu"))),
        ("DELETE", None),
    ] {
        let reply = server.send(method, &path, body, &stale).await;
        problem(&reply, 412, "precondition_failed");
    }
    assert_eq!(server.count_in_database("students").await, 1);
    assert_eq!(snapshot(&server, &path).await, before);
}

// ---------------------------------------------------------------------------
// the read path
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_list_and_read_queries_are_400s_naming_the_culprit() {
    let server = Server::start(SCHEMA).await;
    let id = create(&server, "students", student("Ada", "ada@example.edu")).await["id"].clone();
    let cases = [
        ("/students?nickname=Ace", "unknown_field", "nickname"),
        ("/students?age[between]=1", "unknown_operator", "between"),
        ("/students?age=abc", "invalid_filter_value", "age"),
        ("/students?age[gt]=1.5", "invalid_filter_value", "age"),
        (
            "/students?active[gt]=true",
            "unsupported_operator",
            "active",
        ),
        ("/students?age[like]=1*", "unsupported_operator", "age"),
        (
            "/students?seen_at[lt]=yesterday",
            "invalid_filter_value",
            "seen_at",
        ),
        ("/students?sort=nickname", "unknown_field", "nickname"),
        ("/students?fields=nickname", "unknown_field", "nickname"),
        ("/students?expand=name", "unknown_expand", "name"),
        ("/students?limit=abc", "malformed_query", "limit"),
        ("/students?limit=100000", "malformed_query", "limit"),
        ("/students?offset=-1", "malformed_query", "offset"),
        ("/students?count=maybe", "malformed_query", "count"),
        ("/students?cursor=not-a-cursor", "invalid_cursor", "cursor"),
        ("/students?age[in]=1,abc", "invalid_filter_value", "age"),
        ("/students?age[null]=maybe", "invalid_filter_value", "age"),
        ("/students?age[gt=1", "malformed_query", "age"),
        ("/students?sort=profile", "unsortable_field", "profile"),
        ("/students?sort=name,name", "malformed_query", "name"),
        ("/students?limit=1&limit=2", "malformed_query", "limit"),
    ];
    for (path, code, named) in cases {
        let reply = server.get(path).await;
        let body = problem(&reply, 400, code);
        assert!(
            body["detail"].as_str().unwrap().contains(named),
            "{path}: detail names {named}: {body}"
        );
    }
    let row = format!("/students/{id}");
    for (query, code) in [
        ("?limit=1", "unknown_parameter"),
        ("?age=20", "unknown_parameter"),
        ("?fields=nickname", "unknown_field"),
        ("?expand=email", "unknown_expand"),
    ] {
        let reply = server.get(&format!("{row}{query}")).await;
        problem(&reply, 400, code);
    }
    // Nested routes: a malformed or missing parent id, or no reference between the two.
    problem(
        &server.get("/colleges/abc/students").await,
        404,
        "not_found",
    );
    problem(&server.get("/users/x/students").await, 404, "not_found");
    assert_eq!(server.count_in_database("students").await, 1);
}
