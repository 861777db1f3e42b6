//! Integration tests of the pgwarden binary against real throwaway clusters.
//! They need PostgreSQL 15 and fail (never skip) when it is missing.

mod backup;
mod backup_s3;
mod demo;
mod doctor;
mod errors;
mod ha;
mod logging;
mod partition;
mod pool;
mod replica;
mod tidy;
mod tune;

use std::process::{Command, Output};
use std::sync::OnceLock;

use pgw_cluster::Cluster;

/// A cluster shared by the read-only tests of this binary; its watchdog stops it when
/// the test process exits.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        Cluster::builder()
            .setting("max_connections", "120")
            .start()
            .expect("start a throwaway PostgreSQL 15 cluster (is postgresql-15 installed? run ./run test)")
    })
}

/// Runs the pgwarden binary with `args`, stdin closed, no PG* variables inherited.
pub fn pgwarden(args: &[&str]) -> Output {
    pgwarden_env(args, &[])
}

pub fn pgwarden_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgwarden"));
    cmd.args(args).stdin(std::process::Stdio::null());
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGSSLMODE",
        "PGPASSFILE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the pgwarden binary")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses stdout as JSON, with the whole output in the panic message if it is not.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            stdout(o),
            stderr(o)
        )
    })
}

/// Asserts a failure: the exit code, one line on stderr naming `needle`, and no panic.
pub fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code; stderr: {err}; stdout: {}",
        stdout(o)
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "a one-line reason expected, got: {err}");
}

/// The server's `setting` for each name, and its pending_restart flag.
pub fn settings(c: &Cluster, names: &[&str]) -> Vec<String> {
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    c.psql(
        "postgres",
        &format!("SELECT name || '=' || setting || ' pending=' || pending_restart FROM pg_settings WHERE name IN ({list}) ORDER BY name"),
    )
    .expect("read pg_settings")
    .lines()
    .map(str::to_string)
    .collect()
}

/// What postgresql.auto.conf holds.
pub fn auto_conf(c: &Cluster) -> String {
    std::fs::read_to_string(c.data_dir().join("postgresql.auto.conf"))
        .expect("read postgresql.auto.conf")
}
