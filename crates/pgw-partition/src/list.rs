//! `pgwarden partition list`: each managed set with its partitions, sizes, gaps and the
//! default partition's rows.

use serde::Serialize;
use tokio_postgres::Client;

use crate::catalog;
use crate::error::PartitionError;
use crate::interval::Value;
use crate::model::{KeyKind, Partition, SetConfig};
use crate::plan;
use pgw_common::sql::{qualified, shown_qualified};

use crate::session::{open, parse_table};

/// `pgwarden partition list`: one managed set.
#[derive(Debug, Clone, Serialize)]
pub struct SetListing {
    pub table: String,
    pub config: SetConfig,
    pub partitions: Vec<PartitionInfo>,
    /// Row count of the default partition (None: there is none).
    pub default_rows: Option<i64>,
    /// False when the role may not read the default partition (pg_monitor): the count is
    /// then the statistics' estimate of live rows.
    pub default_rows_exact: bool,
    /// Ranges no partition covers, between the lowest and the highest bound.
    pub gaps: Vec<(String, String)>,
    pub oldest: Option<String>,
    pub newest: Option<String>,
    /// Why the set could not be read (the table was dropped, ...).
    pub error: Option<String>,
}

/// A partition as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    pub name: String,
    pub bound: String,
    /// The planner's estimate (pg_class.reltuples); None if never vacuumed or analyzed.
    pub rows: Option<i64>,
    pub bytes: i64,
}

/// `pgwarden partition list`.
#[tracing::instrument(name = "list", skip_all)]
pub async fn list(
    dsn: Option<&str>,
    table: Option<&str>,
) -> Result<Vec<SetListing>, PartitionError> {
    let only = table.map(parse_table).transpose()?;
    let client = open(dsn, 10_000).await?;
    let sets = catalog::load_sets(
        &client,
        only.as_ref().map(|(s, t)| (s.as_str(), t.as_str())),
    )
    .await?;
    if let (Some((s, t)), true) = (&only, sets.is_empty()) {
        return Err(PartitionError::NotManaged(shown_qualified(s, t)));
    }
    let mut out = Vec::new();
    for cfg in sets {
        let table = shown_qualified(&cfg.schema, &cfg.table);
        match list_one(&client, &cfg).await {
            Ok(mut l) => {
                l.table = table;
                out.push(l);
            }
            Err(e) => out.push(SetListing {
                table,
                config: cfg,
                partitions: Vec::new(),
                default_rows: None,
                default_rows_exact: true,
                gaps: Vec::new(),
                oldest: None,
                newest: None,
                error: Some(pgw_common::report(&e)),
            }),
        }
    }
    Ok(out)
}

async fn list_one(client: &Client, cfg: &SetConfig) -> Result<SetListing, PartitionError> {
    let shown = shown_qualified(&cfg.schema, &cfg.table);
    let parent = catalog::parent(client, &cfg.schema, &cfg.table, &cfg.column)
        .await?
        .ok_or_else(|| PartitionError::NoTable(shown.clone()))?;
    let kind = KeyKind::from_type(parent.key_type.as_deref().unwrap_or(""));
    let mut parts = catalog::partitions(client, parent.oid, kind, &cfg.time_zone).await?;
    parts.sort_by(|a, b| (a.is_default, a.lower, &a.name).cmp(&(b.is_default, b.lower, &b.name)));
    let rows = client
        .query(
            "SELECT c.relname::text,
                    CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END,
                    pg_total_relation_size(c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = $1",
            &[&parent.oid],
        )
        .await
        .map_err(|e| PartitionError::sql("read partition sizes", e))?;
    let stats: std::collections::HashMap<String, (Option<i64>, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    // Exact when the role may read the default partition; else (pg_monitor) the statistics'
    // live-row count, marked as an estimate.
    let (default_rows, default_rows_exact) = match parts.iter().find(|p| p.is_default) {
        Some(d) => {
            let table = qualified(&d.schema, &d.name);
            let readable: bool = client
                .query_one("SELECT has_table_privilege($1, 'SELECT')", &[&table])
                .await
                .map_err(|e| PartitionError::sql("check privileges", e))?
                .get(0);
            let sql = if readable {
                format!("SELECT count(*) FROM {table}")
            } else {
                "SELECT coalesce((SELECT n_live_tup FROM pg_stat_all_tables
                                   WHERE relid = $1::text::regclass), 0)"
                    .to_string()
            };
            let row = if readable {
                client.query_one(&sql, &[]).await
            } else {
                client.query_one(&sql, &[&table]).await
            }
            .map_err(|e| PartitionError::sql("count the default partition's rows", e))?;
            (Some(row.get::<_, i64>(0)), readable)
        }
        None => (None, true),
    };
    let show = |v: Option<Value>| {
        v.map(|v| v.to_string())
            .unwrap_or_else(|| "unbounded".into())
    };
    let ranged: Vec<&Partition> = parts.iter().filter(|p| !p.is_default).collect();
    Ok(SetListing {
        table: shown,
        config: cfg.clone(),
        gaps: plan::gaps(&parts)
            .into_iter()
            .map(|(a, b)| (show(a), show(b)))
            .collect(),
        oldest: ranged.first().and_then(|p| p.lower).map(|v| v.to_string()),
        newest: ranged.last().and_then(|p| p.upper).map(|v| v.to_string()),
        partitions: parts
            .iter()
            .map(|p| {
                let (rows, bytes) = stats.get(&p.name).copied().unwrap_or((None, 0));
                PartitionInfo {
                    name: p.name.clone(),
                    bound: p.bound.clone(),
                    rows,
                    bytes,
                }
            })
            .collect(),
        default_rows,
        default_rows_exact,
        error: None,
    })
}
