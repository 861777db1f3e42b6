//! Unit tests of `known.rs`.

use super::*;
use crate::inputs::{DbSize, Inputs, Storage, Workload};
use crate::recommend::recommend;

fn set(name: &str, value: &str) -> Vec<(String, String)> {
    vec![(name.to_owned(), value.to_owned())]
}

/// `check(name, value)` accepts, or fails naming the setting.
fn accepted(name: &str, value: &str) -> bool {
    match check_overrides(&set(name, value)) {
        Ok(warnings) => {
            assert!(warnings.is_empty(), "{name} is known: {warnings:?}");
            true
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("--set {name}={value}: {name} takes ")),
                "{text}"
            );
            assert!(!text.contains('\n'), "{text}");
            false
        }
    }
}

#[test]
fn every_recommended_setting_is_known_and_its_value_accepted() {
    for workload in Workload::ALL {
        for storage in Storage::ALL {
            for db_size in DbSize::ALL {
                for (memory_kb, cpus, pg_version) in [
                    (512 << 10, None, 10),
                    (8 << 20, Some(4), 15),
                    (64 << 20, Some(16), 17),
                    (512 << 20, Some(64), 18),
                ] {
                    let inputs = Inputs {
                        memory_kb,
                        cpus,
                        connections: None,
                        storage,
                        workload,
                        pg_version,
                        db_size,
                    };
                    for s in recommend(&inputs).unwrap().settings {
                        let kind = kind_of(&s.name)
                            .unwrap_or_else(|| panic!("{} is not in kind_of", s.name));
                        assert!(
                            kind.accepts(&s.value),
                            "{} = {} ({kind:?})",
                            s.name,
                            s.value
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn memory_settings() {
    for ok in [
        "64MB",
        "64 MB",
        "1.5GB",
        "4096",
        "64kB",
        "2147483647kB",
        " 8MB ",
    ] {
        assert!(accepted("work_mem", ok), "{ok}");
    }
    for bad in [
        "abc",
        "64mb",
        "16G",
        "64 megabytes",
        "30s",
        "",
        "63kB",
        "-1",
        "2TB",
        "1e",
    ] {
        assert!(!accepted("work_mem", bad), "{bad}");
    }
    // 8kB pages: a bare number is pages; 128kB (16 pages) is the least.
    assert!(accepted("shared_buffers", "16384"));
    assert!(accepted("shared_buffers", "128kB"));
    assert!(!accepted("shared_buffers", "120kB"));
    // -1 where the server takes it (auto from shared_buffers; maintenance_work_mem).
    assert!(accepted("wal_buffers", "-1"));
    assert!(accepted("autovacuum_work_mem", "-1"));
    assert!(!accepted("maintenance_work_mem", "-1"));
    // MB settings: min_wal_size is at least 2MB.
    assert!(accepted("min_wal_size", "1GB"));
    assert!(accepted("max_wal_size", "80"));
    assert!(!accepted("min_wal_size", "1MB"));
}

#[test]
fn time_settings() {
    for ok in ["30s", "1min", "30", "1h", "1500ms"] {
        assert!(accepted("autovacuum_naptime", ok), "{ok}");
    }
    // 400ms is 0 whole seconds; 30S and 30sec are not the server's spellings.
    for bad in ["400ms", "0", "30S", "30sec", "soon", "30MB", "25d"] {
        assert!(!accepted("autovacuum_naptime", bad), "{bad}");
    }
    for ok in ["2ms", "0.5", "-1", "100ms", "500us"] {
        assert!(accepted("autovacuum_vacuum_cost_delay", ok), "{ok}");
    }
    for bad in ["1s", "-2", "2 msec"] {
        assert!(!accepted("autovacuum_vacuum_cost_delay", bad), "{bad}");
    }
}

#[test]
fn numbers_booleans_and_enums() {
    assert!(accepted("max_connections", "100"));
    assert!(
        accepted("max_connections", "99.6"),
        "rounded, as the server does"
    );
    for bad in ["0", "262144", "many", "100MB", "-5"] {
        assert!(!accepted("max_connections", bad), "{bad}");
    }
    assert!(accepted("checkpoint_completion_target", "0.9"));
    assert!(!accepted("checkpoint_completion_target", "1.5"));
    assert!(accepted("random_page_cost", "1000"));
    assert!(!accepted("random_page_cost", "-1"));
    assert!(accepted("autovacuum_vacuum_cost_limit", "-1"));
    assert!(!accepted("autovacuum_vacuum_cost_limit", "20000"));
    for ok in ["on", "OFF", "true", "y", "0"] {
        assert!(accepted("jit", ok), "{ok}");
    }
    for bad in ["o", "maybe", "2"] {
        assert!(!accepted("jit", bad), "{bad}");
    }
    for ok in ["try", "ON", "off", "true"] {
        assert!(accepted("huge_pages", ok), "{ok}");
    }
    assert!(!accepted("huge_pages", "tr"));
    assert!(accepted("wal_compression", "zstd"));
    assert!(!accepted("wal_compression", "gzip"));
    assert!(accepted("wal_level", "logical"));
    assert!(accepted("wal_level", "hot_standby"));
    assert!(!accepted("wal_level", "full"));
    assert!(accepted("io_method", "worker"));
    assert!(!accepted("io_method", "aio"));
}

#[test]
fn errors_say_what_the_setting_takes() {
    let cases = [
        (
            "work_mem",
            "abc",
            "--set work_mem=abc: work_mem takes a memory size such as 64MB (B, kB, MB, GB or TB, case as shown) or a number of kB, from 64kB to 2147483647kB",
        ),
        (
            "wal_buffers",
            "lots",
            "--set wal_buffers=lots: wal_buffers takes -1, or a memory size such as 64MB (B, kB, MB, GB or TB, case as shown) or a number of 8kB pages, from 0kB to 2097144kB",
        ),
        (
            "autovacuum_naptime",
            "0",
            "--set autovacuum_naptime=0: autovacuum_naptime takes a time such as 30s (us, ms, s, min, h or d) or a number of seconds, from 1s to 2147483s",
        ),
        (
            "max_connections",
            "x",
            "--set max_connections=x: max_connections takes a whole number from 1 to 262143",
        ),
        (
            "random_page_cost",
            "x",
            "--set random_page_cost=x: random_page_cost takes a number of at least 0",
        ),
        (
            "jit",
            "x",
            "--set jit=x: jit takes on or off (or true/false, yes/no, 1/0)",
        ),
        (
            "huge_pages",
            "x",
            "--set huge_pages=x: huge_pages takes one of off, on, try",
        ),
    ];
    for (name, value, want) in cases {
        assert_eq!(
            check_overrides(&set(name, value)).unwrap_err().to_string(),
            want
        );
    }
}

#[test]
fn unknown_names_pass_with_one_warning_each() {
    let overrides = vec![
        ("statement_timeout".to_owned(), "whenever".to_owned()),
        ("work_mem".to_owned(), "64MB".to_owned()),
        ("statement_timeout".to_owned(), "5s".to_owned()),
        ("my.custom".to_owned(), "x".to_owned()),
    ];
    assert_eq!(
        check_overrides(&overrides).unwrap(),
        vec![
            unknown_setting_warning("statement_timeout"),
            unknown_setting_warning("my.custom"),
        ]
    );
    assert!(
        unknown_setting_warning("x").contains("not a setting pgwarden knows; the server checks it")
    );
    // The first invalid value is the error, whatever comes after it.
    let overrides = vec![
        ("foo".to_owned(), "1".to_owned()),
        ("work_mem".to_owned(), "abc".to_owned()),
        ("jit".to_owned(), "maybe".to_owned()),
    ];
    assert!(matches!(
        check_overrides(&overrides),
        Err(InputError::InvalidSetting { name, .. }) if name == "work_mem"
    ));
}
