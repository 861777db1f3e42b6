//! One node's life: initdb, start, status, reload, restart, stop (and its fallback), a crash
//! and the start after it, and the errors of a failed start.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgw_node::{
    ClusterState, Node, NodeError, PgCtlAction, PmStatus, ReadyOptions, ServerStatus, StopMode,
    StopOptions, StopOutcome, Tool,
};

use crate::{
    bin, eventually, free_port, initdb_options, psql, start, start_options, user, Guard, Scratch,
};

#[test]
fn initdb_start_reload_restart_stop() {
    let scratch = Scratch::new();
    let node = Guard(
        Node::initdb(bin(), user(), scratch.join("data"), &initdb_options())
            .unwrap_or_else(|e| panic!("initdb: {e}")),
    );
    let leftovers: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["data"], "the pwfile is removed after initdb");
    assert_eq!(node.pg_version().unwrap(), 15);
    assert_eq!(node.log_file(), scratch.join("data.log"));

    let control = node.control_data().unwrap();
    assert_eq!(control.state, ClusterState::ShutDown);
    assert!(control.data_checksums());
    assert_eq!(control.timeline, 1);
    assert!(!node.is_running());
    assert_eq!(node.status().unwrap(), ServerStatus::Stopped);
    assert!(!node.is_standby());

    let port = free_port();
    start(&node, port, scratch.path());
    assert!(node.is_running());
    let pid_file = node.postmaster_pid().unwrap().expect("postmaster.pid");
    assert_eq!(pid_file.port, port);
    assert_eq!(pid_file.data_dir, node.data_dir());
    assert_eq!(pid_file.socket_dir.as_deref(), Some(scratch.path()));
    assert_eq!(pid_file.listen_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(pid_file.status, Some(PmStatus::Ready));
    assert_eq!(
        node.status().unwrap(),
        ServerStatus::Running { pid: pid_file.pid }
    );
    assert_eq!(psql(port, "select 1").unwrap(), "1");
    // initdb's password and auth methods: SCRAM over TCP refuses a wrong password.
    let wrong = bin()
        .command(Tool::Psql)
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-c",
            "select 1",
        ])
        .env("PGPASSWORD", "wrong")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!wrong.success());
    // Readiness with host and port taken from postmaster.pid.
    node.wait_ready(&ReadyOptions::default()).unwrap();

    let err = node
        .start(&start_options(port, scratch.path()))
        .unwrap_err();
    assert!(matches!(err, NodeError::Running { .. }), "{err:?}");

    psql(port, "alter system set work_mem = '7MB'").unwrap();
    node.reload().unwrap();
    assert!(eventually(Duration::from_secs(10), || psql(
        port,
        "show work_mem"
    )
    .unwrap()
        == "7MB"));
    psql(port, "alter system set max_connections = 42").unwrap();
    node.restart(StopMode::Fast, &Default::default()).unwrap();
    node.wait_ready(&ReadyOptions::tcp("127.0.0.1", port))
        .unwrap();
    assert_eq!(psql(port, "show max_connections").unwrap(), "42");
    assert_ne!(node.running_pid(), Some(pid_file.pid), "a new postmaster");

    node.signal(Signal::SIGHUP).unwrap();
    assert_eq!(
        node.stop(&StopOptions::default()).unwrap(),
        StopOutcome::Stopped
    );
    assert!(!node.is_running());
    assert_eq!(
        node.stop(&StopOptions::default()).unwrap(),
        StopOutcome::NotRunning
    );
    assert_eq!(node.control_data().unwrap().state, ClusterState::ShutDown);
    let err = node.signal(Signal::SIGHUP).unwrap_err();
    assert!(matches!(err, NodeError::NotRunning { .. }), "{err:?}");
    let err = node.reload().unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::PgCtl {
                action: PgCtlAction::Reload,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_crash_keeps_the_data_and_the_next_start_recovers() {
    let scratch = Scratch::new();
    let node = Guard(Node::initdb(bin(), user(), scratch.join("data"), &initdb_options()).unwrap());
    let port = free_port();
    start(&node, port, scratch.path());
    psql(port, "create table t(x int); insert into t values (1), (2)").unwrap();
    let pid = node.running_pid().unwrap();

    assert!(node.kill().unwrap());
    assert!(!node.is_running());
    assert!(
        node.postmaster_pid().unwrap().is_some(),
        "a crash leaves postmaster.pid behind"
    );
    assert_eq!(node.postmaster_pid().unwrap().unwrap().pid, pid);
    assert!(!node.kill().unwrap(), "nothing left to kill");
    // Waiting for a dead server fails at once, not at the deadline.
    let err = node
        .wait_ready(&ReadyOptions::tcp("127.0.0.1", port).timeout(Duration::from_secs(600)))
        .unwrap_err();
    assert!(matches!(err, NodeError::PostmasterDied { .. }), "{err:?}");
    assert!(!err.to_string().contains('\n'));
    assert_eq!(
        node.control_data().unwrap().state,
        ClusterState::InProduction
    );

    start(&node, port, scratch.path());
    assert_eq!(psql(port, "select count(*) from t").unwrap(), "2");
    assert!(
        node.log().contains("not properly shut down"),
        "crash recovery ran: {}",
        node.log()
    );
}

#[test]
fn smart_stop_that_times_out_falls_back_to_sigquit() {
    let scratch = Scratch::new();
    let node = Guard(Node::initdb(bin(), user(), scratch.join("data"), &initdb_options()).unwrap());
    let port = free_port();
    start(&node, port, scratch.path());
    // A client that stays connected: a smart shutdown waits for it.
    let mut client = bin()
        .command(Tool::Psql)
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-c",
            "select pg_sleep(120)",
        ])
        .env("PGPASSWORD", crate::PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        psql(
            port,
            "select count(*) from pg_stat_activity where query like 'select pg_sleep%'",
        )
        .unwrap()
            == "1"
    }));

    let outcome = node
        .stop(&StopOptions::new(StopMode::Smart, Duration::from_secs(1)))
        .unwrap();
    assert_eq!(outcome, StopOutcome::Signalled(Signal::SIGQUIT));
    assert!(!node.is_running());
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn a_failed_start_says_why_on_one_line() {
    let scratch = Scratch::new();
    let node = Guard(Node::initdb(bin(), user(), scratch.join("data"), &initdb_options()).unwrap());
    let err = node
        .start(&start_options(free_port(), scratch.path()).setting("shared_buffers", "lots"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::PgCtl {
                action: PgCtlAction::Start,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("shared_buffers") && msg.contains("lots"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(!node.is_running());
}

#[test]
fn initdb_refuses_a_non_empty_directory() {
    let scratch = Scratch::new();
    std::fs::write(scratch.join("stray"), "x").unwrap();
    let err = Node::initdb(bin(), user(), scratch.path(), &initdb_options()).unwrap_err();
    assert!(matches!(err, NodeError::NotEmpty { .. }), "{err:?}");
}
