//! The registry of checks and their dispatch. One module per family; each check is an
//! async function over a [`Ctx`] that runs one query and returns findings.

mod activity;
mod bloat;
mod config;
mod index_bloat;
mod indexes;
mod integrity;
mod replication;
mod sequences;
mod sessions;
mod statements;
mod tables;
mod usage;
mod wraparound;

use tokio_postgres::Client;

use crate::model::{Finding, Skipped};
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
pub fn all() -> Vec<&'static CheckInfo> {
    [
        tables::CHECKS,
        bloat::CHECKS,
        index_bloat::CHECKS,
        indexes::CHECKS,
        usage::CHECKS,
        sequences::CHECKS,
        integrity::CHECKS,
        wraparound::CHECKS,
        statements::CHECKS,
        sessions::CHECKS,
        replication::CHECKS,
        config::CHECKS,
        activity::CHECKS,
    ]
    .iter()
    .flat_map(|c| c.iter())
    .collect()
}

/// What a check runs with.
pub struct Ctx<'a> {
    pub client: &'a Client,
    /// The database `client` is connected to.
    pub database: &'a str,
    pub thresholds: &'a Thresholds,
    /// The server host's facts as given by flags (config_audit's tuning advice).
    pub host: &'a pgw_tune::resolve::Given,
}

impl Ctx<'_> {
    /// Runs a check's query on its database, with the SQL in a debug event.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        tracing::debug!(sql = %one_line_sql(sql), params = params.len(), "query");
        self.client.query(sql, params).await
    }

    /// [`Ctx::query`] for a query that returns exactly one row.
    pub async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        tracing::debug!(sql = %one_line_sql(sql), params = params.len(), "query");
        self.client.query_one(sql, params).await
    }
}

/// SQL for the size in bytes of relation `oid` (an SQL expression) that never waits for a
/// lock. `pg_relation_size` opens the relation with an ACCESS SHARE lock, which queues
/// behind an ACCESS EXCLUSIVE one held or requested (a running `ALTER TABLE`, `VACUUM
/// FULL`, `LOCK TABLE`, `REINDEX`), and every later session would queue behind doctor. For
/// such a relation the size is `relpages` (as of its last VACUUM, ANALYZE or CREATE INDEX)
/// instead. The lock list is read once per statement (an uncorrelated subquery).
pub(crate) fn size_sql(oid: &str) -> String {
    format!(
        "(CASE WHEN {locked}
               THEN (SELECT r.relpages::int8 FROM pg_class r WHERE r.oid = {oid})
                    * current_setting('block_size')::int8
               ELSE pg_relation_size({oid}) END)",
        locked = locked_sql(oid)
    )
}

/// SQL that is true when relation `oid` has an ACCESS EXCLUSIVE lock held or requested, so
/// that anything opening it (an extension's function, `pg_relation_size`) would wait.
pub(crate) fn locked_sql(oid: &str) -> String {
    format!(
        "({oid} IN (SELECT l.relation FROM pg_locks l
                     WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'))"
    )
}

/// SQL on one line for a log event.
fn one_line_sql(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What one check run gives: its findings, and the objects it could not judge (each with
/// why), which the report lists as skipped so that a clean result never hides them.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub skipped: Vec<Skipped>,
}

impl From<Vec<Finding>> for Outcome {
    fn from(findings: Vec<Finding>) -> Self {
        Outcome {
            findings,
            skipped: Vec::new(),
        }
    }
}

/// Runs the check `id`.
pub(crate) async fn run_check(id: &str, ctx: &Ctx<'_>) -> Result<Outcome, tokio_postgres::Error> {
    if let Some(r) = tables::run(id, ctx).await {
        return r;
    }
    if let Some(r) = bloat::run(id, ctx).await {
        return r;
    }
    if let Some(r) = index_bloat::run(id, ctx).await {
        return r;
    }
    if let Some(r) = indexes::run(id, ctx).await {
        return r;
    }
    if let Some(r) = usage::run(id, ctx).await {
        return r;
    }
    if let Some(r) = sequences::run(id, ctx).await {
        return r;
    }
    if let Some(r) = integrity::run(id, ctx).await {
        return r;
    }
    if let Some(r) = wraparound::run(id, ctx).await {
        return r;
    }
    if let Some(r) = statements::run(id, ctx).await {
        return r;
    }
    if let Some(r) = sessions::run(id, ctx).await {
        return r;
    }
    if let Some(r) = replication::run(id, ctx).await {
        return r;
    }
    if let Some(r) = config::run(id, ctx).await {
        return r;
    }
    if let Some(r) = activity::run(id, ctx).await {
        return r;
    }
    Ok(Outcome::default())
}

/// The registry entry for `id`.
pub fn info(id: &str) -> Option<&'static CheckInfo> {
    all().into_iter().find(|c| c.id == id)
}
