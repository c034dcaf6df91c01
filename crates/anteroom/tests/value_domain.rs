//! The value domain, on every backend: each field type's edge values are
//! stored and read back identically (through the row, a filter and a sort),
//! and values a database could not hold exactly are refused by the engine
//! with a 422 naming the field (bodies) or a 400 (query strings), before any
//! database sees them — never a 201 with a zeroed value, never a 500.

mod common;

use common::{Backend, Server, id_of};
use serde_json::{Value, json};

const SCHEMA: &str = r#"[app]
name = "domain"

[resources.things]
fields.s   = { type = "string" }
fields.t   = { type = "text" }
fields.i   = { type = "integer" }
fields.f   = { type = "float" }
fields.dec = { type = "decimal" }
fields.b   = { type = "boolean" }
fields.ts  = { type = "timestamp" }
fields.d   = { type = "date" }
fields.u   = { type = "uuid" }
fields.j   = { type = "json" }
fields.e   = { type = "enum", values = ["a", "Zz", "é"] }
"#;

/// A value's JSON text, cut for messages.
fn short(v: &Value) -> String {
    v.to_string().chars().take(60).collect()
}

fn nested(depth: usize) -> Value {
    serde_json::from_str(&format!("{}{}", "[".repeat(depth), "]".repeat(depth))).unwrap()
}

/// (field, value sent, value expected back) for every type's edges.
fn edge_values() -> Vec<(&'static str, Value, Value)> {
    let same = |f: &'static str, v: Value| (f, v.clone(), v);
    vec![
        same("s", json!("")),
        same("s", json!("  spaced  ")),
        same("s", json!("a".repeat(255))),
        same("s", json!("😀".repeat(255))),
        same("s", json!("quote ' \" back \\ percent % under _")),
        same("t", json!(format!("{}é😀", "x".repeat(200_000)))),
        same("i", json!(i64::MIN)),
        same("i", json!(i64::MAX)),
        same("i", json!(0)),
        same("f", json!(f64::MAX)),
        same("f", json!(f64::MIN)),
        same("f", json!(f64::MIN_POSITIVE)),
        same("f", json!(0.1)),
        same("f", json!(-2.5e-7)),
        same("dec", json!("999999999999999999.9999999999")),
        same("dec", json!("-999999999999999999.9999999999")),
        same("dec", json!("0.0000000001")),
        same("dec", json!("0")),
        same("b", json!(true)),
        same("b", json!(false)),
        same("ts", json!("0001-01-01T00:00:00.000000Z")),
        same("ts", json!("9999-12-31T23:59:59.999999Z")),
        same("ts", json!("1970-01-01T00:00:00.000000Z")),
        (
            "ts",
            json!("2000-02-29T23:30:00.123456-05:30"),
            json!("2000-03-01T05:00:00.123456Z"),
        ),
        (
            "ts",
            json!("2026-01-01T00:00:00.9999999Z"),
            json!("2026-01-01T00:00:00.999999Z"),
        ),
        same("d", json!("0001-01-01")),
        same("d", json!("9999-12-31")),
        same("d", json!("2000-02-29")),
        same("u", json!("00000000-0000-0000-0000-000000000000")),
        (
            "u",
            json!("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"),
            json!("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ),
        same("j", nested(31)),
        same(
            "j",
            json!({"big": u64::MAX, "neg": i64::MIN, "f": 1.5, "s": "é😀\"\\", "a": [true, null, {}], "o": {}}),
        ),
        same("j", json!("just a string")),
        same("j", json!(12)),
        same("e", json!("Zz")),
        same("e", json!("é")),
    ]
}

#[tokio::test]
async fn every_types_edge_values_read_back_identically_as_rows_and_through_filters() {
    let server = Server::start(SCHEMA).await;
    let backend = Backend::current().name();
    for (field, sent, expected) in edge_values() {
        let shown = format!("{field}={}", short(&sent));
        let created = server.post("/things", json!({ field: sent })).await;
        let body = created.expect(201);
        assert_eq!(body[field], expected, "{backend}: POST {shown}");
        let id = id_of(&body["id"]);
        let read = server.get(&format!("/things/{id}")).await.expect(200);
        assert_eq!(read[field], expected, "{backend}: GET {shown}");
        // The stored value is also what an equality filter finds (json has no filters).
        if field != "j" && field != "t" {
            let text = match &expected {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(field, &text)
                .append_pair("id", &id)
                .finish();
            let found = server.get(&format!("/things?{query}")).await.expect(200);
            assert_eq!(
                found["items"].as_array().map(Vec::len),
                Some(1),
                "{backend}: filter {shown}: {found}"
            );
        }
        server.delete(&format!("/things/{id}")).await.expect(204);
    }
}

#[tokio::test]
async fn dates_and_timestamps_at_both_ends_of_the_domain_sort_in_time_order() {
    let server = Server::start(SCHEMA).await;
    let dates = ["9999-12-31", "0001-01-01", "2000-02-29", "0999-06-30"];
    for d in dates {
        server
            .post("/things", json!({"d": d, "ts": format!("{d}T12:00:00Z")}))
            .await
            .expect(201);
    }
    let mut sorted = dates.to_vec();
    sorted.sort_unstable();
    for (sort, key, suffix) in [("d", "d", ""), ("ts", "ts", "T12:00:00.000000Z")] {
        let page = server
            .get(&format!("/things?sort={sort}"))
            .await
            .expect(200);
        let got: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = sorted.iter().map(|d| format!("{d}{suffix}")).collect();
        assert_eq!(got, want, "sort={sort}");
    }
}

/// (field, value): each outside what every backend stores exactly.
fn out_of_domain() -> Vec<(&'static str, Value)> {
    vec![
        ("d", json!("+10000-01-01")),
        ("d", json!("-0001-01-01")),
        ("d", json!("0000-01-01")),
        ("d", json!("2023-02-29")),
        ("d", json!("2024-1-5")),
        ("ts", json!("2016-12-31T23:59:60Z")),
        ("ts", json!("9999-12-31T23:59:59-05:00")),
        ("ts", json!("0001-01-01T00:00:00+00:01")),
        ("ts", json!("0000-01-01T00:00:00Z")),
        ("j", nested(32)),
        ("j", json!({"k": "nul \u{0} inside"})),
        ("s", json!("nul \u{0} inside")),
        ("s", json!("a".repeat(256))),
        ("dec", json!("1234567890123456789")),
        ("dec", json!("0.00000000001")),
        ("i", json!(9_223_372_036_854_775_808u64)),
        ("i", json!(1.5)),
        ("u", json!("not-a-uuid")),
        ("e", json!("A")),
    ]
}

#[tokio::test]
async fn a_value_outside_the_domain_is_a_422_naming_the_field_and_stores_nothing() {
    let server = Server::start(SCHEMA).await;
    let backend = Backend::current().name();
    for (field, value) in out_of_domain() {
        let shown = format!("{field}={}", short(&value));
        let reply = server.post("/things", json!({ field: value })).await;
        let problem = reply.expect_problem(422, "validation_failed");
        assert_eq!(
            problem["errors"][0]["field"], field,
            "{backend}: {shown}: {problem}"
        );
        assert!(
            problem["errors"][0]["message"].as_str().unwrap().len() > 5,
            "{problem}"
        );
    }
    assert_eq!(server.count_in_database("things").await, 0, "{backend}");
    // The same values on a PATCH leave the row as it was.
    let row = server
        .post("/things", json!({"s": "kept"}))
        .await
        .expect(201);
    let id = id_of(&row["id"]);
    for (field, value) in out_of_domain() {
        server
            .patch(&format!("/things/{id}"), json!({ field: value }))
            .await
            .expect_problem(422, "validation_failed");
    }
    let after = server.get(&format!("/things/{id}")).await.expect(200);
    assert_eq!(after, row, "{backend}");
}

#[tokio::test]
async fn a_filter_value_outside_the_domain_is_a_400_never_a_500() {
    let server = Server::start(SCHEMA).await;
    server.post("/things", json!({"s": "x"})).await.expect(201);
    for query in [
        "d=%2B10000-01-01",
        "d[gt]=-0001-01-01",
        "ts[lt]=2016-12-31T23:59:60Z",
        "ts=9999-12-31T23:59:59-05:00",
        "s=a%00b",
        "s[in]=a,b%00",
        "s[ne]=%00",
        "dec[gt]=1234567890123456789",
        "i=9223372036854775808",
        "f=1e400",
        "u=%00",
    ] {
        let reply = server.get(&format!("/things?{query}")).await;
        reply.expect_problem(400, "invalid_filter_value");
    }
}

#[tokio::test]
async fn a_decimal_with_a_scale_answers_with_that_many_digits_and_refuses_more() {
    let server = Server::start(
        r#"[app]
name = "shop"

[resources.items]
fields.price = { type = "decimal", scale = 2, required = true }
fields.rate  = { type = "decimal" }
"#,
    )
    .await;
    let created = server
        .post("/items", json!({"price": "12.5", "rate": "12.50"}))
        .await
        .expect(201);
    assert_eq!(created["price"], "12.50", "{created}");
    // Without a scale, the shortest form, as before.
    assert_eq!(created["rate"], "12.5", "{created}");
    let path = format!("/items/{}", id_of(&created["id"]));
    assert_eq!(server.get(&path).await.expect(200)["price"], "12.50");
    for (sent, back) in [
        (json!(3), "3.00"),
        (json!("0.1"), "0.10"),
        (json!("-7.25"), "-7.25"),
    ] {
        let row = server
            .post("/items", json!({"price": sent}))
            .await
            .expect(201);
        assert_eq!(row["price"], back, "{sent}");
    }
    // Filters match the value whichever way it is written.
    for filter in [
        "price=12.5",
        "price=12.50",
        "price[gte]=12.499&price[lt]=12.51",
    ] {
        let page = server.get(&format!("/items?{filter}")).await.expect(200);
        let prices: Vec<&Value> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["price"])
            .collect();
        assert_eq!(prices, [&json!("12.50")], "{filter}");
    }
    let sorted = server.get("/items?sort=price").await.expect(200);
    let prices: Vec<&str> = sorted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["price"].as_str().unwrap())
        .collect();
    assert_eq!(prices, ["-7.25", "0.10", "3.00", "12.50"]);

    // More digits than the scale: refused, never rounded.
    let before = server.count_in_database("items").await;
    let problem = server
        .post("/items", json!({"price": "12.345"}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "price", "{problem}");
    assert_eq!(
        problem["errors"][0]["message"],
        "must have at most 2 digits after the decimal point"
    );
    // Trailing zeros are not digits of the value.
    server
        .post("/items", json!({"price": "1.5000"}))
        .await
        .expect(201);
    assert_eq!(server.count_in_database("items").await, before + 1);
}

#[test]
fn a_scale_outside_a_decimal_or_past_ten_digits_is_refused_by_check() {
    let (_dir, path) = common::schema_dir(
        r#"[app]
name = "shop"

[resources.items]
fields.name  = { type = "string", scale = 2 }
fields.price = { type = "decimal", scale = 11 }
"#,
    );
    let out = common::cli(&["check", path.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("resources.items.fields.name.scale: scale applies to decimal fields only"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "resources.items.fields.price.scale: a decimal keeps at most 10 digits after the point"
        ),
        "{}",
        out.stderr
    );
}
