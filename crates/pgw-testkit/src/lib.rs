//! Test-only fixtures for the real processes around PostgreSQL that the HA agent, the pooler
//! and the backup drill are tested against: [`Etcd`] (Debian's `etcd-server`), [`PgBouncer`]
//! (Debian's `pgbouncer`, to compare the pooler with) in front of a `pgw_cluster::Cluster`,
//! an S3-compatible [`S3Server`] (moto's server mode from PyPI, which `./run test` installs
//! into a virtualenv) for S3 backup repositories, and an in-process TCP [`Proxy`] that a
//! test can cut, partition and restore.
//!
//! **A dev-dependency only.** Nothing here ships in the `pgwarden` binary; a tidy test fails if
//! any crate lists `pgw-testkit` under `[dependencies]`.
//!
//! # Invariants (the same as `pgw-cluster`'s clusters)
//! - **Free loopback ports, never a system service's:** every port comes from
//!   `pgw_cluster::ports` (reserved process-wide, never 5432), never 2379/2380 or 6432;
//!   everything listens on `127.0.0.1` only, sockets and data in the fixture's own temp dir.
//!   The packaged system services are never used or touched.
//! - **Ready means usable:** `start` returns once the process answers (etcd's `/health`, a TCP
//!   connect to PgBouncer, moto's `GET /`) within a deadline; it fails at once, with the log
//!   tail, if the process exits first, and starts again on other ports if one was taken
//!   meanwhile.
//! - **Stopped and removed on drop**, the log tail printed when the test panicked; `Drop`
//!   never panics.
//! - **Nothing outlives its owner:** each process fixture has pgw-cluster's watchdog, which
//!   stops its processes (from their pid files) and removes its temp dir when the owning
//!   process dies without dropping it. The proxy is threads of this process and dies with it.
//!
//! # What it does not do
//! No etcd client for production use (the HA agent brings its own), no PgBouncer config
//! beyond what tests need, no TLS. Synchronous, like `pgw-cluster`: call it from async tests
//! as it is, or in `spawn_blocking`.
//!
//! # Logging
//! Every step emits a `tracing` debug event; this library installs no subscriber.

mod daemon;
mod error;
mod etcd;
mod pgbouncer;
mod proxy;
mod s3;

pub use error::TestkitError;
pub use etcd::{Etcd, EtcdBuilder, DEFAULT_ETCD};
pub use pgbouncer::{PgBouncer, PgBouncerBuilder, PoolMode, DEFAULT_PGBOUNCER};
pub use proxy::{Proxy, ProxyStats};
pub use s3::{
    default_moto_server, S3Server, MOTO_REQUIREMENT, MOTO_SERVER_ENV, TEST_ACCESS_KEY_ID,
    TEST_REGION, TEST_SECRET_ACCESS_KEY,
};
