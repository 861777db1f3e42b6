//! `pgwarden pool`: runs the connection pooler in the foreground from a pgbouncer.ini
//! (as PgBouncer would read it) or a native pool.toml; the pooler runs its own worker threads.

use std::path::PathBuf;

use clap::Args;

use crate::exit::{Failure, OrFail, Outcome, Usage, POOL_EXIT_CODES};

#[derive(Debug, Args)]
#[command(after_help = POOL_EXIT_CODES)]
pub struct PoolArgs {
    /// A PgBouncer configuration file, read as PgBouncer reads it (%include, [databases],
    /// [users], [pgbouncer], auth_file).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "file"])]
    pub pgbouncer_ini: Option<PathBuf>,
    /// The native configuration (pool.toml; see docs/pool.md).
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    pub config: Option<PathBuf>,
    /// Either, as PgBouncer takes it: a path ending in .toml is native, anything else ini.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Listen here instead of listen_addr:listen_port (`127.0.0.1:6432`).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Serve Prometheus metrics on HOST:PORT at /metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Worker threads (default: the config's `workers`, else half the cores, at least one).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Read and check the configuration, print what is not supported, and exit.
    #[arg(long)]
    pub check: bool,
}

pub async fn run(a: PoolArgs) -> Result<Outcome, Failure> {
    let source = match (a.pgbouncer_ini, a.config, a.file) {
        (Some(p), None, None) => pgw_pool::Source::Ini(p),
        (None, Some(p), None) => pgw_pool::Source::Toml(p),
        (None, None, Some(p)) if p.extension().is_some_and(|e| e == "toml") => {
            pgw_pool::Source::Toml(p)
        }
        (None, None, Some(p)) => pgw_pool::Source::Ini(p),
        _ => {
            return Err(Failure::from_classified(Usage(
                "pool: give --pgbouncer-ini FILE or --config FILE",
            )))
        }
    };
    let listen = match a.listen {
        None => None,
        Some(l) => {
            let (h, p) = l
                .rsplit_once(':')
                .ok_or_else(|| Failure::from_classified(Usage("--listen: expected HOST:PORT")))?;
            let port: u16 = p.parse().map_err(|_| {
                Failure::from_classified(Usage("--listen: the port is not a number"))
            })?;
            Some((h.trim_matches(['[', ']']).to_owned(), port))
        }
    };
    let over = pgw_pool::Overrides {
        listen,
        metrics: a.metrics,
        workers: a.workers.unwrap_or(0),
    };
    if a.check {
        let rt = pgw_pool::load(&source, &over)
            .map_err(pgw_pool::PoolError::Config)
            .or_fail("pool")?;
        for line in &rt.unsupported {
            println!("{line}");
        }
        println!(
            "configuration ok: {} databases, {} users in the auth file, pool_mode {}, listening on {}:{}",
            rt.config.databases.len(),
            rt.users.len(),
            rt.config.pool.pool_mode.as_str(),
            rt.config.pool.listen_addr,
            rt.config.pool.listen_port
        );
        return Ok(Outcome::Done);
    }
    // The pooler's own threads (one single-threaded runtime per worker) do the work; this
    // runtime only runs its control loop (signals, the sweeper, metrics).
    pgw_pool::run(source, over, None).await.or_fail("pool")?;
    Ok(Outcome::Done)
}
