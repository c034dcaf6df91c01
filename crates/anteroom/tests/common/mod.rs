//! End-to-end harness: starts the real `anteroom` binary on a random port with
//! a schema written to a temporary directory and a fresh database, and talks
//! to it over HTTP. Every test gets its own process and database.
//!
//! The backend is chosen per run, so the same tests are the conformance suite
//! of every backend: `ANTEROOM_TEST_BACKEND=sqlite` (default), `postgres`
//! (with `ANTEROOM_TEST_POSTGRES_URL`) or `mysql` (with
//! `ANTEROOM_TEST_MYSQL_URL`). On PostgreSQL and MySQL each test creates its
//! own database on that server and drops it afterwards.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_anteroom")
}

/// A running server.
pub struct Server {
    /// Keeps the test's database alive (dropped after the process is stopped).
    database: Option<Arc<TestDatabase>>,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Temporary directory holding the schema and the SQLite file.
    pub dir: Arc<tempfile::TempDir>,
    /// The database URL the server uses.
    pub database_url: String,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    /// HTTP client.
    pub client: reqwest::Client,
}

/// An HTTP response, fully read.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Raw body.
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Asserts the status and, for errors, that the body is problem+json with `code`.
    #[track_caller]
    pub fn expect_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.bytes)
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        let body = self.json();
        assert_eq!(body["status"], status);
        assert_eq!(body["code"], code, "problem: {body}");
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
        body
    }

    /// Asserts the status, returning the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.bytes)
        );
        if self.bytes.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

/// Output and status of a finished CLI run.
pub struct CliOutput {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the binary with `args` to completion.
pub fn cli(args: &[&str]) -> CliOutput {
    cli_env(args, &[])
}

/// Runs the binary with extra environment variables (secrets).
pub fn cli_env(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let out = Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("PORT")
        .envs(env.iter().copied())
        .output()
        .expect("run anteroom");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the binary with `env` and `input` on its standard input.
pub fn cli_stdin(args: &[&str], env: &[(&str, &str)], input: &str) -> CliOutput {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("PORT")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run anteroom");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for anteroom");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `schema` into a new temporary directory; returns it and the schema path.
pub fn schema_dir(schema: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("anteroom.toml");
    std::fs::write(&path, schema).expect("write schema");
    (dir, path)
}

/// How a spawn attempt ended.
pub enum Started {
    /// Listening.
    Up(Server),
    /// Exited before listening: exit code and stderr.
    Exited(i32, String),
}

/// The database server family a run tests against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in the test's temporary directory.
    Sqlite,
    /// A fresh database on `ANTEROOM_TEST_POSTGRES_URL`.
    Postgres,
    /// A fresh database on `ANTEROOM_TEST_MYSQL_URL`.
    Mysql,
}

impl Backend {
    /// The backend of this run (`ANTEROOM_TEST_BACKEND`, default sqlite).
    pub fn current() -> Backend {
        match std::env::var("ANTEROOM_TEST_BACKEND").as_deref() {
            Ok("postgres") => Backend::Postgres,
            Ok("mysql") => Backend::Mysql,
            Ok("sqlite") | Err(_) => Backend::Sqlite,
            Ok(other) => {
                panic!("ANTEROOM_TEST_BACKEND={other}: expected sqlite, postgres or mysql")
            }
        }
    }

    /// The name `/health` reports for this backend.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    /// The server URL of a client-server backend, if configured.
    pub fn server_url(self) -> Option<String> {
        let var = match self {
            Backend::Sqlite => return None,
            Backend::Postgres => "ANTEROOM_TEST_POSTGRES_URL",
            Backend::Mysql => "ANTEROOM_TEST_MYSQL_URL",
        };
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => None,
        }
    }
}

static DATABASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Databases of servers that were restarted: kept until the process ends, and
/// swept by the next run (see [`sweep_stale_databases`]).
static KEEP_ALIVE: Mutex<Vec<Arc<TestDatabase>>> = Mutex::new(Vec::new());

static SWEEP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Drops test databases left by earlier runs whose process is gone.
async fn sweep_stale_databases(backend: Backend, admin: &str) {
    use sqlx::Connection;
    let list = match backend {
        Backend::Postgres => "SELECT datname FROM pg_database WHERE datname LIKE 'anteroom_t_%'",
        Backend::Mysql => {
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'anteroom_t_%'"
        }
        Backend::Sqlite => return,
    };
    let names: Vec<String> = match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(admin).await.expect("connect");
            sqlx::query_scalar(list)
                .fetch_all(&mut c)
                .await
                .unwrap_or_default()
        }
        _ => {
            let mut c = sqlx::MySqlConnection::connect(admin)
                .await
                .expect("connect");
            sqlx::query_scalar(list)
                .fetch_all(&mut c)
                .await
                .unwrap_or_default()
        }
    };
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid
            .is_some_and(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let drop = match backend {
                Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                _ => format!("DROP DATABASE IF EXISTS {name}"),
            };
            exec_admin(backend, admin, &drop).await;
        }
    }
}

/// A database created for one test (dropped with it on PostgreSQL and MySQL).
pub struct TestDatabase {
    /// URL the server connects to.
    pub url: String,
    backend: Backend,
    admin_url: Option<String>,
    name: String,
}

/// `url` pointing at database `name` instead.
pub fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("database URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

impl TestDatabase {
    /// A fresh, empty database of the run's backend.
    pub async fn create(dir: &Path) -> TestDatabase {
        Self::create_on(Backend::current(), dir).await
    }

    /// A fresh, empty database of `backend`.
    pub async fn create_on(backend: Backend, dir: &Path) -> TestDatabase {
        let Some(admin) = backend.server_url() else {
            assert!(
                backend == Backend::Sqlite,
                "the {backend:?} suite needs its server URL in ANTEROOM_TEST_{}_URL",
                format!("{backend:?}").to_uppercase()
            );
            return TestDatabase {
                url: format!("sqlite://{}", dir.join("test.db").display()),
                backend,
                admin_url: None,
                name: String::new(),
            };
        };
        SWEEP
            .get_or_init(|| sweep_stale_databases(backend, &admin))
            .await;
        let n = DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("anteroom_t_{}_{n}", std::process::id());
        exec_admin(backend, &admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
        exec_admin(backend, &admin, &format!("CREATE DATABASE {name}")).await;
        TestDatabase {
            url: with_database(&admin, &name),
            backend,
            admin_url: Some(admin),
            name,
        }
    }
}

async fn exec_admin(backend: Backend, admin: &str, statement: &str) {
    use sqlx::Connection;
    let statement = sqlx::AssertSqlSafe(statement.to_owned());
    match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(admin)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query(statement)
                .execute(&mut c)
                .await
                .expect("admin statement");
        }
        Backend::Mysql => {
            let mut c = sqlx::MySqlConnection::connect(admin)
                .await
                .expect("connect to MySQL");
            sqlx::query(statement)
                .execute(&mut c)
                .await
                .expect("admin statement");
        }
        Backend::Sqlite => {}
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(admin) = self.admin_url.clone() else {
            return;
        };
        let backend = self.backend;
        let statement = match backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // Drop runs outside any runtime: the cleanup gets its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(exec_admin(backend, &admin, &statement));
            }
        })
        .join();
    }
}

impl Server {
    /// Starts a server for `schema` on a fresh database.
    pub async fn start(schema: &str) -> Server {
        Self::start_with_args(schema, &[]).await
    }

    /// Starts a server with extra command-line arguments.
    pub async fn start_with_args(schema: &str, args: &[&str]) -> Server {
        Self::start_with_env(schema, args, &[]).await
    }

    /// Starts a server with extra arguments and environment variables (secrets).
    pub async fn start_with_env(schema: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let (dir, _) = schema_dir(schema);
        let db = TestDatabase::create(dir.path()).await;
        let url = db.url.clone();
        match Self::spawn_env(Arc::new(dir), url, args, env, Some(Arc::new(db))).await {
            Started::Up(s) => s,
            Started::Exited(code, log) => panic!("server exited with {code}:\n{log}"),
        }
    }

    /// Starts a server on a fresh SQLite database whatever
    /// `ANTEROOM_TEST_BACKEND` says (for behaviour only SQLite has).
    pub async fn start_sqlite(schema: &str, args: &[&str]) -> Server {
        Self::start_sqlite_env(schema, args, &[]).await
    }

    /// [`Server::start_sqlite`] with extra environment variables.
    pub async fn start_sqlite_env(schema: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let (dir, _) = schema_dir(schema);
        let db = TestDatabase::create_on(Backend::Sqlite, dir.path()).await;
        let url = db.url.clone();
        match Self::spawn_env(Arc::new(dir), url, args, env, Some(Arc::new(db))).await {
            Started::Up(s) => s,
            Started::Exited(code, log) => panic!("server exited with {code}:\n{log}"),
        }
    }

    /// The schema file of this server.
    pub fn schema_path(&self) -> PathBuf {
        self.dir.path().join("anteroom.toml")
    }

    /// Stops this server and starts another on the same database with a new schema.
    pub async fn restart_with_schema(self, schema: &str) -> Started {
        self.restart_with_schema_after(schema, |_, _| {}).await
    }

    /// Stops this server, writes `schema`, calls `between` with the schema
    /// file and the database URL (to run `anteroom migrate`, say) and starts
    /// another server on the same database.
    pub async fn restart_with_schema_after(
        mut self,
        schema: &str,
        between: impl FnOnce(&Path, &str),
    ) -> Started {
        self.stop();
        std::fs::write(self.schema_path(), schema).expect("write schema");
        between(&self.schema_path(), &self.database_url);
        // A refused start must not drop the database the test goes on to reopen.
        if let Some(db) = &self.database {
            KEEP_ALIVE.lock().unwrap().push(db.clone());
        }
        Self::spawn_with(
            self.dir.clone(),
            self.database_url.clone(),
            &[],
            self.database.clone(),
        )
        .await
    }

    /// Spawns the binary and waits for its "listening on" line.
    pub async fn spawn(
        dir: Arc<tempfile::TempDir>,
        database_url: String,
        args: &[&str],
    ) -> Started {
        Self::spawn_with(dir, database_url, args, None).await
    }

    /// Spawns the binary; the server keeps `database` alive until it is dropped.
    pub async fn spawn_with(
        dir: Arc<tempfile::TempDir>,
        database_url: String,
        args: &[&str],
        database: Option<Arc<TestDatabase>>,
    ) -> Started {
        Self::spawn_env(dir, database_url, args, &[], database).await
    }

    /// Spawns the binary with extra environment variables.
    pub async fn spawn_env(
        dir: Arc<tempfile::TempDir>,
        database_url: String,
        args: &[&str],
        env: &[(&str, &str)],
        database: Option<Arc<TestDatabase>>,
    ) -> Started {
        let schema = dir.path().join("anteroom.toml");
        let mut child = Command::new(binary())
            .arg("serve")
            .arg(&schema)
            .args(["--port", "0", "--database-url", &database_url])
            .args(args)
            .env("ANTEROOM_LOG", "info,sqlx=warn")
            // The developer's own limits must not change what a test sees.
            .env_remove("ANTEROOM_BODY_TIMEOUT")
            .env_remove("ANTEROOM_IDLE_TIMEOUT")
            .env_remove("ANTEROOM_HEADER_TIMEOUT")
            .env_remove("ANTEROOM_MAX_CLIENTS")
            .env_remove("ANTEROOM_SHUTDOWN_TIMEOUT")
            .env_remove("ANTEROOM_STATEMENT_TIMEOUT")
            .envs(env.iter().copied())
            .env_remove("PORT")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn anteroom");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
            .await
            .expect("join");
        match addr {
            Ok(addr) => Started::Up(Server {
                database,
                child: Some(child),
                base: format!("http://{addr}"),
                dir,
                database_url,
                log,
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("client"),
            }),
            Err(_) => {
                let status = child.wait().expect("wait");
                // Give the reader thread a moment to drain the pipe.
                std::thread::sleep(Duration::from_millis(50));
                let text = log.lock().unwrap().clone();
                Started::Exited(status.code().unwrap_or(-1), text)
            }
        }
    }

    /// Kills the process.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The child process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child
            .take()
            .and_then(|mut c| c.wait().ok())
            .and_then(|s| s.code())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a request with an optional JSON body and extra headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.client.request(
            method.parse().expect("method"),
            format!("{}{}", self.base, path),
        );
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::finish(req).await
    }

    /// Sends raw bytes with the given content type.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .client
            .request(
                method.parse().expect("method"),
                format!("{}{}", self.base, path),
            )
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::finish(req).await
    }

    async fn finish(req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request");
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            bytes: resp.bytes().await.expect("body").to_vec(),
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(body), &[]).await
    }

    /// PATCH JSON.
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send("PATCH", path, Some(body), &[]).await
    }

    /// PUT JSON.
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send("PUT", path, Some(body), &[]).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, None, &[]).await
    }

    /// Every row of a resource, read through the API (follows cursors).
    pub async fn all(&self, resource: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/{resource}?limit=1000&cursor={c}"),
                None => format!("/{resource}?limit=1000"),
            };
            let page = self.get(&path).await.expect(200);
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Runs a scalar query directly on the database (bypassing the API).
    pub async fn query_i64(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let url = &self.database_url;
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(url)
                .await
                .expect("open the test database");
            sqlx::query_scalar(sql)
                .fetch_one(&mut c)
                .await
                .expect("query the test database")
        } else if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(url)
                .await
                .expect("open the test database");
            sqlx::query_scalar(sql)
                .fetch_one(&mut c)
                .await
                .expect("query the test database")
        } else {
            let mut c = sqlx::MySqlConnection::connect(url)
                .await
                .expect("open the test database");
            // Tests quote identifiers the standard way ("table").
            sqlx::query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
                .execute(&mut c)
                .await
                .expect("ANSI_QUOTES");
            sqlx::query_scalar(sql)
                .fetch_one(&mut c)
                .await
                .expect("query the test database")
        }
    }

    /// Runs a statement directly on the database (bypassing the API), e.g. to
    /// put the database in the state an older release left it in.
    pub async fn execute(&self, sql: &str) {
        use sqlx::Connection;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let url = &self.database_url;
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(url)
                .await
                .expect("open the test database");
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .expect("run on the test database");
        } else if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(url)
                .await
                .expect("open the test database");
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .expect("run on the test database");
        } else {
            let mut c = sqlx::MySqlConnection::connect(url)
                .await
                .expect("open the test database");
            sqlx::query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
                .execute(&mut c)
                .await
                .expect("ANSI_QUOTES");
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .expect("run on the test database");
        }
    }

    /// The server process's resident memory: (current, peak) in KiB (Linux).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Counts a table's rows directly in the database (bypassing the API).
    pub async fn count_in_database(&self, table: &str) -> i64 {
        self.query_i64(&format!("SELECT COUNT(*) FROM \"{table}\""))
            .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The repository root (for examples/).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A JSON id as it appears in a URL path (strings without their quotes).
pub fn id_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Absolute path of a test fixture (keys for the auth suites).
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The schema of the queue rule suites (`fixtures/queue_rules.toml`), whose
/// HS256 secret is [`QUEUE_RULES_SECRET`] in `JWT_SECRET`.
pub fn queue_rules_schema() -> String {
    std::fs::read_to_string(fixture("queue_rules.toml")).expect("queue_rules.toml")
}

/// `JWT_SECRET` of [`queue_rules_schema`].
pub const QUEUE_RULES_SECRET: &str = "queue-tests-secret-0123456789abcdefgh";

/// A ten-minute HS256 token for `sub` with `role`, signed with [`QUEUE_RULES_SECRET`].
pub fn queue_rules_token(sub: &str, role: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"sub": sub, "role": role, "iat": now, "exp": now + 600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(QUEUE_RULES_SECRET.as_bytes()),
    )
    .unwrap()
}
