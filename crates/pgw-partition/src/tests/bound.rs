//! Unit tests of `bound.rs`: reading partition bounds as `pg_get_expr` prints them.

use crate::bound::{Bound, BoundError, Datum};

fn check(text: &str, want: Bound) {
    assert_eq!(Bound::parse(text), Ok(want), "{text:?}");
}

fn lit(s: &str) -> Datum {
    Datum::Literal(s.to_string())
}

fn range(lower: Datum, upper: Datum) -> Bound {
    Bound::Range { lower, upper }
}

fn list(items: &[Option<&str>]) -> Bound {
    Bound::List(items.iter().map(|v| v.map(str::to_string)).collect())
}

#[test]
fn range_bounds() {
    let cases = [
        (
            "FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00')",
            range(lit("2024-01-01 00:00:00+00"), lit("2024-02-01 00:00:00+00")),
        ),
        (
            "FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')",
            range(lit("2024-01-01"), lit("2024-02-01")),
        ),
        ("FOR VALUES FROM (0) TO (5)", range(lit("0"), lit("5"))),
        ("FOR VALUES FROM (-10) TO (0)", range(lit("-10"), lit("0"))),
        // PostgreSQL quotes negative numbers.
        (
            "FOR VALUES FROM ('-10') TO (0)",
            range(lit("-10"), lit("0")),
        ),
        (
            "FOR VALUES FROM (MINVALUE) TO ('2024-01-01 00:00:00+00')",
            range(Datum::MinValue, lit("2024-01-01 00:00:00+00")),
        ),
        (
            "FOR VALUES FROM (100) TO (MAXVALUE)",
            range(lit("100"), Datum::MaxValue),
        ),
        (
            "FOR VALUES FROM (MINVALUE) TO (MAXVALUE)",
            range(Datum::MinValue, Datum::MaxValue),
        ),
        // A cast after a literal is dropped; surrounding blanks are not part of the bound.
        (
            "  FOR VALUES FROM ('a'::text) TO ('b'::text)  ",
            range(lit("a"), lit("b")),
        ),
        (
            "FOR VALUES FROM ('it''s') TO ('z')",
            range(lit("it's"), lit("z")),
        ),
    ];
    for (text, want) in cases {
        check(text, want);
    }
}

#[test]
fn list_bounds() {
    let cases = [
        (
            "FOR VALUES IN ('US', 'CA')",
            list(&[Some("US"), Some("CA")]),
        ),
        ("FOR VALUES IN ('US')", list(&[Some("US")])),
        ("FOR VALUES IN (NULL)", list(&[None])),
        ("FOR VALUES IN ('x', NULL)", list(&[Some("x"), None])),
        ("FOR VALUES IN ('it''s')", list(&[Some("it's")])),
        (
            "FOR VALUES IN ('a,b', ')')",
            list(&[Some("a,b"), Some(")")]),
        ),
        ("FOR VALUES IN ('NULL')", list(&[Some("NULL")])),
        (
            "FOR VALUES IN (1, 2, 3)",
            list(&[Some("1"), Some("2"), Some("3")]),
        ),
        ("FOR VALUES IN ('')", list(&[Some("")])),
    ];
    for (text, want) in cases {
        check(text, want);
    }
}

#[test]
fn hash_and_default_bounds() {
    let cases = [
        (
            "FOR VALUES WITH (modulus 8, remainder 3)",
            Bound::Hash {
                modulus: 8,
                remainder: 3,
            },
        ),
        (
            "FOR VALUES WITH (modulus 1, remainder 0)",
            Bound::Hash {
                modulus: 1,
                remainder: 0,
            },
        ),
        ("DEFAULT", Bound::Default),
        (" DEFAULT\n", Bound::Default),
    ];
    for (text, want) in cases {
        check(text, want);
    }
}

#[test]
fn unreadable_bounds() {
    let cases = [
        // Multi-column keys are not managed.
        "FOR VALUES FROM (1, 2) TO (3, 4)",
        "FOR VALUES FROM ('a', MINVALUE) TO ('b', MAXVALUE)",
        "FOR VALUES FROM (1) TO (3, 4)",
        // Garbage and truncations.
        "",
        "garbage",
        "default",
        "FOR VALUES",
        "FOR VALUES FROM ('a')",
        "FOR VALUES FROM ('a') TO ('b') extra",
        "FOR VALUES FROM ('a) TO ('b')",
        "FOR VALUES FROM ('a') TO ('b'",
        "FOR VALUES IN ('a'",
        "FOR VALUES IN ('a') extra",
        "FOR VALUES WITH (modulus 8)",
        "FOR VALUES WITH (modulus x, remainder 3)",
        "FOR VALUES WITH (remainder 3, modulus 8)",
        "FOR VALUES WITH (modulus -1, remainder 0)",
        "FOR VALUES WITH ('modulus 8', remainder 3)",
        "FOR VALUES BETWEEN (1) AND (2)",
    ];
    for text in cases {
        assert_eq!(
            Bound::parse(text),
            Err(BoundError(text.to_string())),
            "{text:?}"
        );
    }
}

#[test]
fn error_message_names_the_bound() {
    let e = Bound::parse("FOR VALUES FROM (1, 2) TO (3, 4)").unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read partition bound 'FOR VALUES FROM (1, 2) TO (3, 4)' (only single-column keys are managed)"
    );
}
