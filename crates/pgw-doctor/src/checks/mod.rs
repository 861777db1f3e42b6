//! The registry of checks and their dispatch. One module per family; each check is an
//! async function over a [`Ctx`] that runs one query and returns findings.

mod config;
mod indexes;
mod replication;
mod sequences;
mod sessions;
mod tables;

use tokio_postgres::Client;

use crate::model::Finding;
use crate::thresholds::Thresholds;

/// Where a check looks: once per server, or once per database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Database,
}

/// A check as `--list` shows it.
#[derive(Debug, Clone, Copy)]
pub struct CheckInfo {
    pub id: &'static str,
    pub scope: Scope,
    /// One line: what it finds and how severity is decided.
    pub summary: &'static str,
    /// The [`Thresholds`] fields it uses.
    pub thresholds: &'static [&'static str],
}

/// Every check, in the order they run and print.
pub const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "dead_tuples",
        scope: Scope::Database,
        summary: "tables whose dead rows exceed a share of their live rows (VACUUM)",
        thresholds: &["dead_tuples_warning_share", "dead_tuples_critical_share", "dead_tuples_min_rows"],
    },
    CheckInfo {
        id: "invalid_index",
        scope: Scope::Database,
        summary: "indexes left invalid by a failed CREATE INDEX CONCURRENTLY (warning)",
        thresholds: &[],
    },
    CheckInfo {
        id: "duplicate_index",
        scope: Scope::Database,
        summary: "indexes with the same columns and predicate as another, or a btree prefix of one (warning)",
        thresholds: &[],
    },
    CheckInfo {
        id: "missing_fk_index",
        scope: Scope::Database,
        summary: "foreign keys whose referencing columns lead no index (warning)",
        thresholds: &[],
    },
    CheckInfo {
        id: "sequence_exhaustion",
        scope: Scope::Database,
        summary: "sequences (serial and identity columns too) past a share of their range",
        thresholds: &["sequence_warning_share", "sequence_critical_share"],
    },
    CheckInfo {
        id: "long_transaction",
        scope: Scope::Cluster,
        summary: "transactions open longer than the limit",
        thresholds: &["long_transaction_warning_secs", "long_transaction_critical_secs"],
    },
    CheckInfo {
        id: "idle_in_transaction",
        scope: Scope::Cluster,
        summary: "sessions idle inside an open transaction longer than the limit",
        thresholds: &["idle_in_transaction_warning_secs", "idle_in_transaction_critical_secs"],
    },
    CheckInfo {
        id: "blocked_queries",
        scope: Scope::Cluster,
        summary: "queries waiting on a lock longer than the limit, with the blocking chain",
        thresholds: &["blocked_query_warning_secs", "blocked_query_critical_secs"],
    },
    CheckInfo {
        id: "connection_saturation",
        scope: Scope::Cluster,
        summary: "share of max_connections in use",
        thresholds: &["connections_warning_share", "connections_critical_share"],
    },
    CheckInfo {
        id: "replication_slot",
        scope: Scope::Cluster,
        summary: "inactive replication slots and the WAL they retain",
        thresholds: &["slot_retained_critical_mb"],
    },
    CheckInfo {
        id: "config_audit",
        scope: Scope::Cluster,
        summary: "risky settings: fsync or full_page_writes off (critical), autovacuum off (warning)",
        thresholds: &[],
    },
];

/// What a check runs with.
pub struct Ctx<'a> {
    pub client: &'a Client,
    /// The database `client` is connected to.
    pub database: &'a str,
    pub thresholds: &'a Thresholds,
}

/// Runs the check `id`.
pub(crate) async fn run_check(
    id: &str,
    ctx: &Ctx<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    match id {
        "dead_tuples" => tables::dead_tuples(ctx).await,
        "invalid_index" => indexes::invalid_index(ctx).await,
        "duplicate_index" => indexes::duplicate_index(ctx).await,
        "missing_fk_index" => indexes::missing_fk_index(ctx).await,
        "sequence_exhaustion" => sequences::sequence_exhaustion(ctx).await,
        "long_transaction" => sessions::long_transaction(ctx).await,
        "idle_in_transaction" => sessions::idle_in_transaction(ctx).await,
        "blocked_queries" => sessions::blocked_queries(ctx).await,
        "connection_saturation" => sessions::connection_saturation(ctx).await,
        "replication_slot" => replication::replication_slot(ctx).await,
        "config_audit" => config::config_audit(ctx).await,
        _ => Ok(Vec::new()),
    }
}

/// The registry entry for `id`.
pub fn info(id: &str) -> Option<&'static CheckInfo> {
    CHECKS.iter().find(|c| c.id == id)
}
