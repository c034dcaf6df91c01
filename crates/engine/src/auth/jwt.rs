//! JWT bearer verification with `jsonwebtoken`: the accepted algorithms are
//! the pinned list (a token's own `alg` never widens it, `none` is never
//! accepted), keys come from an HMAC secret, a PEM public key or a JWKS file
//! (chosen by `kid`), `exp` is required, `exp`/`nbf` get a small leeway, and
//! `iss`/`aud` are checked when configured. Subject and roles are read from
//! configurable claim paths. [`mint`] signs development tokens with an HMAC
//! secret (`anteroom token`).

use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value as Json;

use super::{Identity, Secret, unauthorized};
use crate::error::ApiError;
use crate::schema::{JwtKeySource, JwtSettings};

#[derive(Debug)]
enum Keys {
    One(DecodingKey),
    ByKid(Vec<(String, DecodingKey)>),
    Remote(std::sync::Arc<RemoteJwks>),
}

/// Shortest time between two fetches caused by unknown `kid`s.
const UNKNOWN_KID_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A JWKS fetched from a URL and kept fresh: on first use, every refresh
/// interval in the background, and when a token names an unknown `kid` — at
/// most once per [`UNKNOWN_KID_INTERVAL`], so garbage `kid`s cannot make the
/// server hammer the identity provider.
pub struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    keys: std::sync::RwLock<std::collections::HashMap<String, DecodingKey>>,
    /// When the last fetch started; also serialises fetches.
    last_fetch: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn key_set(set: &JwkSet, origin: &str) -> Result<Vec<(String, DecodingKey)>, String> {
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("a key in {origin} has no kid"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid} in {origin}: {e}"))?;
        keys.push((kid, key));
    }
    Ok(keys)
}

impl RemoteJwks {
    fn new(url: &str) -> Result<RemoteJwks, String> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        Ok(RemoteJwks {
            url: url.to_owned(),
            client,
            keys: std::sync::RwLock::new(std::collections::HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    fn known(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<(), String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("fetching {}: {e}", self.url))?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("reading {}: {e}", self.url))?;
        let set: JwkSet = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a JWKS: {e}", self.url))?;
        let keys = key_set(&set, &self.url)?;
        if let Ok(mut current) = self.keys.write() {
            *current = keys.into_iter().collect();
        }
        Ok(())
    }

    /// Refreshes unless a fetch ran less than `min_interval` ago.
    async fn refresh(&self, min_interval: std::time::Duration) -> Result<(), String> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_interval) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        self.fetch().await
    }

    /// The key for `kid`, refreshing (rate-limited) when it is unknown.
    async fn key(&self, kid: &str) -> Result<DecodingKey, ApiError> {
        if let Some(key) = self.known(kid) {
            return Ok(key);
        }
        if let Err(e) = self.refresh(UNKNOWN_KID_INTERVAL).await {
            tracing::warn!(error = %e, "JWKS refresh failed");
            if self.keys.read().map(|k| k.is_empty()).unwrap_or(true) {
                // No key was ever fetched: the token cannot be judged yet.
                return Err(ApiError::KeysUnavailable { cause: e });
            }
        }
        self.known(kid)
            .ok_or_else(|| unauthorized("the token's key (kid) is unknown"))
    }

    /// Keeps the keys fresh in the background while the server runs.
    fn spawn_refresher(self: &std::sync::Arc<Self>, every: std::time::Duration) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let jwks = std::sync::Arc::downgrade(self);
        handle.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(jwks) = jwks.upgrade() else { return };
                if let Err(e) = jwks.refresh(std::time::Duration::ZERO).await {
                    tracing::warn!(error = %e, "JWKS refresh failed");
                }
            }
        });
    }
}

/// Most verified tokens remembered (the cache is emptied when full).
const CACHE_LIMIT: usize = 10_000;

/// A configured verifier.
#[derive(Debug)]
pub struct JwtVerifier {
    keys: Keys,
    validation: Validation,
    subject_claim: String,
    role_claim: String,
    /// Tokens already verified, with the window (unix seconds, leeway
    /// included) in which they stay valid: a client reusing its token skips
    /// the signature check (an RS256 verification halved GET throughput).
    verified: std::sync::Mutex<std::collections::HashMap<String, (Identity, i64, i64)>>,
}

fn algorithm(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(name).map_err(|_| format!("unsupported JWT algorithm {name}"))
}

fn read(base: &Path, file: &str) -> Result<Vec<u8>, String> {
    let path = base.join(file);
    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn pem_key(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    use Algorithm::*;
    let key = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
        _ => return Err("a public key file needs an RS*, PS*, ES* or EdDSA algorithm".to_owned()),
    };
    key.map_err(|e| format!("invalid public key: {e}"))
}

use super::claim;

/// Sets the claim at the dotted `path` (creating the objects on the way),
/// the inverse of [`claim`].
fn set_claim(claims: &mut Json, path: &str, value: Json) {
    let mut at = claims;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !at.is_object() {
            *at = Json::Object(serde_json::Map::new());
        }
        let Json::Object(map) = at else {
            return;
        };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        at = map.entry(part.to_owned()).or_insert(Json::Null);
    }
}

/// A token this configuration accepts, for `subject` with `roles`, valid
/// for `ttl`: its subject and roles at the configured claim paths (one role
/// as a string, several as an array), with `iss` and `aud` when they are
/// required. Signed with the HMAC secret of `secret_env` by the first
/// pinned HS* algorithm, or, for a public-key configuration, with
/// `private_key` (PEM) by the first pinned public-key algorithm: only the
/// holder of the private key can sign those.
pub fn mint(
    settings: &JwtSettings,
    subject: &str,
    roles: &[String],
    ttl: std::time::Duration,
    private_key: Option<&[u8]>,
) -> Result<String, String> {
    let pinned = || settings.algorithms.iter().filter_map(|a| algorithm(a).ok());
    let hmac = |a: &Algorithm| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    let (alg, key) = match (&settings.key, private_key) {
        (JwtKeySource::SecretEnv(_), Some(_)) => {
            return Err(
                "this schema's tokens are signed with the HMAC secret of [auth.jwt] secret_env: drop --private-key"
                    .to_owned(),
            );
        }
        (JwtKeySource::SecretEnv(var), None) => {
            let alg = pinned()
                .find(hmac)
                .ok_or("[auth.jwt] pins no HS256, HS384 or HS512 algorithm to sign with")?;
            (
                alg,
                EncodingKey::from_secret(Secret::from_env(var)?.expose()),
            )
        }
        (_, None) => {
            return Err(
                "this schema verifies tokens with a public key ([auth.jwt] public_key_file, jwks_file or jwks_url): only the holder of the private key can sign them; pass it with --private-key FILE, or get a token from your identity provider"
                    .to_owned(),
            );
        }
        (_, Some(pem)) => {
            let alg = pinned()
                .find(|a| !hmac(a))
                .ok_or("[auth.jwt] pins no public-key algorithm to sign with")?;
            let key = match alg {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
                _ => EncodingKey::from_rsa_pem(pem),
            }
            .map_err(|e| format!("the private key is not a PEM key for {alg:?}: {e}"))?;
            (alg, key)
        }
    };
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(ttl.as_secs()).map_err(|_| "the --ttl is too long".to_owned())?;
    let mut claims = serde_json::json!({"iat": now, "exp": now + ttl});
    set_claim(&mut claims, &settings.subject_claim, Json::from(subject));
    match roles {
        [] => {}
        [one] => set_claim(&mut claims, &settings.role_claim, Json::from(one.as_str())),
        many => set_claim(&mut claims, &settings.role_claim, Json::from(many.to_vec())),
    }
    if let Some(iss) = &settings.issuer {
        claims["iss"] = Json::from(iss.as_str());
    }
    if let Some(aud) = &settings.audience {
        claims["aud"] = Json::from(aud.as_str());
    }
    jsonwebtoken::encode(&Header::new(alg), &claims, &key)
        .map_err(|e| format!("cannot sign the token: {e}"))
}

impl JwtVerifier {
    /// Loads the key and builds the validation rules.
    pub fn new(settings: &JwtSettings, base: &Path) -> Result<JwtVerifier, String> {
        let algorithms = settings
            .algorithms
            .iter()
            .map(|a| algorithm(a))
            .collect::<Result<Vec<_>, _>>()?;
        let first = *algorithms.first().ok_or("no JWT algorithm pinned")?;
        let keys = match &settings.key {
            JwtKeySource::SecretEnv(var) => {
                Keys::One(DecodingKey::from_secret(Secret::from_env(var)?.expose()))
            }
            JwtKeySource::PublicKeyFile(file) => Keys::One(pem_key(first, &read(base, file)?)?),
            JwtKeySource::JwksFile(file) => {
                let set: JwkSet = serde_json::from_slice(&read(base, file)?)
                    .map_err(|e| format!("invalid JWKS file {file}: {e}"))?;
                let keys = key_set(&set, file)?;
                if keys.is_empty() {
                    return Err(format!("{file} holds no keys"));
                }
                Keys::ByKid(keys)
            }
            JwtKeySource::JwksUrl { url, refresh_s } => {
                let remote = std::sync::Arc::new(RemoteJwks::new(url)?);
                remote.spawn_refresher(std::time::Duration::from_secs(*refresh_s));
                Keys::Remote(remote)
            }
        };
        let mut validation = Validation::new(first);
        validation.algorithms = algorithms;
        validation.leeway = settings.leeway_s;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        // jsonwebtoken checks iss/aud only when present unless they are required.
        let mut required = vec!["exp"];
        if settings.issuer.is_some() {
            required.push("iss");
        }
        if settings.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(JwtVerifier {
            keys,
            validation,
            subject_claim: settings.subject_claim.clone(),
            role_claim: settings.role_claim.clone(),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Verifies a token and reads its identity (from the cache when this
    /// exact token was verified before and is still inside its validity window).
    pub async fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let now = chrono::Utc::now().timestamp();
        if let Ok(cache) = self.verified.lock()
            && let Some((identity, from, until)) = cache.get(token)
            && (*from..*until).contains(&now)
        {
            return Ok(identity.clone());
        }
        let remote_key = match &self.keys {
            Keys::Remote(remote) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|_| unauthorized("the bearer token is malformed"))?;
                if !self.validation.algorithms.contains(&header.alg) {
                    return Err(unauthorized("the token's algorithm is not accepted"));
                }
                let kid = header
                    .kid
                    .ok_or_else(|| unauthorized("the token names no key (kid)"))?;
                Some(remote.key(&kid).await?)
            }
            _ => None,
        };
        let (identity, from, until) = self.verify_signature(token, remote_key.as_ref())?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(token.to_owned(), (identity.clone(), from, until));
        }
        Ok(identity)
    }

    fn verify_signature(
        &self,
        token: &str,
        remote_key: Option<&DecodingKey>,
    ) -> Result<(Identity, i64, i64), ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("the bearer token is malformed"))?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(unauthorized("the token's algorithm is not accepted"));
        }
        let key = match &self.keys {
            Keys::Remote(_) => {
                remote_key.ok_or_else(|| unauthorized("the token's key (kid) is unknown"))?
            }
            Keys::One(key) => key,
            Keys::ByKid(keys) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| unauthorized("the token names no key (kid)"))?;
                &keys
                    .iter()
                    .find(|(k, _)| k == kid)
                    .ok_or_else(|| unauthorized("the token's key (kid) is unknown"))?
                    .1
            }
        };
        let data = jsonwebtoken::decode::<Json>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind::*;
            if let MissingRequiredClaim(name) = e.kind() {
                return unauthorized(&format!(
                    "the token lacks the \"{name}\" claim, which this server requires"
                ));
            }
            unauthorized(match e.kind() {
                ExpiredSignature => "the token has expired",
                ImmatureSignature => "the token is not valid yet",
                InvalidIssuer => "the token's issuer is not accepted",
                InvalidAudience => "the token's audience is not accepted",
                InvalidSignature => "the token's signature is not valid",
                _ => "the bearer token is not valid",
            })
        })?;
        let subject = match claim(&data.claims, &self.subject_claim) {
            Some(Json::String(s)) if !s.is_empty() => s.clone(),
            Some(Json::Number(n)) => n.to_string(),
            _ => {
                return Err(unauthorized(&format!(
                    "the token has no subject in its \"{}\" claim (subject_claim)",
                    self.subject_claim
                )));
            }
        };
        let roles = match claim(&data.claims, &self.role_claim) {
            Some(Json::String(s)) => vec![s.clone()],
            Some(Json::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(0);
        let seconds = |name: &str| data.claims.get(name).and_then(Json::as_i64);
        let from = seconds("nbf").map_or(i64::MIN, |nbf| nbf - leeway);
        let until = seconds("exp").map_or(i64::MIN, |exp| exp + leeway);
        let identity = Identity {
            subject,
            roles,
            claims: std::sync::Arc::new(data.claims),
        };
        Ok((identity, from, until))
    }
}
