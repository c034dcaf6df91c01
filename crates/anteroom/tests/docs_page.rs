//! End-to-end tests of `GET /docs`, the API reference page, over HTTP: the
//! page (HTML, Content-Security-Policy, revalidation), its embedded assets
//! (content types, strong ETags, 304, immutable caching), HEAD, 404 for
//! unknown assets, 405 for other methods, query strings ignored, the `/docs/`
//! redirect, and that the page is public under `[auth]`. What the page does
//! in a browser is `tests/browser/docs-page.mjs`.

mod common;

use common::{Reply, Server};

const SCHEMA: &str = r#"[app]
name = "docs-test"

[resources.notes]
fields.title = { type = "string", required = true }
"#;

/// The asset URLs the page links to (`/docs/{build}-{name}`), in page order.
fn linked_assets(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|part| part.starts_with("docs/"))
        .map(|part| format!("/{part}"))
        .collect()
}

/// The page, checked to be a 200 HTML answer; returns it with its asset URLs.
async fn page(server: &Server) -> (Reply, Vec<String>) {
    let reply = server.get("/docs").await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.bytes)
    );
    let html = String::from_utf8(reply.bytes.clone()).expect("UTF-8 page");
    let assets = linked_assets(&html);
    (reply, assets)
}

fn asset<'a>(assets: &'a [String], name: &str) -> &'a str {
    assets
        .iter()
        .find(|a| a.ends_with(&format!("-{name}")))
        .unwrap_or_else(|| panic!("the page does not link {name}: {assets:?}"))
}

/// `/docs/{build}-`: the prefix of this build's asset URLs.
fn prefix(assets: &[String]) -> &str {
    let bundle = asset(assets, "swagger-ui-bundle.js");
    &bundle[..=bundle.find('-').unwrap()]
}

fn strong_etag(reply: &Reply) -> String {
    let etag = reply.header("etag").expect("an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong ETag: {etag}"
    );
    etag
}

#[tokio::test]
async fn the_page_is_html_under_a_same_origin_only_policy() {
    let server = Server::start(SCHEMA).await;
    let (reply, assets) = page(&server).await;
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        reply.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-cache"));
    strong_etag(&reply);
    let csp = reply.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    // Nothing but the origin itself (and data: images) anywhere in the policy.
    for word in csp.split([' ', ';']).filter(|w| !w.is_empty()) {
        assert!(
            word.ends_with("-src")
                || word.ends_with("-uri")
                || word.ends_with("-ancestors")
                || word == "form-action"
                || ["'self'", "'none'", "data:"].contains(&word),
            "{word} in {csp}"
        );
    }
    // Scripts and styles are files of this server: nothing inline.
    let html = String::from_utf8_lossy(&reply.bytes);
    assert!(
        !html.contains("<script>") && !html.contains("<style"),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let names: Vec<&str> = assets
        .iter()
        .map(|a| a.split_once('-').unwrap().1)
        .collect();
    assert_eq!(
        names,
        [
            "swagger-ui.css",
            "docs-page.css",
            "favicon-32x32.png",
            "swagger-ui-bundle.js",
            "docs-page.js"
        ]
    );
}

#[tokio::test]
async fn the_page_boots_swagger_ui_on_the_servers_own_document() {
    let server = Server::start(SCHEMA).await;
    let (_, assets) = page(&server).await;
    let boot = server.get(asset(&assets, "docs-page.js")).await;
    assert_eq!(boot.status, 200);
    let js = String::from_utf8_lossy(&boot.bytes);
    for setting in [
        r#"url: "./openapi.json""#,
        "tryItOutEnabled: true",
        "persistAuthorization: true",
        "validatorUrl: null",
        "queryConfigEnabled: false",
    ] {
        assert!(js.contains(setting), "{setting} in {js}");
    }
}

#[tokio::test]
async fn assets_are_immutable_with_strong_etags_and_answer_304() {
    let server = Server::start(SCHEMA).await;
    let (_, assets) = page(&server).await;
    let expected = [
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("docs-page.css", "text/css; charset=utf-8"),
        ("favicon-32x32.png", "image/png"),
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("docs-page.js", "text/javascript; charset=utf-8"),
    ];
    let mut etags = Vec::new();
    for (name, content_type) in expected {
        let path = asset(&assets, name);
        let reply = server.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type").as_deref(), Some(content_type));
        assert_eq!(
            reply.header("cache-control").as_deref(),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(
            reply.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            reply.header("content-length"),
            Some(reply.bytes.len().to_string())
        );
        assert!(!reply.bytes.is_empty(), "{path}");
        let etag = strong_etag(&reply);

        let again = server
            .send("GET", path, None, &[("if-none-match", &etag)])
            .await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.bytes.is_empty());
        assert_eq!(again.header("etag"), Some(etag.clone()));
        assert_eq!(
            again.header("cache-control").as_deref(),
            Some("public, max-age=31536000, immutable")
        );
        // If-None-Match compares weakly; a list matches when one tag does.
        let weak = format!("W/{etag}");
        let listed = format!("\"other\", {weak}");
        let again = server
            .send("GET", path, None, &[("if-none-match", &listed)])
            .await;
        assert_eq!(again.status, 304, "{path} with {listed}");
        let stale = server
            .send("GET", path, None, &[("if-none-match", "\"stale\"")])
            .await;
        assert_eq!(stale.status, 200, "{path}");
        etags.push(etag);
    }
    let mut distinct = etags.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), etags.len(), "one ETag per asset: {etags:?}");

    // The vendored UI's licence and notices are served beside it.
    let prefix = prefix(&assets);
    for (name, needle) in [
        ("LICENSE", "Apache License"),
        ("NOTICE", "SmartBear"),
        ("swagger-ui-bundle.js.LICENSE.txt", "@license"),
    ] {
        let reply = server.get(&format!("{prefix}{name}")).await;
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert!(
            String::from_utf8_lossy(&reply.bytes).contains(needle),
            "{needle} in {name}"
        );
    }
}

#[tokio::test]
async fn the_page_answers_304_to_its_etag() {
    let server = Server::start(SCHEMA).await;
    let (reply, _) = page(&server).await;
    let etag = strong_etag(&reply);
    let again = server
        .send("GET", "/docs", None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, 304);
    assert!(again.bytes.is_empty());
    assert_eq!(again.header("etag"), Some(etag));
    assert_eq!(again.header("cache-control").as_deref(), Some("no-cache"));
    let any = server
        .send("GET", "/docs", None, &[("if-none-match", "*")])
        .await;
    assert_eq!(any.status, 304);
}

#[tokio::test]
async fn head_has_the_get_headers_and_no_body() {
    let server = Server::start(SCHEMA).await;
    let (get, assets) = page(&server).await;
    for (path, get) in [
        ("/docs".to_owned(), get),
        (
            asset(&assets, "swagger-ui-bundle.js").to_owned(),
            server.get(asset(&assets, "swagger-ui-bundle.js")).await,
        ),
    ] {
        let head = server.send("HEAD", &path, None, &[]).await;
        assert_eq!(head.status, 200, "{path}");
        assert!(head.bytes.is_empty(), "{path}");
        for name in [
            "content-type",
            "content-length",
            "etag",
            "cache-control",
            "content-security-policy",
        ] {
            assert_eq!(head.header(name), get.header(name), "{name} of {path}");
        }
        assert_eq!(
            head.header("content-length"),
            Some(get.bytes.len().to_string())
        );
        let etag = head.header("etag").unwrap();
        let not_modified = server
            .send("HEAD", &path, None, &[("if-none-match", &etag)])
            .await;
        assert_eq!(not_modified.status, 304, "{path}");
    }
}

#[tokio::test]
async fn unknown_assets_are_404_problems() {
    let server = Server::start(SCHEMA).await;
    let (_, assets) = page(&server).await;
    let prefix = prefix(&assets);
    let build = &prefix["/docs/".len()..prefix.len() - 1];
    for path in [
        format!("{prefix}nothing.js"),
        prefix.to_owned(),
        format!("{prefix}swagger-ui-bundle.js.map"),
        format!("{prefix}Cargo.toml"),
        // A page of another build links assets of that build.
        "/docs/0123456789abcdef-swagger-ui-bundle.js".to_owned(),
        "/docs/swagger-ui-bundle.js".to_owned(),
        format!("/docs/{build}/swagger-ui-bundle.js"),
        "/docs/index.html".to_owned(),
    ] {
        let reply = server.get(&path).await;
        reply.expect_problem(404, "not_found");
    }
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let server = Server::start(SCHEMA).await;
    let (_, assets) = page(&server).await;
    for path in ["/docs", asset(&assets, "docs-page.js")] {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let reply = server.send(method, path, None, &[]).await;
            reply.expect_problem(405, "method_not_allowed");
            assert_eq!(
                reply.header("allow").as_deref(),
                Some("GET, HEAD"),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn query_strings_are_ignored() {
    let server = Server::start(SCHEMA).await;
    let (page_reply, assets) = page(&server).await;
    // Swagger UI's own ?url= is off: the page always shows this server's document.
    let with_query = server
        .get("/docs?url=https://example.com/openapi.json")
        .await;
    assert_eq!(with_query.status, 200);
    assert_eq!(with_query.bytes, page_reply.bytes);
    let path = asset(&assets, "docs-page.js");
    let plain = server.get(path).await;
    let with_query = server.get(&format!("{path}?v=1")).await;
    assert_eq!(with_query.status, 200);
    assert_eq!(with_query.bytes, plain.bytes);
}

#[tokio::test]
async fn a_trailing_slash_redirects_to_the_page() {
    let server = Server::start(SCHEMA).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let reply = client
            .request(method.clone(), format!("{}/docs/", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 308, "{method}");
        assert_eq!(reply.headers()["location"], "../docs", "{method}");
    }
    // Followed, it lands on the page.
    let (reply, _) = page(&server).await;
    assert_eq!(server.get("/docs/").await.bytes, reply.bytes);
}

#[tokio::test]
async fn the_page_is_public_when_every_resource_needs_credentials() {
    let schema = r#"[app]
name = "docs-auth"

[auth]
jwt = { algorithms = ["HS256"], secret_env = "DOCS_JWT_SECRET" }

[resources.notes]
fields.title = { type = "string", required = true }
rules = { list = "authenticated", read = "authenticated" }
"#;
    let server = Server::start_with_env(
        schema,
        &[],
        &[("DOCS_JWT_SECRET", "a-secret-of-at-least-32-bytes-long!!")],
    )
    .await;
    server
        .get("/notes")
        .await
        .expect_problem(401, "unauthorized");
    let (_, assets) = page(&server).await;
    for path in &assets {
        assert_eq!(server.get(path).await.status, 200, "{path}");
    }
}
