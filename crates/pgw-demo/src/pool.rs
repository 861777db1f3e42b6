//! The pooler part of the demo: `pgwarden pool` (started from the binary's own path, in
//! transaction mode) in front of the demo cluster, pgbench with a new connection per
//! transaction (`-C`) direct and through the pool, the connection times side by side, and
//! the console's SHOW POOLS.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::DemoError;

/// What the pooler part measured.
#[derive(Debug, Serialize)]
pub struct PoolDemo {
    /// pgbench `-C` straight to PostgreSQL.
    pub direct: Churn,
    /// The same through `pgwarden pool`.
    pub pooled: Churn,
    /// The console's SHOW POOLS afterwards, one map per row (PgBouncer's column names).
    pub show_pools: Vec<std::collections::BTreeMap<String, String>>,
}

/// One pgbench `-C` run.
#[derive(Debug, Serialize)]
pub struct Churn {
    /// Transactions per second, connection time included.
    pub tps: f64,
    /// pgbench's average connection time, milliseconds.
    pub connect_ms: f64,
}

fn failed(msg: impl Into<String>) -> DemoError {
    DemoError::Pool(msg.into())
}

/// The pooler process; killed on drop.
struct PoolGuard {
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the demo cluster is.
pub struct Server<'a> {
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
    pub bin_dir: &'a Path,
}

/// Runs the pooler part against the running demo cluster.
pub async fn run(exe: &Path, server: Server<'_>) -> Result<PoolDemo, DemoError> {
    let port = pgw_cluster::ports::reserve().map_err(|e| failed(format!("a free port: {e}")))?;
    let tmp = tempfile::tempdir().map_err(|e| failed(format!("temp dir: {e}")))?;
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    std::fs::write(
        tmp.path().join("userlist.txt"),
        format!("{} {}\n", q(server.user), q(server.password)),
    )
    .map_err(|e| failed(format!("write the auth file: {e}")))?;
    let toml_str = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let config = format!(
        "[pool]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nauth_type = \"md5\"\n\
         auth_file = {}\npool_mode = \"transaction\"\ndefault_pool_size = 4\n\
         admin_users = [{}]\n\n[databases.\"*\"]\nhost = [\"127.0.0.1\"]\nport = {}\n",
        toml_str(&tmp.path().join("userlist.txt").display().to_string()),
        toml_str(server.user),
        server.port
    );
    let config_path = tmp.path().join("pool.toml");
    std::fs::write(&config_path, config).map_err(|e| failed(format!("write pool.toml: {e}")))?;
    let log = std::fs::File::create(tmp.path().join("pool.log"))
        .map_err(|e| failed(format!("create the pool log: {e}")))?;
    let child = Command::new(exe)
        .args(["--log", "warn", "pool", "--workers", "2", "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| failed(format!("start `pgwarden pool`: {e}")))?;
    let mut guard = PoolGuard {
        child: Some(child),
        _tmp: tmp,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(c) = guard.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let log =
                    std::fs::read_to_string(guard._tmp.path().join("pool.log")).unwrap_or_default();
                return Err(failed(format!(
                    "`pgwarden pool` exited ({status}): {}",
                    log.lines().last().unwrap_or("")
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(failed("`pgwarden pool` did not listen within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let script = guard._tmp.path().join("select1.sql");
    std::fs::write(&script, "SELECT 1;\n").map_err(|e| failed(format!("pgbench script: {e}")))?;
    let pgbench = server.bin_dir.join("pgbench");
    let run = |p: u16| {
        let (pgbench, script) = (pgbench.clone(), script.clone());
        let (user, password) = (server.user.to_owned(), server.password.to_owned());
        tokio::task::spawn_blocking(move || churn(&pgbench, &script, p, &user, &password))
    };
    let direct = run(server.port)
        .await
        .map_err(|e| failed(format!("pgbench: {e}")))??;
    let pooled = run(port)
        .await
        .map_err(|e| failed(format!("pgbench: {e}")))??;
    let show_pools = show_pools(port, server.user, server.password).await?;
    drop(guard);
    Ok(PoolDemo {
        direct,
        pooled,
        show_pools,
    })
}

fn churn(
    pgbench: &Path,
    script: &Path,
    port: u16,
    user: &str,
    password: &str,
) -> Result<Churn, DemoError> {
    let out = Command::new(pgbench)
        .args([
            "-n",
            "-C",
            "-T",
            "3",
            "-c",
            "4",
            "-j",
            "2",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(port.to_string())
        .arg("-U")
        .arg(user)
        .arg("-f")
        .arg(script)
        .arg("postgres")
        .env("PGPASSWORD", password)
        .env_remove("PGSERVICE")
        .output()
        .map_err(|e| failed(format!("run pgbench: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    match (number("tps = "), number("average connection time = ")) {
        (Some(tps), Some(connect_ms)) if out.status.success() => Ok(Churn { tps, connect_ms }),
        _ => Err(failed(format!(
            "pgbench -C on port {port}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no result")
        ))),
    }
}

async fn show_pools(
    port: u16,
    user: &str,
    password: &str,
) -> Result<Vec<std::collections::BTreeMap<String, String>>, DemoError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("pgbouncer");
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| failed(format!("connect to the pool's console: {e}")))?;
    let task = tokio::spawn(conn);
    let rows = client
        .simple_query("SHOW POOLS")
        .await
        .map_err(|e| failed(format!("SHOW POOLS: {e}")))?;
    drop(client);
    let _ = task.await;
    let mut out = Vec::new();
    for m in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            let mut row = std::collections::BTreeMap::new();
            for (i, c) in r.columns().iter().enumerate() {
                row.insert(c.name().to_owned(), r.get(i).unwrap_or("").to_owned());
            }
            out.push(row);
        }
    }
    Ok(out)
}
