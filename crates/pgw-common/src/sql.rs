//! SQL text pgwarden writes: identifiers, qualified names and literals.
//!
//! One rule for SQL, executed or printed for someone to run: **identifiers are always
//! double-quoted** ([`ident`], [`qualified`]). `"order"`, `"user"`, `"Mixed Case"` and
//! `"a""b"` then mean exactly the name, whatever the server version's keyword list says
//! (PostgreSQL 16 made `system_user` reserved; 17 added `json_table`, ...). Values are bound
//! (`$1`) wherever PostgreSQL takes parameters; where it does not (DDL, `ALTER SYSTEM`),
//! [`literal`] quotes them as `quote_literal()` does.
//!
//! Names shown to people (a finding's object, a set in a table) use [`shown`] and
//! [`shown_qualified`]: PostgreSQL's own `quote_ident()` rules, so `public.orders` stays
//! plain and `"user".t_x` or `"Orders"` are quoted exactly where SQL would need it. A test
//! compares [`shown`] with the server's `quote_ident()` for every keyword it knows.

/// `name` as a quoted SQL identifier: `"name"`, with `"` doubled. Use it for every
/// identifier in SQL text, whether pgwarden runs it or prints it for someone to run.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`, both parts quoted as [`ident`] does.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// `value` as an SQL string literal, as PostgreSQL's `quote_literal()` writes it: `'...'`
/// with `'` doubled, and the `E'...'` form with `\` doubled when it holds a backslash (so
/// the text means the same whatever `standard_conforming_strings` is).
pub fn literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// `name` as people read it, by PostgreSQL 15's `quote_ident()` rules: plain when it is
/// lowercase letters, digits and `_` (not starting with a digit) and not a keyword that
/// needs quoting; otherwise quoted. For messages and report labels; SQL text uses [`ident`].
pub fn shown(name: &str) -> String {
    if is_plain(name) {
        name.to_string()
    } else {
        ident(name)
    }
}

/// `schema.name` as people read it, each part as [`shown`] writes it.
pub fn shown_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", shown(schema), shown(name))
}

/// Whether `quote_ident()` leaves `name` as it is.
fn is_plain(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && QUOTED_KEYWORDS.binary_search(&name).is_err()
}

/// PostgreSQL 15's keywords that `quote_ident()` quotes: every category but unreserved
/// (reserved, column-name and type/function-name keywords), from `pg_get_keywords()` where
/// `catcode <> 'U'`. Sorted, for binary search.
const QUOTED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(ident("work_mem"), "\"work_mem\"");
        assert_eq!(ident("order"), "\"order\"");
        assert_eq!(ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident(""), "\"\"");
        assert_eq!(qualified("user", "t_x"), "\"user\".\"t_x\"");
    }

    #[test]
    fn literals_as_quote_literal() {
        assert_eq!(literal("2GB"), "'2GB'");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "E'a\\\\b'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(literal(""), "''");
    }

    #[test]
    fn shown_names_follow_quote_ident() {
        for (name, want) in [
            ("orders", "orders"),
            ("t_1", "t_1"),
            ("_x", "_x"),
            ("order", "\"order\""),
            ("user", "\"user\""),
            ("int", "\"int\""),
            ("name", "name"), // an unreserved keyword stays plain
            ("Orders", "\"Orders\""),
            ("1a", "\"1a\""),
            ("a b", "\"a b\""),
            ("a$b", "\"a$b\""),
            ("a\"b", "\"a\"\"b\""),
            ("é", "\"é\""),
            ("", "\"\""),
        ] {
            assert_eq!(shown(name), want, "{name:?}");
        }
        assert_eq!(shown_qualified("user", "t_x"), "\"user\".t_x");
    }

    #[test]
    fn keyword_list_is_sorted_and_lowercase() {
        assert!(QUOTED_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(QUOTED_KEYWORDS
            .iter()
            .all(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
