//! Unit tests of the pure parts of reading many sets at once: which bound literals go to the
//! server and how the answers come back (`catalog::bound_asks`, `with_values`), the probe
//! SQL (`session::Probe`), and how sets are packed into probe statements
//! (`maintain::facts::pack`), and the fallback from one batched read to one read per set
//! (`maintain::facts::batched`).

use super::{i, t, wall};
use crate::catalog::{bound_asks, with_values, Ask, CatalogPartition};
use crate::error::PartitionError;
use crate::maintain::facts::{batched, pack};
use crate::model::{KeyKind, Partition};
use crate::session::Probe;

fn listed(name: &str, bound: &str) -> CatalogPartition {
    CatalogPartition::read("public".into(), name.into(), bound.into(), false, false)
        .unwrap_or_else(|e| panic!("{bound}: {e}"))
}

fn parts() -> Vec<CatalogPartition> {
    vec![
        listed("e_default", "DEFAULT"),
        listed(
            "e_p2024_01",
            "FOR VALUES FROM ('2024-01-01 05:00:00+00') TO ('2024-02-01 05:00:00+00')",
        ),
        listed(
            "e_old",
            "FOR VALUES FROM (MINVALUE) TO ('2024-01-01 05:00:00+00')",
        ),
    ]
}

#[test]
fn time_bounds_are_asked_in_order_and_come_back_in_place() {
    let p = parts();
    let asks = bound_asks(&p, KeyKind::Timestamptz, "America/New_York");
    let literal = |l| Ask::Bound {
        kind: KeyKind::Timestamptz,
        tz: "America/New_York",
        literal: l,
    };
    // The default has none; MINVALUE is not sent.
    assert_eq!(
        asks,
        vec![
            literal("2024-01-01 05:00:00+00"),
            literal("2024-02-01 05:00:00+00"),
            literal("2024-01-01 05:00:00+00"),
        ]
    );
    let values = [wall("2024-01-01"), wall("2024-02-01"), wall("2024-01-01")];
    let got = with_values(p, KeyKind::Timestamptz, &values);
    let shown: Vec<_> = got
        .iter()
        .map(|p| (p.name.as_str(), p.lower, p.upper))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("e_default", None, None),
            ("e_p2024_01", Some(t("2024-01-01")), Some(t("2024-02-01"))),
            ("e_old", None, Some(t("2024-01-01"))),
        ]
    );
    assert!(got[0].is_default && !got[1].is_default);
}

#[test]
fn integer_bounds_need_no_server() {
    let p = vec![
        listed("n_default", "DEFAULT"),
        listed("n_p0", "FOR VALUES FROM ('0') TO ('100')"),
        listed("n_top", "FOR VALUES FROM (100) TO (MAXVALUE)"),
    ];
    assert!(bound_asks(&p, KeyKind::Integer, "UTC").is_empty());
    let got = with_values(p, KeyKind::Integer, &[]);
    let shown: Vec<_> = got.iter().map(|p| (p.lower, p.upper)).collect();
    assert_eq!(
        shown,
        vec![
            (None, None),
            (Some(i(0)), Some(i(100))),
            (Some(i(100)), None)
        ]
    );
}

#[test]
fn list_and_hash_bounds_ask_nothing() {
    let p = vec![
        listed("l_us", "FOR VALUES IN ('US', NULL)"),
        listed("h_0", "FOR VALUES WITH (modulus 4, remainder 0)"),
    ];
    assert!(bound_asks(&p, KeyKind::Timestamptz, "UTC").is_empty());
    let got = with_values(p, KeyKind::Other, &[]);
    assert!(got.iter().all(|p| p.lower.is_none() && p.upper.is_none()));
}

#[test]
fn an_unreadable_bound_is_an_error() {
    assert!(CatalogPartition::read(
        "public".into(),
        "x".into(),
        "FOR VALUES FROM (1, 2) TO (3, 4)".into(),
        false,
        false
    )
    .is_err());
}

fn partition(schema: &str, name: &str) -> Partition {
    Partition {
        schema: schema.into(),
        name: name.into(),
        is_default: false,
        lower: None,
        upper: None,
        bound: String::new(),
        detach_pending: false,
    }
}

#[test]
fn probe_sql_quotes_every_identifier() {
    let d = partition("user", "Line \"Items\"_default");
    let has = Probe::HasRows {
        column: "order",
        default: &d,
    };
    assert_eq!(
        has.expr(),
        r#"EXISTS (SELECT FROM "user"."Line ""Items""_default" WHERE "order" IS NOT NULL)"#
    );
    let (a, b) = (partition("public", "n_p200"), partition("public", "n_p100"));
    let top = Probe::Highest {
        column: "select",
        parts: vec![&a, &b],
    };
    // Highest first, each only computed when the ones above it are empty.
    assert_eq!(
        top.expr(),
        r#"coalesce((SELECT max("select")::bigint FROM "public"."n_p200"), (SELECT max("select")::bigint FROM "public"."n_p100"))"#
    );
    assert_eq!((has.tables(), top.tables()), (1, 2));
    let none = Probe::Highest {
        column: "id",
        parts: Vec::new(),
    };
    assert_eq!(none.expr(), "NULL::bigint");
}

fn check_pack(sets: &[(usize, usize, bool)], limit: usize, want: &[&[usize]]) {
    let got = pack(sets, limit);
    let want: Vec<Vec<usize>> = want.iter().map(|c| c.to_vec()).collect();
    assert_eq!(got, want, "pack({sets:?}, {limit})");
}

#[test]
fn sets_are_packed_into_few_statements() {
    check_pack(&[], 256, &[]);
    // 200 time sets, one default partition each: one statement.
    let many: Vec<(usize, usize, bool)> = (0..200).map(|i| (i, 1, false)).collect();
    let all: Vec<usize> = (0..200).collect();
    check_pack(&many, 256, &[&all]);
    // Up to the limit, then a new statement; order kept.
    check_pack(
        &[(0, 2, false), (1, 2, false), (2, 1, false), (3, 3, false)],
        4,
        &[&[0, 1], &[2, 3]],
    );
    // A set bigger than the limit gets a statement of its own.
    check_pack(
        &[(0, 1, false), (1, 9, false), (2, 1, false)],
        4,
        &[&[0], &[1], &[2]],
    );
    // Sets whose tables are busy are read alone, after the others.
    check_pack(
        &[(0, 1, false), (1, 1, true), (2, 1, false), (3, 2, true)],
        256,
        &[&[0, 2], &[1], &[3]],
    );
}

/// A read of sets `ids` that fails whenever set 2 (say, a dropped table) is among them.
async fn read_sets(
    ids: Vec<usize>,
    calls: &std::sync::Mutex<Vec<Vec<usize>>>,
) -> Result<Vec<usize>, PartitionError> {
    calls.lock().expect("calls").push(ids.clone());
    if ids.contains(&2) {
        return Err(PartitionError::NoTable("t2".to_string()));
    }
    Ok(ids.iter().map(|i| i * 10).collect())
}

#[tokio::test]
async fn a_failed_batch_is_read_again_one_set_at_a_time() {
    let calls = std::sync::Mutex::new(Vec::new());
    let got = batched(&[0, 1, 2, 3], |ids| read_sets(ids, &calls)).await;
    let shown: Vec<String> = got
        .iter()
        .map(|r| match r {
            Ok(v) => v.to_string(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(shown, ["0", "10", "table t2 does not exist", "30"]);
    assert_eq!(
        *calls.lock().expect("calls"),
        [vec![0, 1, 2, 3], vec![0], vec![1], vec![2], vec![3]]
    );

    // A batch that works is one call; nothing to read is none.
    let calls = std::sync::Mutex::new(Vec::new());
    let got = batched(&[0, 1], |ids| read_sets(ids, &calls)).await;
    assert_eq!(
        got.into_iter().map(|r| r.ok()).collect::<Vec<_>>(),
        [Some(0), Some(10)]
    );
    assert_eq!(calls.lock().expect("calls").len(), 1);
    assert!(batched(&[], |ids| read_sets(ids, &calls)).await.is_empty());
}
