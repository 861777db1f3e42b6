//! Throwaway PostgreSQL 15 clusters for `pgwarden demo`, every integration test of the
//! workspace, and the benches; and the shared plumbing of throwaway fixtures (free ports,
//! the watchdog, the log on panic) that `pgw-testkit` builds on.
//!
//! A [`Cluster`] is a real server (never a mock): `initdb` into a fresh temp dir, the superuser
//! `postgres` with a random password (SCRAM over TCP, trust on the Unix socket), listening on
//! `127.0.0.1` on a free port, with its Unix socket in its own temp dir, started with
//! `pg_ctl -w` and polled with `pg_isready` until it accepts connections (60 s deadline, the log
//! tail in the error otherwise). [`ClusterBuilder`] adds settings, files in the data dir (TLS
//! certificates), pg_hba lines, data checksums, another bin dir, or makes a streaming standby
//! of another cluster (optionally through a replication slot, under an `application_name`).
//! [`Replicated`] starts a primary and N standbys in one call and waits until they stream.
//! For HA tests a cluster can be crashed ([`Cluster::kill`]), stopped keeping its data
//! ([`Cluster::stop_keep_data`]), started again on the same port ([`Cluster::start_again`]),
//! promoted ([`Cluster::promote`]) and rejoined to a new primary with pg_rewind
//! ([`Cluster::rejoin`]); [`Cluster::wait_streaming`] and [`Cluster::wait_replayed`] wait with
//! a deadline. [`ClusterError`] says what failed, on one line.
//!
//! The PostgreSQL work (initdb, pg_ctl, pg_basebackup, pg_rewind, readiness, the OS user) is
//! [`pgw_node`]'s, re-exported here; this crate adds throwaway temp dirs, free ports, the
//! harness's configuration, psql, and cleanup.
//!
//! The API is synchronous (`std::process`), so it works from sync tests and from async ones
//! (it blocks the calling thread; wrap in `spawn_blocking` if that matters). Several clusters
//! can run at once in one process: each has its own temp dir and a port reserved process-wide.
//!
//! ```no_run
//! let cluster = pgw_cluster::Cluster::builder().setting("work_mem", "12MB").start()?;
//! assert_eq!(cluster.psql("postgres", "select 1")?, "1");
//! println!("connect with: {}", cluster.dsn());
//! # Ok::<(), pgw_cluster::ClusterError>(())
//! ```
//!
//! The binaries come from `$PGWARDEN_PG_BIN`, else `/usr/lib/postgresql/15/bin`. PostgreSQL
//! refuses to run as root, so when we are root, `initdb`, `pg_ctl` and the server run as the
//! `postgres` OS user and the temp dir is given to it; otherwise they run as the current user.
//! Clients (`psql`, `pg_isready`) run as the current user.
//!
//! # Fixture plumbing
//! [`ports`] reserves free loopback ports process-wide (never 5432), [`watchdog`] stops a
//! fixture's processes and removes its temp dir when the owning process dies, [`panic_log`]
//! prints a log tail when a test panics, [`os`] picks a temp base the server user can reach.
//! `pgw-testkit` (etcd, PgBouncer, a TCP proxy) uses them so that its fixtures keep the same
//! invariants as clusters.
//!
//! # What it does not do
//! - It is not for production clusters: PostgreSQL's default settings, a throwaway password
//!   derived from time, pid and a counter, no backups, and the data is deleted on drop. Real
//!   data directories are `pgw-node`'s business.
//! - No failover decisions: tests (and later the HA agent's tests) decide whom to kill and
//!   promote. No archiving.
//! - It never adopts, reads or changes a cluster it did not create, and never installs
//!   PostgreSQL. Test-only fixtures for other programs live in `pgw-testkit`, not here (this
//!   crate ships in the binary, for the demo).
//!
//! # Invariants
//! - **Never port 5432, never a system cluster:** the port is a free loopback port chosen by
//!   the OS (5432 is skipped), the server listens on `127.0.0.1` only, and its socket is in its
//!   own temp dir, never `/var/run/postgresql`. The port stays the cluster's (reserved) until
//!   it is dropped, across kills and restarts.
//! - **Stopped and removed on drop:** dropping a [`Cluster`] stops the server (immediate mode)
//!   and removes the temp dir, also while a test panics; then the last 60 lines of the server
//!   log are printed to stderr first, to show why. `Drop` never panics. [`Cluster::stop`] does
//!   the same gracefully and returns errors.
//! - **No server outlives its owner:** as soon as the temp dir exists, a watchdog (`sh` in its
//!   own process group, ignoring SIGHUP/SIGINT/SIGTERM) polls the owning process every 0.5 s.
//!   When the owner is gone (SIGKILL, or a normal exit that never ran `Drop`) it sends SIGQUIT
//!   to the postmaster from `postmaster.pid` (immediate shutdown; only if that pid is a
//!   process working in the data directory, so a stale file's pid, reused by another
//!   process, is left alone), waits for it (SIGKILL after 10 s), and removes the temp dir. A normal drop stops the server first, then kills the
//!   watchdog. The server itself runs in its own session (pg_ctl `setsid`s it, and pg_ctl is
//!   started in its own process group), so a Ctrl-C in the terminal reaches neither.
//!
//! # Sharing one cluster between tests
//! Cheap tests may share one cluster and isolate themselves with a throwaway database. Keep it
//! in a `static std::sync::OnceLock<Cluster>`: statics are never dropped, so cleanup at process
//! exit is the watchdog's job (within about a second of the test binary exiting).
//!
//! ```no_run
//! use std::sync::OnceLock;
//! use pgw_cluster::Cluster;
//!
//! fn shared() -> &'static Cluster {
//!     static CLUSTER: OnceLock<Cluster> = OnceLock::new();
//!     CLUSTER.get_or_init(|| Cluster::start().unwrap_or_else(|e| panic!("{e}")))
//! }
//! ```
//!
//! # Logging
//! Every step emits a `tracing` debug event; this library installs no subscriber.

mod builder;
mod cluster;
mod error;
pub mod os;
pub mod panic_log;
pub mod ports;
mod replicated;
mod start;
pub mod watchdog;

pub use builder::ClusterBuilder;
pub use cluster::Cluster;
pub use error::ClusterError;
pub use pgw_node;
pub use pgw_node::{BIN_DIR_ENV, DEFAULT_BIN_DIR};
pub use replicated::{Replicated, ReplicatedBuilder};
