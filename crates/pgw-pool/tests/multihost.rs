//! Several hosts per database against a real primary and streaming standby: with
//! `target_session_attrs = read-write` the pool reaches the primary and, after the primary
//! is lost and the standby promoted, the new primary without a restart or a config change;
//! `read-only` reaches the standby. The pooler runs in this process (`pgw_pool::run`).

use std::path::Path;
use std::time::{Duration, Instant};

use pgw_cluster::Replicated;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// (port the session is on, in recovery), asked through the pool.
async fn where_am_i(dsn: &str) -> Result<(i32, bool), String> {
    let (client, _) = pgw_common::connect_dsn(Some(dsn))
        .await
        .map_err(|e| pgw_common::report(&e))?;
    let row = client
        .query_one(
            "SELECT pg_catalog.inet_server_port(), pg_catalog.pg_is_in_recovery()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_follows_the_primary_across_a_failover() {
    let set = Replicated::start(1)
        .expect("start a primary and a standby (PostgreSQL 15 must be installed: ./run test)");
    set.wait_streaming(Duration::from_secs(60)).unwrap();
    let (primary, mut standbys) = set.into_parts();
    let standby = standbys.remove(0);
    let (user, password) = (
        primary.superuser().to_owned(),
        primary.password().to_owned(),
    );
    let dir = tempfile::tempdir().unwrap();
    let users = write(
        dir.path(),
        "userlist.txt",
        &format!("\"{user}\" \"{password}\"\n"),
    );
    let port = pgw_cluster::ports::reserve().unwrap();
    let hosts = format!(
        "[\"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
        primary.port(),
        standby.port()
    );
    let config = write(
        dir.path(),
        "pool.toml",
        &format!(
            "[pool]\nlisten_port = {port}\nauth_type = \"md5\"\nauth_file = \"{users}\"\n\
             pool_mode = \"transaction\"\nserver_connect_timeout = 2\nserver_login_retry = 0\n\n\
             [databases.rw]\ndbname = \"postgres\"\nhost = {hosts}\ntarget_session_attrs = \"read-write\"\n\n\
             [databases.ro]\ndbname = \"postgres\"\nhost = {hosts}\ntarget_session_attrs = \"read-only\"\n"
        ),
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pooler = tokio::spawn(pgw_pool::run(
        pgw_pool::Source::Toml(config.into()),
        pgw_pool::Overrides::default(),
        Some(tx),
    ));
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("the pooler listens")
        .expect("the pooler started");
    let dsn = |db: &str| {
        format!("host=127.0.0.1 port={port} user={user} password={password} dbname={db} sslmode=disable")
    };
    assert_eq!(
        where_am_i(&dsn("rw")).await.unwrap(),
        (i32::from(primary.port()), false),
        "read-write reaches the primary"
    );
    assert_eq!(
        where_am_i(&dsn("ro")).await.unwrap(),
        (i32::from(standby.port()), true),
        "read-only reaches the standby"
    );

    // The primary is lost; the standby is promoted. Nothing changes in the pooler.
    primary.kill().unwrap();
    standby.promote().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match where_am_i(&dsn("rw")).await {
            Ok(at) if at == (i32::from(standby.port()), false) => break,
            Ok(at) => format!("{at:?}"),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "read-write never reached the promoted standby; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pooler.abort();
}
