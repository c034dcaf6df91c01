//! End-to-end tests of how the server treats connections, not requests: no
//! single client may hold the server hostage.
//!
//! - an idle connection is closed after the idle timeout; a keep-alive client
//!   that keeps talking is not;
//! - a request head or body that trickles in slower than its timeout gets a
//!   408 problem and the connection is closed (nothing is written);
//! - the number of client connections is capped below the file-descriptor
//!   limit: idle hogs are evicted so `/health` still answers (a client still
//!   reading a long response is not idle), and when every connection is busy
//!   the newcomer gets a 503;
//! - a client that stops reading its response is closed after the idle timeout;
//! - SIGTERM closes what is left after the shutdown deadline;
//! - `X-Request-Id` is echoed and logged only when it is short and safe.
//!
//! The timeouts are set through their environment variables (each test keeps
//! them short); `serve --help` shows the flags. Timing targets live in
//! `bench/hostile.sh`, not here: these tests only bound behaviour.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NOTES: &str = r#"[app]
name = "notes"

[resources.notes]
fields.title = { type = "string", required = true }
fields.body  = { type = "text" }
"#;

/// Lets this test process open a few thousand sockets.
fn raise_own_fd_limit() {
    let _ = rlimit::increase_nofile_limit(8192);
}

/// A server process started by these tests, killed when dropped.
struct Proc {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `serve` on port 0 with a fresh SQLite database, extra
    /// arguments and environment, and optionally under `ulimit -n fd_limit`.
    fn start(args: &[&str], env: &[(&str, &str)], fd_limit: Option<u32>) -> Proc {
        let (dir, schema) = common::schema_dir(NOTES);
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let mut cmd = match fd_limit {
            // `exec` keeps the pid: signals reach the server itself.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(common::binary());
                c
            }
            None => Command::new(common::binary()),
        };
        cmd.arg("serve")
            .arg(&schema)
            .args(["--port", "0", "--database-url", &url])
            .args(args)
            .env("ANTEROOM_LOG", "info,sqlx=warn")
            .envs(env.iter().copied());
        for var in [
            "PORT",
            "DATABASE_URL",
            "ANTEROOM_HOST",
            "ANTEROOM_IDLE_TIMEOUT",
            "ANTEROOM_HEADER_TIMEOUT",
            "ANTEROOM_BODY_TIMEOUT",
            "ANTEROOM_MAX_CLIENTS",
            "ANTEROOM_SHUTDOWN_TIMEOUT",
        ] {
            if !env.iter().any(|(k, _)| *k == var) {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn anteroom");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || ".:".contains(*c))
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
                addr,
                log,
                _dir: dir,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                panic!("server did not start:\n{}", log.lock().unwrap());
            }
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `needle` to appear in the log.
    async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `timeout` for the exit code; `None` (and killed) if still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).await.expect("connect")
    }

    /// `POST path` with a JSON body on a new connection, with `Connection: close`.
    async fn post(&self, path: &str, body: &Value) -> Response {
        let mut stream = self.connect().await;
        let body = body.to_string();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(body.as_bytes()).await.expect("write");
        read_response(&mut stream, Duration::from_secs(10))
            .await
            .expect("a response")
    }

    /// `GET path` on a new connection, with `Connection: close`.
    async fn get(&self, path: &str, extra: &str) -> Response {
        let mut stream = self.connect().await;
        let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        read_response(&mut stream, Duration::from_secs(10))
            .await
            .expect("a response")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Asserts a problem+json response with `status` and `code`.
    #[track_caller]
    fn expect_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["status"], status, "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(body["detail"].is_string(), "{body}");
        body
    }
}

/// Reads one response (head, then `Content-Length` bytes of body) within `timeout`.
async fn read_response(stream: &mut TcpStream, timeout: Duration) -> Result<Response, String> {
    tokio::time::timeout(timeout, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            match stream.read(&mut chunk).await {
                Ok(0) => {
                    return Err(format!(
                        "closed before a response head: {:?}",
                        String::from_utf8_lossy(&buf)
                    ));
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {head}"))?;
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            match stream.read(&mut chunk).await {
                Ok(0) => return Err("closed inside the body".into()),
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
        body.truncate(length);
        Ok(Response {
            status,
            headers,
            body,
        })
    })
    .await
    .map_err(|_| format!("no response within {timeout:?}"))?
}

/// How a connection ended while we waited for it to.
#[derive(Debug, PartialEq)]
enum End {
    /// The server closed it (EOF or reset) after this long.
    Closed(Duration),
    /// Still open when we stopped waiting.
    StillOpen,
}

/// Waits up to `timeout` for the server to close `stream`, discarding what it sends.
async fn wait_closed(stream: &mut TcpStream, timeout: Duration) -> End {
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    let result = tokio::time::timeout(timeout, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    match result {
        Ok(()) => End::Closed(start.elapsed()),
        Err(_) => End::StillOpen,
    }
}

fn is_uuid_v7(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_idle_connection_that_never_sends_a_byte_is_closed_after_the_idle_timeout() {
    let server = Proc::start(&[], &[("ANTEROOM_IDLE_TIMEOUT", "1s")], None);
    let mut idle = server.connect().await;
    match wait_closed(&mut idle, Duration::from_secs(6)).await {
        End::Closed(after) => assert!(
            after >= Duration::from_millis(800),
            "closed too early: {after:?}"
        ),
        End::StillOpen => panic!("the idle connection is still open after 6 s"),
    }
}

#[tokio::test]
async fn a_keep_alive_connection_stays_usable_for_several_requests_within_the_idle_timeout() {
    let server = Proc::start(&[], &[("ANTEROOM_IDLE_TIMEOUT", "1s")], None);
    let mut stream = server.connect().await;
    // Five requests 600 ms apart: 2.4 s in all, each pause under the timeout.
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let reply = read_response(&mut stream, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
    }
}

#[tokio::test]
async fn a_slowloris_client_gets_a_408_problem_after_the_header_timeout_and_the_connection_closes()
{
    let server = Proc::start(&[], &[("ANTEROOM_HEADER_TIMEOUT", "1s")], None);
    let stream = server.connect().await;
    let (mut reader, mut writer) = stream.into_split();
    let start = Instant::now();
    // One header line every 300 ms, for up to 8 s: the head never ends.
    let trickle = tokio::spawn(async move {
        if writer
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
            .await
            .is_err()
        {
            return;
        }
        for i in 0..26 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let line = format!("X-Slow-{i}: still coming\r\n");
            if writer.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(9), reader.read_to_end(&mut received)).await;
    trickle.abort();
    assert!(
        read.is_ok(),
        "no answer and still open after 9 s ({} bytes received)",
        received.len()
    );
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&received).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "408 after {elapsed:?}"
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    let problem: Value = serde_json::from_str(body).expect("problem JSON");
    assert_eq!(problem["status"], 408);
    assert_eq!(problem["code"], "request_timeout");
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("an x-request-id");
    assert!(
        server
            .wait_for_log(&format!("request_id={id}"), Duration::from_secs(3))
            .await,
        "the log should carry the 408's id {id}"
    );
    // The server keeps serving everybody else.
    assert_eq!(server.get("/health", "").await.status, 200);
}

#[tokio::test]
async fn a_request_head_over_64_kib_gets_431_and_one_under_it_is_served() {
    let server = Proc::start(&[], &[], None);
    let under = format!("X-Big: {}\r\n", "a".repeat(60_000));
    assert_eq!(server.get("/health", &under).await.status, 200);
    let over = format!("X-Big: {}\r\n", "a".repeat(70_000));
    assert_eq!(server.get("/health", &over).await.status, 431);
}

#[tokio::test]
async fn a_body_trickled_slower_than_the_body_timeout_gets_a_408_problem_and_nothing_is_written() {
    let server = Proc::start(&[], &[("ANTEROOM_BODY_TIMEOUT", "1s")], None);
    let body = br#"{"title": "slowly, slowly"}"#;
    let stream = server.connect().await;
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let start = Instant::now();
    let trickle = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        // One byte every 400 ms: the whole body would take 11 s.
        for byte in body {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(8), reader.read_to_end(&mut received)).await;
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&received).into_owned();
    assert!(read.is_ok(), "still open after 8 s; received {text:?}");
    trickle.abort();
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(elapsed < Duration::from_secs(5), "408 after {elapsed:?}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let problem: Value = serde_json::from_str(body).expect("problem JSON");
    assert_eq!(problem["code"], "request_timeout", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("1s"),
        "the detail should name the timeout: {problem}"
    );
    // Wait past the time the whole body would have taken: still nothing written.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let list = server.get("/notes", "").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["items"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------
// The connection cap
// ---------------------------------------------------------------------------

#[tokio::test]
async fn three_hundred_idle_connections_under_a_256_fd_limit_do_not_stop_health_from_answering() {
    raise_own_fd_limit();
    let server = Proc::start(&[], &[], Some(256));
    let mut hogs = Vec::new();
    for _ in 0..300 {
        hogs.push(server.connect().await);
    }
    // Let the server meet every one of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let reply = read_response(&mut stream, Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    let reply = reply.unwrap_or_else(|e| panic!("/health: {e}\n{}", tail(&server.log_text())));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(elapsed < Duration::from_secs(2), "/health took {elapsed:?}");
    // Two more seconds with the hogs still connected: the log stays quiet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = server.log_text();
    let accept_errors = log.lines().filter(|l| l.contains("accept")).count();
    assert!(
        accept_errors <= 3,
        "{accept_errors} accept log lines:\n{}",
        tail(&log)
    );
    assert!(
        log.contains("file descriptor"),
        "the start-up log should state the fd limit and the cap:\n{}",
        tail(&log)
    );
    drop(hogs);
}

/// The last 20 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_is_evicted_so_a_new_client_is_served() {
    let server = Proc::start(&[], &[("ANTEROOM_MAX_CLIENTS", "4")], None);
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(server.connect().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = server.get("/health", "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let oldest = &mut idle[0];
    assert!(
        matches!(
            wait_closed(oldest, Duration::from_secs(3)).await,
            End::Closed(_)
        ),
        "the oldest idle connection should have been closed to make room"
    );
    // The others were left alone.
    for (i, other) in idle.iter_mut().enumerate().skip(1) {
        assert_eq!(
            wait_closed(other, Duration::from_millis(100)).await,
            End::StillOpen,
            "connection {i}"
        );
    }
}

/// Adds `batches` × 100 notes of 8 KB each: pages far larger than what the
/// sockets between client and server buffer.
async fn add_long_notes(server: &Proc, batches: usize) {
    let text = "x".repeat(8_000);
    for batch in 0..batches {
        let rows: Vec<Value> = (0..100)
            .map(|i| serde_json::json!({"title": format!("{batch}-{i}"), "body": text}))
            .collect();
        let reply = server.post("/notes", &Value::Array(rows)).await;
        assert_eq!(
            reply.status,
            201,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
    }
}

/// Requests read by a client with a small receive window: `GET path` sent
/// several times at once (pipelined), so that the answers outgrow every
/// buffer between server and client and much of them waits in the server.
struct SlowRead {
    stream: TcpStream,
    /// What arrived and has not been taken as a response yet.
    buf: Vec<u8>,
}

impl SlowRead {
    async fn start(server: &Proc, path: &str, requests: usize) -> SlowRead {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket
            .connect(server.addr.parse().expect("address"))
            .await
            .expect("connect");
        // The last request closes the connection once it is answered.
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").repeat(requests - 1)
            + &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        SlowRead {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads at most `max` bytes more; false once the server has closed (or
    /// sent nothing for 5 s).
    async fn read_some(&mut self, max: usize) -> bool {
        let mut chunk = vec![0u8; max];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads until the first response head has arrived.
    async fn read_first_head(&mut self) {
        while !self.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(self.read_some(4096).await, "no response head");
        }
        assert!(
            self.buf.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &self.buf[..12]
        );
    }

    /// Reads until the server closes, then returns the bodies of the whole
    /// responses that arrived (a cut-short one is left out).
    async fn read_to_close(mut self) -> Vec<Vec<u8>> {
        while self.read_some(64 * 1024).await {}
        whole_responses(&self.buf)
    }
}

/// The bodies of the complete responses at the start of `bytes`.
fn whole_responses(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    while let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        let end = head_end + 4 + length;
        if bytes.len() < end {
            break;
        }
        bodies.push(bytes[head_end + 4..end].to_vec());
        bytes = &bytes[end..];
    }
    bodies
}

/// Asserts three whole pages of 400 notes.
#[track_caller]
fn assert_three_whole_pages(bodies: &[Vec<u8>], log: &str) {
    assert_eq!(bodies.len(), 3, "responses cut short:\n{}", tail(log));
    for body in bodies {
        let page: Value = serde_json::from_slice(body).expect("a JSON page");
        assert_eq!(page["items"].as_array().map(Vec::len), Some(400));
    }
}

#[tokio::test]
async fn at_the_cap_a_client_still_reading_long_responses_is_not_evicted_but_an_idle_one_is() {
    let server = Proc::start(&[], &[("ANTEROOM_MAX_CLIENTS", "2")], None);
    add_long_notes(&server, 4).await;
    // Three pages of 3 MB asked for at once; the reader pauses after the
    // first head, with most of them still to come.
    let mut slow = SlowRead::start(&server, "/notes?limit=400", 3).await;
    slow.read_first_head().await;
    // Its handlers answered long ago; a truly idle connection opens after that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut idle = server.connect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A newcomer at the cap: the idle connection makes room, not the reader.
    let reply = server.get("/health", "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        matches!(
            wait_closed(&mut idle, Duration::from_secs(3)).await,
            End::Closed(_)
        ),
        "the idle connection should have been closed to make room"
    );
    assert_three_whole_pages(&slow.read_to_close().await, &server.log_text());
}

#[tokio::test]
async fn a_client_that_stops_reading_its_responses_is_closed_after_the_idle_timeout() {
    let server = Proc::start(&[], &[("ANTEROOM_IDLE_TIMEOUT", "1s")], None);
    add_long_notes(&server, 4).await;
    let mut slow = SlowRead::start(&server, "/notes?limit=400", 3).await;
    slow.read_first_head().await;
    // No byte taken for longer than the idle timeout: the server gives up on
    // the rest, and the connection is free for somebody else.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let bodies = slow.read_to_close().await;
    assert!(
        bodies.len() < 3,
        "every response arrived after a 2.5 s stall"
    );
}

#[tokio::test]
async fn when_every_connection_is_busy_a_newcomer_gets_a_503_problem_with_retry_after() {
    let server = Proc::start(&[], &[("ANTEROOM_MAX_CLIENTS", "3")], None);
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut stream = server.connect().await;
        // A request whose body is still on its way keeps its connection busy.
        stream
            .write_all(
                b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{\"title\": ",
            )
            .await
            .expect("write");
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = server.get("/health", "").await;
    reply.expect_problem(503, "busy");
    assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
    let id = reply.header("x-request-id").expect("an x-request-id");
    assert!(
        server
            .wait_for_log(&format!("request_id={id}"), Duration::from_secs(3))
            .await,
        "the log should carry the 503's id {id}"
    );
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    // None of the busy requests was dropped to make room.
    for (i, stream) in busy.iter_mut().enumerate() {
        assert_eq!(
            wait_closed(stream, Duration::from_millis(100)).await,
            End::StillOpen,
            "busy connection {i}"
        );
    }
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_with_three_half_sent_requests_open_exits_zero_within_the_shutdown_deadline() {
    let mut server = Proc::start(&[], &[("ANTEROOM_SHUTDOWN_TIMEOUT", "2s")], None);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = server.connect().await;
        stream
            .write_all(
                b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{\"title\": ",
            )
            .await
            .expect("write");
        open.push(stream);
    }
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Half: ")
        .await
        .expect("write");
    open.push(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    server.terminate();
    let code = server.wait_exit(Duration::from_secs(8));
    let elapsed = start.elapsed();
    assert_eq!(
        code,
        Some(0),
        "still running {elapsed:?} after SIGTERM:\n{}",
        tail(&server.log_text())
    );
    assert!(elapsed < Duration::from_secs(5), "exited after {elapsed:?}");
    drop(open);
}

// ---------------------------------------------------------------------------
// X-Request-Id
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_hostile_x_request_id_is_replaced_by_a_generated_one_shared_by_the_log_and_the_response()
{
    let server = Proc::start(&[], &[], None);
    let long = "x".repeat(10_000);
    let hostile = [
        long.as_str(),
        "a\tb",
        "x request_id=forged} INFO request{method=GET path=/admin}: forged line",
        "caf\u{e9}",
        "<script>",
        "",
    ];
    for value in hostile {
        let mut stream = server.connect().await;
        let mut head = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Request-Id: ".to_vec();
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        stream.write_all(&head).await.expect("write");
        let reply = read_response(&mut stream, Duration::from_secs(5))
            .await
            .expect("a response");
        assert_eq!(reply.status, 200, "{reply:?}");
        let id = reply
            .header("x-request-id")
            .expect("x-request-id")
            .to_owned();
        assert!(
            is_uuid_v7(&id),
            "{:?} should have been replaced by a UUID v7, got {:?}",
            &value[..value.len().min(40)],
            &id[..id.len().min(40)]
        );
        assert!(
            server
                .wait_for_log(&format!("request_id={id}"), Duration::from_secs(3))
                .await,
            "the log should carry the same id {id}"
        );
    }
    let log = server.log_text();
    assert!(!log.contains("forged"), "{}", tail(&log));
    assert!(
        !log.contains(&"x".repeat(200)),
        "the 10 KB id reached the log"
    );
    assert!(!log.contains('\t'), "a tab reached the log");
}

#[tokio::test]
async fn a_well_formed_client_request_id_is_echoed_and_logged() {
    let server = Proc::start(&[], &[], None);
    let id = "client-Abc.123:req_9";
    let reply = server
        .get("/health", &format!("X-Request-Id: {id}\r\n"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some(id));
    assert!(
        server
            .wait_for_log(&format!("request_id={id}"), Duration::from_secs(3))
            .await
    );
    let max = "a".repeat(128);
    let reply = server
        .get("/health", &format!("X-Request-Id: {max}\r\n"))
        .await;
    assert_eq!(reply.header("x-request-id"), Some(max.as_str()));
}

#[tokio::test]
async fn a_very_long_path_is_logged_truncated() {
    let server = Proc::start(&[], &[], None);
    let path = format!("/{}", "p".repeat(5_000));
    let reply = server.get(&path, "").await;
    assert_eq!(reply.status, 404);
    let id = reply.header("x-request-id").expect("id").to_owned();
    assert!(
        server
            .wait_for_log(&format!("request_id={id}"), Duration::from_secs(3))
            .await
    );
    let log = server.log_text();
    assert!(
        !log.contains(&"p".repeat(1_000)),
        "the whole path was logged"
    );
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn serve_help_lists_the_connection_settings_and_a_bad_duration_is_a_usage_error() {
    let help = common::cli(&["serve", "--help"]);
    for flag in [
        "--idle-timeout",
        "--header-timeout",
        "--body-timeout",
        "--max-clients",
        "--shutdown-timeout",
    ] {
        assert!(
            help.stdout.contains(flag),
            "{flag} missing:\n{}",
            help.stdout
        );
    }
    let bad = common::cli(&["serve", "x.toml", "--idle-timeout", "10 parsecs"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--idle-timeout"), "{}", bad.stderr);
    assert!(bad.stderr.contains("ms, s, m, h or d"), "{}", bad.stderr);
}
