//! Seed data: a JSON file of `{ "resource": [rows…] }` loaded through the same
//! pipeline as HTTP requests (so it is validated the same way). A row may name
//! itself with `"@": "alias"`, and a ref field may point at it with `"@alias"`,
//! so seed files need not know generated ids. Resources that already hold rows
//! are skipped, so seeding twice is harmless.
//!
//! Seed data is the operator's: rows are written past access rules and
//! `writable` (a seed may give an account `"role": "admin"`), but every value
//! is validated as a `POST` body's. A row of the accounts resource may carry
//! `"password"`, checked like a signup's and stored as its argon2id hash.

use std::collections::HashMap;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value as Json};

use crate::request::RawRequest;
use crate::schema::FieldType;
use crate::{AppState, pipeline};

/// What a seed run did, per resource.
#[derive(Debug, Default)]
pub struct SeedReport {
    /// (resource, rows inserted).
    pub inserted: Vec<(String, usize)>,
    /// Resources skipped because they already held rows.
    pub skipped: Vec<String>,
}

async fn call(
    state: &AppState,
    method: Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<(StatusCode, Json), String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let raw = RawRequest {
        method: &method,
        path,
        query,
        headers: &headers,
        body,
    };
    // Seed data is the operator's: it is written by the engine itself, past access rules.
    let routed = crate::routes::segments(path)
        .and_then(|segments| state.routes.find(&state.model, &method, &segments));
    let result = match routed {
        Ok(matched) => {
            pipeline::run_as(state, &matched, &raw, crate::plan::PlanContext::system()).await
        }
        Err(e) => Err(e),
    };
    let response = result.unwrap_or_else(axum::response::IntoResponse::into_response);
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    let json = if bytes.is_empty() {
        Json::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?
    };
    Ok((status, json))
}

/// The hash to store for `key` of a row of `resource`, when it is an
/// account's `password`; an account's `password_hash` is refused (a hash
/// from elsewhere would bypass the password rules).
async fn account_password(
    state: &AppState,
    resource: &str,
    key: &str,
    value: &Json,
) -> Result<Option<String>, String> {
    if crate::auth::accounts::resource_name(state) != Some(resource) {
        return Ok(None);
    }
    match (key, value) {
        ("password", Json::String(password)) => {
            crate::auth::accounts::operator_password_hash(state, password)
                .await
                .map(Some)
        }
        ("password", _) => Err("must be a string".to_owned()),
        ("password_hash", _) => {
            Err("give \"password\" instead: the seeder hashes it as signup does".to_owned())
        }
        _ => Ok(None),
    }
}

/// Creates one account as the operator (`anteroom accounts create`): `fields`
/// are validated as a `POST` body's, past `writable` (so `role` may be set),
/// and `password` is checked like a signup's. Returns the stored row.
pub async fn create_account(
    state: &AppState,
    mut fields: Map<String, Json>,
    password: &str,
) -> Result<Json, String> {
    let name = crate::auth::accounts::resource_name(state)
        .ok_or("this schema has no [auth.accounts]: add it to create accounts")?
        .to_owned();
    let hash = crate::auth::accounts::operator_password_hash(state, password).await?;
    fields.insert("password_hash".to_owned(), Json::String(hash));
    let body = Json::Object(fields).to_string();
    let (status, created) = call(
        state,
        Method::POST,
        &format!("/{name}"),
        None,
        body.as_bytes(),
    )
    .await?;
    if status != StatusCode::CREATED {
        return Err(problem_text(&created));
    }
    Ok(created)
}

/// A problem document in one line: its detail and each field's message.
fn problem_text(problem: &Json) -> String {
    let mut text = problem["detail"]
        .as_str()
        .unwrap_or("the row was refused")
        .to_owned();
    for error in problem["errors"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "; {} {}",
            error["field"].as_str().unwrap_or(""),
            error["message"].as_str().unwrap_or("")
        ));
    }
    text
}

/// Loads seed data.
pub async fn load(state: &AppState, data: &Json) -> Result<SeedReport, String> {
    let Json::Object(resources) = data else {
        return Err("a seed file is a JSON object of resource name → array of rows".into());
    };
    let mut aliases: HashMap<String, Json> = HashMap::new();
    let mut report = SeedReport::default();
    for (name, rows) in resources {
        let resource = state
            .model
            .resource(name)
            .ok_or_else(|| format!("seed names an unknown resource \"{name}\""))?;
        let Json::Array(rows) = rows else {
            return Err(format!("seed for \"{name}\" must be an array"));
        };
        let (status, existing) = call(
            state,
            Method::GET,
            &format!("/{name}"),
            Some("limit=1"),
            b"",
        )
        .await?;
        if status != StatusCode::OK {
            return Err(format!("could not read {name}: {existing}"));
        }
        if existing["items"].as_array().is_some_and(|a| !a.is_empty()) {
            report.skipped.push(name.clone());
            continue;
        }
        let mut names = Vec::new();
        let mut bodies = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let Json::Object(row) = row else {
                return Err(format!("{name}[{i}] must be an object"));
            };
            let mut body = Map::new();
            let mut alias = None;
            for (key, value) in row {
                if key == "@" {
                    alias = value.as_str().map(str::to_owned);
                    continue;
                }
                if let Some(hash) = account_password(state, name, key, value)
                    .await
                    .map_err(|e| format!("{name}[{i}].{key}: {e}"))?
                {
                    body.insert("password_hash".to_owned(), Json::String(hash));
                    continue;
                }
                let is_ref = resource
                    .column(key)
                    .is_some_and(|c| matches!(c.ty, FieldType::Ref(_)));
                let resolved = match value.as_str().and_then(|s| s.strip_prefix('@')) {
                    Some(a) if is_ref => aliases.get(a).cloned().ok_or_else(|| {
                        format!(
                            "{name}[{i}].{key}: unknown alias @{a} (define it earlier in the file)"
                        )
                    })?,
                    _ => value.clone(),
                };
                body.insert(key.clone(), resolved);
            }
            names.push(alias);
            bodies.push(Json::Object(body));
        }
        let mut inserted = 0;
        for (chunk_names, chunk) in names.chunks(500).zip(bodies.chunks(500)) {
            let bytes = Json::Array(chunk.to_vec()).to_string();
            let (status, created) = call(
                state,
                Method::POST,
                &format!("/{name}"),
                None,
                bytes.as_bytes(),
            )
            .await?;
            if status != StatusCode::CREATED {
                return Err(format!("seeding {name} failed ({status}): {created}"));
            }
            let created = created.as_array().cloned().unwrap_or_default();
            for (alias, row) in chunk_names.iter().zip(&created) {
                if let Some(alias) = alias {
                    aliases.insert(alias.clone(), row[&resource.id_column().name].clone());
                }
            }
            inserted += created.len();
        }
        report.inserted.push((name.clone(), inserted));
    }
    Ok(report)
}
