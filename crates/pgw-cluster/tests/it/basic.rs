//! Starting clusters, settings, files, pg_hba lines, several at once, restart and reload.

use std::process::Command;
use std::time::Duration;

use pgw_cluster::{Cluster, ClusterError};

use crate::{accepts, eventually, start};

#[test]
fn start_answers_and_applies_settings() {
    let cluster = start(
        Cluster::builder()
            .setting("work_mem", "12MB")
            .setting("application_name", "it's quoted")
            .setting("include", "conf.d/extra.conf")
            .file("conf.d/extra.conf", "maintenance_work_mem = '77MB'\n")
            .hba_line("host all alice 127.0.0.1/32 scram-sha-256")
            .data_checksums(true),
    );
    assert_ne!(cluster.port(), 5432);
    assert!(accepts(cluster.port()));
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(cluster.superuser(), "postgres");

    assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
    assert_eq!(cluster.psql("postgres", "show work_mem").unwrap(), "12MB");
    assert_eq!(
        cluster.psql("postgres", "show application_name").unwrap(),
        "pgw-cluster",
        "PGAPPNAME of psql wins over the server default"
    );
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "select setting from pg_file_settings where name = 'application_name'"
            )
            .unwrap(),
        "it's quoted"
    );
    assert_eq!(
        cluster
            .psql("postgres", "show maintenance_work_mem")
            .unwrap(),
        "77MB",
        "file written into the data dir and included"
    );
    assert_eq!(
        cluster.psql("postgres", "show data_checksums").unwrap(),
        "on"
    );
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "select min(line_number) from pg_hba_file_rules where 'alice' = any(user_name)"
            )
            .unwrap(),
        "2",
        "hba line prepended (after one comment line)"
    );
    assert_eq!(
        cluster
            .psql("postgres", "show unix_socket_directories")
            .unwrap(),
        cluster.socket_dir().to_string_lossy()
    );
    assert_eq!(
        cluster.psql("postgres", "show listen_addresses").unwrap(),
        "127.0.0.1"
    );

    // Several statements, one output line per row, columns separated by |.
    let out = cluster
        .psql("postgres", "create table t(a int, b text); insert into t values (1, 'x'), (2, 'y'); select * from t order by a;")
        .unwrap();
    assert_eq!(out, "1|x\n2|y");

    // A failing statement is an error that carries psql's stderr.
    let err = cluster
        .psql("postgres", "select * from no_such_table")
        .unwrap_err();
    assert!(matches!(err, ClusterError::Psql { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no_such_table") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");

    assert!(cluster.postmaster_pid().is_some());
    assert!(cluster
        .log()
        .contains("database system is ready to accept connections"));
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(
        !cluster.socket_dir().join("pwfile").exists(),
        "pwfile removed after initdb"
    );
    assert!(cluster.bin_dir().join("psql").is_file());
}

#[test]
fn two_clusters_at_once() {
    // Started concurrently, to exercise the process-wide port reservation.
    let a = std::thread::spawn(|| start(Cluster::builder().setting("work_mem", "5MB")));
    let b = std::thread::spawn(|| start(Cluster::builder().setting("work_mem", "6MB")));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());

    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert_ne!(a.password(), b.password());
    for c in [&a, &b] {
        assert_ne!(c.port(), 5432);
        assert!(accepts(c.port()));
    }
    assert_eq!(a.psql("postgres", "show work_mem").unwrap(), "5MB");
    assert_eq!(b.psql("postgres", "show work_mem").unwrap(), "6MB");

    // The conninfo string and the URI work with a libpq client as they are.
    for (cluster, target) in [(&a, a.dsn()), (&b, b.uri())] {
        let out = Command::new(cluster.bin_dir().join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-c",
                "select current_setting('port')",
                &target,
            ])
            .env_remove("PGPASSWORD")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            cluster.port().to_string()
        );
    }
    assert_eq!(
        a.dsn(),
        format!(
            "host=127.0.0.1 port={} user=postgres password={} dbname=postgres",
            a.port(),
            a.password()
        )
    );
    assert_eq!(
        b.uri(),
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/postgres",
            b.password(),
            b.port()
        )
    );

    // A wrong password is refused (SCRAM over TCP).
    let out = Command::new(a.bin_dir().join("psql"))
        .args([
            "-X",
            "-c",
            "select 1",
            &a.dsn_for("postgres", "wrong", "postgres"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Explicit graceful stop of one leaves the other running.
    let (a_port, a_dir) = (a.port(), a.socket_dir().to_owned());
    a.stop().unwrap();
    assert!(!accepts(a_port));
    assert!(!a_dir.exists());
    assert_eq!(b.psql("postgres", "select 2").unwrap(), "2");
}

#[test]
fn restart_applies_postmaster_setting_and_reload_applies_sighup_setting() {
    let cluster = start(Cluster::builder());
    let pid_before = cluster.postmaster_pid().unwrap();

    cluster
        .psql("postgres", "alter system set max_connections = 42")
        .unwrap();
    cluster.reload().unwrap();
    assert_eq!(
        cluster.psql("postgres", "show max_connections").unwrap(),
        "100"
    );
    cluster.restart().unwrap();
    assert_eq!(
        cluster.psql("postgres", "show max_connections").unwrap(),
        "42"
    );
    assert_ne!(cluster.postmaster_pid().unwrap(), pid_before);

    // reload: SIGHUP, handled asynchronously by the postmaster.
    cluster
        .psql("postgres", "alter system set work_mem = '7MB'")
        .unwrap();
    cluster.reload().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            cluster.psql("postgres", "show work_mem").unwrap() == "7MB"
        }),
        "work_mem not reloaded"
    );
}
