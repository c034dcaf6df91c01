//! Reading `anteroom.toml`: TOML syntax and shape through serde (with the key path
//! of the first shape error), then every semantic check at once, each error
//! naming its key path. The output is an [`AppModel`] that later stages trust.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value as Json;

use super::model::*;
use crate::value::{self, Value};

/// Names every resource gets from the engine; a field may not reuse them.
pub const SYSTEM_COLUMNS: [&str; 5] =
    ["id", "created_at", "updated_at", "created_by", "updated_by"];

/// Query-string parameters with a meaning of their own; a field may not be named so.
pub const RESERVED_PARAMS: [&str; 7] = [
    "sort", "limit", "offset", "cursor", "fields", "expand", "count",
];

/// Default `max_length` of a client-chosen string key.
const DEFAULT_KEY_LENGTH: usize = 255;

/// Default `max_length` of a `string` field.
pub const DEFAULT_STRING_LENGTH: usize = 255;

/// Longest string a unique or plain index may cover (MySQL's 3072-byte key limit in utf8mb4).
pub const MAX_INDEXED_LENGTH: usize = 768;

/// The most bytes the fields of one index may hold on MySQL (utf8mb4).
pub const MAX_INDEX_BYTES: usize = 3072;

/// The characters of an enum's TEXT column MySQL indexes (its values must
/// fit, so its index is exact).
pub const TEXT_INDEX_PREFIX: usize = 255;

/// The bytes a field takes in a MySQL index key, or why it cannot be in
/// one (`text` and `json`: no database indexes them whole).
fn index_bytes(column: &Column) -> Result<usize, &'static str> {
    Ok(match &column.ty {
        FieldType::Text | FieldType::Json => {
            return Err("a text or json field cannot be indexed; use a string with a max_length");
        }
        FieldType::String => {
            4 * column
                .constraints
                .max_length
                .unwrap_or(DEFAULT_STRING_LENGTH)
        }
        FieldType::Enum(_) => 4 * TEXT_INDEX_PREFIX,
        FieldType::Uuid => 4 * 36,
        FieldType::Ref(r) => match r.key {
            IdKind::Key { max_length } => 4 * max_length,
            IdKind::Uuid => 4 * 36,
            IdKind::Integer => 8,
        },
        FieldType::Decimal => 13,
        _ => 8,
    })
}

/// Longest `string` field, in characters: MySQL stores longer VARCHARs as TEXT,
/// which holds 65,535 bytes (16,383 four-byte characters). Longer values are `text`.
pub const MAX_STRING_LENGTH: usize = 16_383;

/// Everything wrong with a schema file, each with its key path.
#[derive(Debug)]
pub struct SchemaErrors {
    /// The file the errors are about.
    pub file: PathBuf,
    /// One entry per problem found.
    pub errors: Vec<SchemaError>,
}

/// One problem in a schema file.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaError {
    /// Dotted key path, e.g. `resources.students.fields.email.type`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SchemaErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "{}: {}", self.file.display(), e.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file.display(), e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for SchemaErrors {}

#[derive(Debug, Deserialize)]
struct RawSchema {
    app: RawApp,
    #[serde(default)]
    resources: IndexMap<String, RawResource>,
    auth: Option<RawAuth>,
    #[serde(default)]
    queues: IndexMap<String, RawQueue>,
}

#[derive(Debug, Deserialize)]
struct RawQueue {
    member: String,
    #[serde(default)]
    partition_by: Vec<String>,
    #[serde(default)]
    fields: IndexMap<String, RawField>,
    capacity: Option<u64>,
    serve_timeout: Option<String>,
    on_member_change: Option<String>,
    rules: Option<RawQueueRules>,
}

#[derive(Debug, Deserialize, Default)]
struct RawQueueRules {
    join: Option<RawRule>,
    leave: Option<RawRule>,
    view: Option<RawRule>,
    serve: Option<RawRule>,
    manage: Option<RawRule>,
}

#[derive(Debug, Deserialize)]
struct RawAuth {
    jwt: Option<RawJwt>,
    api_keys: Option<RawApiKeys>,
    accounts: Option<RawAccounts>,
    gateway_claims: Option<RawGateway>,
}

#[derive(Debug, Deserialize)]
struct RawGateway {
    subject_claim: Option<String>,
    role_claim: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawAccounts {
    resource: Option<String>,
    secret_env: Option<String>,
    token_ttl_s: Option<u64>,
}

/// The accounts resource as the engine needs it; a declared resource of the
/// same name gets whatever of this it lacks.
const ACCOUNTS_RESOURCE: &str = r#"
fields.username      = { type = "string", required = true, unique = true, min_length = 3, max_length = 32, pattern = "[A-Za-z0-9_.-]+", lowercase = true }
fields.email         = { type = "string", required = true, unique = true, format = "email", max_length = 255, lowercase = true }
fields.password_hash = { type = "text", hidden = true, writable = false }
fields.role          = { type = "string", required = true, default = "user", max_length = 64, writable = "role:admin" }
fields.last_login_at = { type = "timestamp", writable = false }
fields.token_version = { type = "integer", required = true, default = 0, hidden = true, writable = false }
rules = { list = "role:admin", read = "owner", create = "none", update = "owner", delete = "role:admin" }
"#;

/// Adds the accounts resource (or its missing fields) before the model is built.
fn with_accounts(raw: &mut RawSchema, errs: &mut Errors) {
    let Some(accounts) = raw.auth.as_ref().and_then(|a| a.accounts.as_ref()) else {
        return;
    };
    let name = accounts
        .resource
        .clone()
        .unwrap_or_else(|| "users".to_owned());
    let defaults: RawResource = match toml::from_str(ACCOUNTS_RESOURCE) {
        Ok(r) => r,
        Err(e) => {
            errs.add("auth.accounts", format!("internal accounts template: {e}"));
            return;
        }
    };
    match raw.resources.get_mut(&name) {
        None => {
            raw.resources.insert(name, defaults);
        }
        Some(declared) => {
            if declared.id.as_ref().is_some_and(|id| id.ty != "uuid") {
                errs.add(
                    format!("resources.{name}.id"),
                    "an accounts resource has uuid ids",
                );
            }
            for (field, spec) in &declared.fields {
                if spec.required && spec.default.is_none() && !defaults.fields.contains_key(field) {
                    errs.add(
                        format!("resources.{name}.fields.{field}"),
                        "signup cannot fill this field: give it a default or make it optional",
                    );
                }
            }
            for (field, spec) in defaults.fields {
                match field.as_str() {
                    // The engine's own bookkeeping: never the schema author's to redefine.
                    "token_version" => {
                        declared.fields.insert(field, spec);
                    }
                    _ => {
                        declared.fields.entry(field).or_insert(spec);
                    }
                }
            }
            // Login looks accounts up by their lowercased name: every write stores it so.
            for field in ["username", "email"] {
                if let Some(spec) = declared.fields.get_mut(field) {
                    spec.lowercase = true;
                }
            }
            if declared.rules.is_none() {
                declared.rules = defaults.rules;
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawJwt {
    algorithms: Vec<String>,
    secret_env: Option<String>,
    public_key_file: Option<String>,
    jwks_file: Option<String>,
    jwks_url: Option<String>,
    jwks_refresh_s: Option<u64>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: Option<u64>,
    subject_claim: Option<String>,
    role_claim: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawApiKeys {
    env: String,
    header: Option<String>,
    query: Option<String>,
    role: Option<String>,
    subject: Option<String>,
}

/// A rule as written: `"public"`, `"role:admin"`, or a list of roles.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRule {
    One(String),
    Many(Vec<String>),
    Flag(bool),
}

#[derive(Debug, Deserialize, Default)]
struct RawRules {
    list: Option<RawRule>,
    read: Option<RawRule>,
    create: Option<RawRule>,
    update: Option<RawRule>,
    delete: Option<RawRule>,
}

#[derive(Debug, Deserialize)]
struct RawApp {
    name: String,
}

#[derive(Debug, Deserialize)]
struct RawResource {
    id: Option<RawId>,
    #[serde(default)]
    fields: IndexMap<String, RawField>,
    cache_control: Option<String>,
    #[serde(default)]
    indexes: Vec<Vec<String>>,
    rules: Option<RawRules>,
    renamed_from: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawId {
    #[serde(rename = "type")]
    ty: String,
    name: Option<String>,
    max_length: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct RawField {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    unique: bool,
    #[serde(default)]
    index: bool,
    default: Option<toml::Value>,
    min: Option<f64>,
    max: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<String>,
    format: Option<String>,
    values: Option<Vec<String>>,
    to: Option<String>,
    on_delete: Option<String>,
    writable: Option<RawRule>,
    #[serde(default)]
    hidden: bool,
    #[serde(default)]
    lowercase: bool,
    scale: Option<u32>,
    renamed_from: Option<String>,
}

/// Reads and validates a schema file.
pub fn load_file(path: &Path) -> Result<AppModel, SchemaErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| SchemaErrors {
        file: path.to_owned(),
        errors: vec![SchemaError {
            path: String::new(),
            message: format!("cannot read the schema file: {e}"),
        }],
    })?;
    load_str(&text).map_err(|errors| SchemaErrors {
        file: path.to_owned(),
        errors,
    })
}

/// Validates a schema given as TOML text.
pub fn load_str(text: &str) -> Result<AppModel, Vec<SchemaError>> {
    let de = toml::Deserializer::parse(text).map_err(|e| vec![syntax_error(text, &e)])?;
    // Unknown keys are collected rather than fatal, so they are reported
    // together with every semantic error of the file.
    let mut unknown = Vec::new();
    let mut ignored_keys = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| ignored_keys.push(path.to_string());
    let ignored = serde_ignored::Deserializer::new(de, &mut record);
    let raw: Result<RawSchema, _> = serde_path_to_error::deserialize(ignored);
    unknown.extend(ignored_keys.into_iter().map(|path| unknown_key(&path)));
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let path = if path == "." { String::new() } else { path };
            unknown.push(SchemaError {
                message: super::plain::plain(inner.message().trim(), &path),
                path,
            });
            return Err(unknown);
        }
    };
    match build(raw) {
        Ok(model) if unknown.is_empty() => Ok(model),
        Ok(_) => Err(unknown),
        Err(mut errors) => {
            unknown.append(&mut errors);
            Err(unknown)
        }
    }
}

/// An unknown key at a `serde_ignored` path (`resources.a.rules.?.delet`):
/// the path without serde's `?` markers, and the accepted key it is
/// nearest to, or the keys accepted there.
fn unknown_key(path: &str) -> SchemaError {
    use super::suggest::{keys_of, nearest};
    let segments: Vec<&str> = path.split('.').filter(|s| *s != "?").collect();
    let (key, table) = segments
        .split_last()
        .map_or(("", &[][..]), |(k, t)| (*k, t));
    let known: &[&str] = match table {
        [] => keys_of::<RawSchema>(),
        ["app"] => keys_of::<RawApp>(),
        ["resources", _] => keys_of::<RawResource>(),
        ["resources", _, "id"] => keys_of::<RawId>(),
        ["resources" | "queues", _, "fields", _] => keys_of::<RawField>(),
        ["resources", _, "rules"] => keys_of::<RawRules>(),
        ["queues", _] => keys_of::<RawQueue>(),
        ["queues", _, "rules"] => keys_of::<RawQueueRules>(),
        ["auth"] => keys_of::<RawAuth>(),
        ["auth", "jwt"] => keys_of::<RawJwt>(),
        ["auth", "api_keys"] => keys_of::<RawApiKeys>(),
        ["auth", "accounts"] => keys_of::<RawAccounts>(),
        ["auth", "gateway_claims"] => keys_of::<RawGateway>(),
        _ => &[],
    };
    let message = match nearest(key, known.iter().copied()) {
        Some(meant) => format!("unknown key \"{key}\"; did you mean \"{meant}\"?"),
        None if known.is_empty() => format!("unknown key \"{key}\""),
        None => format!(
            "unknown key \"{key}\"; this table takes {}",
            known.join(", ")
        ),
    };
    SchemaError {
        path: segments.join("."),
        message,
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> SchemaError {
    let location = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    SchemaError {
        path: String::new(),
        message: format!("invalid TOML{location}: {}", e.message().trim()),
    }
}

/// What a schema gets wrong (it is refused) and what it says in vain
/// (`check` warns).
#[derive(Default)]
struct Errors {
    errors: Vec<SchemaError>,
    warnings: Vec<SchemaError>,
}

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(SchemaError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(SchemaError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Why rules in a schema without `[auth]` do nothing.
const RULES_WITHOUT_AUTH: &str = "ignored: without [auth] every operation is public; add an [auth] section (docs/auth.md) for these rules to apply";

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

fn build(mut raw: RawSchema) -> Result<AppModel, Vec<SchemaError>> {
    let mut errs = Errors::default();
    with_accounts(&mut raw, &mut errs);
    let accounts_resource = raw
        .auth
        .as_ref()
        .and_then(|a| a.accounts.as_ref())
        .map(|a| a.resource.clone().unwrap_or_else(|| "users".to_owned()));
    if raw.app.name.trim().is_empty() {
        errs.add("app.name", "must not be empty");
    }
    if raw.resources.is_empty() {
        errs.add("resources", "declare at least one resource");
    }

    let auth_on = raw.auth.is_some();
    // Id kinds first: ref fields need their target's key type.
    let mut id_kinds: BTreeMap<String, (IdKind, String)> = BTreeMap::new();
    for (rname, res) in &raw.resources {
        let path = format!("resources.{rname}");
        if !valid_name(rname) {
            errs.add(
                &path,
                "resource names start with a letter and use letters, digits and '_' (at most 63)",
            );
        }
        if rname.starts_with("_") || crate::routes::RESERVED_NAMES.contains(&rname.as_str()) {
            errs.add(
                &path,
                format!(
                    "\"{rname}\" is reserved by the engine (its routes: {})",
                    crate::routes::RESERVED_NAMES.join(", ")
                ),
            );
        }
        // SQLite refuses to create such a table, whatever the case.
        if rname.to_ascii_lowercase().starts_with("sqlite_") {
            errs.add(&path, "SQLite reserves names starting with \"sqlite_\"");
        }
        let (kind, id_name) = match &res.id {
            None => (IdKind::Uuid, "id".to_owned()),
            Some(id) => match id.ty.as_str() {
                "uuid" | "integer" if id.name.is_some() || id.max_length.is_some() => {
                    errs.add(
                        format!("{path}.id"),
                        "only a string key takes `name` and `max_length`",
                    );
                    (IdKind::Uuid, "id".to_owned())
                }
                "uuid" => (IdKind::Uuid, "id".to_owned()),
                "integer" => (IdKind::Integer, "id".to_owned()),
                "string" => {
                    let name = id.name.clone().unwrap_or_else(|| "id".to_owned());
                    if !valid_name(&name) {
                        errs.add(format!("{path}.id.name"), "not a valid column name");
                    }
                    let max_length = id.max_length.unwrap_or(DEFAULT_KEY_LENGTH);
                    if max_length == 0 || max_length > 255 {
                        errs.add(format!("{path}.id.max_length"), "must be between 1 and 255");
                    }
                    (IdKind::Key { max_length }, name)
                }
                other => {
                    errs.add(
                        format!("{path}.id.type"),
                        format!("unknown id type \"{other}\"; expected uuid, integer or string"),
                    );
                    (IdKind::Uuid, "id".to_owned())
                }
            },
        };
        id_kinds.insert(rname.clone(), (kind, id_name));
    }

    let mut renames = crate::storage::migrate::Renames::default();
    let mut resources = IndexMap::new();
    for (rname, res) in raw.resources {
        let path = format!("resources.{rname}");
        if let Some(from) = &res.renamed_from {
            let taken =
                id_kinds.contains_key(from) || renames.tables.values().any(|other| other == from);
            check_renamed_from(&path, &rname, from, taken, &mut errs);
            renames.tables.insert(rname.clone(), from.clone());
        }
        let field_names: Vec<String> = res.fields.keys().cloned().collect();
        let (id_kind, id_name) = id_kinds[&rname].clone();
        let mut columns = vec![Column {
            name: id_name.clone(),
            ty: match &id_kind {
                IdKind::Uuid => FieldType::Uuid,
                IdKind::Integer => FieldType::Integer,
                IdKind::Key { .. } => FieldType::String,
            },
            role: ColumnRole::Id,
            constraints: Constraints {
                required: true,
                max_length: match id_kind {
                    IdKind::Key { max_length } => Some(max_length),
                    _ => None,
                },
                ..Constraints::default()
            },
            writable: None,
            hidden: false,
        }];
        if res.fields.is_empty() {
            errs.add(format!("{path}.fields"), "declare at least one field");
        }
        for (fname, raw_field) in res.fields {
            let fpath = format!("{path}.fields.{fname}");
            if !valid_name(&fname) {
                errs.add(
                    &fpath,
                    "field names start with a letter and use letters, digits and '_' (at most 63)",
                );
            }
            if SYSTEM_COLUMNS.contains(&fname.as_str()) || fname == id_name {
                errs.add(&fpath, format!("\"{fname}\" is maintained by the engine"));
            }
            if RESERVED_PARAMS.contains(&fname.as_str()) {
                errs.add(
                    &fpath,
                    format!("\"{fname}\" is a reserved query parameter; choose another name"),
                );
            }
            if let Some(from) = &raw_field.renamed_from {
                let taken = field_names.contains(from)
                    || *from == id_name
                    || SYSTEM_COLUMNS.contains(&from.as_str())
                    || renames
                        .columns
                        .iter()
                        .any(|((table, _), other)| *table == rname && other == from);
                check_renamed_from(&fpath, &fname, from, taken, &mut errs);
                renames
                    .columns
                    .insert((rname.clone(), fname.clone()), from.clone());
            }
            if let Some(column) =
                build_field(&fname, raw_field, &fpath, &id_kinds, auth_on, &mut errs)
            {
                columns.push(column);
            }
        }
        columns.extend(audit_columns());
        for (i, index) in res.indexes.iter().enumerate() {
            if index.is_empty() {
                errs.add(
                    format!("{path}.indexes[{i}]"),
                    "an index needs at least one field",
                );
            }
            let mut bytes = 0;
            for col in index {
                match columns.iter().find(|c| &c.name == col) {
                    None => errs.add(
                        format!("{path}.indexes[{i}]"),
                        format!("unknown field \"{col}\""),
                    ),
                    Some(column) => match index_bytes(column) {
                        Ok(n) => bytes += n,
                        Err(why) => {
                            errs.add(format!("{path}.indexes[{i}]"), format!("\"{col}\": {why}"))
                        }
                    },
                }
            }
            if bytes > MAX_INDEX_BYTES {
                errs.add(
                    format!("{path}.indexes[{i}]"),
                    format!("its fields may hold {bytes} bytes, and MySQL indexes at most {MAX_INDEX_BYTES} (4 bytes a character): lower their max_length or index fewer fields"),
                );
            }
        }
        if let Some(cc) = &res.cache_control
            && (cc.is_empty() || !cc.is_ascii() || cc.contains(['\r', '\n']))
        {
            errs.add(
                format!("{path}.cache_control"),
                "must be a non-empty ASCII header value",
            );
        }
        let rules = build_rules(res.rules, &path, auth_on, &columns, &mut errs);
        let tokens = (Some(&rname) == accounts_resource.as_ref()).then(|| TokenRevocation {
            version_column: "token_version".to_owned(),
            revoked_by: vec!["role".to_owned(), "password_hash".to_owned()],
        });
        resources.insert(
            rname.clone(),
            Resource {
                name: rname,
                id_kind,
                columns,
                cache_control: res.cache_control,
                indexes: res.indexes,
                rules,
                tokens,
            },
        );
    }

    let mut queues = IndexMap::new();
    for (qname, raw_queue) in raw.queues {
        if let Some(queue) =
            build_queue(&qname, raw_queue, &resources, &id_kinds, auth_on, &mut errs)
        {
            queues.insert(qname, queue);
        }
    }
    let auth = raw.auth.map(|a| build_auth(a, &mut errs));
    if !errs.errors.is_empty() {
        return Err(errs.errors);
    }
    // Table, index and foreign key names, checked once the resources are
    // sound: the same code names them for `check`, `migrate` and `serve`.
    let state = (!queues.is_empty()).then(super::queue::state_resource);
    let tables: Vec<&Resource> = resources
        .values()
        .chain(queues.values().flat_map(|q| [&q.entries, &q.partitions]))
        .chain(state.as_ref())
        .collect();
    let snapshot = crate::storage::migrate::snapshot(&tables, &renames)?;
    Ok(AppModel {
        name: raw.app.name,
        resources,
        auth,
        queues,
        snapshot,
        warnings: errs.warnings,
    })
}

/// `renamed_from = "old"` on `path` (named `name`): a name the schema does
/// not use otherwise, so the migration knows which table or column to rename.
fn check_renamed_from(path: &str, name: &str, from: &str, taken: bool, errs: &mut Errors) {
    let path = format!("{path}.renamed_from");
    if !valid_name(from) {
        errs.add(path, "not a valid name: give the name it had before");
    } else if from == name {
        errs.add(path, "is its own name: remove `renamed_from`");
    } else if taken {
        errs.add(
            path,
            format!(
                "\"{from}\" is still declared in this schema, or renamed twice, so it cannot be renamed: keep one of them"
            ),
        );
    }
}

/// The audit columns every row gets: `created_at` (indexed), `updated_at`,
/// `created_by`, `updated_by`.
fn audit_columns() -> Vec<Column> {
    [
        ("created_at", FieldType::Timestamp, ColumnRole::CreatedAt),
        ("updated_at", FieldType::Timestamp, ColumnRole::UpdatedAt),
        ("created_by", FieldType::String, ColumnRole::CreatedBy),
        ("updated_by", FieldType::String, ColumnRole::UpdatedBy),
    ]
    .into_iter()
    .map(|(name, ty, role)| Column {
        name: name.to_owned(),
        ty,
        role,
        constraints: Constraints {
            index: role == ColumnRole::CreatedAt,
            ..Constraints::default()
        },
        writable: None,
        hidden: false,
    })
    .collect()
}

fn build_field(
    name: &str,
    raw: RawField,
    path: &str,
    id_kinds: &BTreeMap<String, (IdKind, String)>,
    auth_on: bool,
    errs: &mut Errors,
) -> Option<Column> {
    let ty = match raw.ty.as_str() {
        "string" => FieldType::String,
        "text" => FieldType::Text,
        "integer" => FieldType::Integer,
        "float" => FieldType::Float,
        "decimal" => FieldType::Decimal,
        "boolean" => FieldType::Boolean,
        "timestamp" => FieldType::Timestamp,
        "date" => FieldType::Date,
        "uuid" => FieldType::Uuid,
        "json" => FieldType::Json,
        "enum" => match &raw.values {
            Some(values) if !values.is_empty() => {
                let mut seen = std::collections::HashSet::new();
                for v in values {
                    if !seen.insert(v) {
                        errs.add(format!("{path}.values"), format!("\"{v}\" is listed twice"));
                    }
                    // Indexed whole by every database (MySQL: by a prefix this long).
                    if v.chars().count() > TEXT_INDEX_PREFIX {
                        errs.add(
                            format!("{path}.values"),
                            format!("an enum value is at most {TEXT_INDEX_PREFIX} characters"),
                        );
                    }
                }
                FieldType::Enum(values.clone())
            }
            _ => {
                errs.add(
                    format!("{path}.values"),
                    "an enum needs a non-empty `values` list",
                );
                return None;
            }
        },
        "ref" => {
            let Some(to) = &raw.to else {
                errs.add(format!("{path}.to"), "a ref needs `to = \"<resource>\"`");
                return None;
            };
            let Some((key, _)) = id_kinds.get(to.as_str()) else {
                errs.add(format!("{path}.to"), format!("unknown resource \"{to}\""));
                return None;
            };
            let on_delete = match raw.on_delete.as_deref() {
                None | Some("restrict") => OnDelete::Restrict,
                Some("cascade") => OnDelete::Cascade,
                Some("set_null") => {
                    if raw.required {
                        errs.add(
                            format!("{path}.on_delete"),
                            "set_null needs a field that is not required",
                        );
                    }
                    OnDelete::SetNull
                }
                Some(other) => {
                    errs.add(
                        format!("{path}.on_delete"),
                        format!(
                            "unknown action \"{other}\"; expected restrict, cascade or set_null"
                        ),
                    );
                    OnDelete::Restrict
                }
            };
            FieldType::Ref(RefSpec {
                to: to.clone(),
                key: key.clone(),
                on_delete,
            })
        }
        other => {
            const TYPES: [&str; 12] = [
                "string",
                "text",
                "integer",
                "float",
                "decimal",
                "boolean",
                "timestamp",
                "date",
                "uuid",
                "json",
                "enum",
                "ref",
            ];
            let hint = match super::suggest::nearest(other, TYPES) {
                Some(meant) => format!("did you mean \"{meant}\"? "),
                None => String::new(),
            };
            errs.add(
                format!("{path}.type"),
                format!(
                    "unknown type \"{other}\"; {hint}expected one of {}",
                    TYPES.join(", ")
                ),
            );
            return None;
        }
    };
    if raw.values.is_some() && !matches!(ty, FieldType::Enum(_)) {
        errs.add(format!("{path}.values"), "only an enum takes `values`");
    }
    if (raw.to.is_some() || raw.on_delete.is_some()) && !matches!(ty, FieldType::Ref(_)) {
        errs.add(path, "only a ref takes `to` and `on_delete`");
    }
    let scalar = ty.scalar();
    let numeric = matches!(
        ty,
        FieldType::Integer | FieldType::Float | FieldType::Decimal
    );
    let stringy = matches!(ty, FieldType::String | FieldType::Text);
    if (raw.min.is_some() || raw.max.is_some()) && !numeric {
        errs.add(
            path,
            "`min` and `max` apply to integer, float and decimal fields",
        );
    }
    if let (Some(min), Some(max)) = (raw.min, raw.max)
        && min > max
    {
        errs.add(format!("{path}.min"), "is greater than `max`");
    }
    if (raw.min_length.is_some() || raw.max_length.is_some()) && !stringy {
        errs.add(
            path,
            "`min_length` and `max_length` apply to string and text fields",
        );
    }
    if let (Some(min), Some(max)) = (raw.min_length, raw.max_length)
        && min > max
    {
        errs.add(format!("{path}.min_length"), "is greater than `max_length`");
    }
    if raw.max_length == Some(0) {
        errs.add(format!("{path}.max_length"), "must be at least 1");
    }
    if raw.lowercase && !stringy {
        errs.add(
            format!("{path}.lowercase"),
            "applies to string and text fields",
        );
    }
    if raw.pattern.is_some() && !stringy {
        errs.add(
            format!("{path}.pattern"),
            "applies to string and text fields",
        );
    }
    let pattern = raw
        .pattern
        .as_ref()
        .and_then(|p| match super::pattern::compile(p) {
            Ok(pattern) => Some(pattern),
            Err(why) => {
                errs.add(format!("{path}.pattern"), why);
                None
            }
        });
    let format = match raw.format.as_deref() {
        None => None,
        Some(_) if !stringy => {
            errs.add(
                format!("{path}.format"),
                "applies to string and text fields",
            );
            None
        }
        Some("email") => Some(Format::Email),
        Some("url") => Some(Format::Url),
        Some("uuid") => Some(Format::Uuid),
        Some(other) => {
            errs.add(
                format!("{path}.format"),
                format!("unknown format \"{other}\"; expected email, url or uuid"),
            );
            None
        }
    };
    if raw.unique && scalar == Scalar::Json {
        errs.add(format!("{path}.unique"), "a json field cannot be unique");
    }
    if (raw.unique || raw.index) && matches!(ty, FieldType::Text) {
        errs.add(
            path,
            "a text field cannot be unique or indexed; use a string with a max_length",
        );
    }
    // Strings are short text: 255 characters unless max_length says otherwise,
    // so every backend can store and index them (MySQL VARCHAR).
    let scale = match (raw.scale, &ty) {
        (None, _) => None,
        (Some(s), FieldType::Decimal) if s <= crate::value::domain::DECIMAL_SCALE => Some(s),
        (Some(_), FieldType::Decimal) => {
            errs.add(
                format!("{path}.scale"),
                format!(
                    "a decimal keeps at most {} digits after the point",
                    crate::value::domain::DECIMAL_SCALE
                ),
            );
            None
        }
        (Some(_), _) => {
            errs.add(
                format!("{path}.scale"),
                "scale applies to decimal fields only",
            );
            None
        }
    };
    let max_length = match ty {
        FieldType::String => Some(raw.max_length.unwrap_or(DEFAULT_STRING_LENGTH)),
        _ => raw.max_length,
    };
    if matches!(ty, FieldType::String) && max_length.unwrap_or(0) > MAX_STRING_LENGTH {
        errs.add(
            format!("{path}.max_length"),
            format!(
                "a string is at most {MAX_STRING_LENGTH} characters (what every database stores in a string column); use type = \"text\" for longer values"
            ),
        );
    }
    if matches!(ty, FieldType::String)
        && (raw.unique || raw.index)
        && max_length.unwrap_or(0) > MAX_INDEXED_LENGTH
    {
        errs.add(
            format!("{path}.max_length"),
            format!("a unique or indexed string is at most {MAX_INDEXED_LENGTH} characters"),
        );
    }
    let mut constraints = Constraints {
        required: raw.required,
        unique: raw.unique,
        index: raw.index || matches!(ty, FieldType::Ref(_)),
        default: None,
        min: raw.min,
        max: raw.max,
        min_length: raw.min_length,
        max_length,
        pattern,
        format,
        lowercase: raw.lowercase,
        scale,
    };
    // `writable = false` protects data, not access: it holds in prototypes too.
    let writable = raw.writable.map(|w| match w {
        RawRule::Flag(false) => Rule::Denied,
        RawRule::One(o) if o == "owner" => {
            errs.add(
                format!("{path}.writable"),
                "\"owner\" is not a field rule: use false, true, authenticated or role:NAME",
            );
            Rule::Denied
        }
        other => {
            if !auth_on && !matches!(other, RawRule::Flag(_)) {
                errs.warn(format!("{path}.writable"), RULES_WITHOUT_AUTH);
            }
            parse_rule(other, &format!("{path}.writable"), auth_on, None, errs)
        }
    });
    if raw.required
        && raw.default.is_none()
        && writable.as_ref().is_some_and(|w| *w != Rule::Public)
    {
        errs.add(
            path,
            "a required field guarded by `writable` needs a default (callers who may not write it cannot supply it)",
        );
    }
    let column = Column {
        name: name.to_owned(),
        ty,
        role: ColumnRole::Field,
        constraints: constraints.clone(),
        writable,
        hidden: raw.hidden,
    };
    if let Some(default) = raw.default {
        let json = toml_to_json(default);
        match value::from_json(&column, &json).and_then(|v| value::check(&column, &v).map(|_| v)) {
            Ok(Value::Null) => errs.add(format!("{path}.default"), "must not be null"),
            Ok(v) => constraints.default = Some(value::to_json(&v)),
            Err(e) => errs.add(format!("{path}.default"), e.message),
        }
    }
    Some(Column {
        constraints,
        ..column
    })
}

/// Types a partition field may have: values that name a line, compared
/// exactly (no floats, decimals, long text or documents).
const PARTITION_TYPES: [&str; 6] = ["ref", "boolean", "enum", "integer", "string", "date"];

fn build_queue(
    name: &str,
    raw: RawQueue,
    resources: &IndexMap<String, Resource>,
    id_kinds: &BTreeMap<String, (IdKind, String)>,
    auth_on: bool,
    errs: &mut Errors,
) -> Option<super::queue::Queue> {
    use super::queue::{ENTRY_COLUMNS, QueueRules};
    let path = format!("queues.{name}");
    if !valid_name(name) {
        errs.add(
            &path,
            "queue names start with a letter and use letters, digits and '_' (at most 63)",
        );
    }
    if name.to_ascii_lowercase().starts_with("sqlite_") {
        errs.add(&path, "SQLite reserves names starting with \"sqlite_\"");
    }
    let Some(member) = resources.get(&raw.member) else {
        errs.add(
            format!("{path}.member"),
            format!(
                "unknown resource \"{}\"; the member must be one of: {}",
                raw.member,
                resources.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
        return None;
    };
    let mut partition = Vec::new();
    for (i, field) in raw.partition_by.iter().enumerate() {
        let fpath = format!("{path}.partition_by[{i}]");
        match member.column(field) {
            Some(c) if c.role == ColumnRole::Field && !c.hidden => {
                let ty = c.ty.name();
                let bounded = c.ty != FieldType::String
                    || c.constraints.max_length.unwrap_or(DEFAULT_STRING_LENGTH) <= 255;
                if !PARTITION_TYPES.contains(&ty) || !bounded {
                    errs.add(
                        &fpath,
                        format!(
                            "{} is a {ty}; a partition field is a ref, boolean, enum, integer, date or a string of at most 255 characters",
                            c.name
                        ),
                    );
                }
                if partition.iter().any(|p: &&Column| p.name == c.name) {
                    errs.add(&fpath, format!("{field} is listed twice"));
                }
                partition.push(c);
            }
            _ => errs.add(&fpath, format!("{} has no field \"{field}\"", member.name)),
        }
    }
    if partition.len() > 4 {
        errs.add(format!("{path}.partition_by"), "at most 4 fields");
    }
    if raw.capacity == Some(0) {
        errs.add(
            format!("{path}.capacity"),
            "must be at least 1 (omit it for no limit)",
        );
    }
    let serve_timeout = raw.serve_timeout.as_deref().and_then(|t| {
        crate::settings::parse_duration(t)
            .map_err(|e| errs.add(format!("{path}.serve_timeout"), e))
            .ok()
    });
    let on_member_change = match raw.on_member_change.as_deref() {
        None | Some("leave") => super::queue::MemberChange::Leave,
        Some("stay") => super::queue::MemberChange::Stay,
        Some(other) => {
            errs.add(
                format!("{path}.on_member_change"),
                format!("unknown action \"{other}\"; expected leave or stay"),
            );
            super::queue::MemberChange::Leave
        }
    };
    let mut fields = Vec::new();
    for (fname, raw_field) in raw.fields {
        let fpath = format!("{path}.fields.{fname}");
        if !valid_name(&fname) {
            errs.add(
                &fpath,
                "field names start with a letter and use letters, digits and '_' (at most 63)",
            );
        }
        if SYSTEM_COLUMNS.contains(&fname.as_str())
            || ENTRY_COLUMNS.contains(&fname.as_str())
            || raw.partition_by.contains(&fname)
        {
            errs.add(&fpath, format!("\"{fname}\" is maintained by the engine"));
        }
        if RESERVED_PARAMS.contains(&fname.as_str()) {
            errs.add(
                &fpath,
                format!("\"{fname}\" is a reserved query parameter; choose another name"),
            );
        }
        if raw_field.ty == "ref" || raw_field.unique {
            errs.add(
                &fpath,
                "a queue field cannot be a ref or unique (entries are kept as history)",
            );
            continue;
        }
        if let Some(column) = build_field(&fname, raw_field, &fpath, id_kinds, auth_on, errs) {
            fields.push(column);
        }
    }
    let audit = audit_columns();
    let entries = super::queue::entries_resource(name, member, &partition, fields, audit);
    let rules = match (auth_on, raw.rules) {
        (false, raw) => {
            if raw.is_some() {
                errs.warn(format!("{path}.rules"), RULES_WITHOUT_AUTH);
            }
            let raw = raw.unwrap_or_default();
            for (action, rule) in [
                ("join", raw.join),
                ("leave", raw.leave),
                ("view", raw.view),
                ("serve", raw.serve),
                ("manage", raw.manage),
            ] {
                if let Some(r) = rule {
                    parse_rule(
                        r,
                        &format!("{path}.rules.{action}"),
                        false,
                        Some(&entries.columns),
                        errs,
                    );
                }
            }
            QueueRules::public()
        }
        (true, raw) => {
            let raw = raw.unwrap_or_default();
            let mut one = |rule: Option<RawRule>, action: &str| match rule {
                Some(r) => {
                    let at = format!("{path}.rules.{action}");
                    let rule = parse_rule(r, &at, true, Some(&entries.columns), errs);
                    // `join = "owner"` joins with the caller's own member
                    // row: it stands alone.
                    fn holds(rule: &Rule, found: &dyn Fn(&Rule) -> bool) -> bool {
                        match rule {
                            Rule::All(parts) | Rule::Any(parts) => {
                                parts.iter().any(|p| holds(p, found))
                            }
                            other => found(other),
                        }
                    }
                    // The entry's line is copied from the member row as it
                    // is written, so a join is decided before it has one.
                    if action == "join" && holds(&rule, &|r| matches!(r, Rule::Row(_))) {
                        errs.add(
                            &at,
                            "a join rule compares no fields (the entry's line comes from the member row as it joins); conditions apply to view, serve, leave and manage",
                        );
                    }
                    if action == "join"
                        && rule != Rule::Owner
                        && holds(&rule, &|r| *r == Rule::Owner)
                    {
                        errs.add(
                            at,
                            "join = \"owner\" (joining with one's own member row) stands alone",
                        );
                    }
                    rule
                }
                None => Rule::Denied,
            };
            QueueRules {
                join: one(raw.join, "join"),
                leave: one(raw.leave, "leave"),
                view: one(raw.view, "view"),
                serve: one(raw.serve, "serve"),
                manage: one(raw.manage, "manage"),
            }
        }
    };
    let partitions = super::queue::partitions_resource(name, &entries, &raw.partition_by);
    Some(super::queue::Queue {
        name: name.to_owned(),
        member: member.name.clone(),
        partition_by: raw.partition_by,
        capacity: raw.capacity,
        serve_timeout,
        on_member_change,
        rules,
        entries,
        partitions,
    })
}

/// Parses one rule. Without `[auth]` every rule is public (a prototype), but
/// the rules written are still checked so adding `[auth]` later holds no surprise.
/// `fields` are the columns row conditions may compare (`None`: a rule
/// that takes none, such as `writable` and queue rules).
fn parse_rule(
    raw: RawRule,
    path: &str,
    auth_on: bool,
    fields: Option<&[Column]>,
    errs: &mut Errors,
) -> Rule {
    let rule = match raw {
        RawRule::Flag(true) => Rule::Public,
        RawRule::Flag(false) => Rule::Denied,
        RawRule::One(text) => rule_text(&text, path, fields, errs),
        RawRule::Many(items) if items.is_empty() => Rule::Denied,
        RawRule::Many(items) => any_of(
            items
                .iter()
                .map(|item| rule_text(item, path, fields, errs))
                .collect(),
        ),
    };
    if auth_on { rule } else { Rule::Public }
}

/// Splits `text` at `separator` outside quotes.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote = None;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c == separator => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Alternatives as one rule: alone, merged into one list of roles when
/// they are all roles (`role:a | role:b` is `role:a|b`), else any-of.
fn any_of(alternatives: Vec<Rule>) -> Rule {
    let mut flat = Vec::new();
    for rule in alternatives {
        match rule {
            Rule::Any(more) => flat.extend(more),
            other => flat.push(other),
        }
    }
    if flat.len() > 1 && flat.iter().all(|r| matches!(r, Rule::Roles(_))) {
        return Rule::Roles(
            flat.into_iter()
                .flat_map(|r| match r {
                    Rule::Roles(roles) => roles,
                    _ => Vec::new(),
                })
                .collect(),
        );
    }
    match flat.len() {
        1 => flat.pop().unwrap_or(Rule::Denied),
        _ => Rule::Any(flat),
    }
}

const RULE_FORMS: &str = "expected public, authenticated, owner, none, role:NAME or a row condition such as published = true or tenant_id = claim:tenant, joined with | (any of) and & (all of)";

/// One rule as written: `owner | role:librarian`, `published = true`,
/// `role:editor & tenant_id = claim:tenant`. `&` binds tighter than `|`.
fn rule_text(text: &str, path: &str, fields: Option<&[Column]>, errs: &mut Errors) -> Rule {
    let mut alternatives: Vec<Rule> = Vec::new();
    let pieces = split_unquoted(text, '|');
    for (i, raw) in pieces.iter().enumerate() {
        let alternative = raw.trim();
        // `role:a|b` (the form every earlier release read as a list of
        // roles): a bare name after a role is another role. Written
        // without spaces, even a keyword is (`role:admin|owner` names the
        // role owner); with spaces, `role:admin | owner` is an alternative.
        let tight = !raw.starts_with(char::is_whitespace)
            && !pieces[i - usize::from(i > 0)].ends_with(char::is_whitespace);
        if let Some(Rule::Roles(roles)) = alternatives.last_mut()
            && is_role_name(alternative)
            && (tight || !KEYWORDS.contains(&alternative))
        {
            roles.push(alternative.to_owned());
            continue;
        }
        let mut parts: Vec<Rule> = split_unquoted(alternative, '&')
            .into_iter()
            .map(|part| rule_part(part.trim(), path, fields, errs))
            .collect();
        alternatives.push(match parts.len() {
            1 => parts.pop().unwrap_or(Rule::Denied),
            _ => Rule::All(parts),
        });
    }
    any_of(alternatives)
}

const KEYWORDS: [&str; 5] = ["public", "authenticated", "owner", "none", "denied"];

/// A bare word that continues a list of roles (`role:a|b`): no spaces,
/// no condition.
fn is_role_name(text: &str) -> bool {
    !text.is_empty() && !text.contains(['=', ' ', '\t', '&', '\'', '"']) && !text.contains("role:")
}

/// The field types a row condition may compare: those whose values read
/// back exactly as written on every backend.
fn comparable(ty: &FieldType) -> bool {
    matches!(
        ty,
        FieldType::String
            | FieldType::Text
            | FieldType::Enum(_)
            | FieldType::Integer
            | FieldType::Boolean
            | FieldType::Uuid
            | FieldType::Ref(_)
    )
}

fn rule_part(part: &str, path: &str, fields: Option<&[Column]>, errs: &mut Errors) -> Rule {
    match part {
        "public" => return Rule::Public,
        "authenticated" => return Rule::Authenticated,
        "owner" => return Rule::Owner,
        "none" | "denied" => return Rule::Denied,
        _ => {}
    }
    if let Some(role) = part.strip_prefix("role:") {
        // Any name a token may carry (`role:read:posts`, `role:Org Admin`).
        let role = role.trim();
        if !role.is_empty() && !role.contains('=') {
            return Rule::Roles(vec![role.to_owned()]);
        }
        errs.add(path, format!("\"{part}\" names no role; write role:NAME"));
        return Rule::Denied;
    }
    // The first `=` outside quotes, `!=` when a `!` precedes it.
    let operator = split_unquoted(part, '=').first().map(|f| f.len());
    let Some((field, equal, operand)) = operator.filter(|at| *at < part.len()).map(|at| match part
        [..at]
        .strip_suffix('!')
    {
        Some(field) => (field, false, &part[at + 1..]),
        None => (&part[..at], true, &part[at + 1..]),
    }) else {
        errs.add(path, format!("unknown rule \"{part}\"; {RULE_FORMS}"));
        return Rule::Denied;
    };
    let (field, operand) = (field.trim(), operand.trim());
    let Some(fields) = fields else {
        errs.add(
            path,
            format!("\"{part}\": row conditions apply to a resource's rules only; here use public, authenticated, owner, none or role:NAME"),
        );
        return Rule::Denied;
    };
    let Some(column) = fields.iter().find(|c| c.name == field) else {
        let known: Vec<&str> = fields.iter().map(|c| c.name.as_str()).collect();
        errs.add(
            path,
            format!(
                "\"{part}\" compares \"{field}\", which is not a field of this resource ({})",
                known.join(", ")
            ),
        );
        return Rule::Denied;
    };
    if !comparable(&column.ty) {
        errs.add(
            path,
            format!("\"{part}\": rules compare string, text, enum, integer, boolean, uuid and ref fields, and \"{field}\" is not one"),
        );
        return Rule::Denied;
    }
    let operand = if let Some(claim) = operand.strip_prefix("claim:") {
        if claim.is_empty() || claim.contains(char::is_whitespace) {
            errs.add(
                path,
                format!("\"{part}\": write claim:NAME (a dotted path into the token's claims)"),
            );
            return Rule::Denied;
        }
        Operand::Claim(claim.to_owned())
    } else {
        let literal = match operand {
            "true" => Json::Bool(true),
            "false" => Json::Bool(false),
            quoted
                if quoted.len() >= 2
                    && ((quoted.starts_with('\'') && quoted.ends_with('\''))
                        || (quoted.starts_with('"') && quoted.ends_with('"'))) =>
            {
                Json::String(quoted[1..quoted.len() - 1].to_owned())
            }
            number => match number.parse::<i64>() {
                Ok(n) => Json::from(n),
                Err(_) => {
                    errs.add(
                        path,
                        format!("\"{part}\": compare with true, false, a number, a quoted text ('{number}') or claim:NAME"),
                    );
                    return Rule::Denied;
                }
            },
        };
        // The literal must be a value the field can hold (an enum's
        // values, its lengths): a typo would match every row of `!=`.
        if let Err(e) = crate::value::from_json(column, &literal)
            .and_then(|v| crate::value::check(column, &v).map(|()| v))
        {
            errs.add(path, format!("\"{part}\": {} {}", e.field, e.message));
            return Rule::Denied;
        }
        Operand::Literal(literal)
    };
    Rule::Row(RowTest {
        field: field.to_owned(),
        equal,
        operand,
    })
}

fn build_rules(
    raw: Option<RawRules>,
    path: &str,
    auth_on: bool,
    fields: &[Column],
    errs: &mut Errors,
) -> Rules {
    if !auth_on {
        if raw.is_some() {
            errs.warn(format!("{path}.rules"), RULES_WITHOUT_AUTH);
            // Checked, then relaxed: a prototype is public.
            let raw = raw.unwrap_or_default();
            for (op, rule) in [
                ("list", raw.list),
                ("read", raw.read),
                ("create", raw.create),
                ("update", raw.update),
                ("delete", raw.delete),
            ] {
                if let Some(r) = rule {
                    parse_rule(r, &format!("{path}.rules.{op}"), false, Some(fields), errs);
                }
            }
        }
        return Rules::public();
    }
    let raw = raw.unwrap_or_default();
    let mut one = |rule: Option<RawRule>, op: &str| match rule {
        Some(r) => parse_rule(r, &format!("{path}.rules.{op}"), true, Some(fields), errs),
        None => Rule::Denied,
    };
    Rules {
        list: one(raw.list, "list"),
        read: one(raw.read, "read"),
        create: one(raw.create, "create"),
        update: one(raw.update, "update"),
        delete: one(raw.delete, "delete"),
    }
}

const HMAC: [&str; 3] = ["HS256", "HS384", "HS512"];
const ASYMMETRIC: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn build_auth(raw: RawAuth, errs: &mut Errors) -> AuthModel {
    let jwt = raw.jwt.and_then(|j| {
        let path = "auth.jwt";
        if j.algorithms.is_empty() {
            errs.add(format!("{path}.algorithms"), "pin at least one algorithm");
        }
        for alg in &j.algorithms {
            if !HMAC.contains(&alg.as_str()) && !ASYMMETRIC.contains(&alg.as_str()) {
                errs.add(
                    format!("{path}.algorithms"),
                    format!("unknown or unsupported algorithm \"{alg}\" (\"none\" is never accepted)"),
                );
            }
        }
        let hmac = j.algorithms.iter().any(|a| HMAC.contains(&a.as_str()));
        let asymmetric = j.algorithms.iter().any(|a| ASYMMETRIC.contains(&a.as_str()));
        if hmac && asymmetric {
            errs.add(
                format!("{path}.algorithms"),
                "do not mix HMAC and public-key algorithms: a public key must never be usable as an HMAC secret",
            );
        }
        let sources = [
            j.secret_env.is_some(),
            j.public_key_file.is_some(),
            j.jwks_file.is_some(),
            j.jwks_url.is_some(),
        ];
                if let Some(url) = &j.jwks_url {
            let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| url.starts_with(p));
            if !url.starts_with("https://") && !local {
                errs.add(
                    format!("{path}.jwks_url"),
                    "must be an https:// URL (plain http only for localhost): keys fetched in the clear could be swapped",
                );
            }
        }
        // jsonwebtoken checks a key against every pinned algorithm: they must share one family.
        let family = |a: &str| match a {
            a if a.starts_with("HS") => "HMAC",
            a if a.starts_with("RS") || a.starts_with("PS") => "RSA",
            a if a.starts_with("ES") => "EC",
            _ => "EdDSA",
        };
                if j.algorithms
            .first()
            .is_some_and(|first| j.algorithms.iter().any(|a| family(a) != family(first)))
        {
            errs.add(
                format!("{path}.algorithms"),
                "pin algorithms of one key family (HS*, RS*/PS*, ES* or EdDSA)",
            );
        }
        if j.leeway_s.is_some_and(|l| l > 300) {
            errs.add(format!("{path}.leeway_s"), "a clock skew above 300 seconds defeats exp and nbf");
        }
        let key = match (j.secret_env, j.public_key_file, j.jwks_file, j.jwks_url) {
            (Some(env), None, None, None) if hmac => JwtKeySource::SecretEnv(env),
            (None, Some(file), None, None) if asymmetric => JwtKeySource::PublicKeyFile(file),
            (None, None, Some(file), None) if asymmetric => JwtKeySource::JwksFile(file),
            (None, None, None, Some(url)) if asymmetric => JwtKeySource::JwksUrl {
                url,
                refresh_s: j.jwks_refresh_s.unwrap_or(300).max(10),
            },
            _ => {
                errs.add(
                    path,
                    if sources.iter().filter(|s| **s).count() != 1 {
                        "give exactly one of secret_env, public_key_file, jwks_file or jwks_url"
                    } else {
                        "secret_env goes with HS* algorithms; public_key_file, jwks_file and jwks_url with RS*, PS*, ES* or EdDSA"
                    },
                );
                return None;
            }
        };
        Some(JwtSettings {
            algorithms: j.algorithms,
            key,
            issuer: j.issuer,
            audience: j.audience,
            leeway_s: j.leeway_s.unwrap_or(30),
            subject_claim: j.subject_claim.unwrap_or_else(|| "sub".to_owned()),
            role_claim: j.role_claim.unwrap_or_else(|| "role".to_owned()),
        })
    });
    let api_key = raw.api_keys.map(|k| {
        if k.header.is_none() && k.query.is_none() {
            errs.add(
                "auth.api_keys",
                "say where the key is sent: header, query or both",
            );
        }
        ApiKeySettings {
            env: k.env,
            header: k.header.map(|h| h.to_ascii_lowercase()),
            query: k.query,
            role: k.role,
            subject: k.subject.unwrap_or_else(|| "api-key".to_owned()),
        }
    });
    let accounts = raw.accounts.map(|a| AccountsSettings {
        resource: a.resource.unwrap_or_else(|| "users".to_owned()),
        secret_env: a
            .secret_env
            .unwrap_or_else(|| "ANTEROOM_ACCOUNTS_SECRET".to_owned()),
        token_ttl_s: a.token_ttl_s.unwrap_or(3600),
    });
    let gateway = raw.gateway_claims.map(|g| GatewaySettings {
        subject_claim: g.subject_claim.unwrap_or_else(|| "sub".to_owned()),
        role_claim: g.role_claim.unwrap_or_else(|| "cognito:groups".to_owned()),
    });
    AuthModel {
        jwt,
        api_key,
        accounts,
        gateway,
    }
}

fn toml_to_json(v: toml::Value) -> Json {
    match v {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(a) => Json::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Json::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<SchemaError> {
        load_str(text).expect_err("schema should be rejected")
    }

    #[test]
    fn a_minimal_schema_gets_uuid_ids_and_audit_columns() {
        let model = load_str("[app]\nname='x'\n[resources.notes]\nfields.body={type='text'}\n")
            .expect("valid schema");
        let notes = model.resource("notes").unwrap();
        assert_eq!(notes.id_kind, IdKind::Uuid);
        let names: Vec<_> = notes.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "body",
                "created_at",
                "updated_at",
                "created_by",
                "updated_by"
            ]
        );
    }

    const MEMBERS: &str = "[app]\nname='q'\n[resources.students]\nid={type='integer'}\n\
        fields.major={type='integer'}\nfields.score={type='float'}\nfields.bio={type='text'}\n";

    #[test]
    fn a_queue_copies_its_partition_fields_and_keeps_its_own_tables() {
        let model = load_str(&format!(
            "{MEMBERS}[queues.advising]\nmember='students'\npartition_by=['major']\ncapacity=5\n\
             fields.topic={{type='string',max_length=200}}\n"
        ))
        .unwrap();
        let queue = &model.queues["advising"];
        assert_eq!(queue.capacity, Some(5));
        let major = queue.entries.column("major").unwrap();
        assert_eq!(major.ty, FieldType::Integer);
        assert!(!major.is_writable());
        assert!(queue.entries.column("topic").unwrap().is_writable());
        assert!(queue.entries.column("member_id").unwrap().is_writable());
        let tables: Vec<&String> = model.snapshot().tables.keys().collect();
        assert_eq!(
            tables,
            [
                "students",
                "advising",
                "advising_partitions",
                "_anteroom_queues"
            ]
        );
        let active = &model.snapshot().tables["advising"].columns["active_member"];
        assert!(active.generated.is_some() && active.references.is_none());
    }

    #[test]
    fn a_queue_names_what_is_wrong_with_its_member_partition_and_fields() {
        let errs = errors(&format!(
            "{MEMBERS}[queues.line]\nmember='nobody'\n\
             [queues.advising]\nmember='students'\npartition_by=['score','bio','nope']\ncapacity=0\n\
             fields.ticket={{type='integer'}}\nfields.peer={{type='ref',to='students'}}\n"
        ));
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "queues.line.member",
                "queues.advising.partition_by[0]",
                "queues.advising.partition_by[1]",
                "queues.advising.partition_by[2]",
                "queues.advising.capacity",
                "queues.advising.fields.ticket",
                "queues.advising.fields.peer",
            ],
            "{errs:?}"
        );
        assert!(errs[0].message.contains("students"), "{errs:?}");
        assert!(errs[1].message.contains("float"), "{errs:?}");
    }

    #[test]
    fn a_queue_and_a_resource_cannot_share_a_table() {
        let errs = errors(&format!(
            "{MEMBERS}[resources.advising]\nfields.x={{type='string'}}\n[queues.advising]\nmember='students'\n"
        ));
        assert!(
            errs.iter().any(|e| e.message.contains("advising")),
            "{errs:?}"
        );
    }

    #[test]
    fn a_string_key_takes_its_declared_name() {
        let model = load_str(
            "[app]\nname='u'\n[resources.users]\nid={type='string',name='userId'}\nfields.name={type='string'}\n",
        )
        .unwrap();
        assert_eq!(model.resource("users").unwrap().id_column().name, "userId");
    }

    #[test]
    fn an_unknown_type_names_its_key_path() {
        let errs = errors("[app]\nname='x'\n[resources.a]\nfields.b={type='strng'}\n");
        assert_eq!(errs[0].path, "resources.a.fields.b.type");
        assert!(errs[0].message.contains("strng"), "{errs:?}");
    }

    #[test]
    fn an_unknown_key_names_its_path_and_other_errors_are_still_reported() {
        let errs = errors(
            "[app]\nname='x'\n[resources.a]\nfields.b={type='string', requird=true}\nfields.c={type='nope'}\n",
        );
        assert_eq!(errs[0].path, "resources.a.fields.b.requird");
        assert_eq!(
            errs[0].message,
            "unknown key \"requird\"; did you mean \"required\"?"
        );
        assert_eq!(errs[1].path, "resources.a.fields.c.type");
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let errs = errors("[app]\nname='x'\nbroken = \n");
        assert!(errs[0].message.contains("line 3"), "{errs:?}");
    }

    #[test]
    fn a_ref_to_a_missing_resource_is_reported_with_every_other_error() {
        let errs = errors(
            "[app]\nname='x'\n[resources.a]\nfields.b={type='ref',to='nope'}\nfields.c={type='integer',min_length=3}\nfields.sort={type='string'}\n",
        );
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"resources.a.fields.b.to"), "{errs:?}");
        assert!(paths.contains(&"resources.a.fields.c"), "{errs:?}");
        assert!(paths.contains(&"resources.a.fields.sort"), "{errs:?}");
    }

    #[test]
    fn a_default_of_the_wrong_type_is_rejected() {
        let errs =
            errors("[app]\nname='x'\n[resources.a]\nfields.b={type='boolean',default='yes'}\n");
        assert_eq!(errs[0].path, "resources.a.fields.b.default");
    }

    #[test]
    fn a_default_outside_the_bounds_is_rejected() {
        let errs =
            errors("[app]\nname='x'\n[resources.a]\nfields.b={type='integer',min=1,default=0}\n");
        assert_eq!(errs[0].path, "resources.a.fields.b.default");
    }

    #[test]
    fn a_field_named_like_a_system_column_is_rejected() {
        let errs = errors("[app]\nname='x'\n[resources.a]\nfields.created_at={type='string'}\n");
        assert_eq!(errs[0].path, "resources.a.fields.created_at");
    }

    #[test]
    fn a_resource_named_like_an_sqlite_internal_table_is_rejected() {
        let errs = errors("[app]\nname='x'\n[resources.SQLite_x]\nfields.a={type='string'}\n");
        assert_eq!(errs[0].path, "resources.SQLite_x");
        assert!(errs[0].message.contains("sqlite_"), "{errs:?}");
    }

    #[test]
    fn a_syntax_error_is_reported_as_invalid_toml() {
        let errs = errors("[app\nname='x'\n");
        assert!(errs[0].message.starts_with("invalid TOML"), "{errs:?}");
    }
}

#[cfg(test)]
mod renamed_from_tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        load_str(&format!("[app]\nname='t'\n{text}"))
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn renamed_from_must_name_something_the_schema_no_longer_declares() {
        assert_eq!(
            errors(
                "[resources.a]\nrenamed_from='b'\nfields.x={type='string'}\n[resources.b]\nfields.y={type='string'}\n"
            ),
            vec![
                "resources.a.renamed_from: \"b\" is still declared in this schema, or renamed twice, so it cannot be renamed: keep one of them"
            ]
        );
        assert_eq!(
            errors(
                "[resources.a]\nfields.x={type='string',renamed_from='y'}\nfields.y={type='string'}\n"
            ),
            vec![
                "resources.a.fields.x.renamed_from: \"y\" is still declared in this schema, or renamed twice, so it cannot be renamed: keep one of them"
            ]
        );
        assert_eq!(
            errors("[resources.a]\nfields.x={type='string',renamed_from='x'}\n"),
            vec!["resources.a.fields.x.renamed_from: is its own name: remove `renamed_from`"]
        );
        assert_eq!(
            errors("[resources.a]\nrenamed_from='no pe'\nfields.x={type='string'}\n"),
            vec!["resources.a.renamed_from: not a valid name: give the name it had before"]
        );
        assert!(
            errors("[resources.a]\nrenamed_from='b'\nfields.x={type='string',renamed_from='y'}\n")
                .is_empty()
        );
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    const FIELDS: &str = "fields.title = { type = 'string' }\nfields.status = { type = 'enum', values = ['draft', 'published'] }\n";

    fn rule(text: &str) -> Result<Rule, Vec<String>> {
        let schema = format!(
            "[app]\nname='t'\n[auth]\njwt = {{ algorithms = ['HS256'], secret_env = 'S' }}\n[resources.posts]\n{FIELDS}rules = {{ read = {text:?} }}\n"
        );
        load_str(&schema)
            .map(|m| m.resource("posts").unwrap().rules.read.clone())
            .map_err(|e| e.into_iter().map(|e| e.message).collect())
    }

    fn row(field: &str, equal: bool, literal: Json) -> Rule {
        Rule::Row(RowTest {
            field: field.into(),
            equal,
            operand: Operand::Literal(literal),
        })
    }

    #[test]
    fn role_lists_written_without_spaces_keep_meaning_roles_even_when_a_role_is_a_keyword() {
        let roles = |names: &[&str]| Rule::Roles(names.iter().map(|n| n.to_string()).collect());
        assert_eq!(
            rule("role:admin|owner").unwrap(),
            roles(&["admin", "owner"])
        );
        assert_eq!(rule("role:a|b|c").unwrap(), roles(&["a", "b", "c"]));
        assert_eq!(rule("role:a | b").unwrap(), roles(&["a", "b"]));
        assert_eq!(
            rule("role:admin | owner").unwrap(),
            Rule::Any(vec![roles(&["admin"]), Rule::Owner])
        );
        assert_eq!(rule("role:read:posts").unwrap(), roles(&["read:posts"]));
        assert_eq!(rule("role:Org Admin").unwrap(), roles(&["Org Admin"]));
    }

    #[test]
    fn conditions_read_quotes_and_operators_as_written() {
        assert_eq!(
            rule("title = 'a != b | c & d'").unwrap(),
            row("title", true, Json::from("a != b | c & d"))
        );
        assert_eq!(
            rule("status != 'draft'").unwrap(),
            row("status", false, Json::from("draft"))
        );
        assert_eq!(
            rule("role:editor & status = 'draft' | status = 'published'").unwrap(),
            Rule::Any(vec![
                Rule::All(vec![
                    Rule::Roles(vec!["editor".into()]),
                    row("status", true, Json::from("draft"))
                ]),
                row("status", true, Json::from("published")),
            ])
        );
    }

    #[test]
    fn a_literal_the_field_cannot_hold_is_refused_so_a_typo_never_matches_every_row() {
        let refused = rule("status != 'publshed'").unwrap_err();
        assert!(refused[0].contains("must be one of"), "{refused:?}");
        assert!(rule("owner |").is_err());
        assert!(rule("|").is_err());
    }
}
