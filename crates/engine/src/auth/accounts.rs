//! Built-in accounts (opt-in with `[auth.accounts]`): `POST /auth/signup`,
//! `POST /auth/login` (JSON) or `GET /auth/login` (HTTP Basic), and
//! `GET /auth/me`. Passwords are hashed with argon2id (off the async
//! threads); hashes live in a hidden, non-writable field and are never
//! rendered or logged. Login failures are answered identically, and an
//! unknown user costs the same argon2 verification as a wrong password.
//! Tokens are HS256 JWTs with `kid = "anteroom-accounts"`, so they are told
//! apart from tokens of an external issuer.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, Method, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value as Json, json};

use super::{Identity, Secret};
use crate::AppState;
use crate::error::{ApiError, Code};
use crate::plan::{
    Compare, Condition, Expect, InsertPlan, ListPlan, PlanContext, ReadPlan, UpdatePlan,
};
use crate::request::Record;
use crate::schema::{AccountsSettings, AppModel, Resource};
use crate::storage::{Storage, StoredRow, UpdateOutcome};
use crate::value::{self, FieldCode, FieldError, Value};

/// The `kid` of tokens this engine issues.
pub const ACCOUNTS_KID: &str = "anteroom-accounts";
const ISSUER: &str = "anteroom";
/// Shortest password, in characters.
pub(crate) const MIN_PASSWORD: usize = 8;
/// Threads computing argon2 (memory-hard: ~19 MiB each).
const HASHING_THREADS: usize = 2;
/// Hash requests that may wait for a thread before new ones get 503.
const HASHING_QUEUE: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// Starts the argon2 threads and returns their queue.
fn hashers() -> std::sync::mpsc::SyncSender<Job> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(HASHING_QUEUE);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    for i in 0..HASHING_THREADS {
        let rx = rx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
    }
    tx
}
/// Longest password, in characters.
pub(crate) const MAX_PASSWORD: usize = 128;

/// Signing and verification of account tokens.
pub struct Accounts {
    settings: AccountsSettings,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// A real argon2id hash of a random password: unknown users are verified against it.
    decoy_hash: String,
    /// Queue of the dedicated argon2 threads. Each hash holds ~19 MiB: a few
    /// long-lived threads keep that memory bounded and reused (unbounded
    /// logins on the blocking pool once pushed the server to gigabytes).
    hashing: std::sync::mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("resource", &self.settings.resource)
            .finish_non_exhaustive()
    }
}

fn hash(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

fn bad_credentials() -> ApiError {
    ApiError::BadCredentials
}

impl Accounts {
    /// Reads the signing secret and prepares the decoy hash.
    pub fn new(settings: &AccountsSettings) -> Result<Accounts, String> {
        let secret = Secret::from_env(&settings.secret_env)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 30;
        let decoy = uuid::Uuid::new_v4().to_string();
        Ok(Accounts {
            settings: settings.clone(),
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
            validation,
            decoy_hash: hash(&decoy).map_err(|e| e.to_string())?,
            hashing: hashers(),
        })
    }

    /// Runs argon2 work off the async threads, at most [`HASHING_SLOTS`] at a
    /// time; a caller that cannot get a slot within 5 s gets a 503.
    async fn argon2<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        // A full queue means the hashers are saturated: shed load instead of queueing forever.
        self.hashing.try_send(job).map_err(|_| ApiError::Busy)?;
        tokio::time::timeout(std::time::Duration::from_secs(10), rx)
            .await
            .map_err(|_| ApiError::Busy)?
            .map_err(ApiError::internal)
    }

    /// Verifies the signature and claims of a token this engine issued; the
    /// account behind it is checked by [`Accounts::current`].
    pub fn verify(&self, token: &str) -> Result<AccountClaims, ApiError> {
        let data = jsonwebtoken::decode::<Json>(token, &self.decoding, &self.validation)
            .map_err(|_| super::unauthorized("the bearer token is not valid"))?;
        let subject = data.claims["sub"]
            .as_str()
            .ok_or_else(|| super::unauthorized("the token has no subject"))?
            .to_owned();
        let roles = data.claims["role"]
            .as_str()
            .map(|r| vec![r.to_owned()])
            .unwrap_or_default();
        // Tokens issued before versions existed stand for version 0.
        let version = data.claims["ver"].as_i64().unwrap_or(0);
        Ok(AccountClaims {
            identity: Identity {
                subject,
                roles,
                claims: std::sync::Arc::new(data.claims),
            },
            version,
        })
    }

    /// The identity of a verified token whose account still exists and whose
    /// token version is still the account's (a role change, a new password or
    /// a logout everywhere bumps it). One primary-key read per request.
    pub async fn current(
        &self,
        claims: AccountClaims,
        storage: &dyn Storage,
        model: &AppModel,
    ) -> Result<Identity, ApiError> {
        let resource = resource(model, self)?;
        let row = read_account(storage, resource, &claims.identity.subject)
            .await?
            .ok_or_else(|| super::unauthorized("the account of this token no longer exists"))?;
        if token_version(resource, &row) != claims.version {
            return Err(super::unauthorized(
                "the token was revoked (a role or password change, or a logout everywhere); log in again",
            ));
        }
        Ok(claims.identity)
    }

    /// `{token, token_type, expires_in, user}` for an account row just read or written.
    fn session(&self, resource: &Resource, account: &StoredRow) -> Result<Json, ApiError> {
        let subject = match account.values.get(&resource.id_column().name) {
            Some(Json::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => return Err(ApiError::internal("an account row without its id")),
        };
        let role = account
            .values
            .get("role")
            .and_then(Json::as_str)
            .unwrap_or("user");
        let mut body = self.issue(&subject, role, token_version(resource, account))?;
        body["user"] = public_view(resource, account);
        Ok(body)
    }

    fn issue(&self, subject: &str, role: &str, version: i64) -> Result<Json, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(self.settings.token_ttl_s).unwrap_or(3600);
        let claims = json!({"sub": subject, "role": role, "ver": version, "iss": ISSUER, "iat": now, "exp": now + ttl});
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(ACCOUNTS_KID.to_owned());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(ApiError::internal)?;
        Ok(json!({"token": token, "token_type": "Bearer", "expires_in": ttl}))
    }
}

/// A verified account token, not yet checked against its account.
#[derive(Debug)]
pub struct AccountClaims {
    /// The caller the token names.
    pub identity: Identity,
    /// The account's token version when it was issued (`ver`).
    pub version: i64,
}

/// The account row with id `subject` (hidden fields included), if any.
async fn read_account(
    storage: &dyn Storage,
    resource: &Resource,
    subject: &str,
) -> Result<Option<StoredRow>, ApiError> {
    let Ok(id) = value::from_text(resource.id_column(), subject) else {
        return Ok(None);
    };
    let plan = ReadPlan {
        resource,
        parent: None,
        condition: Condition::Compare {
            column: resource.id_column().name.clone(),
            op: Compare::Eq,
            value: id.clone(),
        },
        id,
        fields: None,
        expand: Vec::new(),
    };
    storage.read(&plan).await
}

/// The account's current token version.
fn token_version(resource: &Resource, row: &StoredRow) -> i64 {
    resource
        .tokens
        .as_ref()
        .and_then(|t| row.values.get(&t.version_column))
        .and_then(Json::as_i64)
        .unwrap_or(0)
}

fn resource<'m>(model: &'m AppModel, accounts: &Accounts) -> Result<&'m Resource, ApiError> {
    model
        .resource(&accounts.settings.resource)
        .ok_or_else(|| ApiError::internal("the accounts resource is missing from the model"))
}

fn accounts(state: &AppState) -> Result<&Accounts, ApiError> {
    state
        .auth
        .accounts
        .as_deref()
        .ok_or_else(|| ApiError::not_found("accounts are not enabled"))
}

/// The account as clients see it: hidden fields removed.
fn public_view(resource: &Resource, row: &StoredRow) -> Json {
    use crate::schema::shape::{Mode, Presence, shape};
    let mut values: Map<String, Json> = row.values.clone();
    for field in shape(resource, Mode::Read) {
        if field.presence == Presence::Absent {
            values.shift_remove(&field.column.name);
        }
    }
    Json::Object(values)
}

fn json_reply(status: StatusCode, body: Json) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn json_body(state: &AppState, req: Request) -> Result<Map<String, Json>, ApiError> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    crate::request::body::check_media_type(content_type)?;
    let bytes = crate::pipeline::read_body(body, &parts.headers, &state.settings).await?;
    match serde_json::from_slice::<Json>(&bytes) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            Code::MalformedBody,
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

fn string_field(
    map: &Map<String, Json>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match map.get(name) {
        Some(Json::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(name, FieldCode::Type, "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new(name, FieldCode::Required, "is required"));
            None
        }
    }
}

/// Every key of `body` outside `allowed` is a 422 `unknown_field`.
fn refuse_unknown(
    body: &Map<String, Json>,
    allowed: &[&str],
    hint: &str,
    errors: &mut Vec<FieldError>,
) {
    for key in body.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(FieldError::new(key, FieldCode::UnknownField, hint));
        }
    }
}

fn check_password_length(field: &str, password: &str, errors: &mut Vec<FieldError>) {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        errors.push(FieldError::new(
            field,
            FieldCode::MinLength,
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"),
        ));
    }
}

/// The stored hash of a password an operator gives (`seed`, `accounts
/// create`), checked like a signup's: `Err` says what is wrong with it.
pub(crate) async fn operator_password_hash(
    state: &AppState,
    password: &str,
) -> Result<String, String> {
    let accounts = accounts(state).map_err(|_| {
        "this schema has no [auth.accounts]: there is no account to give a password".to_owned()
    })?;
    let mut errors = Vec::new();
    check_password_length("password", password, &mut errors);
    if let Some(e) = errors.first() {
        return Err(format!("password {}", e.message));
    }
    let password = password.to_owned();
    accounts
        .argon2(move || hash(&password))
        .await
        .and_then(|hashed| hashed)
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// The accounts resource's name, when the schema has accounts.
pub(crate) fn resource_name(state: &AppState) -> Option<&str> {
    state
        .auth
        .accounts
        .as_deref()
        .map(|a| a.settings.resource.as_str())
}

/// `POST /auth/signup {username, email, password}` → 201 `{user, token, …}`.
pub(crate) async fn signup(state: &AppState, req: Request) -> Response {
    signup_inner(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn signup_inner(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let accounts = accounts(state)?;
    let resource = resource(&state.model, accounts)?;
    let body = json_body(state, req).await?;
    let mut errors = Vec::new();
    refuse_unknown(
        &body,
        &["username", "email", "password"],
        "signup takes username, email and password",
        &mut errors,
    );
    let mut record = Record::new();
    for name in ["username", "email"] {
        let Some(column) = resource.column(name) else {
            continue;
        };
        // The rules of any other write of the field: typed and checked, and
        // trimmed and lowercased (the model makes both `lowercase`), so that
        // "Alice" cannot squat beside "alice".
        let parsed = match body.get(name) {
            Some(json) => {
                value::from_json(column, json).and_then(|v| value::check(column, &v).map(|()| v))
            }
            None => Err(FieldError::new(name, FieldCode::Required, "is required")),
        };
        match parsed {
            Ok(v) => {
                record.insert(name.to_owned(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    let password = string_field(&body, "password", &mut errors);
    if let Some(p) = &password {
        check_password_length("password", p, &mut errors);
    }
    let Some(password) = password.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation { errors });
    };
    let password_hash = accounts.argon2(move || hash(&password)).await??;
    record.insert("password_hash".to_owned(), Value::Text(password_hash));
    let ctx = PlanContext::system();
    let mut row = crate::plan::complete_row(resource, &record, &ctx);
    // The account owns itself: `owner` rules on the accounts resource mean "this user".
    let id = row.get(&resource.id_column().name).map(value::to_json);
    let subject = match id {
        Some(Json::String(s)) => s,
        _ => return Err(ApiError::internal("accounts need uuid ids")),
    };
    row.insert("created_by".to_owned(), Value::Text(subject.clone()));
    row.insert("updated_by".to_owned(), Value::Text(subject.clone()));
    let plan = InsertPlan {
        ref_checks: Vec::new(),
        readback: crate::plan::Readback::All,
        resource,
        rows: vec![row],
        bulk: false,
    };
    let stored = state
        .storage
        .insert(&plan)
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("insert returned no row"))?;
    let mut response = json_reply(StatusCode::CREATED, accounts.session(resource, &stored)?);
    if let Ok(loc) = http::HeaderValue::from_str(&format!("/{}/{subject}", resource.name)) {
        response.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(response)
}

/// Credentials from HTTP Basic.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `POST /auth/login {username|email, password}` or `GET /auth/login` with Basic → `{token, …}`.
pub(crate) async fn login(state: &AppState, req: Request) -> Response {
    login_inner(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn login_inner(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let accounts = accounts(state)?;
    let resource = resource(&state.model, accounts)?;
    // The route table sends only GET, HEAD (HTTP Basic) and POST (JSON) here.
    let (login, password) = match *req.method() {
        Method::POST => {
            let body = json_body(state, req).await?;
            let login = body
                .get("username")
                .or_else(|| body.get("email"))
                .and_then(Json::as_str)
                .map(str::to_owned);
            let password = body
                .get("password")
                .and_then(Json::as_str)
                .map(str::to_owned);
            match (login, password) {
                (Some(l), Some(p)) => (l, p),
                _ => {
                    return Err(ApiError::Validation {
                        errors: vec![FieldError::new(
                            "password",
                            FieldCode::Required,
                            "login takes username (or email) and password",
                        )],
                    });
                }
            }
        }
        _ => basic(req.headers()).ok_or_else(bad_credentials)?,
    };
    // The login is read as each field reads a written value (trimmed and
    // lowercased); a login neither field could hold (a NUL) names nobody.
    let login = Json::String(login);
    let by = |name: &str| {
        let value = value::from_json(resource.column(name)?, &login).ok()?;
        Some(Condition::Compare {
            column: name.to_owned(),
            op: Compare::Eq,
            value,
        })
    };
    let lookups: Vec<Condition> = ["username", "email"].into_iter().filter_map(by).collect();
    let found = if lookups.is_empty() {
        None
    } else {
        let plan = ListPlan {
            resource,
            parent: None,
            condition: Condition::Any(lookups),
            count_condition: None,
            sort: crate::request::query::total_sort(resource, &[]),
            limit: 1,
            byte_budget: usize::MAX,
            offset: 0,
            fields: None,
            expand: Vec::new(),
        };
        state.storage.list(&plan).await?.rows.pop()
    };
    let stored_hash = found
        .as_ref()
        .and_then(|r| r.values.get("password_hash"))
        .and_then(Json::as_str)
        .map_or_else(|| accounts.decoy_hash.clone(), str::to_owned);
    // The same argon2 work whether or not the user exists.
    let ok = accounts
        .argon2(move || verify(&password, &stored_hash))
        .await?;
    let Some(user) = found.filter(|_| ok) else {
        return Err(bad_credentials());
    };
    let id = user.values[&resource.id_column().name].clone();
    let id_value =
        value::from_json(resource.id_column(), &id).map_err(|e| ApiError::internal(e.message))?;
    let ctx = PlanContext::system();
    let mut set = Record::new();
    set.insert("last_login_at".to_owned(), Value::Timestamp(ctx.now));
    crate::plan::stamp_update(resource, &mut set, &ctx);
    set.shift_remove("updated_by");
    let update = UpdatePlan {
        after: None,
        insert_within: None,
        ref_checks: Vec::new(),
        readback: crate::plan::Readback::All,
        resource,
        id: id_value,
        set,
        expect: Expect::Nothing,
        insert: None,
        scope: None,
        bump: None,
    };
    let user = match state.storage.update(&update).await? {
        UpdateOutcome::Updated(row) => row,
        _ => return Err(bad_credentials()),
    };
    Ok(json_reply(
        StatusCode::OK,
        accounts.session(resource, &user)?,
    ))
}

/// `GET /auth/me`: the caller's account.
pub(crate) async fn me(state: &AppState, req: Request<Body>) -> Response {
    me_inner(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn me_inner(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (resource, row) = caller_account(state, req.headers(), req.extensions()).await?;
    Ok(json_reply(StatusCode::OK, public_view(resource, &row)))
}

/// The authenticated caller's account row (401 without credentials, 404 when
/// the credentials name no account, e.g. an API key).
async fn caller_account<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> Result<(&'s Resource, StoredRow), ApiError> {
    let accounts = accounts(state)?;
    let resource = resource(&state.model, accounts)?;
    let identity = state
        .auth
        .authenticate(headers, extensions, None, &*state.storage, &state.model)
        .await?
        .identity
        .ok_or_else(|| ApiError::Unauthorized {
            detail: "authentication is required".to_owned(),
            invalid_token: false,
        })?;
    let row = read_account(&*state.storage, resource, &identity.subject)
        .await?
        .ok_or_else(|| ApiError::not_found("the caller has no account"))?;
    Ok((resource, row))
}

/// Writes `set` to the caller's account, bumping its token version.
async fn revoke_tokens(
    state: &AppState,
    resource: &Resource,
    row: &StoredRow,
    mut set: Record,
) -> Result<StoredRow, ApiError> {
    let id = value::from_json(
        resource.id_column(),
        &row.values[&resource.id_column().name],
    )
    .map_err(|e| ApiError::internal(e.message))?;
    let ctx = PlanContext::system();
    crate::plan::stamp_update(resource, &mut set, &ctx);
    set.shift_remove("updated_by");
    let update = UpdatePlan {
        after: None,
        insert_within: None,
        ref_checks: Vec::new(),
        readback: crate::plan::Readback::All,
        resource,
        id,
        set,
        expect: Expect::Nothing,
        insert: None,
        scope: None,
        bump: crate::plan::TokenBump::always(resource),
    };
    match state.storage.update(&update).await? {
        UpdateOutcome::Updated(row) => Ok(row),
        _ => Err(ApiError::not_found("the caller has no account")),
    }
}

/// `POST /auth/logout-all`: revokes every token of the caller's account → 204.
pub(crate) async fn logout_all(state: &AppState, req: Request) -> Response {
    logout_all_inner(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn logout_all_inner(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (resource, row) = caller_account(state, req.headers(), req.extensions()).await?;
    revoke_tokens(state, resource, &row, Record::new()).await?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// `POST /auth/password {password, new_password}`: changes the caller's
/// password, revokes every earlier token and returns a new one.
pub(crate) async fn password(state: &AppState, req: Request) -> Response {
    password_inner(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn password_inner(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let accounts = accounts(state)?;
    let (resource, row) = caller_account(state, req.headers(), req.extensions()).await?;
    let body = json_body(state, req).await?;
    let mut errors = Vec::new();
    refuse_unknown(
        &body,
        &["password", "new_password"],
        "a password change takes password and new_password",
        &mut errors,
    );
    let current = string_field(&body, "password", &mut errors);
    let new = string_field(&body, "new_password", &mut errors);
    if let Some(p) = &new {
        check_password_length("new_password", p, &mut errors);
    }
    let (Some(current), Some(new)) = (current, new) else {
        return Err(ApiError::Validation { errors });
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation { errors });
    }
    let stored_hash = row
        .values
        .get("password_hash")
        .and_then(Json::as_str)
        .map_or_else(|| accounts.decoy_hash.clone(), str::to_owned);
    let new_hash = accounts
        .argon2(move || verify(&current, &stored_hash).then(|| hash(&new)))
        .await?
        .ok_or_else(|| ApiError::Forbidden {
            detail: "password is not this account's current password".to_owned(),
        })??;
    let mut set = Record::new();
    set.insert("password_hash".to_owned(), Value::Text(new_hash));
    let user = revoke_tokens(state, resource, &row, set).await?;
    Ok(json_reply(
        StatusCode::OK,
        accounts.session(resource, &user)?,
    ))
}

/// Shared handle for the router.
pub type Shared = Arc<Accounts>;
