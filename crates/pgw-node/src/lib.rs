//! Control of real PostgreSQL data directories: what the HA agent, `pgwarden replica
//! clone/rejoin/promote/switchover` and the backup restore drill do to a node, and what the
//! throwaway clusters of `pgw-cluster` are built on.
//!
//! A [`Node`] is one data directory plus the means to drive it: a [`BinDir`] (PostgreSQL's
//! programs, `$PGWARDEN_PG_BIN` or `/usr/lib/postgresql/15/bin`, each operation checking that
//! the [`Tool`]s it needs are there and naming the Debian package otherwise), an [`OsUser`]
//! (`postgres` when we are root, because PostgreSQL refuses to run as root; ourselves
//! otherwise) and a server log file. It is made by
//! - [`Node::initdb`] with [`InitdbOptions`] (superuser, password through a temporary
//!   pwfile, [`AuthMethod`]s, encoding, locale, data checksums),
//! - [`Node::base_backup`] with [`BaseBackupOptions`] (`-X stream`, `-R`, `-C -S slot`, fast
//!   checkpoint, the password in `PGPASSWORD`, [`Progress`] from `--progress`), or
//! - [`Node::open`], adopting an existing directory (`PG_VERSION` of the binaries' version,
//!   owned by the server user, mode 0700/0750).
//!
//! Then: typed `pg_ctl` modes ([`Node::start`] with [`StartOptions`], [`Node::stop`] with a
//! [`StopMode`] and a timeout, falling back to SIGQUIT then SIGKILL, [`Node::restart`],
//! [`Node::reload`], [`Node::promote`], [`Node::status`]); [`Node::wait_ready`] (`pg_isready`
//! with a deadline, failing at once when the postmaster died, the log tail in the error);
//! [`Node::signal`] and [`Node::kill`] (SIGKILL to the postmaster and its children: a
//! crash); reading [`PostmasterPid`] and [`ControlData`] (`pg_controldata`); whether it is a
//! standby, making it one ([`Node::configure_standby`]: `standby.signal`, `primary_conninfo`
//! from a [`Conninfo`] quoted for postgresql.auto.conf); [`Node::rewind`] (`pg_rewind`) and
//! [`Node::rewind_precheck`] (`wal_log_hints` or checksums, read from pg_control).
//!
//! ```no_run
//! use pgw_node::{BinDir, InitdbOptions, Node, OsUser, ReadyOptions, StartOptions, StopOptions};
//!
//! let node = Node::initdb(BinDir::from_env(), OsUser::detect()?, "/srv/pg/node1", &InitdbOptions::default())?;
//! node.start(&StartOptions::default().port(6543))?;
//! node.wait_ready(&ReadyOptions::default())?;
//! println!("timeline {}", node.control_data()?.timeline);
//! node.stop(&StopOptions::default())?;
//! # Ok::<(), pgw_node::NodeError>(())
//! ```
//!
//! # Why synchronous
//! The API is blocking, over `std::process`: every operation is a process launch that takes
//! milliseconds to seconds, so an async API would buy nothing. Blocking calls work from sync
//! tests, from `Drop` (which cannot be async), and from async code through
//! `tokio::task::spawn_blocking`.
//!
//! # What it does not do
//! - No SQL: it never connects to the server except through `pg_isready`, `pg_basebackup`
//!   and `pg_rewind` (queries are for tokio-postgres, in the crates that need them).
//! - No decisions: which node to promote or rewind is the caller's (the HA agent's) business.
//! - No throwaway directories, free ports or cleanup on drop: that is `pgw-cluster`. A `Node`
//!   holds no process; dropping it changes nothing.
//! - It never installs PostgreSQL and never touches a system cluster unless given its path.
//!
//! # Invariants
//! - **No panics on bad input:** every failure is a [`NodeError`] variant, rendering as one
//!   line with its cause (a tool's output or the server log tail folded by [`one_line`]).
//! - **Passwords stay out of argv and logs:** they travel in `PGPASSWORD` or a 0600 pwfile;
//!   [`Password`] and [`Conninfo`] redact them in `Debug`.
//! - **Server-side tools run as the server user**, and files created for the server belong to
//!   it; clients (`pg_isready`, `psql`) run as ourselves. `PG*` variables of our environment
//!   never reach a tool (a stray `PGHOST` cannot redirect one), and tools print English.
//!
//! # Logging
//! Every step emits a `tracing` debug event (each command with its arguments); this library
//! installs no subscriber.

mod basebackup;
mod bin_dir;
mod command;
mod conf;
pub mod controldata;
mod error;
mod initdb;
mod lsn;
mod node;
mod os_user;
mod pg_ctl;
mod pidfile;
mod process;
mod ready;
mod rewind;

pub use basebackup::{BaseBackupOptions, Checkpoint, Progress, Slot, Source, WalMethod};
pub use bin_dir::{BinDir, Tool, BIN_DIR_ENV, DEFAULT_BIN_DIR};
pub use conf::{
    auto_conf_get, auto_conf_set, conf_quote, conf_unquote, conninfo_quote, Conninfo, Password,
};
pub use controldata::{ClusterState, ControlData, WalLevel};
pub use error::{one_line, NodeError, PgCtlAction, PidFileProblem};
pub use initdb::{AuthMethod, InitdbOptions};
pub use lsn::{Lsn, LsnParseError};
pub use node::Node;
pub use os_user::{OsUser, DEFAULT_SERVER_USER};
pub use pg_ctl::{ServerStatus, StartOptions, StopMode, StopOptions, StopOutcome};
pub use pidfile::{PmStatus, PostmasterPid};
pub use ready::ReadyOptions;
pub use rewind::{RewindOptions, RewindPrecheck, RewindReport};
