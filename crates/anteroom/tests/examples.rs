//! The example apps under `examples/`, served by the real binary exactly as the
//! README runs them, checked against what their originals did — and against
//! the defects the originals had (see ORIGINS.md): not-found as 400, duplicate
//! email as a 500 carrying SQL, DELETE of a student always 500.

mod common;

use common::{Server, repo_root};
use serde_json::json;

fn example(name: &str) -> String {
    std::fs::read_to_string(
        repo_root()
            .join("examples")
            .join(name)
            .join("anteroom.toml"),
    )
    .expect("example schema")
}

async fn office_hours() -> Server {
    let seed = repo_root().join("examples/office-hours/seed.json");
    Server::start_with_args(
        &example("office-hours"),
        &["--seed", seed.to_str().unwrap()],
    )
    .await
}

#[tokio::test]
async fn office_hours_seeds_one_university_with_23_majors_and_55_advisors() {
    let server = office_hours().await;
    for (resource, expected) in [
        ("colleges", 5),
        ("majors", 23),
        ("advisors", 55),
        ("faqs", 4),
        ("students", 5),
    ] {
        let page = server
            .get(&format!("/{resource}?count=true&limit=1"))
            .await
            .expect(200);
        assert_eq!(page["total"], expected, "{resource}");
    }
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
    let by_email = server
        .get("/students?email=lee.chen@students.example.edu")
        .await
        .expect(200);
    assert_eq!(by_email["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_email["items"][0]["student_identifier"], "S1000002");
    let by_major = server
        .get("/students?major_id=1&count=true")
        .await
        .expect(200);
    assert_eq!(by_major["total"], 2);
    let by_identifier = server
        .get("/students?student_identifier=S1000003")
        .await
        .expect(200);
    assert_eq!(by_identifier["items"][0]["name"], "Ana Souza");
}

#[tokio::test]
async fn office_hours_creates_patches_and_deletes_a_student() {
    let server = office_hours().await;
    let created = server
        .post("/students", json!({"student_identifier": "S2000001", "email": "kim@students.example.edu", "major_id": 3}))
        .await
        .expect(201);
    assert_eq!(created["is_undergraduate"], true, "default from the schema");
    let path = format!("/students/{}", created["id"]);
    let patched = server
        .patch(&path, json!({"name": "Kim", "is_undergraduate": false}))
        .await
        .expect(200);
    assert_eq!(patched["name"], "Kim");
    assert_eq!(
        server.delete(&path).await.status,
        204,
        "the original answered 500 here"
    );
    server.get(&path).await.expect_problem(404, "not_found");
}

#[tokio::test]
async fn office_hours_answers_a_duplicate_email_with_a_clean_409() {
    let server = office_hours().await;
    let problem = server
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
    let problem = server
        .get("/students/9999")
        .await
        .expect_problem(404, "not_found");
    assert_eq!(problem["detail"], "no students with id 9999");
}

#[tokio::test]
async fn office_hours_enforces_the_student_identifier_and_email_lengths() {
    let server = office_hours().await;
    let problem = server
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
