//! End-to-end tests of the `anteroom` command line and of the HTTP server's
//! own behaviour (as opposed to the resource API):
//!
//! - `check`: every schema error is printed as `FILE: key.path: message`;
//! - `migrate` (with and without `--dry-run`) and migrations across restarts:
//!   additive changes are applied in place, destructive ones make `serve`
//!   refuse to start, naming what would be lost, and leave the data intact;
//! - `serve`: `--help`/`--version`, invalid schemas, `PORT`/`DATABASE_URL`,
//!   the default `anteroom.db` next to the schema file;
//! - `seed` with `"@": "alias"` / `"@alias"` references;
//! - `/health`, `x-request-id`, CORS, JSON logs, the prototype-mode warning,
//!   graceful shutdown on SIGTERM and internal errors that never leak.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Server, Started, cli, schema_dir};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A schema with two resources used by most tests.
const NOTES: &str = r#"[app]
name = "notes"

[resources.notes]
fields.title = { type = "string", required = true }
fields.body  = { type = "text" }

[resources.tags]
fields.label   = { type = "string", required = true }
fields.note_id = { type = "ref", to = "notes" }
"#;

/// `sqlite://` URL of a file in `dir`.
fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// Runs a scalar query on a SQLite database file (read-only, never creates it).
async fn db_i64(path: &Path, sql: &str) -> i64 {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs a statement on a SQLite database file, bypassing the server.
async fn db_execute(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Number of tables (any name) in a SQLite file; 0 when the file does not exist.
async fn table_count(path: &Path) -> i64 {
    if !path.exists() {
        return 0;
    }
    db_i64(
        path,
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
    )
    .await
}

/// The binary with a clean environment (no inherited configuration variables).
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(common::binary());
    cmd.args(args).env("ANTEROOM_LOG", "info,sqlx=warn");
    for var in [
        "PORT",
        "DATABASE_URL",
        "ANTEROOM_HOST",
        "ANTEROOM_SCHEMA",
        "ANTEROOM_LOG_FORMAT",
        "ANTEROOM_CORS_ORIGINS",
        "ANTEROOM_BODY_LIMIT",
        "ANTEROOM_MAX_CONNECTIONS",
        "ANTEROOM_SEED",
        "ANTEROOM_BODY_TIMEOUT",
        "ANTEROOM_IDLE_TIMEOUT",
        "ANTEROOM_HEADER_TIMEOUT",
        "ANTEROOM_MAX_CLIENTS",
        "ANTEROOM_SHUTDOWN_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A server process spawned by these tests directly (for environment
/// variables, JSON logs and signals), killed when dropped.
struct Proc {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Proc {
    /// Spawns `cmd` and waits for its "listening on" log line (text or JSON).
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("spawn anteroom");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                        .collect();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Proc {
                child,
                base: format!("http://{addr}"),
                log,
                reader: Some(reader),
            },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                let _ = reader.join();
                let text = log.lock().unwrap().clone();
                panic!("server did not start ({status}):\n{text}");
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code
    /// (`None` if it was still running and had to be killed).
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        code
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Inserts three notes and one tag; returns the notes' ids.
async fn insert_rows(server: &Server) -> Vec<String> {
    let created = server
        .post(
            "/notes",
            json!([
                {"title": "first", "body": "one"},
                {"title": "second"},
                {"title": "third", "body": "three"}
            ]),
        )
        .await
        .expect(201);
    let ids: Vec<String> = created
        .as_array()
        .expect("bulk create returns an array")
        .iter()
        .map(|row| row["id"].as_str().expect("uuid id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    server
        .post("/tags", json!({"label": "red", "note_id": ids[0]}))
        .await
        .expect(201);
    ids
}

/// Asserts the rows from [`insert_rows`] are all still there and unchanged.
async fn assert_rows_intact(server: &Server, ids: &[String]) {
    let titles = ["first", "second", "third"];
    for (id, title) in ids.iter().zip(titles) {
        let row = server.get(&format!("/notes/{id}")).await.expect(200);
        assert_eq!(row["title"], title, "{row}");
    }
    assert_eq!(server.all("notes").await.len(), 3);
    let tags = server.all("tags").await;
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert_eq!(tags[0]["note_id"], ids[0].as_str());
}

/// Starts [`NOTES`], inserts rows, restarts with `destructive`, expects the
/// server to refuse to start with every `expected` fragment in its stderr,
/// then restarts with the original schema and checks nothing was touched.
async fn assert_refused_and_data_intact(destructive: &str, expected: &[&str]) -> String {
    let server = Server::start(NOTES).await;
    let ids = insert_rows(&server).await;
    let columns = server
        .query_i64("SELECT COUNT(*) FROM pragma_table_info('notes')")
        .await;
    let tables = server
        .query_i64("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
        .await;
    let dir = server.dir.clone();
    let url = server.database_url.clone();

    let stderr = match server.restart_with_schema(destructive).await {
        Started::Up(server) => panic!(
            "the server started with a destructive schema change:\n{}",
            server.log_text()
        ),
        Started::Exited(code, stderr) => {
            assert_ne!(code, 0, "refusal must exit non-zero:\n{stderr}");
            for fragment in expected {
                assert!(
                    stderr.contains(fragment),
                    "stderr should contain {fragment:?}:\n{stderr}"
                );
            }
            stderr
        }
    };

    std::fs::write(dir.path().join("anteroom.toml"), NOTES).expect("write schema");
    let server = match Server::spawn(dir, url, &[]).await {
        Started::Up(server) => server,
        Started::Exited(code, log) => {
            panic!("the original schema no longer starts ({code}):\n{log}")
        }
    };
    assert_rows_intact(&server, &ids).await;
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM pragma_table_info('notes')")
            .await,
        columns,
        "the refused migration changed the notes table"
    );
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
            .await,
        tables,
        "the refused migration changed the set of tables"
    );
    stderr
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

#[test]
fn check_accepts_a_valid_schema_and_exits_zero() {
    let (_dir, path) = schema_dir(NOTES);
    let out = cli(&["check", path.to_str().unwrap()]);
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(out.stdout.contains("ok"), "{}", out.stdout);
    assert!(
        out.stdout.contains("notes") && out.stdout.contains("tags"),
        "{}",
        out.stdout
    );
    // The migration it planned and rendered is reported, not thrown away.
    assert!(
        out.stdout
            .contains("statements migrating an empty database"),
        "{}",
        out.stdout
    );
    for backend in ["sqlite", "postgres", "mysql"] {
        assert!(out.stdout.contains(backend), "{backend}: {}", out.stdout);
    }
}

#[tokio::test]
async fn rules_in_a_schema_without_auth_are_named_as_ignored_by_check_and_at_start() {
    let (dir, path) = schema_dir(
        r#"[app]
name = "library"

[resources.loans]
rules = { list = "role:librarian", read = "owner" }
fields.title = { type = "string", writable = "role:admin" }
fields.note  = { type = "string", writable = false }

[resources.authors]
fields.name = { type = "string" }

[queues.desk]
member = "authors"
rules = { join = "authenticated" }
"#,
    );
    let file = path.to_str().unwrap();
    let out = cli(&["check", file]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("ok (2 resources: loans, authors; 1 queue: desk;"),
        "{}",
        out.stdout
    );
    let warnings: Vec<&str> = out.stderr.lines().collect();
    for key in [
        "resources.loans.rules",
        "resources.loans.fields.title.writable",
        "queues.desk.rules",
    ] {
        let prefix =
            format!("{file}: {key}: warning: ignored: without [auth] every operation is public");
        assert!(
            warnings.iter().any(|l| l.starts_with(&prefix)),
            "no warning for {key}:\n{}",
            out.stderr
        );
    }
    // `writable = false` protects data in prototypes too: nothing to warn about.
    assert_eq!(warnings.len(), 3, "{}", out.stderr);

    let url = sqlite_url(dir.path(), "lib.db");
    let server = match Server::spawn(std::sync::Arc::new(dir), url, &[]).await {
        Started::Up(server) => server,
        Started::Exited(code, log) => panic!("exited with {code}:\n{log}"),
    };
    // Ignored indeed: anyone may list.
    server.get("/loans").await.expect(200);
    let log = server.log_text();
    assert!(
        log.contains("resources.loans.rules") && log.contains("without [auth]"),
        "{log}"
    );
}

#[test]
fn check_reports_every_semantic_error_of_a_file_with_file_and_key_path() {
    let (_dir, path) = schema_dir(
        r#"[app]
name = "broken"

[resources.notes]
fields.title    = { type = "strng" }
fields.owner    = { type = "ref", to = "people" }
fields.done     = { type = "boolean", default = "yes" }
fields.sort     = { type = "string" }
fields.created_at = { type = "timestamp" }
"#,
    );
    let file = path.to_str().unwrap();
    let out = cli(&["check", file]);
    assert_ne!(out.code, 0, "an invalid schema must fail");
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.is_empty()).collect();
    for (key, words) in [
        ("resources.notes.fields.title.type", "strng"),
        ("resources.notes.fields.owner.to", "people"),
        ("resources.notes.fields.done.default", ""),
        ("resources.notes.fields.sort", "reserved"),
        ("resources.notes.fields.created_at", "engine"),
    ] {
        let prefix = format!("{file}: {key}: ");
        let line = lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", out.stderr));
        let message = &line[prefix.len()..];
        assert!(!message.trim().is_empty(), "empty message: {line}");
        assert!(message.contains(words), "{line}");
    }
    assert!(lines.len() >= 5, "{}", out.stderr);
}

#[test]
fn check_reports_an_unknown_key_with_its_key_path() {
    let (_dir, path) = schema_dir(
        "[app]\nname = \"x\"\n\n[resources.notes]\nfields.title = { type = \"string\", requird = true }\n",
    );
    let file = path.to_str().unwrap();
    let out = cli(&["check", file]);
    assert_ne!(out.code, 0);
    // The path is the table holding the key or the unknown key itself.
    let table = format!("{file}: resources.notes.fields.title: ");
    let key = format!("{file}: resources.notes.fields.title.requird: ");
    assert!(
        out.stderr
            .lines()
            .any(|l| (l.starts_with(&table) || l.starts_with(&key)) && l.contains("requird")),
        "{}",
        out.stderr
    );
    // In the user's words, with the key it is nearest to.
    assert!(
        out.stderr.contains(&format!(
            "{key}unknown key \"requird\"; did you mean \"required\"?"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn misspelled_keys_and_types_get_a_did_you_mean_and_strangers_the_keys_accepted() {
    let (_dir, path) = schema_dir(
        r#"[app]
name = "lib"

[resources.loans]
feilds.title = { type = "strng" }
rules = { delet = "owner" }

[auth]
jwt = { algorithms = ["HS256"], secret_env = "S", rol_claim = "roles", colour = "blue" }
"#,
    );
    let file = path.to_str().unwrap();
    let out = cli(&["check", file]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    for line in [
        "resources.loans.feilds: unknown key \"feilds\"; did you mean \"fields\"?",
        "resources.loans.rules.delet: unknown key \"delet\"; did you mean \"delete\"?",
        "auth.jwt.rol_claim: unknown key \"rol_claim\"; did you mean \"role_claim\"?",
        "auth.jwt.colour: unknown key \"colour\"; this table takes algorithms, secret_env,",
    ] {
        assert!(
            out.stderr.contains(&format!("{file}: {line}")),
            "no {line:?} in:\n{}",
            out.stderr
        );
    }
    // No parser internals, no serde markers.
    assert!(!out.stderr.contains(".?."), "{}", out.stderr);
    assert!(!out.stderr.contains("Raw"), "{}", out.stderr);
}

#[test]
fn check_reports_unknown_keys_together_with_the_other_errors_of_the_file() {
    // `check --help` promises "every error": an unknown key must not hide the rest.
    let (_dir, path) = schema_dir(
        r#"[app]
name = "x"

[resources.notes]
fields.title = { type = "strng" }
fields.body  = { type = "text", requird = true }
fields.owner = { type = "ref", to = "people" }
fields.note  = { type = "string", foo = 1 }
"#,
    );
    let file = path.to_str().unwrap();
    let out = cli(&["check", file]);
    assert_ne!(out.code, 0);
    for (key, word) in [
        ("resources.notes.fields.title.type", "strng"),
        ("resources.notes.fields.body", "requird"),
        ("resources.notes.fields.owner.to", "people"),
        ("resources.notes.fields.note", "foo"),
    ] {
        let prefix = format!("{file}: {key}");
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(word)),
            "no error for {key} in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn check_reports_an_unknown_top_level_section_with_its_name() {
    let (_dir, path) = schema_dir(
        "[app]\nname = \"x\"\n\n[resorces.notes]\nfields.title = { type = \"string\" }\n",
    );
    let file = path.to_str().unwrap();
    let out = cli(&["check", file]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.starts_with(&format!("{file}: ")) && out.stderr.contains("resorces"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_reports_a_toml_syntax_error_with_the_file_name() {
    let (_dir, path) = schema_dir("[app\nname = \"x\"\n");
    let file = path.to_str().unwrap();
    let out = cli(&["check", file]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.starts_with(&format!("{file}: ")) && out.stderr.contains("invalid TOML"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_fails_when_the_schema_file_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = cli(&["check", missing.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(missing.to_str().unwrap()),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// migrate
// ---------------------------------------------------------------------------

#[tokio::test]
async fn migrate_dry_run_prints_the_ddl_and_changes_nothing() {
    let (dir, path) = schema_dir(
        r#"[app]
name = "dry"

[resources.people]
fields.email = { type = "string", required = true, unique = true }
"#,
    );
    let db = dir.path().join("dry.db");
    let url = sqlite_url(dir.path(), "dry.db");
    let dry_run = || {
        cli(&[
            "migrate",
            path.to_str().unwrap(),
            "--dry-run",
            "--database-url",
            &url,
        ])
    };
    let out = dry_run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("CREATE TABLE"), "{}", out.stdout);
    assert!(out.stdout.contains("people"), "{}", out.stdout);
    assert!(out.stdout.contains("CREATE UNIQUE INDEX"), "{}", out.stdout);
    assert!(out.stdout.contains("CREATE INDEX"), "{}", out.stdout);
    assert!(!db.exists(), "a dry run must not create the database file");
    assert!(out.stderr.contains("does not exist yet"), "{}", out.stderr);
    // On an existing, empty file it reads and creates nothing either.
    std::fs::File::create(&db).unwrap();
    let out = dry_run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("CREATE TABLE"), "{}", out.stdout);
    assert_eq!(
        table_count(&db).await,
        0,
        "a dry run must not create any table"
    );
}

#[tokio::test]
async fn migrate_applies_the_schema_and_a_second_run_is_up_to_date() {
    let (dir, path) = schema_dir(NOTES);
    let db = dir.path().join("m.db");
    let url = sqlite_url(dir.path(), "m.db");
    let schema = path.to_str().unwrap();

    let first = cli(&["migrate", schema, "--database-url", &url]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stdout.contains("CREATE TABLE"), "{}", first.stdout);
    assert_eq!(
        db_i64(
            &db,
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('notes', 'tags')"
        )
        .await,
        2
    );

    let second = cli(&["migrate", schema, "--database-url", &url]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        !second.stdout.contains("CREATE") && !second.stdout.contains("ALTER"),
        "nothing should run twice: {}",
        second.stdout
    );
    assert!(
        second.stderr.contains("up to date"),
        "stderr: {}",
        second.stderr
    );

    let dry = cli(&["migrate", schema, "--dry-run", "--database-url", &url]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.trim().is_empty(), "{}", dry.stdout);
}

#[tokio::test]
async fn migrate_dry_run_on_an_existing_database_shows_the_pending_alter_without_running_it() {
    let (dir, path) = schema_dir(NOTES);
    let db = dir.path().join("m.db");
    let url = sqlite_url(dir.path(), "m.db");
    let schema = path.to_str().unwrap();
    assert_eq!(cli(&["migrate", schema, "--database-url", &url]).code, 0);
    let columns_before = db_i64(&db, "SELECT COUNT(*) FROM pragma_table_info('notes')").await;

    std::fs::write(
        &path,
        NOTES.replace(
            "fields.body  = { type = \"text\" }",
            "fields.body  = { type = \"text\" }\nfields.rank = { type = \"integer\", default = 1 }",
        ),
    )
    .unwrap();
    let dry = cli(&["migrate", schema, "--dry-run", "--database-url", &url]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("ALTER TABLE") && dry.stdout.contains("rank"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        db_i64(&db, "SELECT COUNT(*) FROM pragma_table_info('notes')").await,
        columns_before,
        "a dry run must not add the column"
    );

    let apply = cli(&["migrate", schema, "--database-url", &url]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    assert_eq!(
        db_i64(&db, "SELECT COUNT(*) FROM pragma_table_info('notes')").await,
        columns_before + 1
    );
}

#[tokio::test]
async fn migrate_refuses_a_destructive_change_with_a_non_zero_exit() {
    let (dir, path) = schema_dir(NOTES);
    let url = sqlite_url(dir.path(), "m.db");
    let schema = path.to_str().unwrap();
    assert_eq!(cli(&["migrate", schema, "--database-url", &url]).code, 0);
    std::fs::write(
        &path,
        NOTES.replace("fields.body  = { type = \"text\" }\n", ""),
    )
    .unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["migrate", schema, "--database-url", &url];
        args.extend_from_slice(extra);
        let out = cli(&args);
        assert_ne!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("notes.body") && out.stderr.contains("--allow-destructive"),
            "{}",
            out.stderr
        );
    }
    // With the flag, the dry run prints what the real run would do, and does nothing.
    let dry = cli(&[
        "migrate",
        schema,
        "--database-url",
        &url,
        "--dry-run",
        "--allow-destructive",
    ]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("DROP TABLE \"notes\""),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stderr.contains("dry run: nothing was changed"),
        "{}",
        dry.stderr
    );
    let columns = || async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pragma_table_info('notes')")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    let before = columns().await;
    let applied = cli(&[
        "migrate",
        schema,
        "--database-url",
        &url,
        "--allow-destructive",
    ]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(columns().await, before - 1);
}

#[test]
fn migrate_without_a_database_url_uses_anteroom_db_next_to_the_schema() {
    let (dir, path) = schema_dir(NOTES);
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(common::binary())
        .args(["migrate", path.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .current_dir(elsewhere.path())
        .output()
        .expect("run anteroom");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("anteroom.db").exists());
    assert!(!elsewhere.path().join("anteroom.db").exists());
}

// ---------------------------------------------------------------------------
// Migrations across restarts
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_additive_schema_change_is_applied_on_restart_and_keeps_every_row() {
    let server = Server::start(NOTES).await;
    let ids = insert_rows(&server).await;

    let additive = r#"[app]
name = "notes"

[resources.notes]
fields.title    = { type = "string", required = true, unique = true }
fields.body     = { type = "text" }
fields.pinned   = { type = "boolean" }
fields.priority = { type = "integer", default = 3 }
fields.status   = { type = "enum", values = ["open", "closed"], required = true, default = "open" }
indexes = [["priority", "pinned"]]

[resources.tags]
fields.label   = { type = "string", required = true }
fields.note_id = { type = "ref", to = "notes" }

[resources.comments]
fields.text    = { type = "text", required = true }
fields.note_id = { type = "ref", to = "notes", required = true, on_delete = "cascade" }
"#;
    let server = match server.restart_with_schema(additive).await {
        Started::Up(server) => server,
        Started::Exited(code, log) => panic!("additive change refused ({code}):\n{log}"),
    };
    assert_rows_intact(&server, &ids).await;

    // Existing rows: the new nullable field is null, defaulted fields have their default.
    for id in &ids {
        let row = server.get(&format!("/notes/{id}")).await.expect(200);
        assert_eq!(row["pinned"], Value::Null, "{row}");
        assert_eq!(row["priority"], 3, "{row}");
        assert_eq!(row["status"], "open", "{row}");
    }
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM notes WHERE priority = 3 AND status = 'open'")
            .await,
        3,
        "existing rows get the default in the database too"
    );

    // The new fields work for reads, writes and filters.
    let patched = server
        .patch(
            &format!("/notes/{}", ids[1]),
            json!({"pinned": true, "priority": 9}),
        )
        .await
        .expect(200);
    assert_eq!(patched["pinned"], true);
    assert_eq!(patched["priority"], 9);
    assert_eq!(patched["title"], "second");
    let created = server
        .post("/notes", json!({"title": "fourth", "status": "closed"}))
        .await
        .expect(201);
    assert_eq!(created["priority"], 3);
    assert_eq!(created["status"], "closed");
    let pinned = server.get("/notes?pinned=true").await.expect(200);
    assert_eq!(pinned["items"].as_array().unwrap().len(), 1, "{pinned}");

    // The unique constraint added to an existing field is enforced.
    server
        .post("/notes", json!({"title": "first"}))
        .await
        .expect_problem(409, "unique_violation");

    // The new index exists.
    assert_eq!(
        server
            .query_i64(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notes' \
                 AND sql LIKE '%\"priority\"%\"pinned\"%'"
            )
            .await,
        1
    );

    // The new resource works and references old rows.
    let comment = server
        .post("/comments", json!({"text": "hello", "note_id": ids[0]}))
        .await
        .expect(201);
    assert_eq!(comment["note_id"], ids[0].as_str());
    assert_eq!(server.all("comments").await.len(), 1);
}

#[tokio::test]
async fn removing_a_field_makes_the_server_refuse_to_start_naming_the_field() {
    let stderr = assert_refused_and_data_intact(
        &NOTES.replace("fields.body  = { type = \"text\" }\n", ""),
        &["notes.body"],
    )
    .await;
    assert!(
        stderr.contains("removed") && stderr.contains("delete"),
        "the refusal should say the values would be deleted:\n{stderr}"
    );
}

#[tokio::test]
async fn removing_a_resource_makes_the_server_refuse_to_start_naming_the_resource() {
    let without_tags = NOTES.split("[resources.tags]").next().unwrap().to_owned();
    let stderr = assert_refused_and_data_intact(&without_tags, &["\"tags\""]).await;
    assert!(
        stderr.contains("removed") && stderr.contains("its table is dropped with its 1 row"),
        "the refusal should say how many rows would be deleted:\n{stderr}"
    );
}

#[tokio::test]
async fn changing_a_field_type_makes_the_server_refuse_to_start_naming_the_field() {
    let stderr = assert_refused_and_data_intact(
        &NOTES.replace(
            "fields.body  = { type = \"text\" }",
            "fields.body  = { type = \"integer\" }",
        ),
        &["notes.body"],
    )
    .await;
    assert!(
        stderr.contains("changed type from text to integer") && stderr.contains("losing its"),
        "the refusal should name both types and say the stored values would be lost:\n{stderr}"
    );
}

#[tokio::test]
async fn a_new_required_field_without_default_makes_the_server_refuse_to_start() {
    let stderr = assert_refused_and_data_intact(
        &NOTES.replace(
            "fields.body  = { type = \"text\" }",
            "fields.body  = { type = \"text\" }\nfields.due = { type = \"date\", required = true }",
        ),
        &["notes.due"],
    )
    .await;
    assert!(
        stderr.contains("required") && stderr.contains("default"),
        "the refusal should explain that existing rows have no value:\n{stderr}"
    );
}

#[tokio::test]
async fn every_destructive_change_of_one_schema_is_reported_at_once() {
    let schema = NOTES
        .split("[resources.tags]")
        .next()
        .unwrap()
        .replace(
            "fields.title = { type = \"string\", required = true }",
            "fields.title = { type = \"integer\", required = true }",
        )
        .replace("fields.body  = { type = \"text\" }\n", "");
    assert_refused_and_data_intact(&schema, &["\"tags\"", "notes.title", "notes.body"]).await;
}

#[tokio::test]
async fn adding_unique_to_a_field_with_duplicates_refuses_to_start_and_changes_nothing() {
    let server = Server::start(NOTES).await;
    let ids = insert_rows(&server).await;
    server
        .post("/notes", json!({"title": "first"}))
        .await
        .expect(201);
    let dir = server.dir.clone();
    let url = server.database_url.clone();
    let unique = NOTES
        .replace(
            "fields.title = { type = \"string\", required = true }",
            "fields.title = { type = \"string\", required = true, unique = true }",
        )
        .replace(
            "fields.body  = { type = \"text\" }",
            "fields.body  = { type = \"text\" }\nfields.extra = { type = \"string\" }",
        );
    match server.restart_with_schema(&unique).await {
        Started::Up(_) => panic!("a unique index over duplicate values cannot be created"),
        Started::Exited(code, stderr) => {
            assert_ne!(code, 0);
            assert!(
                stderr.contains("title") && stderr.contains("notes"),
                "the error should name notes.title:\n{stderr}"
            );
        }
    }
    std::fs::write(dir.path().join("anteroom.toml"), NOTES).unwrap();
    let server = match Server::spawn(dir, url, &[]).await {
        Started::Up(server) => server,
        Started::Exited(code, log) => {
            panic!("the original schema no longer starts ({code}):\n{log}")
        }
    };
    assert_eq!(server.all("notes").await.len(), 4);
    for id in &ids {
        server.get(&format!("/notes/{id}")).await.expect(200);
    }
    assert_eq!(
        server
            .query_i64("SELECT COUNT(*) FROM pragma_table_info('notes') WHERE name = 'extra'")
            .await,
        0,
        "the failed migration must be rolled back as a whole"
    );
}

// ---------------------------------------------------------------------------
// serve: command line
// ---------------------------------------------------------------------------

#[tokio::test]
async fn serve_with_an_invalid_schema_exits_non_zero_naming_the_key_path() {
    let (dir, path) = schema_dir(
        "[app]\nname = \"x\"\n\n[resources.notes]\nfields.title = { type = \"strng\" }\n",
    );
    let dir = Arc::new(dir);
    let db = dir.path().join("test.db");
    let url = sqlite_url(dir.path(), "test.db");
    match Server::spawn(dir.clone(), url, &[]).await {
        Started::Up(_) => panic!("served an invalid schema"),
        Started::Exited(code, stderr) => {
            assert_ne!(code, 0);
            assert!(
                stderr.contains(&format!(
                    "{}: resources.notes.fields.title.type: ",
                    path.display()
                )),
                "{stderr}"
            );
        }
    }
    assert!(
        !db.exists(),
        "an invalid schema must not create the database"
    );
}

#[test]
fn help_lists_every_command_and_serve_help_lists_its_options() {
    let out = cli(&["--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for command in ["serve", "check", "migrate", "seed"] {
        assert!(out.stdout.contains(command), "{command}: {}", out.stdout);
    }
    let out = cli(&["serve", "--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for option in [
        "--port",
        "--host",
        "--database-url",
        "--log-format",
        "--cors-origin",
        "--body-limit",
        "--max-connections",
        "PORT",
        "DATABASE_URL",
    ] {
        assert!(out.stdout.contains(option), "{option}: {}", out.stdout);
    }
}

#[test]
fn version_prints_the_package_version() {
    let out = cli(&["--version"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        format!("anteroom {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_subcommand_or_option_is_a_usage_error() {
    let out = cli(&["serv"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("serv"), "{}", out.stderr);
    let out = cli(&["serve", "--prot", "1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--prot"), "{}", out.stderr);
}

#[tokio::test]
async fn serve_honours_port_and_database_url_from_the_environment() {
    let (dir, path) = schema_dir(NOTES);
    let port = free_port();
    let url = sqlite_url(dir.path(), "from-env.db");
    let mut cmd = command(&["serve", path.to_str().unwrap()]);
    cmd.env("PORT", port.to_string()).env("DATABASE_URL", &url);
    let server = Proc::spawn(cmd);
    assert_eq!(server.base, format!("http://127.0.0.1:{port}"));

    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .post(format!("http://127.0.0.1:{port}/notes"))
        .header("content-type", "application/json")
        .body(r#"{"title":"env"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    drop(server);

    assert_eq!(
        db_i64(
            &dir.path().join("from-env.db"),
            "SELECT COUNT(*) FROM notes"
        )
        .await,
        1
    );
    assert!(
        !dir.path().join("anteroom.db").exists(),
        "DATABASE_URL must replace the default database"
    );
}

#[tokio::test]
async fn command_line_flags_win_over_the_environment() {
    let (dir, path) = schema_dir(NOTES);
    let env_url = sqlite_url(dir.path(), "env.db");
    let flag_url = sqlite_url(dir.path(), "flag.db");
    let mut cmd = command(&[
        "serve",
        path.to_str().unwrap(),
        "--port",
        "0",
        "--database-url",
        &flag_url,
    ]);
    cmd.env("PORT", "1").env("DATABASE_URL", &env_url);
    let server = Proc::spawn(cmd);
    assert!(!server.base.ends_with(":1"), "{}", server.base);
    let resp = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(server);
    assert!(dir.path().join("flag.db").exists());
    assert!(!dir.path().join("env.db").exists());
}

#[tokio::test]
async fn serve_without_a_database_url_creates_anteroom_db_next_to_the_schema() {
    let (dir, path) = schema_dir(NOTES);
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = command(&["serve", path.to_str().unwrap(), "--port", "0"]);
    cmd.current_dir(cwd.path());
    let server = Proc::spawn(cmd);
    let resp = reqwest::Client::new()
        .post(format!("{}/notes", server.base))
        .header("content-type", "application/json")
        .body(r#"{"title":"default db"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    drop(server);
    let db: PathBuf = dir.path().join("anteroom.db");
    assert!(db.exists(), "anteroom.db should be next to the schema");
    assert!(
        !cwd.path().join("anteroom.db").exists(),
        "the default database is not relative to the working directory"
    );
    assert_eq!(db_i64(&db, "SELECT COUNT(*) FROM notes").await, 1);
}

// ---------------------------------------------------------------------------
// seed
// ---------------------------------------------------------------------------

const CAMPUS: &str = r#"[app]
name = "campus"

[resources.colleges]
fields.name = { type = "string", required = true, unique = true }

[resources.majors]
fields.name       = { type = "string", required = true }
fields.college_id = { type = "ref", to = "colleges", required = true }
"#;

#[tokio::test]
async fn seed_inserts_rows_resolving_aliases_and_a_second_run_skips_filled_resources() {
    let (dir, path) = schema_dir(CAMPUS);
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({
            "colleges": [
                {"@": "eng", "name": "Engineering"},
                {"@": "arts", "name": "Arts"}
            ],
            "majors": [
                {"name": "Computer Science", "college_id": "@eng"},
                {"name": "Electrical Engineering", "college_id": "@eng"},
                {"name": "Painting", "college_id": "@arts"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let schema = path.to_str().unwrap();
    let seed_path = seed.to_str().unwrap();

    let first = cli(&["seed", schema, seed_path]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("colleges") && first.stdout.contains("majors"),
        "{}",
        first.stdout
    );

    let second = cli(&["seed", schema, seed_path]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(second.stdout.contains("skipped"), "{}", second.stdout);

    // The seed went into the default database; read it back through the API.
    let dir = Arc::new(dir);
    let url = sqlite_url(dir.path(), "anteroom.db");
    let server = match Server::spawn(dir, url, &[]).await {
        Started::Up(server) => server,
        Started::Exited(code, log) => panic!("server exited ({code}):\n{log}"),
    };
    let colleges = server.all("colleges").await;
    assert_eq!(colleges.len(), 2, "{colleges:?}");
    let majors = server.all("majors").await;
    assert_eq!(
        majors.len(),
        3,
        "seeding twice must not duplicate: {majors:?}"
    );
    let eng = colleges
        .iter()
        .find(|c| c["name"] == "Engineering")
        .expect("Engineering");
    let arts = colleges.iter().find(|c| c["name"] == "Arts").expect("Arts");
    for major in &majors {
        let expected = if major["name"] == "Painting" {
            arts
        } else {
            eng
        };
        assert_eq!(major["college_id"], expected["id"], "{major}");
    }
    let eng_id = eng["id"].as_str().unwrap();
    let of_eng = server
        .get(&format!("/majors?college_id={eng_id}"))
        .await
        .expect(200);
    assert_eq!(of_eng["items"].as_array().unwrap().len(), 2, "{of_eng}");
}

#[tokio::test]
async fn serve_with_seed_loads_the_file_once_before_serving() {
    let files = tempfile::tempdir().unwrap();
    let seed = files.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({
            "colleges": [{"@": "eng", "name": "Engineering"}],
            "majors": [{"name": "Computer Science", "college_id": "@eng"}]
        })
        .to_string(),
    )
    .unwrap();
    let seed = seed.to_str().unwrap();
    let server = Server::start_with_args(CAMPUS, &["--seed", seed]).await;
    let colleges = server.all("colleges").await;
    assert_eq!(colleges.len(), 1, "{colleges:?}");
    let majors = server.all("majors").await;
    assert_eq!(majors.len(), 1, "{majors:?}");
    assert_eq!(majors[0]["college_id"], colleges[0]["id"]);

    // Restarting with the same seed leaves the filled resources alone.
    let (dir, url) = (server.dir.clone(), server.database_url.clone());
    drop(server);
    let server = match Server::spawn(dir, url, &["--seed", seed]).await {
        Started::Up(server) => server,
        Started::Exited(code, log) => panic!("restart with --seed failed ({code}):\n{log}"),
    };
    assert_eq!(server.all("colleges").await.len(), 1);
    assert_eq!(server.all("majors").await.len(), 1);
}

#[tokio::test]
async fn seed_with_an_invalid_row_fails_non_zero() {
    let (dir, path) = schema_dir(CAMPUS);
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({"colleges": [{"name": "Engineering"}, {"title": "no name"}]}).to_string(),
    )
    .unwrap();
    let out = cli(&["seed", path.to_str().unwrap(), seed.to_str().unwrap()]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("colleges"), "{}", out.stderr);
}

#[tokio::test]
async fn seed_with_an_unknown_alias_or_resource_fails_non_zero() {
    for data in [
        json!({"colleges": [{"name": "E"}], "majors": [{"name": "CS", "college_id": "@nope"}]}),
        json!({"departments": [{"name": "E"}]}),
        json!(["not", "an", "object"]),
    ] {
        let (dir, path) = schema_dir(CAMPUS);
        let seed = dir.path().join("seed.json");
        std::fs::write(&seed, data.to_string()).unwrap();
        let out = cli(&["seed", path.to_str().unwrap(), seed.to_str().unwrap()]);
        assert_ne!(out.code, 0, "{data}: {}", out.stdout);
        assert!(!out.stderr.trim().is_empty(), "{data}");
    }
    let (dir, path) = schema_dir(CAMPUS);
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, "{not json").unwrap();
    let out = cli(&["seed", path.to_str().unwrap(), seed.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("seed.json"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// Server behaviour
// ---------------------------------------------------------------------------

#[tokio::test]
async fn health_answers_ok_with_the_database_kind() {
    let server = Server::start(NOTES).await;
    let reply = server.get("/health").await;
    assert_eq!(
        reply.expect(200),
        json!({"status": "ok", "database": "sqlite"})
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        reply.header("content-type")
    );
}

#[tokio::test]
async fn health_refuses_post_with_405_and_allow() {
    let server = Server::start(NOTES).await;
    let reply = server.send("POST", "/health", None, &[]).await;
    reply.expect_problem(405, "method_not_allowed");
    let allow = reply.header("allow").expect("Allow header");
    assert!(allow.contains("GET"), "{allow}");
    assert!(!allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_client_one_is_echoed() {
    let server = Server::start(NOTES).await;
    let replies = [
        server.get("/health").await,
        server.post("/notes", json!({"title": "x"})).await,
        server.get("/notes").await,
        server.get("/no-such-resource").await,
        server.send("POST", "/health", None, &[]).await,
        server.post("/notes", json!({})).await,
    ];
    let mut seen = std::collections::HashSet::new();
    for reply in &replies {
        let id = reply
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id on a {} response", reply.status));
        assert!(!id.is_empty());
        assert!(seen.insert(id.clone()), "request ids must be unique: {id}");
    }
    for (method, path) in [("GET", "/health"), ("GET", "/nope")] {
        let reply = server
            .send(method, path, None, &[("x-request-id", "client-abc-123")])
            .await;
        assert_eq!(
            reply.header("x-request-id").as_deref(),
            Some("client-abc-123")
        );
    }
}

/// A CORS preflight for `POST /notes` from `origin`.
async fn preflight(server: &Server, origin: &str) -> common::Reply {
    server
        .send(
            "OPTIONS",
            "/notes",
            None,
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
        )
        .await
}

#[tokio::test]
async fn cors_allows_a_configured_origin_and_not_another() {
    let server = Server::start_with_args(NOTES, &["--cors-origin", "https://app.example"]).await;
    let allowed = preflight(&server, "https://app.example").await;
    assert!(allowed.status < 300, "preflight status {}", allowed.status);
    assert_eq!(
        allowed.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    let methods = allowed
        .header("access-control-allow-methods")
        .expect("allow-methods");
    assert!(methods.contains("POST"), "{methods}");

    let other = preflight(&server, "https://evil.example").await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    let simple = server
        .send("GET", "/notes", None, &[("origin", "https://app.example")])
        .await;
    assert_eq!(simple.status, 200);
    assert_eq!(
        simple.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    let simple = server
        .send("GET", "/notes", None, &[("origin", "https://evil.example")])
        .await;
    assert_eq!(simple.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_cors_preflight_lists_exactly_the_methods_of_the_route_it_asks_about() {
    let server = Server::start_with_args(NOTES, &["--cors-origin", "https://app.example"]).await;
    for (path, methods) in [
        ("/notes", "GET, HEAD, POST"),
        (
            "/notes/01a2248b-24f3-7443-8334-e8ef3f519bbc",
            "GET, HEAD, PATCH, PUT, DELETE",
        ),
        ("/notes/1/tags", "GET, HEAD"),
        ("/health", "GET, HEAD"),
    ] {
        let reply = server
            .send(
                "OPTIONS",
                path,
                None,
                &[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", "GET"),
                ],
            )
            .await;
        assert_eq!(reply.status, 204, "{path}");
        assert_eq!(
            reply.header("access-control-allow-methods").as_deref(),
            Some(methods),
            "{path}"
        );
        let headers = reply.header("access-control-allow-headers").unwrap();
        assert!(
            headers.contains("authorization") && headers.contains("if-match"),
            "{headers}"
        );
    }
    // No route, no preflight.
    server
        .send(
            "OPTIONS",
            "/nothing",
            None,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await
        .expect_problem(404, "not_found");
    // An actual response names the origin and the headers a browser may read.
    let simple = server
        .send("GET", "/notes", None, &[("origin", "https://app.example")])
        .await;
    assert_eq!(
        simple.header("access-control-expose-headers").as_deref(),
        Some("etag, location, x-request-id")
    );
    assert!(simple.header("vary").unwrap_or_default().contains("origin"));
}

#[tokio::test]
async fn without_cors_origin_no_cors_headers_are_sent() {
    let server = Server::start(NOTES).await;
    let preflight = server
        .send(
            "OPTIONS",
            "/notes",
            None,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    let simple = server
        .send("GET", "/notes", None, &[("origin", "https://app.example")])
        .await;
    for reply in [&preflight, &simple] {
        let cors: Vec<_> = reply
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "unexpected CORS headers: {cors:?}");
    }
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_stderr_line() {
    let (dir, path) = schema_dir(NOTES);
    let url = sqlite_url(dir.path(), "test.db");
    let mut server = Proc::spawn(command(&[
        "serve",
        path.to_str().unwrap(),
        "--port",
        "0",
        "--database-url",
        &url,
        "--log-format",
        "json",
    ]));
    let resp = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.terminate();
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let log = server.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        assert!(line["level"].is_string(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"),
        "the prototype warning should be a WARN line: {log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("listening on"))),
        "{log}"
    );
}

#[tokio::test]
async fn serve_warns_loudly_at_start_that_a_schema_without_auth_is_public() {
    let server = Server::start(NOTES).await;
    let log = server.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("[auth]"))
        .unwrap_or_else(|| panic!("no warning about the missing [auth] section:\n{log}"));
    assert!(warning.to_lowercase().contains("public"), "{warning}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_zero() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (dir, path) = schema_dir(NOTES);
    let url = sqlite_url(dir.path(), "test.db");
    let mut server = Proc::spawn(command(&[
        "serve",
        path.to_str().unwrap(),
        "--port",
        "0",
        "--database-url",
        &url,
    ]));
    let rows: Vec<Value> = (0..1000)
        .map(|i| json!({"title": format!("row {i}"), "body": "x".repeat(50)}))
        .collect();
    let body = Value::Array(rows).to_string().into_bytes();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /notes HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    stream.write_all(&body[..half]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The request is in flight (the server is reading its body): stop the server.
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.running(),
        "the server exited with a request in flight:\n{}",
        server.log_text()
    );

    stream.write_all(&body[half..]).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the in-flight request should complete: {}",
        &response[..response.len().min(500)]
    );

    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "graceful shutdown should exit 0:\n{}",
        server.log_text()
    );
    assert_eq!(
        db_i64(&dir.path().join("test.db"), "SELECT COUNT(*) FROM notes").await,
        1000
    );
}

#[tokio::test]
async fn sigterm_on_an_idle_server_exits_zero_promptly() {
    let (dir, path) = schema_dir(NOTES);
    let url = sqlite_url(dir.path(), "test.db");
    let mut server = Proc::spawn(command(&[
        "serve",
        path.to_str().unwrap(),
        "--port",
        "0",
        "--database-url",
        &url,
    ]));
    let resp = reqwest::get(format!("{}/health", server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.terminate();
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
}

#[tokio::test]
async fn an_internal_database_error_is_never_leaked_to_the_client() {
    let server = Server::start(NOTES).await;
    server
        .post("/notes", json!({"title": "x"}))
        .await
        .expect(201);
    // Break the database behind the server's back.
    db_execute(&server.database_url, "DROP TABLE tags").await;
    for reply in [
        server.get("/tags").await,
        server.post("/tags", json!({"label": "l"})).await,
    ] {
        assert!(reply.status >= 500, "status {}", reply.status);
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        let body = reply.json();
        assert_eq!(body["status"], reply.status);
        let text = String::from_utf8_lossy(&reply.bytes).to_lowercase();
        for leak in [
            "no such table",
            "select",
            "insert",
            "sqlite",
            "sqlx",
            "tags\"",
        ] {
            assert!(!text.contains(leak), "body leaks {leak:?}: {text}");
        }
        assert!(reply.header("x-request-id").is_some());
    }
    // The server keeps serving what still works.
    server.get("/notes").await.expect(200);
}

#[tokio::test]
async fn behind_a_base_path_requests_route_with_or_without_it_and_location_carries_it() {
    let server = Server::start_with_args(NOTES, &["--base-path", "/api/"]).await;
    // A proxy that passes the prefix through...
    let created = server.post("/api/notes", json!({"title": "one"})).await;
    created.expect(201);
    let location = created.header("location").expect("Location");
    assert!(location.starts_with("/api/notes/"), "{location}");
    // ...and the resource is where Location says.
    server.get(&location).await.expect(200);
    // A proxy that strips it: the same routes, the same Location.
    let created = server.post("/notes", json!({"title": "two"})).await;
    let location = created.header("location").expect("Location");
    assert!(location.starts_with("/api/notes/"), "{location}");
    // Only whole segments are a prefix.
    server
        .get("/apinotes")
        .await
        .expect_problem(404, "not_found");
    assert_eq!(server.count_in_database("notes").await, 2);
}

#[tokio::test]
async fn a_bare_file_path_is_a_sqlite_database_and_a_url_nobody_reads_is_refused_with_the_forms() {
    let (dir, path) = schema_dir(NOTES);
    let schema = path.to_str().unwrap();
    let file = dir.path().join("lib.db");
    let out = cli(&["migrate", schema, "--database-url", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        db_i64(
            &file,
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'notes'"
        )
        .await,
        1
    );

    for (url, says) in [
        ("localhost:5432/app", "neither a URL nor a file path"),
        (
            "postgress://db.example/app",
            "unsupported database URL scheme \"postgress\"",
        ),
    ] {
        let out = cli(&["serve", schema, "--database-url", url]);
        assert_eq!(out.code, 2, "{url}: {}", out.stderr);
        assert!(out.stderr.contains("--database-url"), "{}", out.stderr);
        assert!(out.stderr.contains(says), "{}", out.stderr);
        assert!(
            out.stderr
                .contains("postgres://user:password@host:5432/database"),
            "{}",
            out.stderr
        );
    }
}
