//! A primary and a standby made with `pg_basebackup` (slot, progress, recovery config),
//! promotion, and `pg_rewind` of the old primary so it follows the new one.

use std::time::Duration;

use pgw_node::{
    BaseBackupOptions, ClusterState, Conninfo, Node, NodeError, Password, PmStatus, Slot, Source,
    StopOptions,
};

use crate::{
    bin, eventually, free_port, initdb_options, psql, start, user, Guard, Scratch, PASSWORD,
};

fn source(port: u16) -> Source {
    Source {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: Some(Password::new(PASSWORD)),
    }
}

fn streaming(port: u16) -> bool {
    psql(port, "select status from pg_stat_wal_receiver").as_deref() == Ok("streaming")
}

#[test]
fn basebackup_promote_and_rewind_round_trip() {
    let scratch = Scratch::new();
    let a = Guard(Node::initdb(bin(), user(), scratch.join("a"), &initdb_options()).unwrap());
    // pg_rewind reads a's WAL back to the last common checkpoint: keep it.
    a.set_auto_conf("wal_keep_size", Some("128MB")).unwrap();
    let a_port = free_port();
    start(&a, a_port, scratch.path());
    psql(a_port, "create table t(x int); insert into t values (1)").unwrap();

    // b: a streaming standby of a, through a slot pg_basebackup creates.
    let mut progress = Vec::new();
    let options = BaseBackupOptions {
        slot: Some(Slot {
            name: "node_b".into(),
            create: true,
        }),
        application_name: Some("node_b".into()),
        ..BaseBackupOptions::standby_of(source(a_port))
    };
    let b = Guard(
        Node::base_backup(bin(), user(), scratch.join("b"), &options, |p| {
            progress.push(p)
        })
        .unwrap_or_else(|e| panic!("pg_basebackup: {e}")),
    );
    assert!(!progress.is_empty(), "progress reported");
    let last = progress.last().unwrap();
    assert!(last.total_kb > 0 && last.percent() == 100, "{progress:?}");
    assert!(b.is_standby());
    let conninfo = b
        .auto_conf("primary_conninfo")
        .unwrap()
        .expect("-R wrote primary_conninfo");
    assert!(conninfo.contains("application_name=node_b"), "{conninfo}");
    assert_eq!(
        b.auto_conf("primary_slot_name").unwrap().as_deref(),
        Some("node_b")
    );
    assert_eq!(
        b.control_data().unwrap().system_identifier,
        a.control_data().unwrap().system_identifier
    );

    let b_port = free_port();
    start(&b, b_port, scratch.path());
    assert!(
        eventually(Duration::from_secs(30), || streaming(b_port)),
        "b never streamed"
    );
    assert_eq!(
        psql(
            a_port,
            "select application_name, state from pg_stat_replication"
        )
        .unwrap(),
        "node_b|streaming"
    );
    assert_eq!(
        psql(
            a_port,
            "select active from pg_replication_slots where slot_name = 'node_b'"
        )
        .unwrap(),
        "t"
    );
    // A hot standby reports "ready" in postmaster.pid, like a primary.
    assert_eq!(
        b.postmaster_pid().unwrap().unwrap().status,
        Some(PmStatus::Ready)
    );
    let err = a.promote(Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(err, NodeError::PgCtl { .. }),
        "a primary cannot be promoted: {err:?}"
    );

    // Failover: b is promoted, a keeps writing for a moment (a split brain), then stops.
    b.promote(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("promote: {e}"));
    assert!(!b.is_standby());
    assert_eq!(psql(b_port, "select pg_is_in_recovery()").unwrap(), "f");
    psql(b_port, "checkpoint; insert into t values (2)").unwrap();
    assert_eq!(b.control_data().unwrap().timeline, 2);
    psql(a_port, "insert into t values (100)").unwrap();
    a.stop(&StopOptions::default()).unwrap();
    assert_eq!(a.control_data().unwrap().state, ClusterState::ShutDown);

    // a rejoins as b's standby by pg_rewind.
    let check = a.rewind_precheck().unwrap();
    assert!(check.data_checksums && check.clean_shutdown && !check.running && check.possible());
    let onto = Conninfo::tcp("127.0.0.1", b_port, "postgres")
        .with_dbname("postgres")
        .with_password(Password::new(PASSWORD))
        .with_application_name("node_a");
    let mut rewind = pgw_node::RewindOptions::onto(onto.clone());
    rewind.dry_run = true;
    let dry = a
        .rewind(&rewind)
        .unwrap_or_else(|e| panic!("pg_rewind --dry-run: {e}"));
    assert!(dry.rewound && dry.dry_run);
    assert!(!a.is_standby(), "a dry run changes nothing");
    let report = a
        .rewind(&pgw_node::RewindOptions::onto(onto.clone()))
        .unwrap_or_else(|e| panic!("pg_rewind: {e}"));
    assert!(report.rewound);
    assert_eq!(report.diverged_timeline, Some(1));
    assert!(report.diverged_at.is_some());
    assert!(a.is_standby(), "--write-recovery-conf wrote standby.signal");
    // pg_rewind copied b's postgresql.auto.conf, slot name included: give a its own slot.
    assert_eq!(
        a.auto_conf("primary_slot_name").unwrap().as_deref(),
        Some("node_b")
    );
    psql(
        b_port,
        "select 1 from pg_create_physical_replication_slot('node_a')",
    )
    .unwrap();
    a.configure_standby(&onto, Some("node_a")).unwrap();
    let conninfo = a.auto_conf("primary_conninfo").unwrap().unwrap();
    assert!(conninfo.contains(&format!("port={b_port}")), "{conninfo}");
    start(&a, a_port, scratch.path());
    assert!(
        eventually(Duration::from_secs(30), || streaming(a_port)),
        "a never streamed from b"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            psql(a_port, "select string_agg(x::text, ',' order by x) from t").as_deref()
                == Ok("1,2")
        }),
        "the split-brain row is gone and b's row is there"
    );

    // A running target is refused.
    let err = a.rewind(&rewind).unwrap_err();
    assert!(matches!(err, NodeError::Running { .. }), "{err:?}");
}

#[test]
fn rewind_needs_hints_or_checksums() {
    let scratch = Scratch::new();
    let options = pgw_node::InitdbOptions {
        data_checksums: false,
        ..initdb_options()
    };
    let node = Node::initdb(bin(), user(), scratch.join("data"), &options).unwrap();
    let check = node.rewind_precheck().unwrap();
    assert!(!check.wal_log_hints && !check.data_checksums && !check.possible());
    let err = node
        .rewind(&pgw_node::RewindOptions::onto(Conninfo::tcp(
            "127.0.0.1",
            free_port(),
            "postgres",
        )))
        .unwrap_err();
    assert!(matches!(err, NodeError::RewindImpossible { .. }), "{err:?}");
}

#[test]
fn a_backup_of_nothing_fails_with_the_tools_words() {
    let scratch = Scratch::new();
    let err = Node::base_backup(
        bin(),
        user(),
        scratch.join("copy"),
        &BaseBackupOptions::standby_of(source(free_port())),
        |_| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("pg_basebackup failed"), "{msg}");
    assert!(
        msg.contains("connection") || msg.contains("refused"),
        "{msg}"
    );
    assert!(!msg.contains('\n') && !msg.contains(PASSWORD), "{msg}");
}
