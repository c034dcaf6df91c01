//! The rule language as an attack suite, on every backend
//! (`ANTEROOM_TEST_BACKEND`): any-of lists mixing `owner`, roles and row
//! conditions, conditions against literals and the caller's claims, `&`.
//! Each rule form is attacked through every path that reads or writes rows —
//! lists and their counts, reads, expand, nested routes, creates (single and
//! bulk), updates that would move a row outside the rule, deletes, a queue's
//! line, `next` and stats — and the
//! database is checked afterwards. The schemas are docs/auth.md's three
//! worked examples: a library, a blog with drafts, a multi-tenant app.

mod common;

use common::{Reply, Server, cli, id_of, schema_dir};
use serde_json::{Value, json};

const SECRET: &str = "rules-tests-secret-0123456789abcdefgh";

const LIBRARY: &str = r#"
[app]
name = "library"

[auth]
jwt = { algorithms = ["HS256"], secret_env = "JWT_SECRET", role_claim = "roles" }

[resources.books]
fields.title = { type = "string", required = true }
rules = { list = "public", read = "public", create = "role:librarian", update = "role:librarian", delete = "role:librarian" }

[resources.loans]
fields.book_id = { type = "ref", to = "books", required = true }
fields.due     = { type = "date" }
rules = { list = ["owner", "role:librarian"], read = "owner | role:librarian", create = "authenticated", update = "role:librarian", delete = "owner | role:librarian" }
"#;

const BLOG: &str = r#"
[app]
name = "blog"

[auth]
jwt = { algorithms = ["HS256"], secret_env = "JWT_SECRET", role_claim = "roles" }

[resources.posts]
fields.title     = { type = "string", required = true }
fields.published = { type = "boolean", required = true, default = false }
rules = { list = "published = true | owner | role:editor", read = "published = true | owner | role:editor", create = "authenticated", update = "owner | role:editor", delete = "owner | role:editor" }

[resources.comments]
fields.post_id = { type = "ref", to = "posts", required = true }
fields.body    = { type = "text", required = true }
rules = { list = "public", read = "public", create = "authenticated", update = "owner", delete = "owner" }
"#;

const TENANTS: &str = r#"
[app]
name = "tenants"

[auth]
jwt = { algorithms = ["HS256"], secret_env = "JWT_SECRET", role_claim = "roles" }

[resources.projects]
fields.tenant = { type = "string", required = true }
fields.name   = { type = "string", required = true }
rules = { list = "tenant = claim:org.id", read = "tenant = claim:org.id", create = "tenant = claim:org.id", update = "role:admin & tenant = claim:org.id", delete = "role:admin & tenant = claim:org.id" }

[resources.badges]
id = { type = "string", name = "code", max_length = 40 }
fields.tenant = { type = "string", required = true }
fields.label  = { type = "string" }
rules = { list = "role:admin", read = "role:admin", create = "tenant = claim:org.id", update = "role:admin", delete = "role:admin" }

[resources.reports]
fields.tenant = { type = "string", required = true }
rules = { list = "role:auditor | tenant = claim:org.id", read = "role:auditor | tenant = claim:org.id" }
"#;

/// A ten-minute token for `sub` with `roles` and any further `claims`.
fn token(sub: &str, roles: &[&str], claims: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut all = json!({"sub": sub, "roles": roles, "iat": now, "exp": now + 600});
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), claims) {
        all.extend(more);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &all,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn start(schema: &str) -> Server {
    Server::start_with_env(schema, &[], &[("JWT_SECRET", SECRET)]).await
}

/// Sends a request as the bearer of `token` (`None`: anonymously).
async fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    server.send(method, path, body, &headers).await
}

/// The ids of a list's items, sorted, and the count it reported.
async fn listed(server: &Server, path: &str, token: Option<&str>) -> (Vec<String>, i64) {
    let page = call(server, "GET", path, None, token).await.expect(200);
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| id_of(&r["id"]))
        .collect();
    ids.sort();
    (ids, page["total"].as_i64().unwrap_or(-1))
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn owner_or_librarian_lets_members_see_their_own_loans_and_librarians_every_loan() {
    let server = start(LIBRARY).await;
    let librarian = token("lib", &["librarian"], json!({}));
    let alice = token("alice", &["member"], json!({}));
    let bob = token("bob", &["member"], json!({}));
    let book = call(
        &server,
        "POST",
        "/books",
        Some(json!({"title": "Dune"})),
        Some(&librarian),
    )
    .await
    .expect(201);
    let mut loan_of = Vec::new();
    for who in [&alice, &bob] {
        let loan = call(
            &server,
            "POST",
            "/loans",
            Some(json!({"book_id": book["id"]})),
            Some(who),
        )
        .await
        .expect(201);
        loan_of.push(id_of(&loan["id"]));
    }
    let (alice_loan, bob_loan) = (&loan_of[0], &loan_of[1]);

    assert_eq!(
        listed(&server, "/loans?count=true", Some(&alice)).await,
        (vec![alice_loan.clone()], 1)
    );
    assert_eq!(
        listed(&server, "/loans?count=true", Some(&librarian)).await,
        (sorted(loan_of.clone()), 2)
    );
    call(
        &server,
        "GET",
        &format!("/loans/{bob_loan}"),
        None,
        Some(&alice),
    )
    .await
    .expect_problem(404, "not_found");
    call(
        &server,
        "GET",
        &format!("/loans/{bob_loan}"),
        None,
        Some(&librarian),
    )
    .await
    .expect(200);
    call(&server, "GET", "/loans", None, None)
        .await
        .expect_problem(401, "unauthorized");
    // Deleting: the owner may, another member answers as if it were missing.
    call(
        &server,
        "DELETE",
        &format!("/loans/{bob_loan}"),
        None,
        Some(&alice),
    )
    .await
    .expect_problem(404, "not_found");
    call(
        &server,
        "DELETE",
        &format!("/loans/{alice_loan}"),
        None,
        Some(&alice),
    )
    .await
    .expect(204);
    assert_eq!(server.count_in_database("loans").await, 1);
}

#[tokio::test]
async fn a_403_for_an_any_of_rule_names_the_rule_and_the_roles_the_caller_has() {
    let server = start(LIBRARY).await;
    let member = token("carol", &["member"], json!({}));
    let refused = call(
        &server,
        "PATCH",
        &format!("/loans/{NO_ID}"),
        Some(json!({})),
        Some(&member),
    )
    .await
    .expect_problem(403, "forbidden");
    assert_eq!(
        refused["detail"],
        "you may not update loans: the rule asks for the role librarian, and this caller has the role member"
    );
    let tenants = start(TENANTS).await;
    let member = token("dan", &["member"], json!({"org": {"id": "acme"}}));
    let refused = call(
        &tenants,
        "DELETE",
        &format!("/projects/{NO_ID}"),
        None,
        Some(&member),
    )
    .await
    .expect_problem(403, "forbidden");
    assert_eq!(
        refused["detail"],
        "you may not delete projects: the rule asks for the role admin, and this caller has the role member"
    );
    let unclaimed = token("eve", &["member"], json!({}));
    let refused = call(&tenants, "GET", "/reports", None, Some(&unclaimed))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(
        refused["detail"],
        "you may not list reports: the rule allows role:auditor | tenant = claim:org.id, and this caller has the role member, and no \"org.id\" claim"
    );
    // With the claim, the same caller lists its tenant's reports.
    assert_eq!(
        listed(&tenants, "/reports", Some(&member)).await.0,
        Vec::<String>::new()
    );
}

/// A well-formed id no row has.
const NO_ID: &str = "0190b1c2-0000-7000-8000-000000000000";

#[tokio::test]
async fn drafts_are_seen_only_by_their_author_and_editors_through_every_read_path() {
    let server = start(BLOG).await;
    let author = token("ann", &["writer"], json!({}));
    let other = token("oz", &["writer"], json!({}));
    let editor = token("ed", &["editor"], json!({}));
    let post = |title: &str, published: bool| json!({"title": title, "published": published});
    let draft = call(
        &server,
        "POST",
        "/posts",
        Some(post("draft", false)),
        Some(&author),
    )
    .await
    .expect(201);
    let public = call(
        &server,
        "POST",
        "/posts",
        Some(post("out", true)),
        Some(&author),
    )
    .await
    .expect(201);
    let (draft_id, public_id) = (id_of(&draft["id"]), id_of(&public["id"]));
    for (who, expected) in [
        (None, vec![public_id.clone()]),
        (Some(&other), vec![public_id.clone()]),
        (
            Some(&author),
            sorted(vec![draft_id.clone(), public_id.clone()]),
        ),
        (
            Some(&editor),
            sorted(vec![draft_id.clone(), public_id.clone()]),
        ),
    ] {
        let count = expected.len() as i64;
        assert_eq!(
            listed(&server, "/posts?count=true", who.map(String::as_str)).await,
            (expected, count)
        );
    }
    // Filters cannot widen the rule: asking for drafts finds none.
    assert_eq!(
        listed(&server, "/posts?published=false&count=true", None).await,
        (vec![], 0)
    );
    call(&server, "GET", &format!("/posts/{draft_id}"), None, None)
        .await
        .expect_problem(404, "not_found");
    call(
        &server,
        "GET",
        &format!("/posts/{draft_id}"),
        None,
        Some(&other),
    )
    .await
    .expect_problem(404, "not_found");
    call(
        &server,
        "GET",
        &format!("/posts/{draft_id}"),
        None,
        Some(&editor),
    )
    .await
    .expect(200);
    // A comment on the draft: its post expands to null and its nested
    // route answers 404 for whoever may not read the draft.
    let comment = call(
        &server,
        "POST",
        "/comments",
        Some(json!({"post_id": draft["id"], "body": "typo"})),
        Some(&editor),
    )
    .await
    .expect(201);
    let expanded = call(
        &server,
        "GET",
        &format!("/comments/{}?expand=post", id_of(&comment["id"])),
        None,
        None,
    )
    .await
    .expect(200);
    assert_eq!(expanded["post"], Value::Null, "{expanded}");
    let by_author = call(
        &server,
        "GET",
        &format!("/comments/{}?expand=post", id_of(&comment["id"])),
        None,
        Some(&author),
    )
    .await
    .expect(200);
    assert_eq!(by_author["post"]["title"], "draft", "{by_author}");
    call(
        &server,
        "GET",
        &format!("/posts/{draft_id}/comments"),
        None,
        None,
    )
    .await
    .expect_problem(404, "not_found");
    // Another writer can neither update nor delete the draft, nor the
    // published post: writes need owner or editor, whatever one may read.
    for id in [&draft_id, &public_id] {
        call(
            &server,
            "PATCH",
            &format!("/posts/{id}"),
            Some(json!({"title": "mine now"})),
            Some(&other),
        )
        .await
        .expect_problem(404, "not_found");
        call(
            &server,
            "DELETE",
            &format!("/posts/{id}"),
            None,
            Some(&other),
        )
        .await
        .expect_problem(404, "not_found");
    }
    // Publishing makes it public.
    call(
        &server,
        "PATCH",
        &format!("/posts/{draft_id}"),
        Some(json!({"published": true})),
        Some(&author),
    )
    .await
    .expect(200);
    call(&server, "GET", &format!("/posts/{draft_id}"), None, None)
        .await
        .expect(200);
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM posts WHERE title = 'mine now'")
            .await,
        0
    );
}

#[tokio::test]
async fn tenants_see_create_and_move_only_rows_of_their_own_claim() {
    let server = start(TENANTS).await;
    let acme = token("amy", &["member"], json!({"org": {"id": "acme"}}));
    let acme_admin = token("al", &["admin"], json!({"org": {"id": "acme"}}));
    let globex = token("gus", &["admin"], json!({"org": {"id": "globex"}}));
    let no_tenant = token("nobody", &["admin"], json!({}));

    let mine = call(
        &server,
        "POST",
        "/projects",
        Some(json!({"tenant": "acme", "name": "rocket"})),
        Some(&acme),
    )
    .await
    .expect(201);
    let theirs = call(
        &server,
        "POST",
        "/projects",
        Some(json!({"tenant": "globex", "name": "bomb"})),
        Some(&globex),
    )
    .await
    .expect(201);
    let (mine_id, theirs_id) = (id_of(&mine["id"]), id_of(&theirs["id"]));

    // Creating a row of another tenant is refused, in bulk too, and
    // nothing of the bulk is written.
    let refused = call(
        &server,
        "POST",
        "/projects",
        Some(json!({"tenant": "globex", "name": "plant"})),
        Some(&acme),
    )
    .await
    .expect_problem(403, "forbidden");
    assert_eq!(
        refused["detail"],
        "you may not create this row of projects: the create rule allows tenant = claim:org.id, and the row does not meet it"
    );
    let refused = call(
        &server,
        "POST",
        "/projects",
        Some(json!([
            {"tenant": "acme", "name": "ok"},
            {"tenant": "globex", "name": "plant"}
        ])),
        Some(&acme),
    )
    .await
    .expect_problem(403, "forbidden");
    assert!(
        refused["detail"].as_str().unwrap().starts_with("item 1: "),
        "{refused}"
    );
    assert_eq!(server.count_in_database("projects").await, 2);

    assert_eq!(
        listed(&server, "/projects?count=true", Some(&acme)).await,
        (vec![mine_id.clone()], 1)
    );
    assert_eq!(
        listed(&server, "/projects?tenant=globex&count=true", Some(&acme)).await,
        (vec![], 0)
    );
    call(
        &server,
        "GET",
        &format!("/projects/{theirs_id}"),
        None,
        Some(&acme),
    )
    .await
    .expect_problem(404, "not_found");

    // Moving a row to another tenant is refused and rolled back.
    let moved = call(
        &server,
        "PATCH",
        &format!("/projects/{mine_id}"),
        Some(json!({"tenant": "globex"})),
        Some(&acme_admin),
    )
    .await
    .expect_problem(403, "forbidden");
    assert!(
        moved["detail"]
            .as_str()
            .unwrap()
            .contains("so that it leaves what the update rule allows"),
        "{moved}"
    );
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM projects WHERE tenant = 'acme'")
            .await,
        1
    );
    // Within the tenant an admin may write; a member may not.
    call(
        &server,
        "PATCH",
        &format!("/projects/{mine_id}"),
        Some(json!({"name": "rocket 2"})),
        Some(&acme_admin),
    )
    .await
    .expect(200);
    call(
        &server,
        "PATCH",
        &format!("/projects/{mine_id}"),
        Some(json!({"name": "rocket 3"})),
        Some(&acme),
    )
    .await
    .expect_problem(403, "forbidden");
    // Another tenant's admin finds nothing to update or delete.
    call(
        &server,
        "DELETE",
        &format!("/projects/{mine_id}"),
        None,
        Some(&globex),
    )
    .await
    .expect_problem(404, "not_found");

    // A token without the claim is told which claim it lacks.
    let lacking = call(&server, "GET", "/projects", None, Some(&no_tenant))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(
        lacking["detail"],
        "you may not list projects: the rule compares tenant with the caller's \"org.id\" claim, and its token carries none"
    );
    call(&server, "GET", "/projects", None, None)
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM projects WHERE name = 'rocket 2'")
            .await,
        1
    );
}

#[test]
fn check_names_what_is_wrong_with_a_rule_and_what_it_accepts() {
    let bad = r#"
[app]
name = "x"

[auth]
jwt = { algorithms = ["HS256"], secret_env = "JWT_SECRET" }

[resources.posts]
fields.title     = { type = "string" }
fields.score     = { type = "float" }
fields.published = { type = "boolean" }
rules = { list = "publishd = true", read = "published = yes", create = "score = 1", update = "owner | role:", delete = "owner or admin" }
"#;
    let (_dir, path) = schema_dir(bad);
    let out = cli(&["check", path.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    for expected in [
        "resources.posts.rules.list: \"publishd = true\" compares \"publishd\", which is not a field of this resource",
        "resources.posts.rules.read: \"published = yes\": compare with true, false, a number, a quoted text ('yes') or claim:NAME",
        "resources.posts.rules.create: \"score = 1\": rules compare string, text, enum, integer, boolean, uuid and ref fields, and \"score\" is not one",
        "resources.posts.rules.update: \"role:\" names no role; write role:NAME",
        "resources.posts.rules.delete: unknown rule \"owner or admin\"; expected public, authenticated, owner, none, role:NAME or a row condition",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
    }
}

#[tokio::test]
async fn a_put_that_creates_meets_the_create_rule_and_a_put_that_updates_only_the_update_rule() {
    let server = start(TENANTS).await;
    let acme = token("al", &["admin"], json!({"org": {"id": "acme"}}));
    let globex = token("gus", &["admin"], json!({"org": {"id": "globex"}}));
    let put = |code: &str, tenant: &str, who: &String| {
        let (server, path, who) = (&server, format!("/badges/{code}"), who.clone());
        let body = json!({"tenant": tenant, "label": "x"});
        async move { call(server, "PUT", &path, Some(body), Some(&who)).await }
    };
    put("g1", "globex", &globex).await.expect(201);
    // An update: the update rule (role:admin) decides, not the create rule.
    put("g1", "globex", &acme).await.expect(200);
    // A create: the new row must meet the create rule, and nothing is written.
    let refused = put("a1", "globex", &acme)
        .await
        .expect_problem(403, "forbidden");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .starts_with("you may not create this row of badges"),
        "{refused}"
    );
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM badges WHERE code = 'a1'")
            .await,
        0
    );
    put("a1", "acme", &acme).await.expect(201);
}

const ADVISING: &str = r#"
[app]
name = "advising"

[auth]
jwt = { algorithms = ["HS256"], secret_env = "JWT_SECRET", role_claim = "roles" }

[resources.students]
id = { type = "integer" }
fields.major_id = { type = "integer", required = true }
rules = { list = "owner", read = "owner", create = "authenticated", update = "owner", delete = "owner" }

[queues.advising]
member       = "students"
partition_by = ["major_id"]
rules = { join = "owner", leave = "owner", view = "owner | role:advisor & major_id = claim:major", serve = "role:advisor & major_id = claim:major", manage = "role:admin" }
"#;

#[tokio::test]
async fn an_advisor_limited_to_a_claim_sees_serves_and_counts_only_its_own_lines() {
    let server = start(ADVISING).await;
    let mut entries = Vec::new();
    for (student, major) in [("sam", 1), ("lee", 2)] {
        let who = token(student, &["student"], json!({}));
        let member = call(
            &server,
            "POST",
            "/students",
            Some(json!({"major_id": major})),
            Some(&who),
        )
        .await
        .expect(201);
        let entry = call(
            &server,
            "POST",
            "/queues/advising/entries",
            Some(json!({"member_id": member["id"]})),
            Some(&who),
        )
        .await
        .expect(201);
        entries.push(id_of(&entry["id"]));
    }
    let (sam, lee) = (&entries[0], &entries[1]);
    let advisor = token("ada", &["advisor"], json!({"major": 1}));
    let line = |major: i64| format!("/queues/advising/entries?major_id={major}");
    let seen = call(&server, "GET", &line(1), None, Some(&advisor))
        .await
        .expect(200);
    assert_eq!(seen["items"].as_array().unwrap().len(), 1, "{seen}");
    let other = call(&server, "GET", &line(2), None, Some(&advisor))
        .await
        .expect(200);
    assert_eq!(other["items"], json!([]), "{other}");
    call(
        &server,
        "GET",
        &format!("/queues/advising/entries/{lee}"),
        None,
        Some(&advisor),
    )
    .await
    .expect_problem(404, "not_found");
    // Next in another major's line finds nobody this advisor may serve.
    let none = call(
        &server,
        "POST",
        "/queues/advising/next?major_id=2",
        None,
        Some(&advisor),
    )
    .await;
    assert_eq!(none.status, 204);
    let called = call(
        &server,
        "POST",
        "/queues/advising/next?major_id=1",
        None,
        Some(&advisor),
    )
    .await
    .expect(200);
    assert_eq!(id_of(&called["id"]), *sam);
    call(
        &server,
        "GET",
        "/queues/advising/stats?major_id=1",
        None,
        Some(&advisor),
    )
    .await
    .expect(200);
    call(
        &server,
        "GET",
        "/queues/advising/stats?major_id=2",
        None,
        Some(&advisor),
    )
    .await
    .expect_problem(403, "forbidden");
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM advising WHERE status = 'waiting'")
            .await,
        1,
        "lee still waits"
    );
    // An advisor without the claim is told which claim it lacks.
    let unclaimed = token("bo", &["advisor"], json!({}));
    let refused = call(
        &server,
        "POST",
        "/queues/advising/next?major_id=2",
        None,
        Some(&unclaimed),
    )
    .await
    .expect_problem(403, "forbidden");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("\"major\" claim"),
        "{refused}"
    );
}
