//! HTTP responses → Lambda replies, in the format of the event's shape:
//! `multiValueHeaders` for payload 1.0, `headers` (repeated values joined
//! with commas) and `cookies` for 2.0, and an ALB's own form with its
//! `statusDescription`. Bodies are binary-safe: text only when the
//! `Content-Type` says text and the bytes are UTF-8, base64 otherwise.

use axum::body::Body;
use base64::Engine;
use http::{HeaderMap, Response, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value as Json, json};

use super::event::Shape;

/// Whether a body of this media type is text API Gateway may pass as is.
fn is_text(headers: &HeaderMap) -> bool {
    let Some(media) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    else {
        return false;
    };
    media.starts_with("text/")
        || media.ends_with("/json")
        || media.ends_with("+json")
        || media.ends_with("/xml")
        || media.ends_with("+xml")
        || media == "application/javascript"
        || media == "application/x-www-form-urlencoded"
}

/// The reply to `response` in `shape`'s format.
pub(crate) async fn render(shape: Shape, response: Response<Body>) -> Json {
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::error!(error = %e, "a response body could not be read");
            bytes::Bytes::new()
        }
    };
    let (body, base64) = match std::str::from_utf8(&bytes) {
        Ok(text) if bytes.is_empty() || is_text(&parts.headers) => (text.to_owned(), false),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(&bytes),
            true,
        ),
    };
    let status = parts.status.as_u16();
    let values = |name: &header::HeaderName| -> Vec<Json> {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Json::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect()
    };
    let multi = || -> Map<String, Json> {
        parts
            .headers
            .keys()
            .map(|name| (name.as_str().to_owned(), Json::Array(values(name))))
            .collect()
    };
    // One value per name: repeated values joined as HTTP allows, except
    // Set-Cookie (which 2.0 carries in `cookies`).
    let single = |skip_cookies: bool| -> Map<String, Json> {
        parts
            .headers
            .keys()
            .filter(|name| !(skip_cookies && *name == header::SET_COOKIE))
            .map(|name| {
                let joined: Vec<String> = values(name)
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                (name.as_str().to_owned(), Json::String(joined.join(", ")))
            })
            .collect()
    };
    match shape {
        Shape::V1 => json!({
            "statusCode": status,
            "multiValueHeaders": multi(),
            "body": body,
            "isBase64Encoded": base64,
        }),
        Shape::V2 => json!({
            "statusCode": status,
            "headers": single(true),
            "cookies": values(&header::SET_COOKIE),
            "body": body,
            "isBase64Encoded": base64,
        }),
        Shape::Alb { multi_value } => {
            let description = format!(
                "{status} {}",
                parts.status.canonical_reason().unwrap_or("Unknown")
            );
            let mut reply = json!({
                "statusCode": status,
                "statusDescription": description,
                "body": body,
                "isBase64Encoded": base64,
            });
            let (key, headers) = if multi_value {
                ("multiValueHeaders", multi())
            } else {
                ("headers", single(false))
            };
            reply[key] = Json::Object(headers);
            reply
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reply(content_type: Option<&str>, body: &'static [u8]) -> Json {
        let mut builder = Response::builder().status(200);
        if let Some(t) = content_type {
            builder = builder.header(header::CONTENT_TYPE, t);
        }
        render(Shape::V2, builder.body(Body::from(body)).unwrap()).await
    }

    #[tokio::test]
    async fn bytes_that_are_not_declared_text_travel_as_base64_and_text_as_is() {
        let png = reply(Some("image/png"), b"\x89PNG\r\n\x1a\n\0").await;
        assert_eq!(png["isBase64Encoded"], true);
        assert_eq!(png["body"], "iVBORw0KGgoA");
        // No Content-Type: nothing says the bytes are text.
        assert_eq!(reply(None, b"abc").await["isBase64Encoded"], true);
        let problem = reply(Some("application/problem+json"), b"{\"a\":1}").await;
        assert_eq!(problem["isBase64Encoded"], false);
        assert_eq!(problem["body"], "{\"a\":1}");
        let html = reply(Some("text/html; charset=utf-8"), b"<p>\xc3\xa9</p>").await;
        assert_eq!(html["body"], "<p>é</p>");
        // Declared text that is not UTF-8 still arrives intact.
        assert_eq!(
            reply(Some("text/plain"), b"\xff").await["isBase64Encoded"],
            true
        );
    }

    #[tokio::test]
    async fn repeated_headers_keep_every_value_in_every_shape() {
        let response = || {
            Response::builder()
                .header(header::VARY, "origin")
                .header(header::VARY, "accept")
                .header(header::SET_COOKIE, "a=1")
                .header(header::SET_COOKIE, "b=2")
                .body(Body::empty())
                .unwrap()
        };
        let v1 = render(Shape::V1, response()).await;
        assert_eq!(v1["multiValueHeaders"]["vary"], json!(["origin", "accept"]));
        let v2 = render(Shape::V2, response()).await;
        assert_eq!(v2["headers"]["vary"], "origin, accept");
        assert_eq!(v2["cookies"], json!(["a=1", "b=2"]));
        assert!(v2["headers"].get("set-cookie").is_none());
        let alb = render(Shape::Alb { multi_value: false }, response()).await;
        assert_eq!(alb["statusDescription"], "200 OK");
        assert_eq!(alb["headers"]["vary"], "origin, accept");
    }
}
