//! The example apps under `examples/`, served by the real binary exactly as the
//! README runs them, checked against what their originals did — and against
//! the defects the originals had (see ORIGINS.md): not-found as 400, duplicate
//! email as a 500 carrying SQL, DELETE of a student always 500.

mod common;

use common::{Server, repo_root};
use serde_json::{Value, json};

fn example(name: &str) -> String {
    std::fs::read_to_string(
        repo_root()
            .join("examples")
            .join(name)
            .join("anteroom.toml"),
    )
    .expect("example schema")
}

/// The student app's API key and the advisors' JWT secret, as the
/// example's README exports them.
const APP_TOKEN: &str = "demo-student-app-token-0123456789ab";
const ADVISOR_JWT_SECRET: &str = "demo-advisor-jwt-secret-0123456789ab";

async fn office_hours() -> Server {
    let seed = repo_root().join("examples/office-hours/seed.json");
    Server::start_with_env(
        &example("office-hours"),
        &["--seed", seed.to_str().unwrap()],
        &[
            ("APP_TOKEN", APP_TOKEN),
            ("ADVISOR_JWT_SECRET", ADVISOR_JWT_SECRET),
        ],
    )
    .await
}

/// Requests as a caller: the student app (its API key) or an advisor (a JWT
/// as `advisor-token.py` makes it).
struct As<'s> {
    server: &'s Server,
    header: (&'static str, String),
}

impl As<'_> {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> common::Reply {
        let (name, value) = (self.header.0, self.header.1.as_str());
        self.server.send(method, path, body, &[(name, value)]).await
    }
    async fn get(&self, path: &str) -> common::Reply {
        self.send("GET", path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> common::Reply {
        self.send("POST", path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> common::Reply {
        self.send("PATCH", path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> common::Reply {
        self.send("DELETE", path, None).await
    }
}

fn student_app(server: &Server) -> As<'_> {
    As {
        server,
        header: ("x-api-key", APP_TOKEN.to_owned()),
    }
}

/// What `python3 examples/office-hours/advisor-token.py SUBJECT ROLE` prints.
fn advisor<'s>(server: &'s Server, subject: &str, role: &str) -> As<'s> {
    let output = std::process::Command::new("python3")
        .arg(repo_root().join("examples/office-hours/advisor-token.py"))
        .args([subject, role])
        .env("ADVISOR_JWT_SECRET", ADVISOR_JWT_SECRET)
        .output()
        .expect("run advisor-token.py");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    As {
        server,
        header: ("authorization", format!("Bearer {token}")),
    }
}

#[tokio::test]
async fn office_hours_seeds_one_university_with_23_majors_and_55_advisors() {
    let server = office_hours().await;
    for (resource, expected) in [
        ("colleges", 5),
        ("majors", 23),
        ("advisors", 55),
        ("faqs", 4),
    ] {
        let page = server
            .get(&format!("/{resource}?count=true&limit=1"))
            .await
            .expect(200);
        assert_eq!(page["total"], expected, "{resource}");
    }
    // Students are the app's: anonymous callers are asked for credentials.
    server
        .get("/students")
        .await
        .expect_problem(401, "unauthorized");
    let students = student_app(&server)
        .get("/students?count=true&limit=1")
        .await
        .expect(200);
    assert_eq!(students["total"], 5);
}

#[tokio::test]
async fn office_hours_walks_through_the_waiting_room_as_its_readme_does() {
    let server = office_hours().await;
    let app = student_app(&server);
    let ada = advisor(&server, "ada", "advisor");
    let sam = app
        .post(
            "/queues/advising/entries",
            json!({"member_id": 1, "topic": "change of major"}),
        )
        .await
        .expect(201);
    assert_eq!(
        (
            sam["position"].clone(),
            sam["location"].clone(),
            sam["major_id"].clone()
        ),
        (json!(1), json!("online"), json!(1))
    );
    assert_eq!(sam["created_by"], "student-app");
    let lee = app
        .post(
            "/queues/advising/entries",
            json!({"member_id": 2, "topic": "registration hold"}),
        )
        .await
        .expect(201);
    let lee_path = format!("/queues/advising/entries/{}", lee["id"].as_str().unwrap());
    let again = app
        .post("/queues/advising/entries", json!({"member_id": 2}))
        .await
        .expect_problem(409, "already_in_queue");
    assert!(
        again["detail"].as_str().unwrap().ends_with(&lee_path),
        "{again}"
    );
    assert_eq!(app.get(&lee_path).await.expect(200)["position"], 2);

    // Students may not call next; advisors may not join.
    let line = "major_id=1&is_undergraduate=true";
    app.post(&format!("/queues/advising/next?{line}"), json!({}))
        .await
        .expect_problem(403, "forbidden");
    ada.post("/queues/advising/entries", json!({"member_id": 3}))
        .await
        .expect_problem(403, "forbidden");
    let seen = ada
        .get(&format!("/queues/advising/entries?{line}"))
        .await
        .expect(200);
    assert_eq!(seen["items"].as_array().unwrap().len(), 2);
    let called = ada
        .post(&format!("/queues/advising/next?{line}"), json!({}))
        .await
        .expect(200);
    assert_eq!(called["id"], sam["id"]);
    assert_eq!(called["served_by"], "ada");
    let done = ada
        .post(
            &format!(
                "/queues/advising/entries/{}/done",
                sam["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(done["status"], "done");
    assert_eq!(app.get(&lee_path).await.expect(200)["position"], 1);

    // Lee changes major and leaves the line, as in the original.
    app.patch("/students/2", json!({"major_id": 2}))
        .await
        .expect(200);
    assert_eq!(app.get(&lee_path).await.expect(200)["status"], "left");
    assert_eq!(
        ada.post(&format!("/queues/advising/next?{line}"), json!({}))
            .await
            .status,
        204
    );
    let stats = ada
        .get(&format!("/queues/advising/stats?{line}"))
        .await
        .expect(200);
    assert_eq!(
        (stats["done"].clone(), stats["servers"]["ada"].clone()),
        (json!(1), json!(1))
    );
    let closed = ada
        .patch("/queues/advising", json!({"open": false}))
        .await
        .expect(200);
    assert_eq!(closed["open"], false);
    app.post("/queues/advising/entries", json!({"member_id": 3}))
        .await
        .expect_problem(409, "queue_closed");
}

#[tokio::test]
async fn office_hours_lists_a_colleges_majors_under_the_nested_route() {
    let server = office_hours().await;
    let majors = server
        .get("/colleges/1/majors?count=true")
        .await
        .expect(200);
    assert_eq!(majors["total"], 5);
    for major in majors["items"].as_array().unwrap() {
        assert_eq!(major["college_id"], 1);
    }
    let first = &majors["items"][0];
    let one = server
        .get(&format!("/colleges/1/majors/{}", first["id"]))
        .await
        .expect(200);
    assert_eq!(&one, first);
}

#[tokio::test]
async fn office_hours_filters_students_as_the_original_client_did() {
    let server = office_hours().await;
    let app = student_app(&server);
    let by_email = app
        .get("/students?email=lee.chen@students.example.edu")
        .await
        .expect(200);
    assert_eq!(by_email["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_email["items"][0]["student_identifier"], "S1000002");
    let by_major = app.get("/students?major_id=1&count=true").await.expect(200);
    assert_eq!(by_major["total"], 2);
    let by_identifier = app
        .get("/students?student_identifier=S1000003")
        .await
        .expect(200);
    assert_eq!(by_identifier["items"][0]["name"], "Ana Souza");
}

#[tokio::test]
async fn office_hours_creates_patches_and_deletes_a_student() {
    let server = office_hours().await;
    let app = student_app(&server);
    let created = app
        .post("/students", json!({"student_identifier": "S2000001", "email": "kim@students.example.edu", "major_id": 3}))
        .await
        .expect(201);
    assert_eq!(created["is_undergraduate"], true, "default from the schema");
    let path = format!("/students/{}", created["id"]);
    let patched = app
        .patch(&path, json!({"name": "Kim", "is_undergraduate": false}))
        .await
        .expect(200);
    assert_eq!(patched["name"], "Kim");
    assert_eq!(
        app.delete(&path).await.status,
        204,
        "the original answered 500 here"
    );
    app.get(&path).await.expect_problem(404, "not_found");
}

#[tokio::test]
async fn office_hours_answers_a_duplicate_email_with_a_clean_409() {
    let server = office_hours().await;
    let app = student_app(&server);
    let problem = app
        .post(
            "/students",
            json!({"student_identifier": "S9", "email": "sam.rivera@students.example.edu"}),
        )
        .await
        .expect_problem(409, "unique_violation");
    assert_eq!(problem["field"], "email");
    let text = problem.to_string().to_lowercase();
    assert!(
        !text.contains("insert") && !text.contains("constraint failed"),
        "{text}"
    );
}

#[tokio::test]
async fn office_hours_answers_a_missing_student_with_404_not_400() {
    let server = office_hours().await;
    let app = student_app(&server);
    let problem = app
        .get("/students/9999")
        .await
        .expect_problem(404, "not_found");
    assert_eq!(problem["detail"], "no students with id 9999");
}

#[tokio::test]
async fn office_hours_enforces_the_student_identifier_and_email_lengths() {
    let server = office_hours().await;
    let app = student_app(&server);
    let problem = app
        .post("/students", json!({"student_identifier": "X".repeat(21), "email": format!("{}@example.edu", "a".repeat(90))}))
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["student_identifier", "email"]);
}

#[tokio::test]
async fn users_creates_and_reads_a_user_by_its_chosen_id() {
    let server = Server::start(&example("users")).await;
    let created = server
        .post("/users", json!({"userId": "u-1", "name": "Ada"}))
        .await;
    let body = created.expect(201);
    assert_eq!(body["userId"], "u-1");
    assert_eq!(body["name"], "Ada");
    assert_eq!(created.header("location").as_deref(), Some("/users/u-1"));
    let read = server.get("/users/u-1").await.expect(200);
    assert_eq!(read, body);
}

#[tokio::test]
async fn users_overwrites_an_existing_id_with_put() {
    let server = Server::start(&example("users")).await;
    server
        .post("/users", json!({"userId": "u-1", "name": "Ada"}))
        .await
        .expect(201);
    let replaced = server
        .put(
            "/users/u-1",
            json!({"userId": "u-1", "name": "Ada Lovelace"}),
        )
        .await
        .expect(200);
    assert_eq!(replaced["name"], "Ada Lovelace");
    assert_eq!(server.count_in_database("users").await, 1);
}

#[tokio::test]
async fn users_names_the_missing_fields_and_the_missing_id() {
    let server = Server::start(&example("users")).await;
    let problem = server
        .post("/users", json!({}))
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["userId", "name"]);
    let missing = server
        .get("/users/u-404")
        .await
        .expect_problem(404, "not_found");
    assert_eq!(missing["detail"], "no users with userId u-404");
}

#[tokio::test]
async fn users_answers_unknown_paths_wrong_methods_and_non_json_with_problems() {
    let server = Server::start(&example("users")).await;
    server.get("/nope").await.expect_problem(404, "not_found");
    server
        .send("DELETE", "/users", None, &[])
        .await
        .expect_problem(405, "method_not_allowed");
    server
        .send_raw("POST", "/users", Some("text/plain"), b"userId=1".to_vec())
        .await
        .expect_problem(415, "unsupported_media_type");
}
