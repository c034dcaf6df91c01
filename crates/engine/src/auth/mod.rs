//! Authentication. [`Authenticator`] turns a request's credentials (a JWT
//! bearer token, an API key, the claims an API Gateway authorizer vouched
//! for) into an [`Identity`], or refuses them with 401; what an identity may
//! do is [`crate::policy`]'s business. Secrets are read once at start-up
//! from the places `[auth]` names, and never logged.

pub mod accounts;
pub mod gateway;
pub mod jwt;

use std::path::Path;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::schema::{ApiKeySettings, AuthModel};

/// Shortest accepted API key or HMAC secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Recorded in `created_by`/`updated_by` and compared by `owner` rules.
    pub subject: String,
    /// Matched by `role:NAME` rules.
    pub roles: Vec<String>,
    /// The claims the credential carried (a token's payload, an
    /// authorizer's claims; `null` for API keys), read by `claim:NAME` rules.
    pub claims: std::sync::Arc<serde_json::Value>,
}

/// Follows a dotted path (`realm_access.roles`, `cognito:groups`) into
/// claims: names may hold ':' but not '.'.
pub(crate) fn claim<'a>(
    claims: &'a serde_json::Value,
    path: &str,
) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

impl Identity {
    /// The claim at the dotted `path`, if the credential carried it.
    pub fn claim(&self, path: &str) -> Option<&serde_json::Value> {
        claim(&self.claims, path).filter(|v| !v.is_null())
    }

    /// Whether the identity holds any of `roles`.
    pub fn has_any_role(&self, roles: &[String]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }
}

/// The request context of an API Gateway event (its `requestContext`), where
/// an authorizer leaves the caller's claims. Only the Lambda adapter puts it
/// in a request's extensions, which no client can send, and it is read only
/// when `[auth.gateway_claims]` is configured: a plain HTTP request can never
/// claim an identity this way.
#[derive(Debug, Clone)]
pub struct GatewayContext(pub std::sync::Arc<serde_json::Value>);

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Reads a secret from an environment variable, refusing an empty or short one.
    pub fn from_env(var: &str) -> Result<Secret, String> {
        let value = std::env::var(var).unwrap_or_default();
        if value.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{var} must hold a secret of at least {MIN_SECRET_BYTES} bytes (it is {})",
                if value.is_empty() {
                    "empty or unset".to_owned()
                } else {
                    format!("{} bytes", value.len())
                }
            ));
        }
        Ok(Secret(value.into_bytes()))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        // Lengths are not secret (the key is fixed); contents are compared in constant time.
        self.0.len() == presented.len() && bool::from(self.0.ct_eq(presented))
    }
}

#[derive(Debug)]
struct ApiKey {
    settings: ApiKeySettings,
    secret: Secret,
}

/// Verifies credentials; built once at start-up from `[auth]`.
#[derive(Debug, Default)]
pub struct Authenticator {
    jwt: Option<jwt::JwtVerifier>,
    api_key: Option<ApiKey>,
    /// Built-in accounts, when enabled.
    pub accounts: Option<std::sync::Arc<accounts::Accounts>>,
    /// Which authorizer claims name the caller, when trusted.
    gateway: Option<crate::schema::GatewaySettings>,
}

/// What authentication found.
#[derive(Debug)]
pub struct Authenticated {
    /// The caller, when credentials were presented and valid.
    pub identity: Option<Identity>,
    /// The query string without the API key parameter (so it is not read as a filter).
    pub query: Option<String>,
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::Unauthorized {
        detail: detail.to_owned(),
        invalid_token: true,
    }
}

impl Authenticator {
    /// Loads keys and secrets; `base` is the schema file's directory (for key files).
    pub fn new(model: Option<&AuthModel>, base: &Path) -> Result<Authenticator, String> {
        let Some(model) = model else {
            return Ok(Authenticator::default());
        };
        let jwt = model
            .jwt
            .as_ref()
            .map(|settings| jwt::JwtVerifier::new(settings, base))
            .transpose()?;
        let api_key = model
            .api_key
            .as_ref()
            .map(|settings| {
                Ok::<_, String>(ApiKey {
                    secret: Secret::from_env(&settings.env)?,
                    settings: settings.clone(),
                })
            })
            .transpose()?;
        let accounts = model
            .accounts
            .as_ref()
            .map(|settings| accounts::Accounts::new(settings).map(std::sync::Arc::new))
            .transpose()?;
        Ok(Authenticator {
            jwt,
            api_key,
            accounts,
            gateway: model.gateway.clone(),
        })
    }

    /// The identity behind a request's credentials. No credentials is an
    /// anonymous caller (rules decide); invalid credentials are a 401. An
    /// API Gateway authorizer's identity ([`GatewayContext`]) comes first:
    /// the gateway verified the token in `Authorization` already.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        extensions: &http::Extensions,
        query: Option<&str>,
        accounts_store: &dyn crate::storage::Storage,
        model: &crate::schema::AppModel,
    ) -> Result<Authenticated, ApiError> {
        let mut identity = self
            .gateway
            .as_ref()
            .zip(extensions.get::<GatewayContext>())
            .and_then(|(settings, context)| gateway::identity(&context.0, settings));
        // A prototype (no [auth]) has nothing to verify credentials with: it ignores them.
        let prototype = self.jwt.is_none() && self.api_key.is_none() && self.accounts.is_none();
        if let Some(value) = headers
            .get(http::header::AUTHORIZATION)
            .filter(|_| !prototype && identity.is_none())
        {
            let text = value
                .to_str()
                .map_err(|_| unauthorized("the Authorization header is not valid text"))?;
            let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(unauthorized(
                    "only Bearer tokens are accepted in Authorization",
                ));
            }
            let token = token.trim();
            if token.is_empty() {
                return Err(unauthorized("the bearer token is empty"));
            }
            let own = self.accounts.as_ref().filter(|_| {
                jsonwebtoken::decode_header(token)
                    .is_ok_and(|h| h.kid.as_deref() == Some(accounts::ACCOUNTS_KID))
            });
            identity = Some(match (own, &self.jwt) {
                (Some(accounts), _) => {
                    let claims = accounts.verify(token)?;
                    accounts.current(claims, accounts_store, model).await?
                }
                (None, Some(verifier)) => verifier.verify(token).await?,
                (None, None) => return Err(unauthorized("this API does not accept bearer tokens")),
            });
        }
        let mut remaining_query = query.map(str::to_owned);
        if let Some(key) = &self.api_key {
            let from_header = key
                .settings
                .header
                .as_ref()
                .and_then(|h| headers.get(h.as_str()))
                .map(|v| v.as_bytes().to_vec());
            let mut from_query = Vec::new();
            if let (Some(param), Some(q)) = (&key.settings.query, query) {
                let mut kept = form_urlencoded::Serializer::new(String::new());
                for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                    if k == param.as_str() {
                        from_query.push(v.into_owned().into_bytes());
                    } else {
                        kept.append_pair(&k, &v);
                    }
                }
                let kept = kept.finish();
                remaining_query = (!kept.is_empty()).then_some(kept);
            }
            // Every presented copy must be right: a good key never launders a bad one.
            for presented in from_header.into_iter().chain(from_query) {
                if !key.secret.matches(&presented) {
                    return Err(unauthorized("the API key is not valid"));
                }
                identity.get_or_insert_with(|| Identity {
                    subject: key.settings.subject.clone(),
                    roles: key.settings.role.iter().cloned().collect(),
                    claims: std::sync::Arc::new(serde_json::Value::Null),
                });
            }
        }
        Ok(Authenticated {
            identity,
            query: remaining_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole_values_only() {
        let s = Secret(b"0123456789abcdef0123456789abcdef".to_vec());
        assert!(s.matches(b"0123456789abcdef0123456789abcdef"));
        assert!(!s.matches(b"0123456789abcdef0123456789abcdeF"));
        assert!(!s.matches(b"0123456789abcdef"));
        assert_eq!(format!("{s:?}"), "Secret(…)");
    }
}
