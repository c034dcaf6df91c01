//! `--rds-iam` (ANTEROOM_RDS_IAM): the database password is an RDS IAM auth
//! token and TLS is required. The token's signature is checked against
//! AWS's published SigV4 test vector in the engine's unit tests
//! (storage::sql::rds_iam); here the real binary runs with it against the
//! test's PostgreSQL or MySQL server (which accepts any password on this
//! machine, so what is shown is the TLS requirement and that the signed
//! token is what connects), and refuses to start without what it needs.
//! Runs on the backend of `ANTEROOM_TEST_BACKEND`; SQLite has no password.

mod common;

use std::sync::Arc;

use common::{Backend, Server, Started, TestDatabase, schema_dir};
use serde_json::json;

const SCHEMA: &str = r#"
[app]
name = "iam"

[resources.notes]
fields.text = { type = "string", required = true }
"#;

const AWS: [(&str, &str); 4] = [
    ("AWS_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    (
        "AWS_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    ),
    ("AWS_SESSION_TOKEN", "session-token-example"),
];

#[tokio::test]
async fn with_rds_iam_every_connection_is_tls_even_where_the_url_turns_it_off() {
    let backend = Backend::current();
    if backend.server_url().is_none() {
        println!(
            "skipped: SQLite has no password (run with ANTEROOM_TEST_BACKEND=postgres or mysql)"
        );
        return;
    }
    let (dir, _) = schema_dir(SCHEMA);
    let db = TestDatabase::create(dir.path()).await;
    let mut url = url::Url::parse(&db.url).unwrap();
    let param = match backend {
        Backend::Postgres => ("sslmode", "disable"),
        _ => ("ssl-mode", "disabled"),
    };
    url.query_pairs_mut().append_pair(param.0, param.1);
    let server_has_tls = match backend {
        Backend::Mysql => {
            use sqlx::Connection;
            let mut c = sqlx::MySqlConnection::connect(&db.url)
                .await
                .expect("connect");
            let have: String = sqlx::query_scalar("SELECT @@have_ssl")
                .fetch_one(&mut c)
                .await
                .expect("have_ssl");
            have == "YES"
        }
        _ => true,
    };
    let server = match Server::spawn_env(
        Arc::new(dir),
        url.to_string(),
        &["--rds-iam"],
        &AWS,
        Some(Arc::new(db)),
    )
    .await
    {
        Started::Up(s) => s,
        // A server without TLS never sees the token: the start fails and says why.
        Started::Exited(code, log) if !server_has_tls => {
            assert_eq!(code, 2, "{log}");
            assert!(log.contains("TLS"), "{log}");
            println!("this MySQL server has no TLS: the start was refused, as it must be");
            return;
        }
        Started::Exited(code, log) => panic!("server exited with {code}:\n{log}"),
    };
    server
        .post("/notes", json!({"text": "signed in"}))
        .await
        .expect(201);
    server.get("/notes").await.expect(200);
    if backend == Backend::Postgres {
        let clear = server
            .query_i64(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name = 'anteroom' AND a.datname = current_database() AND NOT s.ssl",
            )
            .await;
        let tls = server
            .query_i64(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name = 'anteroom' AND a.datname = current_database() AND s.ssl",
            )
            .await;
        assert_eq!(clear, 0, "a connection without TLS");
        assert!(tls >= 1, "no TLS connection of the server found");
    }
}

#[tokio::test]
async fn without_a_region_or_credentials_rds_iam_refuses_to_start_and_says_which() {
    let backend = Backend::current();
    if backend.server_url().is_none() {
        println!(
            "skipped: SQLite has no password (run with ANTEROOM_TEST_BACKEND=postgres or mysql)"
        );
        return;
    }
    for (missing, expected) in [
        ("AWS_REGION", "AWS_REGION"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        let (dir, _) = schema_dir(SCHEMA);
        let db = TestDatabase::create(dir.path()).await;
        let env: Vec<(&str, &str)> = AWS
            .iter()
            .map(|&(k, v)| (k, if k == missing { "" } else { v }))
            .collect();
        let url = db.url.clone();
        match Server::spawn_env(Arc::new(dir), url, &["--rds-iam"], &env, Some(Arc::new(db))).await
        {
            Started::Up(_) => panic!("started without {missing}"),
            Started::Exited(code, log) => {
                assert_eq!(code, 2, "{log}");
                assert!(log.contains(expected), "{log}");
            }
        }
    }
}
