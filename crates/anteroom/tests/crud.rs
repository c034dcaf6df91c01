//! Every resource route end to end against the real binary: statuses,
//! headers (Location, ETag, Allow, Cache-Control), bodies, conditional
//! requests, nested routes, client-chosen keys, and the database afterwards.

mod common;

use common::{Server, id_of};
use serde_json::{Value, json};

const SCHOOL: &str = r#"
[app]
name = "school"

[resources.colleges]
id = { type = "integer" }
cache_control = "public, max-age=60"
fields.name      = { type = "string", required = true, max_length = 255 }
fields.email_tld = { type = "string", required = true, unique = true }

[resources.majors]
fields.name       = { type = "string", required = true }
fields.college_id = { type = "ref", to = "colleges", required = true, on_delete = "cascade" }
fields.seats      = { type = "integer", default = 30, min = 0 }

[resources.users]
id = { type = "string", name = "userId", max_length = 64 }
fields.name = { type = "string", required = true }
fields.bio  = { type = "text" }
"#;

async fn college(server: &Server, name: &str) -> Value {
    server
        .post(
            "/colleges",
            json!({"name": name, "email_tld": format!("{name}.example.edu")}),
        )
        .await
        .expect(201)
}

#[tokio::test]
async fn create_returns_201_with_location_etag_and_server_fields() {
    let server = Server::start(SCHOOL).await;
    let reply = server
        .post(
            "/colleges",
            json!({"name": "Engineering", "email_tld": "eng.example.edu"}),
        )
        .await;
    let body = reply.expect(201);
    assert_eq!(body["name"], "Engineering");
    let id = body["id"].as_i64().expect("integer id");
    assert_eq!(reply.header("location"), Some(format!("/colleges/{id}")));
    assert_eq!(reply.header("etag").as_deref(), Some("\"1\""));
    assert_eq!(body["created_at"], body["updated_at"]);
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["created_by"], Value::Null);
    assert_eq!(server.count_in_database("colleges").await, 1);
}

#[tokio::test]
async fn uuid_ids_are_version_7_and_defaults_are_applied() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "arts").await;
    let major = server
        .post("/majors", json!({"name": "History", "college_id": c["id"]}))
        .await
        .expect(201);
    let id = major["id"].as_str().expect("uuid id");
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "7", "UUID v7: {id}");
    assert_eq!(major["seats"], 30);
}

#[tokio::test]
async fn get_by_id_returns_the_row_with_etag_and_cache_control() {
    let server = Server::start(SCHOOL).await;
    let created = college(&server, "law").await;
    let reply = server.get(&format!("/colleges/{}", created["id"])).await;
    assert_eq!(reply.expect(200), created);
    assert_eq!(reply.header("etag").as_deref(), Some("\"1\""));
    assert_eq!(
        reply.header("cache-control").as_deref(),
        Some("public, max-age=60")
    );
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_is_a_304_and_a_stale_one_is_not() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "med").await;
    let path = format!("/colleges/{}", c["id"]);
    let fresh = server
        .send("GET", &path, None, &[("if-none-match", "\"1\"")])
        .await;
    assert_eq!(fresh.status, 304);
    assert!(fresh.bytes.is_empty());
    assert_eq!(fresh.header("etag").as_deref(), Some("\"1\""));
    server
        .patch(&path, json!({"name": "Medicine"}))
        .await
        .expect(200);
    let stale = server
        .send("GET", &path, None, &[("if-none-match", "\"1\"")])
        .await;
    assert_eq!(stale.expect(200)["name"], "Medicine");
    assert_eq!(stale.header("etag").as_deref(), Some("\"2\""));
}

#[tokio::test]
async fn lists_carry_a_weak_etag_that_changes_with_the_data() {
    let server = Server::start(SCHOOL).await;
    college(&server, "a").await;
    let first = server.get("/colleges").await;
    let etag = first.header("etag").expect("list etag");
    assert!(etag.starts_with("W/\""), "{etag}");
    let again = server
        .send("GET", "/colleges", None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, 304);
    college(&server, "b").await;
    let changed = server
        .send("GET", "/colleges", None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(changed.expect(200)["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn patch_changes_only_the_given_fields_and_bumps_updated_at_and_etag() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "sci").await;
    let path = format!("/colleges/{}", c["id"]);
    let reply = server.patch(&path, json!({"name": "Science"})).await;
    let body = reply.expect(200);
    assert_eq!(body["name"], "Science");
    assert_eq!(body["email_tld"], c["email_tld"]);
    assert_eq!(body["created_at"], c["created_at"]);
    assert!(body["updated_at"].as_str() > c["updated_at"].as_str());
    assert_eq!(reply.header("etag").as_deref(), Some("\"2\""));
    assert_eq!(server.get(&path).await.expect(200), body);
}

#[tokio::test]
async fn if_match_with_a_stale_etag_is_a_412_and_changes_nothing() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "eng").await;
    let path = format!("/colleges/{}", c["id"]);
    server
        .send(
            "PATCH",
            &path,
            Some(json!({"name": "v2"})),
            &[("if-match", "\"1\"")],
        )
        .await
        .expect(200);
    server
        .send(
            "PATCH",
            &path,
            Some(json!({"name": "v3"})),
            &[("if-match", "\"1\"")],
        )
        .await
        .expect_problem(412, "precondition_failed");
    server
        .send("DELETE", &path, None, &[("if-match", "\"1\"")])
        .await
        .expect_problem(412, "precondition_failed");
    server
        .send(
            "PATCH",
            &path,
            Some(json!({"name": "v3"})),
            &[("if-match", "W/\"2\"")],
        )
        .await
        .expect_problem(412, "precondition_failed");
    assert_eq!(server.get(&path).await.expect(200)["name"], "v2");
    server
        .send("DELETE", &path, None, &[("if-match", "\"2\"")])
        .await
        .expect(204);
    assert_eq!(server.count_in_database("colleges").await, 0);
}

#[tokio::test]
async fn put_with_if_none_match_star_creates_only_a_missing_key_and_never_overwrites() {
    let server = Server::start(SCHOOL).await;
    let create_only = [("if-none-match", "*")];
    let created = server
        .send(
            "PUT",
            "/users/ada",
            Some(json!({"name": "Ada"})),
            &create_only,
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let refused = server
        .send(
            "PUT",
            "/users/ada",
            Some(json!({"name": "Mallory"})),
            &create_only,
        )
        .await;
    refused.expect_problem(412, "precondition_failed");
    let row = server.get("/users/ada").await.expect(200);
    assert_eq!(row["name"], "Ada");
    assert_eq!(server.count_in_database("users").await, 1);
}

#[tokio::test]
async fn concurrent_create_only_puts_of_one_key_give_one_201_and_412s() {
    let server = Server::start(SCHOOL).await;
    let puts = (0..8).map(|i| {
        server.send(
            "PUT",
            "/users/race",
            Some(json!({"name": format!("writer {i}")})),
            &[("if-none-match", "*")],
        )
    });
    let mut statuses: Vec<u16> = futures_util::future::join_all(puts)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 412, 412, 412, 412, 412, 412, 412]);
    let row = server.get("/users/race").await.expect(200);
    assert!(
        row["name"].as_str().unwrap().starts_with("writer "),
        "{row}"
    );
    assert_eq!(
        row["created_at"], row["updated_at"],
        "never overwritten: {row}"
    );
    assert_eq!(server.count_in_database("users").await, 1);
}

#[tokio::test]
async fn if_none_match_on_a_write_refuses_the_current_version_with_412_and_changes_nothing() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "arts").await;
    let path = format!("/colleges/{}", id_of(&c["id"]));
    for (method, body) in [("PATCH", Some(json!({"name": "X"}))), ("DELETE", None)] {
        for tag in ["\"1\"", "W/\"1\"", "*"] {
            server
                .send(method, &path, body.clone(), &[("if-none-match", tag)])
                .await
                .expect_problem(412, "precondition_failed");
        }
    }
    assert_eq!(server.get(&path).await.expect(200), c);
    // Another version is not the current one: the write goes ahead.
    let patched = server
        .send(
            "PATCH",
            &path,
            Some(json!({"name": "Y"})),
            &[("if-none-match", "\"7\"")],
        )
        .await
        .expect(200);
    assert_eq!(patched["name"], "Y");
    // If-Match and If-None-Match together: both must hold.
    server
        .send(
            "DELETE",
            &path,
            None,
            &[("if-match", "\"2\""), ("if-none-match", "\"2\"")],
        )
        .await
        .expect_problem(412, "precondition_failed");
    server
        .send(
            "DELETE",
            &path,
            None,
            &[("if-match", "\"2\""), ("if-none-match", "\"1\"")],
        )
        .await
        .expect(204);
}

#[tokio::test]
async fn put_replaces_the_whole_row_resetting_omitted_fields_to_defaults() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "x").await;
    let major = server
        .post(
            "/majors",
            json!({"name": "Art", "college_id": c["id"], "seats": 5}),
        )
        .await
        .expect(201);
    let path = format!("/majors/{}", id_of(&major["id"]));
    let replaced = server
        .put(&path, json!({"name": "Fine Art", "college_id": c["id"]}))
        .await
        .expect(200);
    assert_eq!(replaced["seats"], 30);
    assert_eq!(replaced["name"], "Fine Art");
    assert_eq!(replaced["id"], major["id"]);
    server
        .put(&path, json!({"college_id": c["id"]}))
        .await
        .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn put_on_a_missing_generated_id_is_a_404() {
    let server = Server::start(SCHOOL).await;
    let reply = server
        .put("/colleges/999", json!({"name": "n", "email_tld": "t"}))
        .await;
    let problem = reply.expect_problem(404, "not_found");
    assert!(problem["detail"].as_str().unwrap().contains("999"));
    assert_eq!(server.count_in_database("colleges").await, 0);
}

#[tokio::test]
async fn a_client_chosen_key_is_created_read_and_upserted_with_put() {
    let server = Server::start(SCHOOL).await;
    let created = server
        .post("/users", json!({"userId": "ada", "name": "Ada"}))
        .await;
    let body = created.expect(201);
    assert_eq!(body["userId"], "ada");
    assert!(body.get("id").is_none(), "the key replaces id: {body}");
    assert_eq!(created.header("location").as_deref(), Some("/users/ada"));
    server
        .post("/users", json!({"userId": "ada", "name": "Again"}))
        .await
        .expect_problem(409, "unique_violation");
    let upserted = server.put("/users/grace", json!({"name": "Grace"})).await;
    assert_eq!(upserted.expect(201)["userId"], "grace");
    assert_eq!(upserted.header("location").as_deref(), Some("/users/grace"));
    let replaced = server
        .put("/users/grace", json!({"name": "Grace H."}))
        .await;
    assert_eq!(replaced.expect(200)["name"], "Grace H.");
    assert_eq!(
        server.get("/users/grace").await.expect(200)["name"],
        "Grace H."
    );
    assert_eq!(server.count_in_database("users").await, 2);
}

#[tokio::test]
async fn a_missing_key_is_a_404_whose_detail_names_it() {
    let server = Server::start(SCHOOL).await;
    let problem = server
        .get("/users/nobody%20here")
        .await
        .expect_problem(404, "not_found");
    assert_eq!(problem["detail"], "no users with userId nobody here");
}

#[tokio::test]
async fn keys_with_spaces_and_unicode_round_trip_through_the_url() {
    let server = Server::start(SCHOOL).await;
    let created = server
        .post("/users", json!({"userId": "zoë d", "name": "Zoë"}))
        .await;
    created.expect(201);
    let location = created.header("location").unwrap();
    assert_eq!(server.get(&location).await.expect(200)["userId"], "zoë d");
}

#[tokio::test]
async fn delete_returns_204_and_removes_the_row_and_a_second_delete_is_404() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "gone").await;
    let path = format!("/colleges/{}", c["id"]);
    let reply = server.delete(&path).await;
    assert_eq!(reply.status, 204);
    assert!(reply.bytes.is_empty());
    server.get(&path).await.expect_problem(404, "not_found");
    server.delete(&path).await.expect_problem(404, "not_found");
    assert_eq!(server.count_in_database("colleges").await, 0);
}

#[tokio::test]
async fn deleting_a_parent_cascades_to_children_declared_cascade() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "c").await;
    for name in ["A", "B"] {
        server
            .post("/majors", json!({"name": name, "college_id": c["id"]}))
            .await
            .expect(201);
    }
    server
        .delete(&format!("/colleges/{}", c["id"]))
        .await
        .expect(204);
    assert_eq!(server.count_in_database("majors").await, 0);
}

#[tokio::test]
async fn bulk_create_returns_an_array_in_body_order() {
    let server = Server::start(SCHOOL).await;
    let reply = server
        .post(
            "/colleges",
            json!([
                {"name": "one", "email_tld": "1.edu"},
                {"name": "two", "email_tld": "2.edu"},
                {"name": "three", "email_tld": "3.edu"}
            ]),
        )
        .await;
    let body = reply.expect(201);
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two", "three"]);
    assert_eq!(server.count_in_database("colleges").await, 3);
}

#[tokio::test]
async fn a_bulk_create_that_conflicts_names_the_item_and_creates_nothing() {
    let server = Server::start(SCHOOL).await;
    let first = college(&server, "first").await;
    let taken = first["email_tld"].as_str().unwrap().to_owned();
    let problem = server
        .post(
            "/colleges",
            json!([
                {"name": "one", "email_tld": "one.edu"},
                {"name": "two", "email_tld": "two.edu"},
                {"name": "three", "email_tld": taken}
            ]),
        )
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "[2].email_tld", "{problem}");
    assert_eq!(
        problem["detail"],
        "item 2: another row of colleges already has this email_tld; nothing was created"
    );
    assert_eq!(server.count_in_database("colleges").await, 1);

    let missing = 999_999;
    let problem = server
        .post(
            "/majors",
            json!([
                {"name": "Math", "college_id": first["id"]},
                {"name": "Art", "college_id": missing}
            ]),
        )
        .await
        .expect_problem(409, "foreign_key_violation");
    assert_eq!(problem["field"], "[1].college_id", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("item 1: college_id refers to"),
        "{problem}"
    );
    assert_eq!(server.count_in_database("majors").await, 0);

    // A single object keeps the plain field name.
    let problem = server
        .post("/colleges", json!({"name": "again", "email_tld": taken}))
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "email_tld");
}

#[tokio::test]
async fn nested_routes_list_and_read_only_the_parents_children() {
    let server = Server::start(SCHOOL).await;
    let a = college(&server, "a").await;
    let b = college(&server, "b").await;
    let math = server
        .post("/majors", json!({"name": "Math", "college_id": a["id"]}))
        .await
        .expect(201);
    let bio = server
        .post("/majors", json!({"name": "Bio", "college_id": b["id"]}))
        .await
        .expect(201);
    let list = server
        .get(&format!("/colleges/{}/majors/", a["id"]))
        .await
        .expect(200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], math["id"]);
    server
        .get(&format!(
            "/colleges/{}/majors/{}",
            a["id"],
            id_of(&math["id"])
        ))
        .await
        .expect(200);
    server
        .get(&format!(
            "/colleges/{}/majors/{}",
            a["id"],
            id_of(&bio["id"])
        ))
        .await
        .expect_problem(404, "not_found");
    let nested_post = server
        .post(
            &format!("/colleges/{}/majors", a["id"]),
            json!({"name": "X"}),
        )
        .await;
    assert_eq!(
        nested_post.expect_problem(405, "method_not_allowed")["status"],
        405
    );
    assert_eq!(nested_post.header("allow").as_deref(), Some("GET, HEAD"));
}

#[tokio::test]
async fn a_nested_route_between_unrelated_resources_is_a_404() {
    let server = Server::start(SCHOOL).await;
    server
        .get("/users/x/majors")
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let server = Server::start(SCHOOL).await;
    let reply = server.send("DELETE", "/colleges", None, &[]).await;
    reply.expect_problem(405, "method_not_allowed");
    assert_eq!(reply.header("allow").as_deref(), Some("GET, HEAD, POST"));
    let reply = server
        .send("POST", "/colleges/1", Some(json!({})), &[])
        .await;
    reply.expect_problem(405, "method_not_allowed");
    assert_eq!(
        reply.header("allow").as_deref(),
        Some("GET, HEAD, PATCH, PUT, DELETE")
    );
    // Every route of the table lists HEAD wherever it takes GET.
    for (path, allow) in [
        ("/health", "GET, HEAD"),
        ("/colleges/1/majors", "GET, HEAD"),
        ("/colleges/1/majors/x", "GET, HEAD"),
        ("/", "GET, HEAD"),
    ] {
        let reply = server.send("PATCH", path, Some(json!({})), &[]).await;
        reply.expect_problem(405, "method_not_allowed");
        assert_eq!(reply.header("allow").as_deref(), Some(allow), "{path}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let server = Server::start(SCHOOL).await;
    server
        .get("/nothing")
        .await
        .expect_problem(404, "not_found");
    server
        .get("/colleges/1/majors/2/extra")
        .await
        .expect_problem(404, "not_found");
    // The root names the API's description rather than nothing.
    let index = server.get("/").await.expect(200);
    assert_eq!(index["openapi"], "/openapi.json");
    assert_eq!(index["resources"], json!(["colleges", "majors", "users"]));
}

#[tokio::test]
async fn head_returns_the_headers_of_get_without_a_body() {
    let server = Server::start(SCHOOL).await;
    let c = college(&server, "h").await;
    let reply = server
        .send("HEAD", &format!("/colleges/{}", c["id"]), None, &[])
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.bytes.is_empty());
    assert_eq!(reply.header("etag").as_deref(), Some("\"1\""));
}

#[tokio::test]
async fn health_reports_the_database() {
    let server = Server::start(SCHOOL).await;
    let body = server.get("/health").await.expect(200);
    assert_eq!(
        body,
        json!({"status": "ok", "database": common::Backend::current().name()})
    );
}

#[tokio::test]
async fn a_nested_route_under_a_missing_parent_is_a_404_naming_the_parent() {
    let server = Server::start(SCHOOL).await;
    let problem = server
        .get("/colleges/42/majors")
        .await
        .expect_problem(404, "not_found");
    assert_eq!(problem["detail"], "no colleges with id 42");
}
