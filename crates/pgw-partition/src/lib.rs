//! `pgwarden partition`: declarative partition management from outside the database, what
//! pg_partman does without installing an extension.
//!
//! A *partition set* is a partitioned parent plus its config, stored in the database it
//! manages (`pgwarden.partition_set`), so any host can run maintenance. `create` sets a new
//! one up (range by a time or integer key, list, hash); `maintain` makes the partitions
//! `premake` intervals ahead, rescues rows from the default partition into partitions of
//! their own, and applies retention (detach, concurrently where allowed, or drop); `list`
//! shows each set with its bounds, sizes, gaps and the default partition's rows.
//!
//! Shape: pure `interval` (grids, suffixes), `bound` (parsing `pg_get_expr` output),
//! `plan` (config + facts -> actions) and `ddl` (actions -> SQL, which is also what
//! `--dry-run` prints); I/O in `catalog` (facts, config table), `session` (shared
//! connection and execution), and one module per command: `create`, `maintain`, `list`,
//! `adopt`, `convert`.
//!
//! # Invariants
//! - **Bounds in the set's zone:** time bounds are wall times in the set's `time_zone` (UTC
//!   by default), written as `timezone(zone, wall time)`, and read back through the
//!   server's own conversion; the session's TimeZone never matters (pg_partman #865).
//! - **Short steps:** every maintenance action is its own transaction with `lock_timeout`;
//!   a busy table is skipped with a warning, never waited on. `create` is one transaction:
//!   all or nothing.
//! - **Idempotent:** maintenance plans from what the catalog shows, so a second run right
//!   after the first plans nothing.
//! - **Nothing lost:** rows move out of the default partition in the same transaction that
//!   attaches their new partition; a failure rolls both back.
//!
//! Converting a table that already holds rows is `convert`: a new partitioned parent, rows
//! copied in batches while a trigger mirrors concurrent writes, then a short swap.
//! `adopt` takes over a set made by hand or by pg_partman without renaming anything.

pub mod adopt;
pub mod bound;
pub mod catalog;
pub mod convert;
pub mod create;
pub mod ddl;
mod error;
pub mod interval;
pub mod list;
pub mod maintain;
pub mod model;
pub mod plan;
pub mod session;

#[cfg(test)]
mod tests;

pub use adopt::{adopt, AdoptOptions, AdoptReport};
pub use convert::{abort_conversion, Aborted, CopyMode, CopyPlan, Observer};
pub use create::{create, create_observed, CreateOptions, CreateReport, Layout};
pub use error::PartitionError;
pub use interval::{Interval, Retention, Value};
pub use list::{list, SetListing};
pub use maintain::{maintain, MaintainOptions, MaintainReport, Status};
pub use model::{RetentionMode, SetConfig, Strategy, Template};
