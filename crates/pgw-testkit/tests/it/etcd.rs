//! etcd: one member and three, put/get over the JSON gateway, a crash and the start after
//! it, losing one member of three, and cleanup on drop.

use std::time::Duration;

use pgw_testkit::{Etcd, TestkitError};

use crate::{accepts, eventually};

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn one_member_puts_gets_survives_a_crash_and_cleans_up() {
    let etcd = Etcd::start().unwrap_or_else(|e| panic!("start etcd: {e}"));
    assert_eq!(etcd.len(), 1);
    let port = port_of(&etcd.endpoint());
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    assert!(![2379, 2380, 5432].contains(&port));
    assert!(etcd.healthy(0));

    assert_eq!(etcd.get("/service/pgw/leader").unwrap(), None);
    etcd.put("/service/pgw/leader", "node1").unwrap();
    assert_eq!(
        etcd.get("/service/pgw/leader").unwrap().as_deref(),
        Some("node1")
    );

    let pid = etcd.pid(0).unwrap();
    etcd.kill();
    assert!(!etcd.is_running(0));
    assert!(!crate::process_alive(pid));
    let err = etcd.put("/k", "v").unwrap_err();
    assert!(matches!(err, TestkitError::Http { .. }), "{err:?}");
    assert!(!err.to_string().contains('\n'));

    etcd.start_again().unwrap();
    assert_eq!(
        port_of(&etcd.endpoint()),
        port,
        "same port after the restart"
    );
    assert_eq!(
        etcd.get("/service/pgw/leader").unwrap().as_deref(),
        Some("node1"),
        "the data survived the crash"
    );

    let dir = etcd.dir().to_owned();
    drop(etcd);
    assert!(!accepts(port));
    assert!(!dir.exists());
}

#[test]
fn three_members_tolerate_losing_one() {
    let etcd = Etcd::builder()
        .members(3)
        .start()
        .unwrap_or_else(|e| panic!("start 3 etcd members: {e}"));
    assert_eq!(etcd.endpoints().len(), 3);
    etcd.put_via(0, "/k", "from m0").unwrap();
    assert_eq!(etcd.get_via(2, "/k").unwrap().as_deref(), Some("from m0"));

    etcd.kill_member(1).unwrap();
    assert!(!etcd.is_running(1));
    // Two of three keep a quorum.
    assert!(eventually(Duration::from_secs(20), || etcd
        .put_via(2, "/k", "without m1")
        .is_ok()));
    assert_eq!(
        etcd.get_via(0, "/k").unwrap().as_deref(),
        Some("without m1")
    );

    etcd.start_member_again(1).unwrap();
    assert!(eventually(Duration::from_secs(20), || etcd
        .get_via(1, "/k")
        .ok()
        .flatten()
        .as_deref()
        == Some("without m1")));
    assert!(etcd.get_via(3, "/k").is_err(), "no member 3");
}
