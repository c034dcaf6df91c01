//! The typed application model that every later stage reads: resources, their
//! columns (system and user fields alike) and constraints. Built once by
//! [`super::load`]; nothing downstream re-validates the schema file.

use indexmap::IndexMap;
use regex::Regex;
use serde_json::Value as Json;

/// A whole application: what `anteroom.toml` describes.
#[derive(Debug, Clone)]
pub struct AppModel {
    /// `[app] name`.
    pub name: String,
    /// Resources in file order, keyed by their URL name (`/students`).
    pub resources: IndexMap<String, Resource>,
    /// `[auth]`; `None` is a prototype where every operation is public.
    pub auth: Option<AuthModel>,
    /// Waiting-room queues in file order, keyed by their URL name (`/queues/{name}`).
    pub queues: IndexMap<String, super::queue::Queue>,
    /// The tables, indexes and foreign keys the database holds for this
    /// model, with their names: chosen once, while loading, so a schema whose
    /// names cannot be made unique is refused there.
    pub(crate) snapshot: crate::storage::migrate::Snapshot,
    /// What the file says that has no effect (rules without `[auth]`):
    /// `check` prints them, `serve` logs them.
    pub warnings: Vec<super::SchemaError>,
}

/// `[auth]`: how callers prove who they are. Secrets are named here (env
/// variables, key files) and read when the server starts.
#[derive(Debug, Clone, Default)]
pub struct AuthModel {
    /// JWT bearer tokens.
    pub jwt: Option<JwtSettings>,
    /// Shared API keys.
    pub api_key: Option<ApiKeySettings>,
    /// Built-in accounts (`/auth/signup`, `/auth/login`, `/auth/me`).
    pub accounts: Option<AccountsSettings>,
    /// API Gateway authorizer claims as the identity (Lambda only).
    pub gateway: Option<GatewaySettings>,
}

/// `[auth.gateway_claims]`: trust the claims API Gateway's authorizer put in
/// the request context. Only the Lambda adapter reads them: over plain HTTP
/// there is no gateway to vouch for them.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Dotted path of the subject claim (default `sub`).
    pub subject_claim: String,
    /// Dotted path of the role claim (default `cognito:groups`).
    pub role_claim: String,
}

/// `[auth.accounts]`.
#[derive(Debug, Clone)]
pub struct AccountsSettings {
    /// The resource holding accounts (default `users`).
    pub resource: String,
    /// Environment variable holding the token signing secret (≥ 32 bytes).
    pub secret_env: String,
    /// Lifetime of issued tokens, in seconds.
    pub token_ttl_s: u64,
}

/// `[auth.jwt]`.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Accepted `alg` values (`HS256`, `RS256`, `ES256`, `EdDSA`, …); nothing else is.
    pub algorithms: Vec<String>,
    /// Where the verification key comes from.
    pub key: JwtKeySource,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Allowed clock skew for `exp`/`nbf`, in seconds.
    pub leeway_s: u64,
    /// Dotted path of the subject claim (default `sub`).
    pub subject_claim: String,
    /// Dotted path of the role claim (a string or an array of strings; default `role`).
    pub role_claim: String,
}

/// A JWT verification key source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKeySource {
    /// HMAC secret read from this environment variable.
    SecretEnv(String),
    /// A PEM public key file (RSA, EC or Ed25519), relative to the schema file.
    PublicKeyFile(String),
    /// A JWKS document on disk, keys chosen by `kid`, relative to the schema file.
    JwksFile(String),
    /// A JWKS URL: fetched on first use, refreshed every `refresh_s` and on an
    /// unknown `kid` (at most once per 5 s).
    JwksUrl {
        /// The `https://…/.well-known/jwks.json` address.
        url: String,
        /// Seconds between background refreshes.
        refresh_s: u64,
    },
}

/// `[auth.api_keys]`.
#[derive(Debug, Clone)]
pub struct ApiKeySettings {
    /// Environment variable holding the key.
    pub env: String,
    /// Header carrying the key.
    pub header: Option<String>,
    /// Query parameter carrying the key.
    pub query: Option<String>,
    /// Role granted to callers with the key.
    pub role: Option<String>,
    /// Subject recorded in `created_by`/`updated_by`.
    pub subject: String,
}

/// Who may perform an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, authenticated or not.
    Public,
    /// Any authenticated caller.
    Authenticated,
    /// The caller whose subject is the row's `created_by`.
    Owner,
    /// Callers with any of these roles.
    Roles(Vec<String>),
    /// Nobody (an operation without a rule once `[auth]` exists).
    Denied,
    /// The rows whose field equals (or differs from) a literal or a claim
    /// of the caller: `published = true`, `tenant_id = claim:tenant`.
    Row(RowTest),
    /// Every part holds: `role:editor & tenant_id = claim:tenant`.
    All(Vec<Rule>),
    /// Any alternative holds: a list, or `owner | role:librarian`.
    Any(Vec<Rule>),
}

/// A row condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowTest {
    /// The field compared.
    pub field: String,
    /// `=` (else `!=`).
    pub equal: bool,
    /// What it is compared with.
    pub operand: Operand,
}

/// The right-hand side of a [`RowTest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// A value written in the schema (checked against the field's type).
    Literal(Json),
    /// The caller's claim at this dotted path.
    Claim(String),
}

impl Rule {
    /// Whether the rule may refuse a caller with valid credentials (a 403):
    /// roles, `none` and claims may; `owner` and literal conditions only
    /// narrow the rows.
    pub fn may_refuse_identity(&self) -> bool {
        match self {
            Rule::Public | Rule::Authenticated | Rule::Owner => false,
            Rule::Roles(_) | Rule::Denied => true,
            Rule::Row(test) => matches!(test.operand, Operand::Claim(_)),
            Rule::All(parts) => parts.iter().any(Rule::may_refuse_identity),
            Rule::Any(alternatives) => alternatives.iter().all(Rule::may_refuse_identity),
        }
    }

    /// Whether a caller without credentials may pass (on some rows, for a
    /// rule comparing a field with a literal).
    pub fn allows_anonymous(&self) -> bool {
        match self {
            Rule::Public => true,
            Rule::Row(test) => matches!(test.operand, Operand::Literal(_)),
            Rule::All(parts) => parts.iter().all(Rule::allows_anonymous),
            Rule::Any(alternatives) => alternatives.iter().any(Rule::allows_anonymous),
            _ => false,
        }
    }
}

/// The rule as a schema writes it (`owner | role:librarian`), for messages
/// and documents.
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Public => f.write_str("public"),
            Rule::Authenticated => f.write_str("authenticated"),
            Rule::Owner => f.write_str("owner"),
            Rule::Denied => f.write_str("none"),
            Rule::Roles(roles) => write!(f, "role:{}", roles.join("|")),
            Rule::Row(test) => {
                write!(f, "{} {} ", test.field, if test.equal { "=" } else { "!=" })?;
                match &test.operand {
                    Operand::Literal(Json::String(s)) => write!(f, "'{s}'"),
                    Operand::Literal(other) => write!(f, "{other}"),
                    Operand::Claim(name) => write!(f, "claim:{name}"),
                }
            }
            Rule::All(parts) | Rule::Any(parts) => {
                let joint = if matches!(self, Rule::All(_)) {
                    " & "
                } else {
                    " | "
                };
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(joint)?;
                    }
                    // `&` binds tighter than `|`, as written.
                    part.fmt(f)?;
                }
                Ok(())
            }
        }
    }
}

/// Rules per operation of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `GET /{res}`.
    pub list: Rule,
    /// `GET /{res}/{id}`.
    pub read: Rule,
    /// `POST /{res}` (and PUT creating a key).
    pub create: Rule,
    /// `PATCH`/`PUT`.
    pub update: Rule,
    /// `DELETE`.
    pub delete: Rule,
}

impl Rules {
    /// Every operation public (no `[auth]`).
    pub fn public() -> Self {
        Rules {
            list: Rule::Public,
            read: Rule::Public,
            create: Rule::Public,
            update: Rule::Public,
            delete: Rule::Public,
        }
    }
}

impl AppModel {
    /// The resource served at `/{name}`, if any.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.get(name)
    }

    /// What the database holds for this model (the target of migrations).
    pub fn snapshot(&self) -> &crate::storage::migrate::Snapshot {
        &self.snapshot
    }
}

/// How a resource's primary key is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdKind {
    /// UUID v7 generated by the engine (the default): time ordered, unguessable.
    Uuid,
    /// Integer chosen by the database (autoincrement).
    Integer,
    /// A string chosen by the client (`userId` in the users example); PUT upserts.
    Key {
        /// Longest accepted key, in characters.
        max_length: usize,
    },
}

/// One resource: a table and its routes.
#[derive(Debug, Clone)]
pub struct Resource {
    /// URL segment and table name.
    pub name: String,
    /// Primary key strategy.
    pub id_kind: IdKind,
    /// Every column in rendering order: the id, the user fields, then the
    /// audit columns (`created_at`, `updated_at`, `created_by`, `updated_by`).
    pub columns: Vec<Column>,
    /// `Cache-Control` value sent with successful GETs, when configured.
    pub cache_control: Option<String>,
    /// Composite (non-unique) indexes declared with `indexes = [[...]]`.
    pub indexes: Vec<Vec<String>>,
    /// Who may list, read, create, update and delete.
    pub rules: Rules,
    /// Built-in accounts: which writes revoke the account's tokens.
    pub tokens: Option<TokenRevocation>,
}

/// How an accounts resource revokes the tokens it issued: each token carries
/// the account's version, and a token whose version is not the current one is
/// refused. Changing one of `revoked_by` (a role, the password) bumps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRevocation {
    /// The hidden integer column holding the account's current token version.
    pub version_column: String,
    /// Fields whose change revokes every token issued before it.
    pub revoked_by: Vec<String>,
}

impl Resource {
    /// The primary key column (always the first).
    pub fn id_column(&self) -> &Column {
        &self.columns[0]
    }

    /// The column `owner` rules compare with the caller's subject.
    pub fn owner_column(&self) -> Option<&Column> {
        let by_role = |role| self.columns.iter().find(|c| c.role == role);
        by_role(ColumnRole::Owner).or_else(|| by_role(ColumnRole::CreatedBy))
    }

    /// A column by its API name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The columns a client may send in a body.
    pub fn writable_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.is_writable())
    }

    /// Ref columns of this resource that point at `parent`.
    pub fn refs_to<'a>(&'a self, parent: &'a str) -> impl Iterator<Item = &'a Column> + 'a {
        self.columns
            .iter()
            .filter(move |c| !c.hidden && matches!(&c.ty, FieldType::Ref(r) if r.to == parent))
    }

    /// Whether the client chooses the id (PUT may create).
    pub fn has_client_key(&self) -> bool {
        matches!(self.id_kind, IdKind::Key { .. })
    }
}

/// What a column is for: decides who may write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRole {
    /// The primary key.
    Id,
    /// A field declared in the schema file.
    Field,
    /// Set once by the engine on insert.
    CreatedAt,
    /// Set by the engine on every write.
    UpdatedAt,
    /// The authenticated subject that created the row.
    CreatedBy,
    /// The authenticated subject that last wrote the row.
    UpdatedBy,
    /// Maintained by the engine (a queue entry's ticket, status, partition
    /// values, transition times): rendered, never written by a client.
    Maintained,
    /// The subject `owner` rules compare with (a queue entry's member's
    /// owner); `created_by` where a table has none.
    Owner,
    /// Computed by the database from the row's status (a queue entry's
    /// member while it is active, NULL otherwise), so a unique index on it
    /// holds "one active entry per member" whatever writes the row.
    Active,
}

/// A column: a declared field or one the engine maintains.
#[derive(Debug, Clone)]
pub struct Column {
    /// API name and SQL column name.
    pub name: String,
    /// Value type.
    pub ty: FieldType,
    /// Who writes it.
    pub role: ColumnRole,
    /// Validation and storage constraints.
    pub constraints: Constraints,
    /// Who may set this field beyond the operation's rule (`writable = false`
    /// is [`Rule::Denied`]: only its default ever applies).
    pub writable: Option<Rule>,
    /// Never rendered, filtered or sorted on.
    pub hidden: bool,
}

impl Column {
    /// Whether a client may send this column in a body.
    pub fn is_writable(&self) -> bool {
        self.role == ColumnRole::Field
    }

    /// Whether the column may hold NULL.
    pub fn nullable(&self) -> bool {
        match self.role {
            ColumnRole::Id | ColumnRole::CreatedAt | ColumnRole::UpdatedAt => false,
            ColumnRole::CreatedBy | ColumnRole::UpdatedBy | ColumnRole::Active => true,
            ColumnRole::Field | ColumnRole::Maintained | ColumnRole::Owner => {
                !self.constraints.required
            }
        }
    }

    /// The scalar this column stores (refs store their target's key type).
    pub fn scalar(&self) -> Scalar {
        self.ty.scalar()
    }
}

/// Constraints from the schema file. Those that change the database (required,
/// unique, references) are also enforced by it; the rest are checked by the engine.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    /// Must be present on create (unless defaulted) and never null.
    pub required: bool,
    /// Enforced by a unique index.
    pub unique: bool,
    /// Plain index for filtering and sorting.
    pub index: bool,
    /// Value used on create when the body omits the field (JSON form).
    pub default: Option<Json>,
    /// Smallest allowed number.
    pub min: Option<f64>,
    /// Largest allowed number.
    pub max: Option<f64>,
    /// Shortest allowed string, in characters.
    pub min_length: Option<usize>,
    /// Longest allowed string, in characters.
    pub max_length: Option<usize>,
    /// A regular expression the whole string must match.
    pub pattern: Option<Pattern>,
    /// A named string format.
    pub format: Option<Format>,
    /// Stored trimmed and lowercased, on every write path and in filters, so
    /// the unique index holds for the normalised value (`Alice` is `alice`).
    pub lowercase: bool,
    /// Decimals: digits after the point, at most (more is a 422) and always
    /// in responses (`12.50`, not `12.5`).
    pub scale: Option<u32>,
}

/// A compiled `pattern` with its source kept for messages and migrations.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The pattern as written.
    pub source: String,
    /// Anchored at both ends.
    pub regex: Regex,
}

/// Named string formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An email address (RFC 5322 addr-spec, as `email_address` checks it).
    Email,
    /// An absolute URL.
    Url,
    /// A UUID in any standard text form.
    Uuid,
}

/// A field's declared type.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    /// Short text (`VARCHAR(max_length)` where the dialect needs a length).
    String,
    /// Long text.
    Text,
    /// 64-bit integer.
    Integer,
    /// 64-bit float.
    Float,
    /// Exact decimal; rendered as a JSON string so no precision is lost.
    Decimal,
    /// true/false.
    Boolean,
    /// Instant, rendered RFC 3339 in UTC with microseconds.
    Timestamp,
    /// Calendar date, `YYYY-MM-DD`.
    Date,
    /// A UUID.
    Uuid,
    /// Any JSON value.
    Json,
    /// One of a fixed set of strings.
    Enum(Vec<String>),
    /// A reference to another resource's id.
    Ref(RefSpec),
}

/// The target of a `ref` field.
#[derive(Debug, Clone, PartialEq)]
pub struct RefSpec {
    /// Target resource name.
    pub to: String,
    /// The target's id kind: decides the stored type.
    pub key: IdKind,
    /// What deleting the target does to this row.
    pub on_delete: OnDelete,
}

/// Referential action when the referenced row is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// Refuse the delete with 409 (the default).
    Restrict,
    /// Delete this row too.
    Cascade,
    /// Set this field to null (the field must not be required).
    SetNull,
}

impl OnDelete {
    /// The schema-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Restrict => "restrict",
            OnDelete::Cascade => "cascade",
            OnDelete::SetNull => "set_null",
        }
    }
}

/// The storage-level kind of a value: what every dialect maps to a SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scalar {
    /// Any string (string, text, enum, client keys).
    Text,
    /// 64-bit integer.
    Int,
    /// 64-bit float.
    Float,
    /// Exact decimal.
    Decimal,
    /// Boolean.
    Bool,
    /// UTC instant.
    Timestamp,
    /// Calendar date.
    Date,
    /// UUID.
    Uuid,
    /// JSON document.
    Json,
}

impl FieldType {
    /// The storage scalar of this type.
    pub fn scalar(&self) -> Scalar {
        match self {
            FieldType::String | FieldType::Text | FieldType::Enum(_) => Scalar::Text,
            FieldType::Integer => Scalar::Int,
            FieldType::Float => Scalar::Float,
            FieldType::Decimal => Scalar::Decimal,
            FieldType::Boolean => Scalar::Bool,
            FieldType::Timestamp => Scalar::Timestamp,
            FieldType::Date => Scalar::Date,
            FieldType::Uuid => Scalar::Uuid,
            FieldType::Json => Scalar::Json,
            FieldType::Ref(r) => r.key.scalar(),
        }
    }

    /// The schema-file name of the type.
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Decimal => "decimal",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
            FieldType::Date => "date",
            FieldType::Uuid => "uuid",
            FieldType::Json => "json",
            FieldType::Enum(_) => "enum",
            FieldType::Ref(_) => "ref",
        }
    }
}

impl IdKind {
    /// The storage scalar of ids of this kind.
    pub fn scalar(&self) -> Scalar {
        match self {
            IdKind::Uuid => Scalar::Uuid,
            IdKind::Integer => Scalar::Int,
            IdKind::Key { .. } => Scalar::Text,
        }
    }
}

impl Scalar {
    /// Whether `gt`/`lt`/sorting make sense for this scalar.
    pub fn is_ordered(self) -> bool {
        !matches!(self, Scalar::Json | Scalar::Bool)
    }

    /// Whether `like`/`ilike` apply.
    pub fn is_textual(self) -> bool {
        self == Scalar::Text
    }
}
