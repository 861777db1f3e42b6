//! The ground every pgwarden capability stands on.
//!
//! - [`conninfo`]: libpq-compatible connection parameters: conninfo strings and URIs,
//!   `PGHOST`/`PGPORT`/`PGUSER`/`PGDATABASE`/`PGPASSWORD`/`PGSSLMODE`, and `~/.pgpass`.
//! - [`tls`]: rustls configuration with libpq's `sslmode` semantics.
//! - [`connect`]: [`connect_dsn`] opens a `tokio_postgres::Client`; [`report`] turns any
//!   error chain into the one line users see.
//! - [`error`]: [`ErrorClass`] and [`Classify`], the one contract behind exit codes.
//! - [`output`]: human tables and the terminal test.
//! - [`sql`]: identifiers (always quoted), qualified names and literals for SQL text, and
//!   names as people read them (PostgreSQL's `quote_ident()` rules).
//!
//! Deliberately not here: anything about a particular capability, printing to stdout,
//! exit codes (the binary's job), or a connection pool (the pooler's own crate).
//!
//! Invariants: connections always have a bounded connect timeout (10 s unless the DSN
//! says otherwise); errors keep their sources; nothing here panics on user input.

pub mod connect;
pub mod conninfo;
pub mod error;
pub mod output;
pub mod sql;
pub mod tls;

pub use connect::{connect, connect_dsn, error_line, report, ConnectError};
pub use conninfo::{ConnParams, DsnError, SslMode};
pub use error::{Classify, ErrorClass};
pub use output::Format;
