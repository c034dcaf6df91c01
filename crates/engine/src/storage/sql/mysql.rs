//! MySQL 8 and MariaDB 10.6+: InnoDB tables in a binary no-pad collation (case-sensitive
//! equality and uniqueness, as on the other backends), no `RETURNING` (rows
//! are re-read by id inside the write transaction), timestamps as UTC
//! `DATETIME(6)`, UUIDs as `CHAR(36)`, and migrations under `GET_LOCK` (DDL is
//! not transactional in MySQL, so a failed migration can leave earlier
//! statements applied; the schema version is recorded only on success). This
//! file is the only place that knows MySQL's types and error numbers.

use std::str::FromStr;
use std::sync::Arc;

use sea_query::{Expr, ExprTrait, Func, LikeExpr, MysqlQueryBuilder};
use serde_json::{Map, Value as Json};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlQueryResult, MySqlRow};
use sqlx::{Executor, MySql, Row};

use super::postgres::literal_backslashes;
use super::request_pool::{Prepare, RequestPool};
use super::{Backend, Dialect, Failure, SCHEMA_TABLE, SqlStorage, field_of_constraint};
use crate::error::ApiError;
use crate::request::query::LikePattern;
use crate::schema::{AppModel, Resource, Scalar};
use crate::storage::migrate::ColumnSpec;
use crate::storage::{ConnectOptions, StoredRow};
use crate::value::{Value, format_timestamp};

/// Longest string stored as VARCHAR (and so indexable); longer ones are TEXT.
const MAX_VARCHAR: usize = 768;

/// MySQL's SQL flavour.
#[derive(Debug, Clone, Copy)]
pub struct MysqlDialect {
    /// A binary collation without trailing-space padding, so `'alice'` and
    /// `'alice '` differ as on the other backends (MariaDB and MySQL name it
    /// differently).
    table_options: &'static str,
}

/// The session's `sql_mode`: strict for every table, no zero or partial dates,
/// plus the two modes sqlx itself sets (`PIPES_AS_CONCAT`, `NO_ENGINE_SUBSTITUTION`).
const STRICT_SQL_MODE: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,PIPES_AS_CONCAT'";

const MARIADB_TABLES: &str = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin";
const MYSQL_TABLES: &str = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_bin";

impl MysqlDialect {
    /// The MariaDB flavour, for rendering DDL without a server (`check`).
    pub(crate) fn mariadb() -> Self {
        MysqlDialect {
            table_options: MARIADB_TABLES,
        }
    }
}

impl Dialect for MysqlDialect {
    type Builder = MysqlQueryBuilder;

    fn bind(&self, value: &Value, scalar: Scalar) -> sea_query::Value {
        use sea_query::Value as V;
        match value {
            Value::Null => match scalar {
                Scalar::Int => V::BigInt(None),
                Scalar::Float => V::Double(None),
                Scalar::Decimal => V::Decimal(None),
                Scalar::Bool => V::Bool(None),
                Scalar::Timestamp => V::ChronoDateTime(None),
                Scalar::Date => V::ChronoDate(None),
                Scalar::Json => V::Json(None),
                Scalar::Text | Scalar::Uuid => V::String(None),
            },
            Value::Bool(b) => V::Bool(Some(*b)),
            Value::Int(i) => V::BigInt(Some(*i)),
            Value::Float(f) => V::Double(Some(*f)),
            Value::Decimal(d) => V::Decimal(Some(*d)),
            Value::Text(s) => V::String(Some(s.clone())),
            Value::Uuid(u) => V::String(Some(u.hyphenated().to_string())),
            Value::Timestamp(t) => V::ChronoDateTime(Some(t.naive_utc())),
            Value::Date(d) => V::ChronoDate(Some(*d)),
            Value::Json(j) => V::Json(Some(Box::new(j.clone()))),
        }
    }

    fn like(&self, column: Expr, pattern: &LikePattern) -> Expr {
        column.like(LikeExpr::new(literal_backslashes(pattern.sql())))
    }

    /// Columns are binary-collated; LOWER() folds with the character set's Unicode rules.
    fn ilike(&self, column: Expr, pattern: &LikePattern) -> Expr {
        Expr::expr(Func::lower(column)).like(LikeExpr::new(literal_backslashes(
            &pattern.sql().to_lowercase(),
        )))
    }

    fn quote(&self, ident: &str) -> String {
        format!("`{}`", ident.replace('`', "``"))
    }

    fn column_type(&self, spec: &ColumnSpec) -> String {
        match spec.scalar {
            Scalar::Text if spec.long => "LONGTEXT".to_owned(),
            Scalar::Text => match spec.max_length {
                Some(n) if n <= MAX_VARCHAR => format!("VARCHAR({n})"),
                _ => "TEXT".to_owned(),
            },
            Scalar::Int => "BIGINT".to_owned(),
            Scalar::Float => "DOUBLE".to_owned(),
            Scalar::Decimal => "DECIMAL(28, 10)".to_owned(),
            Scalar::Bool => "BOOLEAN".to_owned(),
            Scalar::Timestamp => "DATETIME(6)".to_owned(),
            Scalar::Date => "DATE".to_owned(),
            Scalar::Uuid => "CHAR(36)".to_owned(),
            Scalar::Json => "JSON".to_owned(),
        }
    }

    fn id_definition(&self, name: &str, kind: &str, spec: &ColumnSpec) -> String {
        match kind {
            "integer" => format!(
                "{} BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
                self.quote(name)
            ),
            _ => format!(
                "{} {} NOT NULL PRIMARY KEY",
                self.quote(name),
                self.column_type(spec)
            ),
        }
    }

    fn table_options(&self) -> &'static str {
        self.table_options
    }

    fn drop_index(&self, table: &str, name: &str) -> String {
        format!("DROP INDEX {} ON {}", self.quote(name), self.quote(table))
    }

    /// MySQL indexes a TEXT column (an enum's, an unbounded string's) only
    /// by a prefix; enum values fit in it whole.
    fn index_part(&self, column: &str, spec: Option<&ColumnSpec>) -> String {
        match spec.map(|s| self.column_type(s)) {
            Some(ty) if ty.ends_with("TEXT") => {
                format!(
                    "{}({})",
                    self.quote(column),
                    crate::schema::load::TEXT_INDEX_PREFIX
                )
            }
            _ => self.quote(column),
        }
    }

    /// MySQL redeclares the whole column.
    fn alter_column(
        &self,
        table: &str,
        column: &str,
        from: &ColumnSpec,
        to: &ColumnSpec,
    ) -> Vec<String> {
        if self.column_type(from) == self.column_type(to) && from.nullable == to.nullable {
            return Vec::new();
        }
        vec![format!(
            "ALTER TABLE {} MODIFY COLUMN {}",
            self.quote(table),
            super::column_definition(self, column, to, false)
        )]
    }

    fn drop_foreign_key(&self, table: &str, name: &str) -> String {
        format!(
            "ALTER TABLE {} DROP FOREIGN KEY {}",
            self.quote(table),
            self.quote(name)
        )
    }

    fn default_literal(&self, value: &Json, _spec: &ColumnSpec) -> String {
        match value {
            Json::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
            Json::Number(n) => n.to_string(),
            Json::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
            other => format!(
                "('{}')",
                other.to_string().replace('\\', "\\\\").replace('\'', "''")
            ),
        }
    }
}

fn decode_error(e: sqlx::Error) -> ApiError {
    ApiError::internal(e)
}

/// The quoted name after `marker` in a MySQL error message: ``for key 'x'`` or
/// ``CONSTRAINT `x` ``; MySQL 8 prefixes key names with the table.
fn quoted_after<'a>(message: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &message[message.rfind(marker)? + marker.len()..];
    let quote = rest.chars().next()?;
    let inner = &rest[1..];
    let name = &inner[..inner.find(quote)?];
    Some(name.rsplit('.').next().unwrap_or(name))
}

impl Backend for MysqlDialect {
    type Db = MySql;
    const NAME: &'static str = "mysql";
    const RETURNING: bool = false;
    const BEGIN_WRITE: Option<&'static str> = None;

    fn decode(&self, resource: &Resource, row: &MySqlRow) -> Result<StoredRow, ApiError> {
        let mut values = Map::with_capacity(resource.columns.len());
        for (i, column) in resource.columns.iter().enumerate() {
            let json = match column.scalar() {
                Scalar::Text | Scalar::Uuid => row
                    .try_get::<Option<String>, _>(i)
                    .map(|v| v.map_or(Json::Null, Json::String)),
                Scalar::Int => row
                    .try_get::<Option<i64>, _>(i)
                    .map(|v| v.map_or(Json::Null, Json::from)),
                Scalar::Float => row.try_get::<Option<f64>, _>(i).map(|v| {
                    v.and_then(serde_json::Number::from_f64)
                        .map_or(Json::Null, Json::Number)
                }),
                Scalar::Decimal => row
                    .try_get::<Option<rust_decimal::Decimal>, _>(i)
                    .map(|v| v.map_or(Json::Null, |d| crate::value::decimal_json(d, column))),
                Scalar::Bool => row
                    .try_get::<Option<bool>, _>(i)
                    .map(|v| v.map_or(Json::Null, Json::Bool)),
                Scalar::Timestamp => row.try_get::<Option<chrono::NaiveDateTime>, _>(i).map(|v| {
                    v.map_or(Json::Null, |t| Json::String(format_timestamp(&t.and_utc())))
                }),
                Scalar::Date => row.try_get::<Option<chrono::NaiveDate>, _>(i).map(|v| {
                    v.map_or(Json::Null, |d| {
                        Json::String(d.format("%Y-%m-%d").to_string())
                    })
                }),
                // MariaDB's JSON is LONGTEXT: read the text and parse it.
                Scalar::Json => row.try_get_unchecked::<Option<String>, _>(i).map(|v| {
                    v.map_or(Json::Null, |s| {
                        serde_json::from_str(&s).unwrap_or(Json::String(s))
                    })
                }),
            }
            .map_err(decode_error)?;
            values.insert(column.name.clone(), json);
        }
        let version = row
            .try_get::<i64, _>(resource.columns.len())
            .map_err(decode_error)?;
        Ok(StoredRow { values, version })
    }

    fn classify(&self, model: &AppModel, error: &sqlx::Error) -> Failure {
        match error {
            e if super::is_connection_failure(e) => Failure::Unavailable,
            sqlx::Error::Database(d) => {
                let number = d.code().and_then(|c| c.parse::<u32>().ok());
                let message = d.message();
                let mysql_number = d
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(sqlx::mysql::MySqlDatabaseError::number);
                match mysql_number.map(u32::from).or(number) {
                    Some(1062) => {
                        let key = quoted_after(message, "for key ");
                        Failure::Unique {
                            field: key.and_then(|k| field_of_constraint(model, None, k)),
                            primary_key: key == Some("PRIMARY"),
                        }
                    }
                    Some(1451 | 1452) => Failure::ForeignKey {
                        field: quoted_after(message, "CONSTRAINT ")
                            .and_then(|k| field_of_constraint(model, None, k)),
                    },
                    Some(1213) => Failure::Transient,
                    // gone away, lost connection, shutdown, too many connections,
                    // lock wait timeout, statement timeouts (MySQL, MariaDB)
                    Some(2002 | 2006 | 2013 | 1053 | 1040 | 1205 | 3024 | 1969) => {
                        Failure::Unavailable
                    }
                    _ => Failure::Other,
                }
            }
            _ => Failure::Other,
        }
    }

    fn last_insert_id(result: &MySqlQueryResult) -> Option<i64> {
        i64::try_from(result.last_insert_id()).ok()
    }

    fn rows_affected(result: &MySqlQueryResult) -> u64 {
        result.rows_affected()
    }

    fn migration_session(
        &self,
    ) -> (
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    ) {
        (
            &["SELECT GET_LOCK('anteroom_migrate', 60)"],
            &["SELECT RELEASE_LOCK('anteroom_migrate')"],
            &["SELECT RELEASE_LOCK('anteroom_migrate')"],
        )
    }

    fn schema_table_ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version BIGINT PRIMARY KEY, applied_at VARCHAR(64) NOT NULL, snapshot LONGTEXT NOT NULL){}",
            self.table_options
        )
    }

    fn schema_table_count(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '{SCHEMA_TABLE}'"
        )
    }
}

/// Opens a pool on the MySQL or MariaDB database at `url`.
pub async fn connect(
    url: &str,
    options: &ConnectOptions,
    model: Arc<AppModel>,
) -> Result<SqlStorage<MysqlDialect>, String> {
    let mut connect = MySqlConnectOptions::from_str(url)
        .map_err(|e| format!("invalid MySQL URL: {e}"))?
        .charset("utf8mb4")
        .timezone(Some(String::from("+00:00")));
    let tokens = if options.rds_iam {
        use sqlx::mysql::MySqlSslMode;
        // A token is a password, sent in the clear inside TLS
        // (AWSAuthenticationPlugin asks for mysql_clear_password).
        if matches!(
            connect.get_ssl_mode(),
            MySqlSslMode::Disabled | MySqlSslMode::Preferred
        ) {
            connect = connect.ssl_mode(MySqlSslMode::Required);
        }
        connect = connect.enable_cleartext_plugin(true);
        let base = connect.clone();
        let endpoint = (
            connect.get_host(),
            connect.get_port(),
            connect.get_username(),
        );
        let (refresher, first) =
            super::rds_iam::Refresher::<sqlx::MySql>::new(endpoint, move |token| {
                base.clone().password(token)
            })?;
        connect = first;
        Some(refresher)
    } else {
        None
    };
    let seconds = options.statement_timeout.as_secs_f64();
    let prepare: Prepare<sqlx::MySql> =
        Arc::new(move |conn| Box::pin(prepare_session(conn, seconds)));
    let session = prepare.clone();
    let pool = match super::pool_options::<sqlx::MySql>(options, tokens.clone())
        .after_connect(move |conn, _| session(conn))
        .connect_with(connect.clone())
        .await
    {
        Ok(pool) => pool,
        Err(e) => {
            let e = super::first_connect_error(&connect, e, options.acquire_timeout).await;
            let at = super::Endpoint {
                kind: "MySQL",
                host: connect.get_host(),
                port: connect.get_port(),
                database: connect.get_database().unwrap_or_default(),
                user: connect.get_username(),
            };
            return Err(super::describe_connect_error(&at, &e));
        }
    };
    if let Some(tokens) = &tokens {
        tokens.attach(&pool);
    }
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let dialect = MysqlDialect {
        table_options: if version.contains("MariaDB") {
            MARIADB_TABLES
        } else {
            MYSQL_TABLES
        },
    };
    Ok(SqlStorage::new(
        dialect,
        model,
        pool.clone(),
        pool.clone(),
        pool.clone(),
        options.statement_timeout,
    )
    .with_request_pool(RequestPool::new(
        pool,
        tokens,
        Some(prepare),
        options.into(),
    )))
}

/// The session every connection runs in, whichever pool opened it.
async fn prepare_session(conn: &mut MySqlConnection, seconds: f64) -> Result<(), sqlx::Error> {
    // READ COMMITTED, as PostgreSQL: no gap locks, so writers racing on
    // a new key do not deadlock (the upsert race retries instead).
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    // Strict, whatever the server's default: a value the column cannot
    // hold is an error, never a silent truncation or a zero date.
    conn.execute(STRICT_SQL_MODE).await?;
    // MariaDB and MySQL name the statement timeout differently; each ignores the other's.
    let _ = conn
        .execute(sqlx::AssertSqlSafe(format!(
            "SET SESSION max_statement_time = {seconds}"
        )))
        .await;
    let _ = conn
        .execute(sqlx::AssertSqlSafe(format!(
            "SET SESSION max_execution_time = {}",
            (seconds * 1000.0) as u64
        )))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quoted_after;

    #[test]
    fn key_and_constraint_names_are_read_from_error_messages() {
        assert_eq!(
            quoted_after(
                "Duplicate entry 'a' for key 'uq_students_email'",
                "for key "
            ),
            Some("uq_students_email")
        );
        assert_eq!(
            quoted_after(
                "Duplicate entry 'a' for key 'students.uq_students_email'",
                "for key "
            ),
            Some("uq_students_email")
        );
        assert_eq!(
            quoted_after(
                "Cannot add or update a child row: a foreign key constraint fails (`test`.`majors`, CONSTRAINT `fk_majors_college_id` FOREIGN KEY (`college_id`) REFERENCES `colleges` (`id`))",
                "CONSTRAINT "
            ),
            Some("fk_majors_college_id")
        );
    }
}
