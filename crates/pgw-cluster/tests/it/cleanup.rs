//! Dropping a cluster, normally and while a test panics, stops it and removes its files.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use pgw_cluster::Cluster;

use crate::{accepts, start};

#[test]
fn drop_stops_server_and_removes_files() {
    let cluster = start(Cluster::builder());
    let port = cluster.port();
    let dir = cluster.socket_dir().to_owned();
    let data = cluster.data_dir().to_owned();
    assert!(accepts(port));
    assert!(data.is_dir());

    drop(cluster);

    assert!(!accepts(port), "port {port} still accepts connections");
    assert!(!data.exists(), "{} still exists", data.display());
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn panicking_test_still_cleans_up() {
    let mut seen: Option<(u16, PathBuf)> = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let cluster = start(Cluster::builder());
        seen = Some((cluster.port(), cluster.socket_dir().to_owned()));
        assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
        panic!("deliberate panic: the server log tail should be printed above");
    }));
    assert!(result.is_err());

    let (port, dir) = seen.expect("the cluster started before the panic");
    assert!(!accepts(port), "port {port} still accepts connections");
    assert!(!dir.exists(), "{} still exists", dir.display());
}
