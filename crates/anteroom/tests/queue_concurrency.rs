//! A waiting room under concurrency, on the run's backend
//! (`ANTEROOM_TEST_BACKEND`): 4 server processes share one database and 32
//! clients (8 per instance) join, join again, poll, leave, call `next` and
//! finish at random for a bounded time. Afterwards, from the responses and
//! the database: no entry served twice, none left waiting behind a called
//! entry of its line, no member with two active entries (nor two entries
//! active at once), tickets unique per line, the lines' counters equal to
//! what their entries say, every acknowledged join present, every position a
//! client saw non-increasing, and no answer but the documented ones.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, Started, TestDatabase, schema_dir};
use serde_json::json;

const SCHEMA: &str = r#"
[app]
name = "office-hours"

[resources.students]
id = { type = "integer" }
fields.email    = { type = "string", required = true, unique = true }
fields.major_id = { type = "integer", required = true }

[queues.advising]
member       = "students"
partition_by = ["major_id"]
fields.topic = { type = "string" }
"#;

const INSTANCES: usize = 4;
const CLIENTS_PER_INSTANCE: usize = 8;
const STUDENTS: i64 = 64;
const MAJORS: i64 = 2;
const RUN_FOR: Duration = Duration::from_secs(5);

/// A small deterministic generator (xorshift64*), one per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// What one client saw.
#[derive(Default)]
struct Log {
    /// Entries this client's joins created: id → member.
    joined: BTreeMap<String, i64>,
    /// Each acknowledged join: (entry, member, request sent, 201 received).
    join_windows: Vec<(String, i64, Instant, Instant)>,
    /// Each leave or done request: (entry, when it was sent).
    end_requests: Vec<(String, Instant)>,
    /// 409 already_in_queue answers: (member, the active entry the detail
    /// names, unless it ended before it could be read back).
    refused: Vec<(i64, Option<String>)>,
    /// Entries `next` handed to this client.
    called: Vec<String>,
    /// Positions this client read, per entry, in the order it read them.
    positions: BTreeMap<String, Vec<u64>>,
    /// Answers outside the documented ones: (request, status, body).
    unexpected: Vec<(String, u16, String)>,
    /// Requests sent.
    requests: u64,
}

fn entry_id_in(detail: &str) -> Option<String> {
    detail
        .rsplit_once("/queues/advising/entries/")
        .map(|(_, id)| id.to_owned())
}

async fn client(servers: Arc<Vec<Server>>, home: usize, seed: u64, until: Instant) -> Log {
    let server = &servers[home];
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut log = Log::default();
    let mut mine: Vec<String> = Vec::new();
    let mut serving: Vec<String> = Vec::new();
    while Instant::now() < until {
        log.requests += 1;
        let action = rng.below(10);
        let (what, reply) = match action {
            0..=3 => {
                let member = 1 + rng.below(STUDENTS as u64) as i64;
                let sent = Instant::now();
                let reply = server
                    .post(
                        "/queues/advising/entries",
                        json!({"member_id": member, "topic": "t"}),
                    )
                    .await;
                match reply.status {
                    201 => {
                        let id = reply.json()["id"].as_str().unwrap().to_owned();
                        log.join_windows
                            .push((id.clone(), member, sent, Instant::now()));
                        log.joined.insert(id.clone(), member);
                        mine.push(id);
                        continue;
                    }
                    409 if reply.json()["code"] == "already_in_queue" => {
                        let detail = reply.json()["detail"].as_str().unwrap_or("").to_owned();
                        log.refused.push((member, entry_id_in(&detail)));
                        continue;
                    }
                    _ => ("join".to_owned(), reply),
                }
            }
            4 | 5 if !mine.is_empty() => {
                let id = mine[rng.below(mine.len() as u64) as usize].clone();
                let reply = server.get(&format!("/queues/advising/entries/{id}")).await;
                if reply.status == 200 {
                    let entry = reply.json();
                    if let Some(p) = entry["position"].as_u64() {
                        log.positions.entry(id).or_default().push(p);
                    }
                    continue;
                }
                ("poll".to_owned(), reply)
            }
            6 if !mine.is_empty() => {
                let id = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                log.end_requests.push((id.clone(), Instant::now()));
                let reply = server
                    .delete(&format!("/queues/advising/entries/{id}"))
                    .await;
                if reply.status == 200
                    || (reply.status == 409 && reply.json()["code"] == "invalid_transition")
                {
                    continue;
                }
                ("leave".to_owned(), reply)
            }
            9 if !serving.is_empty() => {
                let id = serving.swap_remove(rng.below(serving.len() as u64) as usize);
                log.end_requests.push((id.clone(), Instant::now()));
                let reply = server
                    .post(&format!("/queues/advising/entries/{id}/done"), json!({}))
                    .await;
                if reply.status == 200 {
                    continue;
                }
                ("done".to_owned(), reply)
            }
            _ => {
                let major = 1 + rng.below(MAJORS as u64);
                let reply = server
                    .post(
                        &format!("/queues/advising/next?major_id={major}"),
                        json!({}),
                    )
                    .await;
                match reply.status {
                    200 => {
                        let id = reply.json()["id"].as_str().unwrap().to_owned();
                        log.called.push(id.clone());
                        serving.push(id);
                        continue;
                    }
                    204 => continue,
                    _ => ("next".to_owned(), reply),
                }
            }
        };
        log.unexpected.push((
            what,
            reply.status,
            String::from_utf8_lossy(&reply.bytes).into_owned(),
        ));
    }
    log
}

#[tokio::test]
async fn four_instances_and_thirty_two_clients_never_serve_twice_skip_or_duplicate() {
    let (dir, _) = schema_dir(SCHEMA);
    let dir = Arc::new(dir);
    let db = Arc::new(TestDatabase::create(dir.path()).await);
    let mut servers = Vec::new();
    for _ in 0..INSTANCES {
        match Server::spawn_with(dir.clone(), db.url.clone(), &[], Some(db.clone())).await {
            Started::Up(s) => servers.push(s),
            Started::Exited(code, log) => panic!("instance exited with {code}:\n{log}"),
        }
    }
    for i in 1..=STUDENTS {
        servers[0]
            .post(
                "/students",
                json!({"email": format!("s{i}@uni.test"), "major_id": 1 + i % MAJORS}),
            )
            .await
            .expect(201);
    }
    let servers = Arc::new(servers);
    let until = Instant::now() + RUN_FOR;
    let mut tasks = Vec::new();
    for c in 0..INSTANCES * CLIENTS_PER_INSTANCE {
        tasks.push(tokio::spawn(client(
            servers.clone(),
            c % INSTANCES,
            c as u64 + 1,
            until,
        )));
    }
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.unwrap());
    }
    let server = &servers[0];

    let unexpected: Vec<_> = logs.iter().flat_map(|l| l.unexpected.iter()).collect();
    if !unexpected.is_empty() {
        for s in servers.iter() {
            for line in s
                .log_text()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(5)
            {
                eprintln!("{line}");
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "undocumented answers: {unexpected:?}"
    );

    // No entry served twice.
    let called: Vec<&String> = logs.iter().flat_map(|l| l.called.iter()).collect();
    let distinct: BTreeSet<&String> = called.iter().copied().collect();
    assert_eq!(called.len(), distinct.len(), "an entry was called twice");

    // Every acknowledged join is there, and nothing else is.
    let joined: BTreeMap<&String, i64> = logs
        .iter()
        .flat_map(|l| l.joined.iter().map(|(id, m)| (id, *m)))
        .collect();
    assert_eq!(
        server.count_in_database("advising").await,
        joined.len() as i64
    );
    for (id, member) in &joined {
        let entry = server
            .get(&format!("/queues/advising/entries/{id}"))
            .await
            .expect(200);
        assert_eq!(entry["member_id"], *member, "{entry}");
    }

    // A join refused as already active named an entry of that member.
    let named: Vec<(i64, &String)> = logs
        .iter()
        .flat_map(|l| l.refused.iter())
        .filter_map(|(m, id)| id.as_ref().map(|id| (*m, id)))
        .collect();
    for (member, id) in &named {
        let entry = server
            .get(&format!("/queues/advising/entries/{id}"))
            .await
            .expect(200);
        assert_eq!(entry["member_id"], *member, "{entry}");
    }

    // A join while the member was known to be active was never a 201: no
    // acknowledged join was sent after another entry of its member was
    // acknowledged and answered before anything that could end that entry
    // (a leave or a done) was sent.
    let mut ended: BTreeMap<&String, Instant> = BTreeMap::new();
    for (id, at) in logs.iter().flat_map(|l| l.end_requests.iter()) {
        let first = ended.entry(id).or_insert(*at);
        *first = (*first).min(*at);
    }
    let windows: Vec<&(String, i64, Instant, Instant)> =
        logs.iter().flat_map(|l| l.join_windows.iter()).collect();
    for a in &windows {
        let active_until = ended.get(&a.0).copied();
        for b in windows.iter().filter(|b| b.1 == a.1 && b.0 != a.0) {
            let inside = b.2 > a.3 && active_until.is_none_or(|end| b.3 < end);
            assert!(
                !inside,
                "member {} joined again ({}) while {} was active",
                a.1, b.0, a.0
            );
        }
    }

    // Positions a client read never went up.
    for log in &logs {
        for (id, seen) in &log.positions {
            assert!(
                seen.windows(2).all(|w| w[1] <= w[0]),
                "positions of {id} went up: {seen:?}"
            );
        }
    }

    // The database agrees: no skipped entry, unique tickets, one active
    // entry per member, counters equal to the entries.
    let zero = [
        (
            "waiting entries behind a called entry of their line",
            "SELECT COUNT(*) FROM advising w WHERE w.status = 'waiting' AND EXISTS \
             (SELECT 1 FROM advising s WHERE s.partition_key = w.partition_key \
              AND s.called_at IS NOT NULL AND s.ticket > w.ticket)",
        ),
        (
            "tickets issued twice in one line",
            "SELECT COUNT(*) FROM (SELECT partition_key, ticket FROM advising \
             GROUP BY partition_key, ticket HAVING COUNT(*) > 1) d",
        ),
        (
            "members with two active entries",
            "SELECT COUNT(*) FROM (SELECT member_id FROM advising WHERE status IN \
             ('waiting', 'serving') GROUP BY member_id HAVING COUNT(*) > 1) d",
        ),
        (
            "lines whose waiting counter is wrong",
            "SELECT COUNT(*) FROM advising_partitions p WHERE p.waiting <> \
             (SELECT COUNT(*) FROM advising e WHERE e.partition_key = p.partition_key \
              AND e.status = 'waiting')",
        ),
        (
            "lines whose last ticket is not their entry count",
            "SELECT COUNT(*) FROM advising_partitions p WHERE p.last_ticket <> \
             (SELECT COUNT(*) FROM advising e WHERE e.partition_key = p.partition_key)",
        ),
    ];
    for (what, sql) in zero {
        assert_eq!(server.query_i64(sql).await, 0, "{what}");
    }
    let requests: u64 = logs.iter().map(|l| l.requests).sum();
    let refused: usize = logs.iter().map(|l| l.refused.len()).sum();
    eprintln!(
        "{requests} requests in {RUN_FOR:?}: {} joins, {refused} refused as active \
         ({} naming the entry), {} called",
        joined.len(),
        named.len(),
        called.len()
    );
    assert!(joined.len() > 20 && called.len() > 10 && refused > 0);
}
