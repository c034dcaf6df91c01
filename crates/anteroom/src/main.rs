//! The `anteroom` command: parses the command line and wires configuration →
//! state → adapter. Everything else lives in `anteroom_engine`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anteroom_engine::config::{DatabaseArgs, MigrateOnStart, Mode, ServeConfig};
use anteroom_engine::server::{self, StartError};
use anteroom_engine::storage::{self, MigrateMode};
use anteroom_engine::{Settings, app, deploy, schema, seed};
use clap::{Parser, Subcommand};

/// Turn a schema file into a complete REST backend.
#[derive(Debug, Parser)]
#[command(name = "anteroom", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Deploy {
    /// An AWS SAM template (DIR/template.yaml) and the function's code directory (DIR/function/ with the schema).
    Sam {
        /// The schema file.
        #[arg(default_value = "anteroom.toml", env = "ANTEROOM_SCHEMA")]
        schema: PathBuf,
        /// The directory to write (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The gateway in front of the function.
        #[arg(long, value_enum, default_value = "http")]
        api: deploy::ApiKind,
        /// The default processor of the function.
        #[arg(long, value_enum, default_value = "arm64")]
        arch: deploy::Architecture,
        /// Run the function in a VPC (subnets and security groups become parameters).
        #[arg(long)]
        vpc: bool,
        /// Connect to RDS with IAM database authentication instead of a password.
        #[arg(long)]
        rds_iam: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the schema's REST API (applies additive migrations first).
    Serve(ServeConfig),
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
        /// Apply changes that delete or narrow data (removed resources and
        /// fields, type changes, fields becoming required or shorter), after
        /// listing what each loses.
        #[arg(long)]
        allow_destructive: bool,
    },
    /// Print a token the schema's [auth.jwt] HMAC secret signs, for development:
    /// `TOKEN=$(anteroom token --sub alice --role librarian)`.
    Token {
        /// The schema file.
        #[arg(default_value = "anteroom.toml", env = "ANTEROOM_SCHEMA")]
        schema: PathBuf,
        /// Who the caller is (the subject claim).
        #[arg(long)]
        sub: String,
        /// A role of the caller (repeat for several).
        #[arg(long)]
        role: Vec<String>,
        /// How long the token is valid (`30s`, `15m`, `1h`, `7d`).
        #[arg(long, default_value = "1h", value_parser = anteroom_engine::settings::parse_duration)]
        ttl: std::time::Duration,
        /// For a schema that verifies tokens with a public key: the PEM
        /// private key to sign with (its holder's, such as a demo key).
        #[arg(long)]
        private_key: Option<PathBuf>,
    },
    /// Write what a deployment needs: `deploy sam SCHEMA --out DIR`.
    #[command(subcommand)]
    Deploy(Deploy),
    /// Load seed data (a JSON object of resource → rows) into empty resources.
    Seed {
        /// The schema file.
        schema: PathBuf,
        /// The seed file.
        file: PathBuf,
        /// Database URL (sqlite://path). Default: anteroom.db next to the schema file.
        #[arg(long, env = "DATABASE_URL", value_parser = storage::parse_database_url)]
        database_url: Option<String>,
    },
    /// Manage built-in accounts: `accounts create SCHEMA --username … --role admin`.
    #[command(subcommand)]
    Accounts(AccountsCommand),
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Create an account, with any role (the first admin). The password is
    /// read from ANTEROOM_PASSWORD, else from standard input (never a flag).
    Create {
        /// The schema file.
        schema: PathBuf,
        /// The account's username.
        #[arg(long)]
        username: String,
        /// The account's email.
        #[arg(long)]
        email: String,
        /// Its role (default: the accounts resource's default, `user`).
        #[arg(long)]
        role: Option<String>,
        /// Database URL (sqlite://path). Default: anteroom.db next to the schema file.
        #[arg(long, env = "DATABASE_URL", value_parser = storage::parse_database_url)]
        database_url: Option<String>,
    },
}

fn main() -> ExitCode {
    // Lambda starts its `bootstrap` without arguments and with the Runtime
    // API's address in the environment; that is the Lambda adapter's cue.
    let lambda =
        std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() && std::env::args_os().len() == 1;
    let cli = (!lambda).then(Cli::parse);
    let runtime = if lambda {
        // One invocation at a time: one thread starts faster and holds less.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli {
        Some(cli) => runtime.block_on(run(cli.command)),
        None => runtime.block_on(async {
            match anteroom_engine::lambda::run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Check { schema } => check(&schema),
        Command::Openapi { schema } => openapi(&schema),
        Command::Serve(args) => serve(args).await,
        Command::Migrate {
            db,
            dry_run,
            allow_destructive,
        } => migrate(&db, dry_run, allow_destructive).await,
        Command::Deploy(Deploy::Sam {
            schema,
            out,
            api,
            arch,
            vpc,
            rds_iam,
        }) => deploy_sam(
            &schema,
            &out,
            &deploy::SamOptions {
                api,
                architecture: arch,
                vpc,
                rds_iam,
                code_uri: "function/".to_owned(),
            },
        ),
        Command::Accounts(AccountsCommand::Create {
            schema,
            username,
            email,
            role,
            database_url,
        }) => create_account(&schema, database_url, username, email, role).await,
        Command::Seed {
            schema,
            file,
            database_url,
        } => seed_file(&schema, database_url, &file).await,
        Command::Token {
            schema,
            sub,
            role,
            ttl,
            private_key,
        } => token(&schema, &sub, &role, ttl, private_key.as_deref()),
    }
}

fn token(
    path: &Path,
    subject: &str,
    roles: &[String],
    ttl: std::time::Duration,
    private_key: Option<&Path>,
) -> ExitCode {
    let pem = match private_key.map(std::fs::read).transpose() {
        Ok(pem) => pem,
        Err(e) => {
            eprintln!(
                "error: cannot read the private key {}: {e}",
                private_key.unwrap_or(Path::new("")).display()
            );
            return ExitCode::from(2);
        }
    };
    let model = match schema::load_file(path) {
        Ok(m) => m,
        Err(e) => return fail(&StartError::Schema(e)),
    };
    let auth = model.auth.as_ref();
    let Some(jwt) = auth.and_then(|a| a.jwt.as_ref()) else {
        let how = if auth.is_some_and(|a| a.accounts.is_some()) {
            "its tokens come from its accounts: POST /auth/signup, then POST /auth/login"
        } else {
            "add [auth.jwt] with secret_env and algorithms = [\"HS256\"] (docs/auth.md)"
        };
        eprintln!(
            "error: {} has no [auth.jwt] to sign a token for; {how}",
            path.display()
        );
        return ExitCode::from(2);
    };
    match anteroom_engine::auth::jwt::mint(jwt, subject, roles, ttl, pem.as_deref()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
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
                    "; {} {}: {}",
                    model.queues.len(),
                    if model.queues.len() == 1 {
                        "queue"
                    } else {
                        "queues"
                    },
                    model.queues.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            for warning in &model.warnings {
                eprintln!(
                    "{}: {}: warning: {}",
                    path.display(),
                    warning.path,
                    warning.message
                );
            }
            let count = model.resources.len();
            println!(
                "{}: ok ({count} {}: {}{queues}; statements migrating an empty database: {})",
                path.display(),
                if count == 1 { "resource" } else { "resources" },
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

fn deploy_sam(schema_path: &Path, out: &Path, options: &deploy::SamOptions) -> ExitCode {
    let model = match schema::load_file(schema_path) {
        Ok(model) => model,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let code = out.join("function");
    let base = schema_path.parent().unwrap_or(Path::new("."));
    let written = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&code)?;
        std::fs::write(out.join("template.yaml"), deploy::sam(&model, options))?;
        // The function finds its schema as anteroom.toml in its code directory.
        std::fs::copy(schema_path, code.join("anteroom.toml"))?;
        for file in deploy::companion_files(&model) {
            let target = code.join(&file);
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::copy(base.join(&file), target)?;
        }
        // The hand-written migrations go with the schema they follow.
        for file in storage::sql_files(schema_path).map_err(std::io::Error::other)? {
            let folder = code.join(storage::migrate::SQL_FOLDER);
            std::fs::create_dir_all(&folder)?;
            std::fs::write(folder.join(&file.name), &file.text)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        eprintln!("error: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {}/template.yaml and {}/",
        out.display(),
        code.display()
    );
    println!("next:");
    let arch = match options.architecture {
        deploy::Architecture::Arm64 => "--arm64",
        deploy::Architecture::X86_64 => "--x86-64",
    };
    println!("  cargo lambda build --release {arch} -p anteroom");
    println!("  cp target/lambda/anteroom/bootstrap {}/", code.display());
    println!(
        "  sam deploy --guided --template-file {}/template.yaml",
        out.display()
    );
    let secrets = deploy::secret_envs(&model);
    if !secrets.is_empty() {
        println!(
            "  (the template asks for {} as parameters)",
            secrets.join(", ")
        );
    }
    ExitCode::SUCCESS
}

fn fail(e: &StartError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

async fn serve(args: ServeConfig) -> ExitCode {
    let mode = Mode::Server;
    args.init_logging(mode);
    let state = match server::start(&args, mode).await {
        Ok(state) => state,
        Err(e) => return fail(&e),
    };
    anteroom_engine::streams::start_watcher(&state);
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
    match server::serve(listener, app(state), &args.server_settings(), move || {
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

async fn migrate(db: &DatabaseArgs, dry_run: bool, allow_destructive: bool) -> ExitCode {
    let model = match schema::load_file(&db.schema) {
        Ok(m) => std::sync::Arc::new(m),
        Err(e) => return fail(&StartError::Schema(e)),
    };
    let url = db.url(Mode::Server);
    // Opening a SQLite file creates it: a dry run on a missing one shows
    // the migration of an empty database without opening anything.
    if dry_run
        && let Some(file) = storage::sqlite_file(&url)
        && !file.exists()
    {
        let statements = match storage::sql::dry_run(&model) {
            Ok(all) => all
                .into_iter()
                .find(|(backend, _)| {
                    *backend == <storage::sql::sqlite::SqliteDialect as storage::sql::Backend>::NAME
                })
                .map(|(_, statements)| statements)
                .unwrap_or_default(),
            Err(problems) => {
                for problem in problems {
                    eprintln!("{}: {problem}", db.schema.display());
                }
                return ExitCode::from(2);
            }
        };
        for statement in &statements {
            println!("{statement};");
        }
        eprintln!(
            "dry run: nothing was changed ({} does not exist yet; `anteroom migrate` without --dry-run creates it)",
            file.display()
        );
        return ExitCode::SUCCESS;
    }
    let files = match storage::sql_files(&db.schema) {
        Ok(files) => files,
        Err(e) => return fail(&StartError::Migration(storage::MigrationError::Files(e))),
    };
    let storage =
        match storage::connect(&url, &db.connect_options(Mode::Server), model.clone()).await {
            Ok(s) => s,
            Err(e) => return fail(&StartError::Database(e)),
        };
    let mode = MigrateMode {
        apply: !dry_run,
        allow_destructive,
    };
    match storage.migrate(model.snapshot(), &files, mode).await {
        Ok(report) => {
            for statement in &report.statements {
                println!("{statement};");
            }
            if !report.losses.is_empty() {
                eprintln!(
                    "{}:",
                    if report.applied {
                        "deleted or narrowed, as --allow-destructive allowed"
                    } else {
                        "with --allow-destructive, this migration deletes or narrows"
                    }
                );
                for loss in &report.losses {
                    eprintln!("  - {loss}");
                }
            }
            if report.statements.is_empty() {
                eprintln!(
                    "the database is up to date (schema version {})",
                    report.version
                );
            } else if report.applied {
                let n = report.statements.len();
                eprintln!(
                    "applied {n} statement{} (schema version {})",
                    if n == 1 { "" } else { "s" },
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

/// The password of `accounts create`: `ANTEROOM_PASSWORD`, else the first
/// line of standard input, which must not be a terminal (it would echo).
fn operator_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    if let Some(password) = std::env::var_os("ANTEROOM_PASSWORD") {
        return password
            .into_string()
            .map_err(|_| "ANTEROOM_PASSWORD is not valid UTF-8".to_owned());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err("give the password on standard input (`read -rs PW && printf '%s\\n' \"$PW\" | anteroom accounts create …`) or in ANTEROOM_PASSWORD; it is never a flag, which would leave it in the shell history".to_owned());
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err("standard input held no password".to_owned());
    }
    Ok(password)
}

async fn create_account(
    schema: &Path,
    database_url: Option<String>,
    username: String,
    email: String,
    role: Option<String>,
) -> ExitCode {
    let password = match operator_password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match operator_state(schema, database_url).await {
        Ok(state) => state,
        Err(code) => return code,
    };
    let mut fields = serde_json::Map::new();
    fields.insert("username".into(), username.into());
    fields.insert("email".into(), email.into());
    if let Some(role) = role {
        fields.insert("role".into(), role.into());
    }
    match seed::create_account(&state, fields, &password).await {
        Ok(account) => {
            let id = &account["id"];
            println!(
                "created account {} (role {}, id {})",
                account["username"].as_str().unwrap_or(""),
                account["role"].as_str().unwrap_or(""),
                id.as_str().map_or_else(|| id.to_string(), str::to_owned)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The state `seed` and `accounts` write through: the schema, its database
/// migrated, one connection.
async fn operator_state(
    schema: &Path,
    database_url: Option<String>,
) -> Result<anteroom_engine::AppState, ExitCode> {
    let url = database_url.unwrap_or_else(|| server::default_database_url(schema));
    let connect = storage::ConnectOptions {
        max_connections: 1,
        ..storage::ConnectOptions::default()
    };
    server::prepare(
        schema,
        &url,
        &connect,
        Settings::default(),
        MigrateOnStart::Apply,
    )
    .await
    .map_err(|e| fail(&e))
}

async fn seed_file(schema: &Path, database_url: Option<String>, file: &Path) -> ExitCode {
    let data = match read_json(file) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let state = match operator_state(schema, database_url).await {
        Ok(state) => state,
        Err(code) => return code,
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
