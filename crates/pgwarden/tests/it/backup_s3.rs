//! `pgwarden backup` against a real S3-compatible server (moto) started by pgw-testkit.
//!
//! One test runs the whole cycle into S3: `backup init`, a full and an incremental backup of
//! a cluster whose archive_command is `pgwarden wal push` into the same bucket, `list` and
//! `verify`, then `backup restore` into an empty directory, the restored server started (as
//! the server's OS user, with the restore_command the restore wrote) until it replays the
//! archived WAL and promotes, and its data compared with the source's; then `backup drill`
//! on the same repository. The others check the failures: a bucket that does not exist, no
//! credentials, and an endpoint nobody listens on.
//!
//! PostgreSQL runs archive_command and restore_command as its OS user without our
//! environment, so the credentials reach them on archive_command's flags and in a
//! `--repo-config` file, which the restore names again in restore_command.
//!
//! They need moto (`./run test` installs it) and fail, loudly, without it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgw_cluster::pgw_node::{BinDir, Node, OsUser, StartOptions, StopMode, StopOptions, Tool};
use pgw_cluster::watchdog::{Watchdog, Watched};
use pgw_cluster::{panic_log, ports, Cluster};
use pgw_testkit::S3Server;

use crate::{json, stderr, stdout};

/// The bucket every test's repository is in.
const BUCKET: &str = "pgw-backups";

/// How long one pgwarden command may take before the test fails (it is killed).
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// How long a command against an endpoint nobody listens on may take: it must fail at once
/// (connection refused), not retry for minutes.
const UNREACHABLE_DEADLINE: Duration = Duration::from_secs(30);

/// The checksum of table `t`'s rows in order, and their number.
const TABLE_DIGEST: &str =
    "select md5(string_agg(md5(t::text), '' order by g)) || ' ' || count(*) from t";

fn s3_server() -> S3Server {
    let s3 = S3Server::start()
        .unwrap_or_else(|e| panic!("start the S3 test server (moto; ./run test installs it): {e}"));
    s3.create_bucket(BUCKET)
        .unwrap_or_else(|e| panic!("create bucket {BUCKET}: {e}"));
    s3
}

/// Runs pgwarden with `args`: stdin closed, none of our `PG*`, `AWS_*` or `PGWARDEN_*`
/// variables (but `PGWARDEN_PG_BIN`), `env` added; fails the test if it runs past `deadline`.
fn run(args: &[&str], env: &[(String, String)], deadline: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgwarden"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let ours = k.starts_with("AWS_")
            || (k.starts_with("PGWARDEN_") && k != "PGWARDEN_PG_BIN")
            || (k.starts_with("PG") && !k.starts_with("PGWARDEN_"));
        if ours {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let child = cmd.spawn().expect("run the pgwarden binary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = Instant::now();
    match rx.recv_timeout(deadline) {
        Ok(out) => out.expect("wait for the pgwarden binary"),
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!(
                "pgwarden {args:?} still ran after {:.0} s (killed)",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Asserts exit 0 with the output in the message; returns stdout as JSON.
fn ok_json(o: &Output, what: &str) -> serde_json::Value {
    crate::backup::assert_ok(o, what);
    json(o)
}

/// Asserts a failure with a non-zero exit: one line on stderr, no panic, naming `needle`;
/// returns the exit code.
fn one_line_failure(o: &Output, needle: &str) -> i32 {
    let err = stderr(o);
    let code = o.status.code().expect("exited, not killed by a signal");
    assert_ne!(code, 0, "should fail; stdout: {} stderr: {err}", stdout(o));
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "a one-line reason expected, got: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr should mention {needle:?}: {err}"
    );
    code
}

/// `s` quoted for `/bin/sh` (archive_command runs through it).
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A directory under /tmp that the server's OS user can traverse (mode 0755), for a restored
/// data directory and the repository file.
fn reachable_temp_dir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("make a temp dir in /tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the temp dir");
    tmp
}

/// A restored data directory's server: started on a free loopback port as the server's OS
/// user, stopped (immediate) and removed on drop with its log printed if the test panicked,
/// and stopped by a watchdog if the test process dies first.
struct Restored {
    node: Node,
    port: u16,
    password: String,
    watchdog: Option<Watchdog>,
    tmp: Option<tempfile::TempDir>,
}

impl Restored {
    /// Watches `data` (in `tmp`) from now on; [`Restored::start`] starts it.
    fn new(tmp: tempfile::TempDir, data: &Path, password: &str) -> Restored {
        let watchdog = Watchdog::spawn(
            tmp.path(),
            &[Watched::new(
                data.join("postmaster.pid"),
                data,
                Signal::SIGQUIT,
                Duration::from_secs(10),
            )],
        )
        .expect("spawn a watchdog for the restored server");
        let user = OsUser::detect().expect("the server's OS user");
        let node = Node::open(BinDir::from_env(), user, data)
            .unwrap_or_else(|e| panic!("open the restored data directory: {e}"))
            .with_log_file(tmp.path().join("restored.log"));
        Restored {
            node,
            port: 0,
            password: password.to_owned(),
            watchdog: Some(watchdog),
            tmp: Some(tmp),
        }
    }

    fn start(&mut self) {
        self.port = ports::reserve().expect("a free loopback port");
        let sock = self.tmp.as_ref().unwrap().path().join("sock");
        if !sock.is_dir() {
            self.node
                .user()
                .create_dir(&sock, 0o700)
                .expect("make the socket directory");
        }
        let sock = sock.display().to_string();
        let opts = StartOptions::default()
            .port(self.port)
            .setting("listen_addresses", "127.0.0.1")
            .setting("unix_socket_directories", &sock)
            .timeout(Duration::from_secs(60));
        self.node
            .start(&opts)
            .unwrap_or_else(|e| panic!("start the restored server: {e}"));
    }

    /// psql's output (unaligned, tuples only) for `sql` on database postgres.
    fn psql(&self, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = BinDir::from_env()
            .command(Tool::Psql)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d"])
            .args(["postgres", "-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Waits until recovery has ended (the server promoted itself at the end of the
    /// archived WAL), failing at once if the server stopped.
    fn wait_promoted(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            match self.psql("select pg_is_in_recovery()") {
                Ok(v) if v == "f" => return,
                last => {
                    assert!(
                        self.node.is_running(),
                        "the restored server stopped during recovery ({last:?})"
                    );
                    assert!(
                        Instant::now() < deadline,
                        "the restored server was still in recovery after {} s ({last:?})",
                        limit.as_secs()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        panic_log::print_tail_if_panicking(
            &format!("the restored server's log (port {})", self.port),
            &self.node.log(),
        );
        let _ = self.node.stop(&StopOptions::new(
            StopMode::Immediate,
            Duration::from_secs(30),
        ));
        drop(self.watchdog.take());
        if self.port != 0 {
            ports::release(self.port);
        }
        if let Some(tmp) = self.tmp.take() {
            let _ = tmp.close();
        }
    }
}

/// The name of the last WAL segment archived, per pg_stat_archiver (empty if none).
fn last_archived(c: &Cluster) -> String {
    c.psql(
        "postgres",
        "select coalesce(last_archived_wal, '') from pg_stat_archiver",
    )
    .expect("read pg_stat_archiver")
}

#[test]
fn full_and_incremental_in_s3_restore_to_the_same_data() {
    let s3 = s3_server();
    let endpoint = s3.endpoint();
    let repo = format!("s3://{BUCKET}/pg1");
    let exe = env!("CARGO_BIN_EXE_pgwarden");
    // The archiver runs without our environment: the (test) credentials go on the command.
    let archive_command = [
        exe,
        "wal",
        "push",
        "%p",
        "--repo",
        &repo,
        "--s3-endpoint",
        &endpoint,
        "--s3-access-key-id",
        s3.access_key_id(),
        "--s3-secret-access-key",
        s3.secret_access_key(),
    ]
    .map(sh_quote)
    .join(" ");
    let cluster = Cluster::builder()
        .setting("archive_mode", "on")
        .setting("archive_command", &archive_command)
        .start()
        .expect(
            "start a throwaway PostgreSQL 15 cluster (is postgresql-15 installed? run ./run test)",
        );
    let dsn = cluster.dsn();
    let pgdata = cluster.data_dir().display().to_string();
    let env = s3.env();
    let with_repo = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--repo".into(),
            repo.clone(),
            "--s3-endpoint".into(),
            endpoint.clone(),
        ]);
        v.extend(["--s3-region".into(), s3.region().to_owned()]);
        v.extend(["--format".into(), "json".into()]);
        v
    };
    let pgw = |args: &[&str]| {
        let args = with_repo(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &env, COMMAND_DEADLINE)
    };

    let init = ok_json(&pgw(&["backup", "init", "-d", &dsn]), "backup init");
    assert_eq!(init["created"], true, "{init}");
    assert_eq!(init["encrypted"], false, "{init}");
    assert!(
        s3.get_object(BUCKET, "pg1/pgwarden-repo.json")
            .unwrap()
            .is_some(),
        "init wrote the repository's description into the bucket: {:?}",
        s3.list(BUCKET, "")
    );

    cluster
        .psql(
            "postgres",
            "CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 100000) g",
        )
        .unwrap();
    let full = ok_json(
        &pgw(&[
            "backup", "run", "-d", &dsn, "--pgdata", &pgdata, "--type", "full",
        ]),
        "backup run --type full",
    );
    cluster
        .psql(
            "postgres",
            "UPDATE t SET v = md5(v) WHERE g % 10 = 0;\n\
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(100001, 120000) g;",
        )
        .unwrap();
    let incr = ok_json(
        &pgw(&[
            "backup", "run", "-d", &dsn, "--pgdata", &pgdata, "--type", "incr",
        ]),
        "backup run --type incr",
    );
    let (full_id, incr_id) = (
        full["id"]
            .as_str()
            .unwrap_or_else(|| panic!("an id: {full}")),
        incr["id"]
            .as_str()
            .unwrap_or_else(|| panic!("an id: {incr}")),
    );
    assert_eq!(incr["kind"], "incr", "{incr}");
    assert_eq!(incr["became_full"], false, "{incr}");
    assert_eq!(incr["parent"], full_id, "{incr}");
    // Changes only the archived WAL holds, replayed after the incremental.
    cluster
        .psql(
            "postgres",
            "DELETE FROM t WHERE g % 1000 = 7;\n\
             INSERT INTO t SELECT g, 'after the incremental'\n\
               FROM generate_series(120001, 125000) g;",
        )
        .unwrap();
    let source = cluster.psql("postgres", TABLE_DIGEST).unwrap();
    assert!(source.ends_with(" 124880"), "{source}");
    let switched = cluster
        .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_archived(&cluster) < switched {
        assert!(
            Instant::now() < deadline,
            "segment {switched} not archived within 60 s (last archived: {:?}); server log:\n{}",
            last_archived(&cluster),
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let list = ok_json(&pgw(&["backup", "list"]), "backup list");
    let backups = list["backups"].as_array().expect("a backups array");
    assert_eq!(backups.len(), 2, "{list}");
    assert_eq!(backups[0]["id"], full_id, "{list}");
    assert_eq!(backups[0]["kind"], "full", "{list}");
    assert_eq!(backups[1]["id"], incr_id, "{list}");
    assert_eq!(backups[1]["kind"], "incr", "{list}");
    assert_eq!(backups[1]["parent"], full_id, "{list}");
    assert!(backups.iter().all(|b| b["restorable"] == true), "{list}");
    assert!(
        list["wal"]["last_archived"]
            .as_str()
            .is_some_and(|l| l >= switched.as_str()),
        "the switched segment {switched} is in the repository: {list}"
    );
    assert!(
        s3.list(BUCKET, "pg1/backup/")
            .unwrap()
            .iter()
            .any(|k| k.ends_with(&format!("{incr_id}/manifest.pgw"))),
        "{:?}",
        s3.list(BUCKET, "pg1/backup/")
    );

    let verify = pgw(&["backup", "verify"]);
    let report = ok_json(&verify, "backup verify");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");

    // Restore with a repository file only (no AWS_* variables): restore_command names it,
    // so the restored server, which runs without our environment, can fetch WAL from S3.
    let tmp = reachable_temp_dir("pgw-s3-restore-");
    let data = tmp.path().join("data");
    let user = OsUser::detect().expect("the server's OS user");
    let repo_file = tmp.path().join("repo.toml");
    user.write_file(
        &repo_file,
        format!(
            "repo = \"{repo}\"\ns3_endpoint = \"{endpoint}\"\n\
             s3_access_key_id = \"{}\"\ns3_secret_access_key = \"{}\"\n",
            s3.access_key_id(),
            s3.secret_access_key()
        )
        .as_bytes(),
        0o600,
    )
    .expect("write the repository file");
    let restore = run(
        &[
            "backup",
            "restore",
            "--repo-config",
            &repo_file.display().to_string(),
            "--pgdata",
            &data.display().to_string(),
            "--no-archive",
            "--os-user",
            user.name(),
            "--format",
            "json",
        ],
        &[],
        COMMAND_DEADLINE,
    );
    let restored_report = ok_json(&restore, "backup restore");
    assert_eq!(restored_report["backup"], incr_id, "{restored_report}");
    let auto_conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("restore_command") && auto_conf.contains("--repo-config"),
        "{auto_conf}"
    );
    let mut restored = Restored::new(tmp, &data, cluster.password());
    restored.start();
    restored.wait_promoted(Duration::from_secs(60));
    assert_eq!(
        restored.psql(TABLE_DIGEST).unwrap(),
        source,
        "the restored table equals the source's, WAL after the incremental included"
    );
    assert!(
        restored.node.log().contains("restored log file"),
        "WAL came from the repository through restore_command"
    );
    drop(restored);

    // The drill's own server inherits pgwarden's environment (only PG* variables are
    // cleared), so its restore_command finds the AWS_* credentials there.
    let drill = ok_json(
        &pgw(&["backup", "drill", "--check-query", TABLE_DIGEST]),
        "backup drill",
    );
    assert_eq!(drill["ok"], true, "{drill}");
    assert_eq!(drill["amcheck_ok"], true, "{drill}");
    assert_eq!(drill["backup"], incr_id, "{drill}");
    assert_eq!(drill["check_result"], source.as_str(), "{drill}");
}

/// The server's answer (S3 error XML, a line break after its declaration) stays inside the
/// one line.
#[test]
fn a_missing_bucket_fails_in_one_line() {
    let s3 = s3_server();
    let endpoint = s3.endpoint();
    let dsn = crate::shared().dsn();
    let o = run(
        &[
            "backup",
            "init",
            "-d",
            &dsn,
            "--repo",
            "s3://no-such-bucket/pg1",
            "--s3-endpoint",
            &endpoint,
        ],
        &s3.env(),
        COMMAND_DEADLINE,
    );
    one_line_failure(&o, "no-such-bucket");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        s3.list(BUCKET, "").unwrap(),
        Vec::<String>::new(),
        "nothing written elsewhere"
    );
}

#[test]
fn missing_credentials_fail_in_one_line() {
    let s3 = s3_server();
    let endpoint = s3.endpoint();
    let repo = format!("s3://{BUCKET}/no-credentials");
    for args in [
        vec!["backup", "list"],
        vec!["backup", "verify"],
        vec!["wal", "fetch", "000000010000000000000001", "/nonexistent/x"],
    ] {
        let mut args = args;
        args.extend(["--repo", &repo, "--s3-endpoint", &endpoint]);
        let o = run(&args, &[], COMMAND_DEADLINE);
        // wal fetch is restore_command: every failure is 126 (PostgreSQL stops recovery).
        let want = if args[0] == "wal" { 126 } else { 2 };
        assert_eq!(
            one_line_failure(&o, "credentials"),
            want,
            "{args:?}: bad input, found before anything was done"
        );
        assert!(stderr(&o).contains("AWS_ACCESS_KEY_ID"), "{}", stderr(&o));
    }
    // A key id without its secret.
    let o = run(
        &[
            "backup",
            "list",
            "--repo",
            &repo,
            "--s3-endpoint",
            &endpoint,
            "--s3-access-key-id",
            s3.access_key_id(),
        ],
        &[],
        COMMAND_DEADLINE,
    );
    one_line_failure(&o, "secret");
    assert_eq!(
        s3.list(BUCKET, "no-credentials").unwrap(),
        Vec::<String>::new(),
        "nothing written"
    );
}

#[test]
fn an_unreachable_endpoint_fails_at_once_and_writes_nothing() {
    // A port nobody listens on: reserved here, never bound.
    let port = ports::reserve().expect("a free port");
    let endpoint = format!("http://127.0.0.1:{port}");
    let repo = format!("s3://{BUCKET}/unreachable");
    let env = vec![
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            "pgwtestaccesskey".to_owned(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "pgwtestsecretkey".to_owned(),
        ),
    ];
    let tmp = reachable_temp_dir("pgw-s3-unreachable-");
    let data = tmp.path().join("data");
    let data_arg = data.display().to_string();
    let wal = tmp.path().join("000000010000000000000001");
    std::fs::write(&wal, vec![0u8; 16 * 1024 * 1024]).unwrap();
    let wal_arg = wal.display().to_string();
    let dsn = crate::shared().dsn();
    let commands: Vec<Vec<&str>> = vec![
        vec!["backup", "init", "-d", &dsn],
        vec!["backup", "list"],
        vec!["backup", "verify"],
        vec![
            "backup",
            "restore",
            "--pgdata",
            &data_arg,
            "--os-user",
            "postgres",
        ],
        vec!["wal", "push", &wal_arg],
        vec!["wal", "fetch", "000000010000000000000001", &data_arg],
    ];
    for mut args in commands {
        args.extend(["--repo", &repo, "--s3-endpoint", &endpoint]);
        let o = run(&args, &env, UNREACHABLE_DEADLINE);
        let code = one_line_failure(&o, &format!("127.0.0.1:{port}"));
        let want = if args[..2] == ["wal", "fetch"] {
            126
        } else {
            1
        };
        assert_eq!(code, want, "{args:?}: the work failed: {}", stderr(&o));
        assert!(
            stderr(&o).contains("Connection refused"),
            "{args:?}: says why: {}",
            stderr(&o)
        );
        assert!(!data.exists(), "{args:?} wrote {}", data.display());
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "{args:?}: only the WAL file is in {}",
            tmp.path().display()
        );
    }
    ports::release(port);
}
