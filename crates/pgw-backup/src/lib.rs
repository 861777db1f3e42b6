//! Backups: WAL archiving (`wal push` / `wal fetch`), full and page-level incremental base
//! backups of a data directory into a repository (a directory or S3, through
//! `object_store`), compressed with zstd, checksummed (XXH3; keyed BLAKE3 when encrypted),
//! optionally encrypted with AES-256-GCM; verify, point-in-time restore, expire, and a
//! restore drill that measures the recovery time.
//!
//! Everything stored is an [`envelope`]; a backup is a [`manifest::Manifest`] plus packs of
//! envelopes; [`repo`] is the repository and its description.

pub mod chain;
pub mod drill;
pub mod envelope;
pub mod error;
pub mod expire;
pub mod info;
pub mod manifest;
pub mod packs;
pub mod pgdata;
pub mod repo;
pub mod restore;
pub mod run;
pub mod verify;
pub mod wal;

pub use error::{BackupError, Result};
pub use manifest::{Catalog, Kind, Manifest};
pub use repo::{Repo, RepoMeta, RepoOptions, Store};
pub use run::{run, Progress, RunOptions, RunReport};
