//! A stale `postmaster.pid` (the server crashed and its pid now belongs to another process,
//! or the file says 0 or 1) never gets anything signalled: not by `kill`, `signal`, `stop`,
//! nor by the pg_ctl actions that would signal the pid in the file themselves.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use nix::sys::signal::Signal;
use pgw_node::{
    Node, NodeError, PidFileProblem, ReadyOptions, ServerStatus, StartOptions, StopMode,
    StopOptions, StopOutcome,
};

use crate::{bin, free_port, user, Scratch};

/// A directory `Node::open` accepts (PG_VERSION 15, the server user's, mode 0700) with no
/// server behind it.
fn fake_data_dir(scratch: &Scratch) -> Node {
    let data = scratch.join("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    user().chown(&data).unwrap();
    user().chown(&data.join("PG_VERSION")).unwrap();
    Node::open(bin(), user(), &data).unwrap_or_else(|e| panic!("open: {e}"))
}

/// Writes a `postmaster.pid` naming `pid`, as a ready server would.
fn write_pid_file(node: &Node, pid: &str) {
    let data = node.data_dir();
    let text = format!(
        "{pid}\n{}\n1700000000\n{}\n{}\n127.0.0.1\n  1234567     98304\nready   \n",
        data.display(),
        free_port(),
        data.parent().unwrap().display()
    );
    fs::write(data.join("postmaster.pid"), text).unwrap();
}

/// `sleep 60` as the server user (so that pg_ctl, which runs as that user, could signal it),
/// working in `cwd`: every signal pgw-node could send would end it.
fn bystander(cwd: &Path) -> Child {
    let mut cmd = Command::new("sleep");
    cmd.arg("60").current_dir(cwd);
    user().apply(&mut cmd);
    cmd.spawn().expect("spawn sleep")
}

fn assert_untouched(child: &mut Child) {
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "the process named by the stale postmaster.pid was signalled"
    );
}

#[test]
fn a_pid_file_naming_an_unrelated_process_signals_nothing() {
    let scratch = Scratch::new();
    let node = fake_data_dir(&scratch);
    // Working in the data directory, like a postmaster: only the program tells them apart.
    let mut inside = bystander(node.data_dir());
    let mut outside = bystander(Path::new("/"));
    for child in [&mut inside, &mut outside] {
        let pid = child.id();
        write_pid_file(&node, &pid.to_string());
        assert_eq!(node.postmaster_pid().unwrap().unwrap().pid, pid);
        assert_eq!(node.running_pid(), None);
        assert!(!node.is_running());

        assert!(!node.kill().unwrap(), "no server was running");
        assert_eq!(
            node.stop(&StopOptions::new(
                StopMode::Immediate,
                Duration::from_secs(5)
            ))
            .unwrap(),
            StopOutcome::NotRunning
        );
        let stale = |e: NodeError| matches!(e, NodeError::StalePidFile { pid: p, .. } if p == pid);
        let err = node.signal(Signal::SIGTERM).unwrap_err();
        assert!(!err.to_string().contains('\n'));
        assert!(stale(err));
        assert!(stale(node.reload().unwrap_err()));
        assert!(stale(node.promote(Duration::from_secs(5)).unwrap_err()));
        assert!(stale(
            node.restart(StopMode::Fast, &StartOptions::default())
                .unwrap_err()
        ));
        assert_eq!(node.status().unwrap(), ServerStatus::Stopped);
        let err = node
            .wait_ready(
                &ReadyOptions::tcp("127.0.0.1", free_port()).timeout(Duration::from_secs(600)),
            )
            .unwrap_err();
        assert!(matches!(err, NodeError::PostmasterDied { .. }), "{err:?}");

        assert_untouched(child);
    }
    for mut child in [inside, outside] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn pid_0_and_1_in_the_pid_file_are_refused() {
    let scratch = Scratch::new();
    let node = fake_data_dir(&scratch);
    // kill(0, SIGKILL) would take down this test binary's whole process group.
    let mut child = bystander(Path::new("/"));
    for pid in [0u32, 1] {
        write_pid_file(&node, &pid.to_string());
        let err = node.postmaster_pid().unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::PidFile {
                    reason: PidFileProblem::ImpossiblePid(p),
                    ..
                } if p == pid
            ),
            "{err:?}"
        );
        assert_eq!(node.running_pid(), None);
        assert!(!node.kill().unwrap());
        let err = node.signal(Signal::SIGKILL).unwrap_err();
        assert!(matches!(err, NodeError::NotRunning { .. }), "{err:?}");
        assert_eq!(
            node.stop(&StopOptions::new(
                StopMode::Immediate,
                Duration::from_secs(5)
            ))
            .unwrap(),
            StopOutcome::NotRunning
        );
    }
    assert_untouched(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
}
