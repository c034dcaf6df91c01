//! Typed values: the one place where JSON bodies, query-string text and stored
//! data become a [`Value`] of a column's type, and where field constraints
//! (length, range, pattern, format, enum) are checked.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};
use rust_decimal::Decimal;
use serde_json::Value as Json;
use uuid::Uuid;

use crate::schema::{Column, ColumnRole, FieldType, Format, Scalar};

/// A value of one column, already parsed and typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL / JSON null.
    Null,
    /// boolean.
    Bool(bool),
    /// integer (and integer ids).
    Int(i64),
    /// float.
    Float(f64),
    /// decimal.
    Decimal(Decimal),
    /// string, text, enum and string keys.
    Text(String),
    /// uuid (and uuid ids).
    Uuid(Uuid),
    /// timestamp, in UTC.
    Timestamp(DateTime<Utc>),
    /// date.
    Date(NaiveDate),
    /// json.
    Json(Json),
}

/// The closed catalogue of the codes a 422's `errors[].code` can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldCode {
    /// the value is not of the field's type, or outside its domain.
    Type,
    /// a required field is missing or null.
    Required,
    /// a number below `min`.
    Min,
    /// a number above `max`.
    Max,
    /// a string shorter than `min_length` (in characters).
    MinLength,
    /// a string longer than `max_length` (in characters).
    MaxLength,
    /// a string that does not match `pattern`.
    Pattern,
    /// a string that is not an email, URL or UUID as `format` asks.
    Format,
    /// a value outside the enum's `values`.
    Enum,
    /// the body names a field the resource does not have.
    UnknownField,
    /// a field the server sets, or one the caller may not write.
    ReadOnly,
    /// a client-chosen key in the body that differs from the URL.
    KeyMismatch,
}

impl FieldCode {
    /// Every code, in the order the docs list them.
    pub const ALL: &'static [FieldCode] = &[
        FieldCode::Type,
        FieldCode::Required,
        FieldCode::Min,
        FieldCode::Max,
        FieldCode::MinLength,
        FieldCode::MaxLength,
        FieldCode::Pattern,
        FieldCode::Format,
        FieldCode::Enum,
        FieldCode::UnknownField,
        FieldCode::ReadOnly,
        FieldCode::KeyMismatch,
    ];

    /// The code as it appears in `errors[].code`.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldCode::Type => "type",
            FieldCode::Required => "required",
            FieldCode::Min => "min",
            FieldCode::Max => "max",
            FieldCode::MinLength => "min_length",
            FieldCode::MaxLength => "max_length",
            FieldCode::Pattern => "pattern",
            FieldCode::Format => "format",
            FieldCode::Enum => "enum",
            FieldCode::UnknownField => "unknown_field",
            FieldCode::ReadOnly => "read_only",
            FieldCode::KeyMismatch => "key_mismatch",
        }
    }

    /// What the code means, in one line.
    pub fn description(self) -> &'static str {
        match self {
            FieldCode::Type => "the value is not of the field's type, or outside its domain",
            FieldCode::Required => "a required field is missing or null",
            FieldCode::Min => "a number below `min`",
            FieldCode::Max => "a number above `max`",
            FieldCode::MinLength => "a string shorter than `min_length` (in characters)",
            FieldCode::MaxLength => "a string longer than `max_length` (in characters)",
            FieldCode::Pattern => "a string that does not match `pattern`",
            FieldCode::Format => "a string that is not an email, URL or UUID as `format` asks",
            FieldCode::Enum => "a value outside the enum's `values`",
            FieldCode::UnknownField => "the body names a field the resource does not have",
            FieldCode::ReadOnly => "a field the server sets, or one the caller may not write",
            FieldCode::KeyMismatch => "a client-chosen key in the body that differs from the URL",
        }
    }
}

/// Serialized as [`FieldCode::as_str`]: the one spelling of each code.
impl serde::Serialize for FieldCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Why one value was refused: becomes one entry of a 422's `errors`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldError {
    /// The field (for bulk bodies prefixed with the item index, `[2].email`).
    pub field: String,
    /// Stable machine-readable reason.
    pub code: FieldCode,
    /// Human-readable explanation.
    pub message: String,
}

impl FieldError {
    /// A new error about `field`.
    pub fn new(field: &str, code: FieldCode, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            code,
            message: message.into(),
        }
    }
}

/// Renders a timestamp the one way Anteroom writes them: RFC 3339, UTC, microseconds.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The current time, truncated to what every backend stores (microseconds).
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn type_error(column: &Column) -> FieldError {
    let expected = match &column.ty {
        FieldType::String | FieldType::Text => "a string".to_owned(),
        FieldType::Integer => "an integer".to_owned(),
        FieldType::Float => "a number".to_owned(),
        FieldType::Decimal => "a decimal number (number or numeric string)".to_owned(),
        FieldType::Boolean => "true or false".to_owned(),
        FieldType::Timestamp => "an RFC 3339 timestamp with a time zone".to_owned(),
        FieldType::Date => "a date (YYYY-MM-DD)".to_owned(),
        FieldType::Uuid => "a UUID".to_owned(),
        FieldType::Json => "any JSON value".to_owned(),
        FieldType::Enum(values) => format!("one of {}", values.join(", ")),
        FieldType::Ref(r) => format!("the id of a row of {}", r.to),
    };
    FieldError::new(&column.name, FieldCode::Type, format!("must be {expected}"))
}

/// The value domain: what every backend stores and reads back exactly. Every
/// [`Value`] built by [`from_json`] (bodies, filters, cursors, ids) is inside it,
/// so no database ever sees a value it would round, move, zero or refuse.
pub mod domain {
    /// Earliest year of a date or timestamp (MySQL and MariaDB store years 0001–9999).
    pub const MIN_YEAR: i32 = 1;
    /// Latest year of a date or timestamp (RFC 3339 has four-digit years).
    pub const MAX_YEAR: i32 = 9999;
    /// Deepest nesting of arrays and objects in a `json` value: MariaDB's
    /// `JSON_VALID` refuses 32 levels.
    pub const MAX_JSON_DEPTH: usize = 31;
    /// Digits before the decimal point of a `decimal` (`NUMERIC(28, 10)` everywhere).
    pub const DECIMAL_INTEGER_DIGITS: usize = 18;
    /// Digits after the decimal point of a `decimal`.
    pub const DECIMAL_SCALE: u32 = 10;
}

/// Nesting depth of a JSON value: scalars are 0, `[]` and `{}` are 1.
fn json_depth(j: &Json) -> usize {
    match j {
        Json::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Json::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn in_year_range(year: i32) -> bool {
    (domain::MIN_YEAR..=domain::MAX_YEAR).contains(&year)
}

/// `YYYY-MM-DD` exactly: four-digit years, no sign, no other spelling.
fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|d| in_year_range(d.year()))
}

/// An RFC 3339 instant in years 0001–9999 (in UTC), without a leap second,
/// truncated to the microseconds every backend keeps.
fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    // RFC 3339's `T` (or `t`): chrono also takes a space, JSON Schema's date-time does not.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    let t = DateTime::parse_from_rfc3339(s).ok()?;
    // chrono represents 23:59:60 as a nanosecond count past one second.
    if t.nanosecond() >= 1_000_000_000 {
        return None;
    }
    let utc = t.with_timezone(&Utc);
    if !in_year_range(utc.year()) {
        return None;
    }
    DateTime::from_timestamp_micros(utc.timestamp_micros())
}

/// A UUID in its one standard text form, hyphenated (either case): the form
/// JSON Schema's `uuid` format describes (the uuid crate also reads braced,
/// URN and unhyphenated forms).
fn parse_uuid(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    let hyphenated = b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-');
    hyphenated.then(|| Uuid::parse_str(s).ok()).flatten()
}

/// Whether a decimal fits `NUMERIC(28, 10)`.
fn decimal_fits(d: &Decimal) -> bool {
    let digits_before = d.trunc().abs().to_string().trim_start_matches('0').len();
    d.normalize().scale() <= domain::DECIMAL_SCALE
        && digits_before <= domain::DECIMAL_INTEGER_DIGITS
}

/// PostgreSQL's text and jsonb cannot hold `\u0000`; refuse it everywhere alike.
fn json_has_nul(j: &Json) -> bool {
    match j {
        Json::String(s) => s.contains('\0'),
        Json::Array(items) => items.iter().any(json_has_nul),
        Json::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

fn nul_error(column: &Column) -> FieldError {
    FieldError::new(
        &column.name,
        FieldCode::Type,
        "must not contain NUL characters",
    )
}

/// Parses a JSON value (a body field, a filter value, a cursor position) into
/// the column's type, inside the value [`domain`]. `null` becomes
/// [`Value::Null`]; whether null is allowed is [`check`]'s business.
pub fn from_json(column: &Column, json: &Json) -> Result<Value, FieldError> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    let bad = || type_error(column);
    let value = match column.scalar() {
        Scalar::Text => {
            let s = json.as_str().ok_or_else(bad)?;
            if s.contains('\0') {
                return Err(nul_error(column));
            }
            Value::Text(if column.constraints.lowercase {
                normalize_lowercase(s)
            } else {
                s.to_owned()
            })
        }
        Scalar::Int => Value::Int(json.as_i64().ok_or_else(bad)?),
        Scalar::Float => Value::Float(json.as_f64().filter(|f| f.is_finite()).ok_or_else(bad)?),
        Scalar::Decimal => {
            let d: Decimal = match json {
                Json::String(s) => s.trim().parse().map_err(|_| bad())?,
                Json::Number(n) => n.to_string().parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            if !decimal_fits(&d) {
                return Err(FieldError::new(
                    &column.name,
                    FieldCode::Type,
                    format!(
                        "must have at most {} digits before the decimal point and {} after",
                        domain::DECIMAL_INTEGER_DIGITS,
                        domain::DECIMAL_SCALE
                    ),
                ));
            }
            Value::Decimal(d)
        }
        Scalar::Bool => Value::Bool(json.as_bool().ok_or_else(bad)?),
        Scalar::Uuid => Value::Uuid(json.as_str().and_then(parse_uuid).ok_or_else(bad)?),
        Scalar::Timestamp => {
            Value::Timestamp(json.as_str().and_then(parse_timestamp).ok_or_else(bad)?)
        }
        Scalar::Date => Value::Date(json.as_str().and_then(parse_date).ok_or_else(bad)?),
        Scalar::Json => {
            if json_has_nul(json) {
                return Err(nul_error(column));
            }
            if json_depth(json) > domain::MAX_JSON_DEPTH {
                return Err(FieldError::new(
                    &column.name,
                    FieldCode::Type,
                    format!(
                        "must not nest arrays and objects more than {} levels deep",
                        domain::MAX_JSON_DEPTH
                    ),
                ));
            }
            Value::Json(json.clone())
        }
    };
    Ok(value)
}

/// The one spelling of a case-insensitive identifier (account usernames and
/// emails, `lowercase = true` fields): trimmed and lowercased.
pub fn normalize_lowercase(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Parses query-string text (a filter value or a path id) into the column's type.
pub fn from_text(column: &Column, text: &str) -> Result<Value, FieldError> {
    let json = match column.scalar() {
        Scalar::Int => Json::from(text.parse::<i64>().map_err(|_| type_error(column))?),
        Scalar::Float => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number)
            .ok_or_else(|| type_error(column))?,
        Scalar::Bool => match text {
            "true" | "1" => Json::Bool(true),
            "false" | "0" => Json::Bool(false),
            _ => return Err(type_error(column)),
        },
        Scalar::Json => serde_json::from_str(text).map_err(|_| type_error(column))?,
        _ => Json::String(text.to_owned()),
    };
    from_json(column, &json)
}

/// Checks a parsed value against the column's constraints (null-ness included).
pub fn check(column: &Column, value: &Value) -> Result<(), FieldError> {
    let c = &column.constraints;
    let name = column.name.as_str();
    match value {
        Value::Null if !column.nullable() => Err(FieldError::new(
            name,
            FieldCode::Required,
            "must not be null",
        )),
        Value::Text(s) if column.role == ColumnRole::Id => {
            if s.is_empty()
                || s == "."
                || s == ".."
                || s.contains('/')
                || s.chars().any(char::is_control)
            {
                return Err(FieldError::new(
                    name,
                    FieldCode::Format,
                    "must be a non-empty key without '/' or control characters, and not '.' or '..'",
                ));
            }
            match c.max_length {
                Some(max) if s.chars().count() > max => Err(FieldError::new(
                    name,
                    FieldCode::MaxLength,
                    format!("must be at most {max} characters long"),
                )),
                _ => Ok(()),
            }
        }
        Value::Text(s) => {
            let len = s.chars().count();
            if let Some(min) = c.min_length
                && len < min
            {
                return Err(FieldError::new(
                    name,
                    FieldCode::MinLength,
                    format!("must be at least {min} characters long"),
                ));
            }
            if let Some(max) = c.max_length
                && len > max
            {
                return Err(FieldError::new(
                    name,
                    FieldCode::MaxLength,
                    format!("must be at most {max} characters long"),
                ));
            }
            if let FieldType::Enum(values) = &column.ty
                && !values.iter().any(|v| v == s)
            {
                return Err(FieldError::new(
                    name,
                    FieldCode::Enum,
                    format!("must be one of {}", values.join(", ")),
                ));
            }
            if let Some(p) = &c.pattern
                && !p.regex.is_match(s)
            {
                return Err(FieldError::new(
                    name,
                    FieldCode::Pattern,
                    format!("must match the pattern {}", p.source),
                ));
            }
            match c.format {
                Some(Format::Email) if !email_address::EmailAddress::is_valid(s) => Err(
                    FieldError::new(name, FieldCode::Format, "must be an email address"),
                ),
                Some(Format::Url) if !is_absolute_url(s) => Err(FieldError::new(
                    name,
                    FieldCode::Format,
                    "must be an absolute URL",
                )),
                Some(Format::Uuid) if parse_uuid(s).is_none() => {
                    Err(FieldError::new(name, FieldCode::Format, "must be a UUID"))
                }
                _ => Ok(()),
            }
        }
        Value::Int(i) => check_int_range(column, *i),
        Value::Float(f) => check_range(column, *f),
        Value::Decimal(d) => check_decimal_range(column, *d),
        _ => Ok(()),
    }
}

fn is_absolute_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| u.has_host() || u.scheme() == "mailto")
}

/// Decimal bounds compare exactly: the bound is read back from its shortest
/// decimal text (`0.1`, not the binary float nearest to it).
/// A value written to a decimal with a `scale` has at most that many digits
/// after the point: refused, never rounded (money must not change silently).
/// Filters may compare with any decimal.
fn check_decimal_range(column: &Column, d: Decimal) -> Result<(), FieldError> {
    let as_decimal = |b: f64| b.to_string().parse::<Decimal>().ok();
    let c = &column.constraints;
    if let Some(scale) = c.scale
        && d.normalize().scale() > scale
    {
        return Err(FieldError::new(
            &column.name,
            FieldCode::Type,
            format!("must have at most {scale} digits after the decimal point"),
        ));
    }
    if let Some(min) = c.min
        && as_decimal(min).is_some_and(|m| d < m)
    {
        return Err(FieldError::new(
            &column.name,
            FieldCode::Min,
            format!("must be at least {min}"),
        ));
    }
    if let Some(max) = c.max
        && as_decimal(max).is_some_and(|m| d > m)
    {
        return Err(FieldError::new(
            &column.name,
            FieldCode::Max,
            format!("must be at most {max}"),
        ));
    }
    Ok(())
}

/// 2^63 as a float: the first value past `i64::MAX`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Integer bounds compare exactly (an `i64` does not fit a float above 2^53):
/// `i >= min` is `i >= ceil(min)`, `i <= max` is `i <= floor(max)`.
fn check_int_range(column: &Column, i: i64) -> Result<(), FieldError> {
    let c = &column.constraints;
    let at_least = |min: f64| {
        let m = min.ceil();
        m < -TWO_POW_63 || (m < TWO_POW_63 && i >= m as i64)
    };
    let at_most = |max: f64| {
        let m = max.floor();
        m >= TWO_POW_63 || (m >= -TWO_POW_63 && i <= m as i64)
    };
    if let Some(min) = c.min
        && !at_least(min)
    {
        return Err(FieldError::new(
            &column.name,
            FieldCode::Min,
            format!("must be at least {min}"),
        ));
    }
    if let Some(max) = c.max
        && !at_most(max)
    {
        return Err(FieldError::new(
            &column.name,
            FieldCode::Max,
            format!("must be at most {max}"),
        ));
    }
    Ok(())
}

fn check_range(column: &Column, x: f64) -> Result<(), FieldError> {
    let c = &column.constraints;
    if let Some(min) = c.min
        && x < min
    {
        return Err(FieldError::new(
            &column.name,
            FieldCode::Min,
            format!("must be at least {min}"),
        ));
    }
    if let Some(max) = c.max
        && x > max
    {
        return Err(FieldError::new(
            &column.name,
            FieldCode::Max,
            format!("must be at most {max}"),
        ));
    }
    Ok(())
}

/// A stored decimal as responses show it: with the column's `scale` when
/// it has one (`12.50`), else in its shortest form (`12.5`).
pub(crate) fn decimal_json(d: Decimal, column: &Column) -> Json {
    let mut d = d.normalize();
    if let Some(scale) = column.constraints.scale {
        d.rescale(scale);
    }
    Json::String(d.to_string())
}

/// [`decimal_json`] for a decimal stored as text (SQLite keeps them in
/// their shortest form).
pub(crate) fn decimal_text_json(text: String, column: &Column) -> Json {
    match column.constraints.scale {
        None => Json::String(text),
        Some(_) => match text.parse::<Decimal>() {
            Ok(d) => decimal_json(d, column),
            Err(_) => Json::String(text),
        },
    }
}

/// Renders a value as it appears in responses.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Decimal(d) => Json::String(d.normalize().to_string()),
        Value::Text(s) => Json::String(s.clone()),
        Value::Uuid(u) => Json::String(u.hyphenated().to_string()),
        Value::Timestamp(t) => Json::String(format_timestamp(t)),
        Value::Date(d) => Json::String(d.format("%Y-%m-%d").to_string()),
        Value::Json(j) => j.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Constraints;

    fn column(ty: FieldType, constraints: Constraints) -> Column {
        Column {
            name: "f".into(),
            ty,
            role: ColumnRole::Field,
            constraints,
            writable: None,
            hidden: false,
        }
    }

    #[test]
    fn timestamps_with_offsets_are_normalised_to_utc() {
        let c = column(FieldType::Timestamp, Constraints::default());
        let v = from_json(&c, &Json::from("2026-01-02T03:04:05+02:00")).unwrap();
        assert_eq!(to_json(&v), Json::from("2026-01-02T01:04:05.000000Z"));
    }

    #[test]
    fn decimals_keep_every_digit() {
        let c = column(FieldType::Decimal, Constraints::default());
        let v = from_json(&c, &Json::from("12345678901234567.891")).unwrap();
        assert_eq!(to_json(&v), Json::from("12345678901234567.891"));
        assert!(check(&c, &v).is_ok());
    }

    #[test]
    fn decimals_beyond_numeric_28_10_are_refused() {
        let c = column(FieldType::Decimal, Constraints::default());
        for text in ["0.00000000001", "1234567890123456789"] {
            assert_eq!(code_of(&c, Json::from(text)), "type", "{text}");
        }
    }

    #[test]
    fn an_integer_field_refuses_a_float() {
        let c = column(FieldType::Integer, Constraints::default());
        assert_eq!(
            from_json(&c, &Json::from(1.5)).unwrap_err().code.as_str(),
            "type"
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let c = column(
            FieldType::String,
            Constraints {
                max_length: Some(3),
                ..Default::default()
            },
        );
        assert!(check(&c, &Value::Text("héé".into())).is_ok());
        assert_eq!(
            check(&c, &Value::Text("abcd".into()))
                .unwrap_err()
                .code
                .as_str(),
            "max_length"
        );
    }

    #[test]
    fn a_required_field_refuses_null() {
        let c = column(
            FieldType::String,
            Constraints {
                required: true,
                ..Default::default()
            },
        );
        assert_eq!(
            check(&c, &Value::Null).unwrap_err().code.as_str(),
            "required"
        );
    }

    #[test]
    fn email_format_is_checked() {
        let c = column(
            FieldType::String,
            Constraints {
                format: Some(Format::Email),
                ..Default::default()
            },
        );
        assert!(check(&c, &Value::Text("a@example.edu".into())).is_ok());
        assert_eq!(
            check(&c, &Value::Text("not-an-email".into()))
                .unwrap_err()
                .code
                .as_str(),
            "format"
        );
    }

    fn code_of(c: &Column, json: Json) -> &'static str {
        from_json(c, &json).unwrap_err().code.as_str()
    }

    #[test]
    fn dates_are_four_digit_years_from_0001_to_9999_and_nothing_else() {
        let c = column(FieldType::Date, Constraints::default());
        for ok in ["0001-01-01", "9999-12-31", "2024-02-29"] {
            assert_eq!(
                to_json(&from_json(&c, &Json::from(ok)).unwrap()),
                Json::from(ok)
            );
        }
        for bad in [
            "+10000-01-01",
            "-0001-01-01",
            "0000-01-01",
            "2023-02-29",
            "2024-1-05",
            " 2024-01-05",
            "20240105",
        ] {
            assert_eq!(code_of(&c, Json::from(bad)), "type", "{bad}");
        }
    }

    #[test]
    fn timestamps_outside_years_0001_to_9999_in_utc_are_refused() {
        let c = column(FieldType::Timestamp, Constraints::default());
        for bad in [
            "9999-12-31T23:59:59-05:00",
            "0001-01-01T00:30:00+01:00",
            "0000-06-01T00:00:00Z",
        ] {
            assert_eq!(code_of(&c, Json::from(bad)), "type", "{bad}");
        }
        let last = from_json(&c, &Json::from("9999-12-31T23:59:59.999999Z")).unwrap();
        assert_eq!(to_json(&last), Json::from("9999-12-31T23:59:59.999999Z"));
    }

    #[test]
    fn timestamps_need_the_t_separator_and_uuids_their_hyphens() {
        let ts = column(FieldType::Timestamp, Constraints::default());
        assert!(from_json(&ts, &Json::from("2026-01-01 00:00:00Z")).is_err());
        assert!(from_json(&ts, &Json::from("2026-01-01t00:00:00z")).is_ok());
        let u = column(FieldType::Uuid, Constraints::default());
        assert!(from_json(&u, &Json::from("01A2248B-24F3-7443-8334-E8EF3F519BBC")).is_ok());
        for other in [
            "01a2248b24f374438334e8ef3f519bbc",
            "{01a2248b-24f3-7443-8334-e8ef3f519bbc}",
            "urn:uuid:01a2248b-24f3-7443-8334-e8ef3f519bbc",
        ] {
            assert!(from_json(&u, &Json::from(other)).is_err(), "{other}");
        }
    }

    #[test]
    fn a_leap_second_is_refused_rather_than_moved() {
        let c = column(FieldType::Timestamp, Constraints::default());
        assert_eq!(code_of(&c, Json::from("2016-12-31T23:59:60Z")), "type");
    }

    #[test]
    fn timestamps_keep_microseconds_and_truncate_finer_digits() {
        let c = column(FieldType::Timestamp, Constraints::default());
        let v = from_json(&c, &Json::from("2026-01-01T00:00:00.9999999Z")).unwrap();
        assert_eq!(to_json(&v), Json::from("2026-01-01T00:00:00.999999Z"));
    }

    #[test]
    fn json_nested_deeper_than_every_backend_accepts_is_refused() {
        let c = column(FieldType::Json, Constraints::default());
        let nested = |n: usize| -> Json {
            serde_json::from_str(&format!("{}{}", "[".repeat(n), "]".repeat(n))).unwrap()
        };
        assert!(from_json(&c, &nested(domain::MAX_JSON_DEPTH)).is_ok());
        assert_eq!(code_of(&c, nested(domain::MAX_JSON_DEPTH + 1)), "type");
        assert_eq!(code_of(&c, serde_json::json!({"a": "x\u{0}y"})), "type");
    }

    #[test]
    fn integer_bounds_compare_exactly_beyond_two_to_the_53() {
        let c = column(
            FieldType::Integer,
            Constraints {
                max: Some(9_007_199_254_740_992.0),
                ..Default::default()
            },
        );
        assert!(check(&c, &Value::Int(9_007_199_254_740_992)).is_ok());
        assert_eq!(
            check(&c, &Value::Int(9_007_199_254_740_993))
                .unwrap_err()
                .code
                .as_str(),
            "max"
        );
        let open = column(FieldType::Integer, Constraints::default());
        assert!(check(&open, &Value::Int(i64::MAX)).is_ok());
        assert_eq!(
            code_of(&open, serde_json::json!(9_223_372_036_854_775_808u64)),
            "type"
        );
    }

    #[test]
    fn a_lowercase_field_is_stored_trimmed_and_lowercased() {
        let c = column(
            FieldType::String,
            Constraints {
                lowercase: true,
                ..Default::default()
            },
        );
        assert_eq!(
            from_json(&c, &Json::from(" Alice@Example.EDU ")).unwrap(),
            Value::Text("alice@example.edu".into())
        );
    }

    #[test]
    fn query_text_booleans_accept_true_false_one_zero() {
        let c = column(FieldType::Boolean, Constraints::default());
        assert_eq!(from_text(&c, "1").unwrap(), Value::Bool(true));
        assert_eq!(from_text(&c, "false").unwrap(), Value::Bool(false));
        assert!(from_text(&c, "yes").is_err());
    }
}
