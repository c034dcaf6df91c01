//! `pattern` constraints that mean the same to clients as to the server.
//!
//! The server matches with Rust's `regex`; clients read the OpenAPI document,
//! whose JSON Schema patterns are ECMA-262 regular expressions. The two agree
//! on a common subset — literals, bracketed classes of literals and ranges,
//! `.`, groups, alternation, repetition, `^` and `$` — and differ elsewhere
//! (`\d` and `\w` are Unicode in Rust but ASCII in ECMA-262, inline flags and
//! named groups are spelled differently, `\A` does not exist in ECMA-262, and
//! most escapes of non-syntax characters are errors there). A pattern is
//! accepted only within that subset, parsed by `regex-syntax` (the parser of
//! the regex crate itself); anything else is a schema error saying what to
//! write instead. The one difference inside the subset, `.` (ECMA-262 also
//! excludes `\r`, U+2028 and U+2029), is translated for the server, so the
//! document can publish the pattern exactly as written.

use regex::Regex;
use regex_syntax::ast::{
    self, Ast, ClassSet, ClassSetItem, GroupKind, HexLiteralKind, LiteralKind, SpecialLiteralKind,
};

use super::model::Pattern;

/// What `.` means in ECMA-262, written for the Rust regex crate.
const ECMA_DOT: &str = r"[^\n\r\u{2028}\u{2029}]";

/// Syntax characters ECMA-262 allows escaping (in Unicode mode).
const ECMA_ESCAPABLE: &str = r"^$\.*+?()[]{}|/";

/// Compiles `source` (anchored at both ends) or says why it cannot mean the
/// same to clients.
pub(crate) fn compile(source: &str) -> Result<Pattern, String> {
    let parsed = ast::parse::Parser::new()
        .parse(source)
        .map_err(|e| format!("invalid regular expression: {}", e.kind()))?;
    let mut dots = Vec::new();
    check(&parsed, false, &mut dots)?;
    let mut server = source.to_owned();
    // Right to left, so earlier offsets stay valid.
    for offset in dots.into_iter().rev() {
        server.replace_range(offset..offset + 1, ECMA_DOT);
    }
    let regex = Regex::new(&format!("^(?:{server})$"))
        .map_err(|e| format!("invalid regular expression: {e}"))?;
    Ok(Pattern {
        source: source.to_owned(),
        regex,
    })
}

fn refuse(what: &str) -> Result<(), String> {
    Err(format!(
        "{what} means something else in JSON Schema (ECMA-262) than on the server; \
         write it with literals, [classes] and ranges (e.g. [0-9] for \\d)"
    ))
}

fn check(node: &Ast, in_class: bool, dots: &mut Vec<usize>) -> Result<(), String> {
    match node {
        Ast::Empty(_) => Ok(()),
        Ast::Dot(span) => {
            dots.push(span.start.offset);
            Ok(())
        }
        Ast::Literal(literal) => check_literal(literal, in_class),
        Ast::Assertion(a) => match a.kind {
            ast::AssertionKind::StartLine | ast::AssertionKind::EndLine => Ok(()),
            _ => refuse("an assertion other than ^ and $ (\\A, \\z, \\b, \\B)"),
        },
        Ast::Flags(_) => refuse("an inline flag group such as (?i)"),
        Ast::ClassUnicode(_) => refuse("a Unicode class such as \\p{L}"),
        Ast::ClassPerl(_) => refuse("a class escape such as \\d, \\s or \\w"),
        Ast::ClassBracketed(class) => check_class(&class.kind),
        Ast::Repetition(r) => check(&r.ast, in_class, dots),
        Ast::Group(g) => match &g.kind {
            GroupKind::CaptureIndex(_) => check(&g.ast, in_class, dots),
            GroupKind::NonCapturing(flags) if flags.items.is_empty() => {
                check(&g.ast, in_class, dots)
            }
            GroupKind::NonCapturing(_) => refuse("a group with flags such as (?i:…)"),
            GroupKind::CaptureName { .. } => refuse("a named group"),
        },
        Ast::Alternation(a) => a.asts.iter().try_for_each(|n| check(n, in_class, dots)),
        Ast::Concat(c) => c.asts.iter().try_for_each(|n| check(n, in_class, dots)),
    }
}

fn check_literal(literal: &ast::Literal, in_class: bool) -> Result<(), String> {
    match &literal.kind {
        // Unescaped `{`, `}` and `]` are syntax errors in ECMA-262's Unicode mode.
        LiteralKind::Verbatim if !in_class && matches!(literal.c, '{' | '}' | ']') => {
            refuse(&format!("an unescaped '{}'", literal.c))
        }
        LiteralKind::Verbatim => Ok(()),
        LiteralKind::Meta | LiteralKind::Superfluous
            if ECMA_ESCAPABLE.contains(literal.c) || (in_class && literal.c == '-') =>
        {
            Ok(())
        }
        LiteralKind::Meta | LiteralKind::Superfluous => {
            refuse(&format!("the escape \\{}", literal.c))
        }
        LiteralKind::HexFixed(HexLiteralKind::X | HexLiteralKind::UnicodeShort) => Ok(()),
        LiteralKind::HexFixed(_) | LiteralKind::HexBrace(_) => {
            refuse("a \\U or \\x{…} escape (write \\xHH or \\uHHHH)")
        }
        LiteralKind::Octal => refuse("an octal escape"),
        LiteralKind::Special(kind) => match kind {
            SpecialLiteralKind::FormFeed
            | SpecialLiteralKind::Tab
            | SpecialLiteralKind::LineFeed
            | SpecialLiteralKind::CarriageReturn
            | SpecialLiteralKind::VerticalTab => Ok(()),
            _ => refuse("the escape \\a or an escaped space"),
        },
    }
}

fn check_class(set: &ClassSet) -> Result<(), String> {
    match set {
        ClassSet::BinaryOp(_) => refuse("a class operation (&&, --, ~~)"),
        ClassSet::Item(item) => check_class_item(item),
    }
}

fn check_class_item(item: &ClassSetItem) -> Result<(), String> {
    match item {
        ClassSetItem::Empty(_) => Ok(()),
        ClassSetItem::Literal(l) => check_literal(l, true),
        ClassSetItem::Range(r) => {
            check_literal(&r.start, true)?;
            check_literal(&r.end, true)
        }
        ClassSetItem::Ascii(_) => refuse("a POSIX class such as [[:alpha:]]"),
        ClassSetItem::Unicode(_) => refuse("a Unicode class such as \\p{L}"),
        ClassSetItem::Perl(_) => refuse("a class escape such as \\d, \\s or \\w"),
        ClassSetItem::Bracketed(_) => refuse("a nested class"),
        ClassSetItem::Union(u) => u.items.iter().try_for_each(check_class_item),
    }
}

#[cfg(test)]
mod tests {
    use super::compile;

    #[test]
    fn the_common_subset_is_accepted_and_anchored() {
        for (pattern, yes, no) in [
            ("[A-Z]{3}-[0-9]{2}", "ABC-12", "ABC-123"),
            ("[A-Za-z0-9_.-]+", "a.b-c_d", "a b"),
            ("(ab|cd)+\\.x?", "abcd.", "abce."),
            ("\\x41\\u0042", "AB", "ab"),
        ] {
            let p = compile(pattern).unwrap();
            assert!(p.regex.is_match(yes), "{pattern} {yes}");
            assert!(!p.regex.is_match(no), "{pattern} {no}");
            assert_eq!(p.source, pattern);
        }
    }

    #[test]
    fn dot_means_what_it_means_in_ecma_262() {
        let p = compile("a.b").unwrap();
        assert!(p.regex.is_match("axb"));
        for excluded in ["a\rb", "a\nb", "a\u{2028}b"] {
            assert!(!p.regex.is_match(excluded), "{excluded:?}");
        }
        // Inside a class, `.` is a literal dot in both dialects.
        assert!(compile("[.]").unwrap().regex.is_match("."));
    }

    #[test]
    fn constructs_that_differ_are_refused_with_a_hint() {
        for pattern in [
            "\\d+",
            "\\w",
            "[\\s]",
            "(?i)abc",
            "(?P<x>a)",
            "\\Aa",
            "a\\b",
            "\\p{L}",
            "[[:alpha:]]",
            "\\-",
            "a{",
            "\\x{41}",
            "[a&&b]",
        ] {
            let err = compile(pattern).unwrap_err();
            assert!(
                err.contains("JSON Schema") || err.contains("invalid"),
                "{pattern}: {err}"
            );
        }
    }
}
