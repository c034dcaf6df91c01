//! The floor: `GET /students/{id}` and `GET /students?major_id=&is_undergraduate=&limit=`
//! answered from Anteroom's SQLite file with the JSON Anteroom sends, by axum and
//! rusqlite with nothing between them: one read-only connection per worker thread,
//! cached prepared statements, rows written straight to JSON.
//!
//! Usage: anteroom-bench-floor DB_PATH PORT

use std::cell::RefCell;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value};

thread_local! {
    static DB: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

const COLUMNS: &str =
    "id, name, email, is_undergraduate, major_id, created_at, updated_at, created_by, updated_by";

fn with_db<T>(f: impl FnOnce(&Connection) -> T) -> T {
    DB.with(|cell| {
        let mut slot = cell.borrow_mut();
        let conn = slot.get_or_insert_with(|| {
            let c = Connection::open_with_flags(
                PATH.get().expect("path"),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .expect("open");
            c.set_prepared_statement_cache_capacity(16);
            c
        });
        f(conn)
    })
}

fn row_json(row: &rusqlite::Row<'_>) -> rusqlite::Result<Map<String, Value>> {
    let mut out = Map::new();
    for (i, name) in COLUMNS.split(", ").enumerate() {
        let value = match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) if name == "is_undergraduate" => Value::Bool(n != 0),
            ValueRef::Integer(n) => Value::from(n),
            ValueRef::Real(f) => Value::from(f),
            ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(_) => Value::Null,
        };
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn by_id(Path(id): Path<i64>) -> Response {
    let row = with_db(|db| {
        let mut stmt = db
            .prepare_cached(&format!("SELECT {COLUMNS} FROM students WHERE id = ?1"))
            .expect("prepare");
        let mut rows = stmt.query([id]).expect("query");
        rows.next().expect("step").map(|r| row_json(r).expect("row"))
    });
    match row {
        Some(row) => json(StatusCode::OK, serde_json::to_vec(&row).unwrap()),
        None => json(StatusCode::NOT_FOUND, br#"{"code":"not_found"}"#.to_vec()),
    }
}

async fn list(Query(q): Query<std::collections::HashMap<String, String>>) -> Response {
    let major: i64 = q.get("major_id").and_then(|v| v.parse().ok()).unwrap_or(0);
    let undergraduate = q.get("is_undergraduate").map(|v| v == "true").unwrap_or(true);
    let limit: i64 = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(50);
    let items = with_db(|db| {
        let mut stmt = db
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM students WHERE major_id = ?1 AND is_undergraduate = ?2 ORDER BY id LIMIT ?3"
            ))
            .expect("prepare");
        let rows = stmt
            .query_map((major, undergraduate, limit + 1), row_json)
            .expect("query");
        rows.collect::<rusqlite::Result<Vec<_>>>().expect("rows")
    });
    let mut items = items;
    let next = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        format!("id:{}", items.last().and_then(|r| r["id"].as_i64()).unwrap_or(0))
    });
    let body = serde_json::json!({"items": items, "next_cursor": next});
    json(StatusCode::OK, serde_json::to_vec(&body).unwrap())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: anteroom-bench-floor DB_PATH PORT");
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("PORT");
    PATH.set(path).expect("once");
    let app = Router::new()
        .route("/students/{id}", get(by_id))
        .route("/students", get(list));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
