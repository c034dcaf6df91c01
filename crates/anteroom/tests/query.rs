//! The query language end to end against the real binary: equality and every
//! filter operator on every field type, several filters at once, `sort` with
//! NULL ordering, `limit`, `offset`, keyset `cursor` paging, `fields`,
//! `expand`, `count`, the 400s that name what was wrong, SQL-looking input,
//! and the nested `/colleges/{id}/majors` list.

mod common;

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use common::{Reply, Server, id_of};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
[app]
name = "query-language"

[resources.colleges]
id = { type = "integer" }
fields.name = { type = "string", required = true }

[resources.majors]
fields.name       = { type = "string", required = true }
fields.college_id = { type = "ref", to = "colleges", required = true, on_delete = "cascade" }

[resources.students]
id = { type = "integer" }
fields.name             = { type = "string", required = true }
fields.age              = { type = "integer" }
fields.gpa              = { type = "float" }
fields.balance          = { type = "decimal" }
fields.is_undergraduate = { type = "boolean", default = true }
fields.enrolled_at      = { type = "timestamp" }
fields.birthday         = { type = "date" }
fields.badge            = { type = "uuid" }
fields.level            = { type = "enum", values = ["freshman", "sophomore", "junior", "senior"] }
fields.major_id         = { type = "ref", to = "majors", on_delete = "set_null" }
fields.profile          = { type = "json" }
"#;

const BADGE_ADA: &str = "0193a2b4-0000-7000-8000-000000000001";
const BADGE_GRACE: &str = "0193a2b4-0000-7000-8000-000000000002";
const BADGE_ALAN: &str = "0193a2b4-0000-7000-8000-00000000000a";
const BADGE_EDSGER: &str = "0193a2b4-0000-7000-8000-00000000000e";
const BADGE_ALONZO: &str = "0193a2b4-0000-7000-8000-0000000000af";

/// Percent-encodes a query-string value (everything but unreserved characters).
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asserts a 200 JSON list body and returns it.
#[track_caller]
fn page_of(reply: &Reply) -> Value {
    let body = reply.expect(200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(body["items"].is_array(), "{body}");
    assert!(
        body["next_cursor"].is_null() || body["next_cursor"].is_string(),
        "{body}"
    );
    body
}

/// The `name` of every item of a list body, in order.
fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The integer `id` of every item of a list body, in order.
fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_i64().expect("integer id"))
        .collect()
}

/// Creates students in one bulk request, returning them as the server did.
async fn create_students(server: &Server, rows: Vec<Value>) -> Vec<Value> {
    let created = server
        .post("/students", Value::Array(rows))
        .await
        .expect(201);
    created
        .as_array()
        .expect("bulk create returns an array")
        .clone()
}

/// Six students covering every field type, NULLs included.
struct Roster {
    server: Server,
    computer_science: String,
    mathematics: String,
    /// Student name → id.
    id: HashMap<String, i64>,
}

impl Roster {
    async fn start() -> Roster {
        let server = Server::start(SCHEMA).await;
        let college = server
            .post("/colleges", json!({"name": "Engineering"}))
            .await
            .expect(201);
        let mut majors = Vec::new();
        for name in ["Computer Science", "Mathematics"] {
            let major = server
                .post(
                    "/majors",
                    json!({"name": name, "college_id": college["id"]}),
                )
                .await
                .expect(201);
            majors.push(id_of(&major["id"]));
        }
        let (cs, math) = (majors[0].clone(), majors[1].clone());
        let created = create_students(
            &server,
            vec![
                json!({"name": "Ada", "age": 20, "gpa": 3.9, "balance": "10.50",
                       "is_undergraduate": true, "enrolled_at": "2025-09-01T09:00:00Z",
                       "birthday": "2005-03-14", "badge": BADGE_ADA, "level": "freshman",
                       "major_id": cs, "profile": {"clubs": ["chess"]}}),
                json!({"name": "Grace", "age": 22, "gpa": 3.5, "balance": "9.5",
                       "is_undergraduate": true, "enrolled_at": "2024-09-01T09:00:00Z",
                       "birthday": "2003-12-09", "badge": BADGE_GRACE, "level": "junior",
                       "major_id": math}),
                json!({"name": "alan", "age": 30, "gpa": 2.8, "balance": "100",
                       "is_undergraduate": false, "enrolled_at": "2020-01-15T12:30:00Z",
                       "birthday": "1995-06-23", "badge": BADGE_ALAN, "level": "senior",
                       "major_id": cs}),
                json!({"name": "Barbara", "is_undergraduate": false}),
                json!({"name": "Edsger", "age": 22, "gpa": 3.0, "balance": "0.25",
                       "is_undergraduate": true, "enrolled_at": "2025-01-10T08:00:00+02:00",
                       "birthday": "2004-05-11", "badge": BADGE_EDSGER, "level": "sophomore",
                       "major_id": math}),
                json!({"name": "Alonzo", "age": 25, "gpa": 3.2, "balance": "-3",
                       "is_undergraduate": false, "enrolled_at": "2023-02-01T00:00:00Z",
                       "birthday": "1998-07-01", "badge": BADGE_ALONZO, "level": "senior"}),
            ],
        )
        .await;
        let id = created
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["id"].as_i64().unwrap(),
                )
            })
            .collect();
        Roster {
            server,
            computer_science: cs,
            mathematics: math,
            id,
        }
    }

    /// `GET /students?{query}` as a 200 list body.
    async fn list(&self, query: &str) -> Value {
        page_of(&self.server.get(&format!("/students?{query}")).await)
    }

    /// The names `GET /students?{query}` returns, in order.
    async fn names(&self, query: &str) -> Vec<String> {
        names(&self.list(query).await)
    }

    /// Asserts `GET /students?{query}` is a 400 problem with `code` whose detail mentions `needle`.
    async fn refused(&self, query: &str, code: &str, needle: &str) {
        let reply = self.server.get(&format!("/students?{query}")).await;
        let problem = reply.expect_problem(400, code);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "?{query}: detail {detail:?} does not mention {needle:?}"
        );
    }
}

// ---------------------------------------------------------------- equality

#[tokio::test]
async fn equality_on_a_string_matches_the_whole_value_case_sensitively() {
    let r = Roster::start().await;
    assert_eq!(r.names("name=Ada").await, ["Ada"]);
    assert_eq!(r.names("name[eq]=Grace").await, ["Grace"]);
    assert_eq!(r.names("name=ada").await, Vec::<String>::new());
    assert_eq!(r.names("name=Ad").await, Vec::<String>::new());
    assert_eq!(r.names("name=alan").await, ["alan"]);
}

#[tokio::test]
async fn equality_on_integers_floats_and_booleans_compares_typed_values() {
    let r = Roster::start().await;
    assert_eq!(r.names("age=22").await, ["Grace", "Edsger"]);
    assert_eq!(r.names("age=022").await, ["Grace", "Edsger"]);
    assert_eq!(r.names("gpa=3.5").await, ["Grace"]);
    assert_eq!(
        r.names("is_undergraduate=false").await,
        ["alan", "Barbara", "Alonzo"]
    );
    assert_eq!(
        r.names("is_undergraduate=true").await,
        ["Ada", "Grace", "Edsger"]
    );
    assert_eq!(
        r.names("is_undergraduate=0").await,
        ["alan", "Barbara", "Alonzo"]
    );
}

#[tokio::test]
async fn equality_on_a_ref_or_uuid_finds_the_rows_holding_that_id() {
    let r = Roster::start().await;
    assert_eq!(
        r.names(&format!("major_id={}", r.computer_science)).await,
        ["Ada", "alan"]
    );
    assert_eq!(
        r.names(&format!("major_id={}", r.mathematics)).await,
        ["Grace", "Edsger"]
    );
    assert_eq!(r.names(&format!("badge={BADGE_ADA}")).await, ["Ada"]);
    // A UUID is a value, not text: upper case names the same UUID.
    assert_eq!(
        r.names(&format!("badge={}", BADGE_ALAN.to_uppercase()))
            .await,
        ["alan"]
    );
    let page = r.list(&format!("badge={BADGE_ALONZO}")).await;
    assert_eq!(page["items"][0]["badge"], BADGE_ALONZO);
}

#[tokio::test]
async fn equality_on_a_timestamp_compares_instants_whatever_the_offset() {
    let r = Roster::start().await;
    // Edsger enrolled at 08:00 +02:00, which is 06:00 UTC.
    let page = r.list("enrolled_at=2025-01-10T06:00:00Z").await;
    assert_eq!(names(&page), ["Edsger"]);
    assert_eq!(
        page["items"][0]["enrolled_at"],
        "2025-01-10T06:00:00.000000Z"
    );
    assert_eq!(
        r.names(&format!("enrolled_at={}", enc("2025-01-10T08:00:00+02:00")))
            .await,
        ["Edsger"]
    );
    assert_eq!(
        r.names("enrolled_at=2025-01-10T06:00:00.000Z").await,
        ["Edsger"]
    );
    assert_eq!(
        r.names("enrolled_at=2025-01-10T06:00:01Z").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn equality_on_dates_and_enums_matches_their_values() {
    let r = Roster::start().await;
    assert_eq!(r.names("birthday=2005-03-14").await, ["Ada"]);
    assert_eq!(r.names("birthday[eq]=1995-06-23").await, ["alan"]);
    assert_eq!(r.names("birthday=2005-03-15").await, Vec::<String>::new());
    assert_eq!(r.names("level=senior").await, ["alan", "Alonzo"]);
    assert_eq!(r.names("level[eq]=junior").await, ["Grace"]);
}

#[tokio::test]
async fn equality_on_a_decimal_matches_the_number_however_it_is_written() {
    let r = Roster::start().await;
    // Ada's balance was given as "10.50".
    assert_eq!(r.names("balance=10.5").await, ["Ada"]);
    assert_eq!(r.names("balance=10.50").await, ["Ada"]);
    assert_eq!(r.names("balance=100.00").await, ["alan"]);
    assert_eq!(r.names("balance=-3").await, ["Alonzo"]);
    assert_eq!(r.names("balance=7").await, Vec::<String>::new());
}

#[tokio::test]
async fn decimal_equality_is_exact_to_the_last_digit_and_order_is_numeric() {
    let server = Server::start(SCHEMA).await;
    create_students(
        &server,
        vec![
            json!({"name": "low", "balance": "12345678901234567.891"}),
            json!({"name": "high", "balance": "12345678901234567.892"}),
            json!({"name": "mid", "balance": "1234567.892"}),
            json!({"name": "small", "balance": "1234567.891"}),
        ],
    )
    .await;
    let get = |q: &'static str| {
        let server = &server;
        async move { names(&page_of(&server.get(&format!("/students?{q}")).await)) }
    };
    // Equality is exact on every backend, even past what a float can hold.
    assert_eq!(get("balance=12345678901234567.891").await, ["low"]);
    assert_eq!(get("balance[in]=12345678901234567.892,1").await, ["high"]);
    // Ordering is numeric (SQLite orders decimals as 64-bit floats, so the
    // test stays within 15 significant digits; docs/schema.md says so).
    assert_eq!(
        get("balance[gt]=1234567.891&balance[lt]=2000000").await,
        ["mid"]
    );
    assert_eq!(
        get("sort=-balance&balance[lt]=2000000").await,
        ["mid", "small"]
    );
}

// ---------------------------------------------------------------- operators

#[tokio::test]
async fn ne_keeps_every_other_value_and_like_sql_leaves_out_nulls() {
    let r = Roster::start().await;
    // Barbara's age is NULL: `age <> 22` is unknown for her, as in SQL and PostgREST.
    assert_eq!(r.names("age[ne]=22").await, ["Ada", "alan", "Alonzo"]);
    assert_eq!(
        r.names("name[ne]=Ada").await,
        ["Grace", "alan", "Barbara", "Edsger", "Alonzo"]
    );
    assert_eq!(
        r.names("level[ne]=senior").await,
        ["Ada", "Grace", "Edsger"]
    );
}

#[tokio::test]
async fn gt_and_lte_filters_bound_a_range() {
    let r = Roster::start().await;
    assert_eq!(
        r.names("age[gt]=20&age[lte]=25").await,
        ["Grace", "Edsger", "Alonzo"]
    );
    assert_eq!(r.names("age[gt]=25").await, ["alan"]);
    assert_eq!(r.names("age[lte]=20").await, ["Ada"]);
}

#[tokio::test]
async fn gte_includes_its_bound_and_lt_excludes_its_bound() {
    let r = Roster::start().await;
    assert_eq!(
        r.names("age[gte]=20&age[lt]=25").await,
        ["Ada", "Grace", "Edsger"]
    );
    assert_eq!(r.names("age[gte]=30").await, ["alan"]);
    assert_eq!(r.names("age[lt]=20").await, Vec::<String>::new());
}

#[tokio::test]
async fn comparisons_order_decimals_as_numbers_not_as_text() {
    let r = Roster::start().await;
    // As text, "10.50" and "100" would sort before "9.9".
    assert_eq!(r.names("balance[gt]=9.9").await, ["Ada", "alan"]);
    assert_eq!(
        r.names("balance[lte]=9.5").await,
        ["Grace", "Edsger", "Alonzo"]
    );
    assert_eq!(
        r.names("sort=balance").await,
        ["Barbara", "Alonzo", "Edsger", "Grace", "Ada", "alan"]
    );
}

#[tokio::test]
async fn comparisons_work_on_timestamps_dates_floats_and_uuids() {
    let r = Roster::start().await;
    assert_eq!(
        r.names("enrolled_at[gte]=2025-01-01T00:00:00Z").await,
        ["Ada", "Edsger"]
    );
    // 07:00 +01:00 is Edsger's 06:00 UTC exactly: lt leaves him out.
    assert_eq!(
        r.names(&format!(
            "enrolled_at[lt]={}",
            enc("2025-01-10T07:00:00+01:00")
        ))
        .await,
        ["Grace", "alan", "Alonzo"]
    );
    assert_eq!(r.names("birthday[lt]=2000-01-01").await, ["alan", "Alonzo"]);
    assert_eq!(r.names("birthday[gte]=2004-05-11").await, ["Ada", "Edsger"]);
    assert_eq!(r.names("gpa[gt]=3.4").await, ["Ada", "Grace"]);
    assert_eq!(
        r.names(&format!("badge[gt]={BADGE_GRACE}")).await,
        ["alan", "Edsger", "Alonzo"]
    );
    // Upper-case input names the same UUID, so it compares the same way.
    assert_eq!(
        r.names(&format!("badge[lte]={}", BADGE_ALAN.to_uppercase()))
            .await,
        ["Ada", "Grace", "alan"]
    );
}

#[tokio::test]
async fn in_matches_any_value_of_a_comma_separated_list() {
    let r = Roster::start().await;
    assert_eq!(r.names("age[in]=20,30,99").await, ["Ada", "alan"]);
    assert_eq!(r.names("name[in]=Ada,Grace,Nobody").await, ["Ada", "Grace"]);
    assert_eq!(
        r.names("level[in]=junior,senior").await,
        ["Grace", "alan", "Alonzo"]
    );
    assert_eq!(
        r.names(&format!("badge[in]={BADGE_ADA},{BADGE_ALAN}"))
            .await,
        ["Ada", "alan"]
    );
    assert_eq!(
        r.names(&format!(
            "major_id[in]={},{}",
            r.computer_science, r.mathematics
        ))
        .await,
        ["Ada", "Grace", "alan", "Edsger"]
    );
    assert_eq!(r.names("balance[in]=0.250,100").await, ["alan", "Edsger"]);
}

#[tokio::test]
async fn like_is_case_sensitive_and_takes_star_or_percent_as_wildcard() {
    let r = Roster::start().await;
    assert_eq!(r.names("name[like]=A*").await, ["Ada", "Alonzo"]);
    assert_eq!(
        r.names(&format!("name[like]={}", enc("A%"))).await,
        ["Ada", "Alonzo"]
    );
    assert_eq!(r.names("name[like]=a*").await, ["alan"]);
    assert_eq!(r.names("name[like]=*a").await, ["Ada", "Barbara"]);
    assert_eq!(r.names("name[like]=A_a").await, ["Ada"]);
    assert_eq!(r.names("name[like]=*R*").await, Vec::<String>::new());
    assert_eq!(r.names("name[like]=Ada").await, ["Ada"]);
    assert_eq!(r.names("name[like]=ADA").await, Vec::<String>::new());
}

#[tokio::test]
async fn ilike_matches_whatever_the_case() {
    let r = Roster::start().await;
    assert_eq!(r.names("name[ilike]=a*").await, ["Ada", "alan", "Alonzo"]);
    assert_eq!(
        r.names(&format!("name[ilike]={}", enc("A%"))).await,
        ["Ada", "alan", "Alonzo"]
    );
    assert_eq!(
        r.names("name[ilike]=*R*").await,
        ["Grace", "Barbara", "Edsger"]
    );
    assert_eq!(r.names("name[ilike]=ADA").await, ["Ada"]);
}

#[tokio::test]
async fn ilike_ignores_the_case_of_accented_letters_too() {
    let server = Server::start(SCHEMA).await;
    create_students(
        &server,
        vec![
            json!({"name": "Émile"}),
            json!({"name": "émilie"}),
            json!({"name": "Emil"}),
        ],
    )
    .await;
    let page = page_of(
        &server
            .get(&format!("/students?name[ilike]={}", enc("é*")))
            .await,
    );
    assert_eq!(names(&page), ["Émile", "émilie"]);
    let page = page_of(
        &server
            .get(&format!("/students?name[ilike]={}", enc("ÉMILIE")))
            .await,
    );
    assert_eq!(names(&page), ["émilie"]);
}

#[tokio::test]
async fn null_true_and_false_select_missing_and_present_values() {
    let r = Roster::start().await;
    assert_eq!(r.names("age[null]=true").await, ["Barbara"]);
    assert_eq!(
        r.names("age[null]=false").await,
        ["Ada", "Grace", "alan", "Edsger", "Alonzo"]
    );
    assert_eq!(r.names("major_id[null]=true").await, ["Barbara", "Alonzo"]);
    assert_eq!(r.names("profile[null]=false").await, ["Ada"]);
    assert_eq!(r.names("enrolled_at[null]=true").await, ["Barbara"]);
    r.refused("age[null]=maybe", "invalid_filter_value", "age")
        .await;
}

#[tokio::test]
async fn several_filters_must_all_hold() {
    let r = Roster::start().await;
    assert_eq!(
        r.names("is_undergraduate=true&age[gte]=22&name[like]=*r*")
            .await,
        ["Grace", "Edsger"]
    );
    assert_eq!(
        r.names(&format!(
            "is_undergraduate=true&age[gte]=22&name[like]=*r*&major_id={}&level=junior",
            r.mathematics
        ))
        .await,
        ["Grace"]
    );
    assert_eq!(
        r.names("is_undergraduate=false&age[lt]=25").await,
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------- sort

#[tokio::test]
async fn ascending_sort_puts_nulls_first_and_breaks_ties_by_id() {
    let r = Roster::start().await;
    assert_eq!(
        r.names("sort=age").await,
        ["Barbara", "Ada", "Grace", "Edsger", "Alonzo", "alan"]
    );
    assert_eq!(
        r.names("sort=birthday").await,
        ["Barbara", "alan", "Alonzo", "Grace", "Edsger", "Ada"]
    );
}

#[tokio::test]
async fn descending_sort_puts_nulls_last() {
    let r = Roster::start().await;
    assert_eq!(
        r.names("sort=-age").await,
        ["alan", "Alonzo", "Grace", "Edsger", "Ada", "Barbara"]
    );
    assert_eq!(
        r.names("sort=-enrolled_at").await,
        ["Ada", "Edsger", "Grace", "Alonzo", "alan", "Barbara"]
    );
}

#[tokio::test]
async fn a_sort_with_several_keys_orders_by_each_in_turn() {
    let r = Roster::start().await;
    assert_eq!(
        r.names("sort=-is_undergraduate,age").await,
        ["Ada", "Grace", "Edsger", "Barbara", "Alonzo", "alan"]
    );
    assert_eq!(
        r.names("sort=is_undergraduate,-age").await,
        ["alan", "Alonzo", "Barbara", "Grace", "Edsger", "Ada"]
    );
    // The id itself can lead, in either direction.
    let mut by_id: Vec<(i64, String)> = r.id.iter().map(|(n, i)| (*i, n.clone())).collect();
    by_id.sort();
    let descending: Vec<String> = by_id.into_iter().rev().map(|(_, n)| n).collect();
    assert_eq!(r.names("sort=-id").await, descending);
}

#[tokio::test]
async fn sorting_by_an_unknown_repeated_or_json_field_is_refused() {
    let r = Roster::start().await;
    r.refused("sort=nmae", "unknown_field", "nmae").await;
    r.refused("sort=age,-nmae", "unknown_field", "nmae").await;
    r.refused("sort=age,-age", "malformed_query", "age").await;
    r.refused("sort=profile", "unsortable_field", "profile")
        .await;
}

// ---------------------------------------------------------------- limit and offset

#[tokio::test]
async fn limit_defaults_to_fifty_and_goes_up_to_a_thousand() {
    let server = Server::start(SCHEMA).await;
    for batch in 0..2 {
        let rows = (0..600)
            .map(|i| json!({"name": format!("s{:04}", batch * 600 + i)}))
            .collect();
        create_students(&server, rows).await;
    }
    let first = page_of(&server.get("/students").await);
    assert_eq!(first["items"].as_array().unwrap().len(), 50);
    assert!(first["next_cursor"].is_string());

    let big = page_of(&server.get("/students?limit=1000").await);
    assert_eq!(big["items"].as_array().unwrap().len(), 1000);
    let cursor = big["next_cursor"].as_str().expect("more rows follow");
    let rest = page_of(
        &server
            .get(&format!("/students?limit=1000&cursor={}", enc(cursor)))
            .await,
    );
    assert_eq!(rest["items"].as_array().unwrap().len(), 200);
    assert!(rest["next_cursor"].is_null());
    assert_eq!(server.count_in_database("students").await, 1200);
}

#[tokio::test]
async fn a_limit_outside_one_to_a_thousand_or_not_a_number_is_malformed() {
    let r = Roster::start().await;
    for bad in ["0", "1001", "-1", "abc", "", "1.5", "99999999999999999999"] {
        r.refused(&format!("limit={bad}"), "malformed_query", "limit")
            .await;
    }
    assert_eq!(
        r.list("limit=1").await["items"].as_array().unwrap().len(),
        1
    );
    r.refused("limit=2&limit=3", "malformed_query", "limit")
        .await;
}

#[tokio::test]
async fn offset_skips_rows_in_sort_order() {
    let r = Roster::start().await;
    let all = r.names("sort=age").await;
    assert_eq!(r.names("sort=age&offset=2&limit=2").await, all[2..4]);
    assert_eq!(r.names("sort=age&offset=5").await, all[5..]);
    let past = r.list("offset=6").await;
    assert_eq!(names(&past), Vec::<String>::new());
    assert!(past["next_cursor"].is_null());
    r.refused("offset=-1", "malformed_query", "offset").await;
    r.refused("offset=abc", "malformed_query", "offset").await;
}

#[tokio::test]
async fn a_page_ending_exactly_at_the_last_row_has_no_next_cursor() {
    let server = Server::start(SCHEMA).await;
    create_students(
        &server,
        (0..10).map(|i| json!({"name": format!("n{i}")})).collect(),
    )
    .await;
    let whole = page_of(&server.get("/students?limit=10").await);
    assert_eq!(whole["items"].as_array().unwrap().len(), 10);
    assert!(whole["next_cursor"].is_null());

    let first = page_of(&server.get("/students?limit=5").await);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = page_of(
        &server
            .get(&format!("/students?limit=5&cursor={}", enc(cursor)))
            .await,
    );
    assert_eq!(second["items"].as_array().unwrap().len(), 5);
    assert!(second["next_cursor"].is_null());
    let mut seen = ids(&first);
    seen.extend(ids(&second));
    assert_eq!(seen, ids(&whole));
}

// ---------------------------------------------------------------- cursor

/// Follows `next_cursor` from the first page of `GET {path}?{query}&limit={limit}`
/// to the last, returning each page's ids.
async fn walk(server: &Server, path: &str, query: &str, limit: u32) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}?{query}&limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", enc(c)));
        }
        let page = page_of(&server.get(&url).await);
        pages.push(ids(&page));
        assert!(pages.len() <= 100, "the cursor walk does not end");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return pages,
        }
    }
}

/// Checks a walk: page sizes, nothing skipped or repeated, the expected order.
#[track_caller]
fn assert_walk(pages: &[Vec<i64>], limit: usize, expected: &[i64]) {
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    let mut want_sizes = vec![limit; expected.len() / limit];
    if !expected.len().is_multiple_of(limit) {
        want_sizes.push(expected.len() % limit);
    }
    assert_eq!(sizes, want_sizes, "page sizes of {pages:?}");
    let flat: Vec<i64> = pages.concat();
    let unique: BTreeSet<i64> = flat.iter().copied().collect();
    assert_eq!(unique.len(), flat.len(), "a row repeats: {pages:?}");
    assert_eq!(flat, expected, "pages {pages:?}");
}

fn nulls_first<T: PartialOrd>(a: &Option<T>, b: &Option<T>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.partial_cmp(y).unwrap(),
    }
}

#[tokio::test]
async fn cursor_pages_walk_every_row_once_under_a_multi_key_sort_with_ties_and_nulls() {
    let server = Server::start(SCHEMA).await;
    let rows: Vec<Value> = (0..23)
        .map(|i| {
            let age = if i % 6 == 0 {
                json!(null)
            } else {
                json!(18 + i % 4)
            };
            let gpa = if i % 5 == 0 {
                json!(null)
            } else {
                json!(2.0 + f64::from(i % 3) * 0.5)
            };
            json!({"name": format!("walker {i:02}"), "age": age, "gpa": gpa})
        })
        .collect();
    let created = create_students(&server, rows).await;
    let key = |s: &Value| {
        (
            s["age"].as_i64(),
            s["gpa"].as_f64(),
            s["id"].as_i64().unwrap(),
        )
    };

    // age ascending (NULL first), gpa descending (NULL last), then id.
    let mut expected: Vec<_> = created.iter().map(key).collect();
    expected.sort_by(|a, b| {
        nulls_first(&a.0, &b.0)
            .then(nulls_first(&b.1, &a.1))
            .then(a.2.cmp(&b.2))
    });
    let expected: Vec<i64> = expected.into_iter().map(|k| k.2).collect();
    let pages = walk(&server, "/students", "sort=age,-gpa", 5).await;
    assert_walk(&pages, 5, &expected);

    // age descending (NULL last), gpa ascending (NULL first), then id.
    let mut expected: Vec<_> = created.iter().map(key).collect();
    expected.sort_by(|a, b| {
        nulls_first(&b.0, &a.0)
            .then(nulls_first(&a.1, &b.1))
            .then(a.2.cmp(&b.2))
    });
    let expected: Vec<i64> = expected.into_iter().map(|k| k.2).collect();
    let pages = walk(&server, "/students", "sort=-age,gpa", 5).await;
    assert_walk(&pages, 5, &expected);

    // With no sort the order is by id.
    let mut by_id: Vec<i64> = created.iter().map(|s| s["id"].as_i64().unwrap()).collect();
    by_id.sort_unstable();
    assert_walk(
        &walk(&server, "/students", "count=false", 5).await,
        5,
        &by_id,
    );
}

#[tokio::test]
async fn cursor_pages_keep_the_filter_under_a_descending_timestamp_and_decimal_sort() {
    let server = Server::start(SCHEMA).await;
    let instants = [
        "2025-01-01T00:00:00Z",
        "2024-06-30T12:00:00Z",
        "2025-01-01T00:00:00.5Z",
    ];
    let balances = ["9.5", "10.25", "100"];
    let rows: Vec<Value> = (0..23)
        .map(|i: usize| {
            let enrolled = if i.is_multiple_of(7) {
                json!(null)
            } else {
                json!(instants[i % 3])
            };
            let balance = if i.is_multiple_of(4) {
                json!(null)
            } else {
                json!(balances[(i / 2) % 3])
            };
            json!({"name": format!("t{i:02}"), "enrolled_at": enrolled,
                   "balance": balance, "is_undergraduate": !i.is_multiple_of(3)})
        })
        .collect();
    let created = create_students(&server, rows).await;
    let mut expected: Vec<_> = created
        .iter()
        .filter(|s| s["is_undergraduate"] == true)
        .map(|s| {
            (
                s["enrolled_at"].as_str().map(str::to_owned),
                s["balance"].as_str().map(|b| b.parse::<f64>().unwrap()),
                s["id"].as_i64().unwrap(),
            )
        })
        .collect();
    // enrolled_at descending (NULL last), balance ascending (NULL first), then id.
    expected.sort_by(|a, b| {
        nulls_first(&b.0, &a.0)
            .then(nulls_first(&a.1, &b.1))
            .then(a.2.cmp(&b.2))
    });
    let expected: Vec<i64> = expected.into_iter().map(|k| k.2).collect();
    assert!(expected.len() > 8, "the data spans several pages");
    let pages = walk(
        &server,
        "/students",
        "is_undergraduate=true&sort=-enrolled_at,balance",
        4,
    )
    .await;
    assert_walk(&pages, 4, &expected);
}

#[tokio::test]
async fn rows_inserted_before_a_cursor_do_not_shift_the_next_page() {
    let server = Server::start(SCHEMA).await;
    let created = create_students(
        &server,
        (1..=10)
            .map(|i| json!({"name": format!("a{i:02}"), "age": i * 10}))
            .collect(),
    )
    .await;
    let first = page_of(&server.get("/students?sort=age&limit=5").await);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    create_students(&server, vec![json!({"name": "newcomer", "age": 1})]).await;
    let second = page_of(
        &server
            .get(&format!(
                "/students?sort=age&limit=5&cursor={}",
                enc(&cursor)
            ))
            .await,
    );
    let want: Vec<i64> = created[5..]
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids(&second), want);
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn a_cursor_used_with_a_different_sort_is_an_invalid_cursor() {
    let r = Roster::start().await;
    let first = r.list("sort=age&limit=2").await;
    let cursor = enc(first["next_cursor"].as_str().unwrap());
    let next = r.list(&format!("sort=age&limit=2&cursor={cursor}")).await;
    assert_eq!(next["items"].as_array().unwrap().len(), 2);
    for sort in ["sort=-age&", "sort=age,name&", "sort=name&", ""] {
        let reply = r
            .server
            .get(&format!("/students?{sort}limit=2&cursor={cursor}"))
            .await;
        reply.expect_problem(400, "invalid_cursor");
    }
}

#[tokio::test]
async fn a_cursor_the_api_did_not_issue_is_an_invalid_cursor() {
    let r = Roster::start().await;
    // "e30" is base64url("{}"); the last one is base64url of
    // {"s":"id","v":["not a number"]}: well formed, but not an integer id.
    for garbage in [
        "garbage!",
        "abc",
        "e30",
        "eyJzIjoiaWQiLCJ2IjpbIm5vdCBhIG51bWJlciJdfQ",
        "",
    ] {
        let reply = r
            .server
            .get(&format!("/students?cursor={}", enc(garbage)))
            .await;
        reply.expect_problem(400, "invalid_cursor");
    }
}

#[tokio::test]
async fn a_cursor_combined_with_an_offset_is_refused() {
    let r = Roster::start().await;
    let first = r.list("limit=2").await;
    let cursor = enc(first["next_cursor"].as_str().unwrap());
    r.refused(
        &format!("limit=2&cursor={cursor}&offset=1"),
        "malformed_query",
        "offset",
    )
    .await;
    r.refused(
        &format!("offset=1&limit=2&cursor={cursor}"),
        "malformed_query",
        "cursor",
    )
    .await;
}

// ---------------------------------------------------------------- fields, expand, count

#[tokio::test]
async fn fields_projects_lists_and_single_rows_to_the_named_fields() {
    let r = Roster::start().await;
    let page = r.list("fields=name,age&sort=age").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    for item in items {
        let keys: BTreeSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["name", "age"]), "{item}");
    }
    assert_eq!(items[0], json!({"name": "Barbara", "age": null}));
    assert_eq!(items[1], json!({"name": "Ada", "age": 20}));

    let ada = r.id["Ada"];
    let one = r
        .server
        .get(&format!("/students/{ada}?fields=id,badge"))
        .await
        .expect(200);
    assert_eq!(one, json!({"id": ada, "badge": BADGE_ADA}));

    r.refused("fields=name,nope", "unknown_field", "nope").await;
    r.refused("fields=", "malformed_query", "fields").await;
    let reply = r
        .server
        .get(&format!("/students/{ada}?fields=name,nope"))
        .await;
    let problem = reply.expect_problem(400, "unknown_field");
    assert!(problem["detail"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn expand_major_embeds_the_referenced_row_in_lists_and_single_reads() {
    let r = Roster::start().await;
    let majors: HashMap<String, String> = [
        (r.computer_science.clone(), "Computer Science".to_owned()),
        (r.mathematics.clone(), "Mathematics".to_owned()),
    ]
    .into();
    for spelling in ["major", "major_id"] {
        let page = r.list(&format!("expand={spelling}")).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 6);
        for item in items {
            match item["major_id"].as_str() {
                Some(major_id) => {
                    assert_eq!(item["major"]["id"], major_id, "{item}");
                    assert_eq!(item["major"]["name"], majors[major_id].as_str(), "{item}");
                    assert!(item["major"]["college_id"].is_i64(), "{item}");
                }
                None => {
                    assert!(item["major_id"].is_null(), "{item}");
                    assert!(item["major"].is_null(), "{item}");
                    assert!(item.as_object().unwrap().contains_key("major"), "{item}");
                }
            }
        }
    }
    let plain = r.list("").await;
    assert!(
        plain["items"][0].get("major").is_none(),
        "not expanded unless asked"
    );

    let ada = r.id["Ada"];
    let one = r
        .server
        .get(&format!("/students/{ada}?expand=major"))
        .await
        .expect(200);
    assert_eq!(one["name"], "Ada");
    assert_eq!(one["major_id"], r.computer_science.as_str());
    assert_eq!(one["major"]["id"], r.computer_science.as_str());
    assert_eq!(one["major"]["name"], "Computer Science");

    let barbara = r.id["Barbara"];
    let one = r
        .server
        .get(&format!("/students/{barbara}?expand=major"))
        .await
        .expect(200);
    assert!(one["major"].is_null() && one["major_id"].is_null(), "{one}");

    // expand works together with filters and sort.
    let page = r
        .list(&format!(
            "expand=major&major_id={}&sort=-name",
            r.mathematics
        ))
        .await;
    assert_eq!(names(&page), ["Grace", "Edsger"]);
    assert_eq!(page["items"][0]["major"]["name"], "Mathematics");
}

#[tokio::test]
async fn expanding_anything_but_a_reference_is_refused() {
    let r = Roster::start().await;
    r.refused("expand=college", "unknown_expand", "college")
        .await;
    r.refused("expand=name", "unknown_expand", "name").await;
    r.refused("expand=major,advisor", "unknown_expand", "advisor")
        .await;
    let ada = r.id["Ada"];
    let reply = r
        .server
        .get(&format!("/students/{ada}?expand=college"))
        .await;
    reply.expect_problem(400, "unknown_expand");
}

#[tokio::test]
async fn count_true_reports_every_matching_row_not_just_the_page() {
    let server = Server::start(SCHEMA).await;
    create_students(
        &server,
        (0..12)
            .map(|i| json!({"name": format!("c{i:02}"), "is_undergraduate": i % 3 != 0}))
            .collect(),
    )
    .await;
    let first = page_of(
        &server
            .get("/students?is_undergraduate=true&limit=3&count=true")
            .await,
    );
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(first["total"], 8);
    let cursor = enc(first["next_cursor"].as_str().unwrap());
    let second = page_of(
        &server
            .get(&format!(
                "/students?is_undergraduate=true&limit=3&count=true&cursor={cursor}"
            ))
            .await,
    );
    assert_eq!(second["total"], 8, "total ignores the cursor position");
    assert_eq!(
        page_of(&server.get("/students?count=true&limit=1").await)["total"],
        12
    );
    assert_eq!(
        page_of(&server.get("/students?count=true&name=nobody").await)["total"],
        0
    );

    for query in ["", "?count=false", "?limit=3"] {
        let page = page_of(&server.get(&format!("/students{query}")).await);
        assert!(page.get("total").is_none(), "{query}: {page}");
    }
    let reply = server.get("/students?count=maybe").await;
    reply.expect_problem(400, "malformed_query");
}

// ---------------------------------------------------------------- refusals

#[tokio::test]
async fn an_unknown_filter_field_is_refused_and_named() {
    let r = Roster::start().await;
    r.refused("nmae=Ada", "unknown_field", "nmae").await;
    r.refused("nmae[like]=A*", "unknown_field", "nmae").await;
    r.refused("name=Ada&colour=red", "unknown_field", "colour")
        .await;
    // Nothing is silently ignored, not even a parameter of another API.
    r.refused("page=2", "unknown_field", "page").await;
}

#[tokio::test]
async fn an_unknown_operator_is_refused_and_named() {
    let r = Roster::start().await;
    r.refused("age[between]=1", "unknown_operator", "between")
        .await;
    r.refused("name[contains]=A", "unknown_operator", "contains")
        .await;
    r.refused("age[GT]=1", "unknown_operator", "GT").await;
    r.refused("age[gt=1", "malformed_query", "age[gt").await;
}

#[tokio::test]
async fn operators_that_do_not_apply_to_a_field_type_are_unsupported() {
    let r = Roster::start().await;
    r.refused("age[like]=2*", "unsupported_operator", "like")
        .await;
    r.refused("balance[ilike]=1*", "unsupported_operator", "ilike")
        .await;
    r.refused(
        &format!("badge[like]={BADGE_ADA}"),
        "unsupported_operator",
        "badge",
    )
    .await;
    r.refused("is_undergraduate[gt]=true", "unsupported_operator", "gt")
        .await;
    r.refused("profile[eq]=1", "unsupported_operator", "profile")
        .await;
}

#[tokio::test]
async fn a_badly_typed_filter_value_is_refused_and_names_its_field() {
    let r = Roster::start().await;
    for (query, field) in [
        ("age=abc", "age"),
        ("age[gt]=1.5", "age"),
        ("age=", "age"),
        ("age[in]=20,x", "age"),
        ("gpa=abc", "gpa"),
        ("balance=ten", "balance"),
        ("is_undergraduate=yes", "is_undergraduate"),
        ("badge=not-a-uuid", "badge"),
        ("major_id=42", "major_id"),
        ("enrolled_at=yesterday", "enrolled_at"),
        ("enrolled_at=2025-01-10", "enrolled_at"),
        ("birthday=2024-13-01", "birthday"),
        ("birthday[lt]=tomorrow", "birthday"),
        ("id=first", "id"),
    ] {
        r.refused(query, "invalid_filter_value", field).await;
    }
}

#[tokio::test]
async fn a_single_row_read_accepts_only_fields_and_expand() {
    let r = Roster::start().await;
    let ada = r.id["Ada"];
    for query in [
        "sort=name",
        "limit=1",
        "offset=0",
        "count=true",
        "name=Ada",
        "age[gt]=1",
        "cursor=e30",
    ] {
        let reply = r.server.get(&format!("/students/{ada}?{query}")).await;
        let problem = reply.expect_problem(400, "unknown_parameter");
        let key = query.split('=').next().unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(key),
            "{query}: {problem}"
        );
    }
    let one = r
        .server
        .get(&format!(
            "/students/{ada}?fields=name,major_id&expand=major"
        ))
        .await
        .expect(200);
    assert_eq!(one["name"], "Ada");
    assert_eq!(one["major"]["name"], "Computer Science");
}

// ---------------------------------------------------------------- SQL-looking input

const BOBBY: &str = "Robert'); DROP TABLE students;--";

#[tokio::test]
async fn a_value_that_looks_like_sql_is_stored_returned_and_found_verbatim() {
    let r = Roster::start().await;
    let bobby = r
        .server
        .post("/students", json!({"name": BOBBY, "age": 12}))
        .await
        .expect(201);
    assert_eq!(bobby["name"], BOBBY);
    let id = bobby["id"].as_i64().unwrap();
    let read = r.server.get(&format!("/students/{id}")).await.expect(200);
    assert_eq!(read["name"], BOBBY);

    let found = r.list(&format!("name={}", enc(BOBBY))).await;
    assert_eq!(names(&found), [BOBBY]);
    assert_eq!(found["items"][0]["id"], id);
    assert_eq!(
        r.names(&format!("name[like]={}", enc("Robert'*"))).await,
        [BOBBY]
    );
    assert_eq!(
        r.names(&format!("name[in]={},Ada", enc(BOBBY))).await,
        ["Ada", BOBBY]
    );
    assert_eq!(
        r.names(&format!("name={}", enc("x' OR '1'='1"))).await,
        Vec::<String>::new()
    );
    assert_eq!(r.server.count_in_database("students").await, 7);
    assert_eq!(
        r.server
            .query_i64(&format!("SELECT COUNT(*) FROM students WHERE id = {id}"))
            .await,
        1
    );
}

#[tokio::test]
async fn sql_in_sort_fields_expand_or_filter_keys_is_refused_and_changes_nothing() {
    let r = Roster::start().await;
    let before = r.names("").await;
    for (query, code, needle) in [
        (
            "sort=name;DROP TABLE students",
            "unknown_field",
            "DROP TABLE",
        ),
        ("sort=name desc", "unknown_field", "name desc"),
        ("sort=(select 1)", "unknown_field", "select"),
        ("fields=name,(select 1)", "unknown_field", "(select 1)"),
        ("fields=name FROM students;--", "unknown_field", "FROM"),
        (
            "name;DROP TABLE students--=x",
            "unknown_field",
            "DROP TABLE",
        ),
        ("1=1 OR name=x", "unknown_field", "1"),
        (
            "expand=major;DROP TABLE majors",
            "unknown_expand",
            "DROP TABLE",
        ),
        ("age[gt) OR (true]=1", "unknown_operator", "OR"),
    ] {
        let q: String = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => format!("{}={}", enc(k), enc(v)),
                None => enc(pair),
            })
            .collect::<Vec<_>>()
            .join("&");
        r.refused(&q, code, needle).await;
    }
    assert_eq!(r.server.count_in_database("students").await, 6);
    assert_eq!(r.server.count_in_database("majors").await, 2);
    assert_eq!(r.names("").await, before);
}

// ---------------------------------------------------------------- nested lists

#[tokio::test]
async fn nested_majors_of_a_college_take_the_same_filters_sort_cursor_and_count() {
    let server = Server::start(SCHEMA).await;
    let mut colleges = Vec::new();
    for name in ["Engineering", "Medicine"] {
        let c = server
            .post("/colleges", json!({"name": name}))
            .await
            .expect(201);
        colleges.push(c["id"].as_i64().unwrap());
    }
    let (eng, med) = (colleges[0], colleges[1]);
    for (name, college) in [
        ("Computer Science", eng),
        ("Computational Biology", eng),
        ("Mathematics", eng),
        ("Computer Engineering", med),
        ("Anatomy", med),
    ] {
        server
            .post("/majors", json!({"name": name, "college_id": college}))
            .await
            .expect(201);
    }

    let page = page_of(
        &server
            .get(&format!(
                "/colleges/{eng}/majors?name[like]=Comp*&sort=-name&count=true"
            ))
            .await,
    );
    assert_eq!(names(&page), ["Computer Science", "Computational Biology"]);
    assert_eq!(page["total"], 2);
    assert!(page["next_cursor"].is_null());

    let page = page_of(
        &server
            .get(&format!("/colleges/{med}/majors?name[ilike]=*ENG*"))
            .await,
    );
    assert_eq!(names(&page), ["Computer Engineering"]);

    let page = page_of(
        &server
            .get(&format!(
                "/colleges/{eng}/majors?name[ne]=Mathematics&fields=name"
            ))
            .await,
    );
    assert_eq!(
        page["items"],
        json!([{"name": "Computer Science"}, {"name": "Computational Biology"}])
    );

    let page = page_of(
        &server
            .get(&format!("/colleges/{med}/majors?expand=college&sort=name"))
            .await,
    );
    assert_eq!(names(&page), ["Anatomy", "Computer Engineering"]);
    assert_eq!(page["items"][0]["college"]["name"], "Medicine");
    assert_eq!(page["items"][0]["college_id"], med);

    // A cursor walk stays inside the college.
    let mut seen = Vec::new();
    let mut url = format!("/colleges/{eng}/majors?sort=name&limit=1");
    loop {
        let page = page_of(&server.get(&url).await);
        seen.extend(names(&page));
        assert!(seen.len() <= 3, "{seen:?}");
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("/colleges/{eng}/majors?sort=name&limit=1&cursor={}", enc(c)),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["Computational Biology", "Computer Science", "Mathematics"]
    );

    let reply = server
        .get(&format!("/colleges/{eng}/majors?nmae=Mathematics"))
        .await;
    let problem = reply.expect_problem(400, "unknown_field");
    assert!(problem["detail"].as_str().unwrap().contains("nmae"));
    let reply = server
        .get(&format!("/colleges/{eng}/majors?name[between]=a"))
        .await;
    reply.expect_problem(400, "unknown_operator");
    let reply = server.get(&format!("/colleges/{eng}/majors?limit=0")).await;
    reply.expect_problem(400, "malformed_query");
}

#[tokio::test]
async fn an_enum_filter_value_outside_the_enum_is_a_400_not_an_empty_page() {
    let r = Roster::start().await;
    let problem = r
        .server
        .get("/students?level=wizard")
        .await
        .expect_problem(400, "invalid_filter_value");
    assert!(
        problem["detail"].as_str().unwrap().contains("level"),
        "{problem}"
    );
    r.server
        .get("/students?level[in]=junior,Junior")
        .await
        .expect_problem(400, "invalid_filter_value");
    assert_eq!(
        r.names("level[in]=junior,senior").await,
        ["Grace", "alan", "Alonzo"]
    );
}
