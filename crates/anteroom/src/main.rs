//! The `anteroom` command: parses the command line and wires configuration →
//! state → adapter. Everything else lives in `anteroom_engine`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anteroom_engine::server::{self, StartError};
use anteroom_engine::settings::{ServerSettings, fd_reserve_for, parse_duration};
use anteroom_engine::storage::{self, ConnectOptions, MigrateMode};
use anteroom_engine::{Settings, app, schema, seed};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Turn a schema file into a complete REST backend.
#[derive(Debug, Parser)]
#[command(name = "anteroom", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the schema's REST API (applies additive migrations first).
    Serve(ServeArgs),
    /// Validate a schema file and print every error with its key path.
    Check {
        /// The schema file.
        #[arg(default_value = "anteroom.toml", env = "ANTEROOM_SCHEMA")]
        schema: PathBuf,
    },
    /// Print the OpenAPI 3.1 document of a schema (what `GET /openapi.json` serves).
    Openapi {
        /// The schema file.
        #[arg(default_value = "anteroom.toml", env = "ANTEROOM_SCHEMA")]
        schema: PathBuf,
    },
    /// Bring the database up to the schema, or print the DDL with --dry-run.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Print the statements without running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load seed data (a JSON object of resource → rows) into empty resources.
    Seed {
        /// The schema file.
        schema: PathBuf,
        /// The seed file.
        file: PathBuf,
        /// Database URL (sqlite://path). Default: anteroom.db next to the schema file.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
}

#[derive(Debug, Args)]
struct DatabaseArgs {
    /// The schema file.
    #[arg(default_value = "anteroom.toml", env = "ANTEROOM_SCHEMA")]
    schema: PathBuf,
    /// Database URL: sqlite://path, postgres://…, mysql://… Default: anteroom.db next to the schema file.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Largest number of database connections (SQLite: each of its two reader pools; writes use one connection).
    #[arg(long, env = "ANTEROOM_MAX_CONNECTIONS", default_value_t = 4)]
    max_connections: u32,
    /// Longest a single SQL statement may run (`500ms`, `30s`, `2m`); past it the request gets 503.
    #[arg(long, env = "ANTEROOM_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    statement_timeout: Duration,
}

impl DatabaseArgs {
    fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| server::default_database_url(&self.schema))
    }

    fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            max_connections: self.max_connections,
            statement_timeout: self.statement_timeout,
            ..ConnectOptions::default()
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "ANTEROOM_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Log format.
    #[arg(long, env = "ANTEROOM_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Origins allowed by CORS (comma-separated; `*` for any). Default: CORS off.
    #[arg(long, env = "ANTEROOM_CORS_ORIGINS", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ANTEROOM_BODY_LIMIT", default_value_t = anteroom_engine::settings::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Load this seed file (see `anteroom seed`) into empty resources before serving.
    #[arg(long, env = "ANTEROOM_SEED")]
    seed: Option<PathBuf>,
    /// Time a whole request body may take to arrive (e.g. 500ms, 30s, 2m); then 408.
    #[arg(long, env = "ANTEROOM_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Close a client connection with no request (or whose client stops reading its response) for this long.
    #[arg(long, env = "ANTEROOM_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Time a request head may take once its first byte arrived; then 408.
    #[arg(long, env = "ANTEROOM_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Most client connections open at once (lowered to fit the file descriptor limit).
    #[arg(long, env = "ANTEROOM_MAX_CLIENTS", default_value_t = anteroom_engine::settings::DEFAULT_MAX_CLIENTS, value_parser = clap::value_parser!(u32).range(1..))]
    max_clients: u32,
    /// Most Server-Sent Event streams (queue entries and lines) open at once; past it, 503 busy. At most half of --max-clients.
    #[arg(long, env = "ANTEROOM_MAX_STREAMS", default_value_t = anteroom_engine::streams::DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// After SIGINT/SIGTERM, time in-flight requests get before connections are closed.
    #[arg(long, env = "ANTEROOM_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANTEROOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Check { schema } => check(&schema),
        Command::Openapi { schema } => openapi(&schema),
        Command::Serve(args) => serve(args).await,
        Command::Migrate { db, dry_run } => migrate(&db, dry_run).await,
        Command::Seed {
            schema,
            file,
            database_url,
        } => {
            let db = DatabaseArgs {
                schema,
                database_url,
                max_connections: 1,
                statement_timeout: ConnectOptions::default().statement_timeout,
            };
            seed_file(&db, &file).await
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match schema::load_file(path) {
        Ok(model) => {
            // Names were checked while loading; this plans and renders the
            // migration of an empty database on every backend, as `migrate`
            // would, so no ordering or naming problem waits for a database.
            let migrations = match storage::sql::dry_run(&model) {
                Ok(migrations) => migrations,
                Err(problems) => {
                    for problem in problems {
                        eprintln!("{}: {problem}", path.display());
                    }
                    return ExitCode::from(2);
                }
            };
            let statements: Vec<String> = migrations
                .iter()
                .map(|(backend, statements)| format!("{backend} {}", statements.len()))
                .collect();
            let queues = if model.queues.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} queues: {}",
                    model.queues.len(),
                    model.queues.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            println!(
                "{}: ok ({} resources: {}{queues}; statements migrating an empty database: {})",
                path.display(),
                model.resources.len(),
                model
                    .resources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                statements.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

fn openapi(path: &Path) -> ExitCode {
    match schema::load_file(path) {
        Ok(model) => {
            let routes = anteroom_engine::routes::RouteTable::new(&model);
            let description = anteroom_engine::Description::new(&model, &routes);
            // A reader that stops early (`| head`) is not an error.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out
                .write_all(&description.body)
                .and_then(|()| out.write_all(b"\n"));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

fn fail(e: &StartError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

async fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let settings = Settings {
        body_limit: args.body_limit,
        body_timeout: args.body_timeout,
        cors_origins: args.cors_origin.clone(),
        // Streams hold their connection: half the connections stay for
        // everything else.
        max_streams: args
            .max_streams
            .min(usize::try_from(args.max_clients / 2).unwrap_or(usize::MAX)),
        // A heartbeat at least twice per idle timeout keeps a stream's
        // connection from being taken for a stalled one.
        stream_heartbeat: Ord::min(
            anteroom_engine::streams::DEFAULT_HEARTBEAT,
            args.idle_timeout / 2,
        ),
    };
    let url = args.db.url();
    let server_settings = ServerSettings {
        idle_timeout: args.idle_timeout,
        header_timeout: args.header_timeout,
        max_clients: usize::try_from(args.max_clients).unwrap_or(usize::MAX),
        shutdown_timeout: args.shutdown_timeout,
        fd_reserve: fd_reserve_for(storage::file_descriptors(&url, args.db.max_connections)),
    };
    let state =
        match server::prepare(&args.db.schema, &url, &args.db.connect_options(), settings).await {
            Ok(state) => state,
            Err(e) => return fail(&e),
        };
    if let Some(file) = &args.seed {
        let data = match read_json(file) {
            Ok(d) => d,
            Err(code) => return code,
        };
        match seed::load(&state, &data).await {
            Ok(report) => {
                for (name, n) in &report.inserted {
                    tracing::info!(resource = %name, rows = n, "seeded");
                }
            }
            Err(e) => {
                eprintln!("error: seeding {} failed: {e}", file.display());
                return ExitCode::FAILURE;
            }
        }
    }
    anteroom_engine::queues::start_sweeper(&state);
    anteroom_engine::streams::start_watcher(&state);
    if state.model.auth.is_none() {
        tracing::warn!(
            "{} has no [auth] section: every resource is PUBLIC (prototype mode); anyone who can reach this port can read and write everything",
            args.db.schema.display()
        );
    }
    let listener = match tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}:{}: {e}", args.host, args.port);
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().map_or_else(
        |_| format!("{}:{}", args.host, args.port),
        |a| a.to_string(),
    );
    tracing::info!(
        app = %state.model.name,
        database = state.storage.backend(),
        "listening on http://{address}"
    );
    let streams = state.streams.clone();
    match server::serve(listener, app(state), &server_settings, move || {
        streams.close()
    })
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(db: &DatabaseArgs, dry_run: bool) -> ExitCode {
    let model = match schema::load_file(&db.schema) {
        Ok(m) => std::sync::Arc::new(m),
        Err(e) => return fail(&StartError::Schema(e)),
    };
    let storage = match storage::connect(&db.url(), &db.connect_options(), model.clone()).await {
        Ok(s) => s,
        Err(e) => return fail(&StartError::Database(e)),
    };
    let mode = if dry_run {
        MigrateMode::DryRun
    } else {
        MigrateMode::Apply
    };
    match storage.migrate(model.snapshot(), mode).await {
        Ok(report) => {
            for statement in &report.statements {
                println!("{statement};");
            }
            if report.statements.is_empty() {
                eprintln!(
                    "the database is up to date (schema version {})",
                    report.version
                );
            } else if report.applied {
                eprintln!(
                    "applied {} statements (schema version {})",
                    report.statements.len(),
                    report.version
                );
            } else {
                eprintln!("dry run: nothing was changed");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&StartError::Migration(e)),
    }
}

async fn seed_file(db: &DatabaseArgs, file: &Path) -> ExitCode {
    let data = match read_json(file) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let state = match server::prepare(
        &db.schema,
        &db.url(),
        &db.connect_options(),
        Settings::default(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match seed::load(&state, &data).await {
        Ok(report) => {
            for (name, n) in &report.inserted {
                println!("{name}: {n} rows inserted");
            }
            for name in &report.skipped {
                println!("{name}: skipped (already has rows)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_json(file: &Path) -> Result<serde_json::Value, ExitCode> {
    std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| {
            eprintln!("error: cannot read {}: {e}", file.display());
            ExitCode::from(2)
        })
}
