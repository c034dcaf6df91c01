//! The query language: `?field=v`, `?field[op]=v`, `sort`, `limit`, `offset`,
//! `cursor`, `fields`, `expand`, `count`. Every name is checked against the
//! schema and every value is typed here; unknown names and operators are a 400
//! that names them. Nothing in this module ever produces SQL text.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value as Json, json};

use crate::error::{ApiError, Code};
use crate::schema::{Column, FieldType, Resource, Scalar};
use crate::value::{self, Value};

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size a client may ask for.
pub const MAX_LIMIT: u32 = 1000;
/// Most filters in one query string (each becomes SQL parameters).
pub const MAX_FILTERS: usize = 50;
/// Most values across every `[in]` list of one query string: far below every
/// backend's parameter limit (SQLite's is 32,766).
pub const MAX_IN_VALUES: usize = 1000;
/// Longest `like`/`ilike` pattern, in characters.
pub const MAX_PATTERN_CHARS: usize = 200;
/// Most wildcards (`*`, `%`, `_`) in one pattern: each one multiplies the work
/// of matching a row.
pub const MAX_PATTERN_WILDCARDS: usize = 16;

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `field=v` or `field[eq]=v`.
    Eq,
    /// `[ne]`.
    Ne,
    /// `[gt]`.
    Gt,
    /// `[gte]`.
    Gte,
    /// `[lt]`.
    Lt,
    /// `[lte]`.
    Lte,
    /// `[in]`: comma-separated list.
    In,
    /// `[like]`: case-sensitive pattern, `*` or `%` any run, `_` one character.
    Like,
    /// `[ilike]`: case-insensitive `like`.
    Ilike,
    /// `[null]=true|false`.
    Null,
}

/// The operator catalogue: each operator's name, meaning and the field types
/// it applies to. The query parser and the OpenAPI document both read it.
impl Op {
    /// Every operator, in the order the docs list them.
    pub const ALL: &'static [Op] = &[
        Op::Eq,
        Op::Ne,
        Op::Gt,
        Op::Gte,
        Op::Lt,
        Op::Lte,
        Op::In,
        Op::Like,
        Op::Ilike,
        Op::Null,
    ];

    /// The name written in brackets: `field[name]=value`.
    pub fn name(self) -> &'static str {
        self.entry().0
    }

    /// What the operator does, in one line.
    pub fn description(self) -> &'static str {
        self.entry().1
    }

    fn entry(self) -> (&'static str, &'static str) {
        match self {
            Op::Eq => ("eq", "equal (also `field=value`)"),
            Op::Ne => (
                "ne",
                "not equal (rows where the field is null do not match)",
            ),
            Op::Gt => ("gt", "greater than"),
            Op::Gte => ("gte", "greater than or equal"),
            Op::Lt => ("lt", "less than"),
            Op::Lte => ("lte", "less than or equal"),
            Op::In => ("in", "one of a comma-separated list"),
            Op::Like => (
                "like",
                "case-sensitive pattern: `*` or `%` any run, `_` one character",
            ),
            Op::Ilike => ("ilike", "case-insensitive `like`"),
            Op::Null => ("null", "`true`: the field is null; `false`: it is not"),
        }
    }

    /// Whether the operator applies to a field of this storage type.
    pub fn applies_to(self, scalar: Scalar) -> bool {
        match self {
            Op::Null => true,
            _ if scalar == Scalar::Json => false,
            Op::Like | Op::Ilike => scalar.is_textual(),
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => scalar.is_ordered(),
            Op::Eq | Op::Ne | Op::In => true,
        }
    }

    fn parse(s: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.name() == s)
    }
}

/// The reserved parameters of a list query (every other key is a filter).
pub const LIST_PARAMETERS: &[&str] = &[
    "sort", "limit", "offset", "cursor", "count", "fields", "expand",
];

/// One typed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Column name (checked against the schema).
    pub column: String,
    /// Operator.
    pub op: Op,
    /// Operand: one value, a list for `in`, a pattern string for `like`, a bool for `null`.
    pub operand: Operand,
}

/// The right-hand side of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A single typed value.
    One(Value),
    /// `in` list.
    Many(Vec<Value>),
    /// A bounded LIKE pattern, bound as a parameter.
    Pattern(LikePattern),
    /// `null=true|false`.
    IsNull(bool),
}

/// A `like`/`ilike` pattern, checked once at parse time: at most
/// [`MAX_PATTERN_CHARS`] characters and [`MAX_PATTERN_WILDCARDS`] wildcards and
/// no NUL — so no backend can be handed a pattern it refuses or spends minutes
/// on. Within those bounds its regular-expression form (SQLite's `ilike`)
/// always compiles well inside the regex crate's size limit: a unit test
/// compiles the worst case, so requests do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikePattern {
    sql: String,
}

impl LikePattern {
    /// Parses a client pattern: `*` or `%` any run, `_` one character.
    pub fn parse(raw: &str) -> Result<LikePattern, String> {
        if raw.contains('\0') {
            return Err("the pattern must not contain NUL characters".to_owned());
        }
        let chars = raw.chars().count();
        if chars > MAX_PATTERN_CHARS {
            return Err(format!(
                "the pattern is {chars} characters long; at most {MAX_PATTERN_CHARS} are allowed"
            ));
        }
        let wildcards = raw.chars().filter(|c| matches!(c, '*' | '%' | '_')).count();
        if wildcards > MAX_PATTERN_WILDCARDS {
            return Err(format!(
                "the pattern has {wildcards} wildcards (*, %, _); at most {MAX_PATTERN_WILDCARDS} are allowed"
            ));
        }
        Ok(LikePattern {
            sql: raw.replace('*', "%"),
        })
    }

    /// The pattern in SQL LIKE syntax (`%`, `_`; no escape character).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The pattern as an anchored, case-insensitive regular expression with
    /// every other character literal (SQLite's Unicode-aware `ilike`).
    pub fn regex(&self) -> String {
        let mut out = String::from("(?is)^");
        let mut literal = [0u8; 4];
        for c in self.sql.chars() {
            match c {
                '%' => out.push_str(".*"),
                '_' => out.push('.'),
                c => out.push_str(&regex::escape(c.encode_utf8(&mut literal))),
            }
        }
        out.push('$');
        out
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first; NULL sorts first.
    Asc,
    /// Largest first; NULL sorts last.
    Desc,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// Column name.
    pub column: String,
    /// Direction.
    pub direction: Direction,
}

/// Everything a list or read query string says.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Filters, all of which must hold.
    pub filters: Vec<Filter>,
    /// Sort keys as given (the id tiebreaker is added by the plan).
    pub sort: Vec<SortKey>,
    /// Page size.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u64,
    /// Keyset position: the sort-key values of the last row seen.
    pub after: Option<Vec<Value>>,
    /// Projection; `None` is every column.
    pub fields: Option<Vec<String>>,
    /// Ref columns to expand.
    pub expand: Vec<String>,
    /// Whether to return `total`.
    pub count: bool,
}

fn unknown_field(resource: &Resource, name: &str) -> ApiError {
    ApiError::bad_request(
        Code::UnknownField,
        format!("{} has no field \"{name}\"", resource.name),
    )
}

fn column<'r>(resource: &'r Resource, name: &str) -> Result<&'r Column, ApiError> {
    // Hidden fields do not exist for clients: not filterable, sortable or selectable.
    resource
        .column(name)
        .filter(|c| !c.hidden)
        .ok_or_else(|| unknown_field(resource, name))
}

fn bad_value(name: &str, e: value::FieldError) -> ApiError {
    ApiError::bad_request(
        Code::InvalidFilterValue,
        format!("filter on \"{name}\": {}", e.message),
    )
}

/// The values a filter binds: one per `[in]` item, one for any other operator.
fn bound_values(filter: &Filter) -> usize {
    match &filter.operand {
        Operand::Many(v) => v.len(),
        _ => 1,
    }
}

/// Parses one filter; `bound` is how many values the filters before it bind,
/// so that an `[in]` list over [`MAX_IN_VALUES`] in all is refused before any
/// of its items is typed.
fn parse_filter(
    resource: &Resource,
    key: &str,
    raw: &str,
    bound: usize,
) -> Result<Filter, ApiError> {
    let (name, op) = match key.split_once('[') {
        Some((name, rest)) => {
            let op_name = rest.strip_suffix(']').ok_or_else(|| {
                ApiError::bad_request(
                    Code::MalformedQuery,
                    format!("malformed filter key \"{key}\""),
                )
            })?;
            let op = Op::parse(op_name).ok_or_else(|| {
                let names: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
                ApiError::bad_request(
                    Code::UnknownOperator,
                    format!(
                        "unknown operator \"{op_name}\" on \"{name}\"; expected one of {}",
                        names.join(", ")
                    ),
                )
            })?;
            (name, op)
        }
        None => (key, Op::Eq),
    };
    let column = column(resource, name)?;
    let scalar = column.scalar();
    let not_for = |what: &str| {
        ApiError::bad_request(
            Code::UnsupportedOperator,
            format!(
                "operator \"{what}\" does not apply to the {} field \"{name}\"",
                column.ty.name()
            ),
        )
    };
    let typed = |text: &str| {
        let v = value::from_text(column, text).map_err(|e| bad_value(name, e))?;
        // A value outside an enum can never match: say so rather than answer nothing.
        if matches!(column.ty, FieldType::Enum(_)) {
            value::check(column, &v).map_err(|e| bad_value(name, e))?;
        }
        Ok(v)
    };
    if !op.applies_to(scalar) {
        return Err(not_for(op.name()));
    }
    let operand = match op {
        Op::Null => match raw {
            "true" => Operand::IsNull(true),
            "false" => Operand::IsNull(false),
            _ => {
                return Err(ApiError::bad_request(
                    Code::InvalidFilterValue,
                    format!("filter on \"{name}\": [null] takes true or false"),
                ));
            }
        },
        Op::Like | Op::Ilike => Operand::Pattern(LikePattern::parse(raw).map_err(|why| {
            ApiError::bad_request(
                Code::InvalidFilterValue,
                format!("filter on \"{name}\": {why}"),
            )
        })?),
        Op::In => {
            let items = raw.split(',').count();
            if items > MAX_IN_VALUES {
                return Err(ApiError::bad_request(
                    Code::InvalidFilterValue,
                    format!("filter on \"{name}\": [in] takes at most {MAX_IN_VALUES} values"),
                ));
            }
            if bound + items > MAX_IN_VALUES {
                return Err(too_many_values(bound + items));
            }
            let values = raw.split(',').map(typed).collect::<Result<Vec<_>, _>>()?;
            Operand::Many(values)
        }
        _ => Operand::One(typed(raw)?),
    };
    Ok(Filter {
        column: column.name.clone(),
        op,
        operand,
    })
}

fn names(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_sort(resource: &Resource, raw: &str) -> Result<Vec<SortKey>, ApiError> {
    let mut keys: Vec<SortKey> = Vec::new();
    for item in names(raw) {
        let (direction, name) = match item.strip_prefix('-') {
            Some(name) => (Direction::Desc, name),
            None => (Direction::Asc, item.strip_prefix('+').unwrap_or(item)),
        };
        let column = column(resource, name)?;
        if column.scalar() == Scalar::Json {
            return Err(ApiError::bad_request(
                Code::UnsortableField,
                format!("cannot sort by the json field \"{name}\""),
            ));
        }
        if keys.iter().any(|k| k.column == name) {
            return Err(ApiError::bad_request(
                Code::MalformedQuery,
                format!("\"{name}\" appears twice in sort"),
            ));
        }
        keys.push(SortKey {
            column: column.name.clone(),
            direction,
        });
    }
    Ok(keys)
}

fn parse_number<T: std::str::FromStr>(name: &str, raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(
            Code::MalformedQuery,
            format!("\"{name}\" must be a non-negative integer, got \"{raw}\""),
        )
    })
}

/// The sort with the id tiebreaker appended: a total order, so keyset pages
/// never skip or repeat a row.
pub fn total_sort(resource: &Resource, sort: &[SortKey]) -> Vec<SortKey> {
    let id = &resource.id_column().name;
    let mut keys = sort.to_vec();
    if !keys.iter().any(|k| &k.column == id) {
        keys.push(SortKey {
            column: id.clone(),
            direction: Direction::Asc,
        });
    }
    keys
}

fn sort_signature(sort: &[SortKey]) -> String {
    sort.iter()
        .map(|k| match k.direction {
            Direction::Asc => k.column.clone(),
            Direction::Desc => format!("-{}", k.column),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Builds the opaque cursor that resumes after `row` in `sort` order.
pub fn encode_cursor(sort: &[SortKey], row: &serde_json::Map<String, Json>) -> String {
    let values: Vec<Json> = sort
        .iter()
        .map(|k| row.get(&k.column).cloned().unwrap_or(Json::Null))
        .collect();
    let token = json!({"s": sort_signature(sort), "v": values});
    URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_cursor(resource: &Resource, sort: &[SortKey], raw: &str) -> Result<Vec<Value>, ApiError> {
    let invalid =
        |why: &str| ApiError::bad_request(Code::InvalidCursor, format!("invalid cursor: {why}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| invalid("not a cursor returned by this API"))?;
    let token: Json =
        serde_json::from_slice(&bytes).map_err(|_| invalid("not a cursor returned by this API"))?;
    if token["s"].as_str() != Some(sort_signature(sort).as_str()) {
        return Err(invalid("it was issued for a different sort"));
    }
    let values = token["v"]
        .as_array()
        .filter(|v| v.len() == sort.len())
        .ok_or_else(|| invalid("not a cursor returned by this API"))?;
    sort.iter()
        .zip(values)
        .map(|(key, json)| {
            let column = resource
                .column(&key.column)
                .ok_or_else(|| invalid("unknown field"))?;
            value::from_json(column, json).map_err(|_| invalid("malformed position"))
        })
        .collect()
}

/// Parses a list query string.
pub fn parse_list(resource: &Resource, query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    let mut cursor = None;
    // Values the filters so far bind (see `MAX_IN_VALUES`).
    let mut bound = 0;
    let mut seen: Vec<String> = Vec::new();
    for (key, raw) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if LIST_PARAMETERS.contains(&key.as_ref()) && seen.contains(&key.to_string()) {
            return Err(ApiError::bad_request(
                Code::MalformedQuery,
                format!("\"{key}\" is given more than once"),
            ));
        }
        seen.push(key.to_string());
        match key.as_ref() {
            "sort" => q.sort = parse_sort(resource, &raw)?,
            "limit" => {
                q.limit = parse_number("limit", &raw)?;
                if q.limit == 0 || q.limit > MAX_LIMIT {
                    return Err(ApiError::bad_request(
                        Code::MalformedQuery,
                        format!(
                            "\"limit\" must be between 1 and {MAX_LIMIT}, got {}",
                            q.limit
                        ),
                    ));
                }
            }
            "offset" => {
                q.offset = parse_number("offset", &raw)?;
                if i64::try_from(q.offset).is_err() {
                    return Err(ApiError::bad_request(
                        Code::MalformedQuery,
                        format!("\"offset\" is too large: {}", q.offset),
                    ));
                }
            }
            "cursor" => cursor = Some(raw.into_owned()),
            "count" => {
                q.count = match raw.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ApiError::bad_request(
                            Code::MalformedQuery,
                            format!("\"count\" takes true or false, got \"{other}\""),
                        ));
                    }
                }
            }
            "fields" => q.fields = Some(parse_fields(resource, &raw)?),
            "expand" => q.expand = parse_expand(resource, &raw)?,
            _ => {
                // Bounds are checked as filters come: a query string far over
                // them is refused at the first filter too many, not parsed whole.
                if q.filters.len() == MAX_FILTERS {
                    return Err(ApiError::bad_request(
                        Code::MalformedQuery,
                        format!(
                            "\"{key}\" is one filter too many; at most {MAX_FILTERS} are allowed"
                        ),
                    ));
                }
                let filter = parse_filter(resource, &key, &raw, bound)?;
                bound += bound_values(&filter);
                if bound > MAX_IN_VALUES {
                    return Err(too_many_values(bound));
                }
                q.filters.push(filter);
            }
        }
    }
    if let Some(raw) = cursor {
        if q.offset > 0 {
            return Err(ApiError::bad_request(
                Code::MalformedQuery,
                "\"cursor\" and \"offset\" cannot be combined",
            ));
        }
        q.after = Some(decode_cursor(
            resource,
            &total_sort(resource, &q.sort),
            &raw,
        )?);
    }
    Ok(q)
}

/// The refusal of filters that bind more than [`MAX_IN_VALUES`] values in all
/// (`values` counts those up to and including the filter that went over).
fn too_many_values(values: usize) -> ApiError {
    ApiError::bad_request(
        Code::InvalidFilterValue,
        format!(
            "the filters hold at least {values} values in all; at most {MAX_IN_VALUES} are allowed"
        ),
    )
}

/// Parses the query string of a single-row read: only `fields` and `expand`.
pub fn parse_read(resource: &Resource, query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery::default();
    for (key, raw) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "fields" => q.fields = Some(parse_fields(resource, &raw)?),
            "expand" => q.expand = parse_expand(resource, &raw)?,
            other => {
                return Err(ApiError::bad_request(
                    Code::UnknownParameter,
                    format!(
                        "\"{other}\" is not accepted here; a single row takes only fields and expand"
                    ),
                ));
            }
        }
    }
    Ok(q)
}

/// Rejects any query string on writes: nothing there has a meaning, so nothing is ignored.
pub fn parse_none(query: Option<&str>) -> Result<(), ApiError> {
    parse_none_but(query, None)
}

/// Rejects any query parameter but `allowed` (the API key's, on routes that
/// do not authenticate and so do not remove it): a 400 naming the first other.
pub(crate) fn parse_none_but(query: Option<&str>, allowed: Option<&str>) -> Result<(), ApiError> {
    let mut parameters = form_urlencoded::parse(query.unwrap_or("").as_bytes());
    match parameters.find(|(key, _)| Some(key.as_ref()) != allowed) {
        None => Ok(()),
        Some((key, _)) => Err(ApiError::bad_request(
            Code::UnknownParameter,
            format!("\"{key}\" is not accepted on this request"),
        )),
    }
}

fn parse_fields(resource: &Resource, raw: &str) -> Result<Vec<String>, ApiError> {
    let mut fields = Vec::new();
    for name in names(raw) {
        let column = column(resource, name)?;
        if !fields.contains(&column.name) {
            fields.push(column.name.clone());
        }
    }
    if fields.is_empty() {
        return Err(ApiError::bad_request(
            Code::MalformedQuery,
            "\"fields\" is empty",
        ));
    }
    Ok(fields)
}

/// The key an expanded ref is rendered under: `major_id` → `major`, else the field itself.
pub fn expand_key(column: &str) -> &str {
    column
        .strip_suffix("_id")
        .filter(|s| !s.is_empty())
        .unwrap_or(column)
}

fn parse_expand(resource: &Resource, raw: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for name in names(raw) {
        let column = resource
            .columns
            .iter()
            .find(|c| {
                !c.hidden
                    && matches!(c.ty, FieldType::Ref(_))
                    && (c.name == name || expand_key(&c.name) == name)
            })
            .ok_or_else(|| {
                ApiError::bad_request(
                    Code::UnknownExpand,
                    format!(
                        "{} has no reference named \"{name}\" to expand",
                        resource.name
                    ),
                )
            })?;
        if !out.contains(&column.name) {
            out.push(column.name.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::load_str;

    fn model() -> crate::schema::AppModel {
        load_str(
            "[app]\nname='t'\n[resources.majors]\nfields.name={type='string'}\n\
             [resources.students]\nid={type='integer'}\nfields.email={type='string'}\n\
             fields.age={type='integer'}\nfields.meta={type='json'}\n\
             fields.major_id={type='ref',to='majors'}\n",
        )
        .unwrap()
    }

    fn err(query: &str) -> ApiError {
        let m = model();
        parse_list(m.resource("students").unwrap(), Some(query)).unwrap_err()
    }

    #[test]
    fn an_equality_filter_is_typed_by_its_field() {
        let m = model();
        let q = parse_list(m.resource("students").unwrap(), Some("age=20")).unwrap();
        assert_eq!(q.filters[0].operand, Operand::One(Value::Int(20)));
    }

    #[test]
    fn an_unknown_field_is_named_in_the_error() {
        let e = err("agee=3");
        assert_eq!(e.code().as_str(), "unknown_field");
        assert!(e.to_string().contains("agee"));
    }

    #[test]
    fn an_unknown_operator_is_named_in_the_error() {
        let e = err("age[between]=3");
        assert_eq!(e.code().as_str(), "unknown_operator");
        assert!(e.to_string().contains("between"));
    }

    #[test]
    fn a_sql_looking_sort_is_an_unknown_field() {
        assert_eq!(
            err("sort=age;DROP TABLE students").code().as_str(),
            "unknown_field"
        );
    }

    #[test]
    fn like_is_refused_on_numbers() {
        assert_eq!(err("age[like]=1*").code().as_str(), "unsupported_operator");
    }

    #[test]
    fn in_takes_a_typed_comma_list() {
        let m = model();
        let q = parse_list(m.resource("students").unwrap(), Some("age[in]=1,2,3")).unwrap();
        assert_eq!(
            q.filters[0].operand,
            Operand::Many(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
        );
        assert_eq!(err("age[in]=1,x").code().as_str(), "invalid_filter_value");
    }

    #[test]
    fn limit_above_the_maximum_is_refused() {
        assert_eq!(err("limit=1001").code().as_str(), "malformed_query");
        assert_eq!(err("limit=-1").code().as_str(), "malformed_query");
    }

    #[test]
    fn a_cursor_round_trips_and_is_bound_to_its_sort() {
        let m = model();
        let students = m.resource("students").unwrap();
        let sort = total_sort(students, &parse_sort(students, "-age").unwrap());
        let row = json!({"id": 7, "age": 30}).as_object().unwrap().clone();
        let cursor = encode_cursor(&sort, &row);
        let q = parse_list(students, Some(&format!("sort=-age&cursor={cursor}"))).unwrap();
        assert_eq!(q.after, Some(vec![Value::Int(30), Value::Int(7)]));
        assert_eq!(
            err(&format!("sort=age&cursor={cursor}")).code().as_str(),
            "invalid_cursor"
        );
        assert_eq!(err("cursor=garbage!").code().as_str(), "invalid_cursor");
    }

    #[test]
    fn like_wildcards_become_regex_and_everything_else_is_literal() {
        let p = |raw: &str| LikePattern::parse(raw).unwrap().regex();
        assert_eq!(p("a%b_c"), "(?is)^a.*b.c$");
        assert_eq!(p("1.5*(x)"), "(?is)^1\\.5.*\\(x\\)$");
    }

    #[test]
    fn like_patterns_are_bounded_in_length_and_wildcards() {
        assert_eq!(
            err(&format!("email[ilike]={}", "a".repeat(201)))
                .code()
                .as_str(),
            "invalid_filter_value"
        );
        assert_eq!(
            err(&format!("email[ilike]=%{}c%", "a_".repeat(950)))
                .code()
                .as_str(),
            "invalid_filter_value"
        );
        assert_eq!(
            err(&format!("email[like]={}", "_".repeat(17)))
                .code()
                .as_str(),
            "invalid_filter_value"
        );
        assert_eq!(
            err("email[like]=a%00b").code().as_str(),
            "invalid_filter_value"
        );
        let m = model();
        let ok = format!("email[ilike]={}", "a_".repeat(8));
        assert!(parse_list(m.resource("students").unwrap(), Some(&ok)).is_ok());
    }

    /// A tenth of the regex crate's default compiled-size limit, which SQLite's
    /// REGEXP compiles `ilike` patterns with.
    const PATTERN_REGEX_LIMIT: usize = 1 << 20;

    #[test]
    fn the_longest_pattern_with_the_most_wildcards_compiles_within_a_tenth_of_the_regex_limit() {
        // "т" has the largest case-insensitive class in UTF-8 bytes (т, Т and
        // two old Cyrillic forms): the most expensive literal character.
        let literals = "т".repeat(MAX_PATTERN_CHARS - MAX_PATTERN_WILDCARDS);
        for wildcard in ["_", "%", "*"] {
            let wildcards = wildcard.repeat(MAX_PATTERN_WILDCARDS);
            let spread: String = literals
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let w = (i % 11 == 0 && i / 11 < MAX_PATTERN_WILDCARDS).then_some(wildcard);
                    w.into_iter().flat_map(str::chars).chain([c])
                })
                .collect();
            for raw in [format!("{wildcards}{literals}"), spread] {
                assert_eq!(raw.chars().count(), MAX_PATTERN_CHARS);
                let pattern = LikePattern::parse(&raw).expect("within the bounds");
                let compiled = regex::RegexBuilder::new(&pattern.regex())
                    .size_limit(PATTERN_REGEX_LIMIT)
                    .build();
                assert!(compiled.is_ok(), "{raw}: {compiled:?}");
            }
        }
    }

    #[test]
    fn too_many_filters_or_in_values_are_refused_before_any_sql() {
        let many = vec!["age=1"; MAX_FILTERS + 1].join("&");
        assert_eq!(err(&many).code().as_str(), "malformed_query");
        let list = (0..500)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            err(&format!("age[in]={list}&id[in]={list}&age[ne]=3"))
                .code()
                .as_str(),
            "invalid_filter_value"
        );
    }

    #[test]
    fn the_filter_one_over_a_bound_is_refused_before_the_rest_of_the_query_is_read() {
        // Were everything parsed first, the unknown field at the end would be
        // the error: the bound must stop parsing where it is crossed.
        let many = vec!["age=1"; MAX_FILTERS + 1].join("&");
        let e = err(&format!("{many}&agee=3"));
        assert_eq!(e.code().as_str(), "malformed_query", "{e}");
        let list = vec!["1"; MAX_IN_VALUES / 2 + 1].join(",");
        let e = err(&format!("age[in]={list}&id[in]={list}&agee=3"));
        assert_eq!(e.code().as_str(), "invalid_filter_value", "{e}");
        assert!(e.to_string().contains("in all"), "{e}");
    }

    #[test]
    fn the_docs_operator_table_lists_exactly_the_catalogue() {
        let docs = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"));
        let start = docs
            .find("\n| operator | meaning |\n")
            .expect("operator table");
        let documented: Vec<(String, String)> = docs[start + 1..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
                (cells[0].trim_matches('`').to_owned(), cells[1].to_owned())
            })
            .collect();
        let catalogue: Vec<(String, String)> = Op::ALL
            .iter()
            .map(|op| (op.name().to_owned(), op.description().to_owned()))
            .collect();
        assert_eq!(documented, catalogue);
    }

    #[test]
    fn operators_apply_by_type_json_takes_only_null() {
        assert!(
            Op::ALL
                .iter()
                .all(|op| op.applies_to(Scalar::Json) == (*op == Op::Null))
        );
        assert!(Op::Ilike.applies_to(Scalar::Text) && !Op::Ilike.applies_to(Scalar::Int));
        assert!(!Op::Gt.applies_to(Scalar::Bool) && Op::Gt.applies_to(Scalar::Date));
    }

    #[test]
    fn expand_accepts_the_ref_name_without_its_id_suffix() {
        let m = model();
        let q = parse_list(m.resource("students").unwrap(), Some("expand=major")).unwrap();
        assert_eq!(q.expand, vec!["major_id".to_owned()]);
        assert_eq!(err("expand=email").code().as_str(), "unknown_expand");
    }
}
