//! One configuration for every adapter, read from flags and the environment
//! (each flag has an `ANTEROOM_*` variable): [`ServeConfig`] turns into the
//! HTTP [`Settings`], the TCP [`ServerSettings`], the pool's
//! [`ConnectOptions`] and the logger. The `anteroom serve` command parses it
//! from its command line; the Lambda adapter from the environment alone
//! ([`ServeConfig::from_env`]), with the defaults a function needs
//! ([`Mode::Lambda`]). Nothing else reads the environment for these.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use crate::settings::{
    DEFAULT_BODY_LIMIT, DEFAULT_MAX_CLIENTS, ServerSettings, fd_reserve_for, parse_duration,
};
use crate::storage::{self, ConnectOptions};
use crate::{Settings, server, streams};

/// Where the configuration runs: its defaults differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `anteroom serve`: a long-lived TCP server.
    Server,
    /// One AWS Lambda execution environment: one request at a time, frozen
    /// between invocations, a read-only code directory.
    Lambda,
}

/// The database a command opens, and how.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// The schema file.
    #[arg(default_value = "anteroom.toml", env = "ANTEROOM_SCHEMA")]
    pub schema: PathBuf,
    /// Database URL: sqlite://path (or just the file's path), postgres://…, mysql://… Default: anteroom.db next to the schema file (on Lambda: /tmp/anteroom.db).
    #[arg(long, env = "DATABASE_URL", value_parser = crate::storage::parse_database_url)]
    pub database_url: Option<String>,
    /// Largest number of database connections (SQLite: each of its two reader pools; writes use one connection). Default 4; 2 on Lambda.
    #[arg(long, env = "ANTEROOM_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Longest a single SQL statement may run (`500ms`, `30s`, `2m`); past it the request gets 503.
    #[arg(long, env = "ANTEROOM_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub statement_timeout: Duration,
    /// A pooled PostgreSQL/MySQL connection idle this long is pinged before use and replaced if it died.
    #[arg(long, env = "ANTEROOM_PING_AFTER_IDLE", default_value = "1s", value_parser = parse_duration)]
    pub ping_after_idle: Duration,
    /// Idle pooled PostgreSQL/MySQL connections are closed after this long.
    #[arg(long, env = "ANTEROOM_POOL_IDLE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub pool_idle_timeout: Duration,
    /// Pooled PostgreSQL/MySQL connections are replaced after this long.
    #[arg(long, env = "ANTEROOM_POOL_MAX_LIFETIME", default_value = "30m", value_parser = parse_duration)]
    pub pool_max_lifetime: Duration,
    /// PostgreSQL/MySQL on RDS: the password is an IAM auth token signed with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN in AWS_REGION, renewed before it expires; TLS is required.
    #[arg(long, env = "ANTEROOM_RDS_IAM")]
    pub rds_iam: bool,
}

impl DatabaseArgs {
    /// The database URL, or the default for `mode`.
    pub fn url(&self, mode: Mode) -> String {
        match (&self.database_url, mode) {
            (Some(url), _) => url.clone(),
            // The code directory of a function is read-only.
            (None, Mode::Lambda) => "sqlite:///tmp/anteroom.db".to_owned(),
            (None, Mode::Server) => server::default_database_url(&self.schema),
        }
    }

    /// Pool and statement limits.
    pub fn connect_options(&self, mode: Mode) -> ConnectOptions {
        ConnectOptions {
            max_connections: self.max_connections.unwrap_or(match mode {
                Mode::Server => 4,
                // One request at a time per environment: two connections
                // leave one for the streams' or sweeper's work.
                Mode::Lambda => 2,
            }),
            statement_timeout: self.statement_timeout,
            ping_after_idle: self.ping_after_idle,
            idle_timeout: self.pool_idle_timeout,
            max_lifetime: self.pool_max_lifetime,
            rds_iam: self.rds_iam,
            ..ConnectOptions::default()
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What the start does with a database that is behind the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateOnStart {
    /// Apply additive migrations (under the database's migration lock).
    Apply,
    /// Refuse to start unless the database is already at the schema's
    /// version: `anteroom migrate` is a deploy step.
    Check,
}

/// `anteroom serve`'s flags, and the Lambda adapter's environment.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "ANTEROOM_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Log format. Default: text; json on Lambda.
    #[arg(long, env = "ANTEROOM_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Origins allowed by CORS (comma-separated; `*` for any). Default: CORS off.
    #[arg(long, env = "ANTEROOM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ANTEROOM_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Load this seed file (see `anteroom seed`) into empty resources before serving.
    #[arg(long, env = "ANTEROOM_SEED")]
    pub seed: Option<PathBuf>,
    /// Time a whole request body may take to arrive (e.g. 500ms, 30s, 2m); then 408.
    #[arg(long, env = "ANTEROOM_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Close a client connection with no request (or whose client stops reading its response) for this long.
    #[arg(long, env = "ANTEROOM_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Time a request head may take once its first byte arrived; then 408.
    #[arg(long, env = "ANTEROOM_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Most client connections open at once (lowered to fit the file descriptor limit).
    #[arg(long, env = "ANTEROOM_MAX_CLIENTS", default_value_t = DEFAULT_MAX_CLIENTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,
    /// Most Server-Sent Event streams (queue entries and lines) open at once; past it, 503 busy. At most half of --max-clients; 0 turns streams off (501). Always 0 on Lambda, which buffers responses.
    #[arg(long, env = "ANTEROOM_MAX_STREAMS", default_value_t = streams::DEFAULT_MAX_STREAMS)]
    pub max_streams: usize,
    /// After SIGINT/SIGTERM, time in-flight requests get before connections are closed.
    #[arg(long, env = "ANTEROOM_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// A database behind the schema: apply additive migrations, or refuse to start. Default: apply; check on Lambda.
    #[arg(long, env = "ANTEROOM_MIGRATE", value_enum)]
    pub migrate: Option<MigrateOnStart>,
    /// Path prefix clients use before the API's own paths (`/api`: a reverse proxy's mount point, an API Gateway custom domain's base path): stripped from request paths that start with it, put in front of every `Location`.
    #[arg(long, env = "ANTEROOM_BASE_PATH")]
    pub base_path: Option<String>,
}

/// Parses [`ServeConfig`] alone.
#[derive(Debug, Parser)]
#[command(name = "anteroom")]
struct EnvOnly {
    #[command(flatten)]
    config: ServeConfig,
}

impl ServeConfig {
    /// The configuration from the environment alone (the Lambda adapter has
    /// no command line). A missing schema path means `anteroom.toml` in the
    /// function's code directory (`LAMBDA_TASK_ROOT`), beside the binary.
    pub fn from_env() -> Result<ServeConfig, String> {
        let mut config = EnvOnly::try_parse_from(["anteroom"])
            .map_err(|e| e.to_string())?
            .config;
        if std::env::var_os("ANTEROOM_SCHEMA").is_none()
            && let Some(root) = std::env::var_os("LAMBDA_TASK_ROOT")
        {
            config.db.schema = PathBuf::from(root).join("anteroom.toml");
        }
        Ok(config)
    }

    /// The HTTP settings every adapter shares.
    pub fn settings(&self, mode: Mode) -> Settings {
        Settings {
            body_limit: self.body_limit,
            body_timeout: self.body_timeout,
            cors_origins: self.cors_origin.clone(),
            max_streams: match mode {
                // Streams hold their connection: half the connections stay
                // for everything else.
                Mode::Server => self
                    .max_streams
                    .min(usize::try_from(self.max_clients / 2).unwrap_or(usize::MAX)),
                // API Gateway and the invoke API buffer a whole response.
                Mode::Lambda => 0,
            },
            // A heartbeat at least twice per idle timeout keeps a stream's
            // connection from being taken for a stalled one.
            stream_heartbeat: Ord::min(streams::DEFAULT_HEARTBEAT, self.idle_timeout / 2),
            base_path: self.base_path(),
        }
    }

    /// The TCP server's connection limits.
    pub fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            max_clients: usize::try_from(self.max_clients).unwrap_or(usize::MAX),
            shutdown_timeout: self.shutdown_timeout,
            fd_reserve: fd_reserve_for(storage::file_descriptors(
                &self.db.url(Mode::Server),
                self.db.connect_options(Mode::Server).max_connections,
            )),
        }
    }

    /// What to do with a database behind the schema.
    pub fn migrate_on_start(&self, mode: Mode) -> MigrateOnStart {
        self.migrate.unwrap_or(match mode {
            Mode::Server => MigrateOnStart::Apply,
            // Not on every cold start: a deploy step migrates once.
            Mode::Lambda => MigrateOnStart::Check,
        })
    }

    /// The base path as `/segment…` without a trailing slash, or none.
    pub fn base_path(&self) -> Option<String> {
        let trimmed = self.base_path.as_deref()?.trim_matches('/');
        (!trimmed.is_empty()).then(|| format!("/{trimmed}"))
    }

    /// Starts the logger (stderr; `ANTEROOM_LOG` filters, e.g. `debug`).
    pub fn init_logging(&self, mode: Mode) {
        let format = self.log_format.unwrap_or(match mode {
            Mode::Server => LogFormat::Text,
            // CloudWatch keeps one event per line; JSON keeps its fields.
            Mode::Lambda => LogFormat::Json,
        });
        let filter = tracing_subscriber::EnvFilter::try_from_env("ANTEROOM_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(
                mode == Mode::Server && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            );
        match format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}
