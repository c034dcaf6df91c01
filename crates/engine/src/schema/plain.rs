//! The parser's complaints about a schema's shape (a string where a table
//! belongs, a missing `[app]`, a number where text belongs) in the schema's
//! own words, with what to write instead: serde speaks of `struct RawField`,
//! `usize` and `untagged enum RawRule`, which no schema author wrote.

/// `message` (serde's, for the key at `path`) as the schema author reads it.
pub(crate) fn plain(message: &str, path: &str) -> String {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        return missing(field, path);
    }
    if message.starts_with("data did not match any variant of untagged enum RawRule") {
        return "a rule is a text such as \"owner | role:librarian\" or \"published = true\", a list of them, or true/false".to_owned();
    }
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some((found, expected)) = rest.and_then(|r| r.split_once(", expected ")) {
        let segments: Vec<&str> = path.split('.').collect();
        // `fields.title = "string"`: the shorthand people try first.
        if let (["resources", _, "fields", field], Some(ty)) = (segments.as_slice(), quoted(found))
            && expected.starts_with("struct ")
        {
            return format!("a field is a table: write {field} = {{ type = \"{ty}\" }}");
        }
        return format!(
            "expected {}, found {}",
            expected_words(expected),
            found_words(found)
        );
    }
    message.to_owned()
}

/// The text of serde's `string "x"`.
fn quoted(found: &str) -> Option<&str> {
    found
        .strip_prefix("string \"")
        .and_then(|s| s.strip_suffix('"'))
}

fn missing(field: &str, path: &str) -> String {
    match (field, path) {
        ("app", _) => {
            "every schema starts with an [app] table naming the app: [app] then name = \"library\""
                .to_owned()
        }
        ("name", "app") => "the app needs a name: name = \"library\"".to_owned(),
        ("type", _) => "give it a type: { type = \"string\" } (or text, integer, float, decimal, boolean, timestamp, date, uuid, json, enum, ref)".to_owned(),
        (field, _) => format!("`{field}` is required here"),
    }
}

fn expected_words(expected: &str) -> String {
    if expected.starts_with("struct ") || expected == "a map" {
        return "a table ({ key = value, … } or a [section])".to_owned();
    }
    match expected {
        "a boolean" => "true or false",
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)",
        "f64" | "f32" => "a number",
        "a sequence" => "a list such as [\"a\", \"b\"]",
        "a string" => "a text in quotes",
        other => other,
    }
    .to_owned()
}

fn found_words(found: &str) -> String {
    if let Some(text) = quoted(found) {
        return format!("the text \"{text}\"");
    }
    for (prefix, noun) in [
        ("integer `", "the number "),
        ("floating point `", "the number "),
        ("boolean `", ""),
    ] {
        if let Some(value) = found.strip_prefix(prefix).and_then(|v| v.strip_suffix('`')) {
            return format!("{noun}{value}");
        }
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use crate::schema::load_str;

    fn error(text: &str) -> String {
        load_str(text)
            .err()
            .unwrap()
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn resource(body: &str) -> String {
        error(&format!("[app]\nname='x'\n[resources.loans]\n{body}\n"))
    }

    #[test]
    fn shape_errors_are_told_in_the_schemas_words_with_what_to_write() {
        assert_eq!(
            resource("fields.title = \"string\""),
            "resources.loans.fields.title: a field is a table: write title = { type = \"string\" }"
        );
        assert_eq!(
            error("[resources.loans]\nfields.title = { type = 'string' }\n"),
            ": every schema starts with an [app] table naming the app: [app] then name = \"library\""
        );
        assert_eq!(
            error("[app]\n[resources.loans]\nfields.title = { type = 'string' }\n"),
            "app: the app needs a name: name = \"library\""
        );
        assert_eq!(
            resource("fields.title = { type = 'string', required = 'yes' }"),
            "resources.loans.fields.title.required: expected true or false, found the text \"yes\""
        );
        assert_eq!(
            resource("fields.title = { type = 'string', max_length = -1 }"),
            "resources.loans.fields.title.max_length: expected a whole number (0 or more), found the number -1"
        );
        assert_eq!(
            resource("fields.title = { type = 'string' }\nrules = { list = 5 }"),
            "resources.loans.rules.list: a rule is a text such as \"owner | role:librarian\" or \"published = true\", a list of them, or true/false"
        );
        assert_eq!(
            resource("fields.title = { required = true }"),
            "resources.loans.fields.title: give it a type: { type = \"string\" } (or text, integer, float, decimal, boolean, timestamp, date, uuid, json, enum, ref)"
        );
        assert_eq!(
            resource("fields.title = { type = 'string' }\nindexes = 'title'"),
            "resources.loans.indexes: expected a list such as [\"a\", \"b\"], found the text \"title\""
        );
        for text in ["struct", "usize", "untagged", "RawField", "sequence"] {
            assert!(
                !resource("fields.title = \"string\"").contains(text),
                "{text}"
            );
        }
    }
}
