//! RDS IAM database authentication: the password of a PostgreSQL or MySQL
//! connection is an auth token — a SigV4-presigned `connect` request for the
//! database user, signed with the function's credentials from the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`; Lambda sets all four), valid for 15
//! minutes. A token only matters when a connection opens, so the pool's
//! connect options get a new one before the old one is
//! [`REFRESH_AFTER`] old: on a timer, and on the first acquire after the
//! process was frozen (a thawed Lambda must not open connections with a
//! stale token). Signing is `aws-sigv4`'s (without `aws-config`, whose
//! credential chain would cost a cold start tens of milliseconds).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

/// How long RDS accepts a token.
const VALIDITY: Duration = Duration::from_secs(15 * 60);
/// A token older than this is replaced before a connection uses it.
pub(crate) const REFRESH_AFTER: Duration = Duration::from_secs(10 * 60);
/// How often the timer looks: a token is at most 11 minutes old when used.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Signs `url` as a presigned GET for `service` in `region`, valid for
/// `expires`: the URL with the signature in its query.
fn presign(
    url: &str,
    service: &str,
    region: &str,
    credentials: Credentials,
    time: SystemTime,
    expires: Duration,
) -> Result<String, String> {
    let identity = credentials.into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut signed = url::Url::parse(url).map_err(|e| e.to_string())?;
    for (name, value) in instructions.params() {
        signed.query_pairs_mut().append_pair(name, value);
    }
    Ok(signed.to_string())
}

/// Where tokens are for: the database endpoint and user.
#[derive(Debug, Clone)]
pub(crate) struct TokenSource {
    host: String,
    port: u16,
    user: String,
    region: String,
}

impl TokenSource {
    /// The source for `host:port` and `user`, in the environment's region.
    pub(crate) fn new(host: &str, port: u16, user: &str) -> Result<TokenSource, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .ok_or_else(|| "RDS IAM authentication needs AWS_REGION".to_owned())?;
        if user.is_empty() {
            return Err("RDS IAM authentication needs the database user in the URL (postgres://USER@host/db)".to_owned());
        }
        Ok(TokenSource {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            region,
        })
    }

    /// A fresh token signed with the environment's credentials.
    pub(crate) fn token(&self) -> Result<String, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err("RDS IAM authentication needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (Lambda sets them from the function's role)".to_owned());
        };
        let credentials =
            Credentials::new(key, secret, var("AWS_SESSION_TOKEN"), None, "environment");
        let mut url = url::Url::parse(&format!("https://{}:{}/", self.host, self.port))
            .map_err(|e| format!("invalid database host {:?}: {e}", self.host))?;
        url.query_pairs_mut()
            .append_pair("Action", "connect")
            .append_pair("DBUser", &self.user);
        let signed = presign(
            url.as_str(),
            "rds-db",
            &self.region,
            credentials,
            SystemTime::now(),
            VALIDITY,
        )?;
        // The token is the signed URL without its scheme.
        Ok(signed.trim_start_matches("https://").to_owned())
    }
}

/// A database's connect options.
type Options<DB> = <<DB as sqlx::Database>::Connection as sqlx::Connection>::Options;
/// Connect options with a given password.
type WithPassword<DB> = Box<dyn Fn(&str) -> Options<DB> + Send + Sync>;

/// Keeps a pool's connect options carrying a fresh token.
pub(crate) struct Refresher<DB: sqlx::Database> {
    source: TokenSource,
    /// The pool's connect options with a given password.
    with_password: WithPassword<DB>,
    issued: Mutex<Instant>,
    pool: OnceLock<sqlx::Pool<DB>>,
}

impl<DB: sqlx::Database> Refresher<DB> {
    /// A refresher for `user` at `host:port`, and the connect options with
    /// the first token.
    pub(crate) fn new(
        (host, port, user): (&str, u16, &str),
        with_password: impl Fn(&str) -> Options<DB> + Send + Sync + 'static,
    ) -> Result<(Arc<Self>, Options<DB>), String> {
        let source = TokenSource::new(host, port, user)?;
        let first = with_password(&source.token()?);
        let refresher = Arc::new(Refresher {
            source,
            with_password: Box::new(with_password),
            issued: Mutex::new(Instant::now()),
            pool: OnceLock::new(),
        });
        Ok((refresher, first))
    }

    /// Starts refreshing `pool`'s options: on a timer, and whenever
    /// [`Refresher::refresh_if_stale`] finds the token old.
    pub(crate) fn attach(self: &Arc<Self>, pool: &sqlx::Pool<DB>) {
        let _ = self.pool.set(pool.clone());
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(refresher) = weak.upgrade() else {
                    return;
                };
                refresher.refresh_if_stale();
            }
        });
    }

    /// Signs a new token if the current one is [`REFRESH_AFTER`] old (as after
    /// a freeze); cheap otherwise.
    pub(crate) fn refresh_if_stale(&self) {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if issued.elapsed() < REFRESH_AFTER {
            return;
        }
        match self.source.token() {
            Ok(token) => {
                if let Some(pool) = self.pool.get() {
                    pool.set_connect_options((self.with_password)(&token));
                }
                *issued = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "cannot sign a new RDS auth token"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's SigV4 test suite, `get-vanilla` signed in the query (as RDS
    /// tokens are): the request, key, time and expiry of the published
    /// vector, and its published signature.
    #[test]
    fn a_presigned_request_matches_the_published_sigv4_test_vector() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test-suite",
        );
        // 2015-08-30T12:36:00Z
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let signed = presign(
            "https://example.amazonaws.com/",
            "service",
            "us-east-1",
            credentials,
            time,
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(
            signed,
            "https://example.amazonaws.com/?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request\
             &X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d"
        );
    }

    #[test]
    fn a_token_is_a_presigned_connect_for_the_user_without_its_scheme() {
        let source = TokenSource {
            host: "db.example.us-east-1.rds.amazonaws.com".into(),
            port: 5432,
            user: "app".into(),
            region: "us-east-1".into(),
        };
        let credentials =
            Credentials::new("AKIDEXAMPLE", "secret", Some("session".into()), None, "t");
        let signed = presign(
            &format!(
                "https://{}:{}/?Action=connect&DBUser=app",
                source.host, source.port
            ),
            "rds-db",
            &source.region,
            credentials,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160),
            VALIDITY,
        )
        .unwrap();
        let token = signed.trim_start_matches("https://");
        assert!(
            token.starts_with("db.example.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256"),
            "{token}"
        );
        assert!(token.contains("%2Frds-db%2Faws4_request"), "{token}");
        assert!(token.contains("X-Amz-Expires=900"), "{token}");
        assert!(token.contains("X-Amz-Security-Token=session"), "{token}");
    }
}
