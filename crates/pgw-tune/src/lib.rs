//! postgresql.conf recommendations from hardware and workload (`pgwarden tune`).
//!
//! - [`inputs`]: [`Inputs`] (memory in kB, CPUs, connections, [`Storage`], [`Workload`],
//!   PostgreSQL major version, [`DbSize`]) and their validation ([`InputError`]).
//! - [`recommend`](mod@recommend): [`recommend()`] turns inputs into a [`Recommendation`]: ordered
//!   [`Setting`]s, each with a one-line reason and an [`Origin`], plus warnings; rendered
//!   as a postgresql.conf snippet or `ALTER SYSTEM` statements.
//! - [`units`]: PostgreSQL memory and time units: PGTune's kB formatting, the `--memory`
//!   parser, the server's own reading of postgresql.conf numbers, conversion and display of
//!   `pg_settings` values, and value comparison.
//! - [`known`]: the type and range of every setting pgwarden recommends, and the offline
//!   check of `--set` values (a value the server would refuse is an [`InputError`]; a name
//!   pgwarden does not know is a warning, left for the server to check).
//!
//! - [`resolve`]: flags + server facts + host facts -> [`Inputs`], recording where each
//!   input came from and which were assumed (pure).
//! - [`host`]: memory and cores of the server's host (the cgroup's limits when lower, as
//!   in a container) and the data directory's storage class; parsers are pure.
//! - [`live`]: the server's facts and `--diff` against `pg_settings`.
//! - [`apply`]: validate everything, then ALTER SYSTEM + reload, all or nothing.
//! - [`run`]: the entry points the binary calls.
//!
//! Deliberately not here: writing postgresql.conf files (apply goes through ALTER
//! SYSTEM, which the server validates and which `ALTER SYSTEM RESET` undoes), restarting
//! servers, or printing. Only Linux servers are tuned: PGTune's Windows and macOS
//! branches are left out.
//!
//! Invariants: for every setting PGTune covers, the value equals PGTune's current (era C)
//! output for the same inputs, with no deviations; pgwarden's own settings come after
//! PGTune's, are marked [`Origin::Pgwarden`] and say "(beyond PGTune)" in their reason;
//! every accepted input yields a configuration PostgreSQL accepts; nothing panics; apply
//! changes nothing unless every value is accepted.

pub mod apply;
pub mod host;
pub mod inputs;
pub mod known;
pub mod live;
pub mod recommend;
pub mod resolve;
pub mod run;
pub mod units;

pub use inputs::{DbSize, InputError, Inputs, Storage, Workload};
pub use recommend::{recommend, Origin, Recommendation, Setting};
pub use units::UnitError;
