//! Many stateless instances on one database, and database outages.
//!
//! Runs on the backend of `ANTEROOM_TEST_BACKEND` like the other conformance
//! suites. Three server processes share one database; concurrent creates,
//! updates and deletes through all of them must leave exactly the
//! acknowledged effects, and concurrent `If-Match` writes of one row must have
//! exactly one winner. The outage test puts a TCP proxy between the server and
//! PostgreSQL/MySQL and cuts it under load (the shared database server itself
//! is never stopped); SQLite has no network to cut, so that test says so and
//! returns.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, Server, Started, TestDatabase, id_of, schema_dir};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

const SCHEMA: &str = r#"
[app]
name = "ledger"

[resources.accounts]
id = { type = "integer" }
fields.owner   = { type = "string", required = true, unique = true }
fields.balance = { type = "integer", required = true, default = 0 }

[resources.tags]
id = { type = "string", name = "slug", max_length = 64 }
fields.label = { type = "string", required = true }
"#;

async fn instances(n: usize, database_url: Option<String>) -> (Vec<Server>, Arc<TestDatabase>) {
    let (dir, _) = schema_dir(SCHEMA);
    let dir = Arc::new(dir);
    let db = Arc::new(TestDatabase::create(dir.path()).await);
    let url = database_url.unwrap_or_else(|| db.url.clone());
    let mut servers = Vec::new();
    for _ in 0..n {
        match Server::spawn_with(dir.clone(), url.clone(), &[], Some(db.clone())).await {
            Started::Up(s) => servers.push(s),
            Started::Exited(code, log) => panic!("instance exited with {code}:\n{log}"),
        }
    }
    (servers, db)
}

#[tokio::test]
async fn three_instances_leave_exactly_the_acknowledged_creates_updates_and_deletes() {
    let (servers, _db) = instances(3, None).await;
    let servers = Arc::new(servers);
    // 3 instances x 4 clients x 15 creates, each client then updates and deletes some of its rows.
    let mut tasks = Vec::new();
    for client in 0..12usize {
        let servers = servers.clone();
        tasks.push(tokio::spawn(async move {
            let mut created = BTreeMap::new();
            let mut deleted = BTreeSet::new();
            for i in 0..15usize {
                let server = &servers[(client + i) % 3];
                let owner = format!("c{client}-{i}");
                let reply = server
                    .post("/accounts", json!({"owner": owner, "balance": i}))
                    .await;
                if reply.status == 201 {
                    created.insert(id_of(&reply.json()["id"]), (owner, i as i64));
                }
            }
            for (n, (id, (_, balance))) in created.iter_mut().enumerate() {
                let server = &servers[(client + n + 1) % 3];
                if n % 3 == 0 {
                    if server.delete(&format!("/accounts/{id}")).await.status == 204 {
                        deleted.insert(id.clone());
                    }
                } else {
                    let reply = server
                        .patch(
                            &format!("/accounts/{id}"),
                            json!({"balance": *balance + 1000}),
                        )
                        .await;
                    if reply.status == 200 {
                        *balance += 1000;
                    }
                }
            }
            (created, deleted)
        }));
    }
    let mut expected = BTreeMap::new();
    for task in tasks {
        let (created, deleted) = task.await.expect("client");
        for (id, row) in created {
            if !deleted.contains(&id) {
                expected.insert(id, row);
            }
        }
    }
    assert_eq!(
        expected.len(),
        12 * 15 - 12 * 5,
        "every request was acknowledged"
    );
    // Every instance sees exactly the acknowledged state.
    for server in servers.iter() {
        let rows = server.all("accounts").await;
        let actual: BTreeMap<String, (String, i64)> = rows
            .iter()
            .map(|r| {
                (
                    id_of(&r["id"]),
                    (
                        r["owner"].as_str().unwrap().to_owned(),
                        r["balance"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(actual, expected);
    }
    assert_eq!(
        servers[0].count_in_database("accounts").await,
        expected.len() as i64
    );
}

#[tokio::test]
async fn concurrent_if_match_updates_of_one_row_have_exactly_one_winner() {
    let (servers, _db) = instances(3, None).await;
    let servers = Arc::new(servers);
    let row = servers[0]
        .post("/accounts", json!({"owner": "contended"}))
        .await
        .expect(201);
    let path = format!("/accounts/{}", id_of(&row["id"]));
    for round in 0..3 {
        let etag = servers[0].get(&path).await.header("etag").expect("etag");
        let mut tasks = Vec::new();
        for writer in 0..9usize {
            let servers = servers.clone();
            let path = path.clone();
            let etag = etag.clone();
            tasks.push(tokio::spawn(async move {
                let reply = servers[writer % 3]
                    .send(
                        "PATCH",
                        &path,
                        Some(json!({"balance": writer})),
                        &[("if-match", &etag)],
                    )
                    .await;
                (writer, reply.status)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (writer, status) = task.await.expect("writer");
            match status {
                200 => winners.push(writer as i64),
                412 => {}
                other => panic!("round {round}: writer {writer} got {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        let now = servers[1].get(&path).await.expect(200);
        assert_eq!(
            now["balance"], winners[0],
            "the winner's write is the one stored"
        );
    }
}

#[tokio::test]
async fn concurrent_puts_creating_one_key_give_one_201_and_the_rest_200() {
    let (servers, _db) = instances(3, None).await;
    let servers = Arc::new(servers);
    for round in 0..3 {
        let path = format!("/tags/key-{round}");
        let mut tasks = Vec::new();
        for writer in 0..9usize {
            let (servers, path) = (servers.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                servers[writer % 3]
                    .put(&path, json!({"label": format!("writer {writer}")}))
                    .await
                    .status
            }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.expect("writer"));
        }
        statuses.sort_unstable();
        assert_eq!(
            statuses.iter().filter(|s| **s == 201).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 201),
            "{statuses:?}"
        );
        servers[0].get(&path).await.expect(200);
    }
    assert_eq!(servers[0].count_in_database("tags").await, 3);
}

/// A TCP proxy the test can cut (every connection dropped, new ones refused)
/// and restore, standing in for a database outage.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    /// New connections are accepted and never answered (a host that went
    /// silent: every connect waits for its timeout).
    silent: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    /// Reads of what the server sent towards the database: one per burst of
    /// messages, so one per round trip of a request waiting on its answer.
    sent: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let sent = Arc::new(AtomicU64::new(0));
        let (cut2, gen2, sent2) = (cut.clone(), generation.clone(), sent.clone());
        let silent2 = silent.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if silent2.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                held.clear();
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cancelled = gen2.subscribe();
                let sent = sent2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let requests = async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_client.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            sent.fetch_add(1, Ordering::SeqCst);
                            to_server.write_all(&buf[..n]).await?;
                        }
                    };
                    let answers = tokio::io::copy(&mut from_server, &mut to_client);
                    tokio::select! {
                        _ = requests => {}
                        _ = answers => {}
                        _ = cancelled.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            silent,
            generation,
            sent,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Drops every connection and answers no new one.
    fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.silent.store(false, Ordering::SeqCst);
    }
}

/// A server on a fresh database that it reaches through a [`Proxy`].
async fn behind_proxy() -> (Proxy, Server) {
    behind_proxy_with(&[]).await
}

/// [`behind_proxy`] with extra server arguments.
async fn behind_proxy_with(args: &[&str]) -> (Proxy, Server) {
    let (dir, _) = schema_dir(SCHEMA);
    let db = TestDatabase::create(dir.path()).await;
    let direct = url::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", direct.host_str().unwrap(), direct.port().unwrap());
    let proxy = Proxy::start(upstream).await;
    let mut through = direct.clone();
    through.set_port(Some(proxy.port)).unwrap();
    match Server::spawn_with(Arc::new(dir), through.to_string(), args, Some(Arc::new(db))).await {
        Started::Up(s) => (proxy, s),
        Started::Exited(code, log) => panic!("server exited with {code}:\n{log}"),
    }
}

#[tokio::test]
async fn once_connecting_fails_three_times_requests_fail_at_once_and_a_probe_brings_the_service_back()
 {
    let backend = Backend::current();
    let Some(_) = backend.server_url() else {
        println!(
            "skipped: SQLite is embedded, there is no connection to cut (run with ANTEROOM_TEST_BACKEND=postgres or mysql)"
        );
        return;
    };
    let (proxy, server) = behind_proxy().await;
    let server = Arc::new(server);
    let row = server
        .post("/accounts", json!({"owner": "before"}))
        .await
        .expect(201);
    let path = format!("/accounts/{}", id_of(&row["id"]));
    // The database's host goes silent: a connect waits for the 3 s acquire
    // timeout (a connection it already had fails at once, and counts for
    // nothing). Requests at once spend the timeout together until three
    // connects in a row have failed, which opens the circuit.
    proxy.silence();
    let silenced = Instant::now();
    while !server
        .log_text()
        .contains("the database is unreachable: requests fail at once")
    {
        assert!(
            silenced.elapsed() < Duration::from_secs(20),
            "the circuit never opened:\n{}",
            server.log_text()
        );
        let batch: Vec<_> = (0..3)
            .map(|_| {
                let (server, path) = (server.clone(), path.clone());
                tokio::spawn(async move { server.get(&path).await })
            })
            .collect();
        for reply in batch {
            reply
                .await
                .expect("request")
                .expect_problem(503, "database_unavailable");
        }
    }
    let opened_after = silenced.elapsed();
    // From now on each request is answered without waiting on the database.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let reply = server.get(&path).await;
        slowest = slowest.max(started.elapsed());
        reply.expect_problem(503, "database_unavailable");
        assert!(reply.header("retry-after").is_some());
    }
    // Far below the 3 s each would wait without the circuit.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest 503 took {slowest:?}"
    );
    proxy.restore();
    let restored = Instant::now();
    while server.get(&path).await.status != 200 {
        assert!(
            restored.elapsed() < Duration::from_secs(10),
            "the probe never closed the circuit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "circuit open {opened_after:?} after the silence; slowest 503 with it open: {slowest:?}; back {:?} after the restore",
        restored.elapsed()
    );
    assert!(server.log_text().contains("the circuit is closed"));
}

#[tokio::test]
async fn a_database_outage_is_a_fast_503_and_the_service_recovers_without_losing_acknowledged_writes()
 {
    let backend = Backend::current();
    let Some(_) = backend.server_url() else {
        println!(
            "skipped: SQLite is embedded, there is no connection to cut (run with ANTEROOM_TEST_BACKEND=postgres or mysql)"
        );
        return;
    };
    // The server reaches its database through the proxy.
    let (proxy, server) = behind_proxy().await;
    let server = Arc::new(server);

    // Load: a writer that records every acknowledged create.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut statuses = BTreeMap::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let reply = server
                    .post("/accounts", json!({"owner": format!("w{i}")}))
                    .await;
                *statuses.entry(reply.status).or_insert(0) += 1;
                if reply.status == 201 {
                    acked.push(reply.json()["owner"].as_str().unwrap().to_owned());
                }
                if reply.status == 503 {
                    assert!(
                        reply.header("retry-after").is_some(),
                        "503 without Retry-After"
                    );
                    reply.expect_problem(503, "database_unavailable");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, statuses)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.cut();
    let cut_at = Instant::now();
    // Requests fail fast with 503 while the database is unreachable.
    let mut saw_503 = false;
    let mut saw_503_after = Duration::ZERO;
    while cut_at.elapsed() < Duration::from_secs(10) {
        let started = Instant::now();
        let health = server.get("/health").await;
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "health took {:?}",
            started.elapsed()
        );
        if health.status == 503 {
            health.expect_problem(503, "database_unavailable");
            assert!(health.header("retry-after").is_some());
            let read = server.get("/accounts").await;
            read.expect_problem(503, "database_unavailable");
            saw_503 = true;
            saw_503_after = cut_at.elapsed();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_503, "no 503 within 10 s of the outage");
    tokio::time::sleep(Duration::from_secs(1)).await;

    proxy.restore();
    let restored_at = Instant::now();
    // Recovers by itself.
    loop {
        if server.get("/health").await.status == 200 {
            break;
        }
        assert!(
            restored_at.elapsed() < Duration::from_secs(20),
            "no recovery within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_after = restored_at.elapsed();
    let after = server
        .post("/accounts", json!({"owner": "after-recovery"}))
        .await;
    after.expect(201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, statuses) = writer.await.expect("writer");
    println!(
        "writer statuses {statuses:?}; 503 seen {saw_503_after:?} after the cut; recovered {recovered_after:?} after restore"
    );
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0 || saw_503,
        "{statuses:?}"
    );
    assert!(
        statuses.keys().all(|s| [201, 503].contains(s)),
        "only 201 and 503 during the outage: {statuses:?}"
    );

    // Every acknowledged write is in the database.
    let stored: BTreeSet<String> = server
        .all("accounts")
        .await
        .iter()
        .map(|r| r["owner"].as_str().unwrap().to_owned())
        .collect();
    for owner in &acked {
        assert!(
            stored.contains(owner),
            "acknowledged write {owner} is missing"
        );
    }
    assert!(stored.contains("after-recovery"));
}

#[tokio::test]
async fn a_pooled_connection_that_died_while_idle_is_replaced_without_failing_the_request() {
    let backend = Backend::current();
    let Some(_) = backend.server_url() else {
        println!(
            "skipped: SQLite is embedded, there is no connection to die (run with ANTEROOM_TEST_BACKEND=postgres or mysql)"
        );
        return;
    };
    let (proxy, server) = behind_proxy().await;
    // Every pooled connection in use once, so the pool holds several.
    let warm: Vec<_> = (0..4).map(|_| server.get("/accounts")).collect();
    for reply in futures_util::future::join_all(warm).await {
        reply.expect(200);
    }

    // Every open connection dies (as when a frozen Lambda thaws, or a
    // firewall drops idle flows); the database itself stays reachable.
    proxy.cut();
    proxy.restore();
    // Idle past --ping-after-idle (1 s): the next use pings first.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    server.get("/accounts").await.expect(200);
    server
        .post("/accounts", json!({"owner": "after-the-thaw"}))
        .await
        .expect(201);
    server.get("/health").await.expect(200);
    assert_eq!(server.count_in_database("accounts").await, 1);
}

#[tokio::test]
async fn a_read_by_id_costs_one_round_trip_to_the_database() {
    let backend = Backend::current();
    let Some(_) = backend.server_url() else {
        println!(
            "skipped: SQLite is embedded, there are no round trips to count (run with ANTEROOM_TEST_BACKEND=postgres or mysql)"
        );
        return;
    };
    // One connection, so every read reuses the one the last read returned.
    let (proxy, server) = behind_proxy_with(&["--max-connections", "1"]).await;
    let created = server
        .post("/accounts", json!({"owner": "ada", "balance": 7}))
        .await
        .expect(201);
    let path = format!("/accounts/{}", id_of(&created["id"]));
    server.get(&path).await.expect(200);
    // Whatever the last request left in flight has landed.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = proxy.sent.load(Ordering::SeqCst);
    let reads = 20;
    for _ in 0..reads {
        let body = server.get(&path).await.expect(200);
        assert_eq!(body["owner"], "ada");
        assert_eq!(body["balance"], 7);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = proxy.sent.load(Ordering::SeqCst) - before;
    // One burst (the statement) per read. sqlx's own pool sends a ping
    // after each, which made this 2 per read.
    assert!(
        sent <= reads + 2,
        "{reads} reads by id sent {sent} bursts to the database"
    );
    assert!(sent >= reads, "the proxy missed reads: {sent}");
}

#[tokio::test]
async fn requests_abandoned_mid_query_leave_no_unfinished_connection_to_the_next_request() {
    let backend = Backend::current();
    let Some(_) = backend.server_url() else {
        println!(
            "skipped: SQLite reads do not borrow pooled connections (run with ANTEROOM_TEST_BACKEND=postgres or mysql)"
        );
        return;
    };
    // One connection: every request after an abandoned one gets the
    // connection the abandoned one held.
    let (_proxy, server) = behind_proxy_with(&["--max-connections", "1"]).await;
    let digits = "(SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
    server
        .execute(&format!(
            "INSERT INTO accounts (owner, balance, created_at, updated_at) \
             SELECT CONCAT('owner-', a.n + 10 * b.n + 100 * c.n + 1000 * d.n + 10000 * e.n), a.n, \
             CURRENT_TIMESTAMP, CURRENT_TIMESTAMP \
             FROM {digits} a, {digits} b, {digits} c, {digits} d, {digits} e"
        ))
        .await;
    let wanted = server
        .post("/accounts", json!({"owner": "zed", "balance": 42}))
        .await
        .expect(201);
    let path = format!("/accounts/{}", id_of(&wanted["id"]));

    // Scans over 100,001 rows, each abandoned after a few milliseconds:
    // cut mid-statement, mid-page, or before it started.
    let client = reqwest::Client::new();
    for i in 0..30u64 {
        let scan = client
            .get(format!(
                "{}/accounts?owner[ilike]=*{i}*9*&sort=-balance&limit=100",
                server.base
            ))
            .timeout(Duration::from_millis(1 + i % 15))
            .send();
        let _ = scan.await;
        let body = server.get(&path).await.expect(200);
        assert_eq!(body["owner"], "zed", "after abandoned scan {i}");
        assert_eq!(body["balance"], 42);
    }
    // A scan allowed to finish returns its own rows, not a leftover.
    let page = server
        .get("/accounts?owner[ilike]=owner-1234*&sort=owner")
        .await
        .expect(200);
    let owners: Vec<&str> = page["items"]
        .as_array()
        .expect("a page of items")
        .iter()
        .map(|row| row["owner"].as_str().unwrap())
        .collect();
    assert_eq!(
        owners,
        [
            "owner-1234",
            "owner-12340",
            "owner-12341",
            "owner-12342",
            "owner-12343",
            "owner-12344",
            "owner-12345",
            "owner-12346",
            "owner-12347",
            "owner-12348",
            "owner-12349"
        ]
    );
    assert_eq!(server.count_in_database("accounts").await, 100_001);
}
