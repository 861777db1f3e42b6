//! A partition set as stored in `pgwarden.partition_set`, and the facts the planner reads.

use serde::{Deserialize, Serialize};

use crate::interval::{Interval, Retention, Value};

/// How rows are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Range,
    List,
    Hash,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Range => "range",
            Strategy::List => "list",
            Strategy::Hash => "hash",
        }
    }
}

/// What retention does to a partition past the retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// DETACH (CONCURRENTLY where the server allows it); the table stays.
    #[default]
    Detach,
    /// DROP TABLE: the data is gone.
    Drop,
}

impl RetentionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionMode::Detach => "detach",
            RetentionMode::Drop => "drop",
        }
    }
}

/// The type of the partition key, as far as bounds care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// `timestamp with time zone`: bounds are wall times in the set's time zone.
    Timestamptz,
    /// `timestamp without time zone`.
    Timestamp,
    Date,
    /// smallint, integer, bigint.
    Integer,
    /// Anything else (list and hash keys).
    Other,
}

impl KeyKind {
    /// From `format_type()` of the key column.
    pub fn from_type(name: &str) -> KeyKind {
        match name {
            "timestamp with time zone" => KeyKind::Timestamptz,
            "timestamp without time zone" => KeyKind::Timestamp,
            "date" => KeyKind::Date,
            "smallint" | "integer" | "bigint" => KeyKind::Integer,
            _ => KeyKind::Other,
        }
    }

    pub fn is_time(self) -> bool {
        matches!(
            self,
            KeyKind::Timestamptz | KeyKind::Timestamp | KeyKind::Date
        )
    }
}

/// What a new partition gets beyond what PostgreSQL gives it: the parent's owner and grants
/// are always copied; these add to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Template {
    /// Owner of new partitions (default: the parent's owner).
    pub owner: Option<String>,
    /// Extra grants, each `PRIVILEGES TO ROLE`, e.g. `SELECT TO reporting`.
    pub grants: Vec<String>,
    /// Storage parameters, each `name=value`, e.g. `autovacuum_vacuum_scale_factor=0.01`.
    pub reloptions: Vec<String>,
    /// Tablespace of new partitions (default: the parent's default).
    pub tablespace: Option<String>,
}

/// One managed set: a row of `pgwarden.partition_set`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetConfig {
    pub schema: String,
    pub table: String,
    pub column: String,
    pub strategy: Strategy,
    /// Range sets only.
    pub interval: Option<Interval>,
    /// Partitions kept ahead of the current one (range sets).
    pub premake: u32,
    pub retention: Option<Retention>,
    pub retention_mode: RetentionMode,
    pub default_partition: bool,
    /// New partitions' names: `{parent}` and `{suffix}` are replaced.
    pub name_pattern: String,
    /// Bounds are computed in this zone (range sets on time keys).
    pub time_zone: String,
    pub template: Template,
}

/// The default naming pattern, pg_partman's: `events_p2024_01`.
pub const DEFAULT_NAME_PATTERN: &str = "{parent}_p{suffix}";

/// PostgreSQL's identifier limit in bytes.
pub const MAX_IDENT: usize = 63;

impl SetConfig {
    /// The name of the partition whose suffix is `suffix`. When it would pass 63 bytes, the
    /// parent's name is shortened (at a character boundary) so the suffix survives.
    pub fn partition_name(&self, suffix: &str) -> String {
        fill(&self.name_pattern, &self.table, suffix)
    }

    /// The default partition's name, `<parent>_default`, shortened the same way.
    pub fn default_name(&self) -> String {
        fill("{parent}_default", &self.table, "")
    }
}

/// `pattern` with `{parent}` and `{suffix}` filled in, the parent shortened to fit 63 bytes.
pub(crate) fn fill(pattern: &str, parent: &str, suffix: &str) -> String {
    let build = |p: &str| pattern.replace("{parent}", p).replace("{suffix}", suffix);
    let full = build(parent);
    if full.len() <= MAX_IDENT {
        return full;
    }
    let over = full.len() - MAX_IDENT;
    let mut keep = parent.len().saturating_sub(over);
    while keep > 0 && !parent.is_char_boundary(keep) {
        keep -= 1;
    }
    build(&parent[..keep])
}

/// An existing partition of a set, as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub schema: String,
    pub name: String,
    pub is_default: bool,
    /// Range sets: None is MINVALUE / MAXVALUE (or unreadable).
    #[serde(skip)]
    pub lower: Option<Value>,
    #[serde(skip)]
    pub upper: Option<Value>,
    /// The bound as PostgreSQL prints it.
    pub bound: String,
    /// A DETACH CONCURRENTLY that did not finish.
    pub detach_pending: bool,
}
