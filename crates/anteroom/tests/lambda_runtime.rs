//! The binary in Lambda mode against a real Lambda Runtime API emulator:
//! `cargo lambda watch --only-lambda-apis` serves the Runtime API and the
//! invoke API, the `anteroom` binary (as Lambda's `bootstrap` would be)
//! polls it for events, and the test invokes it with `cargo lambda invoke
//! --data-file` (REST API, HTTP API and ALB events) and with plain HTTP
//! through the emulator's Function URL endpoint (`/lambda-url/_/…`).
//!
//! Needs `cargo-lambda` (`pip install cargo-lambda`, as `.ci/run` does):
//! from `ANTEROOM_TEST_CARGO_LAMBDA`, else `cargo-lambda` on PATH; without
//! it the tests say they were skipped. `ANTEROOM_LAMBDA_BINARY` picks the
//! binary under test (`.ci/run` passes the release build).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The emulator's command, if installed.
fn cargo_lambda() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ANTEROOM_TEST_CARGO_LAMBDA") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("cargo-lambda"))
            .find(|p| p.is_file())
    })
}

fn binary() -> PathBuf {
    std::env::var_os("ANTEROOM_LAMBDA_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(common::binary()))
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lambda")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The emulator on a free port, and a function environment for it.
struct Emulator {
    tool: PathBuf,
    port: u16,
    _process: Killed,
}

impl Emulator {
    fn start(tool: PathBuf, log: &Path) -> Emulator {
        let port = free_port();
        let process = Command::new(&tool)
            .args(["lambda", "watch", "--only-lambda-apis", "--disable-cors"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            // It reads the function's name from a Cargo manifest.
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start cargo lambda watch");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the emulator did not listen: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Emulator {
            tool,
            port,
            _process: Killed(process),
        }
    }

    /// Starts the binary as Lambda starts `bootstrap`: no arguments, the
    /// Runtime API's address and the function's variables in a clean
    /// environment.
    fn function(&self, dir: &Path, extra: &[(&str, &str)]) -> Child {
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt", self.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("LAMBDA_TASK_ROOT", dir)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.join("app.db").display()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("function.log")).expect("log"));
        for (k, v) in extra {
            command.env(k, v);
        }
        command.spawn().expect("start the function")
    }

    /// `cargo lambda invoke --data-file`: the function's reply, or the
    /// invoke's error output.
    fn invoke(&self, dir: &Path, event: &Value) -> Result<Value, String> {
        let file = dir.join("event.json");
        std::fs::write(&file, event.to_string()).expect("write event");
        let out = Command::new(&self.tool)
            .args([
                "lambda",
                "invoke",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(self.port.to_string())
            .arg("--data-file")
            .arg(&file)
            .output()
            .expect("cargo lambda invoke");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
        }
        serde_json::from_str(stdout.trim()).map_err(|e| format!("{e}: {stdout}"))
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/lambda-url/_{path}", self.port)
    }
}

fn body(reply: &Value) -> Value {
    serde_json::from_str(reply["body"].as_str().expect("body")).expect("JSON body")
}

/// A v1 event moved to another method, path and JSON body.
fn v1_at(mut event: Value, method: &str, path: &str, body: Option<Value>) -> Value {
    event["httpMethod"] = json!(method);
    event["path"] = json!(path);
    event["requestContext"]["path"] = json!(format!("/dev{path}"));
    event["body"] = body.map_or(Value::Null, |b| json!(b.to_string()));
    event["isBase64Encoded"] = json!(false);
    event
}

fn setup() -> Option<(tempfile::TempDir, Emulator)> {
    let Some(tool) = cargo_lambda() else {
        println!(
            "skipped: cargo-lambda is not installed (pip install cargo-lambda, or set ANTEROOM_TEST_CARGO_LAMBDA)"
        );
        return None;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lambda/anteroom.toml"),
        dir.path().join("anteroom.toml"),
    )
    .expect("schema");
    let emulator = Emulator::start(tool, &dir.path().join("emulator.log"));
    Some((dir, emulator))
}

#[tokio::test]
async fn the_binary_serves_crud_queues_and_authorizer_identities_behind_the_runtime_api_emulator() {
    let Some((dir, emulator)) = setup() else {
        return;
    };
    let dir = dir.path();
    // Migrating is a deploy step; the function only checks (ANTEROOM_MIGRATE=check).
    let migrated = Command::new(binary())
        .args(["migrate", "--database-url"])
        .arg(format!("sqlite://{}", dir.join("app.db").display()))
        .arg(dir.join("anteroom.toml"))
        .output()
        .expect("anteroom migrate");
    assert!(migrated.status.success(), "{migrated:?}");
    let _function = Killed(emulator.function(dir, &[]));

    // REST API: a Cognito authorizer's subject is the creator; the stage is in Location.
    let created = emulator
        .invoke(dir, &fixture("rest-v1-create-cognito.json"))
        .expect("invoke");
    assert_eq!(created["statusCode"], 201, "{created:#}");
    assert_eq!(
        created["multiValueHeaders"]["location"],
        json!(["/dev/students/1"])
    );
    assert_eq!(
        body(&created)["created_by"],
        "7d8ca528-4931-4254-9273-ea5ee853f271"
    );

    // HTTP API: the JWT authorizer's subject, a named stage in rawPath.
    let grace = emulator
        .invoke(dir, &fixture("http-v2-create-jwt-authorizer.json"))
        .expect("invoke");
    assert_eq!(grace["statusCode"], 201, "{grace:#}");
    assert_eq!(grace["headers"]["location"], "/dev/students/2");
    assert_eq!(body(&grace)["created_by"], "u-grace");

    // ALB, multi-value headers.
    let listed = emulator
        .invoke(dir, &fixture("alb-multi-value.json"))
        .expect("invoke");
    assert_eq!(listed["statusCode"], 200, "{listed:#}");
    assert_eq!(listed["statusDescription"], "200 OK");
    assert_eq!(body(&listed)["items"][0]["name"], "Ada Lovelace");

    // A queue: Ada joins with her row; as staff she calls the next one.
    let base = fixture("rest-v1-create-cognito.json");
    let joined = emulator
        .invoke(
            dir,
            &v1_at(
                base.clone(),
                "POST",
                "/queues/help/entries",
                Some(json!({"member_id": 1})),
            ),
        )
        .expect("invoke");
    assert_eq!(joined["statusCode"], 201, "{joined:#}");
    let entry = body(&joined)["id"].clone();
    let next = emulator
        .invoke(dir, &v1_at(base.clone(), "POST", "/queues/help/next", None))
        .expect("invoke");
    assert_eq!(next["statusCode"], 200, "{next:#}");
    assert_eq!(body(&next)["id"], entry);
    assert_eq!(body(&next)["status"], "serving");

    // A malformed event is a 400 in its own format, and the function lives on.
    let broken = emulator
        .invoke(dir, &fixture("rest-v1-body-not-base64.json"))
        .expect("invoke");
    assert_eq!(broken["statusCode"], 400, "{broken:#}");
    assert_eq!(body(&broken)["code"], "malformed_event");
    // An event that is no HTTP request at all is an invocation error.
    assert!(emulator.invoke(dir, &fixture("sqs-not-http.json")).is_err());

    // Plain HTTP through the Function URL endpoint.
    let client = reqwest::Client::new();
    let reply = client
        .get(emulator.url("/students?sort=name&fields=name,created_by"))
        .send()
        .await
        .expect("function URL");
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.headers()["content-type"],
        "application/json",
        "{:?}",
        reply.headers()
    );
    let items: Value = reply.json().await.expect("JSON");
    assert_eq!(
        items["items"],
        json!([
            {"name": "Ada Lovelace", "created_by": "7d8ca528-4931-4254-9273-ea5ee853f271"},
            {"name": "Grace Hopper", "created_by": "u-grace"}
        ])
    );
    // A Function URL has no authorizer: no identity, so no create.
    let refused = client
        .post(emulator.url("/students"))
        .json(&json!({"name": "Mallory"}))
        .send()
        .await
        .expect("function URL");
    assert_eq!(refused.status(), 401);
    // Streams cannot be held open through the invoke API: 501, poll instead.
    let path = format!("/queues/help/entries/{}/events", entry.as_str().unwrap());
    let stream = emulator
        .invoke(dir, &v1_at(base.clone(), "GET", &path, None))
        .expect("invoke");
    assert_eq!(stream["statusCode"], 501, "{stream:#}");
    assert_eq!(body(&stream)["code"], "streams_unavailable");

    // The database holds what the replies said.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("app.db").display()))
        .await
        .expect("open the database");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, created_by FROM students ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("read");
    assert_eq!(
        rows,
        [
            (
                "Ada Lovelace".to_owned(),
                "7d8ca528-4931-4254-9273-ea5ee853f271".to_owned()
            ),
            ("Grace Hopper".to_owned(), "u-grace".to_owned())
        ]
    );

    // Logs are JSON lines carrying the invocation's request id.
    let log = std::fs::read_to_string(dir.join("function.log")).expect("log");
    let line = log
        .lines()
        .find(|l| l.contains("finished processing request"))
        .unwrap_or_else(|| panic!("no request log line:\n{log}"));
    let line: Value = serde_json::from_str(line).expect("a JSON log line");
    assert!(line["spans"][0]["requestId"].is_string(), "{line}");
}

#[tokio::test]
async fn a_function_refuses_to_start_on_a_database_behind_the_schema_and_says_to_migrate() {
    let Some((dir, emulator)) = setup() else {
        return;
    };
    let mut function = emulator.function(dir.path(), &[]);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = function.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the function kept running on an unmigrated database"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("function.log")).expect("log");
    assert!(log.contains("anteroom migrate"), "{log}");
    assert!(log.contains("ANTEROOM_MIGRATE=apply"), "{log}");
}
