//! [`TestkitError`]: every way starting, using or stopping a fixture can fail, each rendering
//! as one line with its cause (a process's log tail folded by [`pgw_node::one_line`]).

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use pgw_cluster::ClusterError;
use pgw_node::NodeError;

/// An error from `pgw-testkit`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The program a fixture runs is not installed.
    #[error("{} not found (install the Debian package {package}: apt-get install -y {package})", path.display())]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
        /// The Debian package that ships it.
        package: &'static str,
    },

    /// Ports, the watchdog or a temp dir (pgw-cluster's plumbing) failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),

    /// The OS user or a file written for it failed.
    #[error(transparent)]
    Node(#[from] NodeError),

    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, a lowercase verb phrase.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A network operation of an in-process fixture failed.
    #[error("{action} {addr}: {source}")]
    Net {
        /// What was being done ("listen on", "connect to").
        action: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A fixture's process could not be started.
    #[error("run {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A fixture's process exited before it was ready.
    #[error("{what} exited ({status}) before it was ready: {log}")]
    Exited {
        /// The fixture ("etcd member m0").
        what: String,
        /// Its exit status.
        status: ExitStatus,
        /// The tail of its log, on one line.
        log: String,
    },

    /// A fixture did not become ready before the deadline.
    #[error("{what} was not ready within {secs}s: {log}")]
    NotReady {
        /// The fixture.
        what: String,
        /// The deadline in seconds.
        secs: u64,
        /// The tail of its log, on one line.
        log: String,
    },

    /// The fixture's ports were taken by other processes several times in a row.
    #[error("{what} could not bind free loopback ports after {attempts} attempts: {log}")]
    NoFreePort {
        /// The fixture.
        what: String,
        /// How many times it was started.
        attempts: u32,
        /// The tail of its last log, on one line.
        log: String,
    },

    /// The operation needs the fixture's process running, and it is not.
    #[error("{what} is not running")]
    NotRunning {
        /// The fixture.
        what: String,
    },

    /// An HTTP request to a fixture failed.
    #[error("HTTP request to {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },

    /// A fixture answered with something we cannot read.
    #[error("unexpected answer from {url}: {body}")]
    BadResponse {
        /// The URL.
        url: String,
        /// The answer (shortened).
        body: String,
    },
}
