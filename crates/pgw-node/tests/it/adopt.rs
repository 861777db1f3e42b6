//! Adopting an existing data directory: the checks of `Node::open`, postgresql.auto.conf
//! editing that the server reads back as written.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use pgw_node::{Conninfo, Node, NodeError, OsUser, Password};

use crate::{bin, free_port, initdb_options, psql, start, user, Guard, Scratch};

#[test]
fn open_checks_version_owner_and_mode() {
    let scratch = Scratch::new();
    let data = scratch.join("data");
    drop(Node::initdb(bin(), user(), &data, &initdb_options()).unwrap());

    let node = Node::open(bin(), user(), &data).unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(node.data_dir(), data);
    assert!(!node.is_running());

    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    let err = Node::open(bin(), user(), &data).unwrap_err();
    assert!(
        matches!(err, NodeError::BadMode { mode: 0o755, .. }),
        "{err:?}"
    );
    fs::set_permissions(&data, fs::Permissions::from_mode(0o750)).unwrap();
    Node::open(bin(), user(), &data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();

    let me = OsUser::current().unwrap();
    if me != user() {
        // We are root and the server user is postgres: the data dir is not ours.
        let err = Node::open(bin(), me, &data).unwrap_err();
        assert!(matches!(err, NodeError::WrongOwner { .. }), "{err:?}");
    }

    let version = data.join("PG_VERSION");
    fs::write(&version, "14\n").unwrap();
    let err = Node::open(bin(), user(), &data).unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::VersionMismatch {
                data_dir_version: 14,
                bin_version: 15,
                ..
            }
        ),
        "{err:?}"
    );
    fs::remove_file(&version).unwrap();
    let err = Node::open(bin(), user(), &data).unwrap_err();
    assert!(matches!(err, NodeError::NotADataDir { .. }), "{err:?}");
}

#[test]
fn primary_conninfo_is_quoted_so_the_server_reads_it_back() {
    let scratch = Scratch::new();
    let node = Guard(Node::initdb(bin(), user(), scratch.join("data"), &initdb_options()).unwrap());
    let tricky = Conninfo::tcp("127.0.0.1", 5999, "repl user")
        .with_password(Password::new(r"it's a \ test"))
        .with_application_name("node b");
    node.set_primary_conninfo(&tricky).unwrap();
    node.set_auto_conf("work_mem", Some("9MB")).unwrap();
    assert_eq!(
        node.auto_conf("primary_conninfo").unwrap().as_deref(),
        Some(tricky.render().as_str())
    );
    let mode = fs::metadata(node.data_dir().join("postgresql.auto.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let port = free_port();
    start(&node, port, scratch.path());
    assert_eq!(
        psql(port, "show primary_conninfo").unwrap(),
        tricky.render()
    );
    assert_eq!(psql(port, "show work_mem").unwrap(), "9MB");
    // ALTER SYSTEM still works on the file we wrote, and keeps our line.
    psql(port, "alter system set maintenance_work_mem = '99MB'").unwrap();
    assert_eq!(
        node.auto_conf("primary_conninfo").unwrap().as_deref(),
        Some(tricky.render().as_str())
    );
    node.set_auto_conf("primary_conninfo", None).unwrap();
    assert_eq!(node.auto_conf("primary_conninfo").unwrap(), None);
    assert_eq!(
        node.auto_conf("maintenance_work_mem").unwrap().as_deref(),
        Some("99MB")
    );
}
