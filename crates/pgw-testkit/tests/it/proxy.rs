//! The TCP proxy in front of a cluster: psql through it, a cut that kills a live session and
//! refuses new ones, a blackhole that lets nothing through, restore, and counts.

use std::process::Stdio;
use std::time::Duration;

use pgw_node::{BinDir, Conninfo, Password, Tool};
use pgw_testkit::Proxy;

use crate::{accepts, cluster, eventually, psql};

#[test]
fn cut_blackhole_and_restore() {
    let cluster = cluster();
    let proxy = Proxy::to_port(cluster.port()).unwrap();
    assert_eq!(proxy.target().port(), cluster.port());
    let dsn = Conninfo::tcp("127.0.0.1", proxy.port(), "postgres")
        .with_password(Password::new(cluster.password()))
        .with_dbname("postgres")
        .with("sslmode", "disable")
        .render();
    assert_eq!(psql(&dsn, "select 1").unwrap(), "1");
    // That connection's pipe may still count as active for a moment: without this wait the
    // check below could see it instead of the session's, and cut before the session has
    // connected (seen in CI: the session then counted as refused).
    assert!(eventually(Duration::from_secs(10), || proxy.stats().active == 0));

    // A live session through the proxy dies when the proxy is cut.
    let mut session = BinDir::from_env()
        .command(Tool::Psql)
        .args(["-X", "-c", "select pg_sleep(60)", &dsn])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || proxy.stats().active == 1));
    proxy.cut();
    assert!(
        eventually(Duration::from_secs(10), || session
            .try_wait()
            .unwrap()
            .is_some()),
        "the session survived the cut"
    );
    assert!(!session.wait().unwrap().success());
    let refused = psql(&dsn, "select 1").unwrap_err();
    assert!(
        refused.contains("server closed the connection") || refused.contains("connection"),
        "{refused}"
    );
    assert_eq!(proxy.stats().refused, 1, "{:?}", proxy.stats());
    assert_eq!(proxy.stats().active, 0);

    proxy.restore();
    assert_eq!(psql(&dsn, "select 2").unwrap(), "2");

    // A partition: the connection is accepted but nothing comes back.
    proxy.blackhole();
    let timed_out = psql(&dsn, "select 3").unwrap_err();
    assert!(timed_out.contains("timeout"), "{timed_out}");
    proxy.restore();
    assert_eq!(psql(&dsn, "select 4").unwrap(), "4");
    let stats = proxy.stats();
    assert_eq!(stats.accepted, 6, "{stats:?}");
    assert!(eventually(Duration::from_secs(5), || proxy.stats().active == 0));

    let port = proxy.port();
    drop(proxy);
    assert!(!accepts(port));
    assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
}

#[test]
fn a_blackholed_session_resumes_after_restore() {
    let cluster = cluster();
    let proxy = Proxy::to_port(cluster.port()).unwrap();
    let dsn = Conninfo::tcp("127.0.0.1", proxy.port(), "postgres")
        .with_password(Password::new(cluster.password()))
        .with_dbname("postgres")
        .with("sslmode", "disable")
        .render();
    // The session connects, then asks a query after the partition began.
    let mut session = BinDir::from_env()
        .command(Tool::Psql)
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "select pg_sleep(1)",
            "-c",
            "select 'after'",
            &dsn,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || proxy.stats().active == 1));
    proxy.blackhole();
    // Whatever phase it was in, it cannot finish while nothing gets through.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        session.try_wait().unwrap().is_none(),
        "the session finished through a partition"
    );
    proxy.restore();
    let out = session.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("after"));
}
