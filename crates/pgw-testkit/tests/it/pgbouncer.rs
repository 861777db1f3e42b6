//! PgBouncer in front of a cluster: queries through it, its pool mode and settings on the
//! admin console, a crash and the start after it, and cleanup on drop.

use pgw_testkit::{PgBouncer, PoolMode};

use crate::{accepts, cluster, psql};

#[test]
fn queries_go_through_and_the_console_shows_the_config() {
    let cluster = cluster();
    cluster
        .psql("postgres", "create role alice login password 'alice-pw'")
        .unwrap();
    let bouncer = PgBouncer::builder(&cluster)
        .pool_mode(PoolMode::Transaction)
        .setting("default_pool_size", "3")
        .user("alice", "alice-pw")
        .start()
        .unwrap_or_else(|e| panic!("start pgbouncer: {e}"));
    assert_ne!(bouncer.port(), 6432);
    assert_ne!(bouncer.port(), cluster.port());

    assert_eq!(psql(&bouncer.dsn(), "select 40 + 2").unwrap(), "42");
    assert_eq!(
        psql(
            &bouncer.dsn_for("alice", "alice-pw", "postgres"),
            "select current_user"
        )
        .unwrap(),
        "alice"
    );
    let wrong = psql(&bouncer.dsn_for("alice", "wrong", "postgres"), "select 1").unwrap_err();
    assert!(wrong.contains("authentication failed"), "{wrong}");
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "select count(*) > 0 from pg_stat_activity where usename = 'alice'"
            )
            .unwrap(),
        "t",
        "PgBouncer holds a server connection for alice"
    );

    let admin = bouncer.admin_dsn();
    let config = psql(&admin, "show config").unwrap();
    assert!(
        config
            .lines()
            .any(|l| l.starts_with("pool_mode|transaction")),
        "{config}"
    );
    assert!(
        config.lines().any(|l| l.starts_with("default_pool_size|3")),
        "{config}"
    );
    let pools = psql(&admin, "show pools").unwrap();
    assert!(
        pools.contains("postgres|alice") || pools.contains("|alice|"),
        "{pools}"
    );

    // A crash, and the start on the same port.
    let port = bouncer.port();
    bouncer.kill();
    assert!(!bouncer.is_running());
    assert!(psql(&bouncer.dsn(), "select 1").is_err());
    bouncer.start_again().unwrap();
    assert_eq!(bouncer.port(), port);
    assert_eq!(psql(&bouncer.dsn(), "select 1").unwrap(), "1");
    bouncer.reload().unwrap();

    let dir = bouncer.dir().to_owned();
    drop(bouncer);
    assert!(!accepts(port));
    assert!(!dir.exists());
    assert_eq!(
        cluster.psql("postgres", "select 1").unwrap(),
        "1",
        "the cluster is untouched"
    );
}
