//! `pgwarden backup` and `pgwarden wal` on real throwaway clusters with a local repository:
//! a round trip through a full and an incremental backup, point-in-time recovery and the
//! drill, damage that verify must name, expire, encryption, an interrupted backup, `wal
//! push`'s idempotency, bad input refused before anything is written, and a backup taken
//! from a standby.
//!
//! Each test has its own repository and cluster (the archiver writes into the repository,
//! so two tests never share one). The helpers below make a repository under /tmp that the
//! server's user reaches, a cluster archiving into it, start a restored data directory on a
//! free port (stopped by `Drop`, its log printed when the test fails), and checksum every
//! user table.

mod bad_input;
mod damage;
mod encryption;
mod expire;
mod interrupted;
mod pitr;
mod round_trip;
mod standby;
mod wal;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgw_cluster::Cluster;
use pgw_node::{BinDir, Node, OsUser, StartOptions, StopMode, StopOptions, Tool};

use crate::{assert_fails, json, pgwarden, stderr, stdout};

/// The binary the server's archive_command and restore_command run.
pub const EXE: &str = env!("CARGO_BIN_EXE_pgwarden");

/// How long the archiver, a restored server's replay or its promotion may take.
const WAIT: Duration = Duration::from_secs(60);

/// A temp dir under /tmp that the server's user owns (so it can write sockets and logs
/// there) and everyone can traverse; removed on drop.
pub struct Scratch {
    tmp: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let tmp = tempfile::Builder::new()
            .prefix("pgw-backup-it-")
            .tempdir_in("/tmp")
            .expect("make a temp dir in /tmp");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temp dir");
        server_user()
            .chown(tmp.path())
            .expect("give the temp dir to the server's user");
        Scratch { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// The OS user the servers run as (`postgres`, as we are root).
pub fn server_user() -> OsUser {
    OsUser::detect().expect("the server's OS user")
}

/// A repository directory (not made yet: `backup init` makes it) in its own scratch dir,
/// and its key file when it is to be encrypted.
pub struct Repo {
    pub scratch: Scratch,
    pub dir: PathBuf,
    pub key_file: Option<PathBuf>,
}

impl Repo {
    /// An unencrypted repository.
    pub fn new() -> Repo {
        let scratch = Scratch::new();
        let dir = scratch.join("repo");
        Repo {
            scratch,
            dir,
            key_file: None,
        }
    }

    /// A repository to be encrypted with `secret`, held in a key file only the server's
    /// user (and root) can read, as the archiver reads it.
    pub fn encrypted(secret: &str) -> Repo {
        let mut repo = Repo::new();
        let key = repo.scratch.join("repo.key");
        server_user()
            .write_file(&key, format!("{secret}\n").as_bytes(), 0o600)
            .expect("write the key file");
        repo.key_file = Some(key);
        repo
    }

    pub fn dir_str(&self) -> &str {
        self.dir.to_str().expect("a UTF-8 path")
    }

    /// A path beside the repository, in its scratch dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// `--repo DIR` and the key file, as every command takes them.
    pub fn flags(&self) -> Vec<String> {
        let mut f = vec!["--repo".to_string(), self.dir_str().to_string()];
        if let Some(k) = &self.key_file {
            f.extend(["--encryption-key-file".to_string(), k.display().to_string()]);
        }
        f
    }

    /// The archive_command of a cluster archiving into this repository.
    pub fn archive_command(&self) -> String {
        format!("{EXE} wal push %p {}", self.flags().join(" "))
    }

    /// Runs pgwarden with `args` and this repository's flags.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let flags = self.flags();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        pgwarden(&all)
    }

    /// A new cluster whose archiver pushes into this repository (nothing is archived before
    /// `init`: no segment is complete yet).
    pub fn cluster(&self) -> Cluster {
        Cluster::builder()
            .setting("archive_mode", "on")
            .setting("archive_command", &self.archive_command())
            .start()
            .expect("start an archiving cluster")
    }

    /// `backup init` for `c` (with --encrypt when there is a key).
    pub fn init(&self, c: &Cluster) -> serde_json::Value {
        let dsn = c.dsn();
        let mut args = vec!["backup", "init", "-d", &dsn, "--format", "json"];
        if self.key_file.is_some() {
            args.push("--encrypt");
        }
        let o = self.cmd(&args);
        assert_ok(&o, "backup init");
        json(&o)
    }

    /// `backup run --type kind` of `c`, its JSON summary.
    pub fn backup(&self, c: &Cluster, kind: &str) -> serde_json::Value {
        let dsn = c.dsn();
        let pgdata = c.data_dir().display().to_string();
        let o = self.cmd(&[
            "backup", "run", "-d", &dsn, "--pgdata", &pgdata, "--type", kind, "--format", "json",
        ]);
        assert_ok(&o, "backup run");
        json(&o)
    }

    /// `backup list --format json`.
    pub fn list(&self) -> serde_json::Value {
        let o = self.cmd(&["backup", "list", "--format", "json"]);
        assert_ok(&o, "backup list");
        json(&o)
    }

    /// `backup verify --format json`: its exit code and report.
    pub fn verify(&self) -> (Option<i32>, serde_json::Value) {
        let o = self.cmd(&["backup", "verify", "--format", "json"]);
        (o.status.code(), json(&o))
    }

    /// Asserts that verify finds no damage.
    pub fn assert_clean(&self) {
        let (code, doc) = self.verify();
        assert_eq!(code, Some(0), "verify of a clean repository: {doc:#}");
        assert_eq!(doc["problems"], serde_json::json!([]), "{doc:#}");
    }

    /// The file of the archived WAL file `name`.
    pub fn wal_object(&self, name: &str) -> PathBuf {
        self.dir.join(format!("wal/{}/{name}.pgw", &name[..16]))
    }

    /// The archived segments' names (24 hex digits), in order.
    pub fn wal_segments(&self) -> Vec<String> {
        let mut out: Vec<String> = files_under(&self.dir.join("wal"))
            .into_iter()
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.strip_suffix(".pgw")?.to_string();
                (name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
            })
            .collect();
        out.sort();
        out
    }

    /// Switches `c` to a new WAL segment and waits until the one it finished is in the
    /// repository; returns that segment's name.
    pub fn switch_wal(&self, c: &Cluster) -> String {
        let seg = c
            .psql("postgres", "select pg_walfile_name(pg_switch_wal())")
            .expect("pg_switch_wal");
        self.wait_archived(c, &seg);
        seg
    }

    /// Waits until `c`'s archiver has pushed `segment` into the repository.
    pub fn wait_archived(&self, c: &Cluster, segment: &str) {
        let path = self.wal_object(segment);
        let deadline = Instant::now() + WAIT;
        while !path.exists() {
            if Instant::now() > deadline {
                let archiver = c
                    .psql("postgres", "select row(a.*)::text from pg_stat_archiver a")
                    .unwrap_or_default();
                panic!(
                    "{segment} did not reach the repository in {} s; pg_stat_archiver: {archiver}\n{}",
                    WAIT.as_secs(),
                    tail(&c.log(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every file of the repository (relative path) with its contents' hash: what "nothing
    /// was written" compares.
    pub fn snapshot(&self) -> BTreeMap<String, (u64, [u8; 32])> {
        snapshot(&self.dir)
    }

    /// The objects of backup `id` other than its manifest (its packs).
    pub fn packs(&self, id: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = files_under(&self.dir.join("backup").join(id))
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n != "manifest.pgw"))
            .collect();
        v.sort();
        v
    }

    /// Restores into `dest` with `extra` flags, asserting success; the JSON report.
    pub fn restore(&self, dest: &Path, extra: &[&str]) -> serde_json::Value {
        let dest = dest.display().to_string();
        let mut args = vec![
            "backup",
            "restore",
            "--pgdata",
            &dest,
            "--no-archive",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let o = self.cmd(&args);
        assert_ok(&o, "backup restore");
        json(&o)
    }
}

/// A repository and a cluster archiving into it, initialised.
pub fn setup() -> (Repo, Cluster) {
    let repo = Repo::new();
    let c = repo.cluster();
    repo.init(&c);
    (repo, c)
}

/// Asserts exit 0, with stdout and stderr in the message.
pub fn assert_ok(o: &Output, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Asserts a refusal of bad input: `code`, one line on stderr that starts with
/// "pgwarden: error:" and names `needle`.
pub fn assert_error(o: &Output, code: i32, needle: &str) {
    assert_fails(o, code, needle);
    assert!(
        stderr(o).starts_with("pgwarden: error:"),
        "stderr should start with \"pgwarden: error:\": {}",
        stderr(o)
    );
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` (relative path) with its size and a hash of its contents.
pub fn snapshot(dir: &Path) -> BTreeMap<String, (u64, [u8; 32])> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            (rel, (bytes.len() as u64, digest(&bytes)))
        })
        .collect()
}

/// A digest of a file's contents, to tell a changed file (SipHash, four ways seeded).
fn digest(bytes: &[u8]) -> [u8; 32] {
    use std::hash::{Hash, Hasher};
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (i as u64).hash(&mut h);
        bytes.hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// Flips every bit of the byte at `offset` of `path` (again to put it back).
pub fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read the object");
    assert!(offset < bytes.len(), "{} is too short", path.display());
    bytes[offset] ^= 0xff;
    // Rewrite in place: keeps the file's owner and mode.
    std::fs::write(path, &bytes).expect("write the object");
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The current time as the server says it, in UTC (RFC 3339 with microseconds).
pub fn server_now(c: &Cluster) -> String {
    c.psql(
        "postgres",
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .expect("read the server's clock")
}

/// `pgbench -i -s scale` on `c`'s database postgres (logged tables).
pub fn pgbench_init(c: &Cluster, scale: u32) {
    let out = Command::new(BinDir::from_env().dir().join("pgbench"))
        .args(["-i", "-q", "-s", &scale.to_string()])
        .args([
            "-h",
            c.host(),
            "-p",
            &c.port().to_string(),
            "-U",
            "postgres",
        ])
        .arg("postgres")
        .env("PGPASSWORD", c.password())
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGDATABASE")
        .stdin(Stdio::null())
        .output()
        .expect("run pgbench");
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One query that gives, for every user table, `schema.table=rows:md5 of its rows in order`
/// (each table's rows as text, ordered, aggregated).
const TABLE_SUMS: &str = "select schemaname || '.' || tablename || '=' || \
    (xpath('/row/s/text()', query_to_xml(format(\
        'select count(*) || '':'' || md5(coalesce(string_agg(t::text, ''|'' order by t::text), '''')) as s from %I.%I t', \
        schemaname, tablename), false, true, '')))[1]::text \
    from pg_tables where schemaname not in ('pg_catalog', 'information_schema') \
    order by schemaname, tablename";

/// Every user table's row count and checksum on `c`.
pub fn table_sums(c: &Cluster) -> Vec<String> {
    let sums: Vec<String> = c
        .psql("postgres", TABLE_SUMS)
        .expect("checksum the tables")
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!sums.is_empty(), "no user tables to compare");
    sums
}

/// A restored data directory running on a free port; stopped (immediately) on drop, with
/// its log printed when the test is failing.
pub struct Restored {
    pub node: Node,
    pub port: u16,
    password: String,
}

impl Restored {
    /// Starts the restored `pgdata` (its socket and log beside it, in `dir`), connecting as
    /// postgres with `password` (the backed-up cluster's pg_hba and roles came along), and
    /// waits until it has left recovery (replayed to its target and promoted).
    pub fn start(pgdata: &Path, dir: &Path, password: &str) -> Restored {
        let (r, started) = Restored::try_start(pgdata, dir, password);
        if let Err(e) = started {
            panic!("{e}");
        }
        r
    }

    /// [`Restored::start`], returning why the server did not start or leave recovery
    /// (the guard, which stops whatever runs, either way).
    pub fn try_start(pgdata: &Path, dir: &Path, password: &str) -> (Restored, Result<(), String>) {
        let node = Node::open(BinDir::from_env(), server_user(), pgdata)
            .expect("open the restored data directory")
            .with_log_file(dir.join("restored.log"));
        let port = pgw_cluster::ports::reserve().expect("a free port");
        let r = Restored {
            node,
            port,
            password: password.to_string(),
        };
        let sock = dir.display().to_string();
        let started = r
            .node
            .start(
                &StartOptions::default()
                    .port(port)
                    .setting("unix_socket_directories", &sock)
                    .setting("listen_addresses", "127.0.0.1")
                    .timeout(WAIT),
            )
            .map_err(|e| format!("start the restored cluster: {e}"))
            .and_then(|()| r.wait_promoted());
        (r, started)
    }

    /// Runs `sql` on database postgres as postgres; its output (unaligned, tuples only).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_in("postgres", sql)
    }

    /// Runs `sql` on database `db`.
    pub fn try_psql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = BinDir::from_env()
            .command(Tool::Psql)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout)
                .trim_end_matches(['\n', '\r'])
                .to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("{sql} on the restored cluster: {e}"))
    }

    /// Polls `pg_is_in_recovery()` until it says false.
    fn wait_promoted(&self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.try_psql("select pg_is_in_recovery()");
            if state.as_deref() == Ok("f") {
                return Ok(());
            }
            if Instant::now() > deadline || !self.node.is_running() {
                return Err(format!(
                    "the restored cluster did not leave recovery in {} s ({state:?})\n{}",
                    WAIT.as_secs(),
                    tail(&self.node.log(), 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every user table's row count and checksum.
    pub fn table_sums(&self) -> Vec<String> {
        self.psql(TABLE_SUMS).lines().map(str::to_string).collect()
    }

    /// Asserts that the visibility map agrees with the heap in every user table
    /// (pg_visibility's pg_check_visible and pg_check_frozen find nothing): a visibility map
    /// page restored older than its heap pages makes index-only scans return dead rows.
    pub fn assert_visibility_map_agrees(&self) {
        self.psql("create extension if not exists pg_visibility");
        let wrong = self.psql(
            "select coalesce(string_agg(format('%s: %s tuple(s) not all-visible, %s not frozen', \
                 c.oid::regclass, \
                 (select count(*) from pg_check_visible(c.oid)), \
                 (select count(*) from pg_check_frozen(c.oid))), '; '), '') \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'm') and n.nspname not in ('pg_catalog', 'information_schema') \
               and ((select count(*) from pg_check_visible(c.oid)) > 0 \
                    or (select count(*) from pg_check_frozen(c.oid)) > 0)",
        );
        assert_eq!(
            wrong, "",
            "the restored visibility map marks pages all-visible (or all-frozen) whose tuples are not"
        );
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the restored cluster's log (port {}) ---\n{}",
                self.port,
                tail(&self.node.log(), 40)
            );
        }
        let _ = self.node.stop(&StopOptions::new(
            StopMode::Immediate,
            Duration::from_secs(30),
        ));
        pgw_cluster::ports::release(self.port);
    }
}
