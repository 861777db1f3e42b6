//! `pgwarden doctor`: health checks on a live server, each finding with a severity and
//! the SQL (identifiers quoted) or the action that fixes it.
//!
//! - [`model`]: [`Finding`], [`Severity`], [`Skipped`], [`Report`] — plain data the binary
//!   renders as a table, JSON or Nagios lines.
//! - [`thresholds`]: [`Thresholds`], every limit a check uses, with its default; a config
//!   file or flags override them.
//! - [`checks`]: the registry ([`checks::all`]: id, scope, description, thresholds) and one module
//!   per check family. Each check is one query (one round trip) per database, never one
//!   query per table.
//! - [`run`]: connects to the server (and each database for database-scoped checks),
//!   runs the checks, and collects findings; a check that cannot run (missing privilege,
//!   missing extension) lands in `skipped` with the reason and the others still run.
//!
//! Deliberately not here: printing, exit codes (the binary maps the report's worst
//! severity to Nagios codes), and changing anything: doctor is read-only and needs no
//! more than `pg_monitor`.
//!
//! Invariants: no check writes; every remediation quotes identifiers with
//! [`pgw_common::sql::ident`] (objects are shown with [`pgw_common::sql::shown`]); values in
//! queries are bound.

pub mod checks;
pub mod model;
pub mod run;
pub mod thresholds;

pub use model::{Finding, Report, Severity, Skipped};
pub use run::{run, DoctorError, Options};
pub use thresholds::Thresholds;
