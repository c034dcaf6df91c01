//! JWKS from a URL: fetched on first use, rotated keys picked up through an
//! unknown `kid`, garbage `kid`s unable to make the server hammer the
//! identity provider, and an unreachable provider answered with 503 rather
//! than a misleading 401. The identity provider is a tiny HTTP server in the
//! test on 127.0.0.1 whose key set the test swaps.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Server, fixture};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-route HTTP server answering every request with the current JWKS.
struct Provider {
    url: String,
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(jwks: Value) -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let jwks = Arc::new(Mutex::new(jwks));
        let hits = Arc::new(AtomicUsize::new(0));
        let (serve, count) = (jwks.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (serve, count) = (serve.clone(), count.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = serve.lock().unwrap().to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Provider { url, jwks, hits }
    }
}

fn jwks(kids: &[&str]) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).unwrap()).unwrap();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    json!({ "keys": keys })
}

fn token(kid: &str, private_pem: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let claims = json!({"sub": format!("user-{kid}"), "exp": chrono_now() + 600});
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture(private_pem)).unwrap()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn schema(url: &str) -> String {
    format!(
        r#"
[app]
name = "jwks"

[auth]
jwt = {{ algorithms = ["RS256"], jwks_url = "{url}" }}

[resources.notes]
fields.text = {{ type = "string", required = true }}
rules = {{ list = "authenticated", read = "authenticated", create = "authenticated", update = "owner", delete = "owner" }}
"#
    )
}

async fn list(server: &Server, token: &str) -> u16 {
    server
        .send(
            "GET",
            "/notes",
            None,
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
        .status
}

#[tokio::test]
async fn keys_are_fetched_on_first_use_and_a_rotated_kid_triggers_one_refresh() {
    let provider = Provider::start(jwks(&["k1"])).await;
    let server = Server::start(&schema(&provider.url)).await;
    assert_eq!(list(&server, &token("k1", "rsa_private.pem")).await, 200);
    assert_eq!(list(&server, &token("k1", "rsa_private.pem")).await, 200);
    assert_eq!(
        provider.hits.load(Ordering::SeqCst),
        1,
        "one fetch serves many tokens"
    );

    // The provider rotates to k2. Refreshes for unknown kids are at most one per
    // 5 s, so a rotation right after a fetch is picked up once that has passed.
    *provider.jwks.lock().unwrap() = jwks(&["k2"]);
    tokio::time::sleep(std::time::Duration::from_millis(5200)).await;
    assert_eq!(list(&server, &token("k2", "rsa2_private.pem")).await, 200);
    assert_eq!(provider.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unknown_kids_cannot_make_the_server_hammer_the_provider() {
    let provider = Provider::start(jwks(&["k1"])).await;
    let server = Server::start(&schema(&provider.url)).await;
    assert_eq!(list(&server, &token("k1", "rsa_private.pem")).await, 200);
    for i in 0..25 {
        let forged = token(&format!("nope-{i}"), "rsa_private.pem");
        let reply = server
            .send(
                "GET",
                "/notes",
                None,
                &[("authorization", &format!("Bearer {forged}"))],
            )
            .await;
        reply.expect_problem(401, "unauthorized");
    }
    let hits = provider.hits.load(Ordering::SeqCst);
    assert!(hits <= 2, "25 unknown kids caused {hits} fetches");
    assert_eq!(server.count_in_database("notes").await, 0);
}

#[tokio::test]
async fn an_unreachable_provider_is_a_503_not_a_401() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = Server::start(&schema(&format!("http://127.0.0.1:{port}/jwks.json"))).await;
    let reply = server
        .send(
            "GET",
            "/notes",
            None,
            &[(
                "authorization",
                &format!("Bearer {}", token("k1", "rsa_private.pem")),
            )],
        )
        .await;
    reply.expect_problem(503, "keys_unavailable");
    assert!(reply.header("retry-after").is_some());
}
