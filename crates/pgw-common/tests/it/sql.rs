//! `pgw_common::sql` against a real server: every keyword PostgreSQL knows, and names with
//! capitals, spaces, quotes and non-ASCII letters, work as identifiers; `shown` agrees with
//! the server's own `quote_ident()`; literals read back as the text they quote.

use pgw_cluster::Cluster;
use pgw_common::sql;
use pgw_common::{connect_dsn, report};

/// Names that break naive quoting, beside every keyword.
const AWKWARD: &[&str] = &[
    "order",
    "user",
    "Mixed",
    "MiXeD cAsE",
    "with space",
    "a\"b",
    "\"",
    "it's",
    "a.b",
    "1starts_with_digit",
    "événement",
    "semi;colon",
    "dollar$sign",
];

#[tokio::test]
async fn every_keyword_and_awkward_name_is_an_identifier() {
    let cluster = Cluster::start().expect("start a throwaway PostgreSQL 15 cluster");
    let (client, _) = connect_dsn(Some(&cluster.dsn()))
        .await
        .unwrap_or_else(|e| panic!("{}", report(&e)));
    let keywords: Vec<String> = client
        .query("SELECT word FROM pg_get_keywords() ORDER BY word", &[])
        .await
        .expect("read pg_get_keywords()")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(keywords.len() > 400, "{} keywords", keywords.len());
    let mut names: Vec<String> = keywords
        .iter()
        .cloned()
        .chain(AWKWARD.iter().map(|s| s.to_string()))
        .collect();
    names.sort();
    names.dedup();

    // shown() is quote_ident(), name for name.
    let server: Vec<String> = client
        .query(
            "SELECT quote_ident(n) FROM unnest($1::text[]) WITH ORDINALITY u(n, i) ORDER BY i",
            &[&names],
        )
        .await
        .expect("quote_ident on the server")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (name, want) in names.iter().zip(&server) {
        assert_eq!(&sql::shown(name), want, "shown({name:?})");
    }

    // ident() and qualified() make each a schema, a table and a column, then read it back.
    let mut script = String::from("BEGIN;\n");
    for name in &names {
        let schema = format!("s_{name}");
        script.push_str(&format!(
            "CREATE SCHEMA {s}; CREATE TABLE {t} ({c} int, {c2} text); \
             INSERT INTO {t} ({c}, {c2}) VALUES (1, {v}); \
             CREATE INDEX {i} ON {t} ({c});\n",
            s = sql::ident(&schema),
            t = sql::qualified(&schema, name),
            c = sql::ident(name),
            c2 = sql::ident(&format!("{name}2")),
            i = sql::ident(&format!("{name}_idx")),
            v = sql::literal(name),
        ));
    }
    script.push_str("COMMIT;");
    client
        .batch_execute(&script)
        .await
        .unwrap_or_else(|e| panic!("{}", report(&e)));
    for name in &names {
        let schema = format!("s_{name}");
        let q = format!(
            "SELECT {c}, {c2} FROM {t}",
            c = sql::ident(name),
            c2 = sql::ident(&format!("{name}2")),
            t = sql::qualified(&schema, name)
        );
        let row = client
            .query_one(&q, &[])
            .await
            .unwrap_or_else(|e| panic!("{q}: {}", report(&e)));
        assert_eq!(row.get::<_, i32>(0), 1, "{q}");
        assert_eq!(&row.get::<_, String>(1), name, "{q}");
    }
}

#[tokio::test]
async fn literals_read_back_whatever_standard_conforming_strings_is() {
    let cluster = Cluster::start().expect("start a throwaway PostgreSQL 15 cluster");
    let (client, _) = connect_dsn(Some(&cluster.dsn()))
        .await
        .unwrap_or_else(|e| panic!("{}", report(&e)));
    let values = [
        "plain",
        "it's",
        "back\\slash",
        "\\'",
        "''",
        "\\",
        "new\nline",
        "$$dollar$$",
        "ünïcödé",
        "",
    ];
    for scs in ["on", "off"] {
        client
            .batch_execute(&format!("SET standard_conforming_strings = {scs}"))
            .await
            .expect("set standard_conforming_strings");
        for v in values {
            let q = format!("SELECT {}::text", sql::literal(v));
            let got: String = client
                .query_one(&q, &[])
                .await
                .unwrap_or_else(|e| panic!("{q}: {}", report(&e)))
                .get(0);
            assert_eq!(got, v, "{q} with standard_conforming_strings = {scs}");
        }
    }
}
